"""Distillation losses against exact oracles (float64).

Oracles: the pseudo-target gradient is g / x.size (or g / B); DMD2's field is recomputed in
numpy from the documented key split; a Gaussian teacher x ~ N(0, s^2 I) has the exact denoiser
D(x, sigma) = s^2 / (s^2 + sigma^2) x, which gives hand-computable Heun steps and, with a Gaussian
generator, closed-form score divergences for SIM (expectations by Gauss-Hermite quadrature);
the progressive-distillation target is checked by the identity it is built for (one student
DDIM step reproduces the teacher's two-step z_target). Closed forms are written with math/numpy
in the tests, independently of the module.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffjax import parametrization as prm
from diffjax import processes
from diffjax.losses import distillation as dl
from diffjax.losses.score_matching import edm_loss


def _normal(seed, shape):
  return jax.random.normal(jax.random.PRNGKey(seed), shape)


def _keys(key, n=2):
  return jax.random.split(key, n)


def _gauss_denoiser(s):
  """Exact denoiser of x ~ N(0, s^2 I) under x_t = x + sigma eps."""
  def d(x, sigma):
    return (s**2 / (s**2 + sigma**2))[:, None] * x
  return d


def _np_karras_desc(n, lo=0.002, hi=80.0, rho=7.0):
  i = np.arange(n)
  return (hi**(1 / rho) + i / (n - 1) * (lo**(1 / rho) - hi**(1 / rho)))**rho


# ----------------------------------------------------------------------------------------------
# pseudo-target trick
# ----------------------------------------------------------------------------------------------
def test_pseudo_target_gradient_is_field_over_numel_or_batch(x64):
  x, g = _normal(0, (3, 4, 2)), _normal(1, (3, 4, 2))
  loss, aux = dl.pseudo_target_loss(x, g)
  np.testing.assert_allclose(loss, 0.5 * np.mean(np.asarray(g)**2), rtol=1e-13)
  np.testing.assert_allclose(aux["grad_norm"], np.linalg.norm(np.asarray(g)), rtol=1e-14)
  grad = jax.grad(lambda y: dl.pseudo_target_loss(y, g)[0])(x)
  np.testing.assert_allclose(grad, np.asarray(g) / 24, rtol=1e-12, atol=1e-15)
  loss_b = dl.pseudo_target_loss(x, g, reduction="sum_over_batch")[0]
  np.testing.assert_allclose(loss_b, 0.5 * np.sum(np.asarray(g)**2) / 3, rtol=1e-13)
  grad_b = jax.grad(lambda y: dl.pseudo_target_loss(y, g, reduction="sum_over_batch")[0])(x)
  np.testing.assert_allclose(grad_b, np.asarray(g) / 3, rtol=1e-12, atol=1e-15)
  with pytest.raises(ValueError, match="reduction 'sum'.*'mean', 'sum_over_batch'"):
    dl.pseudo_target_loss(x, g, reduction="sum")
  with pytest.raises(ValueError, match="shape mismatch"):
    dl.pseudo_target_loss(x, g[:, :2])


# ----------------------------------------------------------------------------------------------
# DMD / DMD2
# ----------------------------------------------------------------------------------------------
def _np_dmd_field(x, mu_real, mu_fake):
  x, mu_real, mu_fake = map(np.asarray, (x, mu_real, mu_fake))
  p_real, p_fake = x - mu_real, x - mu_fake
  norm = np.abs(p_real).reshape(len(x), -1).mean(axis=1).reshape((-1,) + (1,) * (x.ndim - 1))
  return (p_real - p_fake) / norm


def test_dmd_gradient_normaliser_is_mean_abs_teacher_residual(x64):
  x, mu_r, mu_f = _normal(0, (3, 2, 5)), _normal(1, (3, 2, 5)), _normal(2, (3, 2, 5))
  np.testing.assert_allclose(dl.dmd_gradient(x, mu_r, mu_f), _np_dmd_field(x, mu_r, mu_f), rtol=1e-13)
  # the normaliser ignores mu_fake: doubling the fake residual doubles the field
  mu_f2 = x - 2.0 * (x - mu_f)
  g1, g2 = dl.dmd_gradient(x, mu_r, mu_f), dl.dmd_gradient(x, mu_r, mu_f2)
  np.testing.assert_allclose(g2 - dl.dmd_gradient(x, mu_r, x), 2 * (g1 - dl.dmd_gradient(x, mu_r, x)),
                             rtol=1e-12, atol=1e-13)
  # 0/0 (x = mu_real = mu_fake) becomes 0, as torch.nan_to_num
  mu_r0, mu_f0 = mu_r.at[0].set(x[0]), mu_f.at[0].set(x[0])
  g0 = dl.dmd_gradient(x, mu_r0, mu_f0)
  assert np.array_equal(np.asarray(g0[0]), np.zeros((2, 5)))
  assert np.all(np.isfinite(np.asarray(g0)))


def _dmd_real(xt, sigma):
  return jnp.tanh(xt) / (1.0 + sigma[:, None])


def _dmd_fake(xt, sigma):
  return 0.5 * xt * (sigma / (1.0 + sigma))[:, None] + 0.1


def test_dmd_loss_gradient_is_field_over_numel(x64):
  x = _normal(0, (4, 3))
  key = jax.random.PRNGKey(7)
  sigmas = dl.karras_index_sigmas(1000, ascending=True)
  for reduction, scale in (("mean", 1.0 / x.size), ("sum_over_batch", 1.0 / x.shape[0])):
    loss, aux = dl.dmd_loss(x, _dmd_real, _dmd_fake, key, reduction=reduction)
    np.testing.assert_array_equal(aux["sigma"], sigmas[aux["index"]])
    _, k_noise = _keys(key)
    x_t = np.asarray(x) + np.asarray(aux["sigma"])[:, None] * np.asarray(jax.random.normal(k_noise, x.shape))
    g = _np_dmd_field(x, _dmd_real(x_t, aux["sigma"]), _dmd_fake(x_t, aux["sigma"]))
    grad = jax.grad(lambda y: dl.dmd_loss(y, _dmd_real, _dmd_fake, key, reduction=reduction)[0])(x)
    # equality holds only if no gradient flows through the denoisers (x_t depends on x)
    np.testing.assert_allclose(grad, g * scale, rtol=1e-11, atol=1e-15)


def test_dmd_gradient_is_exactly_zero_when_fake_equals_real(x64):
  x = _normal(0, (4, 3))
  key = jax.random.PRNGKey(3)
  loss, _ = dl.dmd_loss(x, _dmd_real, _dmd_real, key)
  grad = jax.grad(lambda y: dl.dmd_loss(y, _dmd_real, _dmd_real, key)[0])(x)
  assert float(loss) == 0.0
  assert np.array_equal(np.asarray(grad), np.zeros(x.shape))


def _logit(xt, sigma):
  return jnp.sum(xt, axis=1) - 0.3 * jnp.log(sigma)


def _np_f_distill_h(ratio, index, f_div, min_index, max_index, num_bins):
  """FastGen's two normalisations, written out per bin with numpy."""
  r = np.clip(np.exp(np.clip(ratio, -10, 10)), 0.1, 20.0)
  width = (max_index - min_index) / num_bins
  bins = np.clip(np.floor((index - min_index) / width).astype(int), 0, num_bins - 1)
  r = np.array([r[i] / (r[bins == bins[i]].mean() + 1e-6) for i in range(len(r))])
  h = {"rkl": np.ones_like(r), "kl": r, "js": 1 - 1 / (1 + r), "sf": 1 / (1 + r), "neyman": 1 / np.maximum(r, 1e-8),
       "sh": np.sqrt(r), "jf": 1 + r}[f_div]
  return h / (h.mean() + 1e-6)


