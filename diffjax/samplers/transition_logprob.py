"""Gaussian transition log-probabilities of the stochastic DDIM/DDPM sampler (for D3PO and SPO).

One DDIM step from t to t' < t (Song et al. 2021, eq. 12; `diffjax.samplers.ddim`) for any
process x_t = alpha_t x0 + sigma_t eps is the Gaussian

    p(x_t' | x_t) = N(mean, c^2 I),  mean = alpha_t' x0_hat + d eps_hat,  eps_hat = (x_t - alpha_t x0_hat) / sigma_t,

with ``(c, d) = ddim_coefficients(process, t, t', eta)``: c is eta times the DDPM posterior std
(eq. 16), d = sqrt(sigma_t'^2 - c^2). With eta = 1 on a VP process this is the DDPM posterior
q(x_t' | x_t, x0 = x0_hat) (Ho et al. 2020, eq. 6-7).

The log-probability follows the official ``ddim_with_logprob.py`` of D3PO (yk7333/d3po) and SPO
(RockeyCoss/SPO): the Gaussian log-density **averaged** over all non-batch dims, constants
included (``-log std - log sqrt(2 pi)``, which cancel in policy/reference ratios because both
share std), evaluated at the sample with its gradient stopped (the code's ``prev_sample.detach()``).

The log-density needs c > 0: eta > 0 and no step into sigma = 0 (e.g. end a VPDiscrete grid at
``t_min = 1/N``, as Stable Diffusion's DDIM ends at alphas_cumprod[0] < 1). Violations raise
ValueError when the times are concrete.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np

from diffjax import utils
from diffjax.samplers import base
from diffjax.samplers.ddim import ddim_coefficients


def _expand_std(std, x):
  std = jnp.asarray(std)
  if std.ndim <= 1:
    return utils.expand_to(std, x)
  return std


def _check_eta(fn, eta):
  try:
    e = float(eta)
  except (TypeError, jax.errors.ConcretizationTypeError):
    return
  if not e > 0:
    raise ValueError(f"{fn}: eta must be > 0 (a stochastic step has a Gaussian log-probability; eta = 0 is "
                     f"deterministic), got {eta}")


def _check_positive_std(fn, std):
  try:
    c = np.asarray(std)
  except (TypeError, jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
    return
  if not np.all(c > 0):
    raise ValueError(f"{fn}: the transition std is 0 for some step (a step into sigma = 0, or a step with "
                     "t_next >= t): its log-probability is undefined; end ts above 0 (e.g. process.t_min) and "
                     "keep ts strictly decreasing")


def ddim_transition(denoiser, x_t, t, t_next, *, process, eta):
  """(mean, std) of the Gaussian DDIM step x_t -> x_{t_next} (Song et al. 2021, eq. 12 and 16).

  The same coefficients as `diffjax.samplers.ddim` (`ddim_coefficients`), for any process.

  Args:
    denoiser: ``D(x, t)`` returning the x0 estimate for times of shape (B,).
    x_t: state, shape (B, ...).
    t, t_next: current and next time, scalars or shape (B,) (per-sample times, as D3PO/SPO train
      on transitions of different steps in one batch).
    process: the noise process.
    eta: 0 ... 1 (1 = DDPM ancestral step).

  Returns:
    ``(mean, std)`` with mean of shape (B, ...) and std of shape (B,).
  """
  t = jnp.asarray(t, x_t.dtype)
  x0 = denoiser(x_t, utils.batch_times(t, x_t))
  mean, std, _ = _transition_from_x0(x_t, x0, t, t_next, process, eta)
  return mean, std


def _transition_from_x0(x_t, x0, t, t_next, process, eta):
  """(mean, std (B,), dmean/dx0 (B,)) of the DDIM step, the arithmetic of ddim.py's step."""
  t = jnp.asarray(t, x_t.dtype)
  t_next = jnp.asarray(t_next, x_t.dtype)
  a, s, a_next = process.alpha(t), process.sigma(t), process.alpha(t_next)
  c, d = ddim_coefficients(process, t, t_next, eta)
  e = lambda v: utils.expand_to(v, x_t)
  eps = (x_t - e(a) * x0) / e(s)
  mean = e(a_next) * x0 + e(d) * eps
  batch = x_t.shape[:1]
  return mean, jnp.broadcast_to(c, batch), jnp.broadcast_to(a_next - d * a / s, batch)


