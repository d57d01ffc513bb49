"""Diffusion distillation losses, as pure functions on arrays and callables.

Every loss is written as the official code computes it (grids, reductions, constants), with
the paper and the official file in its docstring (notes: ``shared/notes/distillation.md``).
No modules and no global state: a network enters as a callable closed over its parameters, so
"stop-gradient on a network" means that the caller differentiates with respect to the
generator's (or student's) parameters only; inside a loss, ``jax.lax.stop_gradient`` is applied
exactly where the official code uses ``torch.no_grad`` / ``.detach()`` / ``stop_gradient``.

Conventions:

* A *denoiser* is ``D(x, sigma) -> x0_hat`` with ``sigma`` of shape (B,), for the EDM/VE
  process ``x_t = x + sigma * eps`` (alpha = 1). Progressive and guidance distillation take any
  ``diffjax.processes`` process and ``D(z, t)``. Conditioning (labels, prompts) is closed over by
  the callable, except in `guidance_distillation_loss`, where it is an argument.
* PRNG: every loss splits ``key`` once, ``k_index_or_sigma, k_noise = jax.random.split(key)``
  (``guidance_distillation_loss`` splits in three); the docstrings say which is which.
* Losses return ``(loss, aux)``: a scalar and a dict of stop-gradient diagnostics (scalars and
  per-example arrays of shape (B,), e.g. the sampled noise levels).
* Argument errors raise ``ValueError`` naming the argument and the valid choices.

Functions:

  Score distillation (DMD / DMD2, Diff-Instruct, SIM)
    pseudo_target_loss       0.5 * mse(x, sg(x - g)): realises a gradient field g on x
    karras_index_sigmas      the rho = 7 Karras grid, descending (jcm) or ascending (DMD2)
    dmd_gradient             DMD2's normalised field (p_real - p_fake) / mean|p_real|
    dmd_loss                 DMD2 distribution-matching loss (Karras index in [20, 980])
    fake_score_loss          DMD2 critic loss, weight sigma^-2 + sigma_data^-2
    gan_generator_loss       softplus(-logit_fake).mean()
    gan_discriminator_loss   softplus(logit_fake).mean() + softplus(-logit_real).mean()
    f_divergence_weight, f_distill_loss   f-distill's h(r)-weighted DM loss (FastGen's code)
    dmd_regression_loss      DMD (v1) paired regression (l2 / l1 / pseudo-Huber; no LPIPS)
    diff_instruct_generator_loss, diff_instruct_fake_score_loss
    sim_distance             d(y) and d'(y) for SIM ("l2": ||y||^2 / 2, "pseudo_huber")
    sim_generator_loss       SIM score-gradient surrogate (see its docstring: partly unverified)
  TDM (the demo's arithmetic; the trajectory roll-out is the caller's)
    tdm_diffuse, tdm_fake_score_loss, tdm_generator_loss
  Consistency models (CD, CT, iCT)
    consistency_parametrization, consistency_fn, consistency_ode_step, consistency_loss,
    pseudo_huber, ict_num_scales, ict_lognormal_index_probs, ct_num_scales, ct_target_ema
  Progressive and guidance distillation
    progressive_distillation_target, progressive_distillation_loss, guided_teacher,
    guidance_distillation_loss
"""
import math

import jax
import jax.numpy as jnp
import numpy as np

from diffjax import parametrization as prm
from diffjax import timesteps
from diffjax import utils
from diffjax.losses._checks import check_choice as _check_choice
from diffjax.losses._checks import check_same_shape as _check_same_shape
from diffjax.losses._checks import concrete_scalar as _concrete_scalar
from diffjax.losses._checks import stop_gradient_tree as _sg

PSEUDO_TARGET_REDUCTIONS = ("mean", "sum_over_batch")
REGRESSION_DISTANCES = ("l2", "l1", "pseudo_huber")
DI_REDUCTIONS = ("mean", "sum")
SIM_DISTANCES = ("l2", "pseudo_huber")
SIM_SAMPLINGS = ("stop_gradient", "generator")
SIM_WEIGHTINGS = ("uniform", "sid")
CM_MODES = ("cd", "ct")
CM_SOLVERS = ("heun", "euler")
CM_DISTANCES = ("l2", "l1", "pseudo_huber")
CM_WEIGHTINGS = ("uniform", "snrp1", "truncated_snr", "snr", "ict")
CM_INDEX_SAMPLINGS = ("uniform", "lognormal")
PD_WEIGHTINGS = ("constant", "snr", "snr_trunc", "v_mse")

DMD2_NUM_SIGMAS = 1000
DMD2_MIN_INDEX = 20   # int(0.02 * 1000)
DMD2_MAX_INDEX = 980  # int(0.98 * 1000)
ICT_C_PER_SQRT_DIM = 0.00054


# ----------------------------------------------------------------------------------------------
# argument checks
# ----------------------------------------------------------------------------------------------

def _is_int(value):
  return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_batched(fn, name, x):
  if jnp.ndim(x) < 1:
    raise ValueError(f"{fn}: {name} must have a leading batch axis, got shape {jnp.shape(x)}")


def _check_positive(fn, name, value):
  v = _concrete_scalar(value)
  if v is not None and not v > 0:
    raise ValueError(f"{fn}: {name} must be > 0, got {value}")


def _check_callable(fn, name, value):
  if not callable(value):
    raise ValueError(f"{fn}: {name} must be a callable, got {type(value).__name__}")


def _check_per_example(fn, name, value, batch):
  """A scalar or a (B,) array."""
  shape = jnp.shape(value)
  if shape not in ((), (batch,)):
    raise ValueError(f"{fn}: {name} must be a scalar or have shape ({batch},), got shape {shape}")


def _check_sigmas(fn, sigmas):
  if jnp.ndim(sigmas) != 1 or jnp.shape(sigmas)[0] < 2:
    raise ValueError(f"{fn}: sigmas must be a 1-D grid of at least 2 noise levels, got shape "
                     f"{jnp.shape(sigmas)}")


def _bc(v, x):
  return utils.expand_to(v, x)


# ----------------------------------------------------------------------------------------------
# the pseudo-target trick and the Karras grid
# ----------------------------------------------------------------------------------------------
def pseudo_target_loss(x, grad_field, reduction="mean"):
  """Realises a gradient field ``g`` on ``x`` as an MSE to a stop-gradient target.

  ``reduction="mean"`` is DMD2 ``main/edm/edm_guidance.py::compute_distribution_matching_loss``
  and FastGen ``fastgen/methods/common_loss.py::variational_score_distillation_loss``
  ("this loss gives the grad as gradient through autodiff, following stable-dreamfusion")::

      loss = 0.5 * mean((x - sg(x - g))^2)        # d loss / d x = g / x.size

  ``"sum_over_batch"`` is threestudio's VSD guidance
  (``threestudio/models/guidance/stable_diffusion_vsd_guidance.py``:
  ``0.5 * F.mse_loss(latents, target, reduction="sum") / batch_size``)::

      loss = 0.5 * sum((x - sg(x - g))^2) / B     # d loss / d x = g / B

  The two differ by the factor ``x.size / B`` (C*H*W) in the effective learning rate. The value
  is ``0.5 * mean(g^2)`` (resp. ``0.5 * sum(g^2) / B``); only the gradient is meaningful.

  Args:
    x: the generator samples (gradient flows into them), shape (B, ...).
    grad_field: g, same shape as x (treated as a constant).
    reduction: "mean" or "sum_over_batch".

  Returns:
    ``(loss, aux)``; aux: ``grad_norm`` (global L2 norm of g, DMD2's ``dmtrain_gradient_norm``).
  """
  fn = "pseudo_target_loss"
  _check_choice(fn, "reduction", reduction, PSEUDO_TARGET_REDUCTIONS)
  _check_same_shape(fn, x=x, grad_field=grad_field)
  _check_batched(fn, "x", x)
  x = jnp.asarray(x)
  g = jax.lax.stop_gradient(jnp.asarray(grad_field, x.dtype))
  sq = (x - jax.lax.stop_gradient(x - g))**2
  loss = 0.5 * (jnp.mean(sq) if reduction == "mean" else jnp.sum(sq) / x.shape[0])
  return loss, _sg({"grad_norm": jnp.sqrt(jnp.sum(g**2))})


