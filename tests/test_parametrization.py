"""Prediction conversions, EDM preconditioning and guidance wrappers (float64, exact)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffjax import parametrization as prm
from diffjax import processes as P

PROCESSES = [P.VP(), P.VP(schedule="cosine"), P.SubVP(), P.VE(), P.EDM(), P.RectifiedFlow(),
             P.VPDiscrete.from_ddpm()]


@pytest.mark.parametrize("process", PROCESSES, ids=lambda p: type(p).__name__)
@pytest.mark.parametrize("source", prm.PREDICTIONS)
@pytest.mark.parametrize("target", prm.PREDICTIONS)
def test_round_trips(x64, process, source, target):
  kx, k0, ke = jax.random.split(jax.random.PRNGKey(0), 3)
  t = process.t_min + jnp.array([0.2, 0.5, 0.9]) * (process.t_max - process.t_min)
  x0 = jax.random.normal(k0, (3, 4))
  eps = jax.random.normal(ke, (3, 4))
  x = process.marginal(x0, t, eps)
  truth = {p: prm.from_x0(x0, x, t, process, p) for p in prm.PREDICTIONS}
  # The forward definitions hold on the interpolant.
  a, s = process.alpha(t)[:, None], process.sigma(t)[:, None]
  np.testing.assert_allclose(truth["eps"], eps, rtol=1e-9, atol=1e-9)
  np.testing.assert_allclose(truth["v"], a * eps - s * x0, rtol=1e-9, atol=1e-9)
  np.testing.assert_allclose(truth["score"], -eps / s, rtol=1e-9, atol=1e-9)
  out = prm.convert(truth[source], x, t, process, source=source, target=target)
  np.testing.assert_allclose(out, truth[target], rtol=1e-8, atol=1e-8)


def test_flow_is_interpolant_velocity(x64):
  p = P.RectifiedFlow()
  x0, eps, t = jnp.ones((1, 2)), -jnp.ones((1, 2)), jnp.array([0.3])
  x = p.marginal(x0, t, eps)
  np.testing.assert_allclose(prm.from_x0(x0, x, t, p, "flow"), eps - x0, rtol=1e-14)
  den = prm.to_denoiser(lambda x, t: eps - x0, p, "flow")
  np.testing.assert_allclose(den(x, t), x0, rtol=1e-14)


def test_edm_preconditioning_table(x64):
  sigma = jnp.array([0.01, 0.5, 3.0, 80.0])
  c_skip, c_out, c_in, c_noise = prm.edm_preconditioning(sigma, "edm", sigma_data=0.5)
  np.testing.assert_allclose(c_skip, 0.25 / (sigma**2 + 0.25))
  np.testing.assert_allclose(c_out, 0.5 * sigma / jnp.sqrt(sigma**2 + 0.25))
  np.testing.assert_allclose(c_in, 1 / jnp.sqrt(sigma**2 + 0.25))
  np.testing.assert_allclose(c_noise, jnp.log(sigma) / 4)
  # EDM's unit-variance design: Var(c_in (y + sigma n)) = 1 and the effective target
  # (y - c_skip (y + sigma n)) / c_out has unit variance for data of std sigma_data.
  np.testing.assert_allclose(c_in**2 * (0.25 + sigma**2), 1.0, rtol=1e-12)
  np.testing.assert_allclose(((1 - c_skip)**2 * 0.25 + c_skip**2 * sigma**2) / c_out**2, 1.0, rtol=1e-12)
  _, _, _, c_noise_ve = prm.edm_preconditioning(sigma, "ve")
  np.testing.assert_allclose(c_noise_ve, jnp.log(sigma / 2))
  with pytest.raises(ValueError, match="valid"):
    prm.edm_preconditioning(sigma, "iddpm2")


def test_edm_denoiser_with_zero_network_is_bayes_for_gaussian_data(x64):
  """For data N(0, sigma_data^2), F = 0 gives D = c_skip y, the exact posterior mean."""
  p = P.EDM()
  den = prm.edm_denoiser(lambda x, c: jnp.zeros_like(x), p, "edm", sigma_data=0.5)
  x = jnp.array([[1.0, -2.0], [0.3, 0.4]])
  t = jnp.array([0.7, 5.0])
  np.testing.assert_allclose(den(x, t), 0.25 / (0.25 + t[:, None]**2) * x, rtol=1e-13)


def test_vp_preconditioning_matches_eps_network(x64):
  """VPPrecond with F = exact VP eps-predictor (time = c_noise / (M - 1)) is the exact denoiser."""
  vp = P.VP(beta_min=0.1, beta_max=20.0)
  mu, var = 0.3, 0.6  # data N(mu, var), per dimension

  def exact_x0(x, t, process):
    a, s = process.alpha(t)[:, None], process.sigma(t)[:, None]
    return mu + a * var * (x - a * mu) / (a**2 * var + s**2)

  def eps_net(x_vp, c_noise):
    t = c_noise / 999.0
    return prm.from_x0(exact_x0(x_vp, t, vp), x_vp, t, vp, "eps")

  edm = P.EDM()
  den = prm.edm_denoiser(eps_net, edm, "vp")
  x = jnp.array([[1.0, -2.0], [0.3, 0.4]])
  sigma = jnp.array([0.3, 4.0])
  np.testing.assert_allclose(den(x, sigma), exact_x0(x, sigma, edm), rtol=1e-10)
  # The same network under a VP process: D(x_t, t) with x_t = alpha (x0 + sigma_edm n).
  den_vp = prm.edm_denoiser(eps_net, vp, "vp")
  t = jnp.array([0.2, 0.8])
  np.testing.assert_allclose(den_vp(x, t), exact_x0(x, t, vp), rtol=1e-10)


def test_classifier_free_guidance_is_one_batched_call(x64):
  calls = []

  def cond_den(x, t, c):
    calls.append(x.shape[0])
    return x * 0 + c[:, None].astype(x.dtype)  # cond label c -> output c; null (=9) -> 9

  x, t, c = jnp.zeros((3, 2)), jnp.ones((3,)), jnp.array([1, 2, 3])
  out = prm.classifier_free_guidance(cond_den, 3.0, null_cond=9)(x, t, c)
  np.testing.assert_allclose(out[:, 0], 9 + 3.0 * (c - 9))
  assert calls == [6]
  assert prm.classifier_free_guidance(cond_den, 1.0, null_cond=9) is cond_den


def test_classifier_guidance_shift(x64):
  p = P.VP()
  w = jnp.array([0.5, -1.0])
  den = lambda x, t: 0.5 * x
  guided = prm.classifier_guidance(den, lambda x, t, c: x @ w, 2.0, p)
  x, t = jnp.ones((2, 2)), jnp.array([0.3, 0.6])
  expected = 0.5 * x + 2.0 * (p.sigma(t)**2 / p.alpha(t))[:, None] * w
  np.testing.assert_allclose(guided(x, t, None), expected, rtol=1e-12)


def test_unknown_prediction():
  with pytest.raises(ValueError, match="valid predictions"):
    prm.to_denoiser(lambda x, t: x, P.VP(), "epsilon")
