"""DPM-Solver (Lu et al. 2022a) and DPM-Solver++ (Lu et al. 2022b), multistep and singlestep.

Exponential integrators of the probability-flow ODE in the half log-SNR lambda = log(alpha/sigma),
following the official `dpm_solver_pytorch.py` (LuChengTHU/dpm-solver). With h = lambda_t -
lambda_s and s the current, t the next time:

  data prediction m ("dpmsolver++"), phi_1 = expm1(-h):
    order 1  x_t = (sigma_t/sigma_s) x - alpha_t phi_1 m_s                     (= DDIM)
    2M       ... - 1/2 alpha_t phi_1 D1_0  ("dpmsolver")  or  + alpha_t (phi_1/h + 1) D1_0 ("taylor")
    3M       ... + alpha_t phi_2 D1 - alpha_t phi_3 D2
  noise prediction eps ("dpmsolver"), phi_1 = expm1(h):
    order 1  x_t = (alpha_t/alpha_s) x - sigma_t phi_1 eps_s
    2M       ... - 1/2 sigma_t phi_1 D1_0  or  - sigma_t (phi_1/h - 1) D1_0
    3M       ... - sigma_t phi_2 D1 - sigma_t phi_3 D2

with r0 = h0/h, D1_0 = (m_s - m_p1)/r0, D1_1 = (m_p1 - m_p2)/r1, D1 = D1_0 + r0/(r0+r1)(D1_0 - D1_1),
D2 = (D1_0 - D1_1)/(r0 + r1). The reference's D2 is half of the second divided difference the
phi_3 term needs, so its 3M update is only second-order accurate; `corrected_3m=True` doubles
D2 (third order). Singlestep solvers take one step of `order` per interval of `ts`, with
intermediate times at lambda_s + r h (r1 = 1/2 for order 2; r1 = 1/3, r2 = 2/3 for order 3),
i.e. the reference's `singlestep_fixed` with a logSNR inner grid.

SDE variants (Lu et al. 2022b, sec. 5; diffusers `DPMSolverMultistepScheduler`):
  "sde-dpmsolver++" x_t = (sigma_t/sigma_s) e^{-h} x + alpha_t (1 - e^{-2h}) m_s
                          + sigma_t sqrt(1 - e^{-2h}) z  (+ 1/2 alpha_t (1 - e^{-2h}) D1_0 midpoint,
                          or + alpha_t ((1 - e^{-2h})/(-2h) + 1) D1_0 heun, for order 2)
  "sde-dpmsolver"   x_t = (alpha_t/alpha_s) x - 2 sigma_t (e^h - 1) eps_s + sigma_t sqrt(e^{2h} - 1) z
                          (- sigma_t (e^h - 1) D1_0 midpoint, or - 2 sigma_t ((e^h - 1)/h - 1) D1_0 heun)
The solver types "dpmsolver"/"taylor" select midpoint/heun for the SDE variants (diffusers' names
"midpoint"/"heun" are accepted too).

Multistep drivers reproduce the reference's warm-up (step k < order uses order k) and
`lower_order_final` (the last steps drop to min(order, steps + 1 - k) when there are fewer than
10 steps; diffusers and the TS-DPM fork use 15, UniPC applies it always). The model is not
evaluated at the final time (NFE = steps) unless `denoise_to_zero`.
"""
import jax
import jax.numpy as jnp

from diffjax import utils
from diffjax.samplers import base

ALGORITHMS = ("dpmsolver++", "dpmsolver", "sde-dpmsolver++", "sde-dpmsolver")
METHODS = ("multistep", "singlestep")
SOLVER_TYPES = ("dpmsolver", "taylor", "midpoint", "heun")


def dynamic_thresholding(x0, percentile=0.995, max_val=1.0):
  """Imagen's dynamic thresholding as DPM-Solver implements it (Saharia et al. 2022, sec. 2.3).

  s = quantile_p(|x0|) per sample, s = max(s, max_val), x0 <- clip(x0, -s, s) / s.
  """
  flat = jnp.abs(x0.reshape(x0.shape[0], -1))
  s = jnp.maximum(jnp.quantile(flat, percentile, axis=1), max_val)
  s = utils.expand_to(s, x0)
  return jnp.clip(x0, -s, s) / s


def _validate(order, method, algorithm, solver_type, key):
  if order not in (1, 2, 3):
    raise ValueError(f"dpm_solver: order must be 1, 2 or 3, got {order!r}")
  if method not in METHODS:
    raise ValueError(f"dpm_solver: unknown method {method!r}; valid: {METHODS}")
  if algorithm not in ALGORITHMS:
    raise ValueError(f"dpm_solver: unknown algorithm {algorithm!r}; valid: {ALGORITHMS}")
  if solver_type not in SOLVER_TYPES:
    raise ValueError(f"dpm_solver: unknown solver_type {solver_type!r}; valid: {SOLVER_TYPES}")
  if algorithm.startswith("sde"):
    if method != "multistep" or order > 2:
      raise ValueError(f"dpm_solver: {algorithm} supports method='multistep' with order 1 or 2")
    base.check_key(key, "dpm_solver", f"for algorithm={algorithm!r}")


