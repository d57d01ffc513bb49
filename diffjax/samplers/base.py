"""Shared plumbing for samplers: argument checks and the one-scan step loop.

Every sampler has the signature `f(denoiser, x, ts, *, process, key=None, **options) -> x`, where
`denoiser(x, t)` returns the x0 estimate for a batch x of shape (B, ...) and per-example times t
of shape (B,), and `ts` is a 1-D array of times from noise (ts[0]) to data (ts[-1]).
"""
import jax
import jax.numpy as jnp


def check_times(ts):
  ts = jnp.asarray(ts)
  if ts.ndim != 1 or ts.shape[0] < 2:
    raise ValueError(f"ts must be a 1-D array of at least 2 times (noise to data), got shape {ts.shape}")
  return ts


def check_key(key, sampler, reason):
  if key is None:
    raise ValueError(f"{sampler}: key is required {reason}")


def scan_steps(step_fn, x, ts, key=None):
  """Runs `x = step_fn(x, t_cur, t_next, key_i)` over consecutive pairs of `ts` in one lax.scan.

  Step keys are `fold_in(key, i)` so a step's noise does not depend on the number of steps run
  before it in another call.
  """
  ts = check_times(ts)
  steps = jnp.arange(ts.shape[0] - 1)

  def body(x, inputs):
    i, t_cur, t_next = inputs
    step_key = None if key is None else jax.random.fold_in(key, i)
    return step_fn(x, t_cur, t_next, step_key), None

  x, _ = jax.lax.scan(body, x, (steps, ts[:-1].astype(x.dtype), ts[1:].astype(x.dtype)))
  return x
