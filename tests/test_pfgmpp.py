"""PFGM++ (Xu et al. 2023): the perturbation kernel, its prior, the D -> inf limit and the training /
sampling path, against exact oracles (the Beta-prime radius law, the Student-t density, the ideal
denoiser of a finite point set)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import diffjax as dj
from diffjax import configuration


def _radii(noise):
  return np.sqrt(np.sum(np.asarray(noise).reshape(noise.shape[0], -1)**2, axis=1))


@pytest.mark.parametrize("shape,D", [((2,), 8.0), ((64,), 64.0), ((3, 32, 32), 128.0), ((3, 32, 32), 2048.0)])
def test_radius_law_mean_and_ks(x64, shape, D):
  """R = ||y - x||: E R^2 = sigma^2 N D / (D - 2) and R^2 / r^2 ~ BetaPrime(N/2, D/2) (KS test)."""
  n_dim = math.prod(shape)
  sigma = 1.7
  process = dj.processes.PFGMpp(D=D)
  n = process.sample_noise(jax.random.PRNGKey(0), (20_000,) + shape, jnp.float64)
  r2 = (sigma * _radii(n))**2
  law = stats.betaprime(n_dim / 2, D / 2)
  expected = sigma**2 * n_dim * D / (D - 2)
  # standard error of the mean of R^2 = r^2 * BetaPrime (variance finite for D > 4)
  stderr = sigma**2 * D * law.std() / math.sqrt(r2.size)
  assert abs(r2.mean() - expected) < 4 * stderr
  assert stats.kstest(r2 / (sigma**2 * D), law.cdf).pvalue > 1e-3


def test_direction_is_uniform(x64):
  """n / ||n|| is uniform on the sphere: zero mean and covariance I / N."""
  n = dj.processes.PFGMpp(D=16.0).sample_noise(jax.random.PRNGKey(1), (50_000, 4), jnp.float64)
  u = np.asarray(n) / _radii(n)[:, None]
  np.testing.assert_allclose(u.mean(0), 0.0, atol=4 / math.sqrt(50_000))
  np.testing.assert_allclose(u.T @ u / len(u), np.eye(4) / 4, atol=0.01)


def test_beta_clip_bounds_the_beta_variable(x64):
  """beta_clip=c keeps B = R^2 / (R^2 + r^2) in [c, 1 - c]; without it B leaves that range (N=2, D=64)."""
  shape = (20_000, 2)
  key = jax.random.PRNGKey(2)
  D = 64.0
  b = lambda p: (lambda R2: R2 / (R2 + D))(_radii(p.sample_noise(key, shape, jnp.float64))**2)
  free, clipped = b(dj.processes.PFGMpp(D=D)), b(dj.processes.PFGMpp(D=D, beta_clip=1e-3))
  assert free.min() < 1e-3
  assert clipped.min() >= 1e-3 * (1 - 1e-9) and clipped.max() <= 1 - 1e-3
  np.testing.assert_array_equal(clipped[free > 1e-3], free[free > 1e-3])


def test_kernel_density_is_normalised_and_matches_the_radius_law(x64):
  """kernel_logpdf integrates to 1 over R^2; radius_logpdf is the Beta-prime law of R^2/r^2 pushed to R."""
  process = dj.processes.PFGMpp(D=6.0)
  sigma = 0.8
  g = np.linspace(-60, 60, 1201)
  xx, yy = np.meshgrid(g, g)
  y = jnp.asarray(np.stack([xx.ravel(), yy.ravel()], 1))
  x0 = jnp.asarray([[0.3, -0.2]])
  dens = np.exp(np.asarray(process.kernel_logpdf(y, jnp.broadcast_to(x0, y.shape), sigma)))
  # the tail beyond |y| = 60 holds ~ (r / 60)^D of the mass: negligible at this tolerance
  np.testing.assert_allclose(dens.sum() * (g[1] - g[0])**2, 1.0, atol=1e-4)

  radius = jnp.linspace(0.01, 30.0, 50)
  r2 = process.D * sigma**2
  expected = stats.betaprime(1.0, 3.0).logpdf(np.asarray(radius)**2 / r2) + np.log(2 * np.asarray(radius) / r2)
  np.testing.assert_allclose(process.radius_logpdf(radius, 2, sigma), expected, rtol=1e-10)


def test_prior_matches_the_kernel_at_r_max(x64):
  """The prior is the kernel at sigma_max around 0: its radii follow the law with r_max = sigma_max sqrt(D),
  the sample is not scaled again by sigma_max, and prior_logp is the kernel density."""
  D, shape = 128.0, (8_000, 3, 8, 8)
  process = dj.processes.PFGMpp(D=D)
  x = process.prior_sample(jax.random.PRNGKey(3), shape, jnp.float64)
  n_dim = math.prod(shape[1:])
  ratio = _radii(x)**2 / (process.sigma_max**2 * D)
  assert stats.kstest(ratio, stats.betaprime(n_dim / 2, D / 2).cdf).pvalue > 1e-3
  np.testing.assert_allclose(np.mean(_radii(x)**2), 80.0**2 * n_dim * D / (D - 2), rtol=0.01)
  np.testing.assert_allclose(process.prior_logp(x[:5]),
                             process.kernel_logpdf(x[:5], jnp.zeros_like(x[:5]), 80.0), rtol=1e-12)
  assert process.prior_std == 80.0


def test_infinite_D_is_edm_bitwise():
  """D = inf draws EDM's Gaussian noise with the same keys, and the EDM loss is unchanged."""
  inf, edm = dj.processes.PFGMpp(D=float("inf")), dj.processes.EDM()
  key = jax.random.PRNGKey(4)
  np.testing.assert_array_equal(inf.prior_sample(key, (3, 5)), edm.prior_sample(key, (3, 5)))
  np.testing.assert_array_equal(inf.marginal_sample(key, jnp.ones((3, 5)), jnp.full((3,), 0.7)),
                                edm.marginal_sample(key, jnp.ones((3, 5)), jnp.full((3,), 0.7)))
  den = lambda x, s: 0.5 * x
  x0 = jax.random.normal(jax.random.PRNGKey(5), (16, 4))
  assert dj.losses.edm_loss(den, x0, key, process=inf)[0] == dj.losses.edm_loss(den, x0, key)[0]
  np.testing.assert_array_equal(inf.prior_logp(x0), edm.prior_logp(x0))


