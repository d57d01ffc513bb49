"""Diff-Instruct (Luo et al. 2023) on the small distillation tasks; shared settings in configs/distillation/_distill_common.py.

  python -m diffjax.distill.main --config=configs/diff_instruct/toy.py:grid --workdir=/tmp/di_grid

Options: the task (`grid` default, `ring`, `digits`), optionally `,tiny`. One fake-score step, then
one generator step, every iteration (the official loop), sigma ~ LogNormal(-1.2, 1.2).
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "distillation"))
from _distill_common import parse, toy_config  # noqa: E402


def get_config(options="grid"):
  task, tiny = parse(options, "diff_instruct/toy")
  return toy_config("diff_instruct", task, tiny, lr=1e-4, num_steps=3000)
