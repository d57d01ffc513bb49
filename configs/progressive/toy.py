"""Progressive distillation (Salimans & Ho 2022) on the small distillation tasks; shared settings in
configs/distillation/_distill_common.py.

  python -m diffjax.distill.main --config=configs/progressive/toy.py:grid --workdir=/tmp/pd_grid

Options: the task (`grid` default, `ring`, `digits`), optionally `,tiny`. The teacher's 64-step DDIM
(= Euler for EDM) on the rho = 7 grid is halved six times to one step; each stage trains
`training.num_steps` steps with the x-MSE / eps-MSE maximum ("snr_trunc", the CIFAR-10 config),
no EMA, and its student teaches the next stage.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "distillation"))
from _distill_common import parse, toy_config  # noqa: E402


def get_config(options="grid"):
  task, tiny = parse(options, "progressive/toy")
  return toy_config("progressive", task, tiny, lr=2e-4, num_steps=800, start_steps=8 if tiny else 64,
                    end_steps=2 if tiny else 1, weighting="snr_trunc")
