"""DC-Solver (Zhao et al. 2024, "DC-Solver: Improving Predictor-Corrector Diffusion Sampler via
Dynamic Compensation"): UniPC whose newest model output is replaced, before each step, by the
Lagrange interpolant (in time t) of the last three outputs at t' = t_{-1} + rho (t_0 - t_{-1}).
rho = 1 is plain UniPC. The ratios are searched per step on a few datapoints against a fine
reference trajectory (`search_dc_ratios`).

Differences from the official code, documented: the reference trajectory is a fine DDIM run
evaluated at the sampler's own grid times (the official search compares with the nearest
reference time above t), and the stored history keeps the uncompensated outputs.

Cascade polynomial regression (CPR, paper sec. 4.3) predicts the ratios for unseen step counts N
and guidance scales w from ratios searched at a few (w, N). The official code (wl-zhao/DC-Solver,
diffusers/src/diffusers/schedulers/scheduling_dcsolver_multistep.py,
`DCSolverMultistepScheduler.cascade_polynomial_regression`) evaluates, with x = k / N for the step
k = 1..N, w~ = w / 12 and N~ = N / 50,

  rho(w, N, k) = sum_i P_i x^i,  P_i = sum_j Q_ij w~^(2-j),  Q_ij = sum_l c_ijl N~^(2-l),

a cubic in the normalised step position whose coefficients are quadratics in w~ whose coefficients
are quadratics in N~ (the cascade nests step -> guidance -> step count), 36 coefficients c stored
flat in a `.npy` (shape (4, 3, 3) here; the released diffusers/dc_solver/cpr_coeffs_path/sd2.1.npy
fits Stable Diffusion 2.1); steps k < 3 get ratio 1. `predict_dc_ratios` reproduces this (any
degrees; the official ones by default) and reads the official file (`load_cpr_params`).

The official repository does not release the fitting code. Its `predict(xs, *coeffs)`, with xs
the stacked (CFG, NFE, step) of all samples, has the `scipy.optimize.curve_fit` signature, i.e. a
joint fit of all 36 coefficients to all searched steps; the model is linear in c, so
`fit_cascade_polynomial(method="least_squares")` computes that minimum directly by linear least
squares (curve_fit's iterations only approach it). Steps 1, 2 are left out of the fit since the
prediction overrides them (whether the official fit used them is unknown). `method="cascade"` is
the paper's stage-wise description instead: a polynomial in x per searched setting, its
coefficients regressed on w~ per step count, those on N~. Differences: the result is a jnp array
(the official returns a list whose first two entries are the int 1), and the degrees and the
normalisations 12, 50 are arguments (official values by default).
"""

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from diffjax import utils
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


_FIRST_DC_STEP = 3  # steps 1, 2 (1-based) keep ratio 1: compensation needs three model outputs
OFFICIAL_DEGREES = (3, 2, 2)  # degrees in (step position, guidance scale, step count)
CPR_METHODS = ("least_squares", "cascade")


@flax.struct.dataclass
class CPRParams:
  """Cascade polynomial regression coefficients (DC-Solver paper sec. 4.3).

  Attributes:
    coeffs: float64 array, shape (d_x + 1, d_w + 1, d_n + 1); coeffs[i, j, l] multiplies
      x^i w~^(d_w - j) N~^(d_n - l) (the official layout: its 36-entry `.npy` is this array
      flattened, degrees (3, 2, 2)). Kept as a numpy array so it saves losslessly without x64.
    guidance_norm: w~ = guidance_scale / guidance_norm (official 12).
    nfe_norm: N~ = nfe / nfe_norm (official 50).
  """
  coeffs: np.ndarray
  guidance_norm: float = flax.struct.field(pytree_node=False, default=12.0)
  nfe_norm: float = flax.struct.field(pytree_node=False, default=50.0)

  @property
  def degrees(self):
    return tuple(int(s) - 1 for s in np.shape(self.coeffs))


