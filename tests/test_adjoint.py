"""AdjointDPM: continuous-adjoint gradients vs backprop through the sampler, and vs the exact
Gaussian flow map (float64)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffjax import processes as P
from diffjax.samplers.adjoint import sample_with_adjoint

V = jnp.array([0.05, 0.5, 2.0])


def denoiser(params, x, t, process):
  mu, log_v = params
  v = jnp.exp(log_v)
  a, s = process.alpha(t)[:, None], process.sigma(t)[:, None]
  return mu + a * v * (x - a * mu) / (a**2 * v + s**2)


def exact_flow(params, x, s, t, process):
  mu, log_v = params
  v = jnp.exp(log_v)
  c = lambda u: process.alpha(u)**2 * v + process.sigma(u)**2
  return process.alpha(t) * mu + jnp.sqrt(c(t) / c(s)) * (x - process.alpha(s) * mu)


def _loss(sampled):
  return jnp.sum(jnp.sin(sampled) * jnp.arange(1, sampled.size + 1).reshape(sampled.shape))


@pytest.mark.parametrize("process", [P.VP(), P.EDM()], ids=lambda p: type(p).__name__)
def test_adjoint_matches_backprop_and_exact_gradient(x64, process):
  params = (jnp.array([0.3, -0.5, 1.0]), jnp.log(V))
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 3)) * process.prior_std
  t0, t1 = process.t_max, (1e-3 if isinstance(process, P.VP) else 0.01)
  den = lambda p, x, t: denoiser(p, x, t, process)

  def loss(params, x, adjoint):
    out = sample_with_adjoint(den, params, x, t0, t1, process=process, solver="tsit5", adjoint=adjoint,
                              rtol=1e-8, atol=1e-8)
    return _loss(out)

  g_back = jax.jit(jax.grad(lambda p, x: loss(p, x, "backsolve"), argnums=(0, 1)))(params, x)
  g_ckpt = jax.jit(jax.grad(lambda p, x: loss(p, x, "checkpoint"), argnums=(0, 1)))(params, x)
  g_exact = jax.grad(lambda p, x: _loss(exact_flow(p, x, t0, t1, process)), argnums=(0, 1))(params, x)
  for a, b, c in zip(jax.tree.leaves(g_back), jax.tree.leaves(g_ckpt), jax.tree.leaves(g_exact)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-8)
    np.testing.assert_allclose(a, c, rtol=1e-4, atol=1e-8)


def test_fixed_steps_euler_is_ddim_and_errors(x64):
  """With fixed steps, backprop through the discrete solver gives the discrete sampler's exact
  gradient; the continuous adjoint differs from it by the discretisation error only."""
  process = P.VP()
  params = (jnp.zeros(3), jnp.log(V))
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 3))
  den = lambda p, x, t: denoiser(p, x, t, process)
  grads = {}
  for adjoint in ("checkpoint", "backsolve"):
    f = lambda x: _loss(sample_with_adjoint(den, params, x, 1.0, 1e-3, process=process, num_steps=200,
                                            solver="heun", adjoint=adjoint))
    grads[adjoint] = jax.grad(f)(x)
  np.testing.assert_allclose(grads["backsolve"], grads["checkpoint"], rtol=1e-3)
  with pytest.raises(ValueError, match="valid"):
    sample_with_adjoint(den, params, x, 1.0, 1e-3, process=process, num_steps=5, adjoint="naive")
  with pytest.raises(ValueError, match="rtol and atol"):
    sample_with_adjoint(den, params, x, 1.0, 1e-3, process=process)
