"""What a network predicts, and how to turn it into a denoiser.

The common currency of diffjax's samplers is the *denoiser* `D(x, t) ~ E[x0 | x_t = x]`. A
network may instead predict the noise eps (Ho et al. 2020), v = alpha eps - sigma x0 (Salimans &
Ho 2022), the score grad log p_t (Song et al. 2021) or the flow velocity
u = alpha' x0 + sigma' eps (Lipman et al. 2022; Liu et al. 2022). With x = alpha x0 + sigma eps
every one of these is an affine function of (x, x0_hat), so conversions are exact:

  eps   = (x - alpha x0) / sigma                 x0 = (x - sigma eps) / alpha
  score = (alpha x0 - x) / sigma^2               x0 = (x + sigma^2 score) / alpha
  v     = alpha eps - sigma x0                   x0 = (alpha x - sigma v) / (alpha^2 + sigma^2)
  u     = alpha' x0 + sigma' eps                 x0 = (sigma' x - sigma u) / (alpha sigma' - sigma alpha')

`edm_preconditioning` gives Karras et al. (2022) Table 1's c_skip, c_out, c_in, c_noise and
`edm_denoiser` wraps a raw network F into D(x; sigma) = c_skip x + c_out F(c_in x; c_noise) for any
process (through the scaled variable x / alpha, whose noise level is sigma / alpha).

Guidance wrappers act on denoisers: classifier-free guidance (Ho & Salimans 2021) and classifier
guidance (Dhariwal & Nichol 2021), both rewritten in denoiser space.
"""

import jax
import jax.numpy as jnp

from diffjax import utils

PREDICTIONS = ("eps", "x0", "v", "score", "flow")


def _check_prediction(prediction, argname="prediction"):
  if prediction not in PREDICTIONS:
    raise ValueError(f"unknown {argname} {prediction!r}; valid predictions: {PREDICTIONS}")


def _coefficients(process, t, x):
  alpha = utils.expand_to(process.alpha(t), x)
  sigma = utils.expand_to(process.sigma(t), x)
  return alpha, sigma


def to_x0(output, x, t, process, prediction):
  """Converts a network output of kind `prediction` at (x, t) to the x0 estimate."""
  _check_prediction(prediction)
  if prediction == "x0":
    return output
  alpha, sigma = _coefficients(process, t, x)
  if prediction == "eps":
    return (x - sigma * output) / alpha
  if prediction == "score":
    return (x + sigma**2 * output) / alpha
  if prediction == "v":
    return (alpha * x - sigma * output) / (alpha**2 + sigma**2)
  dalpha = utils.expand_to(process.dalpha_dt(t), x)
  dsigma = utils.expand_to(process.dsigma_dt(t), x)
  return (dsigma * x - sigma * output) / (alpha * dsigma - sigma * dalpha)


def from_x0(x0, x, t, process, prediction):
  """Converts an x0 estimate at (x, t) to the quantity named by `prediction`."""
  _check_prediction(prediction)
  if prediction == "x0":
    return x0
  alpha, sigma = _coefficients(process, t, x)
  eps = (x - alpha * x0) / sigma
  if prediction == "eps":
    return eps
  if prediction == "score":
    return -eps / sigma
  if prediction == "v":
    return alpha * eps - sigma * x0
  dalpha = utils.expand_to(process.dalpha_dt(t), x)
  dsigma = utils.expand_to(process.dsigma_dt(t), x)
  return dalpha * x0 + dsigma * eps


def convert(output, x, t, process, *, source, target):
  """Converts between any two predictions, through x0."""
  _check_prediction(source, "source")
  _check_prediction(target, "target")
  if source == target:
    return output
  return from_x0(to_x0(output, x, t, process, source), x, t, process, target)


def to_denoiser(model_fn, process, prediction="eps"):
  """Wraps `model_fn(x, t, *args)`, which predicts `prediction`, as a denoiser `D(x, t, *args)`.

  Args:
    model_fn: callable returning the network prediction at (x, t); extra positional/keyword
      arguments (e.g. a class label) are passed through.
    process: the noise process that defines alpha(t), sigma(t).
    prediction: one of "eps", "x0", "v", "score", "flow".

  Returns:
    A callable `denoiser(x, t, *args, **kwargs) -> x0_hat`.
  """
  _check_prediction(prediction)

  def denoiser(x, t, *args, **kwargs):
    return to_x0(model_fn(x, t, *args, **kwargs), x, t, process, prediction)

  return denoiser


# --------------------------------------------------------------------------------------------
# EDM preconditioning (Karras et al. 2022, Table 1; NVlabs/edm training/networks.py)
# --------------------------------------------------------------------------------------------
PRECONDITIONINGS = ("edm", "vp", "ve")


def _vp_sigma_inv(sigma, beta_d=19.9, beta_min=0.1):
  """EDM's VPPrecond.sigma_inv: the VP time whose sigma / alpha equals `sigma`."""
  return (jnp.sqrt(beta_min**2 + 2 * beta_d * jnp.log1p(sigma**2)) - beta_min) / beta_d


