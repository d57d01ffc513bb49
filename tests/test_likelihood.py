"""PF-ODE likelihood on Gaussian data against the exact density (float64)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffjax import likelihood
from diffjax import processes as P
from diffjax.data import toy

MU = np.array([0.5, -1.0, 0.2])
VAR = np.array([0.04, 0.5, 2.0])


def _setup(process):
  data = toy.Gaussian(jnp.asarray(MU), jnp.asarray(VAR))  # float64 under the x64 fixture
  den = lambda x, t: data.denoiser(x, t, process)
  # The exact marginal at T as the prior, so the only error is the ODE solve.
  prior = lambda x: data.marginal_log_prob(x, process.t_max, process)
  return data, den, prior


@pytest.mark.parametrize("process", [P.VP(), P.EDM(sigma_max=20.0)], ids=["VP", "EDM"])
def test_exact_trace_matches_density(x64, process):
  data, den, prior = _setup(process)
  x = data.sample(jax.random.PRNGKey(0), 6)
  t_eps = process.t_min
  out = jax.jit(lambda x: likelihood.log_likelihood(den, x, process=process, t_eps=t_eps, rtol=1e-8, atol=1e-8,
                                                    prior_logp=prior))(x)
  exact = data.marginal_log_prob(x, t_eps, process)
  np.testing.assert_allclose(out["logp"] / 3, exact / 3, atol=1e-3)  # within 1e-3 nats/dim
  np.testing.assert_allclose(out["logp"], exact, atol=1e-5)


def test_hutchinson_within_monte_carlo_error(x64):
  process = P.VP()
  data, den, prior = _setup(process)
  x = jnp.broadcast_to(data.sample(jax.random.PRNGKey(0), 1), (256, 3))  # one point, many probes
  # Gaussian probes: with a diagonal Jacobian (this model) Rademacher probes are exact.
  out = jax.jit(lambda x, k: likelihood.log_likelihood(den, x, process=process, divergence="hutchinson", key=k,
                                                       probe="gaussian", rtol=1e-6, atol=1e-6, prior_logp=prior))(
      x, jax.random.PRNGKey(1))
  exact = float(data.marginal_log_prob(x[:1], process.t_min, process)[0])
  est = np.asarray(out["logp"])
  assert abs(est.mean() - exact) < 4 * est.std() / math.sqrt(len(est))
  assert est.std() > 0  # the estimator is genuinely stochastic


def test_standard_prior_and_bits_per_dim(x64):
  process = P.VP()
  data, den, _ = _setup(process)
  x = data.sample(jax.random.PRNGKey(0), 4)
  with_std_prior = likelihood.log_likelihood(den, x, process=process)
  exact = data.marginal_log_prob(x, process.t_min, process)
  # N(0, I) instead of the exact p_T = N(alpha_T mu, alpha_T^2 v + sigma_T^2), alpha_T = 0.0066,
  # changes log p by the prior mismatch at x_T only.
  np.testing.assert_allclose(with_std_prior["logp"], exact, atol=0.03)
  rademacher = likelihood.log_likelihood(den, x, process=process, divergence="hutchinson", key=jax.random.PRNGKey(0))
  np.testing.assert_allclose(rademacher["logp"], with_std_prior["logp"], rtol=1e-6)  # diagonal Jacobian: exact
  # bits/dim offset: a model whose x-density is exactly uniform on [-1, 1]^D has
  # log p_x = -D log 2, so bpd = 1 + 7 = 8 = log2(256), the bits of a uniform 8-bit image.
  d = 3
  assert abs(-(-d * math.log(2)) / (d * math.log(2)) + math.log2(128) - 8.0) < 1e-12
  images = jnp.array([[0, 128, 255]], jnp.uint8)
  xs = likelihood.dequantize(images, jax.random.PRNGKey(0))
  assert float(xs.min()) >= -1.0 and float(xs.max()) < 1.0
  np.testing.assert_allclose(jnp.floor((xs + 1) * 128), images.astype(jnp.float64))


def test_bits_per_dim_of_a_gaussian_model(x64):
  """bits_per_dim = -log p_x / (D ln 2) + 7 at the dequantized points."""
  process = P.VP()
  data = toy.Gaussian(jnp.zeros(4), jnp.full((4,), 0.3))
  den = lambda x, t: data.denoiser(x, t, process)
  prior = lambda x: data.marginal_log_prob(x, process.t_max, process)
  images = jnp.array([[100, 128, 140, 90]], jnp.uint8)
  key = jax.random.PRNGKey(3)
  bpd = likelihood.bits_per_dim(den, images, process=process, key=key, prior_logp=prior, rtol=1e-8, atol=1e-8,
                                t_eps=process.t_min)
  x = likelihood.dequantize(images, jax.random.split(key)[0])
  expected = -data.marginal_log_prob(x, process.t_min, process) / (4 * math.log(2)) + 7.0
  np.testing.assert_allclose(bpd, expected, atol=1e-5)


def test_errors():
  with pytest.raises(ValueError, match="valid"):
    likelihood.log_likelihood(lambda x, t: x, jnp.ones((1, 2)), process=P.VP(), divergence="skilling")
  with pytest.raises(ValueError, match="key"):
    likelihood.log_likelihood(lambda x, t: x, jnp.ones((1, 2)), process=P.VP(), divergence="hutchinson")
