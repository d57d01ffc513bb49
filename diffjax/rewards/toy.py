"""Rewards on 2-D toy samples (the small-scale preference protocol of diffjax's preference notes, §8).

Every reward is a pure, jittable function ``reward(x, cond=None) -> (B,)`` (higher is better) on
samples ``x`` of shape (B, D). Factories close over their parameters (mode means, a target point).
Where ``target``/``point`` is None the reward is *conditional*: ``cond`` (B,) holds the index of
the prompted mode, as in the toy prompts of `diffjax.data.preference` (a "prompt" is a mode id).

  ring = diffjax.data.toy.ring8()
  r_hit = target_mode_indicator(ring.means, ring.mode_stds, target=0)  # 0/1, flat inside 3 std
  r_far = negative_distance(ring.means[0])                             # -||x - m_0||
  r_real = mixture_log_density(ring)                                   # log p_data(x): any mode
The last one disagrees with the first two (it prefers the centre of any mode over an off-ring
point close to the target), which is what makes the win counts of RankDPO's Algorithm 1 differ
from any single reward.
"""
import math

import jax.numpy as jnp


def _select(table, index, cond, what):
  """table[index] for a fixed index, else table[cond] per example (cond = prompted mode)."""
  if index is not None:
    return table[index][None]
  if cond is None:
    raise ValueError(f"{what}: no fixed target was given, so cond (the prompted mode index, shape (B,)) "
                     "is required")
  return table[jnp.asarray(cond, jnp.int32)]


def _mode_table(means, stds):
  means = jnp.asarray(means)
  if means.ndim != 2:
    raise ValueError(f"means must have shape (K, D), got {means.shape}")
  stds = jnp.broadcast_to(jnp.asarray(stds, means.dtype), means.shape[:1])
  return means, stds


def target_mode_indicator(means, stds, target=0, n_std=3.0):
  """1 where the sample's nearest mode is `target` and it lies within `n_std` of that mode's std.

  The sparse "did it hit the target mode" reward of the pilot (preference notes §8.1/8.2). Ties
  between the indicator's two values are common, so it is best combined with a graded reward.

  Args:
    means: (K, D) mode means (e.g. `GaussianMixture.means`).
    stds: scalar or (K,) per-mode standard deviations (e.g. `GaussianMixture.mode_stds`).
    target: index of the rewarded mode, or None to read it from `cond` per example.
    n_std: radius of the accepted ball in units of the target's std.

  Returns:
    reward(x, cond=None) -> (B,) float32 in {0, 1}.
  """
  means, stds = _mode_table(means, stds)
  k = means.shape[0]
  if target is not None and not 0 <= int(target) < k:
    raise ValueError(f"target_mode_indicator: target must be in [0, {k}), got {target}")
  if n_std <= 0:
    raise ValueError(f"target_mode_indicator: n_std must be > 0, got {n_std}")

  def reward(x, cond=None):
    x = jnp.asarray(x)
    tgt = (jnp.full(x.shape[:1], int(target), jnp.int32) if target is not None
           else jnp.asarray(cond, jnp.int32))
    d2 = jnp.sum((x[:, None, :] - means[None].astype(x.dtype))**2, -1)  # (B, K)
    nearest = jnp.argmin(d2, -1)
    dist = jnp.sqrt(jnp.take_along_axis(d2, tgt[:, None], 1)[:, 0])
    hit = (nearest == tgt) & (dist <= n_std * stds[tgt])
    return hit.astype(jnp.float32)

  return reward


def negative_distance(point):
  """-||x - point||_2: a graded reward that peaks at `point` (the pilot's pair label, §8.1).

  Args:
    point: (D,) target point, or (K, D) table of points selected per example by `cond`.

  Returns:
    reward(x, cond=None) -> (B,).
  """
  point = jnp.asarray(point)
  if point.ndim not in (1, 2):
    raise ValueError(f"negative_distance: point must have shape (D,) or (K, D), got {point.shape}")

  def reward(x, cond=None):
    x = jnp.asarray(x)
    p = point[None] if point.ndim == 1 else _select(point, None, cond, "negative_distance")
    return -jnp.sqrt(jnp.sum((x - p.astype(x.dtype))**2, -1))

  return reward


def log_density_of_mode(means, stds, target=0):
  """log N(x; means[target], stds[target]^2 I): the smooth counterpart of the target indicator.

  Args:
    means: (K, D) mode means.
    stds: scalar or (K,) standard deviations.
    target: rewarded mode, or None to read it from `cond`.

  Returns:
    reward(x, cond=None) -> (B,).
  """
  means, stds = _mode_table(means, stds)
  d = means.shape[1]

  def reward(x, cond=None):
    x = jnp.asarray(x)
    mu = _select(means, target, cond, "log_density_of_mode").astype(x.dtype)
    s = _select(stds, target, cond, "log_density_of_mode").astype(x.dtype)
    sq = jnp.sum((x - mu)**2, -1)
    return -0.5 * sq / s**2 - d * jnp.log(s) - 0.5 * d * math.log(2 * math.pi)

  return reward


def gaussian_bump(center, width=0.5, height=1.0):
  """height * exp(-||x - center||^2 / (2 width^2)): a smooth, bounded reward in [0, height].

  Unlike `negative_distance` it saturates far from `center`, so two distant samples nearly tie.

  Args:
    center: (D,) or (K, D) (selected by `cond`).
    width: bump length scale (> 0).
    height: peak value.
  """
  center = jnp.asarray(center)
  if width <= 0:
    raise ValueError(f"gaussian_bump: width must be > 0, got {width}")

  def reward(x, cond=None):
    x = jnp.asarray(x)
    c = center[None] if center.ndim == 1 else _select(center, None, cond, "gaussian_bump")
    return height * jnp.exp(-jnp.sum((x - c.astype(x.dtype))**2, -1) / (2 * width**2))

  return reward


def mixture_log_density(dist):
  """log p_data(x) under a toy `GaussianMixture`: a "realism" reward that likes every mode.

  It disagrees with the target-mode rewards: a sample on a non-target mode's centre scores higher
  than an off-ring sample near the target.
  """
  if not hasattr(dist, "log_prob"):
    raise ValueError(f"mixture_log_density: dist must be a GaussianMixture (with .log_prob), got {type(dist)}")

  def reward(x, cond=None):
    return dist.log_prob(jnp.asarray(x))

  return reward