def gaussian_logprob(x, mean, std):
  """log N(x; mean, std^2 I) per element, **averaged** over the non-batch dims, shape (B,).

  As D3PO's/SPO's ``ddim_with_logprob.py``::

      log_prob = -(x - mean)^2 / (2 std^2) - log(std) - log(sqrt(2 pi));  log_prob.mean(dim=1..)

  so it includes the constants ``-log std - log sqrt(2 pi)`` (they cancel in ratios of two
  densities with the same std). Multiply by the number of dims for the joint log-density.

  Args:
    x, mean: shape (B, ...).
    std: scalar, (B,) or the shape of x.
  """
  x = jnp.asarray(x)
  std = _expand_std(std, x)
  lp = -((x - mean)**2) / (2.0 * std**2) - jnp.log(std) - 0.5 * math.log(2.0 * math.pi)
  lp = jnp.broadcast_to(lp, x.shape)
  return utils.mean_except_batch(lp)


def _step(denoiser, x_t, t, t_next, process, eta, key, prev_sample):
  mean, std = ddim_transition(denoiser, x_t, t, t_next, process=process, eta=eta)
  if prev_sample is None:
    noise = jax.random.normal(key, x_t.shape, x_t.dtype)
    prev_sample = mean + _expand_std(std, x_t) * noise
  logprob = gaussian_logprob(jax.lax.stop_gradient(prev_sample), mean, std)
  return prev_sample, logprob, mean, std


def ddim_step_with_logprob(denoiser, x_t, t, t_next, *, process, eta, key=None, prev_sample=None):
  """One stochastic DDIM step and its log-probability (D3PO/SPO ``ddim_step_with_logprob``).

  Either samples ``x_next = mean + std * z`` with ``z = normal(key, x_t.shape)`` (the draw of one
  `diffjax.samplers.ddim` step given that step's key) or, with ``prev_sample``, evaluates a
  stored transition: D3PO and SPO re-evaluate the stored ``x_{t-1}`` under policy and reference.
  The log-probability uses `gaussian_logprob` at ``stop_gradient(x_next)`` (the official
  ``prev_sample.detach()``), so its gradient flows through the mean only.

  Args:
    denoiser, x_t, t, t_next, process: as `ddim_transition`.
    eta: > 0.
    key: PRNG key to sample (exactly one of key and prev_sample).
    prev_sample: a given x_next of shape x_t.shape.

  Returns:
    ``(x_next, logprob)``, shapes (B, ...) and (B,).
  """
  fn = "ddim_step_with_logprob"
  _check_eta(fn, eta)
  if (key is None) == (prev_sample is None):
    raise ValueError(f"{fn}: pass exactly one of key (to sample x_next) and prev_sample (to evaluate a given "
                     "x_next)")
  if prev_sample is not None and jnp.shape(prev_sample) != jnp.shape(x_t):
    raise ValueError(f"{fn}: prev_sample shape {jnp.shape(prev_sample)} does not match x_t shape {jnp.shape(x_t)}")
  _check_positive_std(fn, ddim_coefficients(process, jnp.asarray(t), jnp.asarray(t_next), eta)[0])
  x_next, logprob, _, _ = _step(denoiser, x_t, t, t_next, process, eta, key, prev_sample)
  return x_next, logprob


def _check_trajectory_args(fn, ts, process, eta, key):
  _check_eta(fn, eta)
  base.check_key(key, fn, "(the sampler is stochastic)")
  ts = base.check_times(ts)
  _check_positive_std(fn, ddim_coefficients(process, ts[:-1], ts[1:], eta)[0])
  return ts


