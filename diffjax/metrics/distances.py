"""Sample-based distances between distributions, chunked so 10,000 x 10,000 fits in memory.

  sliced_wasserstein  mean over random directions of the exact 1-D W_p (Rabin et al. 2011;
                      Bonneel et al. 2015), ^(1/p).
  mmd                 squared maximum mean discrepancy with a sum of RBF kernels (Gretton et
                      al. 2012), biased (V-statistic) or unbiased (U-statistic).
  energy_distance     2 E|X - Y| - E|X - X'| - E|Y - Y'| (Szekely & Rizzo 2013).
  mode_coverage       share of samples per mixture mode (nearest mean, within a radius).
"""
import jax
import jax.numpy as jnp


def _flat(x):
  x = jnp.asarray(x)
  return x.reshape(x.shape[0], -1)


def sliced_wasserstein(key, x, y, n_projections=512, p=2):
  """Sliced p-Wasserstein distance between two equal-size samples.

  Args:
    key: PRNG key for the random directions (uniform on the sphere).
    x, y: samples (N, ...) with the same N and the same trailing shape.
    n_projections: number of directions.
    p: order of the 1-D Wasserstein distance.

  Returns:
    (mean_theta W_p(theta.x, theta.y)^p)^(1/p).
  """
  x, y = _flat(x), _flat(y)
  if x.shape != y.shape:
    raise ValueError(f"sliced_wasserstein needs samples of equal shape, got {x.shape} and {y.shape}")
  dirs = jax.random.normal(key, (x.shape[1], n_projections), x.dtype)
  dirs = dirs / jnp.linalg.norm(dirs, axis=0, keepdims=True)
  px, py = jnp.sort(x @ dirs, axis=0), jnp.sort(y @ dirs, axis=0)
  return jnp.mean(jnp.abs(px - py)**p)**(1.0 / p)


def _pairwise_mean(fn, x, y, block=1024):
  """mean over i, j of fn(x_i, y_j) with rows processed in blocks (bounded memory)."""
  n = x.shape[0]
  pad = (-n) % block
  xp = jnp.concatenate([x, jnp.zeros((pad, x.shape[1]), x.dtype)]).reshape(-1, block, x.shape[1])
  mask = (jnp.arange(n + pad) < n).reshape(-1, block)

  def row_block(args):
    xb, mb = args
    vals = fn(xb[:, None, :], y[None, :, :])  # (block, M)
    return jnp.sum(vals * mb[:, None])

  return jnp.sum(jax.lax.map(row_block, (xp, mask))) / (n * y.shape[0])


def _sq_dist(a, b):
  return jnp.sum((a - b)**2, axis=-1)


def mmd(x, y, bandwidths=(0.1, 0.2, 0.5, 1.0, 2.0, 5.0), unbiased=False, block=1024):
  """Squared MMD with k(a, b) = sum_h exp(-|a - b|^2 / (2 h^2)).

  Args:
    x, y: samples (N, ...), (M, ...).
    bandwidths: RBF length scales h.
    unbiased: drop the diagonal terms of k(x, x) and k(y, y) (U-statistic).
    block: rows per block of the pairwise computation.

  Returns:
    The squared MMD estimate.
  """
  x, y = _flat(x), _flat(y)
  hs = jnp.asarray(bandwidths, x.dtype)
  kernel = lambda a, b: jnp.sum(jnp.exp(-_sq_dist(a, b)[..., None] / (2 * hs**2)), -1)
  kxx, kyy, kxy = (_pairwise_mean(kernel, a, b, block) for a, b in ((x, x), (y, y), (x, y)))
  if unbiased:
    n, m, k0 = x.shape[0], y.shape[0], float(len(bandwidths))
    kxx = (kxx * n * n - n * k0) / (n * (n - 1))
    kyy = (kyy * m * m - m * k0) / (m * (m - 1))
  return kxx + kyy - 2 * kxy


def energy_distance(x, y, block=1024):
  """Energy distance 2 E|X - Y| - E|X - X'| - E|Y - Y'| (V-statistic)."""
  x, y = _flat(x), _flat(y)
  dist = lambda a, b: jnp.sqrt(jnp.maximum(_sq_dist(a, b), 1e-30))
  return (2 * _pairwise_mean(dist, x, y, block) - _pairwise_mean(dist, x, x, block)
          - _pairwise_mean(dist, y, y, block))


def mode_coverage(samples, means, stds=None, radius=3.0):
  """How a sample set spreads over the modes of a mixture.

  Each sample is assigned to its nearest mean; it counts for that mode when it lies within
  `radius` standard deviations of it (always, if `stds` is None).

  Args:
    samples: (N, D).
    means: (K, D) mode centres.
    stds: optional (K,) (or scalar) standard deviation of each mode.
    radius: the radius in standard deviations.

  Returns:
    dict with "shares" (K,): fraction of all samples counted for each mode; "off_mode": fraction
    counted for none; "modes_hit": number of modes with at least one sample.
  """
  samples, means = _flat(samples), jnp.asarray(means, samples.dtype)
  d2 = jnp.sum((samples[:, None, :] - means[None]) ** 2, -1)
  nearest = jnp.argmin(d2, axis=-1)
  if stds is None:
    within = jnp.ones(samples.shape[:1], bool)
  else:
    stds = jnp.broadcast_to(jnp.asarray(stds, samples.dtype), (means.shape[0],))
    within = jnp.sqrt(jnp.min(d2, -1)) <= radius * stds[nearest]
  onehot = jax.nn.one_hot(nearest, means.shape[0]) * within[:, None]
  shares = jnp.mean(onehot, axis=0)
  return {"shares": shares, "off_mode": 1.0 - jnp.sum(shares), "modes_hit": jnp.sum(shares > 0)}
