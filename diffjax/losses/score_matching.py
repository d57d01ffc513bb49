"""Denoising score matching and its relatives: eps/v/x0 regression, the EDM loss, flow matching.

Every loss is a pure function `loss(net, x0, key, *, cond=None, ...) -> (scalar, aux)` where
`net(x_t, t, [cond])` is the network's prediction. `get_loss_fn(config)` builds one from a config.

**One weighting convention.** Denoising score matching (Vincent 2011; Song et al. 2021 eq. 7)

    L = E_t E_{x0, eps} lambda(t) || s_theta(x_t, t) - grad log q(x_t | x0) ||^2,
    grad log q(x_t | x0) = -eps / sigma(t),

is written in diffjax as a weighted eps-regression, whatever the network predicts:

    L = E_t w(t) || eps_hat - eps ||^2,   w(t) = lambda(t) / sigma(t)^2,

with eps_hat obtained from the network output by the exact conversions of
`diffjax.parametrization`. The `weighting` names:

  "sigma2"      lambda = sigma^2, w = 1: score_sde's default and DDPM's L_simple (Ho et al. 2020).
  "likelihood"  lambda = g^2, w = g^2 / sigma^2: the bound on the negative log-likelihood
                (Song, Durkan, Murray & Ermon 2021, "Maximum likelihood training", Thm. 1).
  "uniform"     lambda = 1, w = 1 / sigma^2: plain denoising score matching.
  "x0"          w = 1 / SNR = sigma^2 / alpha^2: x0-regression ||x0_hat - x0||^2, since
                x0_hat - x0 = -(sigma / alpha)(eps_hat - eps).
  "v"           w = (alpha^2 + sigma^2)^2 / alpha^2: v-regression ||v_hat - v||^2, since
                v_hat - v = (alpha + sigma^2 / alpha)(eps_hat - eps); for VP, 1 + 1/SNR.
  "min_snr"     w = min(SNR, gamma) / SNR: Min-SNR-gamma (Hang et al. 2023), i.e. the x0 loss
                weighted by min(SNR, gamma), gamma = `min_snr_gamma`.

So `prediction="eps", weighting="sigma2"` is the DDPM loss and `prediction="v", weighting="v"`
is the v-prediction loss of Salimans & Ho (2022).

`reduce="mean"` averages the squared error over data dimensions (score_sde `reduce_mean=True`),
`"sum"` sums it; the batch is always averaged.
"""
import functools
import inspect

import jax
import jax.numpy as jnp

from diffjax import parametrization as prm
from diffjax import utils

WEIGHTINGS = ("sigma2", "likelihood", "uniform", "x0", "v", "min_snr")
REDUCTIONS = ("mean", "sum")
TIME_SAMPLINGS = ("uniform", "logit_normal")


def _check(name, value, valid):
  if value not in valid:
    raise ValueError(f"unknown {name} {value!r}; valid: {valid}")


def _reduce(sq, reduce):
  return utils.mean_except_batch(sq) if reduce == "mean" else utils.sum_except_batch(sq)


def _call(net, x, t, cond):
  return net(x, t) if cond is None else net(x, t, cond)


def eps_weight(process, t, weighting, *, min_snr_gamma=5.0):
  """w(t) multiplying ||eps_hat - eps||^2 for a named weighting (see module docstring)."""
  _check("weighting", weighting, WEIGHTINGS)
  sigma2 = process.sigma(t)**2
  if weighting == "sigma2":
    return jnp.ones_like(sigma2)
  if weighting == "likelihood":
    return process.g2(t) / sigma2
  if weighting == "uniform":
    return 1.0 / sigma2
  alpha2 = process.alpha(t)**2
  if weighting == "x0":
    return sigma2 / alpha2
  if weighting == "v":
    return (alpha2 + sigma2)**2 / alpha2
  snr = alpha2 / sigma2
  return jnp.minimum(snr, min_snr_gamma) / snr