def _fitted_slope(ds, errors):
  return np.polyfit(np.log(ds), np.log(errors), 1)[0]


def test_marginals_and_loss_targets_converge_to_edm_at_rate_one_over_D(x64):
  """As D grows, the PFGM++ perturbed marginal of a finite point set and its loss target (the ideal
  denoiser) approach EDM's. Measured at points y drawn from EDM's marginal: max |log p_D - log p_inf|
  and max |D*_D - D*_inf| both fall like 1/D (fitted log-log slope -1.00 +- 0.05, D = 2^8 ... 2^16)."""
  points = jax.random.normal(jax.random.PRNGKey(6), (7, 3))
  data = dj.data.EmpiricalDistribution(points)
  edm = dj.processes.EDM()
  ds = [2.0**k for k in range(8, 17, 2)]
  for sigma in (0.3, 1.0, 5.0):
    y = jnp.tile(points, (4, 1)) + sigma * jax.random.normal(jax.random.PRNGKey(7), (28, 3))
    logp_err, target_err = [], []
    for D in ds:
      p = dj.processes.PFGMpp(D=D)
      logp_err.append(float(jnp.max(jnp.abs(data.marginal_log_prob(y, sigma, p) - data.marginal_log_prob(y, sigma, edm)))))
      target_err.append(float(jnp.max(jnp.abs(data.denoiser(y, sigma, p) - data.denoiser(y, sigma, edm)))))
    assert abs(_fitted_slope(ds, logp_err) + 1.0) < 0.05, (sigma, logp_err)
    assert abs(_fitted_slope(ds, target_err) + 1.0) < 0.05, (sigma, target_err)
    assert target_err[-1] < 1e-3


def test_ideal_denoiser_minimises_the_pfgmpp_loss(x64):
  """Under PFGM++ noise (D = 4) the loss is lower at the PFGM++ ideal denoiser than at EDM's, and
  under Gaussian noise the other way round: the loss targets the posterior mean of its own kernel."""
  points = jax.random.normal(jax.random.PRNGKey(8), (6, 2))
  data = dj.data.EmpiricalDistribution(points)
  x0 = jnp.tile(points, (4000, 1))
  pfgm, edm = dj.processes.PFGMpp(D=4.0), dj.processes.EDM()
  loss = lambda noise_process, target_process: float(dj.losses.edm_loss(
      lambda x, s: data.denoiser(x, s, target_process), x0, jax.random.PRNGKey(9), process=noise_process,
      reduce="sum")[0])
  assert loss(pfgm, pfgm) < 0.98 * loss(pfgm, edm)
  assert loss(edm, edm) < 0.98 * loss(edm, pfgm)


def test_edm_loss_perturbs_with_the_process_noise(x64):
  """edm_loss(process=PFGMpp) feeds the denoiser x0 + sigma n with n = process.sample_noise(k_noise)."""
  process = dj.processes.PFGMpp(D=16.0)
  x0 = jax.random.normal(jax.random.PRNGKey(10), (8, 5))
  key = jax.random.PRNGKey(11)
  seen = {}

  def den(x, s):
    seen["x"], seen["s"] = x, s
    return jnp.zeros_like(x)

  dj.losses.edm_loss(den, x0, key, process=process)
  _, k_noise = jax.random.split(key)
  expected = x0 + seen["s"][:, None] * process.sample_noise(k_noise, x0.shape, x0.dtype)
  np.testing.assert_allclose(seen["x"], expected, rtol=1e-12)


