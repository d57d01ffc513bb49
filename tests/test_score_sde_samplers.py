"""Score SDE predictors and correctors on the Gaussian oracle (float64): exact moment propagation
for the affine predictors, Monte Carlo moments for Langevin, and the score_sde closed forms."""
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from diffjax import processes as P  # noqa: E402
from diffjax import timesteps  # noqa: E402
from diffjax.samplers import score_sde  # noqa: E402
from diffjax.samplers.ddim import ddim  # noqa: E402
from test_samplers_basic import MU, VAR, gaussian_denoiser  # noqa: E402

VP = P.VP()


def _target(process, t):
  return float(process.alpha(t)) * MU, float(process.alpha(t))**2 * VAR + float(process.sigma(t))**2


def _reverse_diffusion_moments(process, ts):
  """Exact propagation: every reverse-diffusion step is affine for Gaussian data."""
  ts = np.asarray(ts)
  m, var = np.zeros(3), np.full(3, process.prior_std**2)
  for i, (t, tn) in enumerate(zip(ts[:-1], ts[1:])):
    a_t, s_t = float(process.alpha(t)), float(process.sigma(t))
    a = a_t / float(process.alpha(tn))
    g2 = s_t**2 - a**2 * float(process.sigma(tn))**2
    c = a_t**2 * VAR + s_t**2  # score = -(x - a_t mu) / c
    slope, intercept = (2 - a) - g2 / c, g2 * a_t * MU / c
    m, var = slope * m + intercept, slope**2 * var + (g2 if i < len(ts) - 2 else 0.0)
  return m, var


@pytest.mark.parametrize("process", [VP, P.VE()], ids=["VP", "VE"])
def test_reverse_diffusion_moments(x64, process):
  ts = timesteps.time_uniform(60, 1.0, 1e-3)
  n = 100_000
  x = process.prior_sample(jax.random.PRNGKey(0), (n, 3))
  den = gaussian_denoiser(process)
  out = jax.jit(lambda x: score_sde.reverse_diffusion(den, x, ts, process=process, key=jax.random.PRNGKey(1)))(x)
  m, var = _reverse_diffusion_moments(process, ts)
  np.testing.assert_array_less(np.abs(np.asarray(out.mean(0)) - m), 5 * np.sqrt(var / n))
  np.testing.assert_allclose(np.asarray(out.var(0)), var, rtol=5 * np.sqrt(2 / n))
  # With a fine grid the propagated moments reach the true marginal.
  m_f, var_f = _reverse_diffusion_moments(process, timesteps.time_uniform(4000, 1.0, 1e-3))
  m_t, var_t = _target(process, 1e-3)
  np.testing.assert_allclose(var_f, var_t, rtol=0.02)
  np.testing.assert_allclose(m_f, m_t, atol=0.02)


def test_vp_reverse_diffusion_and_ancestral_match_score_sde_formulas(x64):
  """On a grid where alpha_i / alpha_{i+1} = sqrt(1 - beta): score_sde's VP forms."""
  den = gaussian_denoiser(VP)
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 3))
  t, tn = 0.6, 0.59
  beta = 1 - (float(VP.alpha(t)) / float(VP.alpha(tn)))**2  # the discrete beta of this step
  score = (VP.alpha(t) * den(x, jnp.full((4,), t)) - x) / VP.sigma(t)**2
  key = jax.random.PRNGKey(1)
  z = jax.random.normal(jax.random.split(jax.random.fold_in(key, 0))[1], x.shape)
  ts = jnp.array([t, tn])
  # ReverseDiffusionPredictor: x_mean = x - f_d(x) + G^2 s with the forward step x_t = a x_tn + G eps,
  # a = alpha_t / alpha_tn = sqrt(1 - beta), f_d = (a - 1) x, G^2 = sigma_t^2 - a^2 sigma_tn^2 = beta.
  a = float(VP.alpha(t) / VP.alpha(tn))
  g2 = float(VP.sigma(t)**2 - a**2 * VP.sigma(tn)**2)
  np.testing.assert_allclose([a, g2], [np.sqrt(1 - beta), beta], rtol=1e-10)
  one = lambda fn: fn(den, x, ts, process=VP, key=key, noise_removal=False)
  np.testing.assert_allclose(one(score_sde.reverse_diffusion), (2 - a) * x + g2 * score + np.sqrt(g2) * z, rtol=1e-12)
  # Ancestral mean (x + beta s) / sqrt(1 - beta) for VP.
  mean = score_sde.ancestral(den, x, ts, process=VP, key=key, noise_removal=True)
  np.testing.assert_allclose(mean, (x + beta * score) / np.sqrt(1 - beta), rtol=1e-10)


def test_ancestral_is_ddim_eta_one(x64):
  den = gaussian_denoiser(VP)
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 3))
  ts = timesteps.time_uniform(10, 1.0, 1e-3)
  key = jax.random.PRNGKey(5)
  np.testing.assert_allclose(score_sde.ancestral(den, x, ts, process=VP, key=key, noise_removal=False),
                             ddim(den, x, ts, process=VP, eta=1.0, key=key), rtol=1e-12)


@pytest.mark.parametrize("corrector", ["langevin", "ald"])
def test_corrector_leaves_the_marginal_invariant(x64, corrector):
  """Exact score, data already distributed as p_t: Langevin keeps it there (MC moments)."""
  t = 0.3
  m_t, var_t = _target(VP, t)
  n = 100_000
  x = m_t + np.sqrt(var_t) * jax.random.normal(jax.random.PRNGKey(0), (n, 3))
  den = gaussian_denoiser(VP)
  out = jax.jit(lambda x: score_sde._correct(corrector, den, VP, x, jnp.asarray(t), jax.random.PRNGKey(1),
                                             snr=0.05, n_steps=20, num_scales=1000))(x)
  np.testing.assert_allclose(np.asarray(out.var(0)), var_t, rtol=0.03)
  np.testing.assert_allclose(np.asarray(out.mean(0)), m_t, atol=0.02)


def test_pc_converges_and_validates(x64):
  den = gaussian_denoiser(VP)
  ts = timesteps.time_uniform(300, 1.0, 1e-3)
  x = VP.prior_sample(jax.random.PRNGKey(0), (50_000, 3))
  # A small snr: Langevin's step is set from batch-averaged norms over all dimensions, so with
  # score_sde's 0.16 the narrowest dimension (variance 0.04) sees a biased, too-large step.
  out = jax.jit(lambda x: score_sde.pc(den, x, ts, process=VP, key=jax.random.PRNGKey(1), snr=0.04))(x)
  m_t, var_t = _target(VP, 1e-3)
  np.testing.assert_allclose(np.asarray(out.var(0)), var_t, rtol=0.04)
  np.testing.assert_allclose(np.asarray(out.mean(0)), m_t, atol=0.03)
  with pytest.raises(ValueError, match="valid"):
    score_sde.pc(den, x[:2], ts, process=VP, key=jax.random.PRNGKey(0), predictor="heun")
  with pytest.raises(ValueError, match="key"):
    score_sde.pc(den, x[:2], ts, process=VP)
