"""Time-Shift sampler (Li et al. 2024, "Alleviating Exposure Bias in Diffusion Models through
Sampling with Shifted Time Steps", ICLR; official TS-DPM `sampler/pnm_solver.py`, DDIM path).

Exposure bias makes the state at a nominal time noisier or cleaner than the network assumes. After
the first step, for each sample the unbiased variance of its (flattened) current state is compared
with the marginal variance 1 - abar_k of the discrete times k in a window of `window` steps around
the nominal next time j; the closest k becomes that sample's DDIM target when j > `cutoff`
(otherwise j). The next network call still uses the nominal time j. With window = 1 (or cutoff at
or above every time) the sampler is plain DDIM (eta = 0).

The reference's DPM-Solver path (variance of the last noise prediction, the shifted time reused as
the next model time) is not implemented yet.
"""
import jax
import jax.numpy as jnp

from diffjax import processes as processes_lib
from diffjax import utils
from diffjax.samplers import base


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