def _monomials(degrees, guidance_scale, nfe, steps, guidance_norm, nfe_norm):
  """Rows x^i w~^(d_w - j) N~^(d_n - l), flattened in `CPRParams.coeffs` order, one per step."""
  dx, dw, dn = degrees
  x = np.asarray(steps, np.float64) / nfe
  xi = x[:, None] ** np.arange(dx + 1)
  wj = (guidance_scale / guidance_norm) ** (dw - np.arange(dw + 1))
  nl = (nfe / nfe_norm) ** (dn - np.arange(dn + 1))
  return (xi[:, :, None, None] * wj[None, None, :, None] * nl[None, None, None, :]).reshape(len(x), -1)


def _check_degrees(degrees, name):
  if not (isinstance(degrees, (tuple, list)) and len(degrees) == 3
          and all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 0 for d in degrees)):
    raise ValueError(f"{name}: degrees must be three non-negative ints (step position, guidance scale, "
                     f"step count), e.g. {OFFICIAL_DEGREES}; got {degrees!r}")
  return tuple(int(d) for d in degrees)


def _check_searched(searched):
  """{(w, N): ratios} -> sorted list of (w, N, float64 ratios of shape (N,))."""
  if not isinstance(searched, dict) or not searched:
    raise ValueError("fit_cascade_polynomial: searched must be a non-empty dict {(guidance_scale, nfe): ratios}, "
                     f"got {type(searched).__name__}")
  out = []
  for key, ratios in searched.items():
    if not (isinstance(key, tuple) and len(key) == 2):
      raise ValueError(f"fit_cascade_polynomial: searched keys must be (guidance_scale, nfe) pairs, got {key!r}")
    w, nfe = key
    if isinstance(nfe, bool) or not isinstance(nfe, (int, np.integer)) or nfe < 1:
      raise ValueError(f"fit_cascade_polynomial: the nfe of searched key {key!r} must be a positive int")
    if isinstance(w, bool) or not isinstance(w, (int, float, np.integer, np.floating)) or not np.isfinite(w):
      raise ValueError(f"fit_cascade_polynomial: the guidance_scale of searched key {key!r} must be a finite number")
    ratios = np.asarray(ratios, np.float64)
    if ratios.shape != (nfe,):
      raise ValueError(f"fit_cascade_polynomial: searched[{key!r}] must have shape ({nfe},), got {ratios.shape}")
    if not np.all(np.isfinite(ratios)):
      raise ValueError(f"fit_cascade_polynomial: searched[{key!r}] has non-finite ratios")
    out.append((float(w), int(nfe), ratios))
  return sorted(out, key=lambda s: (s[1], s[0]))