@pytest.mark.parametrize("f_div", dl.F_DIVERGENCES)
def test_f_distill_gradient_is_h_weighted_field_over_numel(x64, f_div):
  x = _normal(1, (64, 3))
  key = jax.random.PRNGKey(11)
  loss, aux = dl.f_distill_loss(x, _dmd_real, _dmd_fake, _logit, key, f_div=f_div, num_bins=4)
  _, k_noise = _keys(key)
  sigma, index = np.asarray(aux["sigma"]), np.asarray(aux["index"])
  x_t = np.asarray(x) + sigma[:, None] * np.asarray(jax.random.normal(k_noise, x.shape))
  h = _np_f_distill_h(np.asarray(_logit(x_t, sigma)), index, f_div, dl.DMD2_MIN_INDEX, dl.DMD2_MAX_INDEX, 4)
  np.testing.assert_allclose(aux["h"], h, rtol=1e-10)
  mu_real, mu_fake = np.asarray(_dmd_real(x_t, sigma)), np.asarray(_dmd_fake(x_t, sigma))
  p_real = np.asarray(x) - mu_real
  g = h[:, None] * (mu_fake - mu_real) / (np.abs(p_real).mean(axis=1, keepdims=True) + 1e-6)
  grad = jax.grad(lambda y: dl.f_distill_loss(y, _dmd_real, _dmd_fake, _logit, key, f_div=f_div, num_bins=4)[0])(x)
  np.testing.assert_allclose(grad, g / x.size, rtol=1e-9, atol=1e-15)
  np.testing.assert_allclose(np.mean(h), 1.0, rtol=1e-5)  # batch-normalised weights


def test_f_distill_reverse_kl_is_dmd(x64):
  x = _normal(2, (16, 3))
  key = jax.random.PRNGKey(5)
  ours, _ = dl.f_distill_loss(x, _dmd_real, _dmd_fake, _logit, key, f_div="rkl")
  dmd, _ = dl.dmd_loss(x, _dmd_real, _dmd_fake, key)
  np.testing.assert_allclose(ours, dmd, rtol=1e-5)  # only the 1e-6 guards differ
  with pytest.raises(ValueError, match="f_div"):
    dl.f_distill_loss(x, _dmd_real, _dmd_fake, _logit, key, f_div="tv")


def test_dmd_default_grid_and_index_range(x64):
  sigmas = np.asarray(dl.karras_index_sigmas(1000, ascending=True))
  np.testing.assert_allclose(sigmas, _np_karras_desc(1000)[::-1], rtol=1e-13)
  assert sigmas[0] == pytest.approx(0.002, rel=1e-12) and sigmas[-1] == pytest.approx(80.0, rel=1e-12)
  x = jnp.zeros((3000, 1))
  key = jax.random.PRNGKey(0)
  _, aux = dl.dmd_loss(x, _dmd_real, _dmd_fake, key)
  idx = np.asarray(aux["index"])
  assert idx.min() >= 20 and idx.max() <= 980 and idx.min() < 30 and idx.max() > 970
  _, aux = dl.dmd_loss(x, _dmd_real, _dmd_fake, key, min_index=20, max_index=25)
  assert set(np.asarray(aux["index"]).tolist()) == set(range(20, 26))
  np.testing.assert_allclose(aux["sigma"], sigmas[np.asarray(aux["index"])], rtol=1e-15)
  with pytest.raises(ValueError, match="max_index <= len\\(sigmas\\) - 1 = 999"):
    dl.dmd_loss(x, _dmd_real, _dmd_fake, key, max_index=1000)
  with pytest.raises(ValueError, match="min_index <= max_index"):
    dl.dmd_loss(x, _dmd_real, _dmd_fake, key, min_index=30, max_index=20)
  with pytest.raises(ValueError, match="Python integers"):
    dl.dmd_loss(x, _dmd_real, _dmd_fake, key, min_index=0.5)
  with pytest.raises(ValueError, match="1-D grid"):
    dl.dmd_loss(x, _dmd_real, _dmd_fake, key, sigmas=jnp.ones((3, 3)))


def test_fake_score_loss_weight_full_range_and_detached_samples(x64):
  x = _normal(0, (5, 3))
  key = jax.random.PRNGKey(4)

  def fake(a):
    return lambda xt, sigma: a * xt / (1.0 + sigma[:, None]**2)

  loss, aux = dl.fake_score_loss(x, fake(0.7), key)
  _, k_noise = _keys(key)
  s = np.asarray(aux["sigma"])[:, None]
  x_np = np.asarray(x)
  h = (x_np + s * np.asarray(jax.random.normal(k_noise, x.shape))) / (1 + s**2)
  w = s**-2.0 + 1 / 0.25
  np.testing.assert_allclose(loss, np.mean(w * (0.7 * h - x_np)**2), rtol=1e-12)
  np.testing.assert_allclose(jax.grad(lambda a: dl.fake_score_loss(x, fake(a), key)[0])(0.7),
                             np.mean(2 * w * (0.7 * h - x_np) * h), rtol=1e-12)
  assert np.array_equal(np.asarray(jax.grad(lambda y: dl.fake_score_loss(y, fake(0.7), key)[0])(x)),
                        np.zeros(x.shape))
  # the index runs over the whole grid [0, N), unlike the DM term's [20, 980]
  grid = jnp.array([0.01, 0.1, 1.0, 10.0, 50.0])
  _, aux = dl.fake_score_loss(jnp.zeros((500, 1)), fake(1.0), key, sigmas=grid)
  assert set(np.asarray(aux["index"]).tolist()) == set(range(5))


