"""Noise processes against closed forms and SDE consistency identities (float64)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffjax import processes as P

ALL = {
    "vp_linear": lambda: P.VP(),
    "vp_cosine": lambda: P.VP(schedule="cosine"),
    "vp_discrete": lambda: P.VPDiscrete.from_ddpm("linear", 1000),
    "vp_discrete_cosine": lambda: P.VPDiscrete.from_ddpm("cosine", 1000),
    "subvp": lambda: P.SubVP(),
    "ve": lambda: P.VE(),
    "edm": lambda: P.EDM(),
    "rectified_flow": lambda: P.RectifiedFlow(),
}


def _grid(p, n=37):
  lo = max(p.t_min, 1e-3 * p.t_max)
  hi = p.t_max * (0.97 if isinstance(p, P.RectifiedFlow) else 1.0)
  t = jnp.linspace(lo, hi, n)
  if isinstance(p, P.VPDiscrete):  # stay inside segments, away from the kinks
    t = (jnp.floor(t * p.num_steps) + 0.37) / p.num_steps
    t = jnp.clip(t, 1.0 / p.num_steps, 1.0 - 0.7 / p.num_steps)
  return t


@pytest.mark.parametrize("name", sorted(ALL))
def test_drift_is_dlogalpha_dt(x64, name):
  p = ALL[name]()
  t = _grid(p)
  autodiff = jax.vmap(jax.grad(lambda s: p.log_alpha(s)))(t)
  np.testing.assert_allclose(p.f(t), autodiff, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("name", sorted(ALL))
def test_g2_identity(x64, name):
  """g^2 = d sigma^2 / dt - 2 f sigma^2."""
  p = ALL[name]()
  t = _grid(p)
  dsigma2 = jax.vmap(jax.grad(lambda s: p.sigma(s)**2))(t)
  expected = dsigma2 - 2 * p.f(t) * p.sigma(t)**2
  np.testing.assert_allclose(p.g2(t), expected, rtol=1e-8, atol=1e-10)
  np.testing.assert_allclose(p.dsigma_dt(t), jax.vmap(jax.grad(p.sigma))(t), rtol=1e-8)
  np.testing.assert_allclose(p.dalpha_dt(t), jax.vmap(jax.grad(p.alpha))(t), rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("name", sorted(ALL))
def test_log_snr_and_inverse(x64, name):
  p = ALL[name]()
  t = _grid(p)
  lam = p.log_snr(t)
  np.testing.assert_allclose(lam, jnp.log(p.alpha(t)) - jnp.log(p.sigma(t)), rtol=1e-10, atol=1e-10)
  assert np.all(np.diff(np.asarray(lam)) < 0), "log-SNR must decrease in t"
  np.testing.assert_allclose(p.t_from_log_snr(lam), t, rtol=1e-9, atol=1e-12)
  np.testing.assert_allclose(p.t_from_edm_sigma(p.edm_sigma(t)), t, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", sorted(ALL))
def test_marginal_and_prior(x64, name):
  p = ALL[name]()
  t = jnp.full((200_000,), 0.5 * (p.t_min + p.t_max))
  x0 = jnp.full((200_000, 2), 0.7)
  xt = p.marginal_sample(jax.random.PRNGKey(0), x0, t)
  a, s = float(p.alpha(t[0])), float(p.sigma(t[0]))
  np.testing.assert_allclose(xt.mean(0), a * 0.7, atol=5 * s / math.sqrt(2e5) + 1e-12)
  np.testing.assert_allclose(xt.std(0), s, rtol=0.01)
  x = p.prior_sample(jax.random.PRNGKey(1), (4, 3))
  ref = jax.scipy.stats.norm.logpdf(x, scale=p.prior_std).sum(-1)
  np.testing.assert_allclose(p.prior_logp(x), ref, rtol=1e-12)


def test_vp_closed_forms(x64):
  p = P.VP()
  t = jnp.array([0.0, 0.3, 1.0])
  log_alpha = -0.25 * t**2 * 19.9 - 0.05 * t
  np.testing.assert_allclose(p.alpha(t), jnp.exp(log_alpha), rtol=1e-14)
  np.testing.assert_allclose(p.alpha(t)**2 + p.sigma(t)**2, 1.0, rtol=1e-14)
  np.testing.assert_allclose(p.log_snr(1.0), -5.025 - 0.5 * math.log(-math.expm1(-10.05)), rtol=1e-13)
  np.testing.assert_allclose(p.beta(t), 0.1 + 19.9 * t, rtol=1e-14)
  c = P.VP(schedule="cosine")
  theta = lambda u: (u + 0.008) / 1.008 * math.pi / 2
  np.testing.assert_allclose(c.alpha(0.4), math.cos(theta(0.4)) / math.cos(theta(0.0)), rtol=1e-13)


def test_subvp_and_ve_closed_forms(x64):
  s = P.SubVP()
  t = jnp.array([0.1, 0.5, 1.0])
  alpha = jnp.exp(-0.25 * t**2 * 19.9 - 0.05 * t)
  np.testing.assert_allclose(s.sigma(t), 1 - alpha**2, rtol=1e-13)
  beta = 0.1 + 19.9 * t
  np.testing.assert_allclose(s.g2(t), beta * (1 - jnp.exp(-2 * 0.1 * t - 19.9 * t**2)), rtol=1e-12)
  v = P.VE()
  np.testing.assert_allclose(v.sigma(t), 0.01 * 5000.0**t, rtol=1e-13)
  np.testing.assert_allclose(v.g2(t), v.sigma(t)**2 * 2 * math.log(5000.0), rtol=1e-13)


def test_vp_discrete_matches_ddpm_table(x64):
  betas = np.linspace(1e-4, 0.02, 1000)
  p = P.VPDiscrete(tuple(betas))
  n = np.array([0, 10, 500, 999])
  t = (n + 1) / 1000
  np.testing.assert_allclose(p.alpha(t)**2, np.cumprod(1 - betas)[n], rtol=1e-12)
  np.testing.assert_allclose(p.model_time(t), n, atol=1e-9)
  assert p == P.VPDiscrete.from_ddpm("linear", 1000) and hash(p) == hash(P.VPDiscrete.from_ddpm())


def test_edm_and_rectified_flow_velocity(x64):
  x = jnp.array([[1.0, -2.0]])
  x0 = jnp.array([[0.3, 0.1]])
  e = P.EDM()
  np.testing.assert_allclose(e.pf_ode_velocity(x, 2.0, x0), (x - x0) / 2.0, rtol=1e-14)
  r = P.RectifiedFlow()
  # On the interpolant x = (1 - t) x0 + t eps, the velocity is eps - x0; finite at t = 1.
  eps = jnp.array([[0.5, -1.0]])
  for t in (0.25, 1.0):
    xt = (1 - t) * x0 + t * eps
    np.testing.assert_allclose(r.pf_ode_velocity(xt, t, x0), eps - x0, rtol=1e-12, atol=1e-14)


def test_pf_ode_velocity_matches_sde_form(x64):
  """f x - g^2/2 score == velocity written with the denoiser, for every process."""
  x = jnp.array([[0.4, -1.3], [2.0, 0.1]])
  x0 = jnp.array([[0.2, 0.5], [-0.3, 0.9]])
  for name, make in ALL.items():
    p = make()
    t = jnp.array([0.3, 0.6]) * p.t_max + p.t_min
    a, s = p.alpha(t)[:, None], p.sigma(t)[:, None]
    score = (a * x0 - x) / s**2
    sde_form = p.drift(x, t) - 0.5 * p.g2(t)[:, None] * score
    np.testing.assert_allclose(p.pf_ode_velocity(x, t, x0), sde_form, rtol=1e-9, err_msg=name)


def test_registry_and_validation():
  assert isinstance(P.get_process("edm"), P.EDM)
  assert P.get_process("vp_cosine").schedule == "cosine"
  with pytest.raises(ValueError, match="valid processes"):
    P.get_process("vpsde")
  with pytest.raises(ValueError, match="valid schedules"):
    P.VP(schedule="quadratic")
  with pytest.raises(ValueError, match="sigma_min"):
    P.VE(sigma_min=-1.0)
  with pytest.raises(ValueError, match="invalid options"):
    P.get_process("edm", sigma_data=0.5)
  assert hash(P.VP()) == hash(P.VP())  # usable as a static jit argument
