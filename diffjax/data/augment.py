"""EDM's non-leaky augmentation pipe in JAX: pixel blitting, geometric and colour transforms.

A port of `AugmentPipe` in NVlabs/edm `training/augment.py` (Karras, Aittala, Aila & Laine 2022,
"Elucidating the Design Space of Diffusion-Based Generative Models", app. F.2), itself the ADA
pipeline of Karras et al. (2020), "Training Generative Adversarial Networks with Limited Data".
The denoiser sees the augmented image together with a label vector describing the augmentation
(`augment_labels` of `diffjax.models.edm_unets`), so augmentations do not leak into samples,
which are drawn with zero labels.

Every transform `t` has a probability multiplier: it fires on each image independently with
probability min(1, p * t) (the official `rand < t * p`), and a transform whose multiplier is 0 is
skipped altogether, label columns included. The label columns are concatenated in this order,
only for the transforms whose multiplier is > 0 (`augment_dim`):

  xflip          1   w in {0, 1}
  yflip          1   w in {0, 1}
  rotate_int     2   [k in {1, 2}, k in {2, 3}], k in {0..3} quarter turns (`np.rot90(image, k)`)
  translate_int  2   [tx / (W max), ty / (H max)], integer shifts tx, ty, max = translate_int_max
  scale          1   w ~ N(0, 1), s = 2^(w scale_std)
  rotate_frac    2   [cos w - 1, sin w], w ~ U(-pi, pi) rotate_frac_max
  aniso          2   [w cos r, w sin r], w ~ N(0, 1), r ~ U(-pi, pi) with prob. aniso_rotate_prob
  translate_frac 2   [wx, wy] ~ N(0, 1), shift (wx W, wy H) translate_frac_std
  brightness     1   w ~ N(0, 1), b = w brightness_std
  contrast       1   w ~ N(0, 1), c = 2^(w contrast_std)
  lumaflip       1   w in {0, 1}
  hue            2   [cos w - 1, sin w], w ~ U(-pi, pi) hue_max
  saturation     1   w ~ N(0, 1), 2^(w saturation_std)

EDM's CIFAR-10 setting (train.py `--augment=0.12`) is `augment_pipe(key, x, p=0.12, **EDM_CIFAR10)`
with its `AUGMENT_DIM` = 9 labels [xflip, yflip, scale, rotate_frac (2), aniso (2),
translate_frac (2)].

The transforms run in the official order: the blits (exact pixel permutations), then one
resampling through the product G_inv of the geometric matrices (the map from output to input
pixel coordinates, origin at the image centre), then one 4x4 colour matrix. The resampling is the
official one: reflection padding, 2x upsampling with the sym6 wavelet low-pass filter, bilinear
sampling with zero padding (`grid_sample`), 2x downsampling with the same filter. Its padding
margin is the official one too: the smallest margin, over the whole batch, that holds the
transformed corners plus the filter support, clipped to the image size (so an image's output
depends on the other images of its batch, as in the official code).

Deviations from the official code:
  * JAX random numbers: same laws, different draws than torch's generator.
  * The official margin is data-dependent, i.e. a dynamic shape. Here every image is padded by the
    largest margin the official code can choose (H - 1, W - 1) and the pixels outside the official
    margin are zeroed, before and after upsampling; this is the official result exactly (up to
    rounding), with static shapes.
  * A concrete `p == 0` returns the images untouched. The official pipe still runs the resampler
    on the identity when a geometric multiplier is > 0, which returns the images up to rounding
    (the sym6 round trip is the identity: the filter is orthonormal, to 5e-13 with the published
    coefficients). A traced p always runs the official path.
  * Arithmetic is done in float32, or float64 for float64 images; the official code rounds the
    sym6 coefficients to float32 even for float64 images. Labels are float32 (or float64 for
    float64 images); images come back in their own dtype.
  * Images are NHWC (the official code is NCHW).
"""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

#: sym6 wavelet decomposition low-pass filter (official `wavelets['sym6']`).
SYM6 = (0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
        0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252,
        -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036, -0.007800708325034148)
_HZ_PAD = len(SYM6) // 4

