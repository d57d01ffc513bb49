"""Gaussian transition log-probabilities of the stochastic DDIM/DDPM sampler (float64).

Oracles: scipy's normal density; the DDPM posterior q(x_s | x_t, x0) of Ho et al. 2020 (eq. 6-7)
and DDIM's eq. 12/16 written from alphas_cumprod, and the VE posterior for EDM; the noise draws of
`diffjax.samplers.ddim` (fold_in(key, i) per step); the closed-form path KL of two denoisers whose
x0 estimates differ by a constant; the exact Gaussian denoiser of `diffjax.data.toy`, for which the
DDPM chain is linear-Gaussian with a variance given by a scalar recursion.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

import diffjax as dj
from diffjax import processes as P
from diffjax.data import toy
from diffjax.samplers import transition_logprob as tl

N_STEPS = 1000
MU = np.array([1.0, -0.5])
VAR = np.array([0.25, 4.0])


def _vpd():
  return P.VPDiscrete.from_ddpm("linear", N_STEPS)


def _abar():
  return np.cumprod(1.0 - np.linspace(1e-4, 0.02, N_STEPS))


def _gaussian_denoiser(process, mu=MU, var=VAR):
  """E[x0 | x_t] for N(mu, diag(var)) in closed form: mu + a var (x - a mu) / (a^2 var + s^2)."""
  mu, var = jnp.asarray(mu), jnp.asarray(var)

  def den(x, t):
    a, s = process.alpha(t)[:, None], process.sigma(t)[:, None]
    return mu + a * var * (x - a * mu) / (a**2 * var + s**2)

  return den


def _vp_coeffs(ab, ab_next, eta):
  """DDIM eq. 16: c = eta sqrt((1 - ab')/(1 - ab)) sqrt(1 - ab/ab'); d = sqrt(1 - ab' - c^2)."""
  c = eta * np.sqrt((1 - ab_next) / (1 - ab)) * np.sqrt(1 - ab / ab_next)
  return np.sqrt(ab), np.sqrt(1 - ab), np.sqrt(ab_next), c, np.sqrt(1 - ab_next - c**2)


def test_gaussian_logprob_matches_scipy(x64):
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
  x = jax.random.normal(k1, (3, 4, 5))
  mean = jax.random.normal(k2, (3, 4, 5))
  std_b = jnp.array([0.3, 1.0, 2.5])
  ref = scipy.stats.norm.logpdf(np.asarray(x), np.asarray(mean), np.asarray(std_b)[:, None, None]).mean(axis=(1, 2))
  np.testing.assert_allclose(tl.gaussian_logprob(x, mean, std_b), ref, rtol=1e-13)
  std_full = 0.2 + jnp.abs(jax.random.normal(k3, (3, 4, 5)))
  ref = scipy.stats.norm.logpdf(np.asarray(x), np.asarray(mean), np.asarray(std_full)).mean(axis=(1, 2))
  np.testing.assert_allclose(tl.gaussian_logprob(x, mean, std_full), ref, rtol=1e-13)
  # a scalar std, and the constants are included: at x = mean it is -log std - log sqrt(2 pi)
  np.testing.assert_allclose(tl.gaussian_logprob(mean, mean, 0.5), np.full(3, -math.log(0.5) - 0.5 * math.log(2 * math.pi)),
                             rtol=1e-14)


@pytest.mark.parametrize("eta", [1.0, 0.4])
def test_ddim_transition_vp_is_ddim_eq12_and_ddpm_posterior(x64, eta):
  """Per-sample integer DDPM steps n -> n' (t_n = (n + 1)/N): mean and std from alphas_cumprod."""
  p = _vpd()
  n = np.array([999, 600, 301, 40])
  n_next = np.array([949, 550, 300, 0])
  t, t_next = (n + 1) / N_STEPS, (n_next + 1) / N_STEPS
  x = jax.random.normal(jax.random.PRNGKey(1), (4, 2))
  den = _gaussian_denoiser(p)
  mean, std = tl.ddim_transition(den, x, jnp.asarray(t), jnp.asarray(t_next), process=p, eta=eta)
  x0 = np.asarray(den(x, jnp.asarray(t)))
  ab, ab_next = _abar()[n], _abar()[n_next]
  a, s, a_next, c, d = _vp_coeffs(ab, ab_next, eta)
  eps = (np.asarray(x) - a[:, None] * x0) / s[:, None]
  np.testing.assert_allclose(std, c, rtol=1e-10)
  np.testing.assert_allclose(mean, a_next[:, None] * x0 + d[:, None] * eps, rtol=1e-10, atol=1e-12)
  if eta == 1.0:  # Ho et al. eq. 7 with alpha_t := ab / ab' (any skip)
    alpha_step = ab / ab_next
    beta_step = 1 - alpha_step
    mu_post = (np.sqrt(ab_next) * beta_step / (1 - ab))[:, None] * x0 + \
        (np.sqrt(alpha_step) * (1 - ab_next) / (1 - ab))[:, None] * np.asarray(x)
    np.testing.assert_allclose(mean, mu_post, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(std**2, (1 - ab_next) / (1 - ab) * beta_step, rtol=1e-10)


def test_ddim_transition_edm_is_ve_posterior(x64):
  """EDM (alpha = 1, sigma = t), eta = 1: q(x_s | x_t, x0) = N(x0 + s^2/t^2 (x_t - x0), s^2 (t^2 - s^2)/t^2)."""
  p = P.EDM()
  t, s = 3.0, 0.7
  x = 3.0 * jax.random.normal(jax.random.PRNGKey(2), (5, 2))
  den = _gaussian_denoiser(p)
  mean, std = tl.ddim_transition(den, x, t, s, process=p, eta=1.0)
  x0 = den(x, jnp.full((5,), t))
  np.testing.assert_allclose(mean, x0 + s**2 / t**2 * (x - x0), rtol=1e-12, atol=1e-13)
  np.testing.assert_allclose(std, np.full(5, s * math.sqrt(t**2 - s**2) / t), rtol=1e-13)


def test_step_samples_mean_plus_std_noise_and_logprob_closed_form(x64):
  p = _vpd()
  x = jax.random.normal(jax.random.PRNGKey(3), (6, 2, 3))
  mu, var = np.linspace(-1, 1, 6), np.linspace(0.2, 2.0, 6)
  g = toy.Gaussian(jnp.asarray(mu), jnp.asarray(var))
  den = lambda x, t: g.denoiser(x.reshape(x.shape[0], -1), t, p).reshape(x.shape)
  key = jax.random.PRNGKey(4)
  n, n_next = 700, 650
  t, t_next = (n + 1) / N_STEPS, (n_next + 1) / N_STEPS
  step = jax.jit(lambda x, key, prev: tl.ddim_step_with_logprob(den, x, t, t_next, process=p, eta=1.0, key=key,
                                                                 prev_sample=prev))
  x_next, logprob = step(x, key, None)
  a, s, a_next, c, d = _vp_coeffs(_abar()[n], _abar()[n_next], 1.0)
  x0 = np.asarray(den(x, jnp.full((6,), t)))
  mean = a_next * x0 + d * (np.asarray(x) - a * x0) / s
  z = np.asarray(jax.random.normal(key, x.shape, x.dtype))
  np.testing.assert_allclose(x_next, mean + c * z, rtol=1e-10, atol=1e-12)
  closed = (-z**2 / 2).mean(axis=(1, 2)) - math.log(c) - 0.5 * math.log(2 * math.pi)
  np.testing.assert_allclose(logprob, closed, rtol=1e-9)
  # re-evaluating the stored sample gives the same log-prob; another sample gives another value
  _, again = step(x, None, x_next)
  np.testing.assert_allclose(again, logprob, rtol=1e-12)
  _, other = step(x, None, x_next + 0.1)
  assert np.all(np.abs(other - logprob) > 1e-3)


def test_logprob_gradient_flows_through_the_mean_only(x64):
  """The official `prev_sample.detach()`: d logprob / d prev_sample = 0, d logprob / d theta != 0."""
  p = _vpd()
  x = jax.random.normal(jax.random.PRNGKey(5), (3, 2))
  prev = jax.random.normal(jax.random.PRNGKey(6), (3, 2))

  def f(prev, theta):
    den = lambda x, t: theta * x
    return jnp.sum(tl.ddim_step_with_logprob(den, x, 0.5, 0.45, process=p, eta=1.0, prev_sample=prev)[1])

  g_prev, g_theta = jax.grad(f, argnums=(0, 1))(prev, 0.3)
  np.testing.assert_array_equal(g_prev, np.zeros_like(prev))
  assert abs(float(g_theta)) > 1e-3


@pytest.mark.parametrize("eta", [1.0, 0.5])
@pytest.mark.parametrize("name", ["vpdiscrete", "edm"])
def test_sample_trajectory_reproduces_ddim(x64, name, eta):
  if name == "vpdiscrete":
    p, ts = _vpd(), jnp.linspace(1.0, 1.0 / N_STEPS, 13)
  else:
    p, ts = P.EDM(), jnp.geomspace(20.0, 0.01, 13)
  den = _gaussian_denoiser(p)
  x = p.prior_std * jax.random.normal(jax.random.PRNGKey(7), (5, 2))
  key = jax.random.PRNGKey(8)
  ref = dj.samplers.ddim(den, x, ts, process=p, eta=eta, key=key)
  out = tl.sample_trajectory(den, x, ts, process=p, eta=eta, key=key)
  assert out["xs"].shape == (13, 5, 2) and out["logprobs"].shape == (12, 5)
  np.testing.assert_array_equal(out["xs"][0], x)
  np.testing.assert_array_equal(out["xs"][-1], ref)
  # step i used the noise normal(fold_in(key, i)) with the step's std: closed-form log-probs; and the
  # stored transition re-evaluates to the stored log-prob
  @jax.jit
  def per_step(x_cur, x_next, t, t_next):
    _, std = tl.ddim_transition(den, x_cur, t, t_next, process=p, eta=eta)
    _, lp = tl.ddim_step_with_logprob(den, x_cur, t, t_next, process=p, eta=eta, prev_sample=x_next)
    return std, lp

  stds, lps = jax.vmap(per_step)(out["xs"][:-1], out["xs"][1:], ts[:-1], ts[1:])
  z = np.stack([np.asarray(jax.random.normal(jax.random.fold_in(key, i), x.shape, x.dtype)) for i in range(12)])
  closed = (-z**2 / 2).mean(axis=2) - np.log(np.asarray(stds)) - 0.5 * math.log(2 * math.pi)
  np.testing.assert_allclose(out["logprobs"], closed, rtol=1e-9)
  np.testing.assert_allclose(lps, out["logprobs"], rtol=1e-12, atol=1e-14)


def test_path_kl_is_zero_for_identical_denoisers(x64):
  p = _vpd()
  den_a, den_b = _gaussian_denoiser(p), _gaussian_denoiser(p)  # two separately built, equal denoisers
  x = jax.random.normal(jax.random.PRNGKey(9), (6, 2))
  kl = tl.path_kl(den_a, den_b, x, jnp.linspace(1.0, 1.0 / N_STEPS, 21), process=p, eta=1.0,
                  key=jax.random.PRNGKey(10))
  assert kl.shape == (6,)
  np.testing.assert_array_equal(kl, np.zeros(6))


@pytest.mark.parametrize("eta", [1.0, 0.6])
@pytest.mark.parametrize("name", ["vpdiscrete", "edm"])
def test_path_kl_constant_x0_offset_closed_form(x64, name, eta):
  """D_policy = D_ref + delta moves every mean by (alpha' - d alpha / sigma) delta, so
  KL = sum_i ||delta||^2 (alpha'_i - d_i alpha_i / sigma_i)^2 / (2 c_i^2) for every path."""
  delta = np.array([0.3, -0.2])
  if name == "vpdiscrete":
    p = _vpd()
    n = np.array([999, 800, 600, 400, 200, 100, 0])
    ts = (n + 1) / N_STEPS
    a, s, a_next, c, d = _vp_coeffs(_abar()[n[:-1]], _abar()[n[1:]], eta)
  else:
    p = P.EDM()
    ts = np.array([30.0, 10.0, 3.0, 1.0, 0.3, 0.05])
    t, tn = ts[:-1], ts[1:]
    a, s, a_next = np.ones_like(t), t, np.ones_like(tn)
    c = eta * (tn / t) * np.sqrt(t**2 - tn**2)
    d = np.sqrt(tn**2 - c**2)
  expected = np.sum(delta @ delta * (a_next - d * a / s)**2 / (2 * c**2))
  den_r = _gaussian_denoiser(p)
  den_p = lambda x, t: den_r(x, t) + jnp.asarray(delta)
  x = p.prior_std * jax.random.normal(jax.random.PRNGKey(11), (4, 2))
  kl = tl.path_kl(den_p, den_r, x, jnp.asarray(ts), process=p, eta=eta, key=jax.random.PRNGKey(12))
  np.testing.assert_allclose(kl, np.full(4, expected), rtol=1e-9)


def test_path_kl_is_the_mean_log_ratio_of_path_densities(x64):
  """E_policy[log p_policy(path) - log p_ref(path)] = KL; the per-path log-ratio minus path_kl is
  sum_i z_i . (mu_p - mu_r) / c_i, zero-mean: their batch means agree within Monte Carlo error."""
  p = _vpd()
  den_p, den_r = _gaussian_denoiser(p), _gaussian_denoiser(p, mu=MU + 0.3, var=VAR * 1.5)
  ts = jnp.linspace(1.0, 1.0 / N_STEPS, 11)
  b = 2048
  x = jax.random.normal(jax.random.PRNGKey(13), (b, 2))
  key = jax.random.PRNGKey(14)
  kl = tl.path_kl(den_p, den_r, x, ts, process=p, eta=1.0, key=key)
  traj = tl.sample_trajectory(den_p, x, ts, process=p, eta=1.0, key=key)

  @jax.jit
  def step_logprobs(x_cur, x_next, t, t_next):
    lp = lambda den: tl.ddim_step_with_logprob(den, x_cur, t, t_next, process=p, eta=1.0, prev_sample=x_next)[1]
    return lp(den_p), lp(den_r)

  lp_p, lp_r = jax.vmap(step_logprobs)(traj["xs"][:-1], traj["xs"][1:], ts[:-1], ts[1:])
  np.testing.assert_allclose(lp_p, traj["logprobs"], rtol=1e-12, atol=1e-14)
  lr = jnp.sum(2 * (lp_p - lp_r), axis=0)  # mean over D = 2 dims -> joint log-density, summed over steps
  diff = np.asarray(lr - kl)
  assert float(jnp.mean(kl)) > 0.05
  assert abs(diff.mean()) < 4 * diff.std() / math.sqrt(b), (diff.mean(), diff.std())


def test_ddpm_exact_gaussian_denoiser_endpoint_moments(x64):
  """eta = 1 on VPDiscrete with the exact denoiser of N(mu, diag(v)) over the 999 DDPM steps: the
  chain is linear-Gaussian, x' = A x + b + c z, so the endpoint mean is exactly alpha_end mu and
  its variance follows var' = A^2 var + c^2 (within 1.5% of the data marginal at 999 steps: the
  plug-in posterior misses Var(x0 | x_t)). The samples match both within Monte Carlo error."""
  p = _vpd()
  ts = jnp.arange(N_STEPS, 0, -1) / N_STEPS  # t_n = (n + 1)/N, n = 999 ... 0
  g = toy.Gaussian(jnp.asarray(MU), jnp.asarray(VAR))
  den = lambda x, t: g.denoiser(x, t, p)
  b = 4096
  x = jax.random.normal(jax.random.PRNGKey(15), (b, 2))
  out = tl.sample_trajectory(den, x, ts, process=p, eta=1.0, key=jax.random.PRNGKey(16))
  x_end = np.asarray(out["xs"][-1])
  a_end, s_end = float(p.alpha(ts[-1])), float(p.sigma(ts[-1]))
  var = np.ones(2)
  abar = _abar()
  for n in range(N_STEPS - 1, 0, -1):
    a, s, a_next, c, d = _vp_coeffs(abar[n], abar[n - 1], 1.0)
    A = (a_next - d * a / s) * a * VAR / (a**2 * VAR + s**2) + d / s
    var = A**2 * var + c**2
  data_var = a_end**2 * VAR + s_end**2
  np.testing.assert_allclose(var, data_var, rtol=0.02)
  se_mean = np.sqrt(var / b)
  assert np.all(np.abs(x_end.mean(0) - a_end * MU) < 4 * se_mean), (x_end.mean(0), a_end * MU)
  se_var = var * math.sqrt(2.0 / b)
  assert np.all(np.abs(x_end.var(0) - var) < 4 * se_var), (x_end.var(0), var)
  assert np.all(np.abs(x_end.var(0) - data_var) < 4 * se_var + 0.02 * data_var)


def test_argument_errors(x64):
  p = _vpd()
  den = _gaussian_denoiser(p)
  x = jnp.zeros((2, 2))
  ts = jnp.linspace(1.0, 1.0 / N_STEPS, 5)
  key = jax.random.PRNGKey(0)
  with pytest.raises(ValueError, match="eta must be > 0"):
    tl.sample_trajectory(den, x, ts, process=p, eta=0.0, key=key)
  with pytest.raises(ValueError, match="eta must be > 0"):
    tl.path_kl(den, den, x, ts, process=p, eta=0.0, key=key)
  with pytest.raises(ValueError, match="eta must be > 0"):
    tl.ddim_step_with_logprob(den, x, 0.5, 0.4, process=p, eta=0.0, key=key)
  with pytest.raises(ValueError, match="key is required"):
    tl.sample_trajectory(den, x, ts, process=p, eta=1.0, key=None)
  edm = P.EDM()
  with pytest.raises(ValueError, match="std is 0"):  # the last step into sigma = 0
    tl.path_kl(den, den, x, jnp.array([10.0, 1.0, 0.0]), process=edm, eta=1.0, key=key)
  with pytest.raises(ValueError, match="std is 0"):
    tl.sample_trajectory(den, x, jnp.array([10.0, 1.0, 0.0]), process=edm, eta=1.0, key=key)
  with pytest.raises(ValueError, match="std is 0"):
    tl.ddim_step_with_logprob(den, x, 1.0, 0.0, process=edm, eta=1.0, key=key)
  with pytest.raises(ValueError, match="exactly one of key"):
    tl.ddim_step_with_logprob(den, x, 0.5, 0.4, process=p, eta=1.0)
  with pytest.raises(ValueError, match="exactly one of key"):
    tl.ddim_step_with_logprob(den, x, 0.5, 0.4, process=p, eta=1.0, key=key, prev_sample=x)
  with pytest.raises(ValueError, match="prev_sample shape"):
    tl.ddim_step_with_logprob(den, x, 0.5, 0.4, process=p, eta=1.0, prev_sample=jnp.zeros((2, 3)))
