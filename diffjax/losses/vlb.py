"""The learned-variance objective of Improved DDPM: L_hybrid = L_simple + L_vlb.

Nichol & Dhariwal 2021, "Improved Denoising Diffusion Probabilistic Models" (IDDPM), sec. 3.1,
as implemented in `openai/improved-diffusion` (`gaussian_diffusion.py`, `losses.py`) and copied
unchanged by `openai/guided-diffusion` (ADM) and `facebookresearch/DiT`. Everything here works on
the *integer* diffusion steps n = 0 .. N-1 of the reference (n = 0 is the first noising step,
x_{n+1} in the paper's 1-based notation) and on float64 numpy tables built from the betas of a
`diffjax.processes.VPDiscrete`; the functions are pure and cast the tables to the data's dtype.

Pieces (paper equations):

  q(x_t | x_0)          = N(sqrt(abar_t) x_0, (1 - abar_t) I)                      (eq. 8-9)
  q(x_{t-1} | x_t, x_0) = N(mu~_t(x_t, x_0), beta~_t I),                           (eq. 10-12)
      mu~_t  = sqrt(abar_{t-1}) beta_t / (1 - abar_t) x_0
               + sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t) x_t,
      beta~_t = (1 - abar_{t-1}) / (1 - abar_t) beta_t.
  learned range:  Sigma_theta = exp(v log beta_t + (1 - v) log beta~_t)            (eq. 15)
      with the network output v in [-1, 1] mapped to frac = (v + 1) / 2 as the code does, and
      log beta~_0 (= log 0) replaced by log beta~_1 ("posterior_log_variance_clipped").
  L_vlb = L_0 + ... + L_T,  L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)), (eq. 3-6)
      L_0 = -log p(x_0 | x_1) (eq. 4) with the discretised Gaussian decoder of Ho et al.
      (2020, eq. 13).
  L_hybrid = L_simple + lambda L_vlb, lambda = 0.001,                               (eq. 16)
      with a stop-gradient on mu_theta inside L_vlb so it only trains the variance.

About lambda: the reference measures L_vlb as one uniformly sampled term L_t in bits per
dimension, *not* rescaled by N to the full bound; the paper's "lambda = 0.001 L_vlb" with
L_vlb = N E_t[L_t] is the reference's `loss = mse + vb` for N = 1000 (LossType.MSE, DiT's
default), and `vb *= N / 1000` (LossType.RESCALED_MSE, here `rescale_vb=True`) keeps that
relative weight for other N. (The units are the reference's too: mse per dimension in squared
eps units, vb in bits per dimension.)
"""
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from diffjax import utils
from diffjax.processes import VPDiscrete

_LOG2 = math.log(2.0)


