"""Putting several reward models on a common scale, and deterministic noisy reward variants.

Reward models live on different scales (a classifier log-prob is <= 0 and unbounded below, mean
ink is in [0, 1]), so an average of raw scores is dominated by the widest one. RankDPO
(Karthik et al. 2024, arXiv 2410.18013, §3.2 / Algorithm 1) sidesteps this with win counts,
which only use each model's ordering; `normalize_rewards` + `average_rewards` is the
score-averaging alternative ("DPO (5 rewards)" in their Table 4). With ``method="rank"`` taken
over the k images of a prompt, the average equals RankDPO's aggregated preference phi when
there are no ties (ties count one half here, zero in Algorithm 1).
"""
import math

import jax
import jax.numpy as jnp

NORMALIZATIONS = ("zscore", "rank", "minmax")


def _axes(ndim, axis):
  if axis is None:
    return tuple(range(ndim - 1)) if ndim > 1 else (0,)
  axes = (axis,) if isinstance(axis, int) else tuple(axis)
  out = []
  for a in axes:
    if not -ndim <= a < ndim:
      raise ValueError(f"normalize_rewards: axis {a} is out of range for rewards with {ndim} dims")
    out.append(a % ndim)
  return tuple(sorted(set(out)))


def _average_rank(r, axes):
  """Average (tie-aware) ranks over `axes`, scaled to [0, 1]; a single element gets 0.5."""
  rest = [a for a in range(r.ndim) if a not in axes]
  perm = rest + list(axes)
  t = jnp.transpose(r, perm)
  n = math.prod(t.shape[len(rest):])
  flat = t.reshape(-1, n)
  s = jnp.sort(flat, -1)
  lo = jax.vmap(lambda a, v: jnp.searchsorted(a, v, side="left"))(s, flat)
  hi = jax.vmap(lambda a, v: jnp.searchsorted(a, v, side="right"))(s, flat) - 1
  ranks = (lo + hi).astype(jnp.float32) / 2 / max(n - 1, 1) if n > 1 else jnp.full(flat.shape, 0.5)
  return jnp.transpose(ranks.reshape(t.shape), [perm.index(a) for a in range(r.ndim)])


def normalize_rewards(r, method="zscore", axis=None):
  """Normalises rewards of each reward model separately.

  Args:
    r: (..., n) rewards with the reward-model axis last (e.g. (P, k, n) from
      `score_candidates`), or a 1-D (B,) vector of one model.
    method: "zscore" ((r - mean) / std; 0 where the std is 0), "rank" (average rank of ties,
      scaled to [0, 1], 0 = worst) or "minmax" ((r - min) / (max - min); 0.5 where constant).
    axis: axes the statistics are taken over. Default: all but the last (the whole data set,
      per model); for 1-D r, axis 0. Pass axis=1 for (P, k, n) to normalise within each prompt.

  Returns:
    array of r's shape, float.
  """
  if method not in NORMALIZATIONS:
    raise ValueError(f"normalize_rewards: unknown method {method!r}; valid: {list(NORMALIZATIONS)}")
  r = jnp.asarray(r)
  if not jnp.issubdtype(r.dtype, jnp.floating):
    r = r.astype(jnp.float32)
  if r.ndim == 0:
    raise ValueError("normalize_rewards: r must have at least one dimension")
  axes = _axes(r.ndim, axis)
  if method == "rank":
    return _average_rank(r, axes).astype(r.dtype)
  if method == "zscore":
    mean = jnp.mean(r, axes, keepdims=True)
    std = jnp.std(r, axes, keepdims=True)
    return jnp.where(std > 0, (r - mean) / jnp.where(std > 0, std, 1), 0).astype(r.dtype)
  lo, hi = jnp.min(r, axes, keepdims=True), jnp.max(r, axes, keepdims=True)
  span = hi - lo
  return jnp.where(span > 0, (r - lo) / jnp.where(span > 0, span, 1), 0.5).astype(r.dtype)


def average_rewards(r, weights=None, normalize="zscore", axis=None):
  """Weighted mean over the last (reward-model) axis of per-model normalised rewards.

  Args:
    r: (..., n) rewards.
    weights: (n,) nonnegative weights (normalised to sum 1), default uniform.
    normalize: a `normalize_rewards` method, or None to average the raw rewards.
    axis: forwarded to `normalize_rewards`.

  Returns:
    (...) averaged scores.
  """
  r = jnp.asarray(r)
  if r.ndim < 1:
    raise ValueError("average_rewards: r must have a trailing reward-model axis")
  if normalize is not None:
    if r.ndim == 1:
      raise ValueError("average_rewards: r must be (..., n) with the reward-model axis last; got a 1-D array")
    r = normalize_rewards(r, normalize, axis=axis)
  n = r.shape[-1]
  if weights is None:
    w = jnp.full((n,), 1.0 / n, r.dtype)
  else:
    w = jnp.asarray(weights, r.dtype)
    if w.shape != (n,):
      raise ValueError(f"average_rewards: weights must have shape ({n},) (one per reward model), got {w.shape}")
    w = w / jnp.sum(w)
  return jnp.sum(r * w, -1)


def noisy_variant(reward, scale, seed=0, num_features=32, bandwidth=1.0):
  """reward(x) + scale * mean_f cos(w_f . x + b_f): a deterministic, seed-dependent perturbation.

  Mimics several imperfect reward models that agree on the trend but disagree locally (preference
  notes §8.2: "compute phi from n >= 2 noisy reward variants"). The perturbation is a fixed
  random-Fourier function of x (w_f ~ N(0, I / bandwidth^2), b_f ~ U[0, 2 pi)), bounded by
  `scale`, so the variant stays a pure function of (x, cond).
  """
  if scale < 0:
    raise ValueError(f"noisy_variant: scale must be >= 0, got {scale}")

  def variant(x, cond=None):
    x = jnp.asarray(x)
    flat = x.reshape(x.shape[0], -1).astype(jnp.float32)
    kw, kb = jax.random.split(jax.random.PRNGKey(seed))
    w = jax.random.normal(kw, (flat.shape[1], num_features)) / bandwidth
    b = jax.random.uniform(kb, (num_features,), maxval=2 * math.pi)
    noise = jnp.mean(jnp.cos(flat @ w + b), -1)
    return reward(x, cond) + scale * noise

  return variant