def test_gan_losses_closed_form(x64):
  lf, lr = [0.0, 1.5, -2.0], [0.3, -0.7]
  gen, aux = dl.gan_generator_loss(jnp.array(lf))
  np.testing.assert_allclose(gen, np.mean([math.log1p(math.exp(-v)) for v in lf]), rtol=1e-14)
  np.testing.assert_allclose(aux["d_fake"], np.mean([1 / (1 + math.exp(-v)) for v in lf]), rtol=1e-14)
  disc, aux = dl.gan_discriminator_loss(jnp.array(lf), jnp.array(lr))
  expected = np.mean([math.log1p(math.exp(v)) for v in lf]) + np.mean([math.log1p(math.exp(-v)) for v in lr])
  np.testing.assert_allclose(disc, expected, rtol=1e-14)
  np.testing.assert_allclose(dl.gan_discriminator_loss(jnp.zeros(4), jnp.zeros(4))[0], 2 * math.log(2), rtol=1e-15)
  np.testing.assert_allclose(dl.gan_generator_loss(jnp.zeros(4))[0], math.log(2), rtol=1e-15)


def test_dmd_regression_loss(x64):
  a, b = _normal(0, (3, 2, 2)), _normal(1, (3, 2, 2))
  an, bn = np.asarray(a), np.asarray(b)
  d = (an - bn).reshape(3, -1)
  np.testing.assert_allclose(dl.dmd_regression_loss(a, b)[0], np.mean(np.mean(d**2, 1)), rtol=1e-14)
  np.testing.assert_allclose(dl.dmd_regression_loss(a, b, distance="l1")[0], np.mean(np.abs(d)), rtol=1e-14)
  c = 0.00054 * math.sqrt(4)
  np.testing.assert_allclose(dl.dmd_regression_loss(a, b, distance="pseudo_huber")[0],
                             np.mean(np.sqrt(np.sum(d**2, 1) + c**2) - c), rtol=1e-13)
  assert float(dl.dmd_regression_loss(a, a, distance="pseudo_huber")[0]) == 0.0
  ga, gb = jax.grad(lambda u, v: dl.dmd_regression_loss(u, v)[0], argnums=(0, 1))(a, b)
  np.testing.assert_allclose(ga, 2 * (an - bn) / 12, rtol=1e-13)
  assert np.array_equal(np.asarray(gb), np.zeros(b.shape))
  with pytest.raises(ValueError, match="distance 'lpips'.*'l2', 'l1', 'pseudo_huber'"):
    dl.dmd_regression_loss(a, b, distance="lpips")


# ----------------------------------------------------------------------------------------------
# Diff-Instruct
# ----------------------------------------------------------------------------------------------
def test_diff_instruct_gradient_is_fake_minus_real(x64):
  y = _normal(0, (4, 3))
  key = jax.random.PRNGKey(5)
  k_sigma, k_noise = _keys(key)
  sigma = np.exp(-1.2 + 1.2 * np.asarray(jax.random.normal(k_sigma, (4,))))
  x_t = np.asarray(y) + sigma[:, None] * np.asarray(jax.random.normal(k_noise, y.shape))
  diff = np.asarray(_dmd_fake(x_t, sigma) - _dmd_real(x_t, sigma))
  loss, aux = dl.diff_instruct_generator_loss(y, _dmd_real, _dmd_fake, key)
  np.testing.assert_allclose(aux["sigma"], sigma, rtol=1e-13)
  np.testing.assert_allclose(loss, np.sum(diff * np.asarray(y)) / 4, rtol=1e-12)
  for reduction, scale in (("sum", 1.0), ("mean", 0.25)):
    grad = jax.grad(lambda u: dl.diff_instruct_generator_loss(u, _dmd_real, _dmd_fake, key,
                                                               reduction=reduction)[0])(y)
    np.testing.assert_allclose(grad, diff * scale, rtol=1e-11, atol=1e-15)


def test_diff_instruct_fake_score_loss_is_edm_loss_on_detached_samples(x64):
  y = _normal(0, (4, 3))
  key = jax.random.PRNGKey(6)

  def fake(xt, sigma):
    return 0.8 * jnp.tanh(xt)

  loss, aux = dl.diff_instruct_fake_score_loss(y, fake, key)
  k_sigma, k_noise = _keys(key)
  s = np.exp(-1.2 + 1.2 * np.asarray(jax.random.normal(k_sigma, (4,))))[:, None]
  xt = np.asarray(y) + s * np.asarray(jax.random.normal(k_noise, y.shape))
  w = (s**2 + 0.25) / (s * 0.5)**2
  np.testing.assert_allclose(loss, np.mean(np.sum(w * (0.8 * np.tanh(xt) - np.asarray(y))**2, 1)), rtol=1e-12)
  np.testing.assert_allclose(loss, edm_loss(fake, y, key, reduce="sum")[0], rtol=1e-15)
  grad = jax.grad(lambda u: dl.diff_instruct_fake_score_loss(u, fake, key)[0])(y)
  assert np.array_equal(np.asarray(grad), np.zeros(y.shape))


# ----------------------------------------------------------------------------------------------
# SIM
# ----------------------------------------------------------------------------------------------
def test_sim_distance_pseudo_huber_is_per_sample_and_its_derivative(x64):
  y = _normal(0, (3, 2, 2))
  c = 0.4
  yn = np.asarray(y).reshape(3, -1)
  d, dp = dl.sim_distance(y, distance="pseudo_huber", c=c)
  np.testing.assert_allclose(d, np.sqrt(np.sum(yn**2, 1) + c**2) - c, rtol=1e-14)
  np.testing.assert_allclose(dp.reshape(3, -1), yn / np.sqrt(np.sum(yn**2, 1, keepdims=True) + c**2), rtol=1e-14)
  auto = jax.grad(lambda u: jnp.sum(dl.sim_distance(u, distance="pseudo_huber", c=c)[0]))(y)
  np.testing.assert_allclose(dp, auto, rtol=1e-13)
  assert not np.allclose(np.asarray(dp).reshape(3, -1), yn / np.sqrt(yn**2 + c**2))  # not element-wise
  assert np.all(np.linalg.norm(np.asarray(dp).reshape(3, -1), axis=1) < 1)
  d2, dp2 = dl.sim_distance(y, distance="l2")
  np.testing.assert_allclose(d2, 0.5 * np.sum(yn**2, 1), rtol=1e-14)
  np.testing.assert_allclose(dp2, jax.grad(lambda u: jnp.sum(dl.sim_distance(u, distance="l2")[0]))(y), rtol=1e-14)
  with pytest.raises(ValueError, match="needs c > 0"):
    dl.sim_distance(y, distance="pseudo_huber")
  with pytest.raises(ValueError, match="c must be > 0"):
    dl.sim_distance(y, distance="pseudo_huber", c=0.0)


