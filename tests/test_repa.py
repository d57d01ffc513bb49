"""REPA alignment loss: cosine identities, stop-gradient on the encoder, and a projector that
learns a linear feature map reaches the minimum -1."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from diffjax import losses


def test_cosine_identities():
  z = jax.random.normal(jax.random.PRNGKey(0), (3, 5, 8))
  assert float(losses.repa_alignment_loss(z, z)) == pytest.approx(-1.0, abs=1e-6)
  assert float(losses.repa_alignment_loss(2.5 * z, z)) == pytest.approx(-1.0, abs=1e-6)
  assert float(losses.repa_alignment_loss(-z, z)) == pytest.approx(1.0, abs=1e-6)
  a = jnp.zeros((1, 1, 2)).at[..., 0].set(1.0)
  b = jnp.zeros((1, 1, 2)).at[..., 1].set(1.0)
  assert float(losses.repa_alignment_loss(a, b)) == pytest.approx(0.0, abs=1e-7)
  with pytest.raises(ValueError, match="same shape"):
    losses.repa_alignment_loss(z, z[:, :4])


def test_feature_maps_become_tokens_and_encoder_gets_no_gradient():
  proj = losses.Projector(4, 6, hidden_dim=16, rngs=nnx.Rngs(0))
  h = jax.random.normal(jax.random.PRNGKey(1), (2, 3, 3, 4))
  z = jax.random.normal(jax.random.PRNGKey(2), (2, 9, 6))
  total, aux = losses.repa_loss(jnp.asarray(1.0), h, z, proj, weight=0.5)
  assert float(total) == pytest.approx(1.0 + 0.5 * float(aux["repa"]), abs=1e-6)
  g = jax.grad(lambda z: losses.repa_loss(0.0, h, z, proj)[0])(z)
  assert float(jnp.max(jnp.abs(g))) == 0.0
  gh = jax.grad(lambda h: losses.repa_loss(0.0, h, z, proj)[0])(h)
  assert float(jnp.max(jnp.abs(gh))) > 0.0


def test_projector_learns_a_linear_encoder():
  h = jax.random.normal(jax.random.PRNGKey(0), (16, 4, 6))
  w = jax.random.normal(jax.random.PRNGKey(1), (6, 5))
  z = h @ w
  model = losses.Projector(6, 5, hidden_dim=64, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model)
  opt = optax.adam(3e-3)
  state = opt.init(params)

  @jax.jit
  def step(params, state):
    loss, g = jax.value_and_grad(lambda p: losses.repa_alignment_loss(nnx.merge(graphdef, p)(h), z))(params)
    updates, state = opt.update(g, state, params)
    return optax.apply_updates(params, updates), state, loss

  first = None
  for _ in range(400):
    params, state, loss = step(params, state)
    first = loss if first is None else first
  assert float(first) > -0.5 and float(loss) < -0.98, (float(first), float(loss))
