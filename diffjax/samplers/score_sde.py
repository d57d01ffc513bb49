"""Score SDE predictors and correctors (Song et al. 2021, sec. 4.2, app. E-G; score_sde `sampling.py`).

Predictors move from t_i to t_{i+1} < t_i; correctors run Langevin MCMC at t_i. All use the score
s = (alpha x0_hat - x) / sigma^2 of the denoiser.

  reverse_diffusion  x_{i+1} = x - f_d(x) + G^2 s + G z, with the forward discretisation
                     x_{t_i} = a x_{t_{i+1}} + G eps between the two grid times
                     (a = alpha_i / alpha_{i+1}, G^2 = sigma_i^2 - a^2 sigma_{i+1}^2, f_d = (a - 1) x):
                     score_sde's `ReverseDiffusionPredictor` (its VP/VE `discretize` is this with
                     the tables of an N-step grid).
  ancestral          DDPM ancestral sampling, i.e. sampling the Gaussian posterior
                     q(x_{t_{i+1}} | x_{t_i}, x0_hat): identical to `ddim(eta=1)`; for VP it is
                     score_sde's (x + beta s) / sqrt(1 - beta) + sqrt(beta) z.
  langevin           step = 2 alpha (snr ||z|| / ||s||)^2, x <- x + step s + sqrt(2 step) z, with the
                     norms averaged over the batch as score_sde does, so the step depends on the
                     batch (`LangevinCorrector`; alpha = 1 - beta(t) / num_scales for VP-type
                     processes, 1 otherwise).
  ald                annealed Langevin dynamics (Song & Ermon 2019): step = 2 alpha (snr sigma_t)^2.

`pc` runs corrector then predictor at every step, and with `noise_removal` returns the last
predictor's noise-free mean (score_sde's `denoise=True`).
"""
import jax
import jax.numpy as jnp

from diffjax import utils
from diffjax.samplers import base
from diffjax.samplers.ddim import ddim, ddim_coefficients

PREDICTORS = ("reverse_diffusion", "euler_maruyama", "ancestral", "none")
CORRECTORS = ("langevin", "ald", "none")


def _score(denoiser, process, x, t):
  t_b = utils.batch_times(t, x)
  alpha, sigma = utils.expand_to(process.alpha(t_b), x), utils.expand_to(process.sigma(t_b), x)
  return (alpha * denoiser(x, t_b) - x) / sigma**2


def _predict(name, denoiser, process, x, t, t_next, key):
  """One predictor step; returns (x, x_mean)."""
  z = jax.random.normal(key, x.shape, x.dtype)
  if name == "none":
    return x, x
  if name == "reverse_diffusion":
    a = process.alpha(t) / process.alpha(t_next)
    g2 = process.sigma(t)**2 - a**2 * process.sigma(t_next)**2
    mean = (2.0 - a) * x + g2 * _score(denoiser, process, x, t)
    return mean + jnp.sqrt(g2) * z, mean
  if name == "euler_maruyama":
    dt = t_next - t
    t_b = utils.batch_times(t, x)
    mean = x + process.reverse_sde_drift(x, t_b, denoiser(x, t_b)) * dt
    return mean + process.diffusion(t) * jnp.sqrt(-dt) * z, mean
  # ancestral: the DDPM posterior with x0_hat, split into mean and noise.
  x0 = denoiser(x, utils.batch_times(t, x))
  c, d = ddim_coefficients(process, t, t_next, 1.0)
  mean = process.alpha(t_next) * x0 + d * (x - process.alpha(t) * x0) / process.sigma(t)
  return mean + c * z, mean


def _langevin_alpha(process, t, num_scales):
  return jnp.where(process.f(t) != 0, 1.0 + 2.0 * process.f(t) / num_scales, 1.0)


