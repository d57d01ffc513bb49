"""The FID Inception-v3 (the 2015 TensorFlow graph of Heusel et al.'s TTUR code, as pytorch-fid's
`FIDInceptionA/C/E_1/E_2` variants of torchvision's Inception3) in Flax NNX, NHWC.

  net = load_inception_weights("pt_inception-2015-12-05.npz")   # see docs/fid.md
  features = make_feature_fn(net)                                  # jitted: images -> (N, 2048)
  f = features(images)          # (N, H, W, 3), float in [0, 1] or uint8 in [0, 255], any H, W

Layout: module and parameter names follow the PyTorch state dict (`Mixed_5b.branch1x1.conv.weight`,
...), so `load_inception_weights` maps each tensor by name (conv OIHW -> HWIO, fc (out, in) ->
(in, out); BatchNorm with eps 1e-3 applied in inference mode from the running statistics). The
differences of the FID network from torchvision's are kept: average pooling in the A, C and first E
blocks excludes the padding from the mean (`count_include_pad=False`), and the last E block pools
by max. Inputs are resized bilinearly to 299 x 299 (half-pixel centres, no antialiasing: PyTorch's
`interpolate(..., align_corners=False)`) and scaled to [-1, 1], as pytorch-fid's `resize_input` /
`normalize_input`. `fc` is the graph's 1008-way logits layer; the Inception Score of Salimans et
al. (2016) and torch-fidelity ("logits_unbiased") use it without its bias.
"""
import functools
import json
import struct

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

INPUT_SIZE = 299
OUTPUTS = ("pool", "logits", "logits_unbiased")


class BasicConv2d(nnx.Module):
  """conv (no bias) - BatchNorm(eps 1e-3, inference) - ReLU."""

  def __init__(self, cin, cout, kernel, *, stride=1, padding=(0, 0), rngs):
    kernel = (kernel, kernel) if isinstance(kernel, int) else kernel
    padding = (padding, padding) if isinstance(padding, int) else padding
    self.conv = nnx.Conv(cin, cout, kernel, strides=stride, padding=((padding[0],) * 2, (padding[1],) * 2),
                         use_bias=False, rngs=rngs)
    self.bn = nnx.BatchNorm(cout, epsilon=1e-3, use_running_average=True, rngs=rngs)

  def __call__(self, x):
    return jax.nn.relu(self.bn(self.conv(x)))


def _avg_pool_exclude_pad(x):
  """3x3 / stride 1 / pad 1 average pooling that divides by the number of in-image pixels."""
  window = lambda v: jax.lax.reduce_window(v, 0.0, jax.lax.add, (1, 3, 3, 1), (1, 1, 1, 1),
                                           ((0, 0), (1, 1), (1, 1), (0, 0)))
  return window(x) / window(jnp.ones_like(x[..., :1]))


def _max_pool(x, stride, pad=0):
  return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, stride, stride, 1),
                               ((0, 0), (pad, pad), (pad, pad), (0, 0)))


class InceptionA(nnx.Module):
  """pytorch-fid's FIDInceptionA (Mixed_5b-d): average pool without the padding in the mean."""

  def __init__(self, cin, pool_features, *, rngs):
    self.branch1x1 = BasicConv2d(cin, 64, 1, rngs=rngs)
    self.branch5x5_1 = BasicConv2d(cin, 48, 1, rngs=rngs)
    self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2, rngs=rngs)
    self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1, rngs=rngs)
    self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1, rngs=rngs)
    self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1, rngs=rngs)
    self.branch_pool = BasicConv2d(cin, pool_features, 1, rngs=rngs)

  def __call__(self, x):
    return jnp.concatenate([
        self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)),
        self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
        self.branch_pool(_avg_pool_exclude_pad(x))], axis=-1)


class InceptionB(nnx.Module):
  """torchvision's InceptionB (Mixed_6a): grid reduction 35 -> 17."""

  def __init__(self, cin, *, rngs):
    self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2, rngs=rngs)
    self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1, rngs=rngs)
    self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1, rngs=rngs)
    self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2, rngs=rngs)

  def __call__(self, x):
    return jnp.concatenate([self.branch3x3(x), self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                            _max_pool(x, 2)], axis=-1)