BLITS = ("xflip", "yflip", "rotate_int", "translate_int")
GEOMETRIC = ("scale", "rotate_frac", "aniso", "translate_frac")
COLORS = ("brightness", "contrast", "lumaflip", "hue", "saturation")
#: every transform, in the official order (of execution and of the label columns)
TRANSFORMS = BLITS + GEOMETRIC + COLORS
LABEL_WIDTHS = dict(xflip=1, yflip=1, rotate_int=2, translate_int=2, scale=1, rotate_frac=2,
                    aniso=2, translate_frac=2, brightness=1, contrast=1, lumaflip=1, hue=2,
                    saturation=1)
#: the official constructor's defaults of the transforms' ranges
DEFAULTS = dict(translate_int_max=0.125, scale_std=0.2, rotate_frac_max=1.0, aniso_std=0.2,
                aniso_rotate_prob=0.5, translate_frac_std=0.125, brightness_std=0.2,
                contrast_std=0.5, hue_max=1.0, saturation_std=1.0)

#: EDM train.py's multipliers for `--augment=p` (CIFAR-10: p = 0.12)
EDM_CIFAR10 = dict(xflip=1e8, yflip=1, scale=1, rotate_frac=1, aniso=1, translate_frac=1)
#: label width of `EDM_CIFAR10` (EDM's `augment_dim`)
AUGMENT_DIM = 9

_HIGHEST = lax.Precision.HIGHEST


# --- arguments ---------------------------------------------------------------------------------
def _options(options):
  """Multipliers and ranges as validated Python floats, official defaults filled in."""
  unknown = sorted(set(options) - set(TRANSFORMS) - set(DEFAULTS))
  if unknown:
    raise ValueError(f"unknown augment argument(s) {unknown}; valid: "
                     f"{TRANSFORMS + tuple(DEFAULTS)}")
  opts = {name: 0.0 for name in TRANSFORMS} | DEFAULTS | dict(options)
  for name, value in opts.items():
    try:
      value = float(value)
    except (TypeError, jax.errors.ConcretizationTypeError):
      raise ValueError(f"{name} must be a static Python number, got {value!r}") from None
    if not (math.isfinite(value) and value >= 0):
      raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    opts[name] = value
  if opts["aniso_rotate_prob"] > 1:
    raise ValueError(f"aniso_rotate_prob must be in [0, 1], got {opts['aniso_rotate_prob']}")
  if opts["translate_int"] > 0 and opts["translate_int_max"] == 0:
    raise ValueError("translate_int_max must be > 0 when translate_int > 0 (labels divide by it)")
  return opts


def _check_p(p):
  """p as a float when concrete (checked >= 0), else the traced scalar unchanged."""
  if jnp.ndim(p) != 0:
    raise ValueError(f"p must be a scalar, got shape {jnp.shape(p)}")
  try:
    value = float(p)
  except (TypeError, jax.errors.ConcretizationTypeError):
    return p
  if not (math.isfinite(value) and value >= 0):
    raise ValueError(f"p must be a finite number >= 0, got {p!r}")
  return value


def _check_images(shape, dtype, names):
  """NHWC floating images that the transforms `names` can be applied to."""
  if len(shape) != 4:
    raise ValueError(f"images must be NHWC (rank 4), got shape {tuple(shape)}")
  if not jnp.issubdtype(dtype, jnp.floating):
    raise ValueError(f"images must have a floating dtype, got {dtype}")
  _, height, width, channels = shape
  if "rotate_int" in names and height != width:
    raise ValueError(f"rotate_int needs square images, got height {height} != width {width}")
  needs_reflection = {"translate_int"} | set(GEOMETRIC)
  if needs_reflection & set(names) and min(height, width) < 2:
    raise ValueError(f"translate_int and the geometric transforms need height, width >= 2, got "
                     f"{height}x{width}")
  if set(COLORS) & set(names) and channels not in (1, 3):
    raise ValueError(f"the colour transforms need 1 or 3 channels, got {channels}")


def _compute_dtype(dtype):
  return jnp.promote_types(dtype, jnp.float32)


def augment_dim(**multipliers):
  """Label width for the given multipliers: the sum of `LABEL_WIDTHS` of those > 0."""
  opts = _options(multipliers)
  return sum(LABEL_WIDTHS[name] for name in TRANSFORMS if opts[name] > 0)


# --- parameters --------------------------------------------------------------------------------
def _gate(key, prob, w):
  """`torch.where(torch.rand([N]) < prob, w, 0)`: keeps each image's w with probability prob."""
  keep = jax.random.uniform(key, w.shape[:1]) < prob
  return jnp.where(keep.reshape(keep.shape + (1,) * (w.ndim - 1)), w, jnp.zeros_like(w))