@pytest.mark.parametrize("D", [8.0, 128.0])
def test_heun_from_the_prior_with_the_ideal_denoiser_reaches_the_data(x64, D):
  """Heun (18 Karras steps, 35 NFE) from the PFGM++ prior with the exact denoiser of a point set
  lands on the points, each about equally often: the prior is at the right scale (not multiplied by
  sigma_max again) and the ODE is EDM's."""
  points = jnp.asarray([[-1.0, -1.0], [1.0, -1.0], [0.0, 1.5]])
  data = dj.data.EmpiricalDistribution(points)
  process = dj.processes.PFGMpp(D=D)
  ts = dj.timesteps.get_timesteps("karras", 18, process)
  x = process.prior_sample(jax.random.PRNGKey(12), (3000, 2), jnp.float64)
  out = dj.samplers.heun(lambda x, t: data.denoiser(x, t, process), x, ts, process=process)
  dist = np.linalg.norm(np.asarray(out)[:, None] - np.asarray(points)[None], axis=-1)
  assert np.max(dist.min(1)) < 0.05
  counts = np.bincount(dist.argmin(1), minlength=3) / len(out)
  np.testing.assert_allclose(counts, 1 / 3, atol=0.04)


def test_pfgmpp_has_no_gaussian_sde():
  process = dj.processes.PFGMpp(D=32.0)
  with pytest.raises(ValueError, match="no Gaussian forward SDE"):
    process.diffusion(jnp.ones(2))
  with pytest.raises(ValueError, match="no Gaussian forward SDE"):
    dj.samplers.euler_maruyama(lambda x, t: x, jnp.ones((2, 2)), jnp.asarray([1.0, 0.5]), process=process,
                               key=jax.random.PRNGKey(0))
  dj.processes.PFGMpp(D=float("inf")).diffusion(jnp.ones(2))  # EDM: defined


@pytest.mark.parametrize("kwargs,match", [({"D": 0.0}, "D must be a positive"), ({"D": "128"}, "D must be"),
                                          ({"beta_clip": 0.7}, "beta_clip")])
def test_bad_process_options_name_the_field(kwargs, match):
  with pytest.raises(ValueError, match=match):
    dj.processes.PFGMpp(**kwargs)


def test_config_rejects_sde_samplers_for_finite_D():
  config = configuration.get_default_config()
  config.process = configuration.d(name="pfgmpp", options=configuration.d(D=128.0))
  config.sampling.sampler = "euler_maruyama"
  with pytest.raises(ValueError, match="sampling.sampler='euler_maruyama'"):
    configuration.validate_config(config)
  config.process.options.D = float("inf")
  config.sampling.sampler = "heun"
  configuration.validate_config(config)
  config.process.options.D = -1.0
  with pytest.raises(ValueError, match="process.options"):
    configuration.validate_config(config)


def test_heun_inject_noise_is_the_official_perturbation(x64):
  """inject_noise=alpha adds alpha * sigma_i * z_i before step i (generate_alpha.py), z_i from
  split(fold_in(key, i))[1]; alpha = 0 is the plain sampler, bit for bit."""
  process = dj.processes.PFGMpp(D=32.0)
  den = lambda x, t: 0.5 * x / (1.0 + t[:, None]**2)
  ts = jnp.asarray([10.0, 3.0, 0.5, 0.0])
  x0 = jax.random.normal(jax.random.PRNGKey(13), (4, 3))
  key = jax.random.PRNGKey(14)
  out = dj.samplers.heun(den, x0, ts, process=process, inject_noise=0.2, key=key)
  x = x0
  for i in range(3):
    t_cur, t_next = ts[i], ts[i + 1]
    z = jax.random.normal(jax.random.split(jax.random.fold_in(key, i))[1], x.shape, x.dtype)
    x = x + 0.2 * t_cur * z
    d_cur = (x - den(x, jnp.full((4,), t_cur))) / t_cur
    x_euler = x + (t_next - t_cur) * d_cur
    if t_next > 0:
      d_next = (x_euler - den(x_euler, jnp.full((4,), t_next))) / t_next
      x = x + (t_next - t_cur) * 0.5 * (d_cur + d_next)
    else:
      x = x_euler
  np.testing.assert_allclose(out, x, rtol=1e-12)
  plain = dj.samplers.heun(den, x0, ts, process=process)
  np.testing.assert_array_equal(dj.samplers.heun(den, x0, ts, process=process, inject_noise=0.0), plain)
  with pytest.raises(ValueError, match="key is required"):
    dj.samplers.heun(den, x0, ts, process=process, inject_noise=0.1)