class InceptionC(nnx.Module):
  """pytorch-fid's FIDInceptionC (Mixed_6b-e): factorised 7x7, average pool without the padding."""

  def __init__(self, cin, c7, *, rngs):
    self.branch1x1 = BasicConv2d(cin, 192, 1, rngs=rngs)
    self.branch7x7_1 = BasicConv2d(cin, c7, 1, rngs=rngs)
    self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3), rngs=rngs)
    self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0), rngs=rngs)
    self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1, rngs=rngs)
    self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0), rngs=rngs)
    self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3), rngs=rngs)
    self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0), rngs=rngs)
    self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3), rngs=rngs)
    self.branch_pool = BasicConv2d(cin, 192, 1, rngs=rngs)

  def __call__(self, x):
    b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
    d = self.branch7x7dbl_1(x)
    for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
      d = layer(d)
    return jnp.concatenate([self.branch1x1(x), b7, d, self.branch_pool(_avg_pool_exclude_pad(x))], axis=-1)


class InceptionD(nnx.Module):
  """torchvision's InceptionD (Mixed_7a): grid reduction 17 -> 8."""

  def __init__(self, cin, *, rngs):
    self.branch3x3_1 = BasicConv2d(cin, 192, 1, rngs=rngs)
    self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2, rngs=rngs)
    self.branch7x7x3_1 = BasicConv2d(cin, 192, 1, rngs=rngs)
    self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3), rngs=rngs)
    self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0), rngs=rngs)
    self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2, rngs=rngs)

  def __call__(self, x):
    b = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
    return jnp.concatenate([self.branch3x3_2(self.branch3x3_1(x)), b, _max_pool(x, 2)], axis=-1)


class InceptionE(nnx.Module):
  """pool="avg" (FIDInceptionE_1, padding excluded) or "max" (FIDInceptionE_2)."""

  def __init__(self, cin, pool, *, rngs):
    if pool not in ("avg", "max"):
      raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}")
    self.pool = pool
    self.branch1x1 = BasicConv2d(cin, 320, 1, rngs=rngs)
    self.branch3x3_1 = BasicConv2d(cin, 384, 1, rngs=rngs)
    self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1), rngs=rngs)
    self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0), rngs=rngs)
    self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1, rngs=rngs)
    self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1, rngs=rngs)
    self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1), rngs=rngs)
    self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0), rngs=rngs)
    self.branch_pool = BasicConv2d(cin, 192, 1, rngs=rngs)

  def __call__(self, x):
    b3 = self.branch3x3_1(x)
    b3 = jnp.concatenate([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], axis=-1)
    d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
    d = jnp.concatenate([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], axis=-1)
    pooled = _avg_pool_exclude_pad(x) if self.pool == "avg" else _max_pool(x, 1, 1)
    return jnp.concatenate([self.branch1x1(x), b3, d, self.branch_pool(pooled)], axis=-1)


def preprocess(images):
  """pytorch-fid's input transform: (N, H, W, 3) images -> (N, 299, 299, 3) in [-1, 1].

  Args:
    images: RGB images, NHWC; floats in [0, 1], or integers (uint8) in [0, 255], divided by 255.

  Returns:
    The images resized bilinearly to 299 x 299 (`align_corners=False`, no antialiasing; no-op at
    299 x 299) and mapped by x -> 2 x - 1, in float32 (float64 for float64 input under x64).
  """
  images = jnp.asarray(images)
  if images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(f"images must be RGB images of shape (N, H, W, 3), NHWC, got shape {images.shape}")
  if jnp.issubdtype(images.dtype, jnp.integer):
    x = images.astype(jnp.float32) / 255.0
  else:
    x = images.astype(jnp.promote_types(images.dtype, jnp.float32))  # float64 stays (under x64)
  if x.shape[1:3] != (INPUT_SIZE, INPUT_SIZE):
    x = jax.image.resize(x, (x.shape[0], INPUT_SIZE, INPUT_SIZE, 3), "bilinear", antialias=False)
  return 2.0 * x - 1.0