def _randint(key, batch, n, prob):
  key_w, key_p = jax.random.split(key)
  return _gate(key_p, prob, jax.random.randint(key_w, (batch,), 0, n))


def _normal(key, shape, prob, dtype):
  key_w, key_p = jax.random.split(key)
  return _gate(key_p, prob, jax.random.normal(key_w, shape, dtype))


def _angle(key, batch, prob, max_frac, dtype):
  key_w, key_p = jax.random.split(key)
  w = (jax.random.uniform(key_w, (batch,), dtype) * 2 - 1) * (np.pi * max_frac)
  return _gate(key_p, prob, w)


def _translate_int_params(key, batch, height, width, prob, max_frac, dtype):
  key_w, key_p = jax.random.split(key)
  w = _gate(key_p, prob, jax.random.uniform(key_w, (batch, 2), dtype) * 2 - 1)
  # round half to even, as torch.round
  return jnp.round(w * jnp.array([width * max_frac, height * max_frac], dtype)).astype(jnp.int32)


def _aniso_params(key, batch, prob, rotate_prob, dtype):
  key_w, key_r, key_pw, key_pr = jax.random.split(key, 4)
  w = _gate(key_pw, prob, jax.random.normal(key_w, (batch,), dtype))
  r = _gate(key_pr, rotate_prob, (jax.random.uniform(key_r, (batch,), dtype) * 2 - 1) * np.pi)
  return jnp.stack([w, r], axis=1)


def sample_params(key, shape, *, p, dtype=jnp.float32, **options):
  """Draws every enabled transform's parameters for a batch of images of NHWC `shape`.

  Mirrors the parameter selection of the official `AugmentPipe.__call__` (each `w = ...;
  w = torch.where(torch.rand(...) < t * p, w, 0)` pair). Each transform draws from
  `jax.random.fold_in(key, its index in TRANSFORMS)`, so enabling one does not change another's
  draws.

  Args:
    key: PRNG key.
    shape: the images' shape (B, H, W, C) (H and W scale the translations).
    p: overall probability multiplier (>= 0; may be traced).
    dtype: float dtype of the continuous parameters.
    **options: multipliers and ranges of `augment_pipe`.

  Returns:
    dict, in `TRANSFORMS` order, of the transforms whose multiplier is > 0:
      xflip, yflip, lumaflip: (B,) int32 in {0, 1};  rotate_int: (B,) int32 in {0..3};
      translate_int: (B, 2) int32 pixel shifts (tx, ty);
      scale, brightness, contrast, saturation: (B,) standard normal w;
      rotate_frac, hue: (B,) angle;  aniso: (B, 2) (w, r);  translate_frac: (B, 2) (wx, wy).
    Entries of images on which the transform does not fire are 0.
  """
  opts = _options(options)
  p = _check_p(p)
  if len(shape) != 4:
    raise ValueError(f"shape must be the images' NHWC shape (rank 4), got {tuple(shape)}")
  if not jnp.issubdtype(dtype, jnp.floating):
    raise ValueError(f"dtype must be a floating dtype, got {dtype}")
  shape = tuple(int(d) for d in shape)
  params = _sample(key, p, shape=shape, dtype=jnp.dtype(dtype), opts=tuple(opts.items()))
  return {name: params[name] for name in TRANSFORMS if name in params}  # jit sorts dict keys


@functools.partial(jax.jit, static_argnames=("shape", "dtype", "opts"))
def _sample(key, p, *, shape, dtype, opts):
  opts = dict(opts)
  batch, height, width = shape[0], shape[1], shape[2]
  params = {}
  for index, name in enumerate(TRANSFORMS):
    if opts[name] == 0:
      continue
    k, prob = jax.random.fold_in(key, index), opts[name] * p
    if name in ("xflip", "yflip", "lumaflip"):
      params[name] = _randint(k, batch, 2, prob)
    elif name == "rotate_int":
      params[name] = _randint(k, batch, 4, prob)
    elif name == "translate_int":
      params[name] = _translate_int_params(k, batch, height, width, prob,
                                           opts["translate_int_max"], dtype)
    elif name in ("scale", "brightness", "contrast", "saturation"):
      params[name] = _normal(k, (batch,), prob, dtype)
    elif name == "translate_frac":
      params[name] = _normal(k, (batch, 2), prob, dtype)
    elif name == "rotate_frac":
      params[name] = _angle(k, batch, prob, opts["rotate_frac_max"], dtype)
    elif name == "hue":
      params[name] = _angle(k, batch, prob, opts["hue_max"], dtype)
    else:
      params[name] = _aniso_params(k, batch, prob, opts["aniso_rotate_prob"], dtype)
  return params