def karras_index_sigmas(num_scales, sigma_min=0.002, sigma_max=80.0, rho=7.0, *, ascending=False):
  """The Karras et al. (2022, eq. 5) grid of ``num_scales`` noise levels, without a final 0.

  ``ascending=False`` (index 0 = sigma_max) is ``openai/consistency_models_cifar10``
  ``jcm/losses.py``'s ``t(i) = (t_max^(1/rho) + i/(N-1) (t_min^(1/rho) - t_max^(1/rho)))^rho``;
  ``ascending=True`` is DMD2's ``torch.flip(get_sigmas_karras(1000, ...))`` ("small sigma
  first", ``main/edm/edm_guidance.py``). Built with `diffjax.timesteps.karras`.

  Args:
    num_scales: N >= 2 (a Python int).
    sigma_min, sigma_max, rho: the grid (EDM: 0.002, 80, 7).
    ascending: the order (see above).

  Returns:
    Array of shape (N,).
  """
  if not _is_int(num_scales) or num_scales < 2:
    raise ValueError(f"karras_index_sigmas: num_scales must be an integer >= 2, got {num_scales!r}")
  if not 0 < sigma_min < sigma_max:
    raise ValueError(f"karras_index_sigmas: need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
  sigmas = timesteps.karras(int(num_scales), sigma_min, sigma_max, rho, append_zero=False)
  return sigmas[::-1] if ascending else sigmas


def _karras_sigma(i, n, sigma_min, sigma_max, rho, dtype):
  """Element i of the descending grid of n levels, for traced i and n (jcm's formula)."""
  lo, hi = sigma_min**(1.0 / rho), sigma_max**(1.0 / rho)
  i = jnp.asarray(i).astype(dtype)
  return (hi + i / (jnp.asarray(n, dtype) - 1.0) * (lo - hi))**rho


def _default_dmd2_sigmas(sigmas, dtype):
  if sigmas is None:
    sigmas = karras_index_sigmas(DMD2_NUM_SIGMAS, ascending=True)
  return jnp.asarray(sigmas, dtype)


def _check_index_range(fn, min_index, max_index, num):
  if not _is_int(min_index) or not _is_int(max_index):
    raise ValueError(f"{fn}: min_index and max_index must be Python integers, got {min_index!r}, {max_index!r}")
  if not 0 <= min_index <= max_index <= num - 1:
    raise ValueError(f"{fn}: need 0 <= min_index <= max_index <= len(sigmas) - 1 = {num - 1}, got "
                     f"min_index={min_index}, max_index={max_index}")


# ----------------------------------------------------------------------------------------------
# DMD / DMD2
# ----------------------------------------------------------------------------------------------
def dmd_gradient(x, mu_real, mu_fake):
  """DMD2's per-sample normalised distribution-matching field (Yin et al., DMD, arXiv 2311.18828:
  the reverse-KL gradient as a difference of real and fake scores, with a mean-|.| weighting;
  DMD2, arXiv 2405.14867), as ``tianweiy/DMD2`` ``main/edm/edm_guidance.py``::

      p_real = x - mu_real ;  p_fake = x - mu_fake
      g = (p_real - p_fake) / mean_{non-batch dims} |p_real|
      g = nan_to_num(g)

  ``p_real - p_fake = mu_fake - mu_real``, so descending ``pseudo_target_loss(x, g)`` moves x
  toward ``mu_real - mu_fake``. The normaliser uses the *real* (teacher) residual only. As
  ``torch.nan_to_num``, NaN (0/0) becomes 0 and +-inf the largest finite value.

  Args:
    x: generator samples, shape (B, ...).
    mu_real, mu_fake: teacher and fake-score denoiser outputs at ``x + sigma eps``, same shape.

  Returns:
    g, same shape as x.
  """
  fn = "dmd_gradient"
  _check_same_shape(fn, x=x, mu_real=mu_real, mu_fake=mu_fake)
  _check_batched(fn, "x", x)
  x = jnp.asarray(x)
  p_real = x - jnp.asarray(mu_real)
  p_fake = x - jnp.asarray(mu_fake)
  axes = tuple(range(1, x.ndim))
  weight_factor = jnp.mean(jnp.abs(p_real), axis=axes, keepdims=True)
  return jnp.nan_to_num((p_real - p_fake) / weight_factor)


def _dmd_noised_sample(fn, x, real_denoiser, fake_denoiser, key, sigmas, min_index, max_index):
  """DMD2's shared draw: index ~ U{min..max} on the grid, x_t = sg(x) + sigma eps, both denoisers at x_t.

  Returns (sg(x), x_t, index, sigma, sg(mu_real), sg(mu_fake)); the key splits as (k_index, k_noise).
  """
  sigmas = _default_dmd2_sigmas(sigmas, x.dtype)
  _check_sigmas(fn, sigmas)
  _check_index_range(fn, min_index, max_index, sigmas.shape[0])
  k_index, k_noise = jax.random.split(key)
  index = jax.random.randint(k_index, (x.shape[0],), min_index, max_index + 1)
  sigma = sigmas[index]
  noise = jax.random.normal(k_noise, x.shape, x.dtype)
  x_sg = jax.lax.stop_gradient(x)
  x_t = x_sg + _bc(sigma, x) * noise
  mu_real = jax.lax.stop_gradient(real_denoiser(x_t, sigma))
  mu_fake = jax.lax.stop_gradient(fake_denoiser(x_t, sigma))
  return x_sg, x_t, index, sigma, mu_real, mu_fake


def dmd_loss(x, real_denoiser, fake_denoiser, key, *, sigmas=None, min_index=DMD2_MIN_INDEX,
             max_index=DMD2_MAX_INDEX, reduction="mean"):
  """DMD2 distribution-matching loss (Yin et al., "Improved Distribution Matching Distillation",
  NeurIPS 2024, arXiv 2405.14867), EDM path of ``tianweiy/DMD2``
  ``main/edm/edm_guidance.py::compute_distribution_matching_loss``::

      idx ~ randint(min_index, max_index + 1)  per sample     # on sigmas, index 0 = smallest
      sigma = sigmas[idx];  x_t = x + sigma eps               # EDM/VE: x is not scaled
      with no_grad: mu_real = D_real(x_t, sigma); mu_fake = D_fake(x_t, sigma)
      g = dmd_gradient(x, mu_real, mu_fake)
      loss = pseudo_target_loss(x, g, reduction)

  Defaults are DMD2's: a 1000-point Karras grid (sigma 0.002..80, rho 7) flipped so index 0 is
  sigma_min, and ``[min_step, max_step] = [int(0.02 N), int(0.98 N)] = [20, 980]`` (the code's
  ``randint(min_step, min(max_step + 1, N))``; here ``max_index <= N - 1`` is required).
  ``jax.grad`` of the loss with respect to x is exactly ``g / x.size`` ("mean").

  Args:
    x: generator samples ``G(z)``, shape (B, ...).
    real_denoiser: frozen teacher ``D(x_t, sigma)``, sigma of shape (B,).
    fake_denoiser: the online fake score ``D(x_t, sigma)``.
    key: PRNG key, split into ``(k_index, k_noise)``.
    sigmas: ascending noise-level grid (default: `karras_index_sigmas(1000, ascending=True)`).
    min_index, max_index: inclusive index range (Python ints).
    reduction: see `pseudo_target_loss`.

  Returns:
    ``(loss, aux)``; aux: ``index``, ``sigma`` (B,), ``grad_norm``.
  """
  fn = "dmd_loss"
  _check_callable(fn, "real_denoiser", real_denoiser)
  _check_callable(fn, "fake_denoiser", fake_denoiser)
  _check_batched(fn, "x", x)
  _check_choice(fn, "reduction", reduction, PSEUDO_TARGET_REDUCTIONS)
  x = jnp.asarray(x)
  x_sg, x_t, index, sigma, mu_real, mu_fake = _dmd_noised_sample(fn, x, real_denoiser, fake_denoiser, key, sigmas,
                                                                 min_index, max_index)
  g = jax.lax.stop_gradient(dmd_gradient(x_sg, mu_real, mu_fake))
  loss, aux = pseudo_target_loss(x, g, reduction)
  aux = dict(aux, index=index, sigma=sigma)
  return loss, _sg(aux)


def fake_score_loss(x, fake_denoiser, key, *, sigmas=None, sigma_data=0.5):
  """DMD2's fake-score ("guidance") denoising loss on generator samples, EDM path of
  ``tianweiy/DMD2`` ``main/edm/edm_guidance.py::compute_loss_fake``::

      x = sg(x);  idx ~ randint(0, N)          # the FULL grid, not [20, 980]
      sigma = sigmas[idx];  x_t = x + sigma eps
      loss = mean((sigma^-2 + sigma_data^-2) * (D_fake(x_t, sigma) - x)^2)   # mean over ALL elements

  The code's weight ``snr + 1/sigma_data^2`` ("weight_schedule karras") is algebraically EDM's
  ``lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2``; what differs from
  `diffjax.losses.edm_loss` is the sigma distribution (uniform index on the Karras grid instead
  of log-normal) and the mean over all elements. The generator receives no gradient (x is
  detached).

  Args:
    x: generator samples (detached here), shape (B, ...).
    fake_denoiser: ``D(x_t, sigma)``.
    key: PRNG key, split into ``(k_index, k_noise)``.
    sigmas: ascending grid (default DMD2's 1000-point Karras grid).
    sigma_data: 0.5 as DMD2/EDM.

  Returns:
    ``(loss, aux)``; aux: ``index``, ``sigma`` (B,).
  """
  fn = "fake_score_loss"
  _check_callable(fn, "fake_denoiser", fake_denoiser)
  _check_batched(fn, "x", x)
  _check_positive(fn, "sigma_data", sigma_data)
  x = jax.lax.stop_gradient(jnp.asarray(x))
  sigmas = _default_dmd2_sigmas(sigmas, x.dtype)
  _check_sigmas(fn, sigmas)
  k_index, k_noise = jax.random.split(key)
  index = jax.random.randint(k_index, (x.shape[0],), 0, sigmas.shape[0])
  sigma = sigmas[index]
  noise = jax.random.normal(k_noise, x.shape, x.dtype)
  x_t = x + _bc(sigma, x) * noise
  weight = sigma**-2 + 1.0 / sigma_data**2
  loss = jnp.mean(_bc(weight, x) * (fake_denoiser(x_t, sigma) - x)**2)
  return loss, _sg({"index": index, "sigma": sigma})


F_DIVERGENCES = ("rkl", "kl", "js", "sf", "neyman", "sh", "jf")


def f_divergence_weight(ratio, f_div):
  """f-distill's weighting h(r) of the score difference for the density ratio r = p_t / q_t
  (Xu, Nie, Vahdat, arXiv 2502.15681; NVIDIA FastGen ``fastgen/methods/distribution_matching/
  f_distill.py``)::

      rkl: 1 (= DMD / VSD)   kl: r   js: 1 - 1/(1 + r)   sf: 1/(1 + r)
      neyman: 1/max(r, 1e-8)   sh (squared Hellinger): sqrt(r)   jf (Jeffreys): 1 + r
  """
  _check_choice("f_divergence_weight", "f_div", f_div, F_DIVERGENCES)
  r = jnp.asarray(ratio)
  if f_div == "rkl":
    return jnp.ones_like(r)
  if f_div == "kl":
    return r
  if f_div == "js":
    return 1.0 - 1.0 / (1.0 + r)
  if f_div == "sf":
    return 1.0 / (1.0 + r)
  if f_div == "neyman":
    return 1.0 / jnp.maximum(r, 1e-8)
  if f_div == "sh":
    return jnp.sqrt(r)
  return 1.0 + r


def f_distill_loss(x, real_denoiser, fake_denoiser, logit_fn, key, *, f_div="js", ratio_lower=0.1,
                   ratio_upper=20.0, num_bins=10, sigmas=None, min_index=DMD2_MIN_INDEX,
                   max_index=DMD2_MAX_INDEX, reduction="mean"):
  """f-distill generator loss (Xu, Nie, Vahdat 2025, arXiv 2502.15681), as NVIDIA FastGen
  ``f_distill.py`` with its defaults (``ratio_ema_rate = 0``)::

      idx ~ randint(min_index, max_index + 1); sigma = sigmas[idx]; x_t = x + sigma eps     # as dmd_loss
      r = clip(exp(clip(logit_fn(x_t, sigma), -10, 10)), ratio_lower, ratio_upper)         # detached
      r = r / mean(r over the samples in the same of num_bins index bins)                  # ratio normalisation
      h = h_f(r);  h = h / (mean_batch(h) + 1e-6)                                          # second normalisation
      g = h * (p_real - p_fake) / (mean|p_real| + 1e-6);  loss = pseudo_target_loss(x, g)

  ``logit_fn`` is the discriminator on the *same* noisy x_t (the official one reads the frozen
  teacher's features and is trained with `gan_discriminator_loss`; its optimal logit is
  log(p_t / q_t), hence r = exp(logit)). With ``f_div="rkl"`` (h = 1) this is `dmd_loss` up to
  the 1e-6 in the normaliser. Not included: the EMA of the per-bin means across steps
  (``ratio_ema_rate``, 0.5 in the ImageNet-64 config), which needs state; the GAN generator term
  FastGen adds (``gan_loss_weight_gen * gan_generator_loss``) is left to the caller.

  Returns:
    ``(loss, aux)``; aux: ``index``, ``sigma``, ``ratio``, ``h`` (B,), ``grad_norm``.
  """
  fn = "f_distill_loss"
  _check_callable(fn, "real_denoiser", real_denoiser)
  _check_callable(fn, "fake_denoiser", fake_denoiser)
  _check_callable(fn, "logit_fn", logit_fn)
  _check_batched(fn, "x", x)
  _check_choice(fn, "f_div", f_div, F_DIVERGENCES)
  _check_choice(fn, "reduction", reduction, PSEUDO_TARGET_REDUCTIONS)
  if not (_is_int(num_bins) and num_bins >= 1):
    raise ValueError(f"{fn}: num_bins must be a positive integer, got {num_bins!r}")
  if not 0 < ratio_lower <= ratio_upper:
    raise ValueError(f"{fn}: need 0 < ratio_lower <= ratio_upper, got {ratio_lower}, {ratio_upper}")
  x = jnp.asarray(x)
  x_sg, x_t, index, sigma, mu_real, mu_fake = _dmd_noised_sample(fn, x, real_denoiser, fake_denoiser, key, sigmas,
                                                                 min_index, max_index)
  logit = jax.lax.stop_gradient(jnp.asarray(logit_fn(x_t, sigma)).reshape(x.shape[0], -1).mean(axis=1))
  ratio = jnp.clip(jnp.exp(jnp.clip(logit, -10.0, 10.0)), ratio_lower, ratio_upper)
  width = max((max_index - min_index) / num_bins, 1e-12)
  bins = jnp.clip(jnp.floor((index - min_index) / width).astype(jnp.int32), 0, num_bins - 1)
  onehot = jax.nn.one_hot(bins, num_bins, dtype=x.dtype)
  bin_mean = (onehot.T @ ratio) / jnp.maximum(onehot.sum(axis=0), 1.0)
  ratio = ratio / (bin_mean[bins] + 1e-6)
  h = f_divergence_weight(ratio, f_div)
  h = h / (jnp.mean(h) + 1e-6)
  p_real, p_fake = x_sg - mu_real, x_sg - mu_fake
  norm = jnp.mean(jnp.abs(p_real), axis=tuple(range(1, x.ndim)), keepdims=True) + 1e-6
  g = jnp.nan_to_num(_bc(h, x) * (p_real - p_fake) / norm)
  loss, aux = pseudo_target_loss(x, g, reduction)
  return loss, _sg(dict(aux, index=index, sigma=sigma, ratio=ratio, h=h))


def gan_generator_loss(logit_fake):
  """Non-saturating GAN generator loss ``softplus(-logit_fake).mean()`` (DMD2, arXiv 2405.14867;
  ``tianweiy/DMD2`` ``main/edm/edm_guidance.py::compute_generator_clean_cls_loss``).

  In DMD2 the logits come from a head on the fake score's bottleneck features; on generator
  steps the critic is frozen but differentiable with respect to its input.

  Returns:
    ``(loss, aux)``; aux: ``d_fake`` (mean sigmoid(logit_fake)).
  """
  logit_fake = jnp.asarray(logit_fake)
  loss = jnp.mean(jax.nn.softplus(-logit_fake))
  return loss, _sg({"d_fake": jnp.mean(jax.nn.sigmoid(logit_fake))})


def gan_discriminator_loss(logit_fake, logit_real):
  """GAN discriminator loss of DMD2 (``main/edm/edm_guidance.py::compute_guidance_clean_cls_loss``)::

      loss = (softplus(logit_fake) + softplus(-logit_real)).mean()

  written as ``mean(softplus(logit_fake)) + mean(softplus(-logit_real))``, equal when both have
  the same shape and also defined when the fake and real batches differ in size. Feed logits of
  *detached* generator samples. At logits 0 the loss is ``2 log 2``.

  Returns:
    ``(loss, aux)``; aux: ``d_fake``, ``d_real`` (mean sigmoids, the code's logged
    ``pred_realism_on_*``).
  """
  logit_fake, logit_real = jnp.asarray(logit_fake), jnp.asarray(logit_real)
  loss = jnp.mean(jax.nn.softplus(logit_fake)) + jnp.mean(jax.nn.softplus(-logit_real))
  return loss, _sg({"d_fake": jnp.mean(jax.nn.sigmoid(logit_fake)),
                    "d_real": jnp.mean(jax.nn.sigmoid(logit_real))})


def pseudo_huber(a, b, c=None):
  """Per-sample Pseudo-Huber distance over the **whole** sample, shape (B,)::

      d(a, b) = sqrt(||a - b||_2^2 + c^2) - c,     c = 0.00054 * sqrt(dim)  by default

  Song & Dhariwal, "Improved Techniques for Training Consistency Models" (iCT, ICLR 2024,
  arXiv 2310.14189; c = 0.03 on CIFAR-10 where dim = 3072). The norm runs over every
  non-batch dim (not element-wise, a frequent re-implementation mistake); ECT's
  ``locuslab/ect/training/loss.py`` uses the same form. The default c is the notes' iCT rule
  (third-party summaries and re-implementations, no official iCT code is public).

  Args:
    a, b: shape (B, ...).
    c: > 0, or None for ``0.00054 * sqrt(prod(shape[1:]))``.
  """
  fn = "pseudo_huber"
  _check_same_shape(fn, a=a, b=b)
  _check_batched(fn, "a", a)
  diff = jnp.asarray(a) - jnp.asarray(b)
  dim = math.prod(diff.shape[1:])
  if c is None:
    c = ICT_C_PER_SQRT_DIM * math.sqrt(dim)
  _check_positive(fn, "c", c)
  return jnp.sqrt(utils.sum_except_batch(diff**2) + c**2) - c


def dmd_regression_loss(x_gen, x_target, *, distance="l2", c=None):
  """DMD (v1) regression loss between ``G(z)`` and the teacher's deterministic-sampler output
  for the *same* z, from a precomputed set of noise-image pairs (Yin et al., "One-step Diffusion
  with Distribution Matching Distillation", CVPR 2024, arXiv 2311.18828, the regression loss).

  The paper uses LPIPS, which diffjax does not ship; this offers per-sample stand-ins, averaged
  over the batch:

  ============ =====================================================================
  l2           mean over dims of (x_gen - x_target)^2
  l1           mean over dims of |x_gen - x_target|
  pseudo_huber `pseudo_huber` over the whole sample (c = 0.00054 sqrt(dim) by default)
  ============ =====================================================================

  There is no official DMD-v1 training code; the paper's lambda_reg = 0.25 (not verified here)
  is left to the caller (``L = loss_dm + lambda_reg * loss_reg``). The target is detached.

  Args:
    x_gen: ``G(z)`` for the paired noises, shape (B, ...).
    x_target: the teacher ODE outputs for the same noises, same shape.
    distance: "l2", "l1" or "pseudo_huber".
    c: pseudo-Huber constant (only for "pseudo_huber").

  Returns:
    ``(loss, aux)``; aux: ``per_example`` (B,).
  """
  fn = "dmd_regression_loss"
  _check_choice(fn, "distance", distance, REGRESSION_DISTANCES)
  _check_same_shape(fn, x_gen=x_gen, x_target=x_target)
  _check_batched(fn, "x_gen", x_gen)
  x_gen = jnp.asarray(x_gen)
  target = jax.lax.stop_gradient(jnp.asarray(x_target, x_gen.dtype))
  if distance == "l2":
    per = utils.mean_except_batch((x_gen - target)**2)
  elif distance == "l1":
    per = utils.mean_except_batch(jnp.abs(x_gen - target))
  else:
    per = pseudo_huber(x_gen, target, c)
  return jnp.mean(per), _sg({"per_example": per})


# ----------------------------------------------------------------------------------------------
# Diff-Instruct and SIM
# ----------------------------------------------------------------------------------------------
def _lognormal_sigma_and_noise(key, x, p_mean, p_std):
  """EDM's (k_sigma, k_noise) split, as `diffjax.losses.edm_loss`."""
  k_sigma, k_noise = jax.random.split(key)
  sigma = jnp.exp(p_mean + p_std * jax.random.normal(k_sigma, (x.shape[0],), x.dtype))
  noise = jax.random.normal(k_noise, x.shape, x.dtype)
  return sigma, noise


def diff_instruct_generator_loss(y, real_denoiser, fake_denoiser, key, *, p_mean=-1.2, p_std=1.2,
                                 reduction="mean"):
  """Diff-Instruct generator loss (Luo et al., NeurIPS 2023, arXiv 2305.18455; the integral-KL
  gradient in x0-parametrisation), as ``pkulwj1994/diff_instruct``
  ``training/di_loss.py::DI_EDMLoss.gloss`` and ``training/di_training_loop.py``::

      sigma ~ LogNormal(P_mean = -1.2, P_std = 1.2);  n = sigma eps
      with no_grad: Dd = D_real(y + n, sigma);  Dg = D_fake(y + n, sigma)
      loss_b = sum_dims((Dg - Dd) * y)          # weight = 1
      loss = sum_b loss_b / B                    # the loop's loss.sum().mul(1 / batch_total)

  so ``d loss / d y_b = (Dg - Dd) / B``; ``reduction="sum"`` drops the 1/B, making the gradient
  exactly ``D_fake - D_real``. This is DMD's field without the mean-|.| normaliser and with EDM's
  log-normal sigma. The official code also restores the CUDA RNG state so that both networks see
  the same dropout mask; with pure callables, close both over the same dropout key.

  Args:
    y: generator samples ``G(z)`` (gradient flows into them), shape (B, ...).
    real_denoiser, fake_denoiser: ``D(x_t, sigma)``.
    key: PRNG key, split into ``(k_sigma, k_noise)``.
    p_mean, p_std: log-normal sigma distribution.
    reduction: "mean" (official) or "sum" over the batch.

  Returns:
    ``(loss, aux)``; aux: ``sigma`` (B,).
  """
  fn = "diff_instruct_generator_loss"
  _check_callable(fn, "real_denoiser", real_denoiser)
  _check_callable(fn, "fake_denoiser", fake_denoiser)
  _check_batched(fn, "y", y)
  _check_choice(fn, "reduction", reduction, DI_REDUCTIONS)
  _check_positive(fn, "p_std", p_std)
  y = jnp.asarray(y)
  sigma, noise = _lognormal_sigma_and_noise(key, y, p_mean, p_std)
  x_t = jax.lax.stop_gradient(y) + _bc(sigma, y) * noise
  d_real = jax.lax.stop_gradient(real_denoiser(x_t, sigma))
  d_fake = jax.lax.stop_gradient(fake_denoiser(x_t, sigma))
  per = utils.sum_except_batch((d_fake - d_real) * y)
  loss = jnp.mean(per) if reduction == "mean" else jnp.sum(per)
  return loss, _sg({"sigma": sigma})


def diff_instruct_fake_score_loss(y, fake_denoiser, key, *, p_mean=-1.2, p_std=1.2, sigma_data=0.5,
                                  reduce="sum"):
  """Diff-Instruct's fake-score loss: the EDM loss (Karras et al. 2022, eq. 8) on detached
  generator samples, ``pkulwj1994/diff_instruct`` ``training/di_loss.py::DI_EDMLoss.__call__``::

      sigma ~ LogNormal(-1.2, 1.2);  loss = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 * (D(y + n, sigma) - y)^2

  summed over dims and averaged over the batch by the EDM training loop (``reduce="sum"``).
  Delegates to `diffjax.losses.score_matching.edm_loss` (same key split).

  Returns:
    ``(loss, aux)`` of `edm_loss` (aux: ``sigma``, ``per_example``).
  """
  from diffjax.losses.score_matching import edm_loss  # local: keep this module import-light
  fn = "diff_instruct_fake_score_loss"
  _check_callable(fn, "fake_denoiser", fake_denoiser)
  _check_batched(fn, "y", y)
  loss, aux = edm_loss(fake_denoiser, jax.lax.stop_gradient(jnp.asarray(y)), key, p_mean=p_mean,
                       p_std=p_std, sigma_data=sigma_data, reduce=reduce)
  return loss, _sg(aux)


def sim_distance(y, *, distance="pseudo_huber", c=None):
  """The distance d of SIM's score divergence and its gradient d'(y), per sample.

  ============ ============================================== ==================================
  "l2"         d(y) = ||y||^2 / 2 (Fisher divergence / 2)     d'(y) = y
  pseudo_huber d(y) = sqrt(||y||^2 + c^2) - c                 d'(y) = y / sqrt(||y||^2 + c^2)
  ============ ============================================== ==================================

  (Luo et al., "One-Step Diffusion Distillation through Score Implicit Matching", NeurIPS 2024,
  arXiv 2410.16794, Sec. 3.3 "The Pseudo-Huber distance function".) Norms run over every
  non-batch dim. d' of the pseudo-Huber distance is a normalised score difference, ||d'|| < 1.

  Args:
    y: shape (B, ...).
    distance: "l2" or "pseudo_huber".
    c: > 0, required for "pseudo_huber" (SIM's value was not verified; no default is offered).

  Returns:
    ``(d, d_prime)``: shape (B,) and the shape of y.
  """
  fn = "sim_distance"
  _check_choice(fn, "distance", distance, SIM_DISTANCES)
  _check_batched(fn, "y", y)
  y = jnp.asarray(y)
  sq = utils.sum_except_batch(y**2)
  if distance == "l2":
    return 0.5 * sq, y
  if c is None:
    raise ValueError(f"{fn}: distance 'pseudo_huber' needs c > 0 (SIM's c is not verified, so there is "
                     "no default)")
  _check_positive(fn, "c", c)
  root = jnp.sqrt(sq + c**2)
  return root - c, y / _bc(root, y)


def sim_generator_loss(x, real_denoiser, fake_denoiser, key, *, distance="pseudo_huber", c=None,
                       sampling="stop_gradient", weighting="uniform", p_mean=-1.2, p_std=1.2,
                       sigma=None, noise=None):
  """Score Implicit Matching generator loss (Luo, Huang, Geng, Kolter, Qi, NeurIPS 2024,
  arXiv 2410.16794). ``maple-research-lab/SIM`` is inference-only, so there is no official loss
  to follow; read the status below before relying on it.

  Divergence, per noise level: ``D = E_{x_t ~ pi_t} d(s_p(x_t) - s_q(x_t))`` between the
  teacher score s_p and the score s_q of the generator's noised distribution q_theta. With
  ``x_t = x + sigma eps`` (EDM/VE), denoisers give ``s = (D(x_t) - x_t) / sigma^2``; the loss is
  written in x0 units (the score identities scale by sigma^2)::

      y = D_real(x_t) - D_fake(x_t)          # = sigma^2 (s_p - s_psi)
      r = D_fake(x_t) - x                    # = sigma^2 (s_psi - grad log q(x_t | x))
      loss_b = w_b * ( d'(y)^T r  [+ d(y) if sampling == "generator"] )

  with d, d' from `sim_distance` (the distance is applied to the x0-unit difference y; in score
  units that is the distance ``d(sigma^2 .)``, still a valid per-t choice). **Gradients flow
  through x_t into both networks' inputs** (their parameters are constants for the generator
  step), as in SiD's ``mingyuanzhou/SiD`` ``training/sid_loss.py``; nothing is stop-gradient
  except the "sid" weight.

  Status:

  * *Verified here* (exact float64 tests, Gaussian teacher/generator with the fake score equal to
    the generator's true score, Gauss-Hermite quadrature): with ``sampling="generator"`` the
    expected gradient equals ``d/dtheta E_{x_t ~ q_theta} d(y)`` (the divergence with the
    generator's own x_t distribution); with ``"stop_gradient"`` it equals the gradient of the
    divergence with ``pi_t = q_{sg(theta)}`` held fixed. Both for "l2" and "pseudo_huber". This
    follows from differentiating the score identity ``E_q[u^T s_q] = E[u^T grad log q(x_t | x0)]``
    (the identity SiD's derivation rests on). With ``distance="l2"`` and ``weighting="sid"``
    the loss equals SiD's generator loss with ``alpha = 1`` ("stop_gradient") or ``alpha = 1/2``
    ("generator") exactly.
  * *Not verified* (the paper's body could not be read here, only its abstract, table of
    contents and third-party summaries): SIM's exact theorem and algorithm, its choice of pi_t
    (this default assumes ``pi_t = q_{sg(theta)}``, which makes SiD(alpha = 1) a special case,
    consistent with a third-party summary that calls SiD a special case of SIM), its weighting
    w(t), its c and its sigma distribution (here Diff-Instruct's LogNormal(-1.2, 1.2)).
  * The notes' reconstruction ``-sg(d'(y))^T (s_p(x_t) - grad log q(x_t | x0))`` (stop-gradient
    on d'(y), gradient only through the teacher) is **not** implemented: in the Gaussian case of
    the tests its expected gradient has the opposite sign of the divergence's gradient (checked
    in a side computation, not in the test suite).

  Args:
    x: generator samples ``G(z)``, shape (B, ...).
    real_denoiser: teacher ``D(x_t, sigma)`` (must be differentiable in x_t).
    fake_denoiser: online fake score ``D(x_t, sigma)`` trained by DSM on detached G samples
      (e.g. `diff_instruct_fake_score_loss`); differentiable in x_t.
    key: PRNG key, split into ``(k_sigma, k_noise)``; the draws are replaced by ``sigma`` /
      ``noise`` when those are given (key may then be None if both are).
    distance: "l2" (d = ||y||^2/2) or "pseudo_huber".
    c: pseudo-Huber constant (required for "pseudo_huber"), in x0 units.
    sampling: "stop_gradient" (pi_t = q_{sg(theta)}: the x_t distribution is held fixed in the
      divergence; gradients still flow through x_t into the networks) or "generator"
      (pi_t = q_theta, adds d(y)).
    weighting: "uniform" (w = 1) or "sid" (w = 1 / max(mean|x - D_real(x_t)|, 1e-5),
      stop-gradient, SiD's ``weight_factor``).
    p_mean, p_std: log-normal sigma distribution (used when sigma is None).
    sigma: optional noise levels, scalar or (B,), instead of sampling them.
    noise: optional eps, shape of x, instead of sampling it.

  Returns:
    ``(loss, aux)``; aux: ``sigma`` (B,), ``distance`` (batch mean of d(y)).
  """
  fn = "sim_generator_loss"
  _check_callable(fn, "real_denoiser", real_denoiser)
  _check_callable(fn, "fake_denoiser", fake_denoiser)
  _check_batched(fn, "x", x)
  _check_choice(fn, "distance", distance, SIM_DISTANCES)
  _check_choice(fn, "sampling", sampling, SIM_SAMPLINGS)
  _check_choice(fn, "weighting", weighting, SIM_WEIGHTINGS)
  if distance == "pseudo_huber" and c is None:
    raise ValueError(f"{fn}: distance 'pseudo_huber' needs c > 0 (SIM's c is not verified, so there is "
                     "no default)")
  x = jnp.asarray(x)
  b = x.shape[0]
  if sigma is not None:
    _check_per_example(fn, "sigma", sigma, b)
  if noise is not None:
    _check_same_shape(fn, x=x, noise=noise)
  if sigma is None or noise is None:
    if key is None:
      raise ValueError(f"{fn}: key may be None only when both sigma and noise are given")
    s_drawn, n_drawn = _lognormal_sigma_and_noise(key, x, p_mean, p_std)
  sigma = s_drawn if sigma is None else jnp.broadcast_to(jnp.asarray(sigma, x.dtype), (b,))
  noise = n_drawn if noise is None else jnp.asarray(noise, x.dtype)
  x_t = x + _bc(sigma, x) * noise
  d_real = real_denoiser(x_t, sigma)
  d_fake = fake_denoiser(x_t, sigma)
  y = d_real - d_fake
  r = d_fake - x
  d, d_prime = sim_distance(y, distance=distance, c=c)
  per = utils.sum_except_batch(d_prime * r)
  if sampling == "generator":
    per = per + d
  if weighting == "sid":
    wf = jnp.maximum(utils.mean_except_batch(jnp.abs(x - d_real)), 1e-5)
    per = per / jax.lax.stop_gradient(wf)
  return jnp.mean(per), _sg({"sigma": sigma, "distance": jnp.mean(d)})


# ----------------------------------------------------------------------------------------------
# consistency models
# ----------------------------------------------------------------------------------------------
# ----------------------------------------------------------------------------------------------
# TDM (trajectory distribution matching): the demo's arithmetic on network outputs
# ----------------------------------------------------------------------------------------------
def tdm_diffuse(x_mid, eps_student, alpha_mid, sigma_mid, alpha_t, sigma_t, noise):
  """TDM's stochastic diffusion of the student's deterministic point ``x_mid`` (at t_mid) to a
  later t, and the fake score's importance weight (Luo et al., ICCV 2025, arXiv 2503.06674;
  ``Luo-Yihong/TDM`` ``train_tdm_demo.py``, VP)::

      x_t   = (alpha_t / alpha_mid) x_mid + beta n,   beta = sqrt(sigma_t^2 - (alpha_t sigma_mid / alpha_mid)^2)
      mixed = (eps_student (alpha_t / alpha_mid) sigma_mid + beta n) / sigma_t      # the effective noise
      w_is  = exp(-mean(mixed^2) / 2) / exp(-mean(n^2) / 2)                        # per sample

  With ``x_mid = alpha_mid x0 + sigma_mid eps_student`` this is ``alpha_t x0 + sigma_t mixed``.

  Args:
    x_mid, eps_student, noise: shape (B, ...); alpha_*, sigma_*: scalars or (B,), t after t_mid.

  Returns:
    ``(x_t, w_is)`` with w_is of shape (B,).
  """
  x_mid = jnp.asarray(x_mid)
  b = lambda v: _bc(jnp.asarray(v, x_mid.dtype), x_mid)
  ratio = b(alpha_t) / b(alpha_mid)
  beta = jnp.sqrt(jnp.maximum(b(sigma_t)**2 - (ratio * b(sigma_mid))**2, 0.0))
  x_t = ratio * x_mid + beta * noise
  mixed = (eps_student * ratio * b(sigma_mid) + beta * noise) / b(sigma_t)
  w_is = jnp.exp(-0.5 * utils.mean_except_batch(mixed**2)) / jnp.exp(-0.5 * utils.mean_except_batch(noise**2))
  return x_t, jax.lax.stop_gradient(w_is)


def tdm_fake_score_loss(x0_fake, x0_student, snr, w_is, *, snr_clip=5.0):
  """TDM's fake-score loss: ``mean_b[ mean((x0_fake - sg(x0_student))^2) * min(SNR(t), 5) * w_is ]``
  (``train_tdm_demo.py``; x0-MSE with min-SNR weighting and the importance weight of `tdm_diffuse`)."""
  x0_student = jax.lax.stop_gradient(jnp.asarray(x0_student))
  per = utils.mean_except_batch((jnp.asarray(x0_fake) - x0_student)**2)
  return jnp.mean(per * jnp.minimum(jnp.asarray(snr), snr_clip) * jax.lax.stop_gradient(w_is)), {}


def tdm_generator_loss(x0_student, x0_real, x0_fake, *, x0_real_uncond=None, cfg=1.0, huber=True, c=1e-3):
  """TDM's generator loss on the student's one-step x0 at its own trajectory point
  (``train_tdm_demo.py``, ``--use_huber``)::

      x0_real_cfg = x0_real + (cfg - 1)(x0_real - x0_real_uncond)                # CFG on the teacher only
      target = sg(x0_G + (x0_real - x0_fake) + (cfg - 1)(x0_real - x0_real_uncond))
      wf = sg(mean_{C,H,W} |x0_G - x0_real_cfg|)                                  # per sample
      huber: mean((sqrt((x0_G - target)^2 + c^2) - c) / wf)   (element-wise, c = 1e-3)
      else:  mean((x0_G - target)^2 / wf)

  i.e. DMD's normalised field with an element-wise pseudo-Huber. The demo's trajectory roll-out
  (the student's own K-step chain re-noised with its predicted eps, stage intervals of
  ``T_tot / K``) is the caller's; ``x0_real`` / ``x0_fake`` are the teacher's and the fake score's
  x0 at the diffused point (`tdm_diffuse`).
  """
  x0 = jnp.asarray(x0_student)
  x0_real, x0_fake = jax.lax.stop_gradient(x0_real), jax.lax.stop_gradient(x0_fake)
  guide = 0.0 if x0_real_uncond is None else (cfg - 1.0) * (x0_real - jax.lax.stop_gradient(x0_real_uncond))
  if x0_real_uncond is None and cfg != 1.0:
    raise ValueError("tdm_generator_loss: cfg != 1 needs x0_real_uncond")
  target = jax.lax.stop_gradient(x0 + (x0_real - x0_fake) + guide)
  wf = jax.lax.stop_gradient(jnp.mean(jnp.abs(x0 - (x0_real + guide)), axis=tuple(range(1, x0.ndim)), keepdims=True))
  diff = x0 - target
  per = (jnp.sqrt(diff**2 + c**2) - c) if huber else diff**2
  return jnp.mean(per / wf), {}


def consistency_parametrization(sigma, sigma_data=0.5, sigma_min=0.002):
  """c_skip, c_out, c_in of the consistency function (Song et al., "Consistency Models", ICML
  2023, arXiv 2303.01469, the boundary-respecting parametrisation), exactly
  ``openai/consistency_models_cifar10``
  ``jcm/models/utils.py::get_distiller_fn``::

      c_skip = sigma_data^2 / ((sigma - sigma_min)^2 + sigma_data^2)
      c_out  = (sigma - sigma_min) sigma_data / sqrt(sigma^2 + sigma_data^2)
      c_in   = 1 / sqrt(sigma^2 + sigma_data^2)          (EDM's c_in, no shift)

  so ``c_skip(sigma_min) = 1`` and ``c_out(sigma_min) = 0`` exactly: ``f(x, sigma_min) = x``.
  """
  sigma = jnp.asarray(sigma)
  _check_positive("consistency_parametrization", "sigma_data", sigma_data)
  shifted = sigma - sigma_min
  c_skip = sigma_data**2 / (shifted**2 + sigma_data**2)
  c_out = shifted * sigma_data / jnp.sqrt(sigma**2 + sigma_data**2)
  _, _, c_in, _ = prm.edm_preconditioning(sigma, "edm", sigma_data=sigma_data)
  return c_skip, c_out, c_in


def consistency_fn(network_fn, x, sigma, *args, sigma_data=0.5, sigma_min=0.002, **kwargs):
  """``f(x, sigma) = c_skip x + c_out F(c_in x, 0.25 log sigma, *args)``, jcm's ``distiller_fn``.

  Args:
    network_fn: raw network ``F(x_in, c_noise, *args, **kwargs)``, c_noise of shape (B,)
      (the `parametrization.edm_denoiser` convention, so a teacher network can initialise it).
    x: shape (B, ...).
    sigma: scalar or (B,).
    sigma_data, sigma_min: 0.5 and 0.002 (the CIFAR-10 configs).
  """
  _check_callable("consistency_fn", "network_fn", network_fn)
  x = jnp.asarray(x)
  sigma = utils.batch_times(sigma, x)
  c_skip, c_out, c_in = consistency_parametrization(sigma, sigma_data, sigma_min)
  _, _, _, c_noise = prm.edm_preconditioning(sigma, "edm", sigma_data=sigma_data)
  out = network_fn(_bc(c_in, x) * x, c_noise, *args, **kwargs)
  return _bc(c_skip, x) * x + _bc(c_out, x) * out


def consistency_ode_step(x_t, t, t2, *, denoiser=None, x0=None, solver="heun"):
  """One step t -> t2 of the EDM PF-ODE ``dx/dt = (x - D(x, t)) / t``, jcm's ``heun_solver`` /
  ``euler_solver`` (``jcm/losses.py::get_consistency_loss_fn``).

  CD passes the teacher ``denoiser``; CT passes ``x0`` instead (the code's ``dsm_target=True``:
  the denoiser is replaced by the data), so with ``x_t = x0 + t z`` both solvers return
  ``x0 + t2 z`` (up to rounding).

  Args:
    x_t: shape (B, ...).
    t, t2: scalars or (B,).
    denoiser: ``D(x, t)`` (CD), or None.
    x0: the clean data (CT), used when denoiser is None.
    solver: "heun" or "euler".
  """
  fn = "consistency_ode_step"
  _check_choice(fn, "solver", solver, CM_SOLVERS)
  if (denoiser is None) == (x0 is None):
    raise ValueError(f"{fn}: pass exactly one of denoiser (consistency distillation) or x0 (consistency "
                     "training, dsm target)")
  x_t = jnp.asarray(x_t)
  t, t2 = utils.batch_times(t, x_t), utils.batch_times(t2, x_t)

  def den(x, s):
    return jnp.asarray(x0, x_t.dtype) if denoiser is None else denoiser(x, s)

  tb, t2b = _bc(t, x_t), _bc(t2, x_t)
  d = (x_t - den(x_t, t)) / tb
  if solver == "euler":
    return x_t + (t2b - tb) * d
  x_e = x_t + (t2b - tb) * d
  d2 = (x_e - den(x_e, t2)) / t2b
  return x_t + (t2b - tb) / 2 * (d + d2)


def _cm_distance(a, b, distance, c):
  if distance == "l2":
    return utils.mean_except_batch((a - b)**2)
  if distance == "l1":
    return utils.mean_except_batch(jnp.abs(a - b))
  return pseudo_huber(a, b, c)


def consistency_loss(online_fn, target_fn, x, key, *, num_scales, mode="cd", teacher_denoiser=None,
                     solver="heun", distance="l2", weighting="uniform", index_sampling="uniform",
                     sigma_min=0.002, sigma_max=80.0, rho=7.0, c=None, p_mean=-1.1, p_std=2.0):
  """Consistency distillation / training loss (Song et al. 2023, arXiv 2303.01469, Alg. 2-3), as
  ``openai/consistency_models_cifar10`` ``jcm/losses.py::get_consistency_loss_fn``::

      i ~ randint(0, N - 1)                      # i in {0, ..., N-2}
      t = sigma_i, t2 = sigma_{i+1}               # descending rho-grid (karras_index_sigmas): t > t2
      x_t = x + t z
      F_t = f_theta(x_t, t)
      x_t2 = ode step t -> t2 (CD: teacher Heun/Euler; CT: dsm target, = x + t2 z)
      F_t2 = sg(f_theta-(x_t2, t2))
      loss = mean_b( weight(t) * distance(F_t, F_t2) )

  ``distance``: "l2" / "l1" are jcm's per-sample means over dims; "pseudo_huber" is iCT's
  whole-sample `pseudo_huber` (LPIPS is not available). ``weighting``: "uniform" (1), "snrp1"
  (1/t^2 + 1), "truncated_snr" (max(1/t^2, 1)), "snr" (1/t^2), jcm's; "ict" is iCT's
  ``1 / (sigma_{i+1} - sigma_i)`` in ascending notation, i.e. ``1 / (t - t2)`` here.
  ``index_sampling="lognormal"`` draws i with `ict_lognormal_index_probs` (iCT); it needs
  num_scales as a Python int. jcm's ``nansum / sum(mask)`` is a plain batch mean here.

  Target network: the official CD config uses ``target = params`` (mu = 0: pass the online
  function as ``target_fn``); CT uses an EMA with `ct_target_ema`; iCT uses mu = 0. Dropout:
  jcm shares one dropout rng between the online and the target pass; close both callables over
  the same dropout key to reproduce that.

  Args:
    online_fn: ``f_theta(x, sigma)`` (e.g. `consistency_fn` of the online params).
    target_fn: ``f_theta-(x, sigma)``; its output is stop-gradient.
    x: data batch, shape (B, ...).
    key: PRNG key, split into ``(k_index, k_noise)``.
    num_scales: N >= 2 (may be traced with uniform index sampling).
    mode: "cd" (needs teacher_denoiser) or "ct".
    teacher_denoiser: ``D(x, sigma)`` of the teacher (CD only).
    solver: "heun" (CD config) or "euler" (CT config).
    distance, weighting, index_sampling: see above.
    sigma_min, sigma_max, rho: the grid (0.002, 80, 7).
    c: pseudo-Huber constant (default 0.00054 sqrt(dim)).
    p_mean, p_std: iCT's discrete log-normal (-1.1, 2.0).

  Returns:
    ``(loss, aux)``; aux: ``index``, ``t``, ``t2`` (B,), ``distance`` (batch mean, unweighted).
  """
  fn = "consistency_loss"
  _check_callable(fn, "online_fn", online_fn)
  _check_callable(fn, "target_fn", target_fn)
  _check_choice(fn, "mode", mode, CM_MODES)
  _check_choice(fn, "solver", solver, CM_SOLVERS)
  _check_choice(fn, "distance", distance, CM_DISTANCES)
  _check_choice(fn, "weighting", weighting, CM_WEIGHTINGS)
  _check_choice(fn, "index_sampling", index_sampling, CM_INDEX_SAMPLINGS)
  _check_batched(fn, "x", x)
  if mode == "cd" and teacher_denoiser is None:
    raise ValueError(f"{fn}: mode 'cd' needs teacher_denoiser")
  if mode == "ct" and teacher_denoiser is not None:
    raise ValueError(f"{fn}: mode 'ct' uses the data as the denoiser (dsm target); teacher_denoiser must be None")
  n_concrete = _concrete_scalar(num_scales)
  if n_concrete is not None and not (n_concrete == int(n_concrete) and n_concrete >= 2):
    raise ValueError(f"{fn}: num_scales must be an integer >= 2, got {num_scales!r}")
  if index_sampling == "lognormal" and not _is_int(num_scales):
    raise ValueError(f"{fn}: index_sampling 'lognormal' needs num_scales as a Python int, got {num_scales!r}")
  x = jnp.asarray(x)
  b = x.shape[0]
  k_index, k_noise = jax.random.split(key)
  if index_sampling == "uniform":
    index = jax.random.randint(k_index, (b,), 0, jnp.asarray(num_scales) - 1)
  else:
    probs = ict_lognormal_index_probs(
        karras_index_sigmas(num_scales, sigma_min, sigma_max, rho), p_mean=p_mean, p_std=p_std)
    index = jax.random.choice(k_index, num_scales - 1, (b,), p=probs)
  t = _karras_sigma(index, num_scales, sigma_min, sigma_max, rho, x.dtype)
  t2 = _karras_sigma(index + 1, num_scales, sigma_min, sigma_max, rho, x.dtype)
  z = jax.random.normal(k_noise, x.shape, x.dtype)
  x_t = x + _bc(t, x) * z
  f_t = online_fn(x_t, t)
  if mode == "cd":
    x_t2 = consistency_ode_step(x_t, t, t2, denoiser=teacher_denoiser, solver=solver)
  else:
    x_t2 = consistency_ode_step(x_t, t, t2, x0=x, solver=solver)
  f_t2 = jax.lax.stop_gradient(target_fn(x_t2, t2))
  dist = _cm_distance(f_t, f_t2, distance, c)
  if weighting == "uniform":
    weight = jnp.ones_like(t)
  elif weighting == "snrp1":
    weight = 1.0 / t**2 + 1.0
  elif weighting == "truncated_snr":
    weight = jnp.maximum(1.0 / t**2, 1.0)
  elif weighting == "snr":
    weight = 1.0 / t**2
  else:
    weight = 1.0 / (t - t2)
  loss = jnp.mean(weight * dist)
  return loss, _sg({"index": index, "t": t, "t2": t2, "distance": jnp.mean(dist)})


def ict_num_scales(k, total_steps, s0=10, s1=1280):
  """iCT's discretisation curriculum (Song & Dhariwal, ICLR 2024, arXiv 2310.14189)::

      N(k) = min(s0 * 2^floor(k / K'), s1) + 1,   K' = floor(K / (log2 floor(s1 / s0) + 1))

  With s0 = 10, s1 = 1280: N = 11, 21, 41, ..., 1281 in 8 equal stages (the exact integer
  ``log2 floor(s1/s0)`` is ``(s1 // s0).bit_length() - 1``). No official iCT code is public; the
  formula is the paper's as summarised in the notes.

  Args:
    k: training step (Python int, or a traced integer array).
    total_steps: K (Python int).
    s0, s1: initial and maximal number of steps (Python ints).

  Returns:
    A Python int for a Python int k, else an int array.
  """
  fn = "ict_num_scales"
  if not (_is_int(total_steps) and _is_int(s0) and _is_int(s1)) or not 0 < s0 <= s1:
    raise ValueError(f"{fn}: total_steps, s0, s1 must be integers with 0 < s0 <= s1, got "
                     f"{total_steps!r}, {s0!r}, {s1!r}")
  k_prime = total_steps // (s1 // s0).bit_length()
  if k_prime < 1:
    raise ValueError(f"{fn}: total_steps={total_steps} is too small for {(s1 // s0).bit_length()} stages")
  if _is_int(k):
    if k < 0:
      raise ValueError(f"{fn}: k must be >= 0, got {k}")
    return min(s0 * 2**(k // k_prime), s1) + 1
  stage = jnp.minimum(jnp.asarray(k) // k_prime, 30)
  return jnp.minimum(s0 * 2**stage, s1) + 1


def ict_stages(total_steps, s0=10, s1=1280):
  """The distinct values of `ict_num_scales` over steps 0 ... total_steps, ascending.

  Stage j = floor(k / K') runs from 0 to floor(K / K'), so the set is min(s0 2^j, s1) + 1 for those
  j: a closed form instead of evaluating every step (400k for iCT's CIFAR-10 run).
  """
  ict_num_scales(0, total_steps, s0, s1)  # argument checks
  k_prime = total_steps // (s1 // s0).bit_length()
  return sorted({min(s0 * 2**j, s1) + 1 for j in range(total_steps // k_prime + 1)})


def ict_lognormal_index_probs(sigmas, p_mean=-1.1, p_std=2.0):
  """iCT's discrete log-normal over grid intervals (Song & Dhariwal 2024, arXiv 2310.14189)::

      p(sigma_i) ∝ erf((log sigma_{i+1} - P_mean) / (sqrt(2) P_std)) - erf((log sigma_i - P_mean) / (sqrt(2) P_std))

  i.e. the probability that ln sigma ~ N(P_mean, P_std^2) falls between consecutive levels,
  renormalised over [sigma_min, sigma_max]. Entry k is the pair ``(sigmas[k], sigmas[k+1])``;
  the grid may be ascending (iCT's notation) or descending (`consistency_loss`'s jcm order).

  Args:
    sigmas: strictly monotone 1-D grid of N >= 2 positive levels.
    p_mean, p_std: -1.1 and 2.0 (iCT).

  Returns:
    Probabilities of shape (N - 1,), summing to 1.
  """
  fn = "ict_lognormal_index_probs"
  _check_sigmas(fn, sigmas)
  _check_positive(fn, "p_std", p_std)
  sigmas = jnp.asarray(sigmas)
  try:
    s = np.asarray(sigmas)
    d = np.diff(s)
    if not (np.all(s > 0) and (np.all(d > 0) or np.all(d < 0))):
      raise ValueError(f"{fn}: sigmas must be positive and strictly monotone")
  except (TypeError, jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
    pass
  cdf = jax.scipy.special.erf((jnp.log(sigmas) - p_mean) / (math.sqrt(2.0) * p_std))
  p = jnp.abs(cdf[1:] - cdf[:-1])
  return p / jnp.sum(p)


def _ct_scales_minus_one(k, total_steps, s0, s1):
  if _is_int(k):
    v = math.ceil(math.sqrt(k / total_steps * ((s1 + 1)**2 - s0**2) + s0**2) - 1)
    return max(v, 1)
  v = jnp.ceil(jnp.sqrt(jnp.asarray(k) / total_steps * ((s1 + 1)**2 - s0**2) + s0**2) - 1)
  return jnp.maximum(v.astype(jnp.int32), 1)


def _check_ct_args(fn, k, total_steps, s0, s1):
  if not (_is_int(total_steps) and total_steps > 0):
    raise ValueError(f"{fn}: total_steps must be a positive integer, got {total_steps!r}")
  if not 0 < s0 <= s1:
    raise ValueError(f"{fn}: need 0 < s0 <= s1, got s0={s0}, s1={s1}")
  if _is_int(k) and k < 0:
    raise ValueError(f"{fn}: k must be >= 0, got {k}")


def ct_num_scales(k, total_steps, s0=2, s1=150):
  """CT's progressive N(k) (Song et al. 2023, arXiv 2303.01469), as
  ``openai/consistency_models_cifar10`` ``jcm/losses.py::get_ema_scales_fn``
  (``target_ema_mode="adaptive"``, ``scale_mode="progressive"``)::

      N(k) = max(ceil(sqrt(k/K ((s1 + 1)^2 - s0^2) + s0^2) - 1), 1) + 1

  so N(0) = s0 and N(K) = s1 + 1 (s0 = 2, s1 = 150 in ``configs/cifar10_ve_ct_adaptive.py``).
  Computed in float64 for Python ints (jcm computes in float32 jnp); an int array otherwise.
  """
  _check_ct_args("ct_num_scales", k, total_steps, s0, s1)
  return _ct_scales_minus_one(k, total_steps, s0, s1) + 1


def ct_target_ema(k, total_steps, s0=2, s1=150, mu0=0.9):
  """CT's adaptive target EMA rate ``mu(k) = exp(s0 log mu0 / (N(k) - 1))`` with N(k) of
  `ct_num_scales` (jcm ``losses.py::get_ema_scales_fn``: ``c = -log(start_ema) * start_scales;
  target_ema = exp(-c / scales)`` before ``scales += 1``); mu(0) = mu0^(s0 / (s0 - 1)).
  """
  fn = "ct_target_ema"
  _check_ct_args(fn, k, total_steps, s0, s1)
  if not 0 < mu0 < 1:
    raise ValueError(f"{fn}: mu0 must lie in (0, 1), got {mu0}")
  scales = _ct_scales_minus_one(k, total_steps, s0, s1)
  if _is_int(k):
    return math.exp(s0 * math.log(mu0) / scales)
  return jnp.exp(s0 * math.log(mu0) / scales)


# ----------------------------------------------------------------------------------------------
# progressive and guidance distillation
# ----------------------------------------------------------------------------------------------
def _coeffs(process, t, x):
  return _bc(process.alpha(t), x), _bc(process.sigma(t), x)


def _default_schedule(process):
  lo, hi = process.t_min, process.t_max

  def schedule(u):
    return lo + u * (hi - lo)

  return schedule


def progressive_distillation_target(teacher_denoiser, z, t, t_mid, t_s, process, *, final_step=False):
  """The x-target of progressive distillation (Salimans & Ho, ICLR 2022, arXiv 2202.00512,
  Alg. 2), as ``google-research/diffusion_distillation`` ``diffusion_distillation/dpm.py::
  Model.training_losses``: two DDIM steps of the teacher t -> t_mid -> t_s,::

      x1 = D(z, t);        z_mid = alpha_mid x1 + sigma_mid (z - alpha_t x1) / sigma_t
      x2 = D(z_mid, t_mid); z_tgt = alpha_s x2 + sigma_s (z_mid - alpha_mid x2) / sigma_mid
      x_target = (z_tgt - (sigma_s / sigma_t) z) / (alpha_s - (sigma_s / sigma_t) alpha_t)
      x_target = x2 where final_step        # the code's i == 0 branch

  which is the x-prediction for which ONE student DDIM step from (z, t) to t_s lands exactly on
  z_tgt (the code's ``stdv_frac = exp((softplus(logsnr_t) - softplus(logsnr_s)) / 2)`` is
  sigma_s / sigma_t for VP; here it is computed from the process, so any process works). Teacher
  calls use the library's x0-prediction convention (``clip_x=False`` as the code).

  Args:
    teacher_denoiser: ``D(z, t) -> x0_hat`` (use `parametrization.to_denoiser` for eps/v nets).
    z: noisy input at t, shape (B, ...).
    t, t_mid, t_s: times with t > t_mid > t_s, scalars or (B,).
    process: a `diffjax.processes` process.
    final_step: bool scalar or (B,): where True the target is the teacher's x-hat at t_mid.

  Returns:
    x_target (stop-gradient), shape of z.
  """
  fn = "progressive_distillation_target"
  _check_callable(fn, "teacher_denoiser", teacher_denoiser)
  _check_batched(fn, "z", z)
  z = jnp.asarray(z)
  b = z.shape[0]
  for name, v in (("t", t), ("t_mid", t_mid), ("t_s", t_s), ("final_step", final_step)):
    _check_per_example(fn, name, v, b)
  t, t_mid, t_s = (utils.batch_times(v, z) for v in (t, t_mid, t_s))
  a_t, s_t = _coeffs(process, t, z)
  a_mid, s_mid = _coeffs(process, t_mid, z)
  a_s, s_s = _coeffs(process, t_s, z)
  x1 = teacher_denoiser(z, t)
  z_mid = a_mid * x1 + s_mid * (z - a_t * x1) / s_t
  x2 = teacher_denoiser(z_mid, t_mid)
  z_tgt = a_s * x2 + s_s * (z_mid - a_mid * x2) / s_mid
  frac = s_s / s_t
  x_target = (z_tgt - frac * z) / (a_s - frac * a_t)
  final = _bc(jnp.asarray(final_step, bool), z)
  return jax.lax.stop_gradient(jnp.where(final, x2, x_target))


def _denoising_losses(x_hat, x_target, z, t, process, weighting):
  """dpm.py's per-sample x/eps/v MSEs (meanflat) and the weighted loss."""
  alpha, sigma = _coeffs(process, t, z)
  eps_hat = (z - alpha * x_hat) / sigma
  eps_target = (z - alpha * x_target) / sigma
  x_mse = utils.mean_except_batch((x_hat - x_target)**2)
  eps_mse = utils.mean_except_batch((eps_hat - eps_target)**2)
  if weighting == "constant":
    per = x_mse
  elif weighting == "snr":
    per = eps_mse
  elif weighting == "snr_trunc":
    per = jnp.maximum(x_mse, eps_mse)
  else:
    v_hat = alpha * eps_hat - sigma * x_hat
    v_target = alpha * eps_target - sigma * x_target
    per = utils.mean_except_batch((v_hat - v_target)**2)
  return per, x_mse, eps_mse


def progressive_distillation_loss(student_denoiser, teacher_denoiser, x, key, *, process, num_steps,
                                  weighting="snr_trunc", time_schedule=None):
  """Progressive distillation loss (Salimans & Ho 2022, arXiv 2202.00512), as
  ``google-research/diffusion_distillation`` ``dpm.py::Model.training_losses`` with a teacher::

      i ~ randint(0, N);  u = (i + 1) / N;  t = T(u), t_mid = T(u - 1/(2N)), t_s = T(u - 1/N)
      z = alpha_t x + sigma_t eps
      x_target = progressive_distillation_target(teacher, z, t, t_mid, t_s, final_step=(i == 0))
      x_mse = meanflat((x_hat - x_target)^2);  eps_mse = meanflat((eps_hat - eps_target)^2)
      'constant': x_mse | 'snr': eps_mse (= SNR x_mse) | 'snr_trunc': max(x_mse, eps_mse) | 'v_mse'

  (``config/cifar_distill.py``: 'snr_trunc', x-prediction student, N halved 8192 -> 1.) The
  official code maps u through a cosine log-SNR schedule; here T(u) is ``time_schedule`` (default
  linear from ``process.t_min`` to ``process.t_max``; pass e.g. a log-SNR-uniform map for EDM).

  Args:
    student_denoiser: ``D_student(z, t) -> x0_hat`` (gradient flows).
    teacher_denoiser: ``D_teacher(z, t)`` (the target is stop-gradient).
    x: data batch, shape (B, ...).
    key: PRNG key, split into ``(k_index, k_noise)``.
    process: a `diffjax.processes` process.
    num_steps: N, the student's number of sampling steps (Python int >= 1).
    weighting: "constant", "snr", "snr_trunc" or "v_mse".
    time_schedule: ``u in [0, 1] -> t`` (increasing), or None.

  Returns:
    ``(loss, aux)``; aux: ``index``, ``t`` (B,), ``x_mse``, ``eps_mse`` (per-example (B,)).
  """
  fn = "progressive_distillation_loss"
  _check_callable(fn, "student_denoiser", student_denoiser)
  _check_callable(fn, "teacher_denoiser", teacher_denoiser)
  _check_choice(fn, "weighting", weighting, PD_WEIGHTINGS)
  _check_batched(fn, "x", x)
  if not _is_int(num_steps) or num_steps < 1:
    raise ValueError(f"{fn}: num_steps must be a positive integer, got {num_steps!r}")
  x = jnp.asarray(x)
  sched = _default_schedule(process) if time_schedule is None else time_schedule
  k_index, k_noise = jax.random.split(key)
  index = jax.random.randint(k_index, (x.shape[0],), 0, num_steps)
  u = (index + 1).astype(x.dtype) / num_steps
  t, t_mid, t_s = sched(u), sched(u - 0.5 / num_steps), sched(u - 1.0 / num_steps)
  eps = jax.random.normal(k_noise, x.shape, x.dtype)
  z = process.marginal(x, t, eps)
  x_target = progressive_distillation_target(teacher_denoiser, z, t, t_mid, t_s, process,
                                             final_step=index == 0)
  per, x_mse, eps_mse = _denoising_losses(student_denoiser(z, t), x_target, z, t, process, weighting)
  return jnp.mean(per), _sg({"index": index, "t": t, "x_mse": x_mse, "eps_mse": eps_mse})


def guided_teacher(denoiser_cond, denoiser_uncond, w):
  """Classifier-free-guided teacher in Imagen's convention (Meng et al., "On Distillation of
  Guided Diffusion Models", CVPR 2023, arXiv 2210.03142)::

      x_hat^w = (1 + w) D(x, t, cond) - w D(x, t)          # w = 0: conditional, unguided

  Ho & Salimans' scale s of `parametrization.classifier_free_guidance` is ``s = 1 + w``.

  Args:
    denoiser_cond: ``D(x, t, cond)``.
    denoiser_uncond: ``D(x, t)`` (e.g. the same net with the null label closed over).
    w: guidance strength, scalar or (B,).

  Returns:
    A denoiser ``D_w(x, t, cond)``.
  """
  _check_callable("guided_teacher", "denoiser_cond", denoiser_cond)
  _check_callable("guided_teacher", "denoiser_uncond", denoiser_uncond)

  def denoiser(x, t, cond):
    wb = _bc(jnp.asarray(w, jnp.asarray(x).dtype), x)
    return (1.0 + wb) * denoiser_cond(x, t, cond) - wb * denoiser_uncond(x, t)

  return denoiser


def guidance_distillation_loss(student, denoiser_cond, denoiser_uncond, x, cond, key, *, process,
                               w_min=0.0, w_max=4.0, weighting="snr_trunc", time_schedule=None):
  """Stage 1 of guided distillation (Meng et al., CVPR 2023, arXiv 2210.03142): one
  w-conditioned student matches the guided teacher's two evaluations::

      w ~ U[w_min, w_max], u ~ U[0, 1], t = T(u);  z = alpha_t x + sigma_t eps
      target = sg((1 + w) D(z, t, cond) - w D(z, t))          # `guided_teacher`
      loss = mean_b weighted_mse(student(z, t, w, cond), target)

  No official code is public. The paper's weighting omega(lambda_t) and w range per experiment
  were not verified: the weighting options are progressive distillation's (`dpm.py`; default
  "snr_trunc", Salimans & Ho's choice), and [0, 4] is the pixel-space range the notes report.
  Stage 2 is `progressive_distillation_loss` with a w-conditioned teacher and student (close
  over w).

  Args:
    student: ``student(z, t, w, cond) -> x0_hat``.
    denoiser_cond, denoiser_uncond: the teacher, ``D(z, t, cond)`` and ``D(z, t)``.
    x: data, shape (B, ...).
    cond: conditioning passed to the teacher and the student.
    key: PRNG key, split into ``(k_t, k_w, k_noise)``.
    process: a `diffjax.processes` process.
    w_min, w_max: guidance range, w_min <= w_max.
    weighting: see `progressive_distillation_loss`.
    time_schedule: ``u -> t`` or None (linear on [t_min, t_max]).

  Returns:
    ``(loss, aux)``; aux: ``t``, ``w`` (B,), ``x_mse`` (B,).
  """
  fn = "guidance_distillation_loss"
  _check_callable(fn, "student", student)
  _check_choice(fn, "weighting", weighting, PD_WEIGHTINGS)
  _check_batched(fn, "x", x)
  lo, hi = _concrete_scalar(w_min), _concrete_scalar(w_max)
  if lo is not None and hi is not None and not lo <= hi:
    raise ValueError(f"{fn}: need w_min <= w_max, got w_min={w_min}, w_max={w_max}")
  x = jnp.asarray(x)
  b = x.shape[0]
  sched = _default_schedule(process) if time_schedule is None else time_schedule
  k_t, k_w, k_noise = jax.random.split(key, 3)
  t = sched(jax.random.uniform(k_t, (b,), x.dtype))
  w = jax.random.uniform(k_w, (b,), x.dtype, w_min, w_max)
  eps = jax.random.normal(k_noise, x.shape, x.dtype)
  z = process.marginal(x, t, eps)
  target = jax.lax.stop_gradient(guided_teacher(denoiser_cond, denoiser_uncond, w)(z, t, cond))
  per, x_mse, _ = _denoising_losses(student(z, t, w, cond), target, z, t, process, weighting)
  return jnp.mean(per), _sg({"t": t, "w": w, "x_mse": x_mse})