class FIDInception(nnx.Module):
  """Inception-v3 up to the 2048-d pool3 features, plus the 1008-way logits layer (`fc`, for IS).

  23,850,960 parameters (21,785,568 without `fc`), named as pytorch-fid's `fid_inception_v3()`.
  """

  def __init__(self, *, num_logits=1008, rngs):
    self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2, rngs=rngs)
    self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3, rngs=rngs)
    self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1, rngs=rngs)
    self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1, rngs=rngs)
    self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3, rngs=rngs)
    self.Mixed_5b = InceptionA(192, 32, rngs=rngs)
    self.Mixed_5c = InceptionA(256, 64, rngs=rngs)
    self.Mixed_5d = InceptionA(288, 64, rngs=rngs)
    self.Mixed_6a = InceptionB(288, rngs=rngs)
    self.Mixed_6b = InceptionC(768, 128, rngs=rngs)
    self.Mixed_6c = InceptionC(768, 160, rngs=rngs)
    self.Mixed_6d = InceptionC(768, 160, rngs=rngs)
    self.Mixed_6e = InceptionC(768, 192, rngs=rngs)
    self.Mixed_7a = InceptionD(768, rngs=rngs)
    self.Mixed_7b = InceptionE(1280, "avg", rngs=rngs)
    self.Mixed_7c = InceptionE(2048, "max", rngs=rngs)
    self.fc = nnx.Linear(2048, num_logits, rngs=rngs)

  def pool_features(self, images):
    """(N, 2048) pool3 features of (N, H, W, 3) images (float in [0, 1] or uint8), see `preprocess`."""
    x = preprocess(images)
    x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
    x = _max_pool(x, 2)
    x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
    x = _max_pool(x, 2)
    for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                  self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
      x = block(x)
    return jnp.mean(x, axis=(1, 2))

  def __call__(self, images):
    return self.pool_features(images)

  def head(self, features, *, bias=True):
    """The 1008-way logits of pool features; `bias=False` gives torch-fidelity's "logits_unbiased"."""
    logits = features @ self.fc.kernel[...]
    return logits + self.fc.bias[...] if bias else logits

  def logits(self, images, *, bias=True):
    return self.head(self.pool_features(images), bias=bias)


def make_feature_fn(net, output="pool"):
  """A jitted `images -> outputs` function of `net` (parameters passed as arguments, not constants).

  Args:
    net: a `FIDInception`.
    output: one of "pool" ((N, 2048) features for FID / KID), "logits" ((N, 1008) with the fc
      bias), "logits_unbiased" (without it, for the Inception Score), or a tuple of these, computed
      in one forward pass and returned as a tuple.

  Returns:
    A function of (N, H, W, 3) images (float in [0, 1] or uint8), for `fid.compute_features`.
  """
  names = (output,) if isinstance(output, str) else tuple(output)
  if not names or any(name not in OUTPUTS for name in names):
    raise ValueError(f"output must be one of {OUTPUTS} or a tuple of them, got {output!r}")
  graphdef, state = nnx.split(net)

  @jax.jit
  def apply(state, images):
    model = nnx.merge(graphdef, state)
    pool = model.pool_features(images)
    values = {"pool": pool}
    if "logits" in names or "logits_unbiased" in names:
      values["logits_unbiased"] = model.head(pool, bias=False)
      values["logits"] = values["logits_unbiased"] + model.fc.bias[...]
    out = tuple(values[name] for name in names)
    return out[0] if isinstance(output, str) else out

  return functools.partial(apply, state)


def torch_state_names(net):
  """{torch state-dict name: (module, attribute, transform)} for every loadable tensor of `net`."""
  out = {}
  for path, module in nnx.iter_graph(net):
    prefix = ".".join(str(p) for p in path)
    if isinstance(module, nnx.Conv):
      out[prefix + ".weight"] = (module, "kernel", lambda w: np.transpose(w, (2, 3, 1, 0)))  # OIHW -> HWIO
    elif isinstance(module, nnx.BatchNorm):
      for torch_name, attr in (("weight", "scale"), ("bias", "bias"), ("running_mean", "mean"),
                               ("running_var", "var")):
        out[f"{prefix}.{torch_name}"] = (module, attr, lambda w: w)
    elif isinstance(module, nnx.Linear):
      out[prefix + ".weight"] = (module, "kernel", lambda w: np.transpose(w))  # (out, in) -> (in, out)
      out[prefix + ".bias"] = (module, "bias", lambda w: w)
  return out