def _sim_real(xt, sigma):
  return 0.8 * jnp.tanh(1.3 * xt) + 0.1 * sigma[:, None]


def _sim_fake(xt, sigma):
  return 0.6 * xt + 0.05 * jnp.sin(xt) / sigma[:, None]


def test_sim_l2_equals_sid_loss_with_alpha_one_and_one_half(x64):
  """SiD (mingyuanzhou/SiD training/sid_loss.py): (y_r - y_f) . ((y_r - x) - alpha (y_r - y_f)) / wf."""
  x, noise = _normal(0, (3, 4)), _normal(1, (3, 4))
  sigma = jnp.array([0.3, 1.1, 2.5])

  def sid(u, alpha, normalise):
    xt = u + sigma[:, None] * noise
    yr, yf = _sim_real(xt, sigma), _sim_fake(xt, sigma)
    per = jnp.sum((yr - yf) * ((yr - u) - alpha * (yr - yf)), axis=1)
    if normalise:
      per = per / jax.lax.stop_gradient(jnp.maximum(jnp.mean(jnp.abs(u - yr), axis=1), 1e-5))
    return jnp.mean(per)

  for sampling, alpha in (("stop_gradient", 1.0), ("generator", 0.5)):
    for weighting in ("uniform", "sid"):
      def sim(u):
        return dl.sim_generator_loss(u, _sim_real, _sim_fake, None, distance="l2", sampling=sampling,
                                     weighting=weighting, sigma=sigma, noise=noise)[0]
      normalise = weighting == "sid"
      np.testing.assert_allclose(sim(x), sid(x, alpha, normalise), rtol=1e-12)
      np.testing.assert_allclose(jax.grad(sim)(x), jax.grad(lambda u: sid(u, alpha, normalise))(x),
                                 rtol=1e-11, atol=1e-14)


@pytest.mark.parametrize("distance,c", [("l2", None), ("pseudo_huber", 0.3)])
def test_sim_expected_gradient_is_the_divergence_gradient_gaussian(x64, distance, c):
  """1-D: teacher N(0, s^2), generator x = theta z, fake score = the generator's true score.

  The divergence D(theta) = E_{x_t ~ pi} d(D_real(x_t) - D_theta(x_t)) with pi = q_theta
  ("generator") or pi = q_theta0 held fixed ("stop_gradient") is a 1-D Gaussian integral; the
  surrogate's expected gradient is a 2-D Gaussian integral over (z, eps). Both by Gauss-Hermite.
  """
  s, sig, th0 = 0.7, 0.4, 1.1
  nodes, weights = np.polynomial.hermite_e.hermegauss(60)
  weights = weights / weights.sum()
  zz, ee = (a.ravel() for a in np.meshgrid(nodes, nodes, indexing="ij"))
  ww = np.outer(weights, weights).ravel()
  real, fake = _gauss_denoiser(s), _gauss_denoiser(th0)
  big_nodes, big_w = np.polynomial.hermite_e.hermegauss(150)
  big_w = big_w / big_w.sum()

  def divergence(th, th_sampling):
    xt = jnp.sqrt(th_sampling**2 + sig**2) * big_nodes[:, None]
    y = real(xt, jnp.full(len(big_nodes), sig)) - _gauss_denoiser(th)(xt, jnp.full(len(big_nodes), sig))
    d = dl.sim_distance(y, distance=distance, c=c)[0]
    return jnp.sum(big_w * d)

  for sampling in ("generator", "stop_gradient"):
    def per_node(th, z, e):
      return dl.sim_generator_loss(th * z.reshape(1, 1), real, fake, None, distance=distance, c=c,
                                   sampling=sampling, sigma=sig, noise=e.reshape(1, 1))[0]
    grads = jax.vmap(jax.grad(per_node), in_axes=(None, 0, 0))(th0, jnp.asarray(zz), jnp.asarray(ee))
    expected_grad = float(np.sum(ww * np.asarray(grads)))
    if sampling == "generator":
      target = jax.grad(lambda th: divergence(th, th))(th0)
    else:
      target = jax.grad(lambda th: divergence(th, th0))(th0)
    assert float(target) > 0  # theta0 > s: the divergence increases with theta
    np.testing.assert_allclose(expected_grad, target, rtol=1e-9)


def test_sim_argument_checks(x64):
  x = _normal(0, (2, 3))
  key = jax.random.PRNGKey(0)
  with pytest.raises(ValueError, match="needs c > 0"):
    dl.sim_generator_loss(x, _sim_real, _sim_fake, key)
  with pytest.raises(ValueError, match="sampling 'pi'.*'stop_gradient', 'generator'"):
    dl.sim_generator_loss(x, _sim_real, _sim_fake, key, c=1.0, sampling="pi")
  with pytest.raises(ValueError, match="sigma must be a scalar or have shape \\(2,\\)"):
    dl.sim_generator_loss(x, _sim_real, _sim_fake, key, c=1.0, sigma=jnp.ones(3))
  with pytest.raises(ValueError, match="real_denoiser must be a callable"):
    dl.sim_generator_loss(x, None, _sim_fake, key, c=1.0)


# ----------------------------------------------------------------------------------------------
# consistency models
# ----------------------------------------------------------------------------------------------
def _raw_net(x_in, c_noise):
  return 7.0 + jnp.sin(x_in) * c_noise[:, None]


def test_tdm_diffusion_keeps_the_marginal_and_weights_by_the_effective_noise(x64):
  x0, eps, n = _normal(0, (5, 4)), _normal(1, (5, 4)), _normal(2, (5, 4))
  a_mid, s_mid, a_t, s_t = 0.9, np.sqrt(1 - 0.81), 0.6, 0.8
  x_t, w = dl.tdm_diffuse(a_mid * x0 + s_mid * eps, eps, a_mid, s_mid, a_t, s_t, n)
  beta = np.sqrt(s_t**2 - (a_t / a_mid * s_mid)**2)
  mixed = (np.asarray(eps) * a_t / a_mid * s_mid + beta * np.asarray(n)) / s_t
  np.testing.assert_allclose(x_t, a_t * np.asarray(x0) + s_t * mixed, rtol=1e-12, atol=1e-14)
  np.testing.assert_allclose(w, np.exp(-0.5 * (mixed**2).mean(1)) / np.exp(-0.5 * (np.asarray(n)**2).mean(1)),
                             rtol=1e-12)


