"""FID / KID / IS against closed forms and direct computations, and the FID Inception's weight
loader, input transform and forward pass.

The distances are float64 NumPy by construction (no jax x64 needed); the Inception runs in float32.
"""
import json
import struct

import jax
import numpy as np
import pytest
import scipy.linalg
from flax import nnx

from diffjax.metrics import fid, inception


def _random_cov(rng, d):
  a = rng.standard_normal((d, d))
  return a @ a.T / d + 0.1 * np.eye(d)


# ------------------------------------------------------------------------------------------------
# Fréchet distance


def test_distance_of_a_set_with_itself_is_zero():
  rng = np.random.default_rng(0)
  f = rng.standard_normal((500, 16))
  assert abs(fid.fid_from_features(f, f)) < 1e-8
  # fewer samples than dimensions (rank-deficient covariance), as 2048-d Inception features of a few
  # hundred images: the nuclear-norm trace keeps this at round-off
  g = rng.standard_normal((100, 300))**2 * 3.0
  assert abs(fid.fid_from_features(g, g)) < 1e-8


def test_commuting_covariances_closed_form():
  mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, -1.0])
  a, b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
  expected = np.sum((mu1 - mu2)**2) + np.sum((np.sqrt(a) - np.sqrt(b))**2)
  assert fid.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-12)
  # one dimension: (m1 - m2)^2 + (s1 - s2)^2
  assert fid.frechet_distance([1.0], [[4.0]], [-2.0], [[0.25]]) == pytest.approx(9.0 + 1.5**2, rel=1e-12)
  # S2 = c^2 S1 (full, commuting): ||mu1 - mu2||^2 + (1 - c)^2 tr(S1)
  s1 = _random_cov(np.random.default_rng(5), 5)
  assert fid.frechet_distance(np.zeros(5), s1, np.ones(5), 9.0 * s1) == pytest.approx(
      5.0 + 4.0 * np.trace(s1), rel=1e-10)


@pytest.mark.parametrize("method", fid.METHODS)
def test_full_covariances_against_scipy(method):
  rng = np.random.default_rng(1)
  s1, s2 = _random_cov(rng, 6), _random_cov(rng, 6)
  mu1, mu2 = rng.standard_normal(6), rng.standard_normal(6)
  r1 = scipy.linalg.sqrtm(s1).real
  tr = np.trace(scipy.linalg.sqrtm(r1 @ s2 @ r1).real)  # the definition, eq. 6
  expected = np.sum((mu1 - mu2)**2) + np.trace(s1) + np.trace(s2) - 2 * tr
  assert fid.frechet_distance(mu1, s1, mu2, s2, method=method) == pytest.approx(expected, rel=1e-10)
  assert fid.frechet_distance(mu2, s2, mu1, s1, method=method) == pytest.approx(expected, rel=1e-10)


def test_gaussian_features_converge_to_the_closed_form():
  rng = np.random.default_rng(2)
  s1, s2 = _random_cov(rng, 4), _random_cov(rng, 4)
  mu1, mu2 = np.zeros(4), np.full(4, 0.5)
  f1 = rng.multivariate_normal(mu1, s1, 200_000)
  f2 = rng.multivariate_normal(mu2, s2, 200_000)
  assert fid.fid_from_features(f1, f2) == pytest.approx(fid.frechet_distance(mu1, s1, mu2, s2), abs=0.02)


# ------------------------------------------------------------------------------------------------
# KID and IS


def _direct_unbiased_mmd2(x, y):
  """O(n^2) double loop over pairs with the cubic kernel (x.y / d + 1)^3."""
  d = x.shape[1]
  k = lambda a, b: (float(np.dot(a, b)) / d + 1.0)**3
  m, n = len(x), len(y)
  kxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
  kyy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
  kxy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
  return kxx + kyy - 2 * kxy


