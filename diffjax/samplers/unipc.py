"""UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of
Diffusion Models", Algorithms 1-2; official `uni_pc.py`, `multistep_uni_pc_bh_update`).

With hh = -h (data prediction) or +h (noise prediction), m the model output, s the current and t
the next time, r_k = (lambda_{p_k} - lambda_s) / h for the k-th previous point and D_k =
(m_{p_k} - m_s) / r_k:

  base        x~ = (sigma_t/sigma_s) x - alpha_t expm1(hh) m_s   (data; noise: alpha/sigma swapped)
  UniP-p      x_p = x~ - c_t B(h) sum_k rho^p_k D_k
  UniC-p      x_c = x~ - c_t B(h) (sum_k rho^c_k D_k + rho^c_p (m(x_p, t) - m_s))

c_t = alpha_t (data) or sigma_t (noise); B(h) = hh ("bh1") or expm1(hh) ("bh2"); with
g_1 = expm1(hh)/hh - 1, g_{i+1} = g_i/hh - 1/(i+1)!, b_i = i! g_i / B(h) and R_{ik} = r_k^{i-1}
(r_p = 1): rho^p solves R[:-1,:-1] rho = b[:-1] (rho^p = 1/2 for p = 2), rho^c solves R rho = b
(rho^c = 1/2 for p = 1). The model output at the predicted point is reused as the next step's
model value, so the corrector costs no extra evaluation (NFE = steps). The driver warms up with
orders 1..p-1 (corrector on), lowers the order of the final steps when `lower_order_final`
(always, no step-count threshold) and skips the corrector on the last step.
"""
import jax
import jax.numpy as jnp

from diffjax import utils
from diffjax.samplers import base

VARIANTS = ("bh1", "bh2")


def _coefficients(hh, rks, variant):
  """rho^p and rho^c of UniP-p / UniC-p for ratios `rks` (last entry 1)."""
  p = len(rks)
  b_h = hh if variant == "bh1" else jnp.expm1(hh)
  g = jnp.expm1(hh) / hh - 1.0
  rows, b = [], []
  factorial = 1
  for i in range(1, p + 1):
    rows.append(jnp.stack([r**(i - 1) for r in rks]))
    b.append(g * factorial / b_h)
    factorial *= i + 1
    g = g / hh - 1.0 / factorial
  R, b = jnp.stack(rows), jnp.stack(b)
  if p == 1:
    rho_p = jnp.zeros((0,), hh.dtype)
    rho_c = jnp.full((1,), 0.5, hh.dtype)
  else:
    rho_p = jnp.full((1,), 0.5, hh.dtype) if p == 2 else jnp.linalg.solve(R[:-1, :-1], b[:-1])
    rho_c = jnp.linalg.solve(R, b)
  return b_h, rho_p, rho_c