class DiscreteTables(NamedTuple):
  """Float64 numpy tables of a discrete DDPM chain, indexed by the integer step n in [0, N).

  Field names follow `GaussianDiffusion.__init__` of the reference. `timestep_map[n]` is the step
  of the *original* chain that entry n stands for: `arange(N)` for a plain chain, the kept steps
  for a respaced one (`SpacedDiffusion`), which is the time the network must be called with.
  """
  betas: np.ndarray
  log_betas: np.ndarray
  alphas_cumprod: np.ndarray
  alphas_cumprod_prev: np.ndarray
  sqrt_alphas_cumprod: np.ndarray
  sqrt_one_minus_alphas_cumprod: np.ndarray
  sqrt_recip_alphas_cumprod: np.ndarray
  sqrt_recipm1_alphas_cumprod: np.ndarray
  posterior_variance: np.ndarray
  posterior_log_variance_clipped: np.ndarray
  posterior_mean_coef1: np.ndarray
  posterior_mean_coef2: np.ndarray
  timestep_map: np.ndarray

  @property
  def num_steps(self):
    return int(self.betas.shape[0])

  @classmethod
  def from_betas(cls, betas, timestep_map=None):
    """Tables of the chain with these betas (IDDPM eq. 9-12; `GaussianDiffusion.__init__`)."""
    betas = np.asarray(betas, dtype=np.float64)
    if betas.ndim != 1 or betas.shape[0] < 2:
      raise ValueError(f"DiscreteTables: betas must be a 1-D table of at least 2 steps, got shape {betas.shape}")
    if not np.all((betas > 0) & (betas <= 1)):
      raise ValueError("DiscreteTables: every beta must lie in (0, 1]")
    n = betas.shape[0]
    timestep_map = np.arange(n) if timestep_map is None else np.asarray(timestep_map)
    if timestep_map.shape != (n,):
      raise ValueError(f"DiscreteTables: timestep_map must have shape ({n},), got {timestep_map.shape}")
    alphas = 1.0 - betas
    abar = np.cumprod(alphas)
    abar_prev = np.append(1.0, abar[:-1])
    posterior_variance = betas * (1.0 - abar_prev) / (1.0 - abar)
    return cls(
        betas=betas,
        log_betas=np.log(betas),
        alphas_cumprod=abar,
        alphas_cumprod_prev=abar_prev,
        sqrt_alphas_cumprod=np.sqrt(abar),
        sqrt_one_minus_alphas_cumprod=np.sqrt(1.0 - abar),
        sqrt_recip_alphas_cumprod=np.sqrt(1.0 / abar),
        sqrt_recipm1_alphas_cumprod=np.sqrt(1.0 / abar - 1.0),
        posterior_variance=posterior_variance,
        # beta~_0 = 0: its log is replaced by log beta~_1, as the reference does.
        posterior_log_variance_clipped=np.log(np.append(posterior_variance[1], posterior_variance[1:])),
        posterior_mean_coef1=betas * np.sqrt(abar_prev) / (1.0 - abar),
        posterior_mean_coef2=(1.0 - abar_prev) * np.sqrt(alphas) / (1.0 - abar),
        timestep_map=timestep_map.astype(np.int32))

  @classmethod
  def from_process(cls, process, use_timesteps=None):
    """Tables of a `VPDiscrete` process, optionally respaced to the steps `use_timesteps`.

    Respacing is the reference's `SpacedDiffusion`: over the kept steps n_0 < n_1 < ... (in the
    original numbering) the new betas are 1 - abar_{n_i} / abar_{n_{i-1}} (abar_{n_{-1}} = 1), so
    the respaced chain has the same marginals q(x_{n_i} | x_0) (IDDPM sec. 4).
    """
    if not isinstance(process, VPDiscrete):
      raise ValueError(f"process must be a diffjax.processes.VPDiscrete (a table of DDPM betas), "
                       f"got {type(process).__name__}")
    betas = np.asarray(process.betas, dtype=np.float64)
    if use_timesteps is None:
      return cls.from_betas(betas)
    kept = sorted({int(n) for n in use_timesteps})
    if not kept or kept[0] < 0 or kept[-1] >= betas.shape[0]:
      raise ValueError(f"use_timesteps must be steps in [0, {betas.shape[0]}), got {kept[:3]}...{kept[-3:]}")
    abar = np.cumprod(1.0 - betas)
    new_betas, last = [], 1.0
    for n in kept:
      new_betas.append(1.0 - abar[n] / last)
      last = abar[n]
    return cls.from_betas(np.array(new_betas), timestep_map=np.array(kept))


def _at(table, t, x):
  """table[t] in x's dtype, shaped (B, 1, ..., 1) to broadcast against x (`_extract_into_tensor`)."""
  return utils.expand_to(jnp.asarray(table, x.dtype)[t], x)


def _check_tables(tables, fn):
  if not isinstance(tables, DiscreteTables):
    raise ValueError(f"{fn}: tables must be a DiscreteTables (DiscreteTables.from_process(process)), "
                     f"got {type(tables).__name__}")


# --- Gaussian helpers ------------------------------------------------------------------------
def normal_kl(mean1, logvar1, mean2, logvar2):
  """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))) elementwise, in nats (broadcasting).

  0.5 (-1 + logvar2 - logvar1 + exp(logvar1 - logvar2) + (mean1 - mean2)^2 exp(-logvar2)): the
  Gaussian KL of the terms L_{t-1} (IDDPM eq. 5); the reference's `normal_kl`.
  """
  mean1, logvar1, mean2, logvar2 = (jnp.asarray(a) for a in (mean1, logvar1, mean2, logvar2))
  return 0.5 * (-1.0 + logvar2 - logvar1 + jnp.exp(logvar1 - logvar2)
                + (mean1 - mean2)**2 * jnp.exp(-logvar2))


