"""Reverse-time SDE samplers (Song et al. 2021)."""
import jax
import jax.numpy as jnp

from diffjax import utils
from diffjax.samplers import base


def euler_maruyama(denoiser, x, ts, *, process, key=None, noise_removal=True):
  """Euler–Maruyama on the reverse SDE dx = [f x - g^2 score] dt + g dw_bar (Song et al. eq. 6).

  x_{i+1} = x_i + (f x_i - g^2 s(x_i, t_i)) (t_{i+1} - t_i) + g(t_i) sqrt(t_i - t_{i+1}) z_i,
  with score s = (alpha D - x) / sigma^2 from the denoiser. As score_sde's `EulerMaruyamaPredictor`
  with `noise_removal=True`, the last step returns its mean (no noise added). Unlike score_sde,
  the step size is the actual grid spacing (score_sde uses dt = -1/N on any grid).

  Args:
    denoiser: `D(x, t)`.
    x: initial state at ts[0].
    ts: times from noise to data (sigma(ts[i]) > 0 for every i < N).
    process: the noise process.
    key: PRNG key (required).
    noise_removal: return the noise-free mean of the last step.

  Returns:
    The state at ts[-1].
  """
  base.check_key(key, "euler_maruyama", "(it draws the Brownian increments)")
  ts = base.check_times(ts)
  t_final = ts[-1]

  def step(x, t_cur, t_next, step_key):
    t_b = utils.batch_times(t_cur, x)
    dt = t_next - t_cur
    mean = x + process.reverse_sde_drift(x, t_b, denoiser(x, t_b)) * dt
    noise = jax.random.normal(step_key, x.shape, x.dtype)
    x_new = mean + process.diffusion(t_cur) * jnp.sqrt(-dt) * noise
    if noise_removal:
      return jnp.where(t_next == t_final, mean, x_new)
    return x_new

  return base.scan_steps(step, x, ts, key)
