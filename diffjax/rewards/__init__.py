"""Reward functions for preference optimisation (Diffusion-DPO, RankDPO, D3PO, SPO, DDO).

A reward is a pure, jittable function ``reward(x, cond=None) -> (B,)``; higher is better.
`cond` is the per-example condition (a toy mode index or a digit class label). Rewards are
built by factories (`target_mode_indicator(...)`, `classifier_log_prob(clf)`, ...) or by name
with `get_reward(name, **options)`.
"""
from diffjax.rewards.digits import classifier_log_prob, smoothness, stroke_mass
from diffjax.rewards.normalize import NORMALIZATIONS, average_rewards, noisy_variant, normalize_rewards
from diffjax.rewards.registry import get_reward, list_rewards, register_reward
from diffjax.rewards.toy import (gaussian_bump, log_density_of_mode, mixture_log_density,
                                 negative_distance, target_mode_indicator)

__all__ = [
    "NORMALIZATIONS", "average_rewards", "classifier_log_prob", "gaussian_bump", "get_reward",
    "list_rewards", "log_density_of_mode", "mixture_log_density", "negative_distance",
    "noisy_variant", "normalize_rewards", "register_reward", "smoothness", "stroke_mass",
    "target_mode_indicator",
]