def _correct(name, denoiser, process, x, t, key, snr, n_steps, num_scales):
  """n_steps of Langevin (batch-normalised step) or annealed Langevin at time t."""
  if name == "none":
    return x
  alpha = _langevin_alpha(process, t, num_scales)

  def one(i, x):
    grad = _score(denoiser, process, x, t)
    z = jax.random.normal(jax.random.fold_in(key, i), x.shape, x.dtype)
    if name == "langevin":
      grad_norm = jnp.mean(jnp.linalg.norm(grad.reshape(grad.shape[0], -1), axis=-1))
      noise_norm = jnp.mean(jnp.linalg.norm(z.reshape(z.shape[0], -1), axis=-1))
      step = (snr * noise_norm / grad_norm)**2 * 2.0 * alpha
    else:
      step = (snr * process.sigma(t))**2 * 2.0 * alpha
    return x + step * grad + jnp.sqrt(2.0 * step) * z

  return jax.lax.fori_loop(0, n_steps, one, x)


def pc(denoiser, x, ts, *, process, key=None, predictor="reverse_diffusion", corrector="langevin", snr=0.16,
       n_corrector_steps=1, noise_removal=True, num_scales=1000):
  """Predictor–corrector sampling (Song et al. 2021, Algorithm 1 (VE) / 2 (VP) generalised).

  Args:
    denoiser: `D(x, t)`.
    x: state at ts[0].
    ts: times from noise to data.
    process: the noise process.
    key: PRNG key (required).
    predictor: "reverse_diffusion", "euler_maruyama", "ancestral" or "none".
    corrector: "langevin", "ald" or "none".
    snr: signal-to-noise ratio of the corrector (score_sde default 0.16).
    n_corrector_steps: corrector steps per time (score_sde `n_steps_each`).
    noise_removal: return the last predictor's mean.
    num_scales: N of score_sde's discretisation, used for the VP corrector's alpha = 1 - beta/N.

  Returns:
    The state at ts[-1].
  """
  if predictor not in PREDICTORS:
    raise ValueError(f"pc: unknown predictor {predictor!r}; valid: {PREDICTORS}")
  if corrector not in CORRECTORS:
    raise ValueError(f"pc: unknown corrector {corrector!r}; valid: {CORRECTORS}")
  base.check_key(key, "pc", "(predictors and correctors draw noise)")
  ts = base.check_times(ts)
  t_final = ts[-1]

  def step(x, t, t_next, step_key):
    k_corr, k_pred = jax.random.split(step_key)
    x = _correct(corrector, denoiser, process, x, t, k_corr, snr, n_corrector_steps, num_scales)
    x, mean = _predict(predictor, denoiser, process, x, t, t_next, k_pred)
    if noise_removal:
      return jnp.where(t_next == t_final, mean, x)
    return x

  return base.scan_steps(step, x, ts, key)


def reverse_diffusion(denoiser, x, ts, *, process, key=None, noise_removal=True):
  """The reverse-diffusion predictor alone (`pc` with no corrector)."""
  return pc(denoiser, x, ts, process=process, key=key, predictor="reverse_diffusion", corrector="none",
            noise_removal=noise_removal)


def ancestral(denoiser, x, ts, *, process, key=None, noise_removal=True):
  """DDPM ancestral sampling (Ho et al. 2020, Algorithm 2); `ddim(eta=1)` without noise removal."""
  if not noise_removal:
    base.check_key(key, "ancestral", "(it draws noise)")
    return ddim(denoiser, x, ts, process=process, eta=1.0, key=key)
  return pc(denoiser, x, ts, process=process, key=key, predictor="ancestral", corrector="none",
            noise_removal=True)


def langevin(denoiser, x, ts, *, process, key=None, snr=0.16, n_corrector_steps=1, noise_removal=True):
  """Corrector-only sampling with Langevin steps at each time (`pc` with predictor "none")."""
  return pc(denoiser, x, ts, process=process, key=key, predictor="none", corrector="langevin", snr=snr,
            n_corrector_steps=n_corrector_steps, noise_removal=noise_removal)