def test_kid_matches_a_direct_unbiased_mmd():
  rng = np.random.default_rng(3)
  x, y = rng.standard_normal((40, 5)), rng.standard_normal((40, 5)) + 0.7
  direct = _direct_unbiased_mmd2(x, y)
  # subset_size is capped at n = 40: every subset is the whole set (permuted), so every draw is `direct`
  mean, std = fid.kid_from_features(x, y, num_subsets=3, subset_size=1000)
  assert mean == pytest.approx(direct, rel=1e-10) and std == pytest.approx(0.0, abs=1e-12)
  assert direct > 0


def test_kid_of_a_set_with_itself_and_of_shifted_gaussians():
  rng = np.random.default_rng(6)
  x = rng.standard_normal((2000, 5))
  itself, _ = fid.kid_from_features(x, x, num_subsets=20, subset_size=500)
  same, _ = fid.kid_from_features(x, rng.standard_normal((2000, 5)), num_subsets=20, subset_size=500)
  shifted, _ = fid.kid_from_features(x, rng.standard_normal((2000, 5)) + 0.7, num_subsets=20, subset_size=500)
  assert shifted > 0.1
  assert abs(itself) < 0.02 * shifted and abs(same) < 0.02 * shifted, (itself, same, shifted)


def test_inception_score_limits():
  k = 10
  assert fid.inception_score_from_probs(np.full((100, k), 1.0 / k)) == pytest.approx((1.0, 0.0), abs=1e-12)
  assert fid.inception_score_from_logits(np.zeros((100, k)))[0] == pytest.approx(1.0, rel=1e-12)
  onehot = np.eye(k)[np.arange(100) % k]  # confident, every class equally often in every split
  assert fid.inception_score_from_probs(onehot, splits=10) == pytest.approx((k, 0.0), rel=1e-9, abs=1e-9)
  mean, std = fid.inception_score_from_logits(60.0 * onehot)  # softmax ~ one-hot
  assert mean == pytest.approx(k, rel=1e-6) and std < 1e-6


# ------------------------------------------------------------------------------------------------
# statistics, batching, errors


def test_statistics_files(tmp_path):
  rng = np.random.default_rng(4)
  mu, sigma = fid.compute_statistics(rng.standard_normal((30, 3)), lambda b: b * 2.0, batch_size=7, progress=False)
  path = str(tmp_path / "ref.npz")
  fid.save_statistics(path, mu, sigma)
  mu2, sigma2 = fid.load_statistics(path)
  np.testing.assert_array_equal(mu, mu2)
  np.testing.assert_array_equal(sigma, sigma2)
  assert mu2.dtype == sigma2.dtype == np.float64
  np.savez(tmp_path / "bad.npz", m=mu)
  with pytest.raises(ValueError, match="must contain arrays 'mu' and 'sigma'"):
    fid.load_statistics(str(tmp_path / "bad.npz"))


def test_compute_features_pads_the_last_batch_and_takes_iterables():
  x = np.arange(23 * 2, dtype=np.float64).reshape(23, 2)
  shapes = []

  def feature_fn(b):
    shapes.append(b.shape)
    return np.concatenate([b, b**2], axis=1)

  f = fid.compute_features(x, feature_fn, batch_size=10, progress=False)
  np.testing.assert_array_equal(f, np.concatenate([x, x**2], axis=1))
  assert shapes == [(10, 2)] * 3  # one shape: a jitted feature_fn compiles once
  g = fid.compute_features((x[i:i + 5] for i in range(0, 23, 5)), feature_fn, progress=False)
  np.testing.assert_array_equal(g, f)
  mu, sigma = fid.compute_statistics(x, feature_fn, batch_size=10, progress=False)
  np.testing.assert_allclose(mu, f.mean(0)) and np.testing.assert_allclose(sigma, np.cov(f.T))