def unipc(denoiser, x, ts, *, process, order=2, variant="bh2", predict_x0=True, lower_order_final=True,
          use_corrector=True, denoise_to_zero=False, dc_ratios=None, key=None):
  """UniPC multistep sampling with the B(h) variants over `ts` (noise to data), one lax.scan.

  Args:
    denoiser: `D(x, t)`.
    x: state at ts[0].
    ts: times from noise to data (sigma(ts[-1]) > 0).
    process: the noise process.
    order: 1, 2 or 3 (UniC raises the accuracy to order + 1).
    variant: "bh1" (B(h) = h) or "bh2" (B(h) = e^h - 1).
    predict_x0: data prediction (True) or noise prediction (False).
    lower_order_final: lower the order of the final steps (as the reference, for any step count).
    use_corrector: apply UniC after each predictor step but the last (False: UniP only).
    dc_ratios: DC-Solver's dynamic compensation ratios, one per step (see `dc_solver`); None: off.
    denoise_to_zero: append a final first-order step to sigma = 0, which returns the x0 estimate
      at the last predicted point (as diffusers' `final_sigmas_type="zero"`); the step before it
      is then corrected, and `lower_order_final` counts it.
    key: unused (deterministic).

  Returns:
    The state at ts[-1].
  """
  del key
  if order not in (1, 2, 3):
    raise ValueError(f"unipc: order must be 1, 2 or 3, got {order!r}")
  if variant not in VARIANTS:
    raise ValueError(f"unipc: unknown variant {variant!r}; valid: {VARIANTS}")
  ts = base.check_times(ts).astype(x.dtype)
  num_steps = ts.shape[0] - 1
  total = num_steps + int(denoise_to_zero)
  orders = []
  for k in range(1, num_steps + 1):
    o = min(order, k)
    if lower_order_final and k >= order:
      o = min(order, total + 1 - k)
    orders.append(o)

  def model(x, t):
    t_b = utils.batch_times(t, x)
    x0 = denoiser(x, t_b)
    if predict_x0:
      return x0
    return (x - utils.expand_to(process.alpha(t_b), x) * x0) / utils.expand_to(process.sigma(t_b), x)

  def make_branch(p):
    def branch(x, t_s, t, ms, lams):
      lam_s, lam_t = lams[0], process.log_snr(t)
      h = lam_t - lam_s
      hh = -h if predict_x0 else h
      a_s, s_s, a_t, s_t = process.alpha(t_s), process.sigma(t_s), process.alpha(t), process.sigma(t)
      rks = [(lams[k] - lam_s) / h for k in range(1, p)] + [jnp.ones((), x.dtype)]
      d1s = [(ms[k] - ms[0]) / rks[k - 1] for k in range(1, p)]
      b_h, rho_p, rho_c = _coefficients(hh, rks, variant)
      c_t = a_t if predict_x0 else s_t
      if predict_x0:
        x_base = s_t / s_s * x - a_t * jnp.expm1(hh) * ms[0]
      else:
        x_base = a_t / a_s * x - s_t * jnp.expm1(hh) * ms[0]
      pred_res = sum((rho_p[k] * d1s[k] for k in range(p - 1)), jnp.zeros_like(x))
      corr_res = sum((rho_c[k] * d1s[k] for k in range(p - 1)), jnp.zeros_like(x))
      x_pred = x_base - c_t * b_h * pred_res
      return x_base, x_pred, c_t * b_h * rho_c[-1], corr_res * c_t * b_h
    return branch

  branches = [make_branch(p) for p in (1, 2, 3)]
  hist_m = jnp.zeros((3,) + x.shape, x.dtype).at[0].set(model(x, ts[0]))
  hist_lam = jnp.zeros((3,), x.dtype).at[0].set(process.log_snr(ts[0]))

  def body(carry, inputs):
    x, hist_m, hist_lam = carry
    i, t_s, t, step_order, ratio = inputs
    hist_m_step = hist_m if dc_ratios is None else _compensate(hist_m, hist_lam, ratio, i)
    x_base, x_pred, coef_t, corr = jax.lax.switch(step_order - 1, branches, x, t_s, t, hist_m_step, hist_lam)
    is_last = (i == num_steps - 1) & (not denoise_to_zero)
    m_t = jax.lax.cond(is_last, lambda: jnp.zeros_like(x), lambda: model(x_pred, t))
    x_corr = x_base - corr - coef_t * (m_t - hist_m_step[0])
    x_new = jnp.where(is_last | (not use_corrector), x_pred, x_corr)
    hist_m = jnp.concatenate([m_t[None], hist_m[:2]])
    hist_lam = jnp.concatenate([process.log_snr(t)[None], hist_lam[:2]])
    return (x_new, hist_m, hist_lam), None

  def _compensate(hist_m, hist_lam, ratio, i):
    """DC-Solver: the newest output replaced by the Lagrange interpolant of the last three outputs
    (in time t) at t' = t_{-1} + ratio (t_0 - t_{-1}); only once three outputs exist."""
    times = process.t_from_log_snr(hist_lam)
    t_prime = times[1] + ratio * (times[0] - times[1])
    m = jnp.zeros_like(hist_m[0])
    for k in range(3):
      w = jnp.prod(jnp.stack([(t_prime - times[j]) / (times[k] - times[j]) for j in range(3) if j != k]))
      m = m + w * hist_m[k]
    return hist_m.at[0].set(jnp.where(i >= 2, m, hist_m[0]))

  ratios = jnp.ones((num_steps,), x.dtype) if dc_ratios is None else jnp.asarray(dc_ratios, x.dtype)
  if ratios.shape != (num_steps,):
    raise ValueError(f"unipc: dc_ratios must have one ratio per step ({num_steps}), got shape {ratios.shape}")
  xs = (jnp.arange(num_steps), ts[:-1], ts[1:], jnp.asarray(orders), ratios)
  (x, hist_m, _), _ = jax.lax.scan(body, (x, hist_m, hist_lam), xs)
  if denoise_to_zero:  # first-order step to sigma = 0 from the last model value (at the predicted point)
    if predict_x0:
      return hist_m[0]
    # The noise-prediction update to sigma = 0 needs x0 = (x_p - sigma eps) / alpha at the predicted
    # point; the corrected x and the eps of the predicted point give the same first-order limit.
    t = ts[-1]
    return (x - process.sigma(t) * hist_m[0]) / process.alpha(t)
  return x