def edm_preconditioning(sigma, kind="edm", *, sigma_data=0.5, beta_d=19.9, beta_min=0.1, M=1000):
  """c_skip, c_out, c_in, c_noise of Karras et al. (2022) Table 1 at noise level(s) `sigma`.

  `sigma` is the noise level of the scaled variable x / alpha (for EDM and VE processes, sigma(t)).

  Args:
    sigma: noise level(s), any shape.
    kind: "edm" (EDMPrecond), "vp" (VPPrecond) or "ve" (VEPrecond).
    sigma_data: data standard deviation, EDM only (0.5 in the paper).
    beta_d, beta_min, M: VPPrecond's schedule and number of training steps for c_noise.

  Returns:
    (c_skip, c_out, c_in, c_noise), each shaped like `sigma`.
  """
  sigma = jnp.asarray(sigma)
  if kind == "edm":
    c_skip = sigma_data**2 / (sigma**2 + sigma_data**2)
    c_out = sigma * sigma_data / jnp.sqrt(sigma**2 + sigma_data**2)
    c_in = 1.0 / jnp.sqrt(sigma_data**2 + sigma**2)
    c_noise = 0.25 * jnp.log(sigma)
  elif kind == "vp":
    c_skip = jnp.ones_like(sigma)
    c_out = -sigma
    c_in = 1.0 / jnp.sqrt(sigma**2 + 1)
    c_noise = (M - 1) * _vp_sigma_inv(sigma, beta_d, beta_min)
  elif kind == "ve":
    c_skip = jnp.ones_like(sigma)
    c_out = sigma
    c_in = jnp.ones_like(sigma)
    c_noise = jnp.log(0.5 * sigma)
  else:
    raise ValueError(f"unknown preconditioning {kind!r}; valid: {PRECONDITIONINGS}")
  return c_skip, c_out, c_in, c_noise


def edm_denoiser(network_fn, process, kind="edm", **precond_kwargs):
  """D(x, t) = alpha * [c_skip y + c_out F(c_in y; c_noise)] with y = x / alpha (EDM eq. 7).

  Args:
    network_fn: raw network `F(x_in, c_noise, *args)`; c_noise has shape (B,).
    process: the noise process; its `edm_sigma(t) = sigma / alpha` is the preconditioner's sigma.
    kind: "edm", "vp" or "ve" (see `edm_preconditioning`).
    **precond_kwargs: forwarded to `edm_preconditioning` (e.g. sigma_data).

  Returns:
    A denoiser `D(x, t, *args) -> x0_hat` (x0_hat in data space).
  """
  if kind not in PRECONDITIONINGS:
    raise ValueError(f"unknown preconditioning {kind!r}; valid: {PRECONDITIONINGS}")

  def denoiser(x, t, *args, **kwargs):
    t = utils.batch_times(t, x)
    alpha = utils.expand_to(process.alpha(t), x)
    sigma = process.edm_sigma(t)
    c_skip, c_out, c_in, c_noise = edm_preconditioning(sigma, kind, **precond_kwargs)
    y = x / alpha
    f = network_fn(utils.expand_to(c_in, x) * y, c_noise, *args, **kwargs)
    return utils.expand_to(c_skip, x) * y + utils.expand_to(c_out, x) * f

  return denoiser


# --------------------------------------------------------------------------------------------
# Guidance, as denoiser wrappers
# --------------------------------------------------------------------------------------------
def classifier_free_guidance(cond_denoiser, scale, null_cond):
  """Classifier-free guidance (Ho & Salimans 2021, eq. 6) in denoiser space.

  D_w = D(x, t, null) + w (D(x, t, c) - D(x, t, null)); the same combination as on eps, since
  both are affine in the prediction at fixed (x, t). The conditional and unconditional outputs
  come from one batched call on [x; x] with labels [c; null]; at scale 1 only the conditional
  call is made.

  Args:
    cond_denoiser: `D(x, t, cond)`.
    scale: guidance weight w (1 = no guidance, 0 = unconditional).
    null_cond: the label meaning "no condition" (e.g. `num_classes`).

  Returns:
    A denoiser `D_w(x, t, cond)`.
  """
  if isinstance(scale, (int, float)) and scale == 1.0:
    return cond_denoiser

  def denoiser(x, t, cond):
    t = utils.batch_times(t, x)
    null = jnp.full_like(cond, null_cond)
    out = cond_denoiser(jnp.concatenate([x, x]), jnp.concatenate([t, t]), jnp.concatenate([cond, null]))
    d_cond, d_uncond = jnp.split(out, 2)
    return d_uncond + scale * (d_cond - d_uncond)

  return denoiser


def classifier_guidance(denoiser, classifier_logp, scale, process):
  """Classifier guidance (Dhariwal & Nichol 2021; Song et al. 2021 eq. 14) in denoiser space.

  score_w = score + w grad_x log p(c | x_t); since x0 = (x + sigma^2 score) / alpha, the
  guided denoiser is D + w sigma^2 / alpha * grad_x log p(c | x_t).

  Args:
    denoiser: `D(x, t, *args)`.
    classifier_logp: `log p(cond | x, t)` per example, shape (B,).
    scale: guidance weight w.
    process: the noise process.

  Returns:
    A denoiser `D_w(x, t, cond, *args)`.
  """

  def guided(x, t, cond, *args, **kwargs):
    t = utils.batch_times(t, x)
    grad = jax.grad(lambda y: jnp.sum(classifier_logp(y, t, cond)))(x)
    alpha, sigma = _coefficients(process, t, x)
    return denoiser(x, t, *args, **kwargs) + scale * sigma**2 / alpha * grad

  return guided