def test_clear_errors_on_wrong_shapes_and_arguments():
  rng = np.random.default_rng(7)
  f3, f4 = rng.standard_normal((20, 3)), rng.standard_normal((20, 4))
  mu, sigma = np.zeros(3), np.eye(3)
  with pytest.raises(ValueError, match="feature sizes differ"):
    fid.frechet_distance(mu, sigma, mu[:2], sigma[:2, :2])
  with pytest.raises(ValueError, match=r"mu1 must have shape \(d,\) and sigma1 \(d, d\)"):
    fid.frechet_distance(mu[None], sigma, mu, sigma)
  with pytest.raises(ValueError, match=r"mu2 must have shape \(d,\) and sigma2 \(d, d\)"):
    fid.frechet_distance(mu, sigma, mu, sigma[:, :2])
  with pytest.raises(ValueError, match=r"method must be one of \('eigh', 'sqrtm'\)"):
    fid.frechet_distance(mu, sigma, mu, sigma, method="svd")
  with pytest.raises(ValueError, match="same d"):
    fid.fid_from_features(f3, f4)
  with pytest.raises(ValueError, match=r"features1 must have shape \(N >= 2, d\)"):
    fid.fid_from_features(f3[:, 0], f3)
  with pytest.raises(ValueError, match="same d"):
    fid.kid_from_features(f3, f4)
  with pytest.raises(ValueError, match="num_subsets must be >= 1"):
    fid.kid_from_features(f3, f3, num_subsets=0)
  with pytest.raises(ValueError, match="subset_size must be >= 2"):
    fid.kid_from_features(f3, f3, subset_size=1)
  with pytest.raises(ValueError, match=r"probs must have shape \(N >= splits = 10, K\)"):
    fid.inception_score_from_probs(np.full((5, 3), 1 / 3))
  with pytest.raises(ValueError, match=r"logits must have shape \(N, K\)"):
    fid.inception_score_from_logits(np.zeros(10))
  with pytest.raises(ValueError, match="feature_fn must map a batch"):
    fid.compute_features(f3, lambda b: b[:, 0], progress=False)
  with pytest.raises(ValueError, match="batch_size must be >= 1"):
    fid.compute_features(f3, lambda b: b, batch_size=0)
  with pytest.raises(ValueError, match="images must be RGB images"):
    inception.preprocess(np.zeros((2, 8, 8, 1)))
  with pytest.raises(ValueError, match="output must be one of"):
    inception.make_feature_fn(None, "softmax")
  with pytest.raises(ValueError, match="path must end in '.npz' or '.safetensors'"):
    inception.read_state_dict("weights.pth")


# ------------------------------------------------------------------------------------------------
# the FID Inception: input transform, loader, forward


def _torch_bilinear_matrix(n_in, n_out):
  """PyTorch's `interpolate(mode="bilinear", align_corners=False)` along one axis, as a matrix."""
  src = np.maximum((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0.0)
  i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
  i1 = np.minimum(i0 + 1, n_in - 1)
  w = np.zeros((n_out, n_in))
  np.add.at(w, (np.arange(n_out), i0), 1.0 - (src - i0))
  np.add.at(w, (np.arange(n_out), i1), src - i0)
  return w


@pytest.mark.parametrize("size", [17, 401])  # up- and down-sampling
def test_preprocess_is_pytorch_fids_resize_and_scaling(size, x64):
  img = np.random.default_rng(size).uniform(size=(1, size, size, 3))
  a = _torch_bilinear_matrix(size, 299)
  expected = 2.0 * np.einsum("yh,nhwc,xw->nyxc", a, img, a, optimize=True) - 1.0
  got = inception.preprocess(img)
  assert got.dtype == np.float64
  np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
  # float32 (the default): the same map up to float32 round-off in the interpolation weights
  np.testing.assert_allclose(inception.preprocess(img.astype(np.float32)), expected, rtol=0, atol=1e-4)
  u8 = (img * 255).astype(np.uint8)
  np.testing.assert_allclose(inception.preprocess(u8), inception.preprocess(u8 / np.float32(255)), atol=1e-6)


def _torch_state_dict(net, seed):
  """Random float32 tensors in PyTorch layouts under every name of `net` (+ num_batches_tracked)."""
  rng = np.random.default_rng(seed)
  state = {}
  for name, (module, attr, _) in inception.torch_state_names(net).items():
    shape = getattr(module, attr).shape
    if name.endswith("conv.weight"):  # HWIO -> OIHW, He-scaled so 94 layers stay finite
      shape = (shape[3], shape[2], shape[0], shape[1])
      value = rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))
    elif name == "fc.weight":  # (in, out) -> (out, in)
      shape = shape[::-1]
      value = rng.standard_normal(shape) / np.sqrt(shape[1])
    elif name.endswith(("running_var", "bn.weight")):
      value = rng.uniform(0.5, 1.5, shape)
    else:
      value = 0.1 * rng.standard_normal(shape)
    state[name] = value.astype(np.float32)
    if name.endswith("running_var"):
      state[name.replace("running_var", "num_batches_tracked")] = np.array(7, np.int64)
  return state


