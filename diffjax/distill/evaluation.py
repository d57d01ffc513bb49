"""Sample quality of students and teachers against the true distribution (distillation notes, sec. 9.3).

  sliced_wasserstein   SW-2 over 512 random directions, next to its noise floor (two data sets)
  mmd2                 biased MMD^2 with a sum of RBF kernels (`metrics.mmd`)
  modes                for Gaussian mixtures: modes covered (a mode's high-quality samples, within
                       3 std of its centre, are >= 25 % of its expected count N w_k), the
                       high-quality fraction, and the total-variation distance of the per-mode
                       histogram to the mixture weights (mode re-weighting, which SW under-weights)
"""
import jax.numpy as jnp
import numpy as np

from diffjax import metrics

COVERED_SHARE = 0.25  # a mode is covered when it holds >= 25 % of its expected high-quality share


def sample_metrics(samples, data, key, *, floor_data=None, mixture=None):
  """Distances of ``samples`` to ``data`` (same number of rows), as a dict of floats.

  Args:
    samples: (N, ...) model samples.
    data: (N, ...) samples of the true distribution.
    key: PRNG key of the SW directions (the same directions for the noise floor).
    floor_data: optional second, independent data set: adds ``sliced_wasserstein_floor``.
    mixture: optional `data.toy.GaussianMixture`: adds the mode statistics.
  """
  flat = lambda a: jnp.asarray(np.asarray(a).reshape(len(a), -1), jnp.float32)
  x, y = flat(samples), flat(data)
  out = {"sliced_wasserstein": float(metrics.sliced_wasserstein(key, x, y)),
         "mmd2": float(metrics.mmd(x[:3000], y[:3000])),
         "finite_fraction": float(jnp.mean(jnp.all(jnp.isfinite(x), axis=1)))}
  if floor_data is not None:
    out["sliced_wasserstein_floor"] = float(metrics.sliced_wasserstein(key, flat(floor_data), y))
  if mixture is not None:
    out.update(mode_statistics(x, mixture))
  return out


def mode_statistics(samples, mixture):
  """Modes covered, high-quality fraction and per-mode TV distance of a mixture's samples."""
  weights = np.asarray(mixture.weights, np.float64)
  cov = metrics.mode_coverage(jnp.asarray(samples), mixture.means, mixture.mode_stds)
  shares = np.asarray(cov["shares"], np.float64)
  hq = float(shares.sum())
  covered = int(np.sum(shares >= COVERED_SHARE * weights))
  hist = shares / max(hq, 1e-12)
  return {"modes_covered": covered, "num_modes": int(len(weights)), "hq_fraction": hq,
          "mode_tv": float(0.5 * np.abs(hist - weights).sum())}
