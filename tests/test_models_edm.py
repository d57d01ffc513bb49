"""EDM's SongUNet (DDPM++, NCSN++): exact parameter counts of the CIFAR-10 networks, the FIR
resampling against its definition, near-zero output at init, labels and the null label."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import diffjax as dj
from diffjax.models import edm_unets


@pytest.mark.parametrize("name,label_dim,expected", [("ddpmpp_cifar10", 0, 55_733_891),
                                                     ("ddpmpp_cifar10", 10, 55_735_299),
                                                     ("ncsnpp_cifar10", 0, 56_397_827),
                                                     ("ncsnpp_cifar10", 10, 56_400_643)])
def test_cifar10_parameter_counts(name, label_dim, expected):
  # EDM's CIFAR-10 networks as trained (augment_dim 9); the paper reports ~56 M
  m = nnx.eval_shape(lambda: dj.models.create(name, rngs=nnx.Rngs(0), label_dim=label_dim))
  assert dj.models.count_params(m) == expected


def _torch_conv_down(x, f2, pad):
  """Reference semantics: out[i, j] = sum_ab f2[a, b] x[2i + a - pad, 2j + b - pad] (zero padding)."""
  n, h, w, c = x.shape
  xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  k = f2.shape[0]
  oh = (h + 2 * pad - k) // 2 + 1
  out = np.zeros((n, oh, oh, c))
  for i in range(oh):
    for j in range(oh):
      out[:, i, j] = np.einsum("ab,nabc->nc", f2, xp[:, 2 * i:2 * i + k, 2 * j:2 * j + k])
  return out


@pytest.mark.parametrize("f", [(1, 1), (1, 3, 3, 1)])
def test_fir_resampling(f):
  x = np.random.default_rng(0).standard_normal((2, 8, 8, 3)).astype(np.float32)
  f2, pad = edm_unets._fir(f)
  np.testing.assert_allclose(edm_unets.fir_downsample(jnp.asarray(x), f), _torch_conv_down(x, f2, pad),
                             rtol=1e-5, atol=1e-6)
  up = np.asarray(edm_unets.fir_upsample(jnp.asarray(x), f))
  assert up.shape == (2, 16, 16, 3)
  # the transposed conv preserves the mean (4 f f^T / (sum f)^2 sums to 4 over each 2x2 phase)
  np.testing.assert_allclose(up[:, 4:12, 4:12].mean(), x[:, 2:6, 2:6].mean(), atol=0.2)
  if f == (1, 1):
    np.testing.assert_allclose(up, np.repeat(np.repeat(x, 2, 1), 2, 2), rtol=1e-6)


@pytest.mark.parametrize("name", ["ddpmpp_tiny", "ncsnpp_tiny"])
def test_tiny_networks(name):
  m = dj.models.create(name, rngs=nnx.Rngs(0), in_channels=1, num_classes=10)
  x = jax.random.normal(jax.random.PRNGKey(0), (3, 8, 8, 1))
  c = jnp.array([-1.0, 0.0, 1.0])
  out = m(x, c, jnp.array([0, 4, 10]))
  # the reference's "zero" layers are xavier x 1e-5, so the output starts tiny, not exactly 0
  assert out.shape == x.shape and 0 < float(jnp.max(jnp.abs(out))) < 1e-3
  np.testing.assert_array_equal(m(x, c), m(x, c, jnp.full((3,), 10)))  # None = the null label
  assert float(jnp.max(jnp.abs(m(x, c, jnp.array([0, 4, 9])) - out))) > 0
  with pytest.raises(ValueError, match="expects x of shape"):
    m(jnp.zeros((1, 16, 16, 1)), c[:1])


def test_adm_imagenet64_parameter_count_and_zero_init():
  m = nnx.eval_shape(lambda: dj.models.create("adm_imagenet64", rngs=nnx.Rngs(0)))
  assert dj.models.count_params(m) == 295_899_267  # EDM's ADM ImageNet-64 (class-conditional)
  tiny = dj.models.create("adm_tiny", rngs=nnx.Rngs(0), in_channels=1, num_classes=10)
  x = jax.random.normal(jax.random.PRNGKey(0), (3, 8, 8, 1))
  out = tiny(x, jnp.zeros(3), jnp.array([1, 2, 10]))
  assert out.shape == x.shape and float(jnp.max(jnp.abs(out))) == 0.0  # zero-initialised output conv
  # attention heads: C // 64, so the 32-channel level has none and the 64-channel level one
  heads = {blk.out_features: blk.num_heads for blk in list(tiny.enc)[1:] if hasattr(blk, "num_heads")}
  assert heads[64] == 1
