"""The IDDPM hybrid loss (L_simple + L_vlb) and the learned-variance ancestral sampler (float64).

Oracles:
  * closed-form and Monte Carlo Gaussian KL; exact normal bin probabilities;
  * the posterior q(x_{t-1} | x_t, x_0) by conditioning the joint Gaussian of (x_{t-1}, x_t) | x_0
    built from the betas;
  * point-mass data x_0 = c, for which eps = (x_t - sqrt(abar_t) c) / sqrt(1 - abar_t) is exact
    and q(x_{t-1} | x_t, x_0 = c) is the true reverse kernel (learned range v = -1);
  * Gaussian data N(m, s^2), for which the true reverse kernel is Gaussian with mean
    mu~(x_t, E[x_0 | x_t]) and variance beta~_t + coef1_t^2 Var(x_0 | x_t), so the sampler is a
    linear-Gaussian recursion whose output law is computed exactly;
  * numpy transcriptions of the reference (`facebookresearch/DiT` `diffusion/`, identical to
    `openai/improved-diffusion`): `discretized_gaussian_log_likelihood`, `_vb_terms_bpd`,
    `space_timesteps`, `SpacedDiffusion` and `p_sample_loop` (fed the sampler's own noise, which
    `ddpm_learned_variance` documents as `fold_in(key, s)` for the s-th step).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from diffjax import processes as P
from diffjax.losses import vlb
from diffjax.samplers import learned_variance as lv

LINEAR_1000 = P.VPDiscrete.from_ddpm("linear", 1000)
# The reference's "linear" schedule scaled to N steps (get_named_beta_schedule: scale = 1000 / N).
LINEAR_50 = P.VPDiscrete.from_ddpm("linear", 50, beta_start=20 * 1e-4, beta_end=20 * 0.02)
COSINE_10 = P.VPDiscrete.from_ddpm("cosine", 10)
COSINE_20 = P.VPDiscrete.from_ddpm("cosine", 20)
GRID = np.arange(256) / 127.5 - 1.0  # uint8 values scaled to [-1, 1]


# --- numpy transcriptions of the reference ----------------------------------------------------
def _ref_cdf(x):
  return 0.5 * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * np.power(x, 3))))


def _ref_dgll(x, means, log_scales):
  centered_x = x - means
  inv_stdv = np.exp(-log_scales)
  cdf_plus = _ref_cdf(inv_stdv * (centered_x + 1.0 / 255.0))
  cdf_min = _ref_cdf(inv_stdv * (centered_x - 1.0 / 255.0))
  log_cdf_plus = np.log(np.clip(cdf_plus, 1e-12, None))
  log_one_minus_cdf_min = np.log(np.clip(1.0 - cdf_min, 1e-12, None))
  cdf_delta = cdf_plus - cdf_min
  return np.where(x < -0.999, log_cdf_plus,
                  np.where(x > 0.999, log_one_minus_cdf_min, np.log(np.clip(cdf_delta, 1e-12, None))))


def _ref_tables(betas):
  betas = np.array(betas, dtype=np.float64)
  alphas = 1.0 - betas
  ac = np.cumprod(alphas, axis=0)
  ac_prev = np.append(1.0, ac[:-1])
  pv = betas * (1.0 - ac_prev) / (1.0 - ac)
  return dict(betas=betas, ac=ac, sqrt_recip=np.sqrt(1.0 / ac), sqrt_recipm1=np.sqrt(1.0 / ac - 1),
              pv=pv, plv=np.log(np.append(pv[1], pv[1:])),
              c1=betas * np.sqrt(ac_prev) / (1.0 - ac), c2=(1.0 - ac_prev) * np.sqrt(alphas) / (1.0 - ac))


def _bcast(a, t, ndim):
  return a[t].reshape((-1,) + (1,) * (ndim - 1))


def _ref_p_mean_variance(T, out, x, t, clip):
  c = x.shape[-1]
  eps, v = out[..., :c], out[..., c:]
  min_log, max_log = _bcast(T["plv"], t, x.ndim), _bcast(np.log(T["betas"]), t, x.ndim)
  frac = (v + 1) / 2
  log_var = frac * max_log + (1 - frac) * min_log
  x0 = _bcast(T["sqrt_recip"], t, x.ndim) * x - _bcast(T["sqrt_recipm1"], t, x.ndim) * eps
  if clip:
    x0 = np.clip(x0, -1, 1)
  mean = _bcast(T["c1"], t, x.ndim) * x0 + _bcast(T["c2"], t, x.ndim) * x
  return mean, log_var


def _ref_vb_terms_bpd(T, out, x0, x_t, t):
  true_mean = _bcast(T["c1"], t, x_t.ndim) * x0 + _bcast(T["c2"], t, x_t.ndim) * x_t
  true_lv = _bcast(T["plv"], t, x_t.ndim)
  mean, log_var = _ref_p_mean_variance(T, out, x_t, t, False)
  kl = 0.5 * (-1.0 + log_var - true_lv + np.exp(true_lv - log_var) + (true_mean - mean)**2 * np.exp(-log_var))
  kl = kl.reshape(len(t), -1).mean(1) / np.log(2.0)
  nll = -_ref_dgll(x0, mean, 0.5 * log_var * np.ones_like(x0))
  nll = nll.reshape(len(t), -1).mean(1) / np.log(2.0)
  return np.where(t == 0, nll, kl)


def _ref_space_timesteps(num_timesteps, section_counts):
  if isinstance(section_counts, str):
    if section_counts.startswith("ddim"):
      desired_count = int(section_counts[len("ddim"):])
      for i in range(1, num_timesteps):
        if len(range(0, num_timesteps, i)) == desired_count:
          return set(range(0, num_timesteps, i))
      raise ValueError("no stride")
    section_counts = [int(x) for x in section_counts.split(",")]
  size_per = num_timesteps // len(section_counts)
  extra = num_timesteps % len(section_counts)
  start_idx = 0
  all_steps = []
  for i, section_count in enumerate(section_counts):
    size = size_per + (1 if i < extra else 0)
    frac_stride = 1 if section_count <= 1 else (size - 1) / (section_count - 1)
    cur_idx = 0.0
    for _ in range(section_count):
      all_steps.append(start_idx + round(cur_idx))
      cur_idx += frac_stride
    start_idx += size
  return set(all_steps)


def _ref_respace(betas, use_timesteps):
  """SpacedDiffusion.__init__: (new betas, timestep_map)."""
  last, new_betas, timestep_map = 1.0, [], []
  for i, alpha_cumprod in enumerate(np.cumprod(1.0 - np.asarray(betas))):
    if i in use_timesteps:
      new_betas.append(1 - alpha_cumprod / last)
      last = alpha_cumprod
      timestep_map.append(i)
  return np.array(new_betas), timestep_map


def _ref_p_sample_loop(model, noise, zs, betas, timestep_map, clip):
  """p_sample_loop of SpacedDiffusion(LEARNED_RANGE), the model called through _WrappedModel."""
  T = _ref_tables(betas)
  img = noise
  for s, i in enumerate(range(len(betas))[::-1]):
    t = np.full(img.shape[0], i)
    out = model(img, np.asarray(timestep_map)[t])
    mean, log_var = _ref_p_mean_variance(T, out, img, t, clip)
    nonzero = (t != 0).astype(float).reshape(-1, *([1] * (img.ndim - 1)))
    img = mean + nonzero * np.exp(0.5 * log_var) * zs[s]
  return img


@jax.jit
def _dgll(x, means, log_scales):
  return vlb.discretized_gaussian_log_likelihood(x, means=means, log_scales=log_scales)


# --- Gaussian helpers -------------------------------------------------------------------------
def test_normal_kl_closed_form_monte_carlo_and_zero(x64):
  rng = np.random.default_rng(0)
  m1, m2, lv1, lv2 = rng.normal(size=(4, 40))
  s1, s2 = np.exp(lv1 / 2), np.exp(lv2 / 2)
  closed = np.log(s2 / s1) + (s1**2 + (m1 - m2)**2) / (2 * s2**2) - 0.5
  np.testing.assert_allclose(vlb.normal_kl(m1, lv1, m2, lv2), closed, rtol=1e-12, atol=1e-14)
  # Equal Gaussians, and scalars broadcasting against arrays (KL to N(0, 1)).
  np.testing.assert_allclose(vlb.normal_kl(m1, lv1, m1, lv1), np.zeros(40), atol=1e-15)
  np.testing.assert_allclose(vlb.normal_kl(m1, lv1, 0.0, 0.0), 0.5 * (-1 - lv1 + s1**2 + m1**2), rtol=1e-12)
  # Monte Carlo: E_{x ~ p1}[log p1(x) - log p2(x)] within 5 standard errors.
  n = 200_000
  for j in range(3):
    x = m1[j] + s1[j] * rng.normal(size=n)
    log_ratio = stats.norm.logpdf(x, m1[j], s1[j]) - stats.norm.logpdf(x, m2[j], s2[j])
    se = log_ratio.std() / np.sqrt(n)
    assert abs(log_ratio.mean() - float(vlb.normal_kl(m1[j], lv1[j], m2[j], lv2[j]))) < 5 * se


@pytest.mark.parametrize("mean,log_scale", [(0.0, np.log(0.1)), (0.3, np.log(0.5)), (-0.95, np.log(0.3)),
                                            (0.999, np.log(2.0)), (0.2, np.log(0.003))])
def test_discretized_likelihood_sums_to_one_and_matches_reference(x64, mean, log_scale):
  logp = _dgll(GRID, np.full(256, mean), np.full(256, log_scale))
  # The 256 bins partition the real line (the edges extend to -inf / +inf), and the CDF
  # telescopes; each clamped bin adds at most 1e-12.
  assert abs(float(jnp.sum(jnp.exp(logp))) - 1.0) < 256e-12
  # In the far tails cdf_plus - cdf_min cancels, so compare probabilities, not their logs.
  np.testing.assert_allclose(np.exp(logp), np.exp(_ref_dgll(GRID, mean, log_scale)), rtol=1e-10, atol=1e-15)
  # Against exact normal bin probabilities (the tanh CDF is within 1.8e-4 of Phi).
  scale = np.exp(log_scale)
  upper = np.append(GRID[:-1] + 1 / 255, np.inf)
  lower = np.append(-np.inf, GRID[1:] - 1 / 255)
  exact = stats.norm.cdf(upper, mean, scale) - stats.norm.cdf(lower, mean, scale)
  np.testing.assert_allclose(np.exp(logp), exact, atol=4e-4)


def test_discretized_likelihood_elementwise_matches_reference(x64):
  rng = np.random.default_rng(1)
  x = GRID[rng.integers(0, 256, size=(3, 4, 4, 2))]
  x[0, 0, 0] = [-1.0, 1.0]
  means = rng.uniform(-1.2, 1.2, size=x.shape)
  log_scales = rng.uniform(-7, 0.5, size=x.shape)
  got = _dgll(x, means, log_scales)
  np.testing.assert_allclose(np.exp(got), np.exp(_ref_dgll(x, means, log_scales)), rtol=1e-10, atol=1e-15)
  with pytest.raises(ValueError, match="broadcast"):
    vlb.discretized_gaussian_log_likelihood(jnp.zeros((2, 3)), means=jnp.zeros((4,)), log_scales=0.0)


# --- the tables -------------------------------------------------------------------------------
@pytest.mark.parametrize("process", [LINEAR_1000, COSINE_20], ids=["linear1000", "cosine20"])
def test_posterior_is_gaussian_conditioning_of_the_chain(x64, process):
  betas = np.asarray(process.betas)
  tables = vlb.DiscreteTables.from_process(process)
  n = len(betas)
  c1, c2, var = np.zeros(n), np.zeros(n), np.zeros(n)
  for t in range(n):
    abar_prev = np.prod(1 - betas[:t])
    abar = abar_prev * (1 - betas[t])
    # (x_{t-1}, x_t) | x_0 from x_{t-1} = sqrt(abar_prev) x_0 + sqrt(1 - abar_prev) e1,
    # x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) e2.
    s11 = 1 - abar_prev
    s12 = np.sqrt(1 - betas[t]) * s11
    s22 = (1 - betas[t]) * s11 + betas[t]
    gain = s12 / s22
    var[t] = s11 - gain * s12
    c2[t] = gain
    c1[t] = np.sqrt(abar_prev) - gain * np.sqrt(abar)
  np.testing.assert_allclose(tables.posterior_mean_coef1, c1, rtol=1e-9, atol=1e-15)
  np.testing.assert_allclose(tables.posterior_mean_coef2, c2, rtol=1e-9, atol=1e-15)
  np.testing.assert_allclose(tables.posterior_variance, var, rtol=1e-9, atol=1e-15)
  assert tables.posterior_variance[0] == 0.0 and abs(tables.posterior_mean_coef1[0] - 1.0) < 1e-12
  np.testing.assert_allclose(tables.posterior_log_variance_clipped,
                             np.log(np.append(var[1], var[1:])), rtol=1e-9)
  # The same through q_posterior_mean_variance on a batch.
  rng = np.random.default_rng(2)
  t = np.array([0, 1, n // 2, n - 1])
  x0, x_t = rng.normal(size=(2, 4, 3, 2))
  mean, variance, log_variance = vlb.q_posterior_mean_variance(jnp.asarray(x0), jnp.asarray(x_t), jnp.asarray(t),
                                                               tables)
  np.testing.assert_allclose(mean, c1[t, None, None] * x0 + c2[t, None, None] * x_t, rtol=1e-9, atol=1e-14)
  np.testing.assert_allclose(np.broadcast_to(variance, x0.shape), np.broadcast_to(var[t, None, None], x0.shape),
                             rtol=1e-9, atol=1e-15)
  assert log_variance.shape == (4, 1, 1)


def test_learned_range_endpoints_and_errors(x64):
  tables = vlb.DiscreteTables.from_process(LINEAR_1000)
  t = jnp.array([0, 1, 500, 999])
  lo, hi = tables.posterior_log_variance_clipped[np.asarray(t)], np.log(tables.betas[np.asarray(t)])
  ones = jnp.ones((4, 2))
  np.testing.assert_allclose(vlb.learned_range_log_variance(-ones, t, tables), np.broadcast_to(lo[:, None], (4, 2)))
  np.testing.assert_allclose(vlb.learned_range_log_variance(ones, t, tables), np.broadcast_to(hi[:, None], (4, 2)))
  np.testing.assert_allclose(vlb.learned_range_log_variance(0 * ones, t, tables),
                             np.broadcast_to((lo + hi)[:, None] / 2, (4, 2)), rtol=1e-13)
  # at t = 0 the lower end is log beta~_1, not log 0
  assert np.isfinite(lo[0]) and lo[0] == np.log(tables.posterior_variance[1])
  with pytest.raises(ValueError, match="VPDiscrete"):
    vlb.DiscreteTables.from_process(P.VP())


# --- vb terms ---------------------------------------------------------------------------------
def _point_mass_eps(x_t, t, c, abar):
  a = jnp.asarray(abar)[t].reshape((-1,) + (1,) * (x_t.ndim - 1))
  return (x_t - jnp.sqrt(a) * c) / jnp.sqrt(1 - a)


def test_vb_terms_vanish_at_the_exact_posterior_for_point_mass_data(x64):
  tables = vlb.DiscreteTables.from_process(LINEAR_1000)
  abar = np.cumprod(1 - np.asarray(LINEAR_1000.betas))
  c = jnp.asarray(GRID[np.array([[0, 40], [128, 255]])])[None, :, :, None]  # (1, 2, 2, 1), includes +-1
  t = jnp.array([0, 1, 2, 10, 500, 999])
  x0 = jnp.broadcast_to(c, (6, 2, 2, 1))
  noise = jnp.asarray(np.random.default_rng(0).normal(size=x0.shape))

  @jax.jit
  def run(v):
    x_t = vlb.q_sample(x0, t, noise, tables)
    eps = _point_mass_eps(x_t, t, c, abar)
    return x_t, vlb.vb_terms_bpd(eps, jnp.full_like(eps, v), x0, x_t, t, tables)

  x_t, out = run(-1.0)
  np.testing.assert_allclose(x_t, np.sqrt(abar[np.asarray(t)])[:, None, None, None] * x0
                             + np.sqrt(1 - abar[np.asarray(t)])[:, None, None, None] * noise, rtol=1e-12)
  assert out.shape == (6,)
  assert np.max(np.abs(out[1:])) < 1e-9, out
  # t = 0: the decoder NLL of c under N(c, beta~_1), pixel bins of half-width 1/255.
  std = np.sqrt(tables.posterior_variance[1])
  interior = -np.log(_ref_cdf(1 / 255 / std) - _ref_cdf(-1 / 255 / std))
  edge = -np.log(_ref_cdf(1 / 255 / std))
  np.testing.assert_allclose(out[0], (2 * edge + 2 * interior) / 4 / np.log(2), rtol=1e-9)
  # With v = 0.3 the KL is that of two Gaussians with equal means: 0.5 (-1 + d + exp(-d)) / log 2,
  # d = log Sigma_theta - log beta~_t = 0.65 (log beta_t - log beta~_t).
  _, out = run(0.3)
  tn = np.asarray(t)[1:]
  d = 0.65 * (np.log(tables.betas[tn]) - np.log(tables.posterior_variance[tn]))
  np.testing.assert_allclose(out[1:], 0.5 * (-1 + d + np.exp(-d)) / np.log(2), rtol=1e-7)
  assert np.all(out[1:4] > 1e-3)


def test_vb_terms_match_the_reference_transcription(x64):
  rng = np.random.default_rng(3)
  tables = vlb.DiscreteTables.from_process(COSINE_20)
  t = np.array([0, 0, 1, 5, 19, 12])
  x0 = GRID[rng.integers(0, 256, size=(6, 3, 3, 2))]
  x_t = rng.normal(size=x0.shape)
  out = rng.normal(size=(6, 3, 3, 4))
  out[..., 2:] = np.tanh(out[..., 2:])
  got = jax.jit(lambda e, v, x0, x_t, t: vlb.vb_terms_bpd(e, v, x0, x_t, t, tables))(
      out[..., :2], out[..., 2:], x0, x_t, t)
  np.testing.assert_allclose(got, _ref_vb_terms_bpd(_ref_tables(COSINE_20.betas), out, x0, x_t, t), rtol=1e-10)


# --- hybrid loss ------------------------------------------------------------------------------
def test_hybrid_loss_at_the_exact_model_is_the_decoder_term(x64):
  abar = np.cumprod(1 - np.asarray(COSINE_10.betas))
  tables = vlb.DiscreteTables.from_process(COSINE_10)
  c = jnp.asarray(GRID[np.array([[3, 255], [0, 200]])])[None, :, :, None]
  x0 = jnp.broadcast_to(c, (64, 2, 2, 1))
  seen = []

  @jax.jit
  def run(delta):
    def model(x_t, t):
      seen.append(t.dtype)
      eps = _point_mass_eps(x_t, t, c, abar)
      return jnp.concatenate([eps + delta, -jnp.ones_like(eps)], -1)
    return vlb.hybrid_loss(model, x0, jax.random.PRNGKey(1), process=COSINE_10)

  # An eps error delta per pixel: mse = mean(delta^2) = 0.035 for every example.
  delta = jnp.array([[0.1, -0.2], [0.3, 0.0]])[None, :, :, None]
  _, aux = run(delta)
  np.testing.assert_allclose(aux["mse"], 0.035, rtol=1e-12)
  loss, aux = run(0 * delta)
  t = np.asarray(aux["t"])
  assert jnp.issubdtype(seen[0], jnp.integer) and t.min() >= 0 and t.max() <= 9
  assert (t == 0).sum() >= 1 and len(np.unique(t)) == 10
  std = np.sqrt(tables.posterior_variance[1])
  nll0 = (-2 * np.log(_ref_cdf(1 / 255 / std)) - 2 * np.log(_ref_cdf(1 / 255 / std) - _ref_cdf(-1 / 255 / std))) / 4
  expected = np.where(t == 0, nll0 / np.log(2), 0.0)
  assert float(aux["mse"]) < 1e-20
  np.testing.assert_allclose(aux["per_example"], expected, atol=1e-9, rtol=1e-7)
  np.testing.assert_allclose(loss, expected.mean(), atol=1e-9, rtol=1e-7)
  np.testing.assert_allclose(aux["vb"], expected.mean(), atol=1e-9, rtol=1e-7)


def _linear_model(theta):
  def model(x_t, t):
    eps = theta[0] * x_t + theta[1]
    v = jnp.tanh(theta[2] + theta[3] * x_t)
    return jnp.concatenate([eps, v], -1)
  return model


def test_hybrid_loss_stop_gradient_and_rescaling(x64):
  x0 = jnp.asarray(GRID[np.random.default_rng(4).integers(0, 256, size=(16, 2, 2, 1))])
  key = jax.random.PRNGKey(5)
  theta = jnp.array([0.3, 0.1, 0.2, -0.5])
  tables = vlb.DiscreteTables.from_process(COSINE_10)

  def loss_of(th, rescale=False):
    return vlb.hybrid_loss(_linear_model(th), x0, key, process=COSINE_10, rescale_vb=rescale)

  def unfrozen_vb(th):
    # the vb term without the stop-gradient, at some t and x_t
    t = jnp.arange(16) % 10
    x_t = vlb.q_sample(x0, t, jax.random.normal(key, x0.shape), tables)
    out = _linear_model(th)(x_t, t)
    return jnp.mean(vlb.vb_terms_bpd(out[..., :1], out[..., 1:], x0, x_t, t, tables))

  def terms(th):
    loss, aux = loss_of(th)
    return jnp.stack([loss, aux["mse"], aux["vb"], unfrozen_vb(th)])

  @jax.jit
  def run(th):
    return jax.jacrev(terms)(th), loss_of(th), loss_of(th, True)

  jac, (loss, aux), (loss_r, aux_r) = jax.tree.map(np.asarray, run(theta))
  g_loss, g_mse, g_vb, g_unfrozen = jac
  assert np.all(g_vb[:2] == 0.0), g_vb  # exactly zero on the eps parameters
  assert np.all(np.abs(g_vb[2:]) > 1e-6), g_vb
  np.testing.assert_array_equal(g_loss[:2], g_mse[:2])
  np.testing.assert_allclose(g_loss[2:], g_vb[2:], rtol=1e-12)  # mse does not see v
  # Power: without the stop-gradient the vb term does pull on the eps parameters.
  assert np.all(np.abs(g_unfrozen[:2]) > 1e-6), g_unfrozen
  # rescale_vb multiplies vb by N / 1000 and leaves mse alone.
  assert float(aux["vb"]) > 1e-3
  np.testing.assert_allclose(aux_r["vb"], aux["vb"] * 10 / 1000, rtol=1e-13)
  np.testing.assert_array_equal(aux_r["mse"], aux["mse"])
  np.testing.assert_allclose(loss, aux["mse"] + aux["vb"], rtol=1e-13)
  np.testing.assert_allclose(loss_r, aux["mse"] + aux["vb"] / 100, rtol=1e-13)
  np.testing.assert_allclose(aux["per_example"].mean(), loss, rtol=1e-13)


def test_hybrid_loss_errors(x64):
  x0 = jnp.zeros((2, 2, 2, 2))
  key = jax.random.PRNGKey(0)

  def trace(model, process=COSINE_10, **kw):
    return jax.eval_shape(lambda x0, key: vlb.hybrid_loss(model, x0, key, process=process, **kw), x0, key)

  with pytest.raises(ValueError, match="process must be a diffjax.processes.VPDiscrete"):
    trace(lambda x, t: jnp.concatenate([x, x], -1), process=P.VP())
  with pytest.raises(ValueError, match=r"odd number of channels \(3\)"):
    trace(lambda x, t: x[..., :1].repeat(3, -1))
  with pytest.raises(ValueError, match=r"has 2 channels, expected 2C = 4"):
    trace(lambda x, t: x)
  with pytest.raises(ValueError, match="does not match the data"):
    trace(lambda x, t: jnp.concatenate([x, x], -1)[:, :1])
  # cond is passed as the third argument
  loss, _ = trace(lambda x, t, y: jnp.concatenate([x, x * 0 + y[:, None, None, None]], -1), cond=jnp.ones(2))
  assert loss.shape == ()


# --- respacing --------------------------------------------------------------------------------
@pytest.mark.parametrize("n,sections", [(1000, "250"), (1000, "ddim25"), (1000, "ddim50"), (1000, "10,15,20"),
                                        (1000, [100]), (1000, "27"), (10, "3"), (10, "ddim3"), (10, "2,3"),
                                        (50, "7,3"), (50, "50")])
def test_space_timesteps_matches_reference(n, sections):
  got = lv.space_timesteps(n, sections)
  assert got == tuple(sorted(_ref_space_timesteps(n, sections)))


def test_space_timesteps_known_values_and_respaced_betas(x64):
  assert lv.space_timesteps(10, "3") == (0, 4, 9)  # round(4.5) = 4: Python rounds half to even
  assert lv.space_timesteps(10, "ddim3") == (0, 4, 8)
  assert lv.space_timesteps(10, "2,3") == (0, 4, 5, 7, 9)
  assert lv.space_timesteps(1000, "ddim25") == tuple(range(0, 1000, 40))
  kept = lv.space_timesteps(1000, "250")
  assert len(kept) == 250 and kept[:3] == (0, 4, 8) and kept[-1] == 999
  with pytest.raises(ValueError, match="cannot divide"):
    lv.space_timesteps(10, "11")
  with pytest.raises(ValueError, match="integer stride"):
    lv.space_timesteps(10, "ddim7")
  for process, sections in [(LINEAR_1000, "250"), (LINEAR_1000, "ddim25"), (LINEAR_50, "7,3")]:
    tables = lv.sampling_tables(process, sections)
    ref_betas, ref_map = _ref_respace(process.betas, _ref_space_timesteps(process.num_steps, sections))
    np.testing.assert_allclose(tables.betas, ref_betas, rtol=1e-13)
    np.testing.assert_array_equal(tables.timestep_map, ref_map)
    # the respaced chain keeps the marginals q(x_n | x_0) of the kept steps
    np.testing.assert_allclose(tables.alphas_cumprod, np.cumprod(1 - np.asarray(process.betas))[ref_map], rtol=1e-12)
  full = lv.sampling_tables(LINEAR_1000, 1000)
  np.testing.assert_allclose(full.betas, np.asarray(LINEAR_1000.betas), rtol=1e-10)
  np.testing.assert_array_equal(full.timestep_map, np.arange(1000))
  with pytest.raises(ValueError, match="num_steps"):
    lv.sampling_tables(LINEAR_50, 51)


# --- sampler ----------------------------------------------------------------------------------
def _toy_model(x, t, xp=jnp):
  """A nonlinear model of x and of the original integer step (numpy or jax)."""
  tf = t.astype(x.dtype).reshape(-1, 1, 1, 1)
  eps = 0.5 * xp.tanh(x) + 0.01 * tf * x
  v = xp.tanh(0.7 * x + 0.02 * tf - 0.3)
  return xp.concatenate([eps, v], -1)


@pytest.mark.parametrize("process,num_steps,clip,reference_chain", [
    (LINEAR_50, None, False, None), (LINEAR_50, 50, False, None), (LINEAR_50, "ddim10", True, "ddim10"),
    (LINEAR_1000, 250, False, [250])], ids=["full", "all-kept-vs-full", "ddim10-clip", "250-of-1000"])
def test_sampler_matches_reference_p_sample_loop(x64, process, num_steps, clip, reference_chain):
  """Against the reference loop fed the same noise; with all 50 steps kept, against the plain loop."""
  x = jax.random.normal(jax.random.PRNGKey(6), (3, 2, 2, 1))
  key = jax.random.PRNGKey(7)
  got = jax.jit(lambda x, key: lv.ddpm_learned_variance(_toy_model, x, process=process, key=key,
                                                        clip_denoised=clip, num_steps=num_steps))(x, key)
  if reference_chain is None:  # GaussianDiffusion on the process's own betas
    betas, tmap = np.asarray(process.betas), list(range(process.num_steps))
  else:
    betas, tmap = _ref_respace(process.betas, _ref_space_timesteps(process.num_steps, reference_chain))
  zs = np.asarray(jax.vmap(lambda s: jax.random.normal(jax.random.fold_in(key, s), x.shape))(jnp.arange(len(betas))))
  expected = _ref_p_sample_loop(functools.partial(_toy_model, xp=np), np.asarray(x), zs, betas, tmap, clip)
  np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)
  assert np.max(np.abs(expected - np.asarray(x))) > 0.1


def test_sampler_errors(x64):
  x = jnp.zeros((3, 2, 2, 1))

  def trace(model, process=LINEAR_50, **kw):
    return jax.eval_shape(lambda x: lv.ddpm_learned_variance(model, x, process=process, **kw), x)

  key = jax.random.PRNGKey(0)
  with pytest.raises(ValueError, match=r"odd number of channels"):
    trace(lambda x, t: x.repeat(3, -1), key=key)
  with pytest.raises(ValueError, match="process must be a diffjax.processes.VPDiscrete"):
    trace(_toy_model, process=P.VP(), key=key)
  with pytest.raises(ValueError, match="key is required"):
    trace(_toy_model, key=None)
  with pytest.raises(ValueError, match="num_steps"):
    trace(_toy_model, key=key, num_steps=1)
  assert trace(lambda x, t, y: _toy_model(x + y[:, None, None, None], t), key=key, cond=jnp.ones(3)).shape == x.shape


def _gaussian_oracle(process, num_steps):
  """The exact reverse kernel of data N(m, s^2 I) on the (respaced) chain, per respaced step i.

  With a = sqrt(abar_i), sigma^2 = 1 - abar_i, C = a^2 s^2 + sigma^2:
  E[eps | x_i] = sigma (x_i - a m) / C, Var(x_0 | x_i) = s^2 sigma^2 / C, and the true kernel is
  N(mu~_i(x_i, E[x_0 | x_i]), beta~_i + coef1_i^2 Var(x_0 | x_i)) (Gaussian conditioning of the
  linear chain), i.e. x <- A_i x + B_i m + sqrt(var_i) z, with var_0 = 0 at the noise-free last step.
  Returns the tables indexed by the original step n (for the model) and the recursion.
  """
  if num_steps is None:
    betas, tmap = np.asarray(process.betas), list(range(process.num_steps))
  else:
    sections = [num_steps] if isinstance(num_steps, int) else num_steps
    betas, tmap = _ref_respace(process.betas, _ref_space_timesteps(process.num_steps, sections))
  T = _ref_tables(betas)
  a, sig2 = np.sqrt(T["ac"]), 1 - T["ac"]

  def for_data_std(s):
    c_t = a**2 * s**2 + sig2
    target = T["pv"] + T["c1"]**2 * s**2 * sig2 / c_t
    v = np.zeros(len(betas))  # v at i = 0 is irrelevant: no noise at the last step
    v[1:] = 2 * (np.log(target[1:]) - T["plv"][1:]) / (np.log(T["betas"][1:]) - T["plv"][1:]) - 1
    assert np.all(np.abs(v[1:]) <= 1 + 1e-9), "the true variance must lie in the learned range"
    eps_a, v_orig = np.zeros(process.num_steps), np.zeros(process.num_steps)
    eps_a[tmap], v_orig[tmap] = np.sqrt(sig2) / c_t, v
    recursion = dict(A=T["c1"] * a * s**2 / c_t + T["c2"], B=T["c1"] * sig2 / c_t,
                     var=np.where(np.arange(len(betas)) > 0, target, 0.0), marg_mean=a, marg_var=c_t)
    return (eps_a, v_orig), recursion

  sqrt_abar_orig = np.sqrt(np.cumprod(1 - np.asarray(process.betas)))
  return sqrt_abar_orig, for_data_std


@pytest.mark.parametrize("process,num_steps", [(LINEAR_1000, None), (LINEAR_1000, 250), (LINEAR_50, "ddim10")])
def test_sampler_with_the_exact_kernel(x64, process, num_steps):
  """Point mass (s = 0): ends exactly at the data. N(m, 0.5^2): the output law of the recursion."""
  m = jnp.asarray(GRID[np.random.default_rng(5).integers(0, 256, size=(8, 8, 1))]).at[0, 0, 0].set(1.0)
  sqrt_abar, for_data_std = _gaussian_oracle(process, num_steps)
  sqrt_abar = jnp.asarray(sqrt_abar)

  @jax.jit
  def run(x, eps_a, v):
    def model(x, t):
      eps = eps_a[t].reshape(-1, 1, 1, 1) * (x - sqrt_abar[t].reshape(-1, 1, 1, 1) * m)
      return jnp.concatenate([eps, jnp.broadcast_to(v[t].reshape(-1, 1, 1, 1), x.shape)], -1)
    return lv.ddpm_learned_variance(model, x, process=process, key=jax.random.PRNGKey(13), num_steps=num_steps)

  x = jax.random.normal(jax.random.PRNGKey(12), (128, 8, 8, 1))
  # s = 0: v = -1, the exact posterior q(x_{i-1} | x_i, x_0 = m); the noise-free last step returns
  # x0_hat = m (noise there would move it by ~sqrt(beta~_1)).
  (eps_a, v), _ = for_data_std(0.0)
  np.testing.assert_allclose(v[v != 0], -1.0, atol=1e-12)
  out = run(x, jnp.asarray(eps_a), jnp.asarray(v))
  np.testing.assert_allclose(out, np.broadcast_to(m, out.shape), atol=1e-9)
  # s = 0.5.
  (eps_a, v), rec = for_data_std(0.5)
  # Self-check of the oracle: started at the true q(x_{K-1}), the recursion keeps the marginals.
  mu, V = rec["marg_mean"][-1], rec["marg_var"][-1]
  for i in range(len(rec["A"]) - 1, 0, -1):
    mu, V = rec["A"][i] * mu + rec["B"][i], rec["A"][i]**2 * V + rec["var"][i]
    np.testing.assert_allclose([mu, V], [rec["marg_mean"][i - 1], rec["marg_var"][i - 1]], rtol=1e-9)
  # The law of the output from x ~ N(0, I): mean mu m, variance V per element.
  mu, V = 0.0, 1.0
  for i in range(len(rec["A"]) - 1, -1, -1):
    mu, V = rec["A"][i] * mu + rec["B"][i], rec["A"][i]**2 * V + rec["var"][i]
  resid = np.asarray(run(x, jnp.asarray(eps_a), jnp.asarray(v)) - mu * m).ravel()
  n = resid.size
  assert abs(resid.mean()) < 5 * np.sqrt(V / n), (resid.mean(), V)
  assert abs(resid.var() / V - 1) < 5 * np.sqrt(2 / n), (resid.var(), V)
