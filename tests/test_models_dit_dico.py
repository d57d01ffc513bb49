"""DiT and DiCo: exact parameter counts and MACs of the papers' models (abstract shapes, nothing
allocated), zero output at init, PixelShuffle order, position embedding layout, tiny forwards."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import diffjax as dj
from diffjax.models import dico, dit, macs


def _abstract(name):
  return nnx.eval_shape(lambda: dj.models.create(name, rngs=nnx.Rngs(0)))


@pytest.mark.parametrize("name,expected", [("dit_xl_2", 675_129_632), ("dit_s_2", 32_963_360)])
def test_dit_parameter_counts_with_the_fixed_position_embedding(name, expected):
  m = _abstract(name)
  # the reference keeps the frozen pos_embed as a parameter; here it is a non-trainable Variable
  assert dj.models.count_params(m) + m.pos_embed.size == expected


@pytest.mark.parametrize("name,expected", [("dico_s", 33_137_672), ("dico_b", 129_992_712),
                                           ("dico_l", 463_897_992), ("dico_xl", 701_151_368)])
def test_dico_parameter_counts(name, expected):
  assert dj.models.count_params(_abstract(name)) == expected


def test_macs_match_the_published_figures():
  assert macs.model_macs(_abstract("dit_xl_2"), (1, 32, 32, 4)) / 1e9 == pytest.approx(118.6, abs=0.05)
  published = {"dico_s": 4.25, "dico_b": 16.88, "dico_l": 60.24, "dico_xl": 87.30}
  for name, gmacs in published.items():
    assert macs.dico_torchprofile_macs(_abstract(name), (1, 32, 32, 4)) / 1e9 == pytest.approx(gmacs, abs=0.005)


def test_mac_counter_on_a_known_network():
  conv = nnx.Conv(3, 8, (3, 3), rngs=nnx.Rngs(0))
  lin = nnx.Linear(8, 5, rngs=nnx.Rngs(0))
  fn = lambda x: lin(conv(x).mean(axis=(1, 2)))
  assert macs.count_macs(fn, jax.ShapeDtypeStruct((2, 6, 6, 3), np.float32)) == 2 * 6 * 6 * 8 * 9 * 3 + 2 * 8 * 5


@pytest.mark.parametrize("name", ["dit_tiny", "dico_tiny"])
def test_tiny_models_are_zero_at_init_and_use_labels(name):
  model = dj.models.create(name, rngs=nnx.Rngs(0), in_channels=1)
  x = jax.random.normal(jax.random.PRNGKey(0), (3, 8, 8, 1))
  t = jnp.array([1.0, 10.0, 500.0])
  out = model(x, t, jnp.array([0, 5, 9]))
  assert out.shape == x.shape and float(jnp.max(jnp.abs(out))) == 0.0
  # perturb every parameter: the output then depends on the label, and label None = the null class
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
  params = jax.tree.unflatten(treedef, [p + 0.05 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])
  model = nnx.merge(graphdef, params, rest)
  a, b = model(x, t, jnp.array([0, 5, 9])), model(x, t, jnp.array([1, 5, 9]))
  assert float(jnp.max(jnp.abs(a[0] - b[0]))) > 0 and float(jnp.max(jnp.abs(a[1:] - b[1:]))) == 0.0
  np.testing.assert_array_equal(model(x, t), model(x, t, jnp.full((3,), 10)))
  with pytest.raises(ValueError, match="expects x of shape"):
    model(jnp.zeros((2, 6, 6, 1)), t[:2])


def test_pixel_shuffle_follows_the_torch_index_formula():
  x = np.arange(2 * 4 * 6 * 3, dtype=np.float32).reshape(2, 4, 6, 3)
  y = np.asarray(dico.pixel_unshuffle(jnp.asarray(x)))
  for c in range(3):
    for i in range(2):
      for j in range(2):
        np.testing.assert_array_equal(y[:, :, :, c * 4 + i * 2 + j], x[:, i::2, j::2, c])
  np.testing.assert_array_equal(np.asarray(dico.pixel_shuffle(jnp.asarray(y))), x)


def test_position_embedding_layout():
  emb = dit.sincos_pos_embed_2d(8, 3)  # dim 8: per axis [sin, cos] of 2 frequencies (1, 1/100)
  row, col = 1, 2
  t = row * 3 + col
  omega = np.array([1.0, 0.01])
  np.testing.assert_allclose(emb[t], np.concatenate([np.sin(col * omega), np.cos(col * omega),
                                                     np.sin(row * omega), np.cos(row * omega)]), rtol=1e-6)


def test_dico_block_parameter_formula():
  for h, r in ((16, 2), (24, 4)):
    blk = dico.DiCoBlock(h, r, rngs=nnx.Rngs(0))
    assert dj.models.count_params(blk) == (9 + 2 * r) * h * h + (20 + r) * h