def _labels(params, batch, height, width, translate_int_max, dtype):
  """The label columns of the official `labels += [...]` lines, concatenated in order."""
  cols = []
  for name in TRANSFORMS:
    if name not in params:
      continue
    v = params[name]
    if name == "rotate_int":
      cols += [(v == 1) | (v == 2), (v == 2) | (v == 3)]
    elif name == "translate_int":
      v = v.astype(dtype)
      cols += [v[:, 0] / (width * translate_int_max), v[:, 1] / (height * translate_int_max)]
    elif name in ("rotate_frac", "hue"):
      cols += [jnp.cos(v) - 1, jnp.sin(v)]
    elif name == "aniso":
      cols += [v[:, 0] * jnp.cos(v[:, 1]), v[:, 0] * jnp.sin(v[:, 1])]
    elif name == "translate_frac":
      cols += [v[:, 0], v[:, 1]]
    else:
      cols += [v]
  if not cols:
    return jnp.zeros((batch, 0), dtype)
  return jnp.stack([c.astype(dtype) for c in cols], axis=1)


# --- matrices ----------------------------------------------------------------------------------
def _matrix(rows):
  """Batched matrix (B, n, m) from rows of scalars and (B,) arrays (official `matrix`)."""
  ref = next(x for row in rows for x in row if jnp.ndim(x))
  return jnp.stack([jnp.stack([jnp.broadcast_to(jnp.asarray(x, ref.dtype), ref.shape) for x in row],
                              axis=-1) for row in rows], axis=-2)


def _translate2d(tx, ty):
  return _matrix([[1, 0, tx], [0, 1, ty], [0, 0, 1]])


def _scale2d(sx, sy):
  return _matrix([[sx, 0, 0], [0, sy, 0], [0, 0, 1]])


def _rotate2d(theta):
  return _matrix([[jnp.cos(theta), jnp.sin(-theta), 0], [jnp.sin(theta), jnp.cos(theta), 0],
                  [0, 0, 1]])


def _translate2d_inv(tx, ty):
  return _translate2d(-tx, -ty)


def _scale2d_inv(sx, sy):
  return _scale2d(1 / sx, 1 / sy)


def _rotate2d_inv(theta):
  return _rotate2d(-theta)


def _translate3d(tx, ty, tz):
  return _matrix([[1, 0, 0, tx], [0, 1, 0, ty], [0, 0, 1, tz], [0, 0, 0, 1]])


def _scale3d(sx, sy, sz):
  return _matrix([[sx, 0, 0, 0], [0, sy, 0, 0], [0, 0, sz, 0], [0, 0, 0, 1]])


def _rotate3d(v, theta):
  """Rotation by theta about the unit axis v (Rodrigues' formula, official `rotate3d`)."""
  vx, vy, vz = v[0], v[1], v[2]
  s, c = jnp.sin(theta), jnp.cos(theta)
  cc = 1 - c
  return _matrix([[vx * vx * cc + c, vx * vy * cc - vz * s, vx * vz * cc + vy * s, 0],
                  [vy * vx * cc + vz * s, vy * vy * cc + c, vy * vz * cc - vx * s, 0],
                  [vz * vx * cc - vy * s, vz * vy * cc + vx * s, vz * vz * cc + c, 0],
                  [0, 0, 0, 1]])


def _mm(a, b):
  return jnp.matmul(a, b, precision=_HIGHEST)


@functools.partial(jax.jit, static_argnames=("height", "width", "scale_std", "aniso_std",
                                             "translate_frac_std"))
