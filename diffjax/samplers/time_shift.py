"""Time-Shift sampler (Li et al. 2024, "Alleviating Exposure Bias in Diffusion Models through
Sampling with Shifted Time Steps", ICLR; official TS-DPM `sampler/pnm_solver.py`, DDIM path).

Exposure bias makes the state at a nominal time noisier or cleaner than the network assumes. After
the first step, for each sample the unbiased variance of its (flattened) current state is compared
with the marginal variance 1 - abar_k of the discrete times k in a window of `window` steps around
the nominal next time j; the closest k becomes that sample's DDIM target when j > `cutoff`
(otherwise j). The next network call still uses the nominal time j. With window = 1 (or cutoff at
or above every time) the sampler is plain DDIM (eta = 0).

DPM-Solver path (`time_shift_dpm_solver`, the fork's `dpm_solver_utils.py`): multistep DPM-Solver
whose next time is shifted per sample from step `order` on. The variance matched to 1 - abar_k is
that of the last *model output* (the noise prediction with the default algorithm), the nominal
label is j = trunc((t_next - 1/N) N), and the shifted time k/N + 1/N is both the update's target
and the next model-evaluation time. `lower_order_final` applies below 15 steps, as in the fork.
The fork fails when the window passes the last label; here the window is clipped instead.
"""
import jax
import jax.numpy as jnp

from diffjax import processes as processes_lib
from diffjax import utils
from diffjax.samplers import base
from diffjax.samplers.dpm_solver import _multistep, model_output_fn, multistep_orders


def time_shift_ddim(denoiser, x, ts, *, process, window=5, cutoff=550, key=None):
  """DDIM(eta = 0) with per-sample shifted target times, on a `VPDiscrete` process.

  Args:
    denoiser: `D(x, t)`.
    x: state at ts[0], shape (B, ...).
    ts: continuous times of the VPDiscrete table, t = (n + 1) / N, from noise to data.
    process: a `processes.VPDiscrete`.
    window: window size w; candidates are j - w//2 ... j + w//2 (clipped to the table).
    cutoff: shift only where the nominal next label j exceeds this (TS-DPM's cut_off_value).
    key: unused.

  Returns:
    The state at ts[-1].
  """
  del key
  if not isinstance(process, processes_lib.VPDiscrete):
    raise ValueError(f"time_shift_ddim needs a VPDiscrete process, got {type(process).__name__}")
  if not isinstance(window, int) or window < 1:
    raise ValueError(f"time_shift_ddim: window must be a positive integer, got {window!r}")
  ts = base.check_times(ts).astype(x.dtype)
  n_train = process.num_steps
  abar = process.alphas_cumprod.astype(x.dtype)
  half = window // 2
  offsets = jnp.arange(-half, half + 1)

  def label(t):
    return jnp.round(t * n_train - 1).astype(jnp.int32)

  def step(x, t_cur, t_next, i):
    t_b = utils.batch_times(t_cur, x)
    x0 = denoiser(x, t_b)
    a, s = process.alpha(t_cur), process.sigma(t_cur)
    eps = (x - a * x0) / s
    j = label(t_next)
    flat = x.reshape(x.shape[0], -1)
    var = jnp.var(flat, axis=1, ddof=1)
    cand = jnp.clip(j + offsets, 0, n_train - 1)
    k = cand[jnp.argmin((var[:, None] - (1.0 - abar[cand])[None]) ** 2, axis=1)]
    target = jnp.where((i > 0) & (j > cutoff), k, j)
    ab = abar[target]
    return utils.expand_to(jnp.sqrt(ab), x) * x0 + utils.expand_to(jnp.sqrt(1.0 - ab), x) * eps

  idx = jnp.arange(ts.shape[0] - 1)

  def body(x, inputs):
    i, t_cur, t_next = inputs
    return step(x, t_cur, t_next, i), None

  x, _ = jax.lax.scan(body, x, (idx, ts[:-1], ts[1:]))
  return x


def _window_candidates(j, window, n_train):
  half = window // 2
  return jnp.clip(j + jnp.arange(-half, half + 1), 0, n_train - 1)


def time_shift_dpm_solver(denoiser, x, ts, *, process, order=2, algorithm="dpmsolver", solver_type="dpmsolver",
                          window=30, cutoff=300, lower_order_final=True, key=None):
  """Multistep DPM-Solver(++) with per-sample shifted times (TS-DPM), on a `VPDiscrete` process.

  Args:
    denoiser: `D(x, t)`.
    x: state at ts[0], shape (B, ...).
    ts: continuous times t = (n + 1) / N from noise to data (e.g. `timesteps.time_uniform`).
    process: a `processes.VPDiscrete`.
    order: multistep order 1-3 (the fork's examples use 2).
    algorithm: "dpmsolver" (noise prediction, the fork's default) or "dpmsolver++".
    solver_type: "dpmsolver" or "taylor".
    window: window size w; candidates j - w//2 ... j + w//2 (the fork's example: 30 at 5 steps).
    cutoff: shift only where the nominal next label exceeds this (the fork's example: 300).
    lower_order_final: lower the last steps' orders (below 15 steps).
    key: unused.

  Returns:
    The state at the last (possibly shifted) time.
  """
  del key
  if not isinstance(process, processes_lib.VPDiscrete):
    raise ValueError(f"time_shift_dpm_solver needs a VPDiscrete process, got {type(process).__name__}")
  if not isinstance(window, int) or window < 1:
    raise ValueError(f"time_shift_dpm_solver: window must be a positive integer, got {window!r}")
  if algorithm not in ("dpmsolver", "dpmsolver++"):
    raise ValueError(f"time_shift_dpm_solver: algorithm must be 'dpmsolver' or 'dpmsolver++', got {algorithm!r}")
  if order not in (1, 2, 3):
    raise ValueError(f"time_shift_dpm_solver: order must be 1, 2 or 3, got {order!r}")
  if solver_type not in ("dpmsolver", "taylor"):
    raise ValueError(f"time_shift_dpm_solver: solver_type must be 'dpmsolver' or 'taylor', got {solver_type!r}")
  ts = base.check_times(ts).astype(x.dtype)
  n_train = process.num_steps
  noise_var = (1.0 - process.alphas_cumprod).astype(x.dtype)
  data_pred = algorithm == "dpmsolver++"
  model = model_output_fn(denoiser, process, data_pred)

  def shift(step, t_next, m_prev):
    # trunc as the fork's .int(), guarded against (t - 1/N) N landing just below an integer
    j = jnp.floor((t_next[0] - 1.0 / n_train) * n_train + 1e-6).astype(jnp.int32)
    var = jnp.var(m_prev.reshape(m_prev.shape[0], -1), axis=1, ddof=1)
    cand = _window_candidates(j, window, n_train)
    k = cand[jnp.argmin((var[:, None] - noise_var[cand][None]) ** 2, axis=1)]
    label = jnp.where(j > cutoff, k, j)
    return label.astype(x.dtype) / n_train + 1.0 / n_train

  orders = multistep_orders(ts.shape[0] - 1, order, lower_order_final, threshold=15)
  return _multistep(model, process, process.log_snr, x, ts, order, data_pred, False, solver_type == "taylor",
                    orders, False, None, shift_fn=shift)
