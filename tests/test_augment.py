"""EDM's augment pipe (diffjax.data.augment) against exact oracles and a NumPy transcription of
the official NVlabs/edm `training/augment.py` (`AugmentPipe`)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from diffjax.data import augment

# Official `wavelets['sym6']`.
SYM6 = [0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
        0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252,
        -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036, -0.007800708325034148]
ALL_GEOMETRIC = dict(xflip=1, yflip=1, rotate_int=1, translate_int=1, scale=1, rotate_frac=1,
                     aniso=1, translate_frac=1)
ALL_COLOR = dict(brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1)


# --- NumPy float64 transcription of the official code (NCHW) -------------------------------------
def _np_matrix(rows):
  shape = np.broadcast_shapes(*(np.shape(x) for row in rows for x in row))
  return np.stack([np.stack([np.broadcast_to(np.asarray(x, np.float64), shape) for x in row], -1)
                   for row in rows], -2)


def translate2d(tx, ty):
  return _np_matrix([[1, 0, tx], [0, 1, ty], [0, 0, 1]])


def scale2d(sx, sy):
  return _np_matrix([[sx, 0, 0], [0, sy, 0], [0, 0, 1]])


def rotate2d(theta):
  return _np_matrix([[np.cos(theta), np.sin(-theta), 0], [np.sin(theta), np.cos(theta), 0],
                     [0, 0, 1]])


def rotate3d(v, theta):
  vx, vy, vz = v[0], v[1], v[2]
  s, c = np.sin(theta), np.cos(theta)
  cc = 1 - c
  return _np_matrix([[vx * vx * cc + c, vx * vy * cc - vz * s, vx * vz * cc + vy * s, 0],
                     [vy * vx * cc + vz * s, vy * vy * cc + c, vy * vz * cc - vx * s, 0],
                     [vz * vx * cc - vy * s, vz * vy * cc + vx * s, vz * vz * cc + c, 0],
                     [0, 0, 0, 1]])


def official_g_inv(params, H, W, scale_std=0.2, aniso_std=0.2, translate_frac_std=0.125):
  params = {k: np.asarray(v, np.float64) for k, v in params.items()}
  N = len(next(iter(params.values())))
  G_inv = np.broadcast_to(np.eye(3), (N, 3, 3))
  if "scale" in params:
    s = np.exp2(params["scale"] * scale_std)
    G_inv = G_inv @ scale2d(1 / s, 1 / s)
  if "rotate_frac" in params:
    G_inv = G_inv @ rotate2d(params["rotate_frac"])  # rotate2d_inv(-w)
  if "aniso" in params:
    w, r = params["aniso"].T
    s = np.exp2(w * aniso_std)
    G_inv = G_inv @ rotate2d(-r) @ scale2d(1 / s, s) @ rotate2d(r)
  if "translate_frac" in params:
    w = params["translate_frac"].T
    G_inv = G_inv @ translate2d(-w[0] * W * translate_frac_std, -w[1] * H * translate_frac_std)
  return G_inv


def official_color_matrix(params, brightness_std=0.2, contrast_std=0.5, saturation_std=1.0):
  params = {k: np.asarray(v, np.float64) for k, v in params.items()}
  N = len(next(iter(params.values())))
  I_4 = np.eye(4)
  M = np.broadcast_to(I_4, (N, 4, 4))
  luma_axis = np.asarray([1, 1, 1, 0]) / np.sqrt(3)
  if "brightness" in params:
    b = params["brightness"] * brightness_std
    M = _np_matrix([[1, 0, 0, b], [0, 1, 0, b], [0, 0, 1, b], [0, 0, 0, 1]]) @ M
  if "contrast" in params:
    c = np.exp2(params["contrast"] * contrast_std)
    M = _np_matrix([[c, 0, 0, 0], [0, c, 0, 0], [0, 0, c, 0], [0, 0, 0, 1]]) @ M
  if "lumaflip" in params:
    M = (I_4 - 2 * np.outer(luma_axis, luma_axis) * params["lumaflip"][:, None, None]) @ M
  if "hue" in params:
    M = rotate3d(luma_axis, params["hue"]) @ M
  if "saturation" in params:
    vv = np.outer(luma_axis, luma_axis)
    M = (vv + (I_4 - vv) * np.exp2(params["saturation"] * saturation_std)[:, None, None]) @ M
  return M


def official_labels(params, H, W, translate_int_max=0.125):
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  cols = []
  for name in augment.TRANSFORMS:
    if name not in p:
      continue
    w = p[name]
    cols += {"rotate_int": lambda: [(w == 1) | (w == 2), (w == 2) | (w == 3)],
             "translate_int": lambda: [w[:, 0] / (W * translate_int_max),
                                       w[:, 1] / (H * translate_int_max)],
             "rotate_frac": lambda: [np.cos(w) - 1, np.sin(w)],
             "hue": lambda: [np.cos(w) - 1, np.sin(w)],
             "aniso": lambda: [w[:, 0] * np.cos(w[:, 1]), w[:, 0] * np.sin(w[:, 1])],
             "translate_frac": lambda: [w[:, 0], w[:, 1]]}.get(name, lambda: [w])()
  return np.stack([np.asarray(c, np.float64) for c in cols], axis=1)


def _conv_last(x, w, pad, stride=1):
  """torch conv2d with a (1, K) kernel and zero padding, on the last axis (cross-correlation)."""
  xp = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(pad, pad)])
  return np.lib.stride_tricks.sliding_window_view(xp, len(w), axis=-1)[..., ::stride, :] @ w


def _affine_grid(theta, Ho, Wo):  # align_corners=False
  xs = (2 * np.arange(Wo) + 1) / Wo - 1
  ys = (2 * np.arange(Ho) + 1) / Ho - 1
  base = np.stack(np.broadcast_arrays(xs[None, :], ys[:, None], np.ones((1, 1))), axis=-1)
  return np.einsum("nij,hwj->nhwi", theta, base)


def _grid_sample(images, grid):  # bilinear, zeros, align_corners=False
  N, C, Hi, Wi = images.shape
  ix = ((grid[..., 0] + 1) * Wi - 1) / 2
  iy = ((grid[..., 1] + 1) * Hi - 1) / 2
  x0, y0 = np.floor(ix).astype(int), np.floor(iy).astype(int)
  n = np.arange(N)[:, None, None]
  out = 0
  for yy in (y0, y0 + 1):
    for xx in (x0, x0 + 1):
      weight = (1 - np.abs(ix - xx)) * (1 - np.abs(iy - yy))
      valid = (xx >= 0) & (xx < Wi) & (yy >= 0) & (yy < Hi)
      value = images[n, :, np.clip(yy, 0, Hi - 1), np.clip(xx, 0, Wi - 1)]  # (N, Ho, Wo, C)
      out = out + np.where(valid, weight, 0)[:, None] * value.transpose(0, 3, 1, 2)
  return out


def official_geometric(images, G_inv):
  """The official "Execute geometric transformations" block, line by line, dynamic margins."""
  N, C, H, W = images.shape
  Hz = np.asarray(SYM6)
  Hz_pad = len(Hz) // 4
  cx, cy = (W - 1) / 2, (H - 1) / 2
  cp = np.array([[-cx, -cy, 1], [cx, -cy, 1], [cx, cy, 1], [-cx, cy, 1]])
  cp = G_inv @ cp.T
  margin = cp[:, :2, :].transpose(1, 0, 2).reshape(2, -1)
  margin = np.concatenate([-margin, margin]).max(axis=1)
  margin = margin + np.array([Hz_pad * 2 - cx, Hz_pad * 2 - cy] * 2)
  margin = np.minimum(np.maximum(margin, 0), [W - 1, H - 1] * 2)
  mx0, my0, mx1, my1 = np.ceil(margin).astype(int)
  images = np.pad(images, ((0, 0), (0, 0), (my0, my1), (mx0, mx1)), mode="reflect")
  G_inv = translate2d((mx0 - mx1) / 2, (my0 - my1) / 2) @ G_inv
  conv_pad = (len(Hz) + 1) // 2
  images = np.stack([images, np.zeros_like(images)], axis=4)
  images = images.reshape(N, C, images.shape[2], -1)[..., :-1]
  images = _conv_last(images, Hz[::-1], conv_pad)
  images = np.stack([images, np.zeros_like(images)], axis=3)
  images = images.reshape(N, C, -1, images.shape[4])[:, :, :-1]
  images = _conv_last(images.swapaxes(2, 3), Hz[::-1], conv_pad).swapaxes(2, 3)
  G_inv = scale2d(2, 2) @ G_inv @ scale2d(1 / 2, 1 / 2)
  G_inv = translate2d(-0.5, -0.5) @ G_inv @ translate2d(0.5, 0.5)
  Ho, Wo = (H + Hz_pad * 2) * 2, (W + Hz_pad * 2) * 2
  G_inv = scale2d(2 / images.shape[3], 2 / images.shape[2]) @ G_inv @ scale2d(Wo / 2, Ho / 2)
  images = _grid_sample(images, _affine_grid(G_inv[:, :2, :], Ho, Wo))
  conv_pad = (len(Hz) - 1) // 2
  images = _conv_last(images, Hz, conv_pad, stride=2)[..., Hz_pad:-Hz_pad]
  images = _conv_last(images.swapaxes(2, 3), Hz, conv_pad, stride=2)[..., Hz_pad:-Hz_pad]
  images = images.swapaxes(2, 3)
  return images


def official_blits(images, params):
  """The official "Pixel blitting" block on NCHW images."""
  N, C, H, W = images.shape
  p = {k: np.asarray(v) for k, v in params.items()}
  where = lambda w, a, b: np.where(w[:, None, None, None], a, b)
  if "xflip" in p:
    images = where(p["xflip"] == 1, np.flip(images, 3), images)
  if "yflip" in p:
    images = where(p["yflip"] == 1, np.flip(images, 2), images)
  if "rotate_int" in p:
    w = p["rotate_int"]
    images = where((w == 1) | (w == 2), np.flip(images, 3), images)
    images = where((w == 2) | (w == 3), np.flip(images, 2), images)
    images = where((w == 1) | (w == 3), images.swapaxes(2, 3), images)
  if "translate_int" in p:
    tx, ty = p["translate_int"][:, 0, None, None, None], p["translate_int"][:, 1, None, None, None]
    b, c, y, x = np.meshgrid(*(np.arange(n) for n in images.shape), indexing="ij")
    x = W - 1 - np.abs(W - 1 - (x - tx) % (W * 2 - 2))
    y = H - 1 - np.abs(H - 1 - (y + ty) % (H * 2 - 2))
    images = images.flatten()[(((b * C) + c) * H + y) * W + x]
  return images


def official_color(images, M):
  N, C, H, W = images.shape
  images = images.reshape(N, C, H * W)
  if C == 3:
    images = M[:, :3, :3] @ images + M[:, :3, 3:]
  else:
    M = M[:, :3, :].mean(axis=1, keepdims=True)
    images = images * M[:, :, :3].sum(axis=2, keepdims=True) + M[:, :, 3:]
  return images.reshape(N, C, H, W)


def _nchw(x):
  return np.asarray(x, np.float64).transpose(0, 3, 1, 2)


def _images(shape, seed=0, dtype=jnp.float32):
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), dtype)


EDM_SHAPE = (16, 8, 8, 3)  # one shape for the EDM_CIFAR10 calls: one compilation


# --- constants and layout ----------------------------------------------------------------------
def test_constants_and_label_layout():
  assert augment.EDM_CIFAR10 == dict(xflip=1e8, yflip=1, scale=1, rotate_frac=1, aniso=1,
                                     translate_frac=1)
  assert augment.AUGMENT_DIM == 9 == augment.augment_dim(**augment.EDM_CIFAR10)
  assert augment.augment_dim(**ALL_GEOMETRIC) == 13
  assert augment.augment_dim(**ALL_GEOMETRIC, **ALL_COLOR) == 19
  assert augment.augment_dim() == 0
  np.testing.assert_array_equal(augment.SYM6, SYM6)
  # the sym6 low-pass filter is orthonormal under even shifts (to the published 16 digits' 1e-12),
  # with sum sqrt(2)
  h = np.asarray(augment.SYM6)
  np.testing.assert_allclose([h[: len(h) - 2 * j] @ h[2 * j:] for j in range(6)], np.eye(6)[0],
                             atol=1e-12)
  np.testing.assert_allclose(h.sum(), np.sqrt(2), rtol=1e-14)

  _, labels = augment.augment_pipe(jax.random.PRNGKey(0), _images(EDM_SHAPE), p=1.0,
                                   **augment.EDM_CIFAR10)
  assert labels.shape == (16, 9) and labels.dtype == jnp.float32
  labels = np.asarray(labels, np.float64)
  assert set(np.unique(labels[:, 0])) == {0, 1} and set(np.unique(labels[:, 1])) == {0, 1}
  np.testing.assert_allclose((labels[:, 3] + 1)**2 + labels[:, 4]**2, 1, atol=1e-6)  # (cos-1, sin)


def test_p_zero_returns_images_unchanged():
  x = _images((8, 8, 8, 3))
  kwargs = dict(**ALL_GEOMETRIC, **ALL_COLOR)
  y, labels = augment.augment_pipe(jax.random.PRNGKey(1), x, p=0.0, **kwargs)
  assert y is x or np.array_equal(np.asarray(y), np.asarray(x))
  assert labels.shape == (8, 19) and not np.any(np.asarray(labels))
  y, labels = augment.augment_pipe(jax.random.PRNGKey(1), x, p=0, **augment.EDM_CIFAR10)
  np.testing.assert_array_equal(np.asarray(y), np.asarray(x))
  np.testing.assert_array_equal(np.asarray(labels), np.zeros((8, 9)))


def test_traced_p():
  # A traced p gives the same result as the concrete one. At p = 0 the official path runs: all
  # parameters are 0 and the resampler's round trip is exact up to float32 rounding.
  x = _images(EDM_SHAPE)
  key = jax.random.PRNGKey(1)
  f = jax.jit(lambda key, x, p: augment.augment_pipe(key, x, p=p, **augment.EDM_CIFAR10))
  y, labels = f(key, x, 0.0)
  np.testing.assert_allclose(y, x, atol=1e-5)
  np.testing.assert_array_equal(np.asarray(labels), np.zeros((16, 9)))
  y, labels = f(key, x, 0.5)
  y2, labels2 = augment.augment_pipe(key, x, p=0.5, **augment.EDM_CIFAR10)
  np.testing.assert_allclose(labels, labels2, atol=1e-6)
  np.testing.assert_allclose(y, y2, atol=1e-5)
  assert np.abs(np.asarray(y - x)).max() > 0.1
  y3, _ = augment.augment_pipe(jax.random.PRNGKey(2), x, p=0.5, **augment.EDM_CIFAR10)
  assert not np.array_equal(np.asarray(y3), np.asarray(y2))


# --- pixel blitting: exact -----------------------------------------------------------------------
@pytest.mark.parametrize("name,axis", [("xflip", 2), ("yflip", 1)])
def test_flips_are_exact_mirrors(name, axis):
  n = 256
  x = _images((n, 8, 8, 3))
  y, labels = augment.augment_pipe(jax.random.PRNGKey(2), x, p=1.0, **{name: 1e8})
  x, y, labels = np.asarray(x), np.asarray(y), np.asarray(labels)
  assert labels.shape == (n, 1)
  flipped = np.flip(x, axis)
  is_flip = np.all(y == flipped, axis=(1, 2, 3))
  is_same = np.all(y == x, axis=(1, 2, 3))
  assert np.all(is_flip ^ is_same)
  np.testing.assert_array_equal(labels[:, 0], is_flip.astype(np.float32))
  assert abs(is_flip.sum() - n / 2) < 4 * np.sqrt(n / 4)


def test_flip_probability_is_clipped_product():
  # xflip fires w.p. min(1, p xflip) and then flips w.p. 1/2: 1e8 * 0.12 -> 1/2, 0.5 * 1 -> 1/4.
  n = 20000
  for p, mult, rate in [(0.12, 1e8, 0.5), (1.0, 0.5, 0.25), (0.5, 1.0, 0.25)]:
    params = augment.sample_params(jax.random.PRNGKey(3), (n, 8, 8, 3), p=p, xflip=mult)
    w = np.asarray(params["xflip"])
    assert set(np.unique(w)) <= {0, 1}
    assert abs(w.mean() - rate) < 5 * np.sqrt(rate * (1 - rate) / n)


def test_rotate_int_is_exact_quarter_turns():
  n = 64
  x = _images((n, 8, 8, 2))
  y, labels = augment.augment_pipe(jax.random.PRNGKey(4), x, p=1.0, rotate_int=1)
  labels = np.asarray(labels)
  assert labels.shape == (n, 2)
  k = {(0, 0): 0, (1, 0): 1, (1, 1): 2, (0, 1): 3}
  k = np.array([k[tuple(row)] for row in labels.astype(int)])
  assert set(k) == {0, 1, 2, 3}
  for xi, yi, ki in zip(np.asarray(x), np.asarray(y), k):
    np.testing.assert_array_equal(yi, np.rot90(xi, ki, axes=(0, 1)))


def test_translate_int_is_exact_reflected_shift():
  n, size, max_frac = 64, 16, 0.125
  x = _images((n, size, size, 3))
  y, labels = augment.augment_pipe(jax.random.PRNGKey(5), x, p=1.0, translate_int=1)
  labels = np.asarray(labels, np.float64)
  assert labels.shape == (n, 2)
  t = np.round(labels * size * max_frac).astype(int)
  np.testing.assert_array_equal(labels, t / (size * max_frac))  # labels are tx / (W max)
  assert set(t[:, 0]) == set(t[:, 1]) == {-2, -1, 0, 1, 2}
  pad = 4
  padded = np.pad(np.asarray(x), ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
  for xp, yi, (tx, ty) in zip(padded, np.asarray(y), t):
    # official: x samples x - tx, y samples y + ty
    np.testing.assert_array_equal(yi, xp[pad + ty: pad + ty + size, pad - tx: pad - tx + size])


def test_translate_int_law():
  # tx = round(U(-1, 1) W max): for W max = 2, P(0) = P(+-1) = 1/4, P(+-2) = 1/8.
  n = 20000
  t = np.asarray(augment.sample_params(jax.random.PRNGKey(6), (n, 16, 16, 3), p=1.0,
                                       translate_int=1)["translate_int"])
  for v, prob in [(-2, 1 / 8), (-1, 1 / 4), (0, 1 / 4), (1, 1 / 4), (2, 1 / 8)]:
    assert np.all(np.abs((t == v).mean(0) - prob) < 5 * np.sqrt(prob * (1 - prob) / n))


# --- parameter laws ------------------------------------------------------------------------------
def test_parameter_laws_and_gating():
  n, p = 20000, 0.3
  params = augment.sample_params(jax.random.PRNGKey(7), (n, 8, 8, 3), p=p, scale=2, rotate_frac=1,
                                 aniso=1, translate_frac=1, rotate_frac_max=0.5, brightness=1)
  params = {k: np.asarray(v, np.float64) for k, v in params.items()}
  tol = lambda q: 5 * np.sqrt(q * (1 - q) / n)

  def check(w, rate, cdf):
    fired = w != 0
    assert abs(fired.mean() - rate) < tol(rate)
    assert stats.kstest(w[fired], cdf).pvalue > 1e-3

  check(params["scale"], 2 * p, "norm")  # log2 s / scale_std ~ N(0, 1), prob min(1, 2 p)
  check(params["rotate_frac"], p, stats.uniform(-np.pi / 2, np.pi).cdf)  # U(-pi max, pi max)
  check(params["aniso"][:, 0], p, "norm")
  check(params["aniso"][:, 1], 0.5, stats.uniform(-np.pi, 2 * np.pi).cdf)  # aniso_rotate_prob, no p
  check(params["brightness"], p, "norm")
  w = params["translate_frac"]
  np.testing.assert_array_equal(w[:, 0] == 0, w[:, 1] == 0)  # one gate per image
  check(w[:, 0], p, "norm")
  check(w[:, 1], p, "norm")
  # enabling another transform does not change a transform's draws
  alone = augment.sample_params(jax.random.PRNGKey(7), (n, 8, 8, 3), p=p, scale=2)
  np.testing.assert_array_equal(np.asarray(alone["scale"], np.float64), params["scale"])


# --- general geometric path ---------------------------------------------------------------------
def test_pipe_matches_official_transcription(x64):
  n, size = 6, 8
  x = _images((n, size, size, 3), dtype=jnp.float64)
  kwargs = dict(p=1.0, **augment.EDM_CIFAR10, rotate_int=1, translate_int=1, scale_std=0.3)
  key = jax.random.PRNGKey(8)
  y, labels = augment.augment_pipe(key, x, **kwargs)
  params = augment.sample_params(key, x.shape, dtype=jnp.float64, **kwargs)
  assert list(params) == ["xflip", "yflip", "rotate_int", "translate_int", "scale", "rotate_frac",
                          "aniso", "translate_frac"]
  np.testing.assert_allclose(labels, official_labels(params, size, size), rtol=0, atol=1e-15)

  g_ref = official_g_inv(params, size, size, scale_std=0.3)
  g = augment.geometric_matrix(params, size, size, scale_std=0.3)
  np.testing.assert_allclose(g, g_ref, rtol=0, atol=1e-14)

  np.testing.assert_allclose(_nchw(y), official_geometric(official_blits(_nchw(x), params), g_ref),
                             rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape,g_inv", [
    # the official margin is smaller than the H - 1, W - 1 padding; with the zoom-out the filter
    # reaches beyond it (zeroing there changes the result by 1e-4)
    ((4, 16, 16, 2), [rotate2d(0.1) @ translate2d(0.3, -0.7), scale2d(0.9, 1.1),
                      translate2d(1.5, 0.25), scale2d(1.6, 1.3)]),
    # non-square, one strong zoom-out clipping the margin, anisotropy
    ((3, 10, 14, 1), [scale2d(2.5, 2.5) @ rotate2d(-2.0), rotate2d(0.7) @ scale2d(1.3, 1 / 1.3),
                      translate2d(-3.2, 2.1) @ rotate2d(np.pi / 3)]),
])
def test_resampler_matches_official_transcription(x64, shape, g_inv):
  g_inv = np.stack(g_inv)
  x = _images(shape, seed=9, dtype=jnp.float64)
  y = augment.geometric_transform(x, jnp.asarray(g_inv))
  assert y.shape == x.shape and y.dtype == x.dtype
  np.testing.assert_allclose(_nchw(y), official_geometric(_nchw(x), g_inv), rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape", [(2, 8, 8, 3), (2, 7, 9, 1)])
def test_identity_transform_round_trip(x64, shape):
  x = _images(shape, seed=10, dtype=jnp.float64)
  y = augment.geometric_transform(x, jnp.broadcast_to(jnp.eye(3), (2, 3, 3)))
  np.testing.assert_allclose(y, x, rtol=0, atol=1e-11)  # the filter's orthonormality, 5e-13
  x32 = x.astype(jnp.float32)
  y32 = augment.geometric_transform(x32, jnp.broadcast_to(jnp.eye(3), (2, 3, 3)))
  assert y32.dtype == jnp.float32
  np.testing.assert_allclose(y32, x32, rtol=0, atol=2e-6)


def test_integer_translate_frac_is_exact_reflected_shift(x64):
  size, std = 16, 0.125
  x = _images((2, size, size, 2), seed=11, dtype=jnp.float64)
  shifts = np.array([[2, -3], [-1, 4]])
  params = {"translate_frac": jnp.asarray(shifts / (size * std))}
  y = augment.geometric_transform(x, augment.geometric_matrix(params, size, size))
  pad = 4
  padded = np.pad(np.asarray(x), ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
  for xp, yi, (tx, ty) in zip(padded, np.asarray(y), shifts):
    # translate_frac samples (x - tx, y - ty)
    np.testing.assert_allclose(yi, xp[pad - ty: pad - ty + size, pad - tx: pad - tx + size],
                               rtol=0, atol=1e-10)  # sym6 orthonormal to 5e-13


def test_fractional_rotation_and_scale_of_smooth_image(x64):
  # f is periodic with period 32 px and band-limited (< 0.1 cycles / px). The output at centred
  # pixel q is f(G_inv q), G_inv = scale2d_inv(s, s) @ rotate2d(theta), wherever the filter
  # support around G_inv q stays inside the image.
  size, theta, w_scale = 32, 0.4, 1.0
  c = np.arange(size) - (size - 1) / 2
  f = lambda x, y: (np.cos(2 * np.pi * (x + 2 * y) / size + 0.3)
                    + 0.5 * np.sin(2 * np.pi * (2 * x - y) / size))
  xx, yy = np.meshgrid(c, c)
  image = jnp.asarray(f(xx, yy)[None, :, :, None])
  params = {"scale": jnp.array([w_scale]), "rotate_frac": jnp.array([theta])}
  g = np.asarray(augment.geometric_matrix(params, size, size))[0]
  y = np.asarray(augment.geometric_transform(image, jnp.asarray(g[None])))[0, :, :, 0]
  sx = g[0, 0] * xx + g[0, 1] * yy + g[0, 2]
  sy = g[1, 0] * xx + g[1, 1] * yy + g[1, 2]
  inside = (np.abs(sx) < (size - 1) / 2 - 4) & (np.abs(sy) < (size - 1) / 2 - 4)
  assert inside.sum() > 250
  err = np.abs(y - f(sx, sy))[inside].max()
  assert err < 0.02, err
  # the other rotation direction is far off: the oracle distinguishes the convention
  sx_wrong = g[0, 0] * xx - g[0, 1] * yy
  sy_wrong = -g[1, 0] * xx + g[1, 1] * yy
  assert np.abs(y - f(sx_wrong, sy_wrong))[inside].max() > 0.5


# --- colour ------------------------------------------------------------------------------------
@pytest.mark.parametrize("channels", [3, 1])
def test_color_matches_official_transcription(x64, channels):
  n = 6
  x = _images((n, 4, 4, channels), seed=12, dtype=jnp.float64)
  kwargs = dict(p=1.0, xflip=1, **ALL_COLOR, contrast_std=0.7)
  key = jax.random.PRNGKey(13)
  y, labels = augment.augment_pipe(key, x, **kwargs)
  params = augment.sample_params(key, x.shape, dtype=jnp.float64, **kwargs)
  np.testing.assert_allclose(labels, official_labels(params, 4, 4), rtol=0, atol=1e-15)
  m_ref = official_color_matrix(params, contrast_std=0.7)
  np.testing.assert_allclose(augment.color_matrix(params, contrast_std=0.7), m_ref, rtol=0,
                             atol=1e-14)
  flipped = np.where(np.asarray(params["xflip"])[:, None, None, None] == 1, np.flip(x, 2), x)
  np.testing.assert_allclose(_nchw(y), official_color(_nchw(flipped), m_ref), rtol=0, atol=1e-13)


def test_brightness_then_lumaflip_oracle():
  x = np.asarray(_images((32, 4, 4, 3), seed=14))
  y, labels = augment.augment_pipe(jax.random.PRNGKey(15), x, p=1.0, brightness=1, lumaflip=1,
                                   brightness_std=0.3)
  b, flip = np.asarray(labels[:, 0]), np.asarray(labels[:, 1])
  assert set(flip) == {0, 1}
  shifted = x + 0.3 * b[:, None, None, None]
  # the luma axis (1, 1, 1) / sqrt(3) is reflected: v - (2/3) sum_c v_c
  reflected = shifted - 2 / 3 * shifted.sum(-1, keepdims=True)
  expected = np.where(flip[:, None, None, None] == 1, reflected, shifted)
  np.testing.assert_allclose(y, expected, atol=1e-5)


# --- API ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [jnp.bfloat16])
def test_low_precision_dtypes(dtype):
  # computed in float32, returned in the images' dtype
  x = _images(EDM_SHAPE)
  key = jax.random.PRNGKey(17)
  y, labels = augment.augment_pipe(key, x.astype(dtype), p=0.5, **augment.EDM_CIFAR10)
  assert y.dtype == dtype and y.shape == x.shape
  assert labels.shape == (16, 9) and labels.dtype == jnp.float32
  y32, labels32 = augment.augment_pipe(key, x.astype(dtype).astype(jnp.float32), p=0.5,
                                       **augment.EDM_CIFAR10)
  np.testing.assert_array_equal(np.asarray(labels), np.asarray(labels32))
  np.testing.assert_allclose(np.asarray(y, np.float32), y32, atol=2e-2 * np.abs(y32).max())


@pytest.mark.parametrize("shape,kwargs,match", [
    ((2, 8, 8, 3), dict(p=-0.1, xflip=1), "p must be"),
    ((2, 8, 8, 3), dict(p=np.ones(2), xflip=1), "p must be a scalar"),
    ((2, 8, 8, 3), dict(p=0.5, xflip=-1), "xflip must be"),
    ((2, 8, 8, 3), dict(p=0.5, scale=float("nan")), "scale must be"),
    ((2, 8, 8, 3), dict(p=0.5, scale=1, scale_std=-0.2), "scale_std must be"),
    ((2, 8, 8, 3), dict(p=0.5, aniso=1, aniso_rotate_prob=1.5), "aniso_rotate_prob"),
    ((2, 8, 8, 3), dict(p=0.5, translate_int=1, translate_int_max=0), "translate_int_max"),
    ((8, 8, 3), dict(p=0.5, xflip=1), "rank 4"),
    ((2, 8, 12, 3), dict(p=0.5, rotate_int=1), "rotate_int needs square"),
    ((2, 1, 8, 3), dict(p=0.5, scale=1), "height, width >= 2"),
    ((2, 8, 8, 2), dict(p=0.5, hue=1), "1 or 3 channels"),
])
def test_bad_arguments(shape, kwargs, match):
  with pytest.raises(ValueError, match=match):
    augment.augment_pipe(jax.random.PRNGKey(0), jnp.zeros(shape), **kwargs)


def test_bad_arguments_other_entry_points():
  with pytest.raises(ValueError, match="floating"):
    augment.augment_pipe(jax.random.PRNGKey(0), jnp.zeros((2, 8, 8, 3), jnp.int32), p=0.5,
                         xflip=1)
  with pytest.raises(ValueError, match="unknown augment argument"):
    augment.sample_params(jax.random.PRNGKey(0), (2, 8, 8, 3), p=0.5, xflp=1)
  with pytest.raises(ValueError, match="rank 4"):
    augment.geometric_transform(jnp.zeros((8, 8, 3)), jnp.eye(3)[None])