@pytest.mark.parametrize("huber", [True, False])
def test_tdm_generator_gradient_is_the_normalised_field(x64, huber):
  x0, real, fake, unc = (_normal(i, (6, 5)) for i in range(4))
  cfg, c = 3.0, 1e-3
  grad = jax.grad(lambda y: dl.tdm_generator_loss(y, real, fake, x0_real_uncond=unc, cfg=cfg, huber=huber, c=c)[0])(x0)
  real_cfg = np.asarray(real) + (cfg - 1) * (np.asarray(real) - np.asarray(unc))
  wf = np.abs(np.asarray(x0) - real_cfg).mean(1, keepdims=True)
  diff = -(np.asarray(real) - np.asarray(fake)) - (cfg - 1) * (np.asarray(real) - np.asarray(unc))  # x0 - target
  field = diff / np.sqrt(diff**2 + c**2) if huber else 2 * diff
  np.testing.assert_allclose(grad, field / wf / x0.size, rtol=1e-10)
  with pytest.raises(ValueError, match="x0_real_uncond"):
    dl.tdm_generator_loss(x0, real, fake, cfg=2.0)
  loss, _ = dl.tdm_fake_score_loss(fake, x0, jnp.array([1.0, 10.0, 3.0, 0.1, 7.0, 5.0]), jnp.ones(6))
  per = ((np.asarray(fake) - np.asarray(x0))**2).mean(1) * np.minimum([1.0, 10.0, 3.0, 0.1, 7.0, 5.0], 5.0)
  np.testing.assert_allclose(loss, per.mean(), rtol=1e-12)


def test_consistency_boundary_condition_and_parametrization(x64):
  x = _normal(0, (3, 4))
  out = dl.consistency_fn(_raw_net, x, 0.002)
  assert np.array_equal(np.asarray(out), np.asarray(x))  # c_skip = 1, c_out = 0 exactly
  c_skip, c_out, c_in = dl.consistency_parametrization(jnp.array([0.002]))
  assert float(c_skip[0]) == 1.0 and float(c_out[0]) == 0.0
  sig = np.array([0.002, 0.5, 3.0, 80.0])
  c_skip, c_out, c_in = dl.consistency_parametrization(jnp.asarray(sig))
  np.testing.assert_allclose(c_skip, 0.25 / ((sig - 0.002)**2 + 0.25), rtol=1e-14)
  np.testing.assert_allclose(c_out, (sig - 0.002) * 0.5 / np.sqrt(sig**2 + 0.25), rtol=1e-14)
  np.testing.assert_allclose(c_in, 1 / np.sqrt(sig**2 + 0.25), rtol=1e-14)
  sigma = np.array([0.3, 1.3, 20.0])
  xn = np.asarray(x)
  cs, co, ci = (0.25 / ((sigma - 0.002)**2 + 0.25), (sigma - 0.002) * 0.5 / np.sqrt(sigma**2 + 0.25),
                1 / np.sqrt(sigma**2 + 0.25))
  expected = cs[:, None] * xn + co[:, None] * (7.0 + np.sin(ci[:, None] * xn) * 0.25 * np.log(sigma)[:, None])
  np.testing.assert_allclose(dl.consistency_fn(_raw_net, x, jnp.asarray(sigma)), expected, rtol=1e-13)


def test_karras_index_sigmas_is_jcm_grid(x64):
  np.testing.assert_allclose(dl.karras_index_sigmas(18), _np_karras_desc(18), rtol=1e-13)
  np.testing.assert_allclose(dl.karras_index_sigmas(18, ascending=True), _np_karras_desc(18)[::-1], rtol=1e-13)
  with pytest.raises(ValueError, match="num_scales must be an integer >= 2"):
    dl.karras_index_sigmas(1)


def test_ct_dsm_target_step_is_x_plus_t2_z(x64):
  x, z = _normal(0, (3, 5)), _normal(1, (3, 5))
  t, t2 = jnp.array([80.0, 2.0, 0.01]), jnp.array([60.0, 1.5, 0.002])
  x_t = x + t[:, None] * z
  for solver in ("euler", "heun"):
    out = dl.consistency_ode_step(x_t, t, t2, x0=x, solver=solver)
    np.testing.assert_allclose(out, np.asarray(x) + np.asarray(t2)[:, None] * np.asarray(z), rtol=1e-12, atol=1e-13)
  with pytest.raises(ValueError, match="exactly one of denoiser"):
    dl.consistency_ode_step(x_t, t, t2)


def test_cd_heun_step_matches_hand_computation_for_gaussian_teacher(x64):
  s = 0.8
  x_t = _normal(0, (3, 4))
  t, t2 = np.array([3.0, 0.9, 0.05]), np.array([2.2, 0.6, 0.03])
  a = lambda u: s**2 / (s**2 + u**2)  # noqa: E731
  xn = np.asarray(x_t)
  d1 = xn * ((1 - a(t)) / t)[:, None]
  x_e = xn + (t2 - t)[:, None] * d1
  d2 = x_e * ((1 - a(t2)) / t2)[:, None]
  heun = xn + ((t2 - t) / 2)[:, None] * (d1 + d2)
  out = dl.consistency_ode_step(x_t, jnp.asarray(t), jnp.asarray(t2), denoiser=_gauss_denoiser(s))
  np.testing.assert_allclose(out, heun, rtol=1e-13)
  euler = dl.consistency_ode_step(x_t, jnp.asarray(t), jnp.asarray(t2), denoiser=_gauss_denoiser(s), solver="euler")
  np.testing.assert_allclose(euler, x_e, rtol=1e-13)
  # the exact PF-ODE flow of this teacher is x * sqrt((s^2 + t2^2) / (s^2 + t^2)); Heun is closer
  exact = xn * np.sqrt((s**2 + t2**2) / (s**2 + t**2))[:, None]
  assert np.all(np.abs(heun - exact).max(1) < np.abs(x_e - exact).max(1))