def fit_cascade_polynomial(searched, *, degrees=OFFICIAL_DEGREES, method="least_squares", guidance_norm=12.0,
                           nfe_norm=50.0):
  """Fits DC-Solver's cascade polynomial regression (CPR, Zhao et al. 2024, sec. 4.3) to searched ratios.

  The model (official `cascade_polynomial_regression`, degrees (3, 2, 2)), with x = k / N for step
  k = 1..N, w~ = w / guidance_norm, N~ = N / nfe_norm:

    rho(w, N, k) = sum_i P_i x^i,  P_i = sum_j Q_ij w~^(d_w - j),  Q_ij = sum_l c_ijl N~^(d_n - l).

  Only steps k >= 3 enter the fit (the official prediction fixes the first two ratios to 1).

  Args:
    searched: {(guidance_scale, nfe): ratios of shape (nfe,)}, e.g. from `search_dc_ratios`.
    degrees: polynomial degrees (d_x, d_w, d_n) in the step position, guidance scale and step count.
    method: "least_squares" (default): one joint linear least-squares fit of all coefficients to all
      steps of all settings (the minimum that `scipy.optimize.curve_fit` approaches on the official
      `predict(xs, *coeffs)`, which is linear in the coefficients); it needs settings that determine
      the coefficients (at least d_w + 1 guidance scales and d_n + 1 step counts). "cascade": a
      stage-wise fit (our reading of the paper; not in the official code): a degree-d_x polynomial
      in x per setting, then each of its coefficients as a degree-d_w polynomial in w~ per step
      count, then each of those as a degree-d_n polynomial in N~; it needs d_w + 1 guidance scales
      at every step count, d_n + 1 step counts and nfe >= d_x + 3. Both are exact when the ratios
      follow the model and agree on a full grid of exactly d_w + 1 guidance scales by d_n + 1 step
      counts, where both reduce to independent least-squares fits in x per setting.
    guidance_norm, nfe_norm: the normalisations of w and N (official 12 and 50).

  Returns:
    `CPRParams` for `predict_dc_ratios` (save with `save_cpr_params`).
  """
  degrees = _check_degrees(degrees, "fit_cascade_polynomial")
  if method not in CPR_METHODS:
    raise ValueError(f"fit_cascade_polynomial: method must be one of {CPR_METHODS}, got {method!r}")
  for name, value in (("guidance_norm", guidance_norm), ("nfe_norm", nfe_norm)):
    number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not (number and np.isfinite(value) and value > 0):
      raise ValueError(f"fit_cascade_polynomial: {name} must be a positive finite number, got {value!r}")
  settings = _check_searched(searched)
  dx, dw, dn = degrees
  scales = sorted({w for w, _, _ in settings})
  counts = sorted({n for _, n, _ in settings})
  if method == "least_squares":
    rows = [_monomials(degrees, w, n, np.arange(_FIRST_DC_STEP, n + 1), guidance_norm, nfe_norm)
            for w, n, _ in settings]
    a = np.concatenate(rows)
    y = np.concatenate([r[_FIRST_DC_STEP - 1:] for _, _, r in settings])
    size = (dx + 1) * (dw + 1) * (dn + 1)
    if a.shape[0] < size or np.linalg.matrix_rank(a) < size:
      raise ValueError(f"fit_cascade_polynomial: the searched settings do not determine the {size} coefficients of "
                       f"degrees {degrees}; need >= {dw + 1} guidance scales, >= {dn + 1} step counts and enough "
                       f"steps >= {_FIRST_DC_STEP}; got guidance scales {scales} and step counts {counts}")
    coeffs, *_ = np.linalg.lstsq(a, y, rcond=None)
    return CPRParams(coeffs.reshape(dx + 1, dw + 1, dn + 1), float(guidance_norm), float(nfe_norm))
  # cascade: stage 1 per setting (x), stage 2 per step count (w~), stage 3 across step counts (N~)
  if len(counts) < dn + 1:
    raise ValueError(f"fit_cascade_polynomial: method='cascade' with degrees {degrees} needs >= {dn + 1} step "
                     f"counts in searched, got {counts}")
  per_count = []
  for nfe in counts:
    group = [(w, r) for w, n, r in settings if n == nfe]
    if len(group) < dw + 1:
      raise ValueError(f"fit_cascade_polynomial: method='cascade' with degrees {degrees} needs >= {dw + 1} guidance "
                       f"scales at every step count in searched; nfe {nfe} has {[w for w, _ in group]}")
    if nfe - _FIRST_DC_STEP + 1 < dx + 1:
      raise ValueError(f"fit_cascade_polynomial: method='cascade' with degrees {degrees} needs nfe >= "
                       f"{dx + _FIRST_DC_STEP} in searched, got nfe {nfe}")
    x = np.arange(_FIRST_DC_STEP, nfe + 1) / nfe
    vx = x[:, None] ** np.arange(dx + 1)
    p = np.stack([np.linalg.lstsq(vx, r[_FIRST_DC_STEP - 1:], rcond=None)[0] for _, r in group])  # (S, dx + 1)
    vw = (np.asarray([w for w, _ in group]) / guidance_norm)[:, None] ** (dw - np.arange(dw + 1))
    per_count.append(np.linalg.lstsq(vw, p, rcond=None)[0].T)  # (dx + 1, dw + 1)
  vn = (np.asarray(counts, np.float64) / nfe_norm)[:, None] ** (dn - np.arange(dn + 1))
  q = np.stack(per_count).reshape(len(counts), -1)
  coeffs = np.linalg.lstsq(vn, q, rcond=None)[0]  # (dn + 1, (dx + 1) (dw + 1))
  return CPRParams(coeffs.T.reshape(dx + 1, dw + 1, dn + 1), float(guidance_norm), float(nfe_norm))


