"""The FID Inception-v3 in Flax: architecture size, the PyTorch-name weight loader (round trip with
the layout transforms), padding-excluding average pooling, and deterministic (N, 2048) features."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import diffjax as dj
from diffjax.metrics import inception


@pytest.fixture(scope="module")
def net():
  return inception.FIDInception(rngs=nnx.Rngs(0))


def test_parameter_count(net):
  # torchvision's Inception3 without the aux head: 23,834,568 with a 1000-way fc, i.e. 21,785,568
  # without it; the FID graph's fc is 1008-way: 21,785,568 + 2048 * 1008 + 1008
  assert dj.models.count_params(net) == 21_785_568 + 2048 * 1008 + 1008


def test_loader_round_trip_with_torch_layouts(net, tmp_path):
  rng = np.random.default_rng(0)
  state = {}
  for name, (module, attr, _) in inception.torch_state_names(net).items():
    shape = getattr(module, attr)[...].shape
    if attr == "kernel" and len(shape) == 4:
      shape = (shape[3], shape[2], shape[0], shape[1])  # torch OIHW
    elif attr == "kernel":
      shape = shape[::-1]  # torch (out, in)
    state[name] = rng.standard_normal(shape).astype(np.float32)
  path = str(tmp_path / "inception.npz")
  np.savez(path, **state)
  loaded = inception.load_inception_weights(inception.FIDInception(rngs=nnx.Rngs(1)), path)
  w = state["Mixed_6b.branch7x7_2.conv.weight"]  # (O, I, 1, 7)
  np.testing.assert_array_equal(loaded.Mixed_6b.branch7x7_2.conv.kernel[...], np.transpose(w, (2, 3, 1, 0)))
  np.testing.assert_array_equal(loaded.Mixed_7c.branch_pool.bn.var[...], state["Mixed_7c.branch_pool.bn.running_var"])
  np.testing.assert_array_equal(loaded.fc.kernel[...], state["fc.weight"].T)
  bad = dict(state)
  bad["Conv2d_1a_3x3.conv.weight"] = bad["Conv2d_1a_3x3.conv.weight"][:, :2]
  np.savez(tmp_path / "bad.npz", **bad)
  with pytest.raises(ValueError, match="Conv2d_1a_3x3.conv.weight"):
    inception.load_inception_weights(inception.FIDInception(rngs=nnx.Rngs(1)), str(tmp_path / "bad.npz"))
  del bad["Conv2d_1a_3x3.conv.weight"]
  np.savez(tmp_path / "missing.npz", **bad)
  with pytest.raises(ValueError, match="has no tensor"):
    inception.load_inception_weights(inception.FIDInception(rngs=nnx.Rngs(1)), str(tmp_path / "missing.npz"))


def test_average_pool_excludes_padding():
  x = jnp.ones((1, 4, 4, 2))
  np.testing.assert_allclose(inception._avg_pool_exclude_pad(x), x)  # ones stay ones at the borders
  y = jnp.arange(9.0).reshape(1, 3, 3, 1)
  assert float(inception._avg_pool_exclude_pad(y)[0, 0, 0, 0]) == pytest.approx((0 + 1 + 3 + 4) / 4)


def test_features_shape_and_determinism(net):
  x = jax.random.uniform(jax.random.PRNGKey(0), (2, 16, 16, 3))
  f = jax.jit(net.pool_features)(x)
  assert f.shape == (2, 2048) and bool(jnp.all(jnp.isfinite(f))) and bool(jnp.all(f >= 0))
  np.testing.assert_array_equal(f, jax.jit(net.pool_features)(x))
  with pytest.raises(ValueError, match="RGB images"):
    net.pool_features(jnp.zeros((1, 8, 8, 1)))