def sample_times(key, batch_size, process, *, time_sampling="uniform", t_eps=None,
                 logit_mean=0.0, logit_std=1.0, dtype=None):
  """Training times: U(t_eps, T) (score_sde) or logit-normal on (0, 1) (Esser et al. 2024, SD3)."""
  _check("time_sampling", time_sampling, TIME_SAMPLINGS)
  dtype = dtype or jnp.zeros(()).dtype
  t_eps = process.t_min if t_eps is None else t_eps
  if time_sampling == "uniform":
    return jax.random.uniform(key, (batch_size,), dtype, t_eps, process.t_max)
  u = jax.nn.sigmoid(logit_mean + logit_std * jax.random.normal(key, (batch_size,), dtype))
  return t_eps + u * (process.t_max - t_eps)


def score_matching_loss(net, x0, key, *, process, prediction="eps", weighting="sigma2",
                        reduce="mean", cond=None, time_sampling="uniform", t_eps=None,
                        min_snr_gamma=5.0):
  """Weighted denoising score matching, for a network of any prediction type.

  Args:
    net: `net(x_t, t[, cond])` returning a prediction of kind `prediction`.
    x0: clean data batch (B, ...).
    key: PRNG key (time and noise).
    process: the noise process.
    prediction: "eps", "x0", "v", "score" or "flow".
    weighting: see the module docstring.
    reduce: "mean" or "sum" over data dimensions.
    cond: optional conditioning passed to `net`.
    time_sampling: "uniform" on [t_eps, T] or "logit_normal".
    t_eps: smallest training time (default `process.t_min`).
    min_snr_gamma: gamma of the "min_snr" weighting.

  Returns:
    (loss, aux) with aux = {"t": times, "per_example": per-example losses}.
  """
  prm._check_prediction(prediction)
  _check("reduce", reduce, REDUCTIONS)
  key_t, key_n = jax.random.split(key)
  t = sample_times(key_t, x0.shape[0], process, time_sampling=time_sampling, t_eps=t_eps, dtype=x0.dtype)
  noise = process.sample_noise(key_n, x0.shape, x0.dtype)
  x_t = process.marginal(x0, t, noise)
  eps_hat = prm.convert(_call(net, x_t, t, cond), x_t, t, process, source=prediction, target="eps")
  w = eps_weight(process, t, weighting, min_snr_gamma=min_snr_gamma)
  per_example = w * _reduce((eps_hat - noise)**2, reduce)
  return jnp.mean(per_example), {"t": t, "per_example": per_example}


def eps_loss(net, x0, key, *, process, **kwargs):
  """DDPM's L_simple ||eps_hat - eps||^2 (Ho et al. 2020, eq. 14)."""
  return score_matching_loss(net, x0, key, process=process, prediction="eps", weighting="sigma2", **kwargs)


def v_loss(net, x0, key, *, process, **kwargs):
  """v-prediction loss ||v_hat - v||^2, v = alpha eps - sigma x0 (Salimans & Ho 2022, app. D)."""
  return score_matching_loss(net, x0, key, process=process, prediction="v", weighting="v", **kwargs)