def _write_safetensors(path, arrays):
  """The safetensors format: 8-byte little-endian header size, JSON header, concatenated data."""
  codes = {np.dtype(np.float32): "F32", np.dtype(np.int64): "I64"}
  header, chunks, offset = {"__metadata__": {"format": "pt"}}, [], 0
  for name, a in arrays.items():
    raw = np.ascontiguousarray(a).tobytes()
    header[name] = {"dtype": codes[a.dtype], "shape": list(a.shape), "data_offsets": [offset, offset + len(raw)]}
    chunks.append(raw)
    offset += len(raw)
  blob = json.dumps(header).encode()
  with open(path, "wb") as f:
    f.write(struct.pack("<Q", len(blob)) + blob + b"".join(chunks))


def _assert_holds(net, state):
  """Every Flax variable equals its PyTorch tensor under the layout change, checked element-wise."""
  names = inception.torch_state_names(net)
  assert len(names) == 94 + 4 * 94 + 2  # 94 conv-BN pairs and fc
  for name, (module, attr, _) in names.items():
    got, want = np.asarray(getattr(module, attr)[...]), state[name]
    if name.endswith("conv.weight"):  # HWIO[h, w, i, o] == OIHW[o, i, h, w]
      np.testing.assert_array_equal(got, np.einsum("oihw->hwio", want), err_msg=name)
    elif name == "fc.weight":
      np.testing.assert_array_equal(got, want.T, err_msg=name)
    else:
      np.testing.assert_array_equal(got, want, err_msg=name)
  w = state["Mixed_6b.branch7x7_2.conv.weight"]  # (O, I, 1, 7): a 1x7 kernel lies along W
  assert w.shape[2:] == (1, 7) and net.Mixed_6b.branch7x7_2.conv.kernel.shape[:2] == (1, 7)
  assert net.Mixed_6b.branch7x7_2.conv.kernel[0, 5, 3, 2] == w[2, 3, 0, 5]


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
  """A FIDInception loaded by path from a random state dict in PyTorch names and layouts."""
  abstract = nnx.eval_shape(lambda: inception.FIDInception(rngs=nnx.Rngs(0)))
  state = _torch_state_dict(abstract, seed=0)
  path = str(tmp_path_factory.mktemp("weights") / "pt_inception.npz")
  np.savez(path, **state)
  return inception.load_inception_weights(path), state, abstract


def test_loader_round_trip_npz_and_safetensors(loaded, tmp_path):
  net, state, abstract = loaded
  _assert_holds(net, state)
  assert all(isinstance(leaf, jax.Array) for leaf in jax.tree.leaves(nnx.state(net)))  # none left abstract
  other = _torch_state_dict(abstract, seed=1)
  _write_safetensors(tmp_path / "w.safetensors", other)
  read = inception.read_state_dict(tmp_path / "w.safetensors")
  assert read.keys() == other.keys() and all(np.array_equal(read[k], other[k]) for k in other)
  _assert_holds(inception.load_inception_weights(nnx.clone(net), str(tmp_path / "w.safetensors")), other)
  # a features-only file (no fc.*) leaves the logits layer as it was
  np.savez(tmp_path / "features_only.npz", **{k: v for k, v in state.items() if not k.startswith("fc.")})
  partial = inception.load_inception_weights(nnx.clone(net), str(tmp_path / "features_only.npz"))
  np.testing.assert_array_equal(partial.fc.kernel[...], state["fc.weight"].T)
  np.testing.assert_array_equal(partial.fc.bias[...], state["fc.bias"])


