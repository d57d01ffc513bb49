"""DPM-Solver-v3 (Zheng et al. 2023, "DPM-Solver-v3: Improved Diffusion ODE Solver with Empirical
Model Statistics"): a multistep exponential integrator whose parameterization is fitted to the
model, following the official `dpm_solver_v3.py` (thu-ml/DPM-Solver-v3) and its EMS script.

With lambda = log(alpha/sigma), the model's noise prediction eps and per-dimension empirical model
statistics (EMS) l, s, b on a logSNR grid (paper eq. 9-11):

  N = sigma eps - l x,    f = N / alpha,    f' ~ s f + b  (least squares along the ODE),
  g_i = e^{S_s - S_i} f_i - e^{S_s} (B_i - B_s)                    (relative to the point s),

and cumulative integrals over the grid (trapezoid rule): L = int l, S = int s,
I = int e^{L+S}, B = int e^{-S} b, C = int e^{L+S} B. The order-(n+1) update from s to t is

  x_t = (alpha_t/alpha_s) e^{L_s-L_t} x_s - alpha_t e^{-L_t-S_s} (I_t - I_s) g_s
        - alpha_t e^{-L_t} (C_t - C_s - B_s (I_t - I_s))
        - sum_{k=1..n} alpha_t e^{L_s-L_t} E_k g^(k),
  E_k = int_{lambda_s}^{lambda_t} e^{(L+S)(lambda) - (L+S)(lambda_s)} (lambda - lambda_s)^k / k! dlambda,

with g^(k) from the Vandermonde system on the cached points (or, "pseudo" order, from Neville's
divided differences). The corrector applies the same formula from t_{i-1} to t_i using the new
model value at t_i, and the cached noise output is then moved to the corrected point without a new
evaluation: eps <- (N_old + l_t x_new) / sigma_t. NFE = steps.

`l = 1, s = b = 0` (`degenerated_ems`) gives the DPM-Solver++ parameterization.

Reference behaviours kept: sampling times are snapped to the EMS grid (nearest lambda index); the
corrector order is the previous predictor order (+1 with `c_pseudo`) and is applied only if > 1;
`lower_order_final` always applies (no step-count threshold); the last state is not corrected.
`half=True` applies the corrector only while t_{i-1} > `half_threshold`, as the official code does
(its README and paper say the opposite, t <= 0.5; see the samplers notes).
"""
import math
import os

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from diffjax import utils
from diffjax.samplers import base


@flax.struct.dataclass
class EMS:
  """Empirical model statistics on a logSNR-uniform grid (index 0 = noise end, lambda_T).

  Attributes:
    lambdas: (N + 1,) grid of lambda = log(alpha/sigma), increasing.
    l, s, b: (N + 1, *event_shape) per-dimension statistics.
  """
  lambdas: jax.Array
  l: jax.Array
  s: jax.Array
  b: jax.Array

  @property
  def num_steps(self):
    return self.lambdas.shape[0] - 1


def ems_grid(process, t_start, t_end, num_steps):
  """The reference EMS grid: `num_steps + 1` lambdas uniform from lambda(t_start) to lambda(t_end)."""
  if num_steps < 1:
    raise ValueError(f"ems_grid: num_steps must be >= 1, got {num_steps}")
  lam_t, lam_0 = process.log_snr(jnp.asarray(t_start)), process.log_snr(jnp.asarray(t_end))
  if not lam_0 > lam_t:
    raise ValueError(f"ems_grid: t_start={t_start} must be noisier than t_end={t_end}")
  return jnp.linspace(lam_t, lam_0, num_steps + 1)


def degenerated_ems(process, t_start, t_end, event_shape, num_steps=1200, dtype=None):
  """l = 1, s = b = 0: DPM-Solver-v3 then uses the DPM-Solver++ parameterization."""
  lambdas = ems_grid(process, t_start, t_end, num_steps)
  dtype = dtype or lambdas.dtype
  shape = (num_steps + 1,) + tuple(event_shape)
  return EMS(lambdas.astype(dtype), jnp.ones(shape, dtype), jnp.zeros(shape, dtype), jnp.zeros(shape, dtype))


