"""DiT and DiCo: exact parameter counts and MACs of the papers' models (abstract shapes from
`nnx.eval_shape`, nothing allocated), zero output at init, class dropout and the null class,
PixelShuffle order, position-embedding layout, tiny forwards."""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from diffjax.models import dico, dit, macs, registry
from diffjax.models.embeddings import sinusoidal_embedding
from diffjax.models.registry import count_params


@functools.lru_cache(maxsize=None)
def _abstract(name):
  """The 256x256-latent configs (32x32x4, 1000 classes, learned sigma) as abstract modules."""
  family, size = name.split("_", 1)
  if family == "dit":
    size, patch = size.split("_")
    build = lambda: dit.DiT(**dit.dit_kwargs(size, int(patch)), rngs=nnx.Rngs(0))
  else:
    build = lambda: dico.DiCo(**dico.DICO_SIZES[size], rngs=nnx.Rngs(0))
  return nnx.eval_shape(build)


def _tiny(name, **overrides):
  cls, kwargs = {"dit_tiny": (dit.DiT, dit.DIT_TINY), "dico_tiny": (dico.DiCo, dico.DICO_TINY)}[name]
  return cls(**{**kwargs, **overrides}, rngs=nnx.Rngs(0))


def _perturbed(model, scale=0.05):
  """The model with every parameter moved off its (partly zero) init."""
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
  leaves = [p + scale * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)]
  return nnx.merge(graphdef, jax.tree.unflatten(treedef, leaves), rest)


# --- exact sizes (reference counts: DiT models.py / README, DiCo training logs) ---------------------

@pytest.mark.parametrize("name,with_pos,trainable", [("dit_xl_2", 675_129_632, 674_834_720),
                                                     ("dit_s_2", 32_963_360, 32_865_056)])
def test_dit_parameter_counts(name, with_pos, trainable):
  m = _abstract(name)
  # the reference's frozen pos_embed counts as a parameter there; here it is a non-trainable Variable
  assert isinstance(m.pos_embed, nnx.Variable) and not isinstance(m.pos_embed, nnx.Param)
  assert count_params(m) == trainable
  assert count_params(m) + m.pos_embed.size == with_pos


@pytest.mark.parametrize("name,expected", [("dico_s", 33_137_672), ("dico_b", 129_992_712),
                                           ("dico_l", 463_897_992), ("dico_xl", 701_151_368)])
def test_dico_parameter_counts(name, expected):
  assert count_params(_abstract(name)) == expected


def test_dico_block_parameter_formula():
  for h, r in ((16, 2), (24, 4)):
    assert count_params(dico.DiCoBlock(h, r, rngs=nnx.Rngs(0))) == (9 + 2 * r) * h * h + (20 + r) * h


# --- MACs ---------------------------------------------------------------------------------------------

def _dit_macs_formula(t, d, depth, p, c_in, c_out):
  """Per-sample DiT MACs: qkv, proj, MLP (12 D^2 per token), QK^T and AV (2 T^2 D), adaLN (6 D^2),
  patch embedding, timestep MLP, final adaLN and linear."""
  return (depth * (12 * t * d * d + 2 * t * t * d + 6 * d * d) + t * c_in * p * p * d + 256 * d + d * d
          + 2 * d * d + t * d * p * p * c_out)


@pytest.mark.parametrize("name,published,dims", [("dit_xl_2", 118.6, (1152, 28)), ("dit_s_2", 6.06, (384, 12))])
def test_dit_macs(name, published, dims):
  counted = macs.model_macs(_abstract(name), (1, 32, 32, 4))
  assert counted == _dit_macs_formula(256, dims[0], dims[1], 2, 4, 8)
  assert counted / 1e9 == pytest.approx(published, rel=0.01)  # XL/2 118.64, S/2 6.06


@pytest.mark.parametrize("name,published", [("dico_s", 4.25), ("dico_b", 16.88), ("dico_l", 60.24),
                                            ("dico_xl", 87.30)])
def test_dico_macs(name, published):
  m = _abstract(name)
  raw = macs.model_macs(m, (1, 32, 32, 4))  # conv / linear only: 4.24 / 16.86 / 60.17 / 87.22 G
  assert raw / 1e9 == pytest.approx(published, rel=0.01)
  # the README figure is torchprofile's, which also counts the elementwise multiplies: exact
  assert (raw + macs.dico_elementwise_muls(m, (1, 32, 32, 4))) / 1e9 == pytest.approx(published, abs=0.005)


