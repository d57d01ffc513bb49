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
METHODS = ("multistep", "singlestep", "adaptive")
SOLVER_TYPES = ("dpmsolver", "taylor", "midpoint", "heun")


def dynamic_thresholding(x0, percentile=0.995, max_val=1.0):
  """Imagen's dynamic thresholding as DPM-Solver implements it (Saharia et al. 2022, sec. 2.3).

  s = quantile_p(|x0|) per sample, s = max(s, max_val), x0 <- clip(x0, -s, s) / s.
  """
  flat = jnp.abs(x0.reshape(x0.shape[0], -1))
  s = jnp.maximum(jnp.quantile(flat, percentile, axis=1), max_val)
  s = utils.expand_to(s, x0)
  return jnp.clip(x0, -s, s) / s


def model_output_fn(denoiser, process, data_pred, thresholding=False, percentile=0.995, max_val=1.0):
  """`m(x, t)`: the (thresholded) x0 prediction for DPM-Solver++, the noise prediction otherwise."""

  def model(x, t):
    t_b = utils.batch_times(t, x)
    x0 = denoiser(x, t_b)
    if thresholding:
      x0 = dynamic_thresholding(x0, percentile, max_val)
    if data_pred:
      return x0
    return (x - utils.expand_to(process.alpha(t_b), x) * x0) / utils.expand_to(process.sigma(t_b), x)

  return model


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
               corrected_3m=False, lower_order_final_threshold=10, atol=0.0078, rtol=0.05, h_init=0.05,
               theta=0.9, t_err=1e-5, max_evals=10_000, key=None):
  """DPM-Solver / DPM-Solver++ over the grid `ts` (noise to data), one compiled loop.

  Args:
    denoiser: `D(x, t)`; the noise prediction is (x - alpha D) / sigma.
    x: state at ts[0].
    ts: times from noise to data, sigma(ts[-1]) > 0.
    process: the noise process.
    order: 1, 2 or 3.
    method: "multistep", "singlestep" or "adaptive" (DPM-Solver-12 / -23).
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
    atol, rtol, h_init, theta, t_err, max_evals: the adaptive method's tolerances (reference
      defaults 0.0078, 0.05), initial step in lambda, safety factor, end-time tolerance and budget
      (method="adaptive" uses only ts[0] and ts[-1]).
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

  model = model_output_fn(denoiser, process, data_pred, thresholding, thresholding_percentile,
                          thresholding_max_val)

  lam = lambda t: process.log_snr(t)

  if method == "adaptive":
    if order not in (2, 3):
      raise ValueError(f"dpm_solver: method='adaptive' needs order 2 or 3, got {order}")
    out, _ = _adaptive(model, process, lam, x, ts[0], ts[-1], order, data_pred, second_is_taylor, atol=atol,
                       rtol=rtol, h_init=h_init, theta=theta, t_err=t_err, max_evals=max_evals)
  elif method == "multistep":
    out = _multistep(model, process, lam, x, ts, order, data_pred, sde, second_is_taylor,
                     multistep_orders(ts.shape[0] - 1, order, lower_order_final, lower_order_final_threshold),
                     corrected_3m, key)
  else:
    out = _singlestep(model, process, lam, x, ts, order, data_pred, second_is_taylor)
  if denoise_to_zero:
    m = model(out, ts[-1])
    out = m if data_pred else (out - process.sigma(ts[-1]) * m) / process.alpha(ts[-1])
  return out


def _multistep(model, process, lam, x, ts, order, data_pred, sde, taylor, orders, corrected_3m, key,
               shift_fn=None):
  """The reference multistep driver as one lax.scan with a fixed-size history (newest first).

  Times are kept per sample (shape (B,)) so that `shift_fn(step, t_next, m_prev) -> t_next` can
  move each sample's next time (the Time-Shift sampler); it is applied from step `order` on, as in
  the TS-DPM fork, and the shifted time is also the next model-evaluation time.
  """
  dtype = x.dtype
  ts = ts.astype(dtype)
  col = lambda v: utils.expand_to(v, x)
  t0 = utils.batch_times(ts[0], x)
  hist_m = jnp.zeros((3,) + x.shape, dtype).at[0].set(model(x, t0))
  hist_t = jnp.zeros((3,) + t0.shape, dtype).at[0].set(t0)
  hist_lam = jnp.zeros((3,) + t0.shape, dtype).at[0].set(lam(t0))
  num_steps = ts.shape[0] - 1

  def update(x, t_s, t, ms, lams, step_order, noise):
    lam_s, lam_t = lams[0], lam(t)
    h = col(lam_t - lam_s)
    a_s, s_s, a_t, s_t = (col(f(u)) for f, u in ((process.alpha, t_s), (process.sigma, t_s),
                                                   (process.alpha, t), (process.sigma, t)))
    m0, m1, m2 = ms[0], ms[1], ms[2]
    r0 = col((lam_s - lams[1])) / h
    r1 = col((lams[1] - lams[2])) / h
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
    x, hist_m, hist_t, hist_lam = carry
    i, t_next, step_order = inputs
    t = utils.batch_times(t_next, x)
    if shift_fn is not None:
      t = jnp.where(i + 1 >= order, shift_fn(i, t, hist_m[0]), t)
    noise = (jax.random.normal(jax.random.fold_in(key, i), x.shape, dtype) if sde else jnp.zeros((), dtype))
    x = update(x, hist_t[0], t, hist_m, hist_lam, step_order, noise)
    # Evaluate the model at the new point, except after the final step (NFE = steps).
    m_new = jax.lax.cond(i < num_steps - 1, lambda: model(x, t), lambda: jnp.zeros_like(x))
    hist_m = jnp.concatenate([m_new[None], hist_m[:2]])
    hist_t = jnp.concatenate([t[None], hist_t[:2]])
    hist_lam = jnp.concatenate([lam(t)[None], hist_lam[:2]])
    return (x, hist_m, hist_t, hist_lam), None

  xs = (jnp.arange(num_steps), ts[1:], jnp.asarray(orders))
  (x, _, _, _), _ = jax.lax.scan(body, (x, hist_m, hist_t, hist_lam), xs)
  return x


class _Singlestep:
  """DPM-Solver's singlestep updates from s to t (orders 1-3, any r's), sharing model values."""

  def __init__(self, model, process, data_pred, taylor):
    self.model, self.process, self.data_pred, self.taylor = model, process, data_pred, taylor
    self.sign = -1.0 if data_pred else 1.0  # data: expm1(-h); noise: expm1(h)

  def _c(self, t):
    return self.process.alpha(t) if self.data_pred else self.process.sigma(t)

  def first(self, x, t_from, t_to, h, m):
    a, s = self.process.alpha, self.process.sigma
    if self.data_pred:
      return s(t_to) / s(t_from) * x - a(t_to) * jnp.expm1(-h) * m
    return a(t_to) / a(t_from) * x - s(t_to) * jnp.expm1(h) * m

  def _at(self, t_s, h, r):
    return self.process.t_from_log_snr(self.process.log_snr(t_s) + r * h)

  def second(self, x, t_s, t, h, m_s, r1=0.5):
    """DPM-Solver-2 (singlestep); returns (x_t, m_s1, x_s1)."""
    s1 = self._at(t_s, h, r1)
    x_s1 = self.first(x, t_s, s1, r1 * h, m_s)
    m_s1 = self.model(x_s1, s1)
    phi1 = jnp.expm1(self.sign * h)
    c_t = self._c(t)
    if self.taylor:
      corr = -self.sign * c_t * (phi1 / h - self.sign) / r1 * (m_s1 - m_s)
    else:
      corr = -c_t * phi1 / (2 * r1) * (m_s1 - m_s)
    return self.first(x, t_s, t, h, m_s) + corr, m_s1

  def third(self, x, t_s, t, h, m_s, r1=1.0 / 3.0, r2=2.0 / 3.0, m_s1=None):
    """DPM-Solver-3 (singlestep); reuses m_s1 when given."""
    sign, c_t = self.sign, self._c(t)
    s1, s2 = self._at(t_s, h, r1), self._at(t_s, h, r2)
    if m_s1 is None:
      m_s1 = self.model(self.first(x, t_s, s1, r1 * h, m_s), s1)
    phi1 = jnp.expm1(sign * h)
    phi12 = jnp.expm1(sign * r2 * h)
    phi22 = phi12 / (r2 * h) - sign
    phi2 = phi1 / h - sign
    phi3 = phi2 / h - 0.5
    x_s2 = self.first(x, t_s, s2, r2 * h, m_s) - sign * (r2 / r1) * self._c(s2) * phi22 * (m_s1 - m_s)
    m_s2 = self.model(x_s2, s2)
    out = self.first(x, t_s, t, h, m_s)
    if self.taylor:
      d1_0, d1_1 = (m_s1 - m_s) / r1, (m_s2 - m_s) / r2
      d1 = (r2 * d1_0 - r1 * d1_1) / (r2 - r1)
      d2 = 2.0 * (d1_1 - d1_0) / (r2 - r1)
      return out - sign * c_t * phi2 * d1 - c_t * phi3 * d2
    return out - sign * c_t * phi2 / r2 * (m_s2 - m_s)


def _singlestep(model, process, lam, x, ts, order, data_pred, taylor):
  """One singlestep update of fixed `order` per interval (intermediate points uniform in lambda)."""
  solver = _Singlestep(model, process, data_pred, taylor)

  def step(x, t_s, t, _):
    h = lam(t) - lam(t_s)
    m_s = model(x, t_s)
    if order == 1:
      return solver.first(x, t_s, t, h, m_s)
    if order == 2:
      return solver.second(x, t_s, t, h, m_s)[0]
    return solver.third(x, t_s, t, h, m_s)

  return base.scan_steps(step, x, ts)


def _adaptive(model, process, lam, x, t_start, t_end, order, data_pred, taylor, *, atol, rtol, h_init, theta,
              t_err, max_evals):
  """DPM-Solver-12 / -23 (Lu et al. 2022a, Algorithm 4): an embedded pair in one while_loop.

  Order 2 pairs DPM-Solver-1 with DPM-Solver-2 (r1 = 1/2); order 3 pairs DPM-Solver-2 (r1 = 1/3)
  with DPM-Solver-3 (1/3, 2/3), the higher reusing the lower's evaluations. With
  delta = max(atol, rtol max(|x_lower|, |x_prev|)) and E = max over the batch of the RMS of
  (x_higher - x_lower) / delta, a step is accepted when E <= 1; then h <- min(theta h E^(-1/order),
  lambda_end - lambda_s).
  """
  solver = _Singlestep(model, process, data_pred, taylor)
  lam_end = lam(t_end)
  nfe_per_try = order

  def rms(v):
    return jnp.sqrt(jnp.mean(v.reshape(v.shape[0], -1)**2, axis=-1))

  def cond(state):
    x, x_prev, s, h, nfe = state
    return (jnp.abs(s - t_end) > t_err) & (nfe < max_evals)

  def body(state):
    x, x_prev, s, h, nfe = state
    t = process.t_from_log_snr(lam(s) + h)
    m_s = model(x, s)
    if order == 2:
      x_lower = solver.first(x, s, t, h, m_s)
      x_higher, _ = solver.second(x, s, t, h, m_s, r1=0.5)
    else:
      x_lower, m_s1 = solver.second(x, s, t, h, m_s, r1=1.0 / 3.0)
      x_higher = solver.third(x, s, t, h, m_s, 1.0 / 3.0, 2.0 / 3.0, m_s1=m_s1)
    delta = jnp.maximum(atol, rtol * jnp.maximum(jnp.abs(x_lower), jnp.abs(x_prev)))
    err = jnp.max(rms((x_higher - x_lower) / delta))
    accept = err <= 1.0
    x, x_prev, s = (jnp.where(accept, x_higher, x), jnp.where(accept, x_lower, x_prev), jnp.where(accept, t, s))
    h = jnp.minimum(theta * h * jnp.power(jnp.maximum(err, 1e-10), -1.0 / order), lam_end - lam(s))
    return x, x_prev, s, h, nfe + nfe_per_try

  dtype = x.dtype
  state = (x, x, jnp.asarray(t_start, dtype), jnp.asarray(h_init, dtype), jnp.zeros((), jnp.int32))
  x, _, _, _, nfe = jax.lax.while_loop(cond, body, state)
  return x, nfe
