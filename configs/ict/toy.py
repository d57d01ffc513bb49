"""Improved consistency training (Song & Dhariwal 2024) on the small distillation tasks; shared settings in
configs/distillation/_distill_common.py.

  python -m diffjax.distill.main --config=configs/ict/toy.py:grid --workdir=/tmp/ict_grid

Options: the task (`grid` default, `ring`, `digits`), optionally `,tiny`. No teacher network (the
teacher config only gives the architecture and the data): the student starts from scratch, the
pseudo-Huber distance over the whole sample with c = 0.00054 sqrt(d), iCT's discrete log-normal
sigmas (-1.1, 2.0), weighting 1/(sigma_{i+1} - sigma_i) and N doubling from 10 to 1280.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "distillation"))
from _distill_common import parse, toy_config  # noqa: E402


def get_config(options="grid"):
  task, tiny = parse(options, "ict/toy")
  config = toy_config("ict", task, tiny, lr=1e-3, num_steps=5000, ema_decay=0.999,
                      **(dict(s0=10, s1=20) if tiny else dict(s0=10, s1=1280)))
  return config
