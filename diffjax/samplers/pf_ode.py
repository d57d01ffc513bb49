"""Adaptive probability-flow ODE sampling with diffrax (Song et al. 2021, sec. 4.3).

score_sde integrates the PF-ODE with scipy's RK45 on the host; here the whole adaptive solve is
one compiled diffrax `diffeqsolve` (a `while_loop`), so it jits, vmaps and runs on any device.
"""
import diffrax
import jax.numpy as jnp

from diffjax import utils

SOLVERS = {"tsit5": diffrax.Tsit5, "dopri5": diffrax.Dopri5, "dopri8": diffrax.Dopri8,
           "heun": diffrax.Heun, "bosh3": diffrax.Bosh3}


def pf_ode(denoiser, x, t0, t1=None, *, process, rtol=1e-5, atol=1e-5, solver="tsit5",
           max_steps=4096, return_nfe=False, key=None):
  """Solves dx/dt = process.pf_ode_velocity(x, t, D(x, t)) from t0 to t1 adaptively.

  Args:
    denoiser: `D(x, t)` with t of shape (B,).
    x: state at t0.
    t0: start time, or a 1-D array of times (the common sampler signature; its first and last
      entries are used).
    t1: end time (sigma(t1) > 0 unless alpha and sigma stay finite there).
    process: the noise process.
    rtol, atol: tolerances of diffrax's PID step-size controller (score_sde: 1e-5 each).
    solver: "tsit5", "dopri5", "dopri8", "heun" or "bosh3".
    max_steps: step budget (an error is raised if exhausted).
    return_nfe: also return the number of accepted + rejected steps times the stages.
    key: unused (the solve is deterministic).

  Returns:
    The state at t1, or (state, num_steps) with `return_nfe`.
  """
  del key
  if solver not in SOLVERS:
    raise ValueError(f"unknown solver {solver!r}; valid: {sorted(SOLVERS)}")
  if t1 is None:
    ts = jnp.asarray(t0)
    if ts.ndim != 1 or ts.shape[0] < 2:
      raise ValueError("pf_ode: give t0 and t1, or a 1-D array of at least 2 times")
    t0, t1 = ts[0], ts[-1]

  def vector_field(t, y, args):
    t_b = utils.batch_times(t, y)
    return process.pf_ode_velocity(y, t_b, denoiser(y, t_b))

  sol = diffrax.diffeqsolve(
      diffrax.ODETerm(vector_field), SOLVERS[solver](), t0=jnp.asarray(t0, x.dtype), t1=jnp.asarray(t1, x.dtype),
      dt0=None, y0=x, stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
      saveat=diffrax.SaveAt(t1=True), max_steps=max_steps)
  out = sol.ys[-1]
  if return_nfe:
    return out, sol.stats["num_steps"]
  return out
