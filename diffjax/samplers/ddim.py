"""DDIM (Song, Meng & Ermon 2021, "Denoising Diffusion Implicit Models", eq. 12 and 16).

For any process x_t = alpha_t x0 + sigma_t eps, one step from t to t' < t is

    x_t' = alpha_t' x0_hat + sqrt(sigma_t'^2 - c^2) eps_hat + c z,
    c = eta * (sigma_t' / sigma_t) * sqrt(sigma_t^2 - (alpha_t / alpha_t')^2 sigma_t'^2),

with eps_hat = (x_t - alpha_t x0_hat) / sigma_t. c is eta times the standard deviation of the
DDPM posterior q(x_t' | x_t, x0) (for VP, eq. 16's sigma_t(eta)); eta = 0 is the deterministic
DDIM (= DPM-Solver-1, and Euler in the coordinates (sigma/alpha, x/alpha)), eta = 1 is DDPM's
ancestral step. A step into sigma_t' = 0 returns x0_hat.
"""
import jax
import jax.numpy as jnp

from diffjax import utils
from diffjax.samplers import base


def ddim_coefficients(process, t, t_next, eta):
  """(c, d): x_t' = alpha_t' x0_hat + d eps_hat + c z, with c the eta-scaled DDPM posterior std."""
  a, s = process.alpha(t), process.sigma(t)
  a_next, s_next = process.alpha(t_next), process.sigma(t_next)
  c = eta * (s_next / s) * jnp.sqrt(jnp.maximum(s**2 - (a / a_next)**2 * s_next**2, 0.0))
  return c, jnp.sqrt(jnp.maximum(s_next**2 - c**2, 0.0))


def ddim(denoiser, x, ts, *, process, eta=0.0, key=None):
  """DDIM sampling over the grid `ts` (noise to data).

  Args:
    denoiser: `D(x, t)`.
    x: state at ts[0], shape (B, ...).
    ts: times from noise to data.
    process: the noise process.
    eta: 0 (deterministic DDIM) ... 1 (DDPM ancestral); must be >= 0.
    key: PRNG key, required when eta > 0.

  Returns:
    The state at ts[-1].
  """
  if eta < 0:
    raise ValueError(f"ddim: eta must be >= 0, got {eta}")
  stochastic = eta > 0
  if stochastic:
    base.check_key(key, "ddim", "when eta > 0")

  def step(x, t_cur, t_next, step_key):
    t_b = utils.batch_times(t_cur, x)
    x0 = denoiser(x, t_b)
    a, s = process.alpha(t_cur), process.sigma(t_cur)
    a_next, s_next = process.alpha(t_next), process.sigma(t_next)
    eps = (x - a * x0) / s
    if not stochastic:
      return a_next * x0 + s_next * eps
    c, d = ddim_coefficients(process, t_cur, t_next, eta)
    noise = jax.random.normal(step_key, x.shape, x.dtype)
    return a_next * x0 + d * eps + c * noise

  return base.scan_steps(step, x, ts, key if stochastic else None)
