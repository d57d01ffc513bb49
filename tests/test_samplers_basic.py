"""Euler, EDM Heun and Euler–Maruyama on the Gaussian oracle (float64).

Data N(mu, diag(v)): the exact denoiser is mu + alpha v (x - alpha mu) / C_t with
C_t = alpha^2 v + sigma^2, and the exact probability-flow map from s to t is
x_t = alpha_t mu + sqrt(C_t / C_s) (x_s - alpha_s mu).
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffjax as dj
from diffjax import processes as P
from diffjax import timesteps

MU = np.array([0.5, -1.0, 2.0])
VAR = np.array([0.04, 0.5, 2.0])


def gaussian_denoiser(process):
  mu, v = jnp.asarray(MU), jnp.asarray(VAR)

  def den(x, t):
    a, s = process.alpha(t)[:, None], process.sigma(t)[:, None]
    return mu + a * v * (x - a * mu) / (a**2 * v + s**2)

  return den


def exact_flow(process, x, s, t):
  mu, v = jnp.asarray(MU), jnp.asarray(VAR)
  c = lambda u: process.alpha(u)**2 * v + process.sigma(u)**2
  return process.alpha(t) * mu + jnp.sqrt(c(t) / c(s)) * (x - process.alpha(s) * mu)


def _order(sampler, process, grid_fn, ns=(16, 32, 64, 128)):
  x_T = jax.random.normal(jax.random.PRNGKey(0), (8, 3)) * process.prior_std
  den = gaussian_denoiser(process)
  errors = []
  for n in ns:
    ts = grid_fn(n)
    out = jax.jit(lambda x, ts: sampler(den, x, ts, process=process))(x_T, ts)
    errors.append(float(jnp.max(jnp.abs(out - exact_flow(process, x_T, ts[0], ts[-1])))))
  slope = -np.polyfit(np.log(ns), np.log(errors), 1)[0]
  return slope, errors


@pytest.mark.parametrize("name,expected", [("euler", 1.0), ("heun", 2.0)])
def test_convergence_order_edm_karras(x64, name, expected):
  p = P.EDM()
  slope, errors = _order(getattr(dj.samplers, name), p,
                         lambda n: timesteps.karras(n, 0.002, 80.0, append_zero=False))
  assert abs(slope - expected) < 0.25, (slope, errors)


@pytest.mark.parametrize("name,expected", [("euler", 1.0), ("heun", 2.0)])
@pytest.mark.parametrize("process", [P.VP(), P.VE(), P.RectifiedFlow(t_max=1.0)], ids=lambda p: type(p).__name__)
def test_convergence_order_time_uniform(x64, name, expected, process):
  t_end = 1e-2 if not isinstance(process, P.RectifiedFlow) else 0.0
  slope, errors = _order(getattr(dj.samplers, name), process,
                         lambda n: timesteps.time_uniform(n, process.t_max, t_end), ns=(32, 64, 128, 256))
  assert abs(slope - expected) < 0.25, (slope, errors)


def _edm_sampler_reference(den, x, sigmas, key, s_churn, s_tmin, s_tmax, s_noise):
  """Line-by-line transcription of NVlabs/edm `edm_sampler` (example.py / generate.py)."""
  n = len(sigmas) - 1
  x_next = x
  for i, (t_cur, t_next) in enumerate(zip(sigmas[:-1], sigmas[1:])):
    x_cur = x_next
    gamma = min(s_churn / n, math.sqrt(2) - 1) if s_tmin <= t_cur <= s_tmax else 0
    t_hat = t_cur + gamma * t_cur
    eps = jax.random.normal(jax.random.fold_in(key, i), x.shape, x.dtype)
    x_hat = x_cur + math.sqrt(max(t_hat**2 - t_cur**2, 0.0)) * s_noise * eps
    denoised = den(x_hat, jnp.full((x.shape[0],), t_hat))
    d_cur = (x_hat - denoised) / t_hat
    x_next = x_hat + (t_next - t_hat) * d_cur
    if i < n - 1:
      denoised = den(x_next, jnp.full((x.shape[0],), t_next))
      d_prime = (x_next - denoised) / t_next
      x_next = x_hat + (t_next - t_hat) * (0.5 * d_cur + 0.5 * d_prime)
  return x_next


@pytest.mark.parametrize("s_churn,s_tmin,s_tmax", [(0.0, 0.0, float("inf")), (40.0, 0.05, 50.0), (80.0, 0.0, float("inf"))])
def test_heun_matches_edm_reference(x64, s_churn, s_tmin, s_tmax):
  p = P.EDM()
  den = gaussian_denoiser(p)
  sigmas = timesteps.karras(18)
  key = jax.random.PRNGKey(3)
  x = jax.random.normal(jax.random.PRNGKey(1), (5, 3)) * 80.0
  run = lambda: dj.samplers.heun(den, x, sigmas, process=p, s_churn=s_churn, s_tmin=s_tmin,
                                 s_tmax=s_tmax, s_noise=1.003, key=key)
  ref = _edm_sampler_reference(den, x, [float(s) for s in sigmas], key, s_churn, s_tmin, s_tmax, 1.003)
  with jax.disable_jit():  # op-by-op: the same arithmetic as the reference
    np.testing.assert_allclose(run(), ref, rtol=1e-13, atol=1e-13)
  # Compiled, XLA may fuse/reassociate; rounding differences stay far below 1e-8.
  np.testing.assert_allclose(run(), ref, rtol=1e-8, atol=1e-8)


def test_step_into_zero_returns_denoiser(x64):
  p = P.EDM()
  den = gaussian_denoiser(p)
  x = jnp.ones((2, 3))
  ts = jnp.array([0.5, 0.0])
  for sampler in (dj.samplers.euler, dj.samplers.heun):
    np.testing.assert_allclose(sampler(den, x, ts, process=p), den(x, jnp.full((2,), 0.5)), rtol=1e-14)


def test_heun_churn_requires_key():
  with pytest.raises(ValueError, match="key"):
    dj.samplers.heun(lambda x, t: x, jnp.ones((1, 1)), jnp.array([1.0, 0.0]), process=P.EDM(), s_churn=1.0)


def _em_moments(process, ts):
  """Exact mean/variance propagation of Euler–Maruyama for the Gaussian model (affine steps)."""
  mu, v = MU, VAR
  m, var = np.zeros(3), np.full(3, process.prior_std**2)
  ts = np.asarray(ts)
  for i, (t, t_next) in enumerate(zip(ts[:-1], ts[1:])):
    a, s = float(process.alpha(t)), float(process.sigma(t))
    f, g2 = float(process.f(t)), float(process.g2(t))
    dt = t_next - t
    k = a * v / (a**2 * v + s**2)  # D(x) = mu + k (x - a mu)
    slope = 1 + dt * (f - g2 * (a * k - 1) / s**2)
    intercept = -dt * g2 * a * (mu - k * a * mu) / s**2
    m, var = slope * m + intercept, slope**2 * var
    if i < len(ts) - 2:
      var = var + g2 * (t - t_next)
  return m, var


def test_euler_maruyama_moments_exact(x64):
  p = P.VP()
  ts = timesteps.time_uniform(50, 1.0, 1e-3)
  x = p.prior_sample(jax.random.PRNGKey(0), (200_000, 3))
  out = jax.jit(lambda x, k: dj.samplers.euler_maruyama(gaussian_denoiser(p), x, ts, process=p, key=k))(
      x, jax.random.PRNGKey(1))
  m, var = _em_moments(p, ts)
  se = np.sqrt(var / out.shape[0])
  np.testing.assert_array_less(np.abs(np.asarray(out.mean(0)) - m), 5 * se)
  np.testing.assert_allclose(np.asarray(out.var(0)), var, rtol=5 * math.sqrt(2 / out.shape[0]))


def test_euler_maruyama_weak_convergence(x64):
  """The exactly propagated variance approaches the true marginal at t_end as steps double."""
  p = P.VP()
  t_end = 1e-3
  target_var = float(p.alpha(t_end))**2 * VAR + float(p.sigma(t_end))**2
  errs = [np.max(np.abs(_em_moments(p, timesteps.time_uniform(n, 1.0, t_end))[1] - target_var))
          for n in (100, 200, 400, 800)]
  slope = -np.polyfit(np.log([100, 200, 400, 800]), np.log(errs), 1)[0]
  assert 0.8 < slope < 1.3, (slope, errs)


def test_registry():
  s = dj.samplers.get_sampler("heun", s_churn=1.0)
  assert s.keywords == {"s_churn": 1.0}
  with pytest.raises(ValueError, match="valid samplers"):
    dj.samplers.get_sampler("rk4")
  with pytest.raises(ValueError, match="valid options"):
    dj.samplers.get_sampler("euler", s_churn=1.0)