def edm_loss(denoiser, x0, key, *, p_mean=-1.2, p_std=1.2, sigma_data=0.5, reduce="mean", cond=None,
             process=None):
  """EDM training loss (Karras et al. 2022, eq. 8 and Table 1; NVlabs/edm `EDMLoss`).

  ln sigma ~ N(P_mean, P_std^2), weight lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2,
  loss = lambda(sigma) || D(x0 + sigma n; sigma) - x0 ||^2. EDM sums over elements and divides
  by the batch size; `reduce="sum"` reproduces that, `"mean"` also divides by the dimension.

  The noise n comes from `process.sample_noise`: Gaussian for `EDM` (the default), the
  heavy-tailed PFGM++ perturbation at r = sigma sqrt(D) for `PFGMpp` (Xu et al. 2023, the
  official `EDMLoss` pfgmv2 branch: same sigma law, weight and target).

  Args:
    denoiser: `D(x, sigma[, cond])` of the EDM process (alpha = 1, sigma = t), typically
      `parametrization.edm_denoiser(network, EDM())`.
    x0: clean data batch (B, ...).
    key: PRNG key.
    p_mean, p_std: log-normal noise-level distribution.
    sigma_data: data standard deviation.
    reduce: "mean" or "sum" over data dimensions.
    cond: optional conditioning passed to the denoiser.
    process: an `EDM`-like process (alpha = 1, sigma = t) drawing the noise; None is `EDM()`.

  Returns:
    (loss, aux) with aux = {"sigma": noise levels, "per_example": per-example losses}.
  """
  _check("reduce", reduce, REDUCTIONS)
  key_s, key_n = jax.random.split(key)
  sigma = jnp.exp(p_mean + p_std * jax.random.normal(key_s, (x0.shape[0],), x0.dtype))
  if process is None:
    noise = jax.random.normal(key_n, x0.shape, x0.dtype)
  else:
    noise = process.sample_noise(key_n, x0.shape, x0.dtype)
  x = x0 + utils.expand_to(sigma, x0) * noise
  weight = (sigma**2 + sigma_data**2) / (sigma * sigma_data)**2
  per_example = weight * _reduce((_call(denoiser, x, sigma, cond) - x0)**2, reduce)
  return jnp.mean(per_example), {"sigma": sigma, "per_example": per_example}


def flow_matching_loss(net, x0, key, *, process, reduce="mean", cond=None, time_sampling="uniform",
                       t_eps=None, logit_mean=0.0, logit_std=1.0):
  """Conditional flow matching (Lipman et al. 2022, eq. 9; Liu et al. 2022 rectified flow).

  Regresses the interpolant velocity u = alpha'(t) x0 + sigma'(t) eps, which for
  `RectifiedFlow` is eps - x0, with t uniform or logit-normal (Esser et al. 2024).

  Args:
    net: `net(x_t, t[, cond])` predicting the velocity.
    x0: clean data batch (B, ...).
    key: PRNG key.
    process: the interpolant (any process; `RectifiedFlow` for rectified flow).
    reduce: "mean" or "sum" over data dimensions.
    cond: optional conditioning.
    time_sampling: "uniform" or "logit_normal".
    t_eps: smallest training time (default `process.t_min`).
    logit_mean, logit_std: parameters of the logit-normal time distribution.

  Returns:
    (loss, aux) with aux = {"t": times, "per_example": per-example losses}.
  """
  _check("reduce", reduce, REDUCTIONS)
  key_t, key_n = jax.random.split(key)
  t = sample_times(key_t, x0.shape[0], process, time_sampling=time_sampling, t_eps=t_eps,
                   logit_mean=logit_mean, logit_std=logit_std, dtype=x0.dtype)
  noise = process.sample_noise(key_n, x0.shape, x0.dtype)
  x_t = process.marginal(x0, t, noise)
  target = (utils.expand_to(process.dalpha_dt(t), x0) * x0 + utils.expand_to(process.dsigma_dt(t), x0) * noise)
  per_example = _reduce((_call(net, x_t, t, cond) - target)**2, reduce)
  return jnp.mean(per_example), {"t": t, "per_example": per_example}


LOSSES = ("score_matching", "eps", "v", "edm", "flow_matching")


def get_loss_fn(name, **options):
  """Returns the loss `name` with keyword options bound; clear errors for unknown names/options."""
  table = {"score_matching": score_matching_loss, "eps": eps_loss, "v": v_loss, "edm": edm_loss,
           "flow_matching": flow_matching_loss}
  if name not in table:
    raise ValueError(f"unknown loss {name!r}; valid losses: {LOSSES}")
  fn = table[name]
  params = inspect.signature(fn).parameters
  if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
    valid = sorted(n for n, p in params.items() if p.kind == p.KEYWORD_ONLY)
    unknown = sorted(set(options) - set(valid))
    if unknown:
      raise ValueError(f"unknown option(s) {unknown} for loss {name!r}; valid options: {valid}")
  return functools.partial(fn, **options)
