"""DDO (Zheng et al. 2025) on the small preference tasks; shared settings in configs/preference/_common.py.

  python -m diffjax.finetune.main --config=configs/ddo/toy.py:ring --workdir=/tmp/ddo_ring
  python -m diffjax.finetune.main --config=configs/ddo/toy.py:digits --workdir=/tmp/ddo_digits

Options: the task, `ring` (default) or `digits`, optionally with `,tiny` (seconds; tests).

Self-play rounds: real data vs samples of the round's reference, alpha = 1; within a round the
policy is evaluated every 'ddo.selection_every' steps and the checkpoint closest to the data (sample
MMD) becomes the next round's policy and reference.
beta is swept by experiments/preference.py.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "preference"))
from _common import parse, toy_config  # noqa: E402


def get_config(options="ring"):
  task, tiny = parse(options, "ddo/toy")
  config = toy_config("ddo", task, tiny, alpha=1.0, beta=0.1)
  config.rounds.num_rounds = 3 if not tiny else 2
  config.training.num_steps //= config.rounds.num_rounds
  config.ddo.selection_every = max(config.training.num_steps // 4, 1)
  config.rounds.prompts_per_round = config.generation.num_prompts
  return config