# --- saving and loading --------------------------------------------------------------------------

def save_ems(path, ems):
  """Writes `ems` to one `.npz` file (keys lambdas, l, s, b) atomically."""
  utils.save_npz_atomic(path, lambdas=np.asarray(ems.lambdas), l=np.asarray(ems.l), s=np.asarray(ems.s),
                        b=np.asarray(ems.b))


def load_ems(path):
  """Reads an EMS file written by `save_ems`."""
  with np.load(path) as f:
    missing = {"lambdas", "l", "s", "b"} - set(f.files)
    if missing:
      raise ValueError(f"load_ems: {path} lacks the arrays {sorted(missing)}")
    return EMS(*(jnp.asarray(f[k]) for k in ("lambdas", "l", "s", "b")))


def load_official_ems(statistics_dir, process, t_start, t_end, channels_last=True):
  """Reads the official `l.npz` and `sb.npz` (shape (N + 1, C, H, W)) of thu-ml/DPM-Solver-v3.

  The grid is rebuilt from `process`, `t_start` (the reference's T) and `t_end` (its eps), which
  must be those the statistics were computed with. `channels_last` moves C last (Flax layout).
  """
  with np.load(os.path.join(statistics_dir, "l.npz")) as f:
    l = f["l"]
  with np.load(os.path.join(statistics_dir, "sb.npz")) as f:
    s, b = f["s"], f["b"]
  if channels_last and l.ndim == 4:
    l, s, b = (np.moveaxis(a, 1, -1) for a in (l, s, b))
  lambdas = ems_grid(process, t_start, t_end, l.shape[0] - 1)
  return EMS(lambdas, jnp.asarray(l), jnp.asarray(s), jnp.asarray(b))


# --- computing the statistics (the reference EMS script, sec. 3.3 of the notes) -----------------

def _eps_fn(denoiser, process):
  def eps(x, t):
    t_b = utils.batch_times(t, x)
    a, s = utils.expand_to(process.alpha(t_b), x), utils.expand_to(process.sigma(t_b), x)
    return (x - a * denoiser(x, t_b)) / s
  return eps


def _batches(data, batch_size):
  n = data.shape[0]
  batch_size = batch_size or n
  return [data[i:i + batch_size] for i in range(0, n, batch_size)]


def compute_l(denoiser, process, data, lambdas, key, *, batch_size=None, progress=True):
  """l_lambda = E[sigma v * (d eps / dx) v] per dimension (Hutchinson's diagonal, Rademacher v).

  The points are training data perturbed by the forward kernel, x = alpha x0 + sigma z, as in the
  reference script (not ODE samples). The product with the Jacobian is a forward-mode JVP.
  """
  eps = _eps_fn(denoiser, process)

  @jax.jit
  def one(lam, x0, key):
    t = process.t_from_log_snr(lam)
    kz, kv = jax.random.split(key)
    x = process.alpha(t) * x0 + process.sigma(t) * jax.random.normal(kz, x0.shape, x0.dtype)
    v = jax.random.rademacher(kv, x0.shape, x0.dtype)
    _, jv = jax.jvp(lambda x: eps(x, t), (x,), (v,))
    return jnp.sum(process.sigma(t) * v * jv, axis=0)

  return _grid_mean(one, data, lambdas, key, batch_size, progress, "EMS l")


def smoothed_derivative(values, lambdas, window=5):
  """d values / d lambda by central differences (one-sided at the ends), then a +-window moving
  average truncated at the ends: the reference's `compute_l_d`."""
  gap = (lambdas[-1] - lambdas[0]) / (values.shape[0] - 1)
  d = jnp.concatenate([(values[1:2] - values[0:1]) / gap, (values[2:] - values[:-2]) / (2 * gap),
                       (values[-1:] - values[-2:-1]) / gap])
  n = values.shape[0]
  csum = jnp.concatenate([jnp.zeros_like(d[:1]), jnp.cumsum(d, axis=0)])
  lo = np.maximum(np.arange(n) - window, 0)
  hi = np.minimum(np.arange(n) + window + 1, n)
  count = _col(jnp.asarray(hi - lo, d.dtype), d)
  return (csum[hi] - csum[lo]) / count


