"""Few-step student samplers: consistency multistep sampling and DMD2's re-noising chain, against
the exact consistency function of Gaussian data and hand-written loops (float64)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffjax as dj
from diffjax.samplers import few_step

S, SIGMA_MIN = 0.5, 0.002  # data N(0, S^2 I), EDM process x_sigma = x + sigma eps


def exact_consistency_fn(x, sigma):
  """The PF-ODE flow map of N(0, S^2) data from sigma to sigma_min: a linear rescaling."""
  factor = jnp.sqrt((S**2 + SIGMA_MIN**2) / (S**2 + sigma**2))
  return x * factor.reshape((-1,) + (1,) * (x.ndim - 1))


def test_consistency_multistep_matches_algorithm_1_by_hand(x64):
  ts = jnp.array([80.0, 2.0, 0.5])
  x_T = 80.0 * jax.random.normal(jax.random.PRNGKey(0), (5, 3))
  key = jax.random.PRNGKey(1)
  out = few_step.consistency_multistep(exact_consistency_fn, x_T, ts, key=key, sigma_min=SIGMA_MIN)
  x0 = np.asarray(x_T) * np.sqrt((S**2 + SIGMA_MIN**2) / (S**2 + 80.0**2))
  for i, tau in enumerate([2.0, 0.5], start=1):
    z = np.asarray(jax.random.normal(jax.random.fold_in(key, i), x0.shape, jnp.float64))
    x = x0 + np.sqrt(tau**2 - SIGMA_MIN**2) * z
    x0 = x * np.sqrt((S**2 + SIGMA_MIN**2) / (S**2 + tau**2))
  np.testing.assert_allclose(np.asarray(out), x0, rtol=0, atol=1e-12)


def test_consistency_multistep_one_step_and_exact_distribution(x64):
  """With the exact f every iterate is N(0, S^2 + sigma_min^2): checked on 400k samples."""
  n = 400_000
  x_T = 80.0 * jax.random.normal(jax.random.PRNGKey(2), (n, 1))
  one = few_step.consistency_multistep(exact_consistency_fn, x_T, jnp.array([80.0]), sigma_min=SIGMA_MIN)
  np.testing.assert_allclose(np.asarray(one), np.asarray(exact_consistency_fn(x_T, jnp.full((n,), 80.0))), atol=0)
  target = S**2 + SIGMA_MIN**2
  for ts in ([80.0], [80.0, 0.821], [80.0, 5.0, 1.0, 0.2]):
    x = few_step.consistency_multistep(exact_consistency_fn, x_T, jnp.array(ts), key=jax.random.PRNGKey(3),
                                       sigma_min=SIGMA_MIN)
    var = float(jnp.var(x))
    assert abs(var - target) < 4 * target * np.sqrt(2 / n), (ts, var, target)  # 4 standard errors


def test_renoise_multistep_is_the_dmd2_chain(x64):
  process = dj.processes.VP()
  ts = jnp.array([1.0, 0.75, 0.5, 0.25])
  generator = lambda x, t: jnp.tanh(x) * (1.0 + t[:, None])
  x_T = jax.random.normal(jax.random.PRNGKey(4), (6, 2))
  key = jax.random.PRNGKey(5)
  out = few_step.renoise_multistep(generator, x_T, ts, process=process, key=key)
  x = x_T
  for i, t in enumerate(np.asarray(ts)):
    x0 = generator(x, jnp.full((6,), t))
    if i + 1 < len(ts):
      t_next = ts[i + 1]
      x = process.alpha(t_next) * x0 + process.sigma(t_next) * jax.random.normal(jax.random.fold_in(key, i + 1),
                                                                                 x0.shape, x0.dtype)
  np.testing.assert_allclose(np.asarray(out), np.asarray(x0), rtol=0, atol=1e-13)
  # a generator that always returns the same image returns it, whatever the noise
  c = jnp.array([0.3, -0.7])
  np.testing.assert_array_equal(
      few_step.renoise_multistep(lambda x, t: jnp.broadcast_to(c, x.shape), x_T, ts, process=process, key=key),
      jnp.broadcast_to(c, x_T.shape))


def test_few_step_argument_errors():
  f = lambda x, t: x
  x = jnp.zeros((2, 3))
  with pytest.raises(ValueError, match="key is required"):
    few_step.consistency_multistep(f, x, jnp.array([80.0, 1.0]))
  with pytest.raises(ValueError, match="ts must be a 1-D array"):
    few_step.renoise_multistep(f, x, jnp.array([]), process=dj.processes.EDM())
  assert few_step.renoise_multistep(f, x, jnp.array([80.0]), process=dj.processes.EDM()).shape == x.shape