def test_consistency_loss_recomputed_for_every_weighting(x64):
  """CT with identity consistency functions: F_t - F_t2 = x_t - x_t2 = (t - t2) z exactly."""
  x = _normal(0, (6, 3))
  key = jax.random.PRNGKey(11)
  ident = lambda u, sigma: u  # noqa: E731
  _, k_noise = _keys(key)
  z = np.asarray(jax.random.normal(k_noise, x.shape))
  n = 18
  grid = _np_karras_desc(n)
  for weighting in ("uniform", "snrp1", "truncated_snr", "snr", "ict"):
    loss, aux = dl.consistency_loss(ident, ident, x, key, num_scales=n, mode="ct", solver="euler",
                                    weighting=weighting)
    i = np.asarray(aux["index"])
    t, t2 = grid[i], grid[i + 1]
    np.testing.assert_allclose(aux["t"], t, rtol=1e-13)
    np.testing.assert_allclose(aux["t2"], t2, rtol=1e-13)
    dist = (t - t2)**2 * np.mean(z**2, axis=1)
    w = {"uniform": np.ones_like(t), "snrp1": 1 / t**2 + 1, "truncated_snr": np.maximum(1 / t**2, 1),
         "snr": 1 / t**2, "ict": 1 / (t - t2)}[weighting]
    np.testing.assert_allclose(loss, np.mean(w * dist), rtol=1e-10)
  loss, _ = dl.consistency_loss(ident, ident, x, key, num_scales=n, mode="ct", distance="l1")
  np.testing.assert_allclose(loss, np.mean((t - t2) * np.mean(np.abs(z), axis=1)), rtol=1e-10)
  # the index runs over {0, ..., N - 2}
  _, aux = dl.consistency_loss(ident, ident, jnp.zeros((2000, 1)), key, num_scales=5, mode="ct")
  assert set(np.asarray(aux["index"]).tolist()) == {0, 1, 2, 3}


def test_consistency_loss_cd_target_is_stop_gradient_and_uses_the_heun_step(x64):
  s = 0.8
  x = _normal(0, (4, 3))
  key = jax.random.PRNGKey(12)
  teacher = _gauss_denoiser(s)

  def fn(a):
    return lambda u, sigma: dl.consistency_fn(lambda xi, cn: a * jnp.tanh(xi), u, sigma)

  def loss(a, b):
    return dl.consistency_loss(fn(a), fn(b), x, key, num_scales=18, teacher_denoiser=teacher)

  value, aux = loss(0.9, 1.2)
  _, k_noise = _keys(key)
  t, t2 = np.asarray(aux["t"]), np.asarray(aux["t2"])
  x_t = np.asarray(x) + t[:, None] * np.asarray(jax.random.normal(k_noise, x.shape))
  x_t2 = np.asarray(dl.consistency_ode_step(jnp.asarray(x_t), t, t2, denoiser=teacher))
  f_t, f_t2 = np.asarray(fn(0.9)(x_t, t)), np.asarray(fn(1.2)(x_t2, t2))
  np.testing.assert_allclose(value, np.mean(np.mean((f_t - f_t2)**2, axis=1)), rtol=1e-12)
  ga, gb = jax.grad(lambda a, b: loss(a, b)[0], argnums=(0, 1))(0.9, 1.2)
  assert float(gb) == 0.0 and float(ga) != 0.0


def test_pseudo_huber_is_over_the_whole_sample(x64):
  a, b = _normal(0, (3, 2, 6)), _normal(1, (3, 2, 6))
  d = (np.asarray(a) - np.asarray(b)).reshape(3, -1)
  c = 0.00054 * math.sqrt(12)
  np.testing.assert_allclose(dl.pseudo_huber(a, b), np.sqrt(np.sum(d**2, 1) + c**2) - c, rtol=1e-13)
  np.testing.assert_allclose(dl.pseudo_huber(a, b, c=0.5), np.sqrt(np.sum(d**2, 1) + 0.25) - 0.5, rtol=1e-13)
  elementwise = np.sum(np.sqrt(d**2 + c**2) - c, axis=1)
  assert not np.allclose(dl.pseudo_huber(a, b), elementwise)
  # iCT's CIFAR-10 constant: 0.00054 * sqrt(3 * 32 * 32) = 0.0299
  assert 0.00054 * math.sqrt(3072) == pytest.approx(0.02993, abs=1e-5)
  with pytest.raises(ValueError, match="c must be > 0"):
    dl.pseudo_huber(a, b, c=-1.0)


def test_ict_curriculum_values():
  total = 400_000  # K' = K // 8 = 50_000 for s0 = 10, s1 = 1280
  for j in range(8):
    assert dl.ict_num_scales(j * 50_000, total) == 10 * 2**j + 1
    assert dl.ict_num_scales(j * 50_000 + 49_999, total) == 10 * 2**j + 1
  assert dl.ict_num_scales(total, total) == 1281
  assert [dl.ict_num_scales(k, total) for k in range(0, total + 1, 50_000)] == \
      [11, 21, 41, 81, 161, 321, 641, 1281, 1281]
  traced = jax.jit(lambda k: dl.ict_num_scales(k, total))(jnp.arange(0, total + 1, 12_500))
  assert np.asarray(traced).tolist() == [dl.ict_num_scales(k, total) for k in range(0, total + 1, 12_500)]
  with pytest.raises(ValueError, match="too small"):
    dl.ict_num_scales(0, 5)


@pytest.mark.parametrize("total,s0,s1", [(400_000, 10, 1280), (1000, 10, 1280), (37, 2, 40), (500, 7, 7), (90, 3, 1000)])
def test_ict_stages_closed_form_equals_every_step(total, s0, s1):
  assert dl.ict_stages(total, s0, s1) == sorted({dl.ict_num_scales(k, total, s0, s1) for k in range(total + 1)})


def test_ict_lognormal_index_probs(x64):
  n, pm, ps = 11, -1.1, 2.0
  asc = dl.karras_index_sigmas(n, ascending=True)
  p = np.asarray(dl.ict_lognormal_index_probs(asc))
  assert p.shape == (n - 1,) and abs(p.sum() - 1) < 1e-14
  cdf = np.array([0.5 * (1 + math.erf((math.log(v) - pm) / (math.sqrt(2) * ps))) for v in np.asarray(asc)])
  np.testing.assert_allclose(p, np.diff(cdf) / (cdf[-1] - cdf[0]), rtol=1e-12)
  np.testing.assert_allclose(dl.ict_lognormal_index_probs(asc[::-1]), p[::-1], rtol=1e-14)
  samples = np.exp(pm + ps * np.random.default_rng(0).standard_normal(2_000_000))
  inside = samples[(samples >= 0.002) & (samples <= 80.0)]
  hist, _ = np.histogram(inside, bins=np.asarray(asc))
  np.testing.assert_allclose(hist / len(inside), p, atol=1.5e-3)
  with pytest.raises(ValueError, match="strictly monotone"):
    dl.ict_lognormal_index_probs(jnp.array([0.1, 1.0, 0.5]))


