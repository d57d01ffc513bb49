"""Rewards by name: `get_reward(name, **options)` calls the named factory with the options."""
from diffjax.rewards import digits, normalize, toy

_REWARDS = {
    "target_mode_indicator": toy.target_mode_indicator,
    "negative_distance": toy.negative_distance,
    "log_density_of_mode": toy.log_density_of_mode,
    "gaussian_bump": toy.gaussian_bump,
    "mixture_log_density": toy.mixture_log_density,
    "classifier_log_prob": digits.classifier_log_prob,
    "stroke_mass": digits.stroke_mass,
    "smoothness": digits.smoothness,
}


def list_rewards():
  """Names accepted by `get_reward`."""
  return sorted(_REWARDS)


def register_reward(name, factory):
  """Adds a reward factory (options -> reward(x, cond=None) -> (B,)) under `name`."""
  if not callable(factory):
    raise ValueError(f"register_reward: factory for {name!r} must be callable")
  _REWARDS[name] = factory


def get_reward(name, **options):
  """The reward `name` (see `list_rewards()`) built with keyword `options` of its factory.

  Example: ``get_reward("target_mode_indicator", means=ring.means, stds=ring.mode_stds, target=0)``.
  An extra option ``noise=dict(scale=..., seed=...)`` wraps the reward in `noisy_variant`.
  """
  if name not in _REWARDS:
    raise ValueError(f"unknown reward {name!r}; valid: {list_rewards()}")
  noise = options.pop("noise", None)
  try:
    reward = _REWARDS[name](**options)
  except TypeError as e:
    raise ValueError(f"invalid options for reward {name!r}: {e}") from None
  if noise:
    reward = normalize.noisy_variant(reward, **noise)
  return reward