def compute_sb(denoiser, process, data, lambdas, l, key, *, batch_size=None, progress=True, window=5,
               min_variance=1e-12):
  """(s, b) minimising E||f' - s f - b||^2 per dimension (least squares on forward-noised data).

  f = (sigma eps - l x) / alpha, and f' = e^{-lambda}((l - 1) eps + eps') - l' x / alpha with eps'
  the total derivative of eps along the probability-flow ODE (a JVP with tangents dt/dlambda and
  dx/dlambda = (dlog alpha/dlambda) x - sigma eps) and l' the smoothed finite difference of l.
  Where f has (relative) variance below `min_variance` the fit is undetermined; there s = 0 and
  b = E[f'] (the reference divides by zero).
  """
  eps = _eps_fn(denoiser, process)
  l_d = smoothed_derivative(l, lambdas, window)
  dlog_alpha = jax.grad(lambda lam: process.log_alpha(process.t_from_log_snr(lam)))

  @jax.jit
  def one(lam, x0, key, l_j, l_d_j):
    t = process.t_from_log_snr(lam)
    a, sg = process.alpha(t), process.sigma(t)
    x = a * x0 + sg * jax.random.normal(key, x0.shape, x0.dtype)
    e = eps(x, t)
    dx = dlog_alpha(lam) * x - sg * e
    _, de = jax.jvp(lambda x, lam: eps(x, process.t_from_log_snr(lam)), (x, lam), (dx, jnp.ones_like(lam)))
    f = (sg * e - l_j * x) / a
    fd = jnp.exp(-lam) * ((l_j - 1.0) * e + de) - l_d_j * x / a
    return jnp.stack([jnp.sum(f, 0), jnp.sum(fd, 0), jnp.sum(f * f, 0), jnp.sum(f * fd, 0)])

  moments = _grid_mean(one, data, lambdas, key, batch_size, progress, "EMS s, b", per_step=(l, l_d))
  m_f, m_fd, m_ff, m_ffd = (moments[:, k] for k in range(4))
  var = m_ff - m_f**2
  ok = var > min_variance * (m_ff + 1e-30)
  s = jnp.where(ok, (m_ffd - m_f * m_fd) / jnp.where(ok, var, 1.0), 0.0)
  return s, m_fd - s * m_f


def _grid_mean(one, data, lambdas, key, batch_size, progress, desc, per_step=()):
  """Mean over `data` of `one(lambda_j, batch, key, *per_step[j])` (a sum over the batch) per grid point."""
  data = jnp.asarray(data)
  out = []
  for j in tqdm(range(lambdas.shape[0]), desc=desc, disable=not progress):
    acc = 0.0
    for k, x0 in enumerate(_batches(data, batch_size)):
      sub = jax.random.fold_in(jax.random.fold_in(key, j), k)
      acc = acc + one(lambdas[j], x0, sub, *(p[j] for p in per_step))
    out.append(acc / data.shape[0])
  return jnp.stack(out)


