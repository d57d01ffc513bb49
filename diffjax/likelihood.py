"""Log-likelihood and bits/dim by the probability-flow ODE (Song et al. 2021, sec. 4.3 and app. D.2).

For the PF-ODE dx/dt = v(x, t), the instantaneous change of variables (Chen et al. 2018) gives

    log p_0(x_0) = log p_T(x_T) + int_0^T div_x v(x_t, t) dt,

integrated from data (t_eps) to the prior (T) together with x_t, as one diffrax solve. The
divergence is exact (a forward-mode Jacobian trace; cost grows with the dimension, for small D)
or the Hutchinson–Skilling estimate eps^T (dv/dx) eps with one probe eps per sample fixed for the
whole trajectory (score_sde's `likelihood.py`), computed with a forward-mode JVP.

**Bits per dimension done right.** Images stored as integers k in {0, ..., 255} are modelled in
diffjax as x = (k + u) / 128 - 1 in [-1, 1) with uniform dequantization u ~ U[0, 1) (Theis et al.
2016). The density of the dequantized integers y = k + u is p_y(y) = p_x(x) / 128^D, so

    bpd = -log p_y(y) / (D ln 2) = -log p_x(x) / (D ln 2) + log2(128) = ... + 7,

which, averaged over u, upper-bounds the discrete negative log-likelihood. score_sde adds the same
7 ("offset = log2(d inverse_scaler/dx) + 8", i.e. log2(1/2) + log2(256)) but evaluates the density
at the undequantized x = k/127.5 - 1 (score_sde issue #24): a continuous density at lattice
points is not a probability, so its "bpd" can be negative. `bits_per_dim` dequantizes by default.
"""
import math

import diffrax
import jax
import jax.numpy as jnp

from diffjax import utils

DIVERGENCES = ("exact", "hutchinson")
PROBES = ("rademacher", "gaussian")


def _divergence_exact(fn, x):
  """Per-example trace of d fn / dx for fn acting on (B, ...) batches (examples independent)."""
  shape = x.shape[1:]

  def single(xi):
    f = lambda y: fn(y.reshape((1,) + shape)).reshape(-1)
    jac = jax.jacfwd(f)(xi.reshape(-1))
    return jnp.trace(jac)

  return jax.vmap(single)(x)


def _divergence_hutchinson(fn, x, probe):
  _, jvp = jax.jvp(fn, (x,), (probe,))
  return utils.sum_except_batch(jvp * probe)


def log_likelihood(denoiser, x, *, process, t_eps=1e-5, T=None, divergence="exact", probe="rademacher",
                   key=None, rtol=1e-5, atol=1e-5, solver="tsit5", prior_logp=None, max_steps=4096):
  """log p_{t_eps}(x) under the model's probability-flow ODE, per example, in nats.

  Args:
    denoiser: `D(x, t)` with t of shape (B,).
    x: data batch (B, ...), the point at time t_eps.
    process: the noise process.
    t_eps: start time (score_sde: 1e-5).
    T: end time (default `process.t_max`).
    divergence: "exact" (Jacobian trace) or "hutchinson" (needs `key`).
    probe: "rademacher" or "gaussian" Hutchinson probes.
    key: PRNG key for the probes.
    rtol, atol: tolerances of the adaptive solve (score_sde: 1e-5).
    solver: "tsit5", "dopri5" or "dopri8".
    prior_logp: log-density of x_T, per example (default `process.prior_logp`).
    max_steps: step budget.

  Returns:
    dict with "logp" (B,), "prior_logp" (B,), "delta_logp" (B,) (the integrated divergence),
    "nfe" (number of solver steps).
  """
  if divergence not in DIVERGENCES:
    raise ValueError(f"unknown divergence {divergence!r}; valid: {DIVERGENCES}")
  if probe not in PROBES:
    raise ValueError(f"unknown probe {probe!r}; valid: {PROBES}")
  solvers = {"tsit5": diffrax.Tsit5, "dopri5": diffrax.Dopri5, "dopri8": diffrax.Dopri8}
  if solver not in solvers:
    raise ValueError(f"unknown solver {solver!r}; valid: {sorted(solvers)}")
  T = process.t_max if T is None else T
  prior_logp = process.prior_logp if prior_logp is None else prior_logp
  if divergence == "hutchinson":
    if key is None:
      raise ValueError("log_likelihood: key is required for divergence='hutchinson'")
    eps = (jax.random.rademacher(key, x.shape, x.dtype) if probe == "rademacher"
           else jax.random.normal(key, x.shape, x.dtype))

  def velocity(y, t):
    t_b = utils.batch_times(t, y)
    return process.pf_ode_velocity(y, t_b, denoiser(y, t_b))

  def vector_field(t, state, args):
    y, _ = state
    fn = lambda z: velocity(z, t)
    if divergence == "exact":
      div = _divergence_exact(fn, y)
    else:
      div = _divergence_hutchinson(fn, y, eps)
    return velocity(y, t).astype(y.dtype), div.astype(y.dtype)

  state0 = (x, jnp.zeros(x.shape[:1], x.dtype))
  sol = diffrax.diffeqsolve(diffrax.ODETerm(vector_field), solvers[solver](), t0=jnp.asarray(t_eps, x.dtype),
                            t1=jnp.asarray(T, x.dtype), dt0=None, y0=state0,
                            stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
                            saveat=diffrax.SaveAt(t1=True), max_steps=max_steps)
  x_T, delta = sol.ys[0][-1], sol.ys[1][-1]
  prior = prior_logp(x_T)
  return {"logp": prior + delta, "prior_logp": prior, "delta_logp": delta, "nfe": sol.stats["num_steps"]}


def dequantize(images_uint8, key, num_levels=256):
  """Integers k in {0..num_levels-1} -> x = (k + u) / (num_levels / 2) - 1, u ~ U[0, 1)."""
  u = jax.random.uniform(key, images_uint8.shape)
  return (images_uint8.astype(u.dtype) + u) / (num_levels / 2) - 1.0


def bits_per_dim(denoiser, images_uint8, *, process, key, num_levels=256, **kwargs):
  """Bits/dim of integer images under the model, with uniform dequantization (module docstring).

  Args:
    denoiser: `D(x, t)` of a model trained on x = k / (num_levels / 2) - 1 scaled data.
    images_uint8: (B, H, W, C) integers in [0, num_levels).
    process: the noise process.
    key: PRNG key (dequantization noise, and Hutchinson probes if used).
    num_levels: quantization levels (256 for 8-bit images).
    **kwargs: forwarded to `log_likelihood`.

  Returns:
    (B,) bits per dimension, -log p_x(x) / (D ln 2) + log2(num_levels / 2).
  """
  k_deq, k_probe = jax.random.split(key)
  x = dequantize(images_uint8, k_deq, num_levels)
  if kwargs.get("divergence") == "hutchinson":
    kwargs.setdefault("key", k_probe)
  logp = log_likelihood(denoiser, x, process=process, **kwargs)["logp"]
  d = math.prod(images_uint8.shape[1:])
  return -logp / (d * math.log(2.0)) + math.log2(num_levels / 2)
