"""Denoising score matching as regression of X_0 on (t, X_t) (Han, Razaviyayn & Xu 2024, §3.1).

Forward process: the Ornstein-Uhlenbeck process X_t = alpha_t X_0 + sigma_t Z, alpha_t = e^{-t},
sigma_t^2 = 1 - e^{-2t} (`ou_process`). Tweedie's formula gives the score
grad log p_t(x) = (alpha_t E[X_0 | X_t = x] - x) / sigma_t^2, so the paper parametrises

    s_f(t, x) = (alpha_t f(t, x) - x) / sigma_t^2                                   (parametric form)

and then s_f - grad log q(x_t | x_0) = alpha_t (f - x_0) / sigma_t^2 exactly. Denoising score
matching with time weight sigma_t^4 / alpha_t^2 and t ~ U[t0, T] is therefore, example by
example, the least-squares regression

    min_f  E_{t ~ U[t0, T]} E || f(t, X_t) - X_0 ||^2,

with input (t, X_t), label X_0, regression function f*(t, x) = E[X_0 | X_t = x] and label noise
X_0 - E[X_0 | X_t] ("regression with noisy labels"). In diffjax terms it is
`score_matching_loss(prediction="x0", weighting="x0", reduce="sum")`; `regression_data` draws
(t, noise) with the same keys as that loss, so the two are the same numbers.

A score error is an f error magnified by `score_error_weight` = alpha_t^2 / sigma_t^4, which
grows like 1 / (4 t^2) as t -> 0: the reason bounds are stated on [t0, T].
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp

from diffjax import parametrization as prm
from diffjax import processes
from diffjax.losses.score_matching import sample_times


def ou_process(t0=1e-3, T=1.0):
  """The Ornstein-Uhlenbeck forward process on [t0, T]: VP with constant beta = 2."""
  if not 0 < t0 < T:
    raise ValueError(f"ou_process: need 0 < t0 < T; got t0={t0}, T={T}")
  return processes.VP(beta_min=2.0, beta_max=2.0, t_min=t0, t_max=T)


class RegressionData(NamedTuple):
  """n regression triples of the DSM reformulation; all arrays share the batch axis."""
  x0: jax.Array  # (n, d) labels
  t: jax.Array  # (n,) times ~ U[t0, T]
  noise: jax.Array  # (n, d) Z
  x_t: jax.Array  # (n, d) alpha_t x0 + sigma_t Z


def regression_data(key, x0, process):
  """Draws t ~ U[t_min, t_max] of `process` and Z ~ N(0, I) for each x0 (n, d).

  The keys are used as `score_matching_loss` uses them, so the triples are that loss's.
  """
  key_t, key_n = jax.random.split(key)
  t = sample_times(key_t, x0.shape[0], process, dtype=x0.dtype)
  noise = process.sample_noise(key_n, x0.shape, x0.dtype)
  return RegressionData(x0, t, noise, process.marginal(x0, t, noise))


def parametric_score(f, process):
  """The score s(x, t) = (alpha_t f(x, t) - x) / sigma_t^2 of an X_0-regressor `f(x, t)`."""
  def score(x, t):
    return prm.convert(f(x, t), x, t, process, source="x0", target="score")

  return score


def score_error_weight(t, process):
  """alpha_t^2 / sigma_t^4: ||s_f - s_{f*}||^2 = score_error_weight * ||f - f*||^2."""
  return process.alpha(t)**2 / process.sigma(t)**4


def label_noise_variance(distribution, data, process):
  """Per-coordinate variance of the label noise X_0 - E[X_0 | X_t], averaged over `data`.

  `distribution` must give the exact posterior mean (`denoiser(x, t, process)`), e.g. a
  `diffjax.data.GaussianMixture`.
  """
  residual = data.x0 - distribution.denoiser(data.x_t, data.t, process)
  return jnp.mean(residual**2)