def multistep_orders(num_steps, order, lower_order_final, threshold=10):
  """The order of each step of the reference multistep driver (warm-up and lower_order_final)."""
  orders = []
  for k in range(1, num_steps + 1):
    o = min(order, k)
    if lower_order_final and num_steps < threshold:
      o = min(o, num_steps + 1 - k)
    orders.append(o)
  return orders


def dpm_solver(denoiser, x, ts, *, process, order=2, method="multistep", algorithm="dpmsolver++",
               solver_type="dpmsolver", lower_order_final=True, denoise_to_zero=False,
               thresholding=False, thresholding_percentile=0.995, thresholding_max_val=1.0,
               corrected_3m=False, lower_order_final_threshold=10, key=None):
  """DPM-Solver / DPM-Solver++ over the grid `ts` (noise to data), one compiled loop.

  Args:
    denoiser: `D(x, t)`; the noise prediction is (x - alpha D) / sigma.
    x: state at ts[0].
    ts: times from noise to data, sigma(ts[-1]) > 0.
    process: the noise process.
    order: 1, 2 or 3.
    method: "multistep" or "singlestep".
    algorithm: "dpmsolver++" (data prediction), "dpmsolver" (noise prediction),
      "sde-dpmsolver++" or "sde-dpmsolver" (stochastic, multistep order 1-2; need `key`).
    solver_type: "dpmsolver" or "taylor" (first-order difference scheme of orders 2-3).
    lower_order_final: lower the order of the last steps when there are few steps.
    denoise_to_zero: finish with one more evaluation, returning x0 at ts[-1].
    thresholding: dynamic thresholding of x0 (data prediction only).
    thresholding_percentile, thresholding_max_val: its parameters (0.995, 1.0).
    corrected_3m: use the third-order-accurate D2 in the 3M update (not the reference's).
    lower_order_final_threshold: number of steps below which `lower_order_final` applies (10 in
      dpm_solver_pytorch, 15 in diffusers).
    key: PRNG key (SDE variants).

  Returns:
    The state at ts[-1].
  """
  _validate(order, method, algorithm, solver_type, key)
  ts = base.check_times(ts)
  data_pred = algorithm.endswith("++")
  sde = algorithm.startswith("sde")
  if thresholding and not data_pred:
    raise ValueError("dpm_solver: thresholding needs data prediction (algorithm='dpmsolver++')")
  second_is_taylor = solver_type in ("taylor", "heun")

  def model(x, t):
    t_b = utils.batch_times(t, x)
    x0 = denoiser(x, t_b)
    if thresholding:
      x0 = dynamic_thresholding(x0, thresholding_percentile, thresholding_max_val)
    if data_pred:
      return x0
    return (x - utils.expand_to(process.alpha(t_b), x) * x0) / utils.expand_to(process.sigma(t_b), x)

  lam = lambda t: process.log_snr(t)

  if method == "multistep":
    out = _multistep(model, process, lam, x, ts, order, data_pred, sde, second_is_taylor,
                     multistep_orders(ts.shape[0] - 1, order, lower_order_final, lower_order_final_threshold),
                     corrected_3m, key)
  else:
    out = _singlestep(model, process, lam, x, ts, order, data_pred, second_is_taylor)
  if denoise_to_zero:
    m = model(out, ts[-1])
    out = m if data_pred else (out - process.sigma(ts[-1]) * m) / process.alpha(ts[-1])
  return out


