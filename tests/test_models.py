"""Networks: shapes, conditioning, registry errors, pure apply."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import diffjax as dj


def _apply(name, x, **kw):
  model = dj.models.create(name, rngs=nnx.Rngs(0), **kw)
  return model, *dj.models.split_apply(model)


def test_mlp_shapes_and_time_dependence():
  model, apply_fn, params = _apply("mlp_tiny", None, in_features=3)
  x = jax.random.normal(jax.random.PRNGKey(0), (5, 3))
  out = apply_fn(params, x, jnp.full((5,), 0.1))
  assert out.shape == (5, 3) and out.dtype == jnp.float32
  assert not np.allclose(out, apply_fn(params, x, jnp.full((5,), 2.0)))
  np.testing.assert_allclose(out, model(x, jnp.full((5,), 0.1)), rtol=1e-6)  # pure apply == module


def test_unet_tiny_shapes_and_zero_init_output():
  model, apply_fn, params = _apply("unet_tiny", None, in_channels=1)
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 8, 8, 1))
  out = apply_fn(params, x, jnp.ones((4,)))
  assert out.shape == (4, 8, 8, 1)
  np.testing.assert_array_equal(out, 0.0)  # DDPM zero-initialises the output conv


def test_unet_with_attention_at_32():
  model = dj.models.create("unet_small", rngs=nnx.Rngs(0), in_channels=3)
  assert set(model.attn.keys()) == {"down2", "down3", "up3", "up4", "up5"}
  out = model(jnp.ones((1, 32, 32, 3)), jnp.ones((1,)))
  assert out.shape == (1, 32, 32, 3)


def test_class_conditioning_and_null_label():
  model, apply_fn, params = _apply("mlp_tiny", None, in_features=2, num_classes=3)
  x, t = jnp.ones((2, 2)), jnp.ones((2,))
  a = apply_fn(params, x, t, jnp.array([0, 0]))
  b = apply_fn(params, x, t, jnp.array([1, 1]))
  null = apply_fn(params, x, t, None)
  assert not np.allclose(a, b)
  np.testing.assert_allclose(null, apply_fn(params, x, t, jnp.array([3, 3])), rtol=1e-6)
  _, apply_u, params_u = _apply("mlp_tiny", None, in_features=2)
  with pytest.raises(ValueError, match="num_classes"):
    apply_u(params_u, x, t, jnp.array([0, 0]))


def test_count_params_by_hand():
  model = dj.models.create("mlp", rngs=nnx.Rngs(0), in_features=2, width=8, num_blocks=1)
  freq = 128
  embed = (freq * 8 + 8) + (8 * 8 + 8)
  expected = embed + (2 * 8 + 8) + 3 * (8 * 8 + 8) + (8 * 2 + 2)
  assert dj.models.count_params(model) == expected


def test_grads_are_finite_under_jit():
  for name, kw, shape in [("mlp_tiny", dict(in_features=2), (4, 2)), ("unet_tiny", dict(in_channels=1), (2, 8, 8, 1))]:
    _, apply_fn, params = _apply(name, None, **kw)
    loss = lambda p: jnp.sum(apply_fn(p, jnp.ones(shape), jnp.ones(shape[:1]))**2 + 1e-3 * sum(
        jnp.sum(l**2) for l in jax.tree.leaves(p)))
    grads = jax.jit(jax.grad(loss))(params)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))


def test_registry_errors():
  with pytest.raises(ValueError, match="valid models"):
    dj.models.create("dit_xxl", rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="valid options"):
    dj.models.create("mlp", rngs=nnx.Rngs(0), in_features=2, hidden=3)
  with pytest.raises(ValueError, match="divisible"):
    dj.models.create("unet_tiny", rngs=nnx.Rngs(0), in_channels=1)(jnp.ones((1, 7, 7, 1)), jnp.ones(1))
  assert {"mlp", "unet_tiny", "unet_small"} <= set(dj.models.list_models())