def test_consistency_loss_lognormal_index_sampling(x64):
  ident = lambda u, sigma: u  # noqa: E731
  _, aux = dl.consistency_loss(ident, ident, jnp.zeros((20_000, 1)), jax.random.PRNGKey(2), num_scales=11,
                               mode="ct", index_sampling="lognormal")
  p = np.asarray(dl.ict_lognormal_index_probs(dl.karras_index_sigmas(11)))
  freq = np.bincount(np.asarray(aux["index"]), minlength=10) / 20_000
  np.testing.assert_allclose(freq, p, atol=0.012)
  with pytest.raises(ValueError, match="needs num_scales as a Python int"):
    dl.consistency_loss(ident, ident, jnp.zeros((2, 1)), jax.random.PRNGKey(2), num_scales=11.0,
                        mode="ct", index_sampling="lognormal")


def test_ct_adaptive_schedule():
  total = 1000
  assert dl.ct_num_scales(0, total) == 2 and dl.ct_num_scales(total, total) == 151
  assert dl.ct_target_ema(0, total) == pytest.approx(0.81, rel=1e-14)
  assert dl.ct_target_ema(total, total) == pytest.approx(math.exp(2 * math.log(0.9) / 150), rel=1e-14)
  for k in (1, 137, 500, 999):
    n = max(math.ceil(math.sqrt(k / total * (151**2 - 4) + 4) - 1), 1) + 1
    assert dl.ct_num_scales(k, total) == n
    assert dl.ct_target_ema(k, total) == pytest.approx(math.exp(2 * math.log(0.9) / (n - 1)), rel=1e-14)
  ns = [dl.ct_num_scales(k, total) for k in range(total + 1)]
  assert ns == sorted(ns)
  with pytest.raises(ValueError, match="mu0 must lie in \\(0, 1\\)"):
    dl.ct_target_ema(0, total, mu0=1.0)


def test_consistency_loss_argument_checks(x64):
  ident = lambda u, sigma: u  # noqa: E731
  x, key = jnp.zeros((2, 1)), jax.random.PRNGKey(0)
  with pytest.raises(ValueError, match="mode 'cm'.*'cd', 'ct'"):
    dl.consistency_loss(ident, ident, x, key, num_scales=18, mode="cm")
  with pytest.raises(ValueError, match="mode 'cd' needs teacher_denoiser"):
    dl.consistency_loss(ident, ident, x, key, num_scales=18)
  with pytest.raises(ValueError, match="teacher_denoiser must be None"):
    dl.consistency_loss(ident, ident, x, key, num_scales=18, mode="ct", teacher_denoiser=ident)
  with pytest.raises(ValueError, match="solver 'rk4'.*'heun', 'euler'"):
    dl.consistency_loss(ident, ident, x, key, num_scales=18, mode="ct", solver="rk4")
  with pytest.raises(ValueError, match="distance 'lpips'"):
    dl.consistency_loss(ident, ident, x, key, num_scales=18, mode="ct", distance="lpips")
  with pytest.raises(ValueError, match="weighting 'edm'.*'ict'"):
    dl.consistency_loss(ident, ident, x, key, num_scales=18, mode="ct", weighting="edm")
  with pytest.raises(ValueError, match="num_scales must be an integer >= 2"):
    dl.consistency_loss(ident, ident, x, key, num_scales=1, mode="ct")


# ----------------------------------------------------------------------------------------------
# progressive and guidance distillation
# ----------------------------------------------------------------------------------------------
def _teacher(z, t):
  return jnp.tanh(z) * (1.0 + t[:, None]) + 0.1 * jnp.sin(3.0 * z)


def _np_coeffs(process, t):
  return np.asarray(process.alpha(jnp.asarray(t)))[:, None], np.asarray(process.sigma(jnp.asarray(t)))[:, None]


@pytest.mark.parametrize("process", [processes.VP(schedule="cosine"), processes.EDM()], ids=["vp_cosine", "edm"])
def test_progressive_distillation_target_identity(x64, process):
  z = _normal(0, (4, 3)) * (1.0 if isinstance(process, processes.VP) else 5.0)
  if isinstance(process, processes.VP):
    t, t_mid, t_s = np.array([0.9, 0.6, 0.3, 0.2]), np.array([0.8, 0.45, 0.2, 0.1]), np.array([0.7, 0.3, 0.1, 1e-5])
  else:
    t, t_mid, t_s = np.array([60.0, 5.0, 1.0, 0.1]), np.array([30.0, 3.0, 0.5, 0.05]), np.array([10.0, 1.0, 0.2, 0.002])
  a_t, s_t = _np_coeffs(process, t)
  a_m, s_m = _np_coeffs(process, t_mid)
  a_s, s_s = _np_coeffs(process, t_s)
  zn = np.asarray(z)
  x1 = np.asarray(_teacher(z, jnp.asarray(t)))
  z_mid = a_m * x1 + s_m * (zn - a_t * x1) / s_t
  x2 = np.asarray(_teacher(jnp.asarray(z_mid), jnp.asarray(t_mid)))
  z_tgt = a_s * x2 + s_s * (z_mid - a_m * x2) / s_m
  x_target = np.asarray(dl.progressive_distillation_target(_teacher, z, jnp.asarray(t), jnp.asarray(t_mid),
                                                           jnp.asarray(t_s), process))
  one_step = a_s * x_target + s_s * (zn - a_t * x_target) / s_t  # the student's DDIM step t -> t_s
  np.testing.assert_allclose(one_step, z_tgt, rtol=1e-12, atol=1e-12)
  final = np.array([True, False, False, True])
  x_final = np.asarray(dl.progressive_distillation_target(_teacher, z, jnp.asarray(t), jnp.asarray(t_mid),
                                                          jnp.asarray(t_s), process, final_step=jnp.asarray(final)))
  np.testing.assert_allclose(x_final[final], x2[final], rtol=1e-13)
  np.testing.assert_allclose(x_final[~final], x_target[~final], rtol=1e-15)


