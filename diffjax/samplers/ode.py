"""Probability-flow ODE samplers: Euler and EDM's Heun with stochastic churn.

The ODE is dx/dt = process.pf_ode_velocity(x, t, D(x, t)) (Song et al. 2021 eq. 13); for the EDM
process it is Karras et al. (2022)'s dx/dsigma = (x - D(x; sigma)) / sigma.
"""
import math

import jax
import jax.numpy as jnp

from diffjax import utils
from diffjax.samplers import base


def _velocity(denoiser, process, x, t):
  t_b = utils.batch_times(t, x)
  return process.pf_ode_velocity(x, t_b, denoiser(x, t_b))


def _is_data_end(process, t):
  """True where the step lands on sigma(t) = 0 (alpha = 1): there D is returned, as k-diffusion."""
  return process.sigma(t) == 0


def euler(denoiser, x, ts, *, process, key=None):
  """First-order Euler on the probability-flow ODE; N function evaluations for N steps.

  With the EDM process this is k-diffusion's `sample_euler` without churn and DDIM(eta=0) in the
  scaled coordinates (sigma/alpha, x/alpha) (see `samplers.md` notes, §0.8).
  """
  del key

  def step(x, t_cur, t_next, _):
    return x + (t_next - t_cur) * _velocity(denoiser, process, x, t_cur)

  return base.scan_steps(step, x, ts)


def heun(denoiser, x, ts, *, process, s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0,
         key=None, inject_noise=0.0):
  """EDM's stochastic sampler (Karras et al. 2022, Algorithm 2; NVlabs/edm `edm_sampler`).

  For each step i of N = len(ts) - 1:
    gamma = min(s_churn / N, sqrt(2) - 1) if s_tmin <= sigma_i <= s_tmax else 0,
    raise the noise level sigma_i -> sigma_hat = (1 + gamma) sigma_i by adding fresh noise of std
    sqrt(sigma_hat^2 - sigma_i^2) * s_noise, take an Euler step from t_hat to t_{i+1}, and
    correct it with the trapezoidal (Heun) rule unless the step lands on sigma = 0, where the
    Euler step (= the denoiser output for EDM) is final. NFE = 2N - 1 when ts ends at 0.

  For processes other than EDM, sigma is the noise level sigma/alpha of x/alpha (the EDM
  "scaling" view, EDM eq. 4), and the churn is the forward transition from t_i to t_hat.

  Args:
    denoiser: `D(x, t)`.
    x: initial state at ts[0], shape (B, ...).
    ts: times from noise to data.
    process: the noise process.
    s_churn, s_tmin, s_tmax, s_noise: EDM's S_churn, S_tmin, S_tmax, S_noise.
    key: PRNG key; required when s_churn > 0 or inject_noise > 0.
    inject_noise: alpha of the PFGM++ robustness study (Xu et al. 2023, sec. 5.2;
      `Newbeeer/pfgmpp` generate_alpha.py): before every step, x += alpha * sigma_i * z with
      z ~ N(0, I), an error the ODE then has to absorb. 0 (default) is the plain sampler.

  Returns:
    The state at ts[-1].
  """
  ts = base.check_times(ts)
  num_steps = ts.shape[0] - 1
  use_churn = s_churn > 0
  if use_churn:
    base.check_key(key, "heun", "when s_churn > 0")
  if inject_noise < 0:
    raise ValueError(f"heun: inject_noise must be >= 0, got {inject_noise!r}")
  if inject_noise > 0:
    base.check_key(key, "heun", "when inject_noise > 0")
  gamma_max = min(s_churn / num_steps, math.sqrt(2.0) - 1.0)

  def step(x, t_cur, t_next, step_key):
    if inject_noise > 0:
      step_key, k_inject = jax.random.split(step_key)
      x = x + inject_noise * process.edm_sigma(t_cur) * jax.random.normal(k_inject, x.shape, x.dtype)
    if use_churn:
      sig_cur = process.edm_sigma(t_cur)
      gamma = jnp.where((sig_cur >= s_tmin) & (sig_cur <= s_tmax), gamma_max, 0.0)
      sig_hat = sig_cur + gamma * sig_cur  # as EDM, not sig_cur * (1 + gamma): bitwise parity
      t_hat = jnp.where(gamma > 0, process.t_from_edm_sigma(sig_hat), t_cur)
      alpha_hat = process.alpha(t_hat)
      noise = jax.random.normal(step_key, x.shape, x.dtype)
      add_std = alpha_hat * jnp.sqrt(jnp.maximum(sig_hat**2 - sig_cur**2, 0.0)) * s_noise
      x = alpha_hat / process.alpha(t_cur) * x + add_std * noise
    else:
      t_hat = t_cur
    d_cur = _velocity(denoiser, process, x, t_hat)
    x_euler = x + (t_next - t_hat) * d_cur

    def correct(x_euler):
      d_next = _velocity(denoiser, process, x_euler, t_next)
      return x + (t_next - t_hat) * 0.5 * (d_cur + d_next)

    return jax.lax.cond(_is_data_end(process, t_next), lambda y: y, correct, x_euler)

  return base.scan_steps(step, x, ts, key if use_churn or inject_noise > 0 else None)