def geometric_matrix(params, height, width, *, scale_std=0.2, aniso_std=0.2,
                     translate_frac_std=0.125):
  """G_inv (B, 3, 3) of the geometric parameters, or None if no geometric transform is enabled.

  Mirrors the official "Select parameters for geometric transformations" block: G_inv maps
  output to input pixel coordinates (origin at the image centre, y down) and is built as
  I @ scale2d_inv(s, s) @ rotate2d_inv(-w) @ [rotate2d_inv(r) @ scale2d_inv(s, 1/s) @
  rotate2d_inv(-r)] @ translate2d_inv(wx W std, wy H std), for the enabled factors.
  """
  if not set(GEOMETRIC) & set(params):
    return None
  batch = next(iter(params.values())).shape[0]
  dtype = next(params[name].dtype for name in GEOMETRIC if name in params)
  g = jnp.broadcast_to(jnp.eye(3, dtype=dtype), (batch, 3, 3))
  if "scale" in params:
    s = jnp.exp2(params["scale"] * scale_std)
    g = _mm(g, _scale2d_inv(s, s))
  if "rotate_frac" in params:
    g = _mm(g, _rotate2d_inv(-params["rotate_frac"]))
  if "aniso" in params:
    w, r = params["aniso"][:, 0], params["aniso"][:, 1]
    s = jnp.exp2(w * aniso_std)
    g = _mm(_mm(_mm(g, _rotate2d_inv(r)), _scale2d_inv(s, 1 / s)), _rotate2d_inv(-r))
  if "translate_frac" in params:
    w = params["translate_frac"]
    g = _mm(g, _translate2d_inv(w[:, 0] * (width * translate_frac_std),
                                w[:, 1] * (height * translate_frac_std)))
  return g


@functools.partial(jax.jit, static_argnames=("brightness_std", "contrast_std", "saturation_std"))
def color_matrix(params, *, brightness_std=0.2, contrast_std=0.5, saturation_std=1.0):
  """The 4x4 colour matrix M (B, 4, 4), or None if no colour transform is enabled.

  Mirrors the official "Select parameters for color transformations" block: each enabled
  transform left-multiplies M, in the order brightness, contrast, lumaflip, hue, saturation.
  """
  if not set(COLORS) & set(params):
    return None
  batch = next(iter(params.values())).shape[0]
  dtype = next((params[n].dtype for n in ("brightness", "contrast", "hue", "saturation")
                if n in params), jnp.float32)
  eye = jnp.eye(4, dtype=dtype)
  m = jnp.broadcast_to(eye, (batch, 4, 4))
  luma = jnp.asarray(np.array([1, 1, 1, 0]) / np.sqrt(3), dtype)
  luma_outer = jnp.outer(luma, luma)
  if "brightness" in params:
    b = params["brightness"] * brightness_std
    m = _mm(_translate3d(b, b, b), m)
  if "contrast" in params:
    c = jnp.exp2(params["contrast"] * contrast_std)
    m = _mm(_scale3d(c, c, c), m)
  if "lumaflip" in params:
    w = params["lumaflip"].astype(dtype)[:, None, None]
    m = _mm(eye - 2 * luma_outer * w, m)
  if "hue" in params:
    m = _mm(_rotate3d(luma, params["hue"]), m)
  if "saturation" in params:
    s = jnp.exp2(params["saturation"] * saturation_std)[:, None, None]
    m = _mm(luma_outer + (eye - luma_outer) * s, m)
  return m


# --- execution ---------------------------------------------------------------------------------
def _blit(images, params):
  """The official "Pixel blitting" block: exact flips, quarter turns and reflected shifts."""
  batch, height, width, _ = images.shape
  if "xflip" in params:
    images = jnp.where(params["xflip"][:, None, None, None] == 1, images[:, :, ::-1], images)
  if "yflip" in params:
    images = jnp.where(params["yflip"][:, None, None, None] == 1, images[:, ::-1], images)
  if "rotate_int" in params:
    k = params["rotate_int"][:, None, None, None]
    images = jnp.where((k == 1) | (k == 2), images[:, :, ::-1], images)
    images = jnp.where((k == 2) | (k == 3), images[:, ::-1], images)
    images = jnp.where((k == 1) | (k == 3), jnp.swapaxes(images, 1, 2), images)
  if "translate_int" in params:
    tx, ty = params["translate_int"][:, :1], params["translate_int"][:, 1:]
    # reflection without edge repeat: the period is 2 (size - 1); note x - tx but y + ty
    xs = width - 1 - jnp.abs(width - 1 - (jnp.arange(width) - tx) % (2 * width - 2))
    ys = height - 1 - jnp.abs(height - 1 - (jnp.arange(height) + ty) % (2 * height - 2))
    images = images[jnp.arange(batch)[:, None, None], ys[:, :, None], xs[:, None, :]]
  return images


