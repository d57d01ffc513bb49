"""Gradients through sampling: AdjointDPM and backprop with checkpointing.

AdjointDPM (Pan et al. 2023, "AdjointDPM: Adjoint Sensitivity Method for Gradient
Backpropagation of Diffusion Probabilistic Models", eq. 7-9) writes the probability-flow ODE in
the exponential-integrator variables y = x / alpha, rho = sigma / alpha (DDIM's coordinates,
Song et al. 2021; DPM-Solver's change of variables), where it becomes

    dy / drho = eps(alpha(t) y, t),      t = t(rho),  eps = (x - alpha x0_hat) / sigma,

and obtains gradients of a loss on the samples with respect to the initial noise, the model
parameters and the conditioning by solving the adjoint ODE backwards in time, with memory
independent of the number of steps. Here the ODE is integrated in s = log rho (so uniform steps
are uniform in log-SNR) with diffrax:

  adjoint="backsolve"   the continuous adjoint (`diffrax.BacksolveAdjoint`): O(1) memory.
  adjoint="checkpoint"  backprop through the discretised solver with recursive checkpointing
                        (`diffrax.RecursiveCheckpointAdjoint`): the exact gradient of the
                        discrete sampler, O(sqrt(steps)) memory.

The two agree as the solve becomes exact (tests: 1e-4 relative).
"""
import diffrax
import equinox as eqx
import jax.numpy as jnp

from diffjax import utils

SOLVERS = {"euler": diffrax.Euler, "heun": diffrax.Heun, "midpoint": diffrax.Midpoint,
           "tsit5": diffrax.Tsit5, "dopri5": diffrax.Dopri5}
ADJOINTS = ("backsolve", "checkpoint")


def _check(name, value, valid):
  if value not in valid:
    raise ValueError(f"unknown {name} {value!r}; valid: {sorted(valid)}")


def sample_with_adjoint(denoiser, params, x, t_start, t_end, *, process, num_steps=None,
                        solver="heun", adjoint="backsolve", rtol=None, atol=None, max_steps=4096):
  """Probability-flow ODE sampling from t_start to t_end, differentiable by an adjoint.

  Args:
    denoiser: `denoiser(params, x, t) -> x0_hat` with t of shape (B,); `params` is any pytree
      (model parameters, conditioning, ...) and receives gradients.
    params: the pytree passed to `denoiser`.
    x: the initial state at t_start (e.g. prior noise), shape (B, ...); receives gradients.
    t_start, t_end: times of the process, t_start > t_end, with sigma(t_end) > 0.
    process: the noise process.
    num_steps: number of uniform steps in log(sigma / alpha); None with rtol/atol for an
      adaptive solve (PID controller).
    solver: "euler" (= DDIM), "heun", "midpoint", "tsit5" or "dopri5".
    adjoint: "backsolve" (continuous adjoint, AdjointDPM) or "checkpoint" (discrete backprop).
    rtol, atol: tolerances of the adaptive solve (both required when num_steps is None).
    max_steps: step budget of the solve.

  Returns:
    The state at t_end.
  """
  _check("solver", solver, SOLVERS)
  _check("adjoint", adjoint, ADJOINTS)
  if num_steps is None and (rtol is None or atol is None):
    raise ValueError("sample_with_adjoint: give num_steps, or rtol and atol for an adaptive solve")
  s0 = jnp.log(process.edm_sigma(jnp.asarray(t_start, x.dtype)))
  s1 = jnp.log(process.edm_sigma(jnp.asarray(t_end, x.dtype)))
  y0 = x / process.alpha(jnp.asarray(t_start, x.dtype))

  def vector_field(s, y, params):
    rho = jnp.exp(s)
    t = process.t_from_edm_sigma(rho)
    alpha, sigma = process.alpha(t), process.sigma(t)
    x_t = alpha * y
    x0_hat = denoiser(params, x_t, utils.batch_times(t, x_t))
    return rho * (x_t - alpha * x0_hat) / sigma  # dy/ds = rho * eps

  if num_steps is None:
    controller, dt0 = diffrax.PIDController(rtol=rtol, atol=atol), None
  else:
    controller, dt0 = diffrax.ConstantStepSize(), (s1 - s0) / num_steps
  adj = (diffrax.BacksolveAdjoint(solver=SOLVERS[solver]()) if adjoint == "backsolve"
         else diffrax.RecursiveCheckpointAdjoint())
  sol = diffrax.diffeqsolve(diffrax.ODETerm(vector_field), SOLVERS[solver](), t0=s0, t1=s1, dt0=dt0, y0=y0,
                            args=params, stepsize_controller=controller, adjoint=adj,
                            saveat=diffrax.SaveAt(t1=True), max_steps=max_steps)
  return sol.ys[-1] * process.alpha(jnp.asarray(t_end, x.dtype))


def filter_value_and_grad(loss_fn):
  """`eqx.filter_value_and_grad`, re-exported: gradients of a loss on samples w.r.t. arrays only."""
  return eqx.filter_value_and_grad(loss_fn)
