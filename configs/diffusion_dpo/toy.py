"""Diffusion-DPO (Wallace et al. 2024) on the small preference tasks; shared settings in configs/preference/_common.py.

  python -m diffjax.finetune.main --config=configs/diffusion_dpo/toy.py:ring --workdir=/tmp/diffusion_dpo_ring
  python -m diffjax.finetune.main --config=configs/diffusion_dpo/toy.py:digits --workdir=/tmp/diffusion_dpo_digits

Options: the task, `ring` (default) or `digits`, optionally with `,tiny` (seconds; tests).

Official loss (-beta/2 scaling, eps-MSE averaged over dims, shared t and noise); pairs from disjoint
halves of the reference's 4-image lists, labelled by win counts over the task's rewards.
beta is swept by experiments/preference.py.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "preference"))
from _common import parse, toy_config  # noqa: E402


def get_config(options="ring"):
  task, tiny = parse(options, "diffusion_dpo/toy")
  return toy_config("diffusion_dpo", task, tiny, beta=1000.0, loss_type="sigmoid", scaling="official")