def test_progressive_distillation_loss_recomputed(x64):
  process = processes.VP(schedule="cosine")
  x = _normal(0, (6, 3))
  key = jax.random.PRNGKey(9)
  n = 4

  def student(z, t):
    return 0.9 * jnp.tanh(z)

  results = {}
  for weighting in ("constant", "snr", "snr_trunc", "v_mse"):
    results[weighting] = dl.progressive_distillation_loss(student, _teacher, x, key, process=process,
                                                          num_steps=n, weighting=weighting)
  loss, aux = results["constant"]
  i = np.asarray(aux["index"])
  lo, hi = process.t_min, process.t_max
  sched = lambda u: lo + u * (hi - lo)  # noqa: E731
  u = (i + 1) / n
  t = sched(u)
  np.testing.assert_allclose(aux["t"], t, rtol=1e-14)
  _, k_noise = _keys(key)
  a_t, s_t = _np_coeffs(process, t)
  z = a_t * np.asarray(x) + s_t * np.asarray(jax.random.normal(k_noise, x.shape))
  x_target = np.asarray(dl.progressive_distillation_target(
      _teacher, jnp.asarray(z), jnp.asarray(t), jnp.asarray(sched(u - 0.5 / n)), jnp.asarray(sched(u - 1 / n)),
      process, final_step=jnp.asarray(i == 0)))
  x_hat = 0.9 * np.tanh(z)
  x_mse = np.mean((x_hat - x_target)**2, axis=1)
  eps_mse = np.mean(((z - a_t * x_hat) / s_t - (z - a_t * x_target) / s_t)**2, axis=1)
  np.testing.assert_allclose(aux["x_mse"], x_mse, rtol=1e-12)
  np.testing.assert_allclose(aux["eps_mse"], eps_mse, rtol=1e-12)
  np.testing.assert_allclose(eps_mse, (a_t[:, 0] / s_t[:, 0])**2 * x_mse, rtol=1e-10)  # eps_mse = SNR x_mse
  np.testing.assert_allclose(loss, np.mean(x_mse), rtol=1e-12)
  np.testing.assert_allclose(results["snr"][0], np.mean(eps_mse), rtol=1e-12)
  np.testing.assert_allclose(results["snr_trunc"][0], np.mean(np.maximum(x_mse, eps_mse)), rtol=1e-12)
  v = lambda xx: a_t * (z - a_t * xx) / s_t - s_t * xx  # noqa: E731
  np.testing.assert_allclose(results["v_mse"][0], np.mean(np.mean((v(x_hat) - v(x_target))**2, axis=1)), rtol=1e-11)
  _, aux = dl.progressive_distillation_loss(student, _teacher, jnp.zeros((400, 1)), key, process=process,
                                            num_steps=n)
  assert set(np.asarray(aux["index"]).tolist()) == {0, 1, 2, 3}
  with pytest.raises(ValueError, match="num_steps must be a positive integer"):
    dl.progressive_distillation_loss(student, _teacher, x, key, process=process, num_steps=0)
  with pytest.raises(ValueError, match="weighting 'eps'.*'snr_trunc'"):
    dl.progressive_distillation_loss(student, _teacher, x, key, process=process, num_steps=2, weighting="eps")


NULL = 10


def _cond_denoiser(x, t, c):
  return jnp.tanh(x * (1.0 + 0.1 * c[:, None])) * (1.0 - 0.2 * t[:, None])


def _uncond_denoiser(x, t):
  return _cond_denoiser(x, t, jnp.full((x.shape[0],), NULL))


def test_guided_teacher_is_cfg_with_scale_one_plus_w(x64):
  x = _normal(0, (3, 4))
  t, c = jnp.array([0.2, 0.5, 0.9]), jnp.array([1, 4, 7])
  for w in (0.0, 2.5):  # the library's CFG wrapper takes a scalar scale
    ours = dl.guided_teacher(_cond_denoiser, _uncond_denoiser, w)(x, t, c)
    ref = prm.classifier_free_guidance(_cond_denoiser, 1.0 + w, NULL)(x, t, c)
    np.testing.assert_allclose(ours, ref, rtol=1e-13, atol=1e-15)
  w = np.array([0.0, 1.0, 3.0])  # per-example w
  ours = dl.guided_teacher(_cond_denoiser, _uncond_denoiser, jnp.asarray(w))(x, t, c)
  ref = (1 + w[:, None]) * np.asarray(_cond_denoiser(x, t, c)) - w[:, None] * np.asarray(_uncond_denoiser(x, t))
  np.testing.assert_allclose(ours, ref, rtol=1e-13, atol=1e-15)
  np.testing.assert_allclose(dl.guided_teacher(_cond_denoiser, _uncond_denoiser, 0.0)(x, t, c),
                             _cond_denoiser(x, t, c), rtol=1e-15)


def test_guidance_distillation_loss(x64):
  process = processes.VP()
  x, c = _normal(0, (5, 3)), jnp.array([0, 1, 2, 3, 4])
  key = jax.random.PRNGKey(13)

  def exact_student(z, t, w, cond):
    return dl.guided_teacher(_cond_denoiser, _uncond_denoiser, w)(z, t, cond)

  loss, aux = dl.guidance_distillation_loss(exact_student, _cond_denoiser, _uncond_denoiser, x, c, key,
                                            process=process, w_min=0.5, w_max=3.0)
  assert float(loss) == 0.0
  w = np.asarray(aux["w"])
  assert np.all((w >= 0.5) & (w <= 3.0))

  def student(z, t, w, cond):
    return 0.7 * z

  loss, aux = dl.guidance_distillation_loss(student, _cond_denoiser, _uncond_denoiser, x, c, key,
                                            process=process, w_min=0.5, w_max=3.0, weighting="constant")
  k_t, k_w, k_noise = _keys(key, 3)
  t = process.t_min + np.asarray(jax.random.uniform(k_t, (5,))) * (process.t_max - process.t_min)
  w = np.asarray(jax.random.uniform(k_w, (5,), minval=0.5, maxval=3.0))
  np.testing.assert_allclose(aux["t"], t, rtol=1e-14)
  np.testing.assert_allclose(aux["w"], w, rtol=1e-14)
  a_t, s_t = _np_coeffs(process, t)
  z = a_t * np.asarray(x) + s_t * np.asarray(jax.random.normal(k_noise, x.shape))
  zj, tj = jnp.asarray(z), jnp.asarray(t)
  target = (1 + w[:, None]) * np.asarray(_cond_denoiser(zj, tj, c)) - w[:, None] * np.asarray(_uncond_denoiser(zj, tj))
  np.testing.assert_allclose(loss, np.mean((0.7 * z - target)**2), rtol=1e-12)
  with pytest.raises(ValueError, match="need w_min <= w_max"):
    dl.guidance_distillation_loss(student, _cond_denoiser, _uncond_denoiser, x, c, key, process=process,
                                  w_min=2.0, w_max=1.0)