def _margins(g_inv, height, width):
  """Official padding margins (mx0, my0, mx1, my1): the batch's transformed corners plus twice
  the filter padding, beyond the image, clipped to [0, size - 1] and rounded up."""
  cx, cy = (width - 1) / 2, (height - 1) / 2
  corners = jnp.array([[-cx, -cy, 1], [cx, -cy, 1], [cx, cy, 1], [-cx, cy, 1]], g_inv.dtype)
  xy = jnp.einsum("bij,kj->ibk", g_inv[:, :2], corners, precision=_HIGHEST).reshape(2, -1)
  margin = jnp.concatenate([-xy, xy]).max(axis=1)
  margin = margin + jnp.array([_HZ_PAD * 2 - cx, _HZ_PAD * 2 - cy] * 2, g_inv.dtype)
  margin = jnp.clip(margin, 0, jnp.array([width - 1, height - 1] * 2, g_inv.dtype))
  return jnp.ceil(margin).astype(jnp.int32)


def _window(n, start, stop, dtype):
  i = jnp.arange(n)
  return ((i >= start) & (i < stop)).astype(dtype)


def _conv_axis(x, kernel, axis, *, padding, stride=1, dilation=1):
  """1-D cross-correlation of every line of x along `axis` (torch `conv2d` with a 1-D kernel)."""
  x = jnp.moveaxis(x, axis, -1)
  lead = x.shape[:-1]
  y = lax.conv_general_dilated(x.reshape(-1, 1, x.shape[-1]), kernel[None, None], (stride,),
                               [padding], lhs_dilation=(dilation,), precision=_HIGHEST)
  return jnp.moveaxis(y.reshape(lead + y.shape[-1:]), -1, axis)


def _bilinear(image, ix, iy):
  """`grid_sample(mode='bilinear', padding_mode='zeros')` of one HWC image at pixel coordinates."""
  height, width = image.shape[:2]
  ix = jnp.clip(ix, -2, width + 1)
  iy = jnp.clip(iy, -2, height + 1)
  x0, y0 = jnp.floor(ix), jnp.floor(iy)
  fx, fy = ix - x0, iy - y0
  x0, y0 = x0.astype(jnp.int32), y0.astype(jnp.int32)
  out = 0
  for dy, wy in ((0, 1 - fy), (1, fy)):
    for dx, wx in ((0, 1 - fx), (1, fx)):
      yy, xx = y0 + dy, x0 + dx
      inside = (yy >= 0) & (yy < height) & (xx >= 0) & (xx < width)
      value = image[jnp.clip(yy, 0, height - 1), jnp.clip(xx, 0, width - 1)]
      out = out + jnp.where(inside, wx * wy, 0)[..., None] * value
  return out


def geometric_transform(images, g_inv):
  """Resamples NHWC images at G_inv(output pixel), G_inv (B, 3, 3) in centred pixel coordinates.

  Mirrors the official "Execute geometric transformations" block: reflection padding, 2x sym6
  upsampling, bilinear `grid_sample` with zero padding, 2x sym6 downsampling and cropping. The
  official data-dependent padding is reproduced by a fixed (H - 1, W - 1) reflection padding
  whose pixels outside the official margin are zeroed before and after upsampling (the official
  convolutions and `grid_sample` see zeros there). G_inv = identity returns the images up to
  rounding when H, W >= 7 (the filter is orthonormal; smaller images lose their border).
  """
  _check_images(images.shape, images.dtype, GEOMETRIC)
  if jnp.shape(g_inv) != (images.shape[0], 3, 3):
    raise ValueError(f"g_inv must have shape (batch, 3, 3) = {(images.shape[0], 3, 3)}, got "
                     f"{jnp.shape(g_inv)}")
  return _resample(images, g_inv)