_SAFETENSORS_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": jnp.bfloat16,
                       "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
                       "BOOL": np.bool_}


def _read_safetensors(path):
  """The tensors of a `.safetensors` file (8-byte little-endian header size, JSON header, data)."""
  with open(path, "rb") as f:
    (header_size,) = struct.unpack("<Q", f.read(8))
    header = json.loads(f.read(header_size))
    data = f.read()
  arrays = {}
  for name, info in header.items():
    if name == "__metadata__":
      continue
    if info["dtype"] not in _SAFETENSORS_DTYPES:
      raise ValueError(f"{path}: tensor {name!r} has dtype {info['dtype']}, supported are "
                       f"{sorted(_SAFETENSORS_DTYPES)}")
    start, end = info["data_offsets"]
    dtype = np.dtype(_SAFETENSORS_DTYPES[info["dtype"]]).newbyteorder("<")
    arrays[name] = np.frombuffer(data[start:end], dtype=dtype).reshape(info["shape"])
  return arrays


def read_state_dict(path):
  """{name: array} from a `.npz` or `.safetensors` file of a PyTorch state dict."""
  path = str(path)
  if path.endswith(".npz"):
    with np.load(path) as f:
      return {k: f[k] for k in f.files}
  if path.endswith(".safetensors"):
    return _read_safetensors(path)
  raise ValueError(f"path must end in '.npz' or '.safetensors', got {path!r}")


def load_inception_weights(net_or_path, path=None, *, strict=True):
  """Loads pytorch-fid's Inception state dict (PyTorch names) from a `.npz` or `.safetensors` file.

  `load_inception_weights(path)` builds a `FIDInception` and loads it; `load_inception_weights(net,
  path)` loads into an existing one. A file without `fc.*` leaves the logits layer as initialised.

  Args:
    net_or_path: the file, or a `FIDInception` (then `path` is the file).
    path: the file when the first argument is a network.
    strict: reject tensors the network has no place for (`*.num_batches_tracked` is always ignored).

  Returns:
    The network holding the loaded weights.

  Raises:
    ValueError: a missing, unexpected or mis-shaped tensor, naming it.
  """
  if path is None:
    if isinstance(net_or_path, nnx.Module):
      raise ValueError("load_inception_weights(net, path): path is missing")
    path = net_or_path
    arrays = read_state_dict(path)
    new = lambda: FIDInception(rngs=nnx.Rngs(0))
    # every tensor in the file: build the structure only (no random initialisation), then fill it
    net = nnx.eval_shape(new) if {"fc.weight", "fc.bias"} <= arrays.keys() else new()
  else:
    net = net_or_path
    arrays = read_state_dict(path)
  names = torch_state_names(net)
  unexpected = sorted(k for k in arrays if k not in names and not k.endswith("num_batches_tracked"))
  if strict and unexpected:
    raise ValueError(f"load_inception_weights: {path} has {len(unexpected)} tensors the FID Inception does "
                     f"not have, e.g. {unexpected[:3]} (strict=False ignores them)")
  for name, (module, attr, transform) in names.items():
    if name not in arrays:
      if name.startswith("fc."):
        continue  # a features-only file: the logits layer stays as initialised
      raise ValueError(f"load_inception_weights: {path} has no tensor {name!r}")
    value = transform(np.asarray(arrays[name], np.float32))
    variable = getattr(module, attr)
    if value.shape != variable.shape:
      raise ValueError(f"load_inception_weights: {name!r} has shape {arrays[name].shape}, expected the "
                       f"PyTorch layout of {variable.shape}")
    variable.set_value(jnp.asarray(value))
  return net