def compute_ems(denoiser, process, data, key, *, t_start, t_end, num_steps=1200, batch_size=None, l=None,
                progress=True):
  """The EMS of `denoiser` from clean training points `data` (the reference EMS script).

  Args:
    denoiser: `D(x, t)` (x0 prediction) of the model to sample from.
    process: its noise process.
    data: clean training points, shape (K, *event_shape); the paper uses K = 1024-4096.
    key: PRNG key for the forward noise and the Hutchinson probes.
    t_start, t_end: the grid's noisy and clean ends (sampling must stay inside).
    num_steps: grid intervals (1200 in the paper).
    batch_size: points per model call (all at once by default).
    l: given l statistics (e.g. ones) instead of computing them.
    progress: show progress bars.

  Returns:
    An `EMS`.
  """
  data = jnp.asarray(data)
  if data.ndim < 2 or data.shape[0] < 2:
    raise ValueError(f"compute_ems: data must have shape (K >= 2, *event_shape), got {data.shape}")
  lambdas = ems_grid(process, t_start, t_end, num_steps).astype(data.dtype)
  k_l, k_sb = jax.random.split(key)
  if l is None:
    l = compute_l(denoiser, process, data, lambdas, k_l, batch_size=batch_size, progress=progress)
  elif l.shape != lambdas.shape + data.shape[1:]:
    raise ValueError(f"compute_ems: l must have shape {lambdas.shape + data.shape[1:]}, got {l.shape}")
  s, b = compute_sb(denoiser, process, data, lambdas, l, k_sb, batch_size=batch_size, progress=progress)
  return EMS(lambdas, l, s, b)


# --- the sampler ---------------------------------------------------------------------------------

def _col(v, like):
  """A grid vector (n,) shaped to broadcast against a grid array (n', *event_shape)."""
  return v.reshape(v.shape + (1,) * (like.ndim - 1))


def _cumulative_trapezoid(a, x, b=None):
  """y_n = int_{x_0}^{x_n} b e^a by the trapezoid rule (y_0 = 0), with the max of a factored out."""
  a_max = jnp.max(a, axis=0, keepdims=True)
  w = jnp.exp(a - a_max) if b is None else b * jnp.exp(a - a_max)
  dx = _col(x[1:] - x[:-1], w)
  out = jnp.cumsum(0.5 * dx * (w[1:] + w[:-1]), axis=0) * jnp.exp(a_max)
  return jnp.concatenate([jnp.zeros_like(out[:1]), out])


def ems_integrals(ems):
  """The cumulative integrals (L, S, I, B, C) of the EMS on its grid (official `__init__`)."""
  z = jnp.zeros_like(ems.l)
  L = _cumulative_trapezoid(z, ems.lambdas, ems.l)
  S = _cumulative_trapezoid(z, ems.lambdas, ems.s)
  I = _cumulative_trapezoid(L + S, ems.lambdas)
  B = _cumulative_trapezoid(-S, ems.lambdas, ems.b)
  C = _cumulative_trapezoid(L + S, ems.lambdas, B)
  return L, S, I, B, C


def snap_to_grid(ts, ems, process):
  """Grid indices nearest to lambda(ts) and the times of the snapped lambdas (the reference's
  `convert_to_indexes` / `convert_to_timesteps`)."""
  lam = process.log_snr(ts)
  lam_T, lam_0 = ems.lambdas[0], ems.lambdas[-1]
  idx = jnp.round(ems.num_steps * (lam - lam_T) / (lam_0 - lam_T)).astype(jnp.int32)
  idx = jnp.clip(idx, 0, ems.num_steps)
  return idx, process.t_from_log_snr(ems.lambdas[idx])


def _exp_coefficient(lp, lambdas, i_s, i_t, k):
  """E_k = int_{lambda_s}^{lambda_t} e^{LS - LS_s} (lambda - lambda_s)^k / k! (trapezoid on the grid)."""
  j = jnp.arange(lambdas.shape[0])
  inside = _col((j >= i_s) & (j <= i_t), lp)
  a = jnp.where(inside, lp - lp[i_s], -jnp.inf)
  a_max = jnp.max(a, axis=0)
  poly = _col((lambdas - lambdas[i_s])**k / math.factorial(k), lp)
  w = jnp.where(inside, poly * jnp.exp(a - a_max), 0.0)
  interval_inside = _col((j[:-1] >= i_s) & (j[:-1] < i_t), lp)
  dx = _col(lambdas[1:] - lambdas[:-1], lp)
  return jnp.sum(jnp.where(interval_inside, 0.5 * dx * (w[1:] + w[:-1]), 0.0), axis=0) * jnp.exp(a_max)