@jax.jit
def _resample(images, g_inv):
  _, height, width, _ = images.shape
  dtype = _compute_dtype(images.dtype)
  g_inv = jnp.asarray(g_inv, dtype)
  hz = jnp.asarray(SYM6, dtype)
  x = images.astype(dtype)
  mx0, my0, mx1, my1 = _margins(g_inv, height, width)
  py, px = height - 1, width - 1

  # Pad by the largest margin, keep the official one.
  x = jnp.pad(x, ((0, 0), (py, py), (px, px), (0, 0)), mode="reflect")
  x = (x * _window(height + 2 * py, py - my0, py + height + my1, dtype)[:, None, None]
       * _window(width + 2 * px, px - mx0, px + width + mx1, dtype)[:, None])

  # Upsample: zero insertion (lhs_dilation) and convolution with sym6, x then y.
  conv_pad = (len(SYM6) + 1) // 2
  x = _conv_axis(x, hz[::-1], 2, padding=(conv_pad, conv_pad), dilation=2)
  x = _conv_axis(x, hz[::-1], 1, padding=(conv_pad, conv_pad), dilation=2)
  x = (x * _window(x.shape[1], 2 * (py - my0), 2 * (py + height + my1), dtype)[:, None, None]
       * _window(x.shape[2], 2 * (px - mx0), 2 * (px + width + mx1), dtype)[:, None])

  # Sample: output pixel (i, j) of the 2x grid, centred, through G_inv conjugated to the 2x grid
  # (upsampled pixel n sits at input position n / 2), to upsampled pixel indices. This is the
  # official affine_grid / grid_sample normalisation (align_corners=False) written out.
  out_h, out_w = (height + _HZ_PAD * 2) * 2, (width + _HZ_PAD * 2) * 2
  # translate2d(-.5) @ scale2d(2) @ G_inv @ scale2d(.5) @ translate2d(.5)
  up = jnp.array([[2, 0, -0.5], [0, 2, -0.5], [0, 0, 1]], dtype)
  down = jnp.array([[0.5, 0, 0.25], [0, 0.5, 0.25], [0, 0, 1]], dtype)
  g = _mm(_mm(up, g_inv), down)[:, :2, :, None, None]
  xo = jnp.arange(out_w, dtype=dtype) - (out_w - 1) / 2
  yo = (jnp.arange(out_h, dtype=dtype) - (out_h - 1) / 2)[:, None]
  ix = g[:, 0, 0] * xo + g[:, 0, 1] * yo + g[:, 0, 2] + (x.shape[2] - 1) / 2
  iy = g[:, 1, 0] * xo + g[:, 1, 1] * yo + g[:, 1, 2] + (x.shape[1] - 1) / 2
  x = jax.vmap(_bilinear)(x, ix, iy)

  # Downsample with sym6 (x then y) and crop the filter padding.
  conv_pad = (len(SYM6) - 1) // 2
  x = _conv_axis(x, hz, 2, padding=(conv_pad, conv_pad), stride=2)[:, :, _HZ_PAD:-_HZ_PAD]
  x = _conv_axis(x, hz, 1, padding=(conv_pad, conv_pad), stride=2)[:, _HZ_PAD:-_HZ_PAD]
  return x.astype(images.dtype)


def _apply_color(images, m):
  """The official "Execute color transformations" block: RGB through M, or L through the mean of
  M's colour rows."""
  x = images.astype(m.dtype)
  if images.shape[-1] == 3:
    x = jnp.einsum("bij,bhwj->bhwi", m[:, :3, :3], x, precision=_HIGHEST) + m[:, None, None, :3, 3]
  else:
    m = m[:, :3, :].mean(axis=1)
    x = x * m[:, :3].sum(axis=1)[:, None, None, None] + m[:, 3][:, None, None, None]
  return x.astype(images.dtype)


def apply_params(images, params, *, translate_int_max=0.125, scale_std=0.2, aniso_std=0.2,
                 translate_frac_std=0.125, brightness_std=0.2, contrast_std=0.5,
                 saturation_std=1.0):
  """Applies drawn parameters (`sample_params`) to NHWC images: (images, labels (B, D)).

  Mirrors the execution order of the official `AugmentPipe.__call__`: blits, one geometric
  resampling (`geometric_transform`) if a geometric transform is enabled, one colour matrix if a
  colour transform is enabled; the labels concatenate the enabled transforms' columns.
  """
  _check_images(images.shape, images.dtype, params)
  ranges = _options(dict(translate_int_max=translate_int_max, scale_std=scale_std,
                         aniso_std=aniso_std, translate_frac_std=translate_frac_std,
                         brightness_std=brightness_std, contrast_std=contrast_std,
                         saturation_std=saturation_std))
  return _apply(images, params, ranges=tuple(ranges.items()))