def test_mac_counter_on_known_networks():
  conv = nnx.Conv(3, 8, (3, 3), rngs=nnx.Rngs(0))
  dw = nnx.Conv(8, 8, (3, 3), feature_group_count=8, rngs=nnx.Rngs(0))
  lin = nnx.Linear(8, 5, rngs=nnx.Rngs(0))
  fn = jax.jit(lambda x: lin(dw(conv(x)).mean(axis=(1, 2))))
  x = jax.ShapeDtypeStruct((2, 6, 6, 3), np.float32)
  assert macs.count_macs(fn, x) == 2 * 36 * 8 * 27 + 2 * 36 * 8 * 9 + 2 * 8 * 5
  w = jnp.ones((4, 4))
  scanned = lambda v: jax.lax.scan(lambda c, _: (c @ w, None), v, None, length=3)[0]
  assert macs.count_macs(scanned, jax.ShapeDtypeStruct((2, 4), np.float32)) == 3 * 2 * 4 * 4
  batched = lambda a, b: jnp.einsum("bij,bjk->bik", a, b)
  shape = jax.ShapeDtypeStruct((5, 2, 3), np.float32), jax.ShapeDtypeStruct((5, 3, 7), np.float32)
  assert macs.count_macs(batched, *shape) == 5 * 2 * 3 * 7


# --- init, conditioning, tiny models ------------------------------------------------------------------

def test_tiny_models_are_roughly_matched():
  counts = {n: count_params(nnx.eval_shape(lambda n=n: _tiny(n))) for n in ("dit_tiny", "dico_tiny")}
  assert counts == {"dit_tiny": 723_844, "dico_tiny": 735_913}


@pytest.mark.parametrize("name", ["dit_tiny", "dico_tiny"])
def test_tiny_models_zero_at_init_and_labels(name):
  model = _tiny(name)
  x = jax.random.normal(jax.random.PRNGKey(0), (3, 8, 8, 1))
  t = jnp.array([1.0, 10.0, 500.0])
  out = model(x, t, jnp.array([0, 5, 9]))
  assert out.shape == x.shape and float(jnp.max(jnp.abs(out))) == 0.0
  assert _tiny(name, learn_sigma=True)(x, t, jnp.array([0, 5, 9])).shape == (3, 8, 8, 2)
  # every block is the identity at init (zero adaLN gates)
  blocks = model.blocks if name == "dit_tiny" else [b for level, _ in model.levels() for b in level]
  h = jax.random.normal(jax.random.PRNGKey(2), (3, 4, 4, blocks[0].conv1.in_features) if name == "dico_tiny"
                        else (3, 16, 96))
  np.testing.assert_array_equal(blocks[0](h, jnp.ones((3, h.shape[-1]))), h)
  # off the init, the output depends on the label, and cond=None is the null class 10
  model = _perturbed(model)
  a, b = model(x, t, jnp.array([0, 5, 9])), model(x, t, jnp.array([1, 5, 9]))
  assert float(jnp.max(jnp.abs(a[0] - b[0]))) > 0 and float(jnp.max(jnp.abs(a[1:] - b[1:]))) == 0.0
  np.testing.assert_array_equal(model(x, t), model(x, t, jnp.full((3,), 10)))
  with pytest.raises(ValueError, match="expects x of shape"):
    model(jnp.zeros((2, 6, 6, 1)), t[:2])


def test_class_dropout_and_null_class():
  labels = jnp.arange(6) % 3
  np.testing.assert_array_equal(dit.drop_labels(labels, 10, force_drop_ids=jnp.array([1, 0, 1, 0, 0, 1])),
                                [10, 1, 10, 0, 1, 10])
  np.testing.assert_array_equal(dit.drop_labels(labels, 10), labels)  # no key: no drop (evaluation)
  dropped = dit.drop_labels(jnp.zeros(20_000, jnp.int32), 10, prob=0.1, key=jax.random.PRNGKey(0))
  assert set(np.unique(dropped).tolist()) == {0, 10} and abs(float(jnp.mean(dropped == 10)) - 0.1) < 0.01

  x, t, y = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 1)), jnp.array([3.0, 700.0]), jnp.array([4, 7])
  for name in ("dit_tiny", "dico_tiny"):
    model = _perturbed(_tiny(name))
    np.testing.assert_array_equal(model(x, t, y, force_drop_ids=jnp.ones(2)), model(x, t))
    partly = model(x, t, y, force_drop_ids=jnp.array([0, 1]))
    np.testing.assert_array_equal(partly[0], model(x, t, y)[0])
    np.testing.assert_array_equal(partly[1], model(x, t)[1])
    keyed = model(x, t, y, dropout_key=jax.random.PRNGKey(3))  # p = 0.1: each row is one of the two
    for i in range(2):
      assert any(bool(jnp.all(keyed[i] == ref[i])) for ref in (model(x, t, y), model(x, t)))
    # without class dropout there is no null row, so cond=None is refused
    no_null = _tiny(name, class_dropout_prob=0.0)
    table = no_null.y_embedder.tables[0].embedding
    assert table.shape[0] == 10 and _tiny(name).y_embedder.tables[0].embedding.shape[0] == 11
    with pytest.raises(ValueError, match="no null class"):
      no_null(x, t)
    with pytest.raises(ValueError, match="num_classes=None"):
      _tiny(name, num_classes=None)(x, t, y)
    assert _tiny(name, num_classes=None)(x, t).shape == x.shape


