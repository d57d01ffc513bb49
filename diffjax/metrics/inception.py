"""The FID Inception-v3 (the 2015 TensorFlow graph of Heusel et al.'s TTUR code, as pytorch-fid's
`FIDInceptionA/C/E_1/E_2` variants of torchvision's Inception3) in Flax NNX, NHWC.

  net = FIDInception(rngs=nnx.Rngs(0))
  load_inception_weights(net, "pt_inception-2015-12-05.npz")    # see docs/fid.md
  feats = net.pool_features(images)        # images in [0, 1], any size -> (N, 2048)

Layout: module and parameter names follow the PyTorch state dict (`Mixed_5b.branch1x1.conv.weight`,
...), so `load_inception_weights` maps each tensor by name (conv OIHW -> HWIO; BatchNorm with eps
1e-3 in inference mode). The differences of the FID network from torchvision's are kept: average
pooling in the A, C and first E blocks excludes the padding from the mean, and the last E block
pools by max. Inputs are resized bilinearly to 299 x 299 and scaled to [-1, 1] as pytorch-fid's
`resize_input` / `normalize_input`.
"""
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


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

  def __init__(self, cin, *, rngs):
    self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2, rngs=rngs)
    self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1, rngs=rngs)
    self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1, rngs=rngs)
    self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2, rngs=rngs)

  def __call__(self, x):
    return jnp.concatenate([self.branch3x3(x), self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                            _max_pool(x, 2)], axis=-1)


class InceptionC(nnx.Module):

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


class FIDInception(nnx.Module):
  """Inception-v3 up to the 2048-d pool features, plus the 1008-way logits layer (`fc`, for IS)."""

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
    """(N, 2048) pool3 features of images in [0, 1] (N, H, W, 3), resized to 299 x 299."""
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"FIDInception expects RGB images of shape (N, H, W, 3) in [0, 1], got {images.shape}")
    x = jax.image.resize(images.astype(jnp.float32), (images.shape[0], 299, 299, 3), "bilinear", antialias=False)
    x = 2.0 * x - 1.0
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

  def logits(self, images):
    return self.fc(self.pool_features(images))


def _module_at(root, path):
  m = root
  for name in path:
    m = getattr(m, name)
  return m


def torch_state_names(net):
  """{torch state-dict name: (module, attribute, transform)} for every loadable tensor of `net`."""
  out = {}
  for path, module in nnx.iter_graph(net):
    prefix = ".".join(str(p) for p in path)
    if isinstance(module, nnx.Conv):
      out[prefix + ".weight"] = (module, "kernel", lambda w: np.transpose(w, (2, 3, 1, 0)))
    elif isinstance(module, nnx.BatchNorm):
      for torch_name, attr in (("weight", "scale"), ("bias", "bias"), ("running_mean", "mean"),
                               ("running_var", "var")):
        out[f"{prefix}.{torch_name}"] = (module, attr, lambda w: w)
    elif isinstance(module, nnx.Linear):
      out[prefix + ".weight"] = (module, "kernel", lambda w: np.transpose(w))
      out[prefix + ".bias"] = (module, "bias", lambda w: w)
  return out


def load_inception_weights(net, path):
  """Loads a `.npz` of the pytorch-fid Inception state dict (names as in PyTorch) into `net`.

  Raises:
    ValueError: a missing tensor or a shape mismatch, naming the tensor.
  """
  with np.load(path) as f:
    arrays = {k: f[k] for k in f.files}
  for name, (module, attr, transform) in torch_state_names(net).items():
    if name not in arrays:
      if name.startswith("fc."):
        continue  # a features-only file: the logits layer stays as initialised
      raise ValueError(f"load_inception_weights: {path} has no tensor {name!r}")
    value = transform(np.asarray(arrays[name], np.float32))
    variable = getattr(module, attr)
    if value.shape != variable[...].shape:
      raise ValueError(f"load_inception_weights: {name!r} has shape {arrays[name].shape}, expected the "
                       f"transform of {variable[...].shape}")
    variable[...] = jnp.asarray(value)
  return net
