"""RankDPO (Karthik et al. 2024) on the small preference tasks; shared settings in configs/preference/_common.py.

  python -m diffjax.finetune.main --config=configs/rank_dpo/toy.py:ring --workdir=/tmp/rank_dpo_ring
  python -m diffjax.finetune.main --config=configs/rank_dpo/toy.py:digits --workdir=/tmp/rank_dpo_digits

Options: the task, `ring` (default) or `digits`, optionally with `,tiny` (seconds; tests).

The same 4-image lists of the reference as the Diffusion-DPO config (equal generation budget),
ranked by aggregated preference phi (Algorithm 1 win counts over the task's rewards), DCG
gains and discounts from the target ranking (eq. 6-7).
beta is swept by experiments/preference.py.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "preference"))
from _common import parse, toy_config  # noqa: E402


def get_config(options="ring"):
  task, tiny = parse(options, "rank_dpo/toy")
  config = toy_config("rank_dpo", task, tiny, beta=1000.0, rank_source="target")
  config.data.batch_size //= 2  # lists of 4 images: as many images per step as the pairs of DPO
  return config
