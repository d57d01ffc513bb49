"""DC-Solver (Zhao et al. 2024, "DC-Solver: Improving Predictor-Corrector Diffusion Sampler via
Dynamic Compensation"): UniPC whose newest model output is replaced, before each step, by the
Lagrange interpolant (in time t) of the last three outputs at t' = t_{-1} + rho (t_0 - t_{-1}).
rho = 1 is plain UniPC. The ratios are searched per step on a few datapoints against a fine
reference trajectory (`search_dc_ratios`).

Differences from the official code, documented: the reference trajectory is a fine DDIM run
evaluated at the sampler's own grid times (the official search compares with the nearest
reference time above t), and the stored history keeps the uncompensated outputs. The cascade
polynomial regression that predicts ratios for unseen step counts is not implemented.
"""
import jax
import jax.numpy as jnp
import optax

from diffjax.samplers.ddim import ddim
from diffjax.samplers.unipc import unipc


def dc_solver(denoiser, x, ts, *, process, dc_ratios, order=2, variant="bh2", predict_x0=True,
              lower_order_final=True, key=None):
  """UniPC with dynamic compensation ratios `dc_ratios` (one per step of `ts`)."""
  return unipc(denoiser, x, ts, process=process, order=order, variant=variant, predict_x0=predict_x0,
               lower_order_final=lower_order_final, dc_ratios=dc_ratios, key=key)


def search_dc_ratios(denoiser, x, ts, *, process, order=2, variant="bh2", reference_substeps=20,
                     num_iters=40, learning_rate=0.1):
  """Per-step search of the compensation ratios (DC-Solver `search_dc`, AdamW lr 0.1, 40 iters).

  Step k's ratio minimises the mean squared distance, after k + 1 steps, to a DDIM trajectory with
  `reference_substeps` substeps per interval of `ts` started from the same `x`, with the earlier
  ratios fixed. The first two ratios stay 1 (no compensation before three outputs exist).

  Returns:
    (ratios, losses): the ratios, shape (steps,), and each step's final loss.
  """
  n = ts.shape[0] - 1
  fine = jnp.concatenate([jnp.linspace(ts[i], ts[i + 1], reference_substeps + 1)[:-1] for i in range(n)]
                         + [ts[-1:]])
  ref = [x]
  for i in range(n):
    ref.append(ddim(denoiser, ref[-1], fine[i * reference_substeps:(i + 1) * reference_substeps + 1],
                    process=process))
  ratios = jnp.ones((n,), x.dtype)
  losses = []
  opt = optax.adamw(learning_rate)
  for k in range(n):
    if k < 2:
      losses.append(float(jnp.mean((_run(denoiser, x, ts, process, ratios, k, order, variant) - ref[k + 1])**2)))
      continue

    def loss_fn(rho, ratios=ratios, k=k):
      r = ratios.at[k].set(rho)
      return jnp.mean((_run(denoiser, x, ts, process, r, k, order, variant) - ref[k + 1])**2)

    grad_fn = jax.jit(jax.value_and_grad(loss_fn))
    rho, state = jnp.asarray(1.0, x.dtype), opt.init(jnp.asarray(1.0, x.dtype))
    for _ in range(num_iters):
      _, g = grad_fn(rho)
      updates, state = opt.update(g, state, rho)
      rho = optax.apply_updates(rho, updates)
    ratios = ratios.at[k].set(rho)
    losses.append(float(loss_fn(rho)))
  return ratios, losses


def _run(denoiser, x, ts, process, ratios, k, order, variant):
  """The DC-Solver state after k + 1 steps (ratios beyond k unused)."""
  return unipc(denoiser, x, ts[:k + 2], process=process, order=order, variant=variant, lower_order_final=False,
               dc_ratios=ratios[:k + 1])