@functools.partial(jax.jit, static_argnames=("ranges",))
def _apply(images, params, *, ranges):
  r = dict(ranges)
  batch, height, width, _ = images.shape
  dtype = _compute_dtype(images.dtype)
  x = _blit(images, params)
  g_inv = geometric_matrix(params, height, width, scale_std=r["scale_std"],
                           aniso_std=r["aniso_std"], translate_frac_std=r["translate_frac_std"])
  if g_inv is not None:
    x = _resample(x, g_inv)
  m = color_matrix(params, brightness_std=r["brightness_std"], contrast_std=r["contrast_std"],
                   saturation_std=r["saturation_std"])
  if m is not None:
    x = _apply_color(x, m.astype(dtype))
  return x, _labels(params, batch, height, width, r["translate_int_max"], dtype)


def augment_pipe(key, images, *, p, xflip=0., yflip=0., rotate_int=0., translate_int=0.,
                 translate_int_max=0.125, scale=0., rotate_frac=0., aniso=0., translate_frac=0.,
                 scale_std=0.2, rotate_frac_max=1., aniso_std=0.2, aniso_rotate_prob=0.5,
                 translate_frac_std=0.125, brightness=0., contrast=0., lumaflip=0., hue=0.,
                 saturation=0., brightness_std=0.2, contrast_std=0.5, hue_max=1.,
                 saturation_std=1.):
  """EDM's `AugmentPipe(p, ...)(images)` on NHWC images: returns (images, labels).

  Mirrors the official `AugmentPipe.__init__` (arguments and defaults) and `__call__`.

  Args:
    key: PRNG key.
    images: (B, H, W, C) floating images.
    p: overall probability multiplier, >= 0 (may be traced; `p = 0` returns the images as is).
    xflip, yflip, rotate_int, translate_int, scale, rotate_frac, aniso, translate_frac,
    brightness, contrast, lumaflip, hue, saturation: probability multipliers (static, >= 0);
      transform t fires with probability min(1, p t) and has label columns iff t > 0.
    translate_int_max: range of integer translation, relative to the image size.
    scale_std: log2 standard deviation of isotropic scaling.
    rotate_frac_max: range of fractional rotation, 1 = full circle.
    aniso_std: log2 standard deviation of anisotropic scaling.
    aniso_rotate_prob: probability of anisotropic scaling along a rotated frame.
    translate_frac_std: standard deviation of fractional translation, relative to the image size.
    brightness_std, contrast_std (log2), hue_max (1 = full circle), saturation_std (log2): the
      colour transforms' ranges.

  Returns:
    (augmented images of the input dtype, labels (B, augment_dim(...)) in the module docstring's
    layout; (B, 9) = (B, AUGMENT_DIM) for `EDM_CIFAR10`).
  """
  options = dict(
      xflip=xflip, yflip=yflip, rotate_int=rotate_int, translate_int=translate_int,
      translate_int_max=translate_int_max, scale=scale, rotate_frac=rotate_frac, aniso=aniso,
      translate_frac=translate_frac, scale_std=scale_std, rotate_frac_max=rotate_frac_max,
      aniso_std=aniso_std, aniso_rotate_prob=aniso_rotate_prob,
      translate_frac_std=translate_frac_std, brightness=brightness, contrast=contrast,
      lumaflip=lumaflip, hue=hue, saturation=saturation, brightness_std=brightness_std,
      contrast_std=contrast_std, hue_max=hue_max, saturation_std=saturation_std)
  opts = _options(options)
  images = jnp.asarray(images)
  _check_images(images.shape, images.dtype, [n for n in TRANSFORMS if opts[n] > 0])
  p = _check_p(p)
  dtype = _compute_dtype(images.dtype)
  if isinstance(p, float) and p == 0:
    return images, jnp.zeros((images.shape[0], augment_dim(**options)), dtype)
  return _pipe(key, images, p, opts=tuple(opts.items()))


@functools.partial(jax.jit, static_argnames=("opts",))
def _pipe(key, images, p, *, opts):
  params = _sample(key, p, shape=images.shape, dtype=_compute_dtype(images.dtype), opts=opts)
  return _apply(images, params, ranges=opts)
