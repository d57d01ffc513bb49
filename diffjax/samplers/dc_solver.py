"""DC-Solver (Zhao et al. 2024, "DC-Solver: Improving Predictor-Corrector Diffusion Sampler via
Dynamic Compensation"): UniPC whose newest model output is replaced, before each step, by the
Lagrange interpolant (in time t) of the last three outputs at t' = t_{-1} + rho (t_0 - t_{-1}).
rho = 1 is plain UniPC. The ratios are searched per step on a few datapoints against a fine
reference trajectory (`search_dc_ratios`).

Differences from the official code, documented: the reference trajectory is a fine DDIM run
evaluated at the sampler's own grid times (the official search compares with the nearest
reference time above t), and the stored history keeps the uncompensated outputs.

Cascade polynomial regression (CPR, paper sec. 4.3; the official scheduler's
`cascade_polynomial_regression`) predicts the ratios for unseen step counts N and guidance
scales w from ratios searched at a few (w, N): with x = k / N (k = 1..N the step), w~ = w / 12 and
N~ = N / 50,

  rho(w, N, k) = sum_i P_i(w~; N~) x^i,  P_i = sum_j Q_ij(N~) w~^(2-j),  Q_ij = sum_l c_ijl N~^(2-l),

a cubic in x whose coefficients are quadratics in w~ whose coefficients are quadratics in N~: 36
coefficients c (shape (4, 3, 3), the official `.npy` layout flattened). Steps k < 3 keep ratio 1.
The model is linear in c, so `fit_cascade_polynomial` solves it by least squares.
"""
import jax
import jax.numpy as jnp
import numpy as np
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


CPR_SHAPE = (4, 3, 3)  # (powers of x, of w~, of N~) as in the official coefficient files


def cpr_features(guidance_scale, nfe, step):
  """The 36 monomials x^i w~^(2-j) N~^(2-l) (ordered as c.reshape(4, 3, 3)) of one (w, N, k)."""
  x, w, n = step / nfe, guidance_scale / 12.0, nfe / 50.0
  xi = x ** np.arange(CPR_SHAPE[0])
  wj = w ** (2 - np.arange(CPR_SHAPE[1]))
  nl = n ** (2 - np.arange(CPR_SHAPE[2]))
  return (xi[:, None, None] * wj[None, :, None] * nl[None, None, :]).reshape(-1)


def fit_cascade_polynomial(searched):
  """Least-squares CPR coefficients from searched ratios.

  Args:
    searched: {(guidance_scale, nfe): ratios of length nfe} (e.g. from `search_dc_ratios`); steps
      k >= 3 enter the fit. The 36 coefficients need at least 3 guidance scales and 3 step counts
      (and enough steps) for a unique fit.

  Returns:
    float64 coefficients, shape (36,), for `predict_dc_ratios`.
  """
  rows, targets = [], []
  for key, ratios in searched.items():
    if not (isinstance(key, tuple) and len(key) == 2):
      raise ValueError(f"fit_cascade_polynomial: keys must be (guidance_scale, nfe) pairs, got {key!r}")
    w, nfe = key
    ratios = np.asarray(ratios, np.float64)
    if ratios.shape != (nfe,):
      raise ValueError(f"fit_cascade_polynomial: ratios for {key} must have shape ({nfe},), got {ratios.shape}")
    for k in range(3, nfe + 1):
      rows.append(cpr_features(w, nfe, k))
      targets.append(ratios[k - 1])
  a = np.asarray(rows).reshape(len(rows), -1)
  scales = {w for w, _ in searched}
  counts = {n for _, n in searched}
  determined = len(scales) >= 3 and len(counts) >= 3 and np.linalg.matrix_rank(a) == int(np.prod(CPR_SHAPE))
  if not determined:
    raise ValueError("fit_cascade_polynomial: the searched settings do not determine the 36 coefficients; "
                     f"need >= 3 guidance scales and >= 3 step counts with enough steps, got scales "
                     f"{sorted(scales)} and step counts {sorted(counts)}")
  coeffs, *_ = np.linalg.lstsq(a, np.asarray(targets), rcond=None)
  return coeffs


def predict_dc_ratios(coeffs, nfe, guidance_scale=1.0):
  """DC ratios (float64 array, shape (nfe,)) for `nfe` steps at `guidance_scale` from CPR
  coefficients (1 for the first two steps); pass them as `dc_solver(..., dc_ratios=...)`."""
  coeffs = np.asarray(coeffs, np.float64).reshape(-1)
  if coeffs.shape != (int(np.prod(CPR_SHAPE)),):
    raise ValueError(f"predict_dc_ratios: coeffs must have {int(np.prod(CPR_SHAPE))} entries, got {coeffs.shape}")
  if nfe < 1:
    raise ValueError(f"predict_dc_ratios: nfe must be >= 1, got {nfe}")
  ratios = [1.0 if k < 3 else float(cpr_features(guidance_scale, nfe, k) @ coeffs) for k in range(1, nfe + 1)]
  return np.asarray(ratios, np.float64)