def _derivatives(lams, gs, pseudo):
  """g^(1..n) at lams[0] from n + 1 points: Vandermonde solve, or Neville divided differences."""
  n = len(gs) - 1
  if pseudo:
    d = list(gs)
    out = []
    for i in range(1, n + 1):
      d = [(d[j] - d[j + 1]) / (lams[j] - lams[i + j]) for j in range(n - i + 1)]
      out.append(d[0] * math.factorial(i))
    return out
  r = jnp.stack([(jnp.stack(lams[1:]) - lams[0])**i for i in range(1, n + 1)], axis=1)
  rhs = jnp.stack([g - gs[0] for g in gs[1:]])
  sol = jnp.linalg.solve(r, rhs.reshape(n, -1)).reshape(rhs.shape)
  return [sol[i - 1] * math.factorial(i) for i in range(1, n + 1)]


class _Update:
  """The v3 update from point s (first of `points`) to grid index i_t, of order len(points)."""

  def __init__(self, ems, process):
    self.ems, self.process = ems, process
    self.L, self.S, self.I, self.B, self.C = ems_integrals(ems)
    self.LS = self.L + self.S

  def _alpha_sigma(self, idx):
    t = self.process.t_from_log_snr(self.ems.lambdas[idx])
    return self.process.alpha(t), self.process.sigma(t)

  def __call__(self, points, i_t, pseudo):
    L, S, I, B, C, l = self.L, self.S, self.I, self.B, self.C, self.ems.l
    xs, es, idxs = zip(*points)
    i_s = idxs[0]
    a_s, _ = self._alpha_sigma(i_s)
    a_t, _ = self._alpha_sigma(i_t)
    gs = []
    for x_i, e_i, i in points:
      a_i, s_i = self._alpha_sigma(i)
      f_i = (s_i * e_i - l[i] * x_i) / a_i
      gs.append(jnp.exp(S[i_s] - S[i]) * f_i - jnp.exp(S[i_s]) * (B[i] - B[i_s]))
    x_t = (a_t / a_s * jnp.exp(L[i_s] - L[i_t]) * xs[0]
           - a_t * jnp.exp(-L[i_t] - S[i_s]) * (I[i_t] - I[i_s]) * gs[0]
           - a_t * jnp.exp(-L[i_t]) * (C[i_t] - C[i_s] - B[i_s] * (I[i_t] - I[i_s])))
    if len(points) > 1:
      lams = [self.ems.lambdas[i] for i in idxs]
      for k, g_k in enumerate(_derivatives(lams, gs, pseudo), start=1):
        x_t = x_t - a_t * jnp.exp(L[i_s] - L[i_t]) * _exp_coefficient(self.LS, self.ems.lambdas, i_s, i_t, k) * g_k
    return x_t


def v3_orders(num_steps, order, use_corrector, c_pseudo, lower_order_final):
  """(predictor, corrector) order of each step of the reference driver (corrector 0 = off)."""
  p_orders, c_orders, prev = [], [], 0
  for step in range(1, num_steps + 1):
    c = prev + int(c_pseudo) if use_corrector else 0
    c_orders.append(c if c > 1 else 0)
    p = min(step, order)
    if lower_order_final:
      p = min(p, num_steps + 1 - step)
    p_orders.append(p)
    prev = p
  return p_orders, c_orders