def _multistep(model, process, lam, x, ts, order, data_pred, sde, taylor, orders, corrected_3m, key):
  """The reference multistep driver as one lax.scan with a fixed-size history (newest first)."""
  dtype = x.dtype
  ts = ts.astype(dtype)
  hist_m = jnp.zeros((3,) + x.shape, dtype).at[0].set(model(x, ts[0]))
  hist_lam = jnp.zeros((3,), dtype).at[0].set(lam(ts[0]))
  num_steps = ts.shape[0] - 1

  def update(x, t_s, t, ms, lams, step_order, noise):
    lam_s, lam_t = lams[0], lam(t)
    h = lam_t - lam_s
    a_s, s_s, a_t, s_t = process.alpha(t_s), process.sigma(t_s), process.alpha(t), process.sigma(t)
    m0, m1, m2 = ms[0], ms[1], ms[2]
    r0 = (lam_s - lams[1]) / h
    r1 = (lams[1] - lams[2]) / h
    d1_0 = (m0 - m1) / r0
    d1_1 = (m1 - m2) / r1
    d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)
    d2 = (d1_0 - d1_1) / (r0 + r1) * (2.0 if corrected_3m else 1.0)
    if sde and data_pred:
      e = -jnp.expm1(-2.0 * h)  # 1 - e^{-2h}
      base_ = s_t / s_s * jnp.exp(-h) * x + a_t * e * m0 + s_t * jnp.sqrt(e) * noise
      corr = (a_t * (e / (-2.0 * h) + 1.0) if taylor else 0.5 * a_t * e) * d1_0
      return jnp.where(step_order == 1, base_, base_ + corr)
    if sde:
      phi = jnp.expm1(h)
      base_ = a_t / a_s * x - 2.0 * s_t * phi * m0 + s_t * jnp.sqrt(jnp.expm1(2.0 * h)) * noise
      corr = (-2.0 * s_t * (phi / h - 1.0) if taylor else -s_t * phi) * d1_0
      return jnp.where(step_order == 1, base_, base_ + corr)
    if data_pred:
      phi1 = jnp.expm1(-h)
      phi2 = phi1 / h + 1.0
      phi3 = phi2 / h - 0.5
      first = s_t / s_s * x - a_t * phi1 * m0
      second = first + (a_t * phi2 * d1_0 if taylor else -0.5 * a_t * phi1 * d1_0)
      third = first + a_t * phi2 * d1 - a_t * phi3 * d2
    else:
      phi1 = jnp.expm1(h)
      phi2 = phi1 / h - 1.0
      phi3 = phi2 / h - 0.5
      first = a_t / a_s * x - s_t * phi1 * m0
      second = first - (s_t * phi2 * d1_0 if taylor else 0.5 * s_t * phi1 * d1_0)
      third = first - s_t * phi2 * d1 - s_t * phi3 * d2
    return jnp.select([step_order == 1, step_order == 2], [first, second], third)

  def body(carry, inputs):
    x, hist_m, hist_lam = carry
    i, t_s, t, step_order = inputs
    noise = (jax.random.normal(jax.random.fold_in(key, i), x.shape, dtype) if sde else jnp.zeros((), dtype))
    x = update(x, t_s, t, hist_m, hist_lam, step_order, noise)
    # Evaluate the model at the new point, except after the final step (NFE = steps).
    m_new = jax.lax.cond(i < num_steps - 1, lambda: model(x, t), lambda: jnp.zeros_like(x))
    hist_m = jnp.concatenate([m_new[None], hist_m[:2]])
    hist_lam = jnp.concatenate([lam(t)[None], hist_lam[:2]])
    return (x, hist_m, hist_lam), None

  xs = (jnp.arange(num_steps), ts[:-1], ts[1:], jnp.asarray(orders))
  (x, _, _), _ = jax.lax.scan(body, (x, hist_m, hist_lam), xs)
  return x


def _singlestep(model, process, lam, x, ts, order, data_pred, taylor):
  """One singlestep update of fixed `order` per interval (intermediate points uniform in lambda)."""
  a, s = process.alpha, process.sigma

  def at(lam_value):
    return process.t_from_log_snr(lam_value)

  def step(x, t_s, t, _):
    lam_s, lam_t = lam(t_s), lam(t)
    h = lam_t - lam_s
    m_s = model(x, t_s)
    sign = -1.0 if data_pred else 1.0  # data: expm1(-h); noise: expm1(h)

    def first_order(x, t_from, t_to, hh, m):
      if data_pred:
        return s(t_to) / s(t_from) * x - a(t_to) * jnp.expm1(-hh) * m
      return a(t_to) / a(t_from) * x - s(t_to) * jnp.expm1(hh) * m

    if order == 1:
      return first_order(x, t_s, t, h, m_s)
    c_t = a(t) if data_pred else s(t)
    phi1 = jnp.expm1(sign * h)
    if order == 2:
      r1 = 0.5
      s1 = at(lam_s + r1 * h)
      m_s1 = model(first_order(x, t_s, s1, r1 * h, m_s), s1)
      out = first_order(x, t_s, t, h, m_s)
      if data_pred:
        corr = (a(t) * (phi1 / h + 1.0) / r1 if taylor else -a(t) * phi1 / (2 * r1)) * (m_s1 - m_s)
      else:
        corr = (-s(t) * (phi1 / h - 1.0) / r1 if taylor else -s(t) * phi1 / (2 * r1)) * (m_s1 - m_s)
      return out + corr
    r1, r2 = 1.0 / 3.0, 2.0 / 3.0
    s1, s2 = at(lam_s + r1 * h), at(lam_s + r2 * h)
    phi11, phi12 = jnp.expm1(sign * r1 * h), jnp.expm1(sign * r2 * h)
    phi22 = phi12 / (r2 * h) - sign
    phi2 = phi1 / h - sign
    phi3 = phi2 / h - 0.5
    c_s2 = a(s2) if data_pred else s(s2)
    x_s1 = first_order(x, t_s, s1, r1 * h, m_s)
    m_s1 = model(x_s1, s1)
    x_s2 = first_order(x, t_s, s2, r2 * h, m_s) - sign * (r2 / r1) * c_s2 * phi22 * (m_s1 - m_s)
    m_s2 = model(x_s2, s2)
    out = first_order(x, t_s, t, h, m_s)
    if taylor:
      d1_0, d1_1 = (m_s1 - m_s) / r1, (m_s2 - m_s) / r2
      d1 = (r2 * d1_0 - r1 * d1_1) / (r2 - r1)
      d2 = 2.0 * (d1_1 - d1_0) / (r2 - r1)
      return out - sign * c_t * phi2 * d1 - c_t * phi3 * d2
    return out - sign * c_t * phi2 / r2 * (m_s2 - m_s)

  return base.scan_steps(step, x, ts)