def sample_trajectory(denoiser, x, ts, *, process, eta, key):
  """Stochastic DDIM sampling that records every state and per-step log-probability.

  One ``lax.scan`` over consecutive pairs of ``ts`` with step keys ``fold_in(key, i)`` and the
  same arithmetic as `diffjax.samplers.ddim`, so ``xs[-1]`` equals ``ddim(denoiser, x, ts,
  process=process, eta=eta, key=key)`` (the D3PO/SPO sampling pass with ``ddim_with_logprob``).

  Args:
    denoiser: ``D(x, t)``.
    x: state at ts[0], shape (B, ...).
    ts: times from noise to data, strictly decreasing, ending above sigma = 0.
    process: the noise process.
    eta: > 0.
    key: PRNG key.

  Returns:
    dict with ``xs`` (S + 1, B, ...) (xs[0] = x), ``logprobs`` (S, B) (`gaussian_logprob` of
    step i, mean over dims), ``ts`` (S + 1,) in x's dtype.
  """
  ts = _check_trajectory_args("sample_trajectory", ts, process, eta, key)
  ts = ts.astype(x.dtype)

  def body(x_cur, inputs):
    i, t_cur, t_next = inputs
    x_next, logprob, _, _ = _step(denoiser, x_cur, t_cur, t_next, process, eta, jax.random.fold_in(key, i), None)
    return x_next, (x_next, logprob)

  _, (xs, logprobs) = jax.lax.scan(body, x, (jnp.arange(ts.shape[0] - 1), ts[:-1], ts[1:]))
  return {"xs": jnp.concatenate([x[None], xs], axis=0), "logprobs": logprobs, "ts": ts}


def path_kl(denoiser_policy, denoiser_ref, x, ts, *, process, eta, key):
  """KL(p_policy(x_{0:T}) || p_ref(x_{0:T})) of the stochastic DDIM sampler, per sample, shape (B,).

  Both path measures start from the same x_T and have Gaussian steps with the same std c_i, so
  (chain rule of the KL)

      KL = E_{policy paths} sum_i ||mean_policy(x_i) - mean_ref(x_i)||^2 / (2 c_i^2),

  the squared norm **summed** over dims. Since both means are affine in the x0 estimate at the same
  x_i, ``mean_policy - mean_ref = (alpha_t' - d alpha_t / sigma_t) (x0_policy - x0_ref)``, which is
  how it is computed (no cancellation). This returns the one-path Monte Carlo estimate of every
  sample of the batch along a policy trajectory (the same draws as `sample_trajectory` with the
  policy denoiser); the batch mean estimates the KL, which upper-bounds the KL of the final
  marginals. It is exactly 0 when both denoisers agree. Requires eta > 0 and ts ending above
  sigma = 0 (a deterministic step has no density).

  Args:
    denoiser_policy, denoiser_ref: ``D(x, t)``.
    x: state at ts[0], shape (B, ...).
    ts: times from noise to data.
    process: the noise process.
    eta: > 0 (1 = DDPM).
    key: PRNG key.
  """
  ts = _check_trajectory_args("path_kl", ts, process, eta, key)
  ts = ts.astype(x.dtype)

  def body(carry, inputs):
    x_cur, kl = carry
    i, t_cur, t_next = inputs
    t_b = utils.batch_times(t_cur, x_cur)
    x0_p, x0_r = denoiser_policy(x_cur, t_b), denoiser_ref(x_cur, t_b)
    mean_p, std, coef = _transition_from_x0(x_cur, x0_p, t_cur, t_next, process, eta)
    noise = jax.random.normal(jax.random.fold_in(key, i), x_cur.shape, x_cur.dtype)
    x_next = mean_p + utils.expand_to(std, x_cur) * noise
    # mean_p - mean_r = (alpha_t' - d alpha_t / sigma_t) (x0_p - x0_r): the means are affine in x0
    # at the same x_t, so the difference is computed without cancellation (0 when x0_p == x0_r).
    kl = kl + (coef / std)**2 * utils.sum_except_batch((x0_p - x0_r)**2) / 2.0
    return (x_next, kl), None

  (_, kl), _ = jax.lax.scan(body, (x, jnp.zeros(x.shape[:1], x.dtype)),
                            (jnp.arange(ts.shape[0] - 1), ts[:-1], ts[1:]))
  return kl
