"""Consistency distillation (Song et al. 2023) on the small distillation tasks; shared settings in
configs/distillation/_distill_common.py.

  python -m diffjax.distill.main --config=configs/cd/toy.py:grid --workdir=/tmp/cd_grid

Options: the task (`grid` default, `ring`, `digits`), optionally `,tiny`. As the official CIFAR-10
CD config (jcm `cifar10_ve_cd.py`) with L2: N = 18 Karras levels, a Heun step of the teacher, the
target = the stop-gradient online network (mu = 0), the student initialised from the teacher; the
EMA (0.999 here) is what is sampled, at 1, 2 and 4 steps.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "distillation"))
from _distill_common import parse, toy_config  # noqa: E402


def get_config(options="grid"):
  task, tiny = parse(options, "cd/toy")
  return toy_config("cd", task, tiny, lr=1e-4, num_steps=5000, ema_decay=0.999, num_scales=18,
                    solver="heun", distance="l2")