def _as_params(params, name):
  if isinstance(params, CPRParams):
    shape = np.shape(params.coeffs)  # no conversion: the coefficients may be traced
    if len(shape) != 3 or min(shape) < 1:
      raise ValueError(f"{name}: params.coeffs must have shape (d_x + 1, d_w + 1, d_n + 1), got {shape}")
    return params
  coeffs = np.asarray(params, np.float64)
  if coeffs.size != 36 or coeffs.ndim not in (1, 3):
    raise ValueError(f"{name}: params must be CPRParams or the official 36 coefficients (shape (36,) or "
                     f"(4, 3, 3)), got shape {coeffs.shape}")
  return CPRParams(coeffs.reshape(4, 3, 3))


def predict_dc_ratios(params, nfe, guidance_scale=1.0):
  """DC-Solver ratios for `nfe` steps at `guidance_scale` by cascade polynomial regression.

  Evaluates the official `cascade_polynomial_regression`: the coefficients' polynomial in N~ gives
  those of the polynomial in w~, which give those of the polynomial in x = k / N; steps k = 1, 2
  keep ratio 1. Pass the result as `dc_solver(..., dc_ratios=...)`.

  Args:
    params: `CPRParams` (from `fit_cascade_polynomial` or `load_cpr_params`), or the official 36
      coefficients (e.g. `np.load("sd2.1.npy")`).
    nfe: number of steps N (a positive int; the length of the result).
    guidance_scale: the classifier-free guidance scale w (may be traced).

  Returns:
    jnp array, shape (nfe,), float64 under x64.
  """
  params = _as_params(params, "predict_dc_ratios")
  if isinstance(nfe, bool) or not isinstance(nfe, (int, np.integer)) or nfe < 1:
    raise ValueError(f"predict_dc_ratios: nfe must be a positive int, got {nfe!r}")
  nfe = int(nfe)
  c = jnp.asarray(params.coeffs)
  dx, dw, dn = params.degrees
  n = nfe / params.nfe_norm
  w = jnp.asarray(guidance_scale, c.dtype) / params.guidance_norm
  q = c @ (n ** jnp.arange(dn, -1, -1, dtype=c.dtype))  # (dx + 1, dw + 1): coefficients in w~
  p = q @ (w ** jnp.arange(dw, -1, -1, dtype=c.dtype))  # (dx + 1,): coefficients in x
  k = jnp.arange(1, nfe + 1)
  x = (k / nfe).astype(c.dtype)
  rho = (x[:, None] ** jnp.arange(dx + 1, dtype=c.dtype)) @ p
  return jnp.where(k < _FIRST_DC_STEP, jnp.ones_like(rho), rho)


def save_cpr_params(path, params):
  """Writes `params` to one `.npz` (keys coeffs, guidance_norm, nfe_norm) atomically."""
  params = _as_params(params, "save_cpr_params")
  utils.save_npz_atomic(path, coeffs=np.asarray(params.coeffs, np.float64), guidance_norm=params.guidance_norm,
                        nfe_norm=params.nfe_norm)


def load_cpr_params(path):
  """Reads `save_cpr_params`' `.npz`, or the official `.npy` of 36 coefficients (degrees (3, 2, 2))."""
  loaded = np.load(path)
  if isinstance(loaded, np.ndarray):
    return _as_params(loaded, "load_cpr_params")
  with loaded as f:
    missing = {"coeffs", "guidance_norm", "nfe_norm"} - set(f.files)
    if missing:
      raise ValueError(f"load_cpr_params: {path} lacks the arrays {sorted(missing)}")
    return _as_params(CPRParams(np.asarray(f["coeffs"], np.float64), float(f["guidance_norm"]), float(f["nfe_norm"])),
                      "load_cpr_params")