def test_loader_errors_name_the_tensor(loaded, tmp_path):
  net, state, _ = loaded
  cases = {
      "shape": ({**state, "Conv2d_1a_3x3.conv.weight": state["Conv2d_1a_3x3.conv.weight"][:, :2]},
                r"'Conv2d_1a_3x3.conv.weight' has shape \(32, 2, 3, 3\)"),
      "missing": ({k: v for k, v in state.items() if k != "Mixed_7c.branch_pool.bn.running_mean"},
                  "has no tensor 'Mixed_7c.branch_pool.bn.running_mean'"),
      "extra": ({**state, "AuxLogits.fc.weight": np.zeros((1000, 768), np.float32)},
                r"1 tensors the FID Inception does not have, e.g. \['AuxLogits.fc.weight'\]"),
  }
  for case, (bad, message) in cases.items():
    np.savez(tmp_path / f"{case}.npz", **bad)
    with pytest.raises(ValueError, match=message):
      inception.load_inception_weights(net, str(tmp_path / f"{case}.npz"))
  with pytest.raises(ValueError, match="path is missing"):
    inception.load_inception_weights(net)


def test_basic_conv_matches_pytorch_conv_bn_relu(tmp_path):
  """A non-square kernel with padding through the loader against a direct NCHW/OIHW computation."""
  rng = np.random.default_rng(8)
  block = inception.BasicConv2d(3, 4, (3, 2), stride=2, padding=(1, 0), rngs=nnx.Rngs(0))
  w = rng.standard_normal((4, 3, 3, 2)).astype(np.float32)
  gamma, beta, mean = (rng.standard_normal(4).astype(np.float32) for _ in range(3))
  var = rng.uniform(0.5, 2.0, 4).astype(np.float32)
  np.savez(tmp_path / "b.npz", **{"conv.weight": w, "bn.weight": gamma, "bn.bias": beta,
                                  "bn.running_mean": mean, "bn.running_var": var})
  inception.load_inception_weights(block, str(tmp_path / "b.npz"))
  x = rng.standard_normal((2, 3, 9, 8))  # NCHW, as PyTorch
  xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (0, 0)))
  ho, wo = (9 + 2 - 3) // 2 + 1, (8 - 2) // 2 + 1
  conv = np.zeros((2, 4, ho, wo))
  for y in range(ho):
    for z in range(wo):
      conv[:, :, y, z] = np.einsum("nihw,oihw->no", xp[:, :, 2 * y:2 * y + 3, 2 * z:2 * z + 2], w)
  c = lambda v: v[None, :, None, None]
  expected = np.maximum((conv - c(mean)) / np.sqrt(c(var) + 1e-3) * c(gamma) + c(beta), 0.0)
  got = block(np.transpose(x, (0, 2, 3, 1)).astype(np.float32))
  np.testing.assert_allclose(np.transpose(got, (0, 3, 1, 2)), expected, rtol=1e-5, atol=1e-5)


def test_forward_gives_deterministic_pool_features_and_logits(loaded):
  net, state, _ = loaded
  images = jax.random.uniform(jax.random.PRNGKey(0), (2, 299, 299, 3))
  fn = inception.make_feature_fn(net, ("pool", "logits", "logits_unbiased"))
  pool, logits, unbiased = fn(images)
  assert pool.shape == (2, 2048) and logits.shape == unbiased.shape == (2, 1008)
  assert np.all(np.isfinite(pool)) and np.all(np.asarray(pool) >= 0)  # mean of ReLU outputs
  assert not np.allclose(pool[0], pool[1])
  np.testing.assert_allclose(unbiased, np.asarray(pool) @ state["fc.weight"].T, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(logits, np.asarray(unbiased) + state["fc.bias"], rtol=1e-6, atol=1e-5)
  again = fn(images)
  for a, b in zip((pool, logits, unbiased), again):
    np.testing.assert_array_equal(a, b)
