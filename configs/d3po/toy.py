"""D3PO (Yang et al. 2024) on the small preference tasks; shared settings in configs/preference/_common.py.

  python -m diffjax.finetune.main --config=configs/d3po/toy.py:ring --workdir=/tmp/d3po_ring
  python -m diffjax.finetune.main --config=configs/d3po/toy.py:digits --workdir=/tmp/d3po_digits

Options: the task, `ring` (default) or `digits`, optionally with `,tiny` (seconds; tests).

Online rounds: each round samples two DDIM (eta 1) trajectories per prompt from the current policy
with the same x_T, labels them by the task reward of their end points, and trains on all their
transitions (clipped per-step likelihood ratio, eps 0.1).
beta is swept by experiments/preference.py.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "preference"))
from _common import parse, toy_config  # noqa: E402


def get_config(options="ring"):
  task, tiny = parse(options, "d3po/toy")
  config = toy_config("d3po", task, tiny, beta=1.0, clip_eps=0.1, eta=1.0)
  config.rounds.num_rounds = 4 if not tiny else 2
  config.training.num_steps //= config.rounds.num_rounds
  return config