def approx_standard_normal_cdf(x):
  """The reference's tanh approximation 0.5 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) of Phi(x)."""
  return 0.5 * (1.0 + jnp.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def discretized_gaussian_log_likelihood(x, *, means, log_scales):
  """log p(x) of 8-bit data under a Gaussian discretised to 256 bins (Ho et al. 2020, eq. 13).

  `x` holds uint8 values rescaled to [-1, 1] (bin centres -1 + 2k/255); the bin of x is
  [x - 1/255, x + 1/255], the first bin extends to -inf and the last to +inf (selected by
  x < -0.999 and x > 0.999), the CDF is `approx_standard_normal_cdf` and every probability is
  clamped at 1e-12 before the log, exactly as the reference (IDDPM's decoder L_0, eq. 4).
  `means` and `log_scales` (log standard deviations) broadcast to x's shape. Returns nats, shape
  of x.
  """
  x = jnp.asarray(x)
  try:
    means = jnp.broadcast_to(means, x.shape)
    log_scales = jnp.broadcast_to(log_scales, x.shape)
  except ValueError as e:
    raise ValueError(f"discretized_gaussian_log_likelihood: means {jnp.shape(means)} and log_scales "
                     f"{jnp.shape(log_scales)} must broadcast to x's shape {x.shape}") from e
  centered = x - means
  inv_stdv = jnp.exp(-log_scales)
  cdf_plus = approx_standard_normal_cdf(inv_stdv * (centered + 1.0 / 255.0))
  cdf_min = approx_standard_normal_cdf(inv_stdv * (centered - 1.0 / 255.0))
  log_cdf_plus = jnp.log(jnp.maximum(cdf_plus, 1e-12))
  log_one_minus_cdf_min = jnp.log(jnp.maximum(1.0 - cdf_min, 1e-12))
  log_cdf_delta = jnp.log(jnp.maximum(cdf_plus - cdf_min, 1e-12))
  return jnp.where(x < -0.999, log_cdf_plus, jnp.where(x > 0.999, log_one_minus_cdf_min, log_cdf_delta))


# --- the chain -------------------------------------------------------------------------------
def q_sample(x0, t, noise, tables):
  """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise (IDDPM eq. 9), t the integer steps (B,)."""
  return _at(tables.sqrt_alphas_cumprod, t, x0) * x0 + _at(tables.sqrt_one_minus_alphas_cumprod, t, x0) * noise


def q_posterior_mean_variance(x0, x_t, t, tables):
  """(mean, variance, clipped log-variance) of q(x_{t-1} | x_t, x_0) (IDDPM eq. 10-12)."""
  mean = _at(tables.posterior_mean_coef1, t, x_t) * x0 + _at(tables.posterior_mean_coef2, t, x_t) * x_t
  return (mean, _at(tables.posterior_variance, t, x_t), _at(tables.posterior_log_variance_clipped, t, x_t))


def predict_x0_from_eps(x_t, t, eps, tables):
  """x0_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t) (IDDPM eq. 9 solved for x_0)."""
  return _at(tables.sqrt_recip_alphas_cumprod, t, x_t) * x_t - _at(tables.sqrt_recipm1_alphas_cumprod, t, x_t) * eps


def learned_range_log_variance(v, t, tables):
  """log Sigma_theta(x_t, t) of the "learned range" parametrisation (IDDPM eq. 15).

  frac = (v + 1) / 2 interpolates, per element, between log beta~_t (v = -1; the clipped posterior
  log-variance, so at t = 0 log beta~_1) and log beta_t (v = +1): the reference's
  `ModelVarType.LEARNED_RANGE`. v is the raw network output (not clipped, as in the reference).
  """
  frac = (v + 1.0) / 2.0
  return frac * _at(tables.log_betas, t, v) + (1.0 - frac) * _at(tables.posterior_log_variance_clipped, t, v)


def p_mean_variance(model_eps, model_v, x_t, t, tables, *, clip_denoised=False):
  """p_theta(x_{t-1} | x_t) for an eps-prediction with learned-range variance.

  The mean is mu~_t(x_t, x0_hat) (IDDPM eq. 11) with x0_hat from eps, which without clipping is
  IDDPM eq. 13 (Ho et al. 2020 eq. 11); the variance is `learned_range_log_variance` (eq. 15):
  the reference's `p_mean_variance` with ModelMeanType.EPSILON and ModelVarType.LEARNED_RANGE.
  `clip_denoised` clips x0_hat to [-1, 1] first.

  Returns:
    dict with "mean", "variance", "log_variance" (broadcast to x_t's shape) and "pred_x0".
  """
  log_variance = learned_range_log_variance(model_v, t, tables)
  pred_x0 = predict_x0_from_eps(x_t, t, model_eps, tables)
  if clip_denoised:
    pred_x0 = jnp.clip(pred_x0, -1.0, 1.0)
  mean, _, _ = q_posterior_mean_variance(pred_x0, x_t, t, tables)
  return {"mean": mean, "variance": jnp.exp(log_variance), "log_variance": log_variance, "pred_x0": pred_x0}


def vb_terms_bpd(model_eps, model_v, x0, x_t, t, tables, *, clip_denoised=False):
  """One term of the variational bound per example, in bits per dimension (IDDPM eq. 3-5).

  L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t)) for t > 0 and the decoder NLL
  L_0 = -log p_theta(x_0 | x_1) (discretised Gaussian with the model mean and std) for t == 0,
  each averaged over the non-batch dimensions and divided by log 2: the reference's
  `_vb_terms_bpd`. The KL uses the true posterior's *clipped* log-variance, as the reference.
  `clip_denoised=False` is what the reference's training loss uses.

  Args:
    model_eps, model_v: the two halves of the network output, each of x_t's shape.
    x0: clean data in [-1, 1], (B, ...).
    x_t: the noised data at steps t.
    t: integer steps, shape (B,).
    tables: `DiscreteTables` of the chain.

  Returns:
    (B,) bits per dimension.
  """
  _check_tables(tables, "vb_terms_bpd")
  true_mean, _, true_log_variance = q_posterior_mean_variance(x0, x_t, t, tables)
  p = p_mean_variance(model_eps, model_v, x_t, t, tables, clip_denoised=clip_denoised)
  kl = utils.mean_except_batch(normal_kl(true_mean, true_log_variance, p["mean"], p["log_variance"])) / _LOG2
  decoder_nll = -discretized_gaussian_log_likelihood(x0, means=p["mean"], log_scales=0.5 * p["log_variance"])
  decoder_nll = utils.mean_except_batch(decoder_nll) / _LOG2
  return jnp.where(t == 0, decoder_nll, kl)


def split_learned_output(out, x, fn="model_fn"):
  """(eps, v): the first and last C channels of a (B, ..., 2C) output for data x of shape (B, ..., C)."""
  if out.ndim != x.ndim or out.shape[:-1] != x.shape[:-1]:
    raise ValueError(f"{fn}: model output of shape {out.shape} does not match the data {x.shape} "
                     "(expected the same shape with 2C channels on the last axis, channels last)")
  c = x.shape[-1]
  if out.shape[-1] % 2:
    raise ValueError(f"{fn}: model output has an odd number of channels ({out.shape[-1]}) on the last axis; "
                     f"a learned-variance model returns 2C = {2 * c} (eps, then v)")
  if out.shape[-1] != 2 * c:
    raise ValueError(f"{fn}: model output has {out.shape[-1]} channels, expected 2C = {2 * c} for data "
                     f"with C = {c} channels (eps, then v)")
  return out[..., :c], out[..., c:]


def _call(model_fn, x, t, cond):
  return model_fn(x, t) if cond is None else model_fn(x, t, cond)


def hybrid_loss(model_fn, x0, key, *, process, rescale_vb=False, cond=None):
  """L_hybrid = L_simple + L_vlb with the learned-range variance (IDDPM eq. 16, sec. 3.1).

  The reference's `training_losses` with LossType.MSE (or RESCALED_MSE for `rescale_vb`),
  ModelMeanType.EPSILON and ModelVarType.LEARNED_RANGE, the DiT / ADM / IDDPM default:

    t ~ U{0, ..., N-1}, eps ~ N(0, I), x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps,
    mse = mean_dims (eps - eps_theta)^2                                    (L_simple, eq. 14),
    vb  = `vb_terms_bpd`(stop_gradient(eps_theta), v_theta, ...)  [* N / 1000 if rescale_vb],
    loss = mean_batch(mse + vb).

  The stop-gradient keeps L_vlb from training the mean: only the v channels get its gradient.

  Args:
    model_fn: `model_fn(x_t, t[, cond])` with t the integer steps (B,) in [0, N) (what DiT's
      timestep embedder takes), returning (B, ..., 2C): eps then v, channels last.
    x0: clean data (B, ..., C) in [-1, 1] (the decoder term assumes 8-bit data scaled to [-1, 1]).
    key: PRNG key (steps and noise).
    process: a `VPDiscrete` process (its beta table).
    rescale_vb: multiply vb by N / 1000 (LossType.RESCALED_MSE).
    cond: optional conditioning passed to model_fn.

  Returns:
    (loss, aux), aux = {"mse": batch-mean mse, "vb": batch-mean vb, "t": steps (B,),
    "per_example": mse + vb (B,)}.
  """
  tables = DiscreteTables.from_process(process)
  n = tables.num_steps
  key_t, key_n = jax.random.split(key)
  t = jax.random.randint(key_t, (x0.shape[0],), 0, n)
  noise = jax.random.normal(key_n, x0.shape, x0.dtype)
  x_t = q_sample(x0, t, noise, tables)
  eps, v = split_learned_output(_call(model_fn, x_t, t, cond), x0, "hybrid_loss")
  vb = vb_terms_bpd(jax.lax.stop_gradient(eps), v, x0, x_t, t, tables)
  if rescale_vb:
    vb = vb * (n / 1000.0)
  mse = utils.mean_except_batch((noise - eps)**2)
  per_example = mse + vb
  return jnp.mean(per_example), {"mse": jnp.mean(mse), "vb": jnp.mean(vb), "t": t, "per_example": per_example}
