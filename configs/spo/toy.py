"""SPO (Liang et al. 2025) on the small preference tasks; shared settings in configs/preference/_common.py.

  python -m diffjax.finetune.main --config=configs/spo/toy.py:ring --workdir=/tmp/spo_ring
  python -m diffjax.finetune.main --config=configs/spo/toy.py:digits --workdir=/tmp/spo_digits

Options: the task, `ring` (default) or `digits`, optionally with `,tiny` (seconds; tests).

Online rounds of the step-wise resampler: from step 4 of 20 on, 4 candidates per step from the same
x_t, scored by the task reward of the one-step x0 estimate (the step-aware scorer), best vs worst
kept when softmax margin > 0.3, chain continued from a random candidate.
beta is swept by experiments/preference.py.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "preference"))
from _common import parse, toy_config  # noqa: E402


def get_config(options="ring"):
  task, tiny = parse(options, "spo/toy")
  config = toy_config("spo", task, tiny, beta=1.0, clip_eps=0.1, eta=1.0)
  config.spo.num_candidates, config.spo.threshold, config.spo.divert_start_step = 4, 0.3, 4 if not tiny else 2
  config.rounds.num_rounds = 4 if not tiny else 2
  config.training.num_steps //= config.rounds.num_rounds
  return config
