"""Guidance with the samplers, exact on a two-class Gaussian mixture (float64).

With p(x) = sum_c pi_c N(mu_c, v_c), the classifier log p(c | x_t) is the mixture's posterior
responsibility at noise level t, so classifier guidance at scale 1 must reproduce the exact
class-conditional denoiser; CFG at scale 1 is the conditional model and at scale 0 the
unconditional one. Each guided denoiser runs through every deterministic sampler.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffjax as dj
from diffjax.data import toy

EDM = dj.processes.EDM()


def _two_classes():
  means = jnp.array([[1.0, 0.5], [-1.0, -0.5]])
  variances = jnp.array([0.1, 0.3])
  mixture = toy.GaussianMixture(jnp.array([0.3, 0.7]), means, variances)
  classes = [toy.Gaussian(means[c], jnp.full((2,), variances[c])) for c in range(2)]

  def cond_den(x, t, c):
    d = jnp.stack([g.denoiser(x, t, EDM) for g in classes])  # (2, B, D)
    return jnp.take_along_axis(d, c[None, :, None], axis=0)[0]

  def uncond_den(x, t):
    return mixture.denoiser(x, t, EDM)

  def classifier_logp(x, t, c):
    r = mixture.responsibilities(x, t, EDM)
    return jnp.log(jnp.take_along_axis(r, c[:, None], axis=1)[:, 0])

  return cond_den, uncond_den, classifier_logp


SAMPLERS = {
    "euler": dj.samplers.euler,
    "heun": dj.samplers.heun,
    "ddim": dj.samplers.ddim,
    "dpm_solver": functools.partial(dj.samplers.dpm_solver, order=2),
    "unipc": functools.partial(dj.samplers.unipc, order=2),
}


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_classifier_guidance_scale_one_is_the_conditional_model(x64, name):
  cond_den, uncond_den, classifier_logp = _two_classes()
  guided = dj.parametrization.classifier_guidance(uncond_den, classifier_logp, 1.0, EDM)
  labels = jnp.array([0, 1, 1, 0])
  x = 20.0 * jax.random.normal(jax.random.PRNGKey(0), (4, 2))
  ts = dj.timesteps.karras(12, 0.01, 20.0, append_zero=False)
  sampler = SAMPLERS[name]
  out = sampler(lambda x, t: guided(x, t, labels), x, ts, process=EDM)
  ref = sampler(lambda x, t: cond_den(x, t, labels), x, ts, process=EDM)
  np.testing.assert_allclose(out, ref, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_classifier_free_guidance_limits(x64, name):
  cond_den, uncond_den, _ = _two_classes()
  null = 2

  def cond_or_null(x, t, c):  # a conditional model that knows the null label
    return jnp.where((c == null)[:, None], uncond_den(x, t), cond_den(x, t, jnp.minimum(c, 1)))

  labels = jnp.array([0, 1, 0])
  x = 20.0 * jax.random.normal(jax.random.PRNGKey(1), (3, 2))
  ts = dj.timesteps.karras(10, 0.01, 20.0, append_zero=False)
  sampler = SAMPLERS[name]
  run = lambda den: sampler(den, x, ts, process=EDM)
  for scale, ref in ((1.0, lambda x, t: cond_den(x, t, labels)), (0.0, uncond_den)):
    guided = dj.parametrization.classifier_free_guidance(cond_or_null, scale, null_cond=null)
    np.testing.assert_allclose(run(lambda x, t: guided(x, t, labels)), run(ref), rtol=1e-8, atol=1e-8)
  # Scale 3 extrapolates: D_u + 3 (D_c - D_u) at every call.
  guided = dj.parametrization.classifier_free_guidance(cond_or_null, 3.0, null_cond=null)
  t = jnp.full((3,), 2.0)
  np.testing.assert_allclose(guided(x, t, labels),
                             uncond_den(x, t) + 3.0 * (cond_den(x, t, labels) - uncond_den(x, t)), rtol=1e-12)