def test_reference_initialisation():
  m = _tiny("dit_tiny")
  kernel, bias = m.x_embedder.kernel[...], m.x_embedder.bias[...]  # (2, 2, 1, 96): view (96, 4)
  assert float(jnp.max(jnp.abs(kernel))) <= math.sqrt(6 / (4 + 96)) and float(jnp.std(kernel)) > 0.1
  assert 0 < float(jnp.max(jnp.abs(bias))) <= 1 / math.sqrt(4)  # torch Conv2d default bias
  assert float(jnp.std(m.t_embedder.fc1.kernel[...])) == pytest.approx(0.02, rel=0.1)
  assert float(jnp.max(jnp.abs(m.blocks[0].fc1.bias[...]))) == 0.0
  d = _tiny("dico_tiny")
  stem = d.x_embedder.kernel[...]  # (3, 3, 1, 24): view (24, 9)
  assert float(jnp.max(jnp.abs(stem))) <= math.sqrt(6 / (9 + 24)) and float(jnp.max(jnp.abs(stem))) > 0.3
  assert float(jnp.max(jnp.abs(d.x_embedder.bias[...]))) == 0.0


# --- layouts ------------------------------------------------------------------------------------------

def test_timestep_features_are_cos_then_sin():
  t = np.array([0.0, 3.0, 999.0])
  freqs = np.exp(-np.log(10_000) * np.arange(128) / 128)
  ref = np.concatenate([np.cos(t[:, None] * freqs), np.sin(t[:, None] * freqs)], axis=1)
  np.testing.assert_allclose(np.asarray(sinusoidal_embedding(jnp.asarray(t), 256)), ref, atol=2e-4)


def test_position_embedding_layout():
  emb = dit.sincos_pos_embed_2d(8, 3)  # dim 8: per axis [sin, cos] of 2 frequencies (1, 1/100)
  row, col = 1, 2
  omega = np.array([1.0, 0.01])
  np.testing.assert_allclose(emb[row * 3 + col], np.concatenate([np.sin(col * omega), np.cos(col * omega),
                                                                 np.sin(row * omega), np.cos(row * omega)]),
                             rtol=1e-6)


def test_unpatchify_follows_the_reference_einsum():
  m = nnx.eval_shape(lambda: _tiny("dit_tiny", learn_sigma=True))  # p 2, grid 4, C_out 2
  tokens = np.arange(2 * 16 * 8, dtype=np.float32).reshape(2, 16, 8)
  ref = np.einsum("nhwpqc->nchpwq", tokens.reshape(2, 4, 4, 2, 2, 2)).reshape(2, 2, 8, 8)  # NCHW
  np.testing.assert_array_equal(np.asarray(m.unpatchify(jnp.asarray(tokens))), ref.transpose(0, 2, 3, 1))


def test_pixel_shuffle_follows_the_torch_index_formula():
  x = np.arange(2 * 4 * 6 * 3, dtype=np.float32).reshape(2, 4, 6, 3)
  y = np.asarray(dico.pixel_unshuffle(jnp.asarray(x)))
  for c in range(3):
    for i in range(2):
      for j in range(2):
        np.testing.assert_array_equal(y[:, :, :, c * 4 + i * 2 + j], x[:, i::2, j::2, c])
  np.testing.assert_array_equal(np.asarray(dico.pixel_shuffle(jnp.asarray(y))), x)


def test_register_all(monkeypatch):
  monkeypatch.setattr(registry, "_MODELS", {})
  dit.register_all()
  dico.register_all()
  names = registry.list_models()
  assert len(names) == 12 + 1 + 5 + 1 and {"dit_xl_2", "dit_s_8", "dit_tiny", "dico_h", "dico_tiny"} <= set(names)
  assert registry.create("dico_tiny", rngs=nnx.Rngs(0), in_channels=4).in_channels == 4
  with pytest.raises(ValueError, match="DiT size must be one of"):
    dit.dit_kwargs("xxl", 2)