def dpm_solver_v3(denoiser, x, ts, *, process, ems, order=3, p_pseudo=False, use_corrector=True, c_pseudo=False,
                  lower_order_final=True, half=False, half_threshold=0.5, key=None):
  """DPM-Solver-v3 over `ts` (snapped to the EMS grid), one compiled loop, NFE = steps.

  Args:
    denoiser: `D(x, t)`; the noise prediction is (x - alpha D) / sigma.
    x: state at ts[0].
    ts: times from noise to data inside the EMS grid.
    process: the noise process.
    ems: `EMS` (from `compute_ems`, `load_ems`, `load_official_ems` or `degenerated_ems`), with
      event shape x.shape[1:].
    order: predictor order 1-3 (the paper: 3 unconditional, 2 guided).
    p_pseudo: predictor derivatives by divided differences ("pseudo order"; for NFE ~ 5).
    use_corrector: apply the corrector (order = previous predictor order, +1 with `c_pseudo`).
    c_pseudo: pseudo-order corrector (one order higher, divided differences).
    lower_order_final: orders min(order, steps + 1 - step) at the end.
    half: apply the corrector only while t_{i-1} > `half_threshold` (the official code's rule).
    key: unused (deterministic).

  Returns:
    The state at the snapped ts[-1].
  """
  del key
  if order not in (1, 2, 3):
    raise ValueError(f"dpm_solver_v3: order must be 1, 2 or 3, got {order!r}")
  if not isinstance(ems, EMS):
    raise ValueError(f"dpm_solver_v3: ems must be an EMS (compute_ems / load_ems / degenerated_ems), got {type(ems)}")
  if ems.l.shape[1:] != x.shape[1:]:
    raise ValueError(f"dpm_solver_v3: ems event shape {ems.l.shape[1:]} does not match x.shape[1:] = {x.shape[1:]}")
  ts = base.check_times(ts)
  dtype = x.dtype
  ems = jax.tree.map(lambda a: a.astype(dtype), ems)
  idx, times = snap_to_grid(ts.astype(dtype), ems, process)
  num_steps = ts.shape[0] - 1
  p_orders, c_orders = v3_orders(num_steps, order, use_corrector, c_pseudo, lower_order_final)
  eps = _eps_fn(denoiser, process)
  update = _Update(ems, process)
  hist_len = order + 1

  def predictor(o):
    return lambda hx, he, hi, i_t: update([(hx[j], he[j], hi[j]) for j in range(o)], i_t, p_pseudo)

  def corrector(o):
    # Points (s, t, older...): the newest cached value is t, the one before it s.
    def fn(hx, he, hi, _):
      pts = [(hx[1], he[1], hi[1]), (hx[0], he[0], hi[0])] + [(hx[j], he[j], hi[j]) for j in range(2, o)]
      return update(pts, hi[0], c_pseudo)
    return fn

  def body(carry, inputs):
    x, hx, he, hi = carry
    i_prev, t_prev, i_next, p_order, c_order = inputs
    e = eps(x, t_prev)
    hx = jnp.concatenate([x[None], hx[:-1]])
    he = jnp.concatenate([e[None], he[:-1]])
    hi = jnp.concatenate([i_prev[None], hi[:-1]])
    do_correct = c_order > 1
    if half:
      do_correct = do_correct & (t_prev > half_threshold)
    branches = [lambda hx, he, hi, _: hx[0]] + [corrector(o) for o in range(2, hist_len + 1)]
    x_c = jax.lax.switch(jnp.where(do_correct, c_order - 1, 0), branches, hx, he, hi, 0)
    _, sigma_t = update._alpha_sigma(i_prev)
    e_c = (sigma_t * he[0] - ems.l[i_prev] * hx[0] + ems.l[i_prev] * x_c) / sigma_t
    hx, he = hx.at[0].set(x_c), he.at[0].set(jnp.where(do_correct, e_c, he[0]))
    x = jax.lax.switch(p_order - 1, [predictor(o) for o in range(1, order + 1)], hx, he, hi, i_next)
    return (x, hx, he, hi), None

  hist = (jnp.zeros((hist_len,) + x.shape, dtype), jnp.zeros((hist_len,) + x.shape, dtype),
          jnp.zeros((hist_len,), jnp.int32))
  xs = (idx[:-1], times[:-1], idx[1:], jnp.asarray(p_orders), jnp.asarray(c_orders))
  (x, _, _, _), _ = jax.lax.scan(body, (x,) + hist, xs)
  return x
