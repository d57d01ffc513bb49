"""EDM's U-Nets (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative
Models", appendix F.2 and Table 7; `NVlabs/edm` `training/networks.py`) in Flax NNX on NHWC images.

These are the raw networks F(x, c_noise, labels) that `diffjax.parametrization.edm_denoiser`
preconditions (EDM eq. 7); they are called as `model(x, c_noise, cond=None, augment_labels=None)`.

* `SongUNet`: DDPM++ and NCSN++ (Song et al. 2021, "Score-Based Generative Modeling through
  Stochastic Differential Equations", appendix H) as EDM re-implements them. DDPM++: positional
  noise embedding, standard encoder, [1, 1] resampling. NCSN++: Gaussian Fourier embedding (scale 16)
  twice as wide, residual encoder (an FIR down-sampling 3x3 conv path merged with 1 / sqrt 2),
  [1, 3, 3, 1] resampling. Additive embedding, skip scale sqrt(1/2), one attention head, GroupNorm
  eps 1e-6; xavier-uniform init, the "zero" layers xavier x 1e-5 (output ~1e-5 at init, not 0), the
  qkv convs xavier x sqrt(0.2).
* `DhariwalUNet`: ADM (Dhariwal & Nichol 2021, "Diffusion Models Beat GANs on Image Synthesis") as
  EDM re-implements it. Adaptive scale/shift, skip scale 1, C // 64 heads, GroupNorm eps 1e-5,
  PyTorch-default init (U(+-1 / sqrt(fan_in)) weights and biases) and exactly zero "zero" layers,
  so the output is exactly 0 at init.

Modules and parameters carry the reference's names (`enc["16x16_block0"].conv0.kernel` is the
reference's `enc.16x16_block0.conv0.weight`, with kernels HWIO instead of OIHW, linear kernels
(in, out) instead of (out, in) and GroupNorm `scale` for `weight`), so the official weights port by
transposition.

Named configurations (`MODELS`, registered by `register_models()`): "ddpmpp_cifar10" (55,733,891
parameters) and "ncsnpp_cifar10" (56,397,827) as EDM's train.py builds them for CIFAR-10
(augment_dim 9), their "_cond" variants (label_dim 10), "ddpmpp_ffhq64" (61,805,571; FFHQ-64 with
channel_mult 1,2,2,2 and dropout 0.05), "adm_imagenet64" (295,899,267, label_dim
1000), and 8x8 "ddpmpp_tiny", "ncsnpp_tiny", "adm_tiny" for CPU tests.

Class labels: integers (B,) (one-hot; the null label `label_dim` maps to the zero vector, which is
what EDM's label dropout feeds) or float vectors (B, label_dim) as the reference takes them.
Classifier-free label dropout is done by the training loop (null label), not in the network.
"""
import functools
import inspect
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from diffjax.models import registry

# --------------------------------------------------------------------------------------------
# Initialisation (the reference's `weight_init`, `init` / `init_zero` / `init_attn` dicts)
# --------------------------------------------------------------------------------------------
INIT_MODES = ("xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal")


class Init(NamedTuple):
  """A layer initialisation: weight = weight_init(mode) * weight, bias = weight_init(mode) * bias."""
  mode: str = "kaiming_normal"
  weight: float = 1.0
  bias: float = 0.0


@functools.partial(jax.jit, static_argnums=(1, 2))
def _flat_draw(key, size, normal):
  if normal:
    return jax.random.normal(key, (size,), jnp.float32)
  return jax.random.uniform(key, (size,), jnp.float32, -1.0, 1.0)


@functools.partial(jax.jit, static_argnums=(1,))
def _take(flat, shape, scale):
  return flat[:math.prod(shape)].reshape(shape) * scale


def weight_init(key, shape, mode, fan_in, fan_out, gain=1.0):
  """EDM's `weight_init` (networks.py) times `gain`: xavier / kaiming, uniform / normal, explicit fans.

  xavier_uniform: U(+-sqrt(6 / (fan_in + fan_out))), xavier_normal: N(0, 2 / (fan_in + fan_out)),
  kaiming_uniform: U(+-sqrt(3 / fan_in)), kaiming_normal: N(0, 1 / fan_in). The iid draws are the
  first prod(shape) entries of a power-of-two-sized flat draw, so that eager construction compiles
  one random-number program per size bucket instead of one per layer shape (much faster on CPU).

  Raises:
    ValueError: mode not in INIT_MODES.
  """
  scales = {"xavier_uniform": math.sqrt(6 / (fan_in + fan_out)), "xavier_normal": math.sqrt(2 / (fan_in + fan_out)),
            "kaiming_uniform": math.sqrt(3 / fan_in), "kaiming_normal": math.sqrt(1 / fan_in)}
  if mode not in scales:
    raise ValueError(f"init mode must be one of {INIT_MODES}, got {mode!r}")
  shape = tuple(int(d) for d in shape)
  bucket = max(256, 1 << (math.prod(shape) - 1).bit_length())
  return _take(_flat_draw(key, bucket, mode.endswith("normal")), shape, jnp.float32(scales[mode] * gain))


def _param(rngs, shape, mode, gain, fan_in, fan_out):
  if gain == 0:
    return nnx.Param(jnp.zeros(shape, jnp.float32))
  return nnx.Param(weight_init(rngs.params(), shape, mode, fan_in, fan_out, gain))


SONG_INIT = Init("xavier_uniform")
SONG_INIT_ZERO = Init("xavier_uniform", weight=1e-5)
SONG_INIT_ATTN = Init("xavier_uniform", weight=math.sqrt(0.2))
ADM_INIT = Init("kaiming_uniform", weight=math.sqrt(1 / 3), bias=math.sqrt(1 / 3))  # = PyTorch's default
ADM_INIT_ZERO = Init("kaiming_uniform", weight=0.0, bias=0.0)


# --------------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------------
class Linear(nnx.Module):
  """Fully connected layer, kernel (in, out), with EDM's init."""

  def __init__(self, in_features, out_features, *, bias=True, init=Init(), rngs):
    self.in_features, self.out_features = in_features, out_features
    fans = dict(fan_in=in_features, fan_out=out_features)
    self.kernel = _param(rngs, (in_features, out_features), init.mode, init.weight, **fans)
    self.bias = _param(rngs, (out_features,), init.mode, init.bias, **fans) if bias else None

  def __call__(self, x):
    x = x @ self.kernel[...].astype(x.dtype)
    return x if self.bias is None else x + self.bias[...].astype(x.dtype)


def _fir_kernel(resample_filter, channels, dtype, gain=1.0):
  """Depthwise HWIO kernel gain * f f^T / (sum f)^2, tiled over channels."""
  f = np.asarray(resample_filter, np.float64)
  f2 = gain * np.outer(f, f) / f.sum()**2
  return jnp.asarray(np.tile(f2[:, :, None, None], (1, 1, 1, channels)), dtype)


def _conv(x, kernel, stride=1, padding=0, lhs_dilation=1, groups=1):
  return jax.lax.conv_general_dilated(x, kernel, (stride, stride), ((padding, padding),) * 2,
                                      lhs_dilation=(lhs_dilation, lhs_dilation), feature_group_count=groups,
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def fir_downsample(x, resample_filter=(1, 1), padding=None):
  """EDM's FIR down-sampling: depthwise conv with f f^T / (sum f)^2 at stride 2.

  out[i, j] = sum_ab f2[a, b] x[2i + a - p, 2j + b - p] with zero padding p (default
  (len f - 1) // 2). With f = (1, 1) this is 2 x 2 average pooling.
  """
  p = (len(resample_filter) - 1) // 2 if padding is None else padding
  return _conv(x, _fir_kernel(resample_filter, x.shape[-1], x.dtype), stride=2, padding=p, groups=x.shape[-1])


def fir_upsample(x, resample_filter=(1, 1), padding=None):
  """EDM's FIR up-sampling: the stride-2 transposed depthwise conv with 4 f f^T / (sum f)^2.

  out[y, x] = sum_{ij} in[i, j] 4 f2[y - 2i + p, x - 2j + p] (PyTorch `conv_transpose2d` with padding
  p, default (len f - 1) // 2). With f = (1, 1) this is nearest-neighbour up-sampling.
  """
  k = len(resample_filter)
  p = (k - 1) // 2 if padding is None else padding
  kernel = _fir_kernel(resample_filter, x.shape[-1], x.dtype, gain=4.0)[::-1, ::-1]
  return _conv(x, kernel, padding=k - 1 - p, lhs_dilation=2, groups=x.shape[-1])


class Conv2d(nnx.Module):
  """EDM's Conv2d: optional k x k conv (kernel HWIO; kernel=0: resampling only) with FIR up/down.

  Unfused: resample, then conv with padding k // 2. `fused_resample` (down only; the reference
  uses it for NCSN++'s aux residual): conv with padding k // 2 + (len f - 1) // 2, then FIR at
  stride 2 without padding. Bias last.
  """

  def __init__(self, in_channels, out_channels, kernel, *, bias=True, up=False, down=False, resample_filter=(1, 1),
               fused_resample=False, init=Init(), rngs):
    if up and down:
      raise ValueError("Conv2d: up and down cannot both be set")
    if fused_resample and up:
      raise ValueError("Conv2d: fused_resample is supported with down only")
    self.in_channels, self.out_channels = in_channels, out_channels
    self.up, self.down, self.fused_resample = up, down, fused_resample
    self.resample_filter = tuple(resample_filter)
    fans = dict(fan_in=in_channels * kernel * kernel, fan_out=out_channels * kernel * kernel)
    self.kernel = _param(rngs, (kernel, kernel, in_channels, out_channels), init.mode, init.weight,
                         **fans) if kernel else None
    self.bias = _param(rngs, (out_channels,), init.mode, init.bias, **fans) if kernel and bias else None

  def __call__(self, x):
    w = None if self.kernel is None else self.kernel[...].astype(x.dtype)
    w_pad = 0 if w is None else w.shape[0] // 2
    if self.fused_resample and self.down and w is not None:
      x = _conv(x, w, padding=w_pad + (len(self.resample_filter) - 1) // 2)
      x = fir_downsample(x, self.resample_filter, padding=0)
    else:
      if self.up:
        x = fir_upsample(x, self.resample_filter)
      if self.down:
        x = fir_downsample(x, self.resample_filter)
      if w is not None:
        x = _conv(x, w, padding=w_pad)
    return x if self.bias is None else x + self.bias[...].astype(x.dtype)


def group_norm(channels, eps, rngs):
  """EDM's GroupNorm: min(32, C // 4) groups of contiguous channels, biased variance, affine."""
  groups = min(32, channels // 4)
  if groups < 1 or channels % groups:
    raise ValueError(f"GroupNorm: channels must be >= 4 and divisible by min(32, channels // 4), got {channels}")
  return nnx.GroupNorm(channels, num_groups=groups, epsilon=eps, use_fast_variance=False, rngs=rngs)


def attention(qkv, num_heads):
  """EDM's multi-head self-attention over pixels, softmax in float32.

  Args:
    qkv: (B, H, W, 3C), channels laid out as the reference's reshape(N * heads, C / heads, 3, HW):
      channel index = (head * C / heads + c) * 3 + {0: q, 1: k, 2: v}.
    num_heads: number of heads.

  Returns:
    (B, H, W, C) with channel head * C / heads + c of softmax(q^T k / sqrt(C / heads)) v.
  """
  b, h, w, c3 = qkv.shape
  c = c3 // 3
  d = c // num_heads
  qkv = qkv.reshape(b, h * w, num_heads, d, 3)
  q, k, v = qkv[..., 0], qkv[..., 1], qkv[..., 2]
  logits = jnp.einsum("bqhc,bkhc->bhqk", q.astype(jnp.float32), (k / math.sqrt(d)).astype(jnp.float32))
  weights = jax.nn.softmax(logits, axis=-1).astype(qkv.dtype)
  return jnp.einsum("bhqk,bkhc->bqhc", weights, v).reshape(b, h, w, c)


class UNetBlock(nnx.Module):
  """EDM's unified U-Net block (DDPM++, NCSN++ and ADM), arguments as the reference.

    h = conv0(SiLU(GN0(x)))                          (FIR up/down inside conv0)
    h = SiLU(shift + GN1(h) (1 + scale))             adaptive_scale (ADM), (scale, shift) = affine(emb)
    h = SiLU(GN1(h + affine(emb)))                   otherwise (DDPM++ / NCSN++)
    x = (conv1(dropout(h)) + skip(x)) * skip_scale
    x = (proj(attention(qkv(GN2(x)))) + x) * skip_scale      if attention

  The skip is a conv (1x1, resampling too) when channels change or, with `resample_proj`, when
  the block resamples; a plain FIR resampling when it resamples without; the identity otherwise.
  Heads: `num_heads`, or out_channels // channels_per_head (ADM: none below 64 channels).
  """

  def __init__(self, in_channels, out_channels, emb_channels, *, up=False, down=False, attention=False,
               num_heads=None, channels_per_head=64, dropout=0.0, skip_scale=1.0, eps=1e-5, resample_filter=(1, 1),
               resample_proj=False, adaptive_scale=True, init=Init(), init_zero=Init(weight=0.0), init_attn=None,
               rngs):
    self.in_channels, self.out_channels = in_channels, out_channels
    self.num_heads = 0 if not attention else num_heads if num_heads is not None else out_channels // channels_per_head
    self.skip_scale, self.adaptive_scale = skip_scale, adaptive_scale
    self.norm0 = group_norm(in_channels, eps, rngs)
    self.conv0 = Conv2d(in_channels, out_channels, 3, up=up, down=down, resample_filter=resample_filter, init=init,
                        rngs=rngs)
    self.affine = Linear(emb_channels, out_channels * (2 if adaptive_scale else 1), init=init, rngs=rngs)
    self.norm1 = group_norm(out_channels, eps, rngs)
    self.dropout = nnx.Dropout(dropout, rngs=rngs)
    self.conv1 = Conv2d(out_channels, out_channels, 3, init=init_zero, rngs=rngs)
    skip_kernel = 1 if resample_proj or out_channels != in_channels else 0
    self.skip = Conv2d(in_channels, out_channels, skip_kernel, up=up, down=down, resample_filter=resample_filter,
                       init=init, rngs=rngs) if out_channels != in_channels or up or down else None
    if self.num_heads:
      if out_channels % self.num_heads:
        raise ValueError(f"UNetBlock: out_channels ({out_channels}) must be divisible by num_heads ({self.num_heads})")
      self.norm2 = group_norm(out_channels, eps, rngs)
      self.qkv = Conv2d(out_channels, 3 * out_channels, 1, init=init if init_attn is None else init_attn, rngs=rngs)
      self.proj = Conv2d(out_channels, out_channels, 1, init=init_zero, rngs=rngs)

  def __call__(self, x, emb):
    orig = x
    x = self.conv0(nnx.silu(self.norm0(x)))
    params = self.affine(emb)[:, None, None, :].astype(x.dtype)
    if self.adaptive_scale:
      scale, shift = jnp.split(params, 2, axis=-1)
      x = nnx.silu(shift + self.norm1(x) * (scale + 1))
    else:
      x = nnx.silu(self.norm1(x + params))
    x = self.conv1(self.dropout(x))
    x = (x + (orig if self.skip is None else self.skip(orig))) * self.skip_scale
    if self.num_heads:
      x = (self.proj(attention(self.qkv(self.norm2(x)), self.num_heads)) + x) * self.skip_scale
    return x


# --------------------------------------------------------------------------------------------
# Noise and label embeddings
# --------------------------------------------------------------------------------------------
def positional_embedding(x, num_channels, max_positions=10_000, endpoint=False):
  """EDM's PositionalEmbedding: [cos(x w_i), sin(x w_i)], w_i = max_positions^(-i / (n/2 - endpoint)).

  `endpoint=True` (DDPM++) makes the last frequency exactly 1 / max_positions.
  """
  half = num_channels // 2
  freqs = (1.0 / max_positions)**(jnp.arange(half, dtype=jnp.float32) / (half - (1 if endpoint else 0)))
  args = x[:, None] * freqs[None].astype(x.dtype)
  return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=1)


class FourierEmbedding(nnx.Module):
  """EDM's FourierEmbedding (NCSN++): [cos(2 pi x f_i), sin(2 pi x f_i)], fixed f_i ~ N(0, scale^2).

  The frequencies are a buffer in the reference: an `nnx.Variable` here, not counted as parameters.
  """

  def __init__(self, num_channels, scale=16.0, *, rngs):
    self.freqs = nnx.Variable(jax.random.normal(rngs.params(), (num_channels // 2,), jnp.float32) * scale)

  def __call__(self, x):
    args = x[:, None] * (2 * np.pi * self.freqs[...]).astype(x.dtype)[None]
    return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=1)


def _swap_halves(emb):
  """The reference's reshape(N, 2, -1).flip(1): [cos, sin] -> [sin, cos]."""
  half = emb.shape[1] // 2
  return jnp.concatenate([emb[:, half:], emb[:, :half]], axis=1)


def class_vector(cond, label_dim, batch, dtype=jnp.float32):
  """The reference's class-label vectors from `cond`.

  Args:
    cond: None (all zeros, i.e. the null label), integer labels of shape (B,) or () (one-hot; the
      null label `label_dim` gives the zero vector), or float vectors (B, label_dim).
    label_dim: number of classes.
    batch: B.
    dtype: output dtype.

  Returns:
    (B, label_dim) label vectors.
  """
  if cond is None:
    return jnp.zeros((batch, label_dim), dtype)
  cond = jnp.asarray(cond)
  if jnp.issubdtype(cond.dtype, jnp.integer):
    return jax.nn.one_hot(jnp.broadcast_to(cond, (batch,)), label_dim, dtype=dtype)
  if cond.shape[-1:] != (label_dim,):
    raise ValueError(f"cond must be integer labels or vectors of size label_dim={label_dim}, got shape {cond.shape}")
  return jnp.broadcast_to(cond.astype(dtype), (batch, label_dim))


def _check_x(name, x, resolution, channels):
  if x.ndim != 4 or x.shape[1:] != (resolution, resolution, channels):
    raise ValueError(f"{name} expects x of shape (batch, {resolution}, {resolution}, {channels}), got {x.shape}")


def _check_config(name, img_resolution, channel_mult):
  if not channel_mult:
    raise ValueError(f"{name}: channel_mult must be non-empty")
  factor = 2**(len(channel_mult) - 1)
  if img_resolution % factor:
    raise ValueError(f"{name}: img_resolution must be divisible by 2^(len(channel_mult) - 1) = {factor}, "
                     f"got {img_resolution}")


def _label_dim(name, label_dim, num_classes):
  if num_classes is not None and label_dim and num_classes != label_dim:
    raise ValueError(f"{name}: num_classes ({num_classes}) and label_dim ({label_dim}) disagree; give one")
  return num_classes if num_classes is not None else label_dim


# --------------------------------------------------------------------------------------------
# SongUNet (DDPM++ / NCSN++)
# --------------------------------------------------------------------------------------------
EMBEDDING_TYPES = ("positional", "fourier")
ENCODER_TYPES = ("standard", "skip", "residual")
DECODER_TYPES = ("standard", "skip")


class SongUNet(nnx.Module):
  """`SongUNet(x, c_noise, cond=None, augment_labels=None)`: EDM's DDPM++ / NCSN++ on NHWC images.

  Mapping: noise features ([sin, cos] order) + map_label(labels sqrt(label_dim)) +
  map_augment(augment_labels), then emb = SiLU(map_layer1(SiLU(map_layer0(.)))), 4 mc wide.
  Encoder: conv3x3 to mc, then per level a down-sampling block (levels > 0) and `num_blocks` blocks
  of mc * mult channels (attention at `attn_resolutions`); `encoder_type` "residual" (NCSN++) adds
  a fused FIR-down 3x3 conv path of the input merged as (x + aux) / sqrt 2, "skip" a 1x1 conv of
  the FIR-down-sampled input. Decoder: at the lowest resolution in0 (attention) and in1, elsewhere
  an up-sampling block, then num_blocks + 1 blocks on [x, skip] (attention on the last one at
  `attn_resolutions`); output GN - SiLU - conv3x3 ("skip" decoder: at every level, summed with FIR
  up-sampling).

  Args:
    in_channels: image channels.
    img_resolution: H = W of the input.
    out_channels: output channels (default in_channels).
    label_dim: number of classes (0: unconditional).
    augment_dim: augmentation-label size (9 for EDM's augment pipe; 0: none).
    model_channels: base channel count mc.
    channel_mult: per-level multipliers of mc.
    channel_mult_emb: embedding width / mc.
    num_blocks: blocks per level.
    attn_resolutions: resolutions with self-attention.
    dropout: dropout probability (active in `model.train()` mode).
    embedding_type: "positional" (DDPM++) or "fourier" (NCSN++).
    channel_mult_noise: noise-feature width / mc (1 for DDPM++, 2 for NCSN++).
    encoder_type: "standard" (DDPM++), "skip" or "residual" (NCSN++).
    decoder_type: "standard" (both) or "skip".
    resample_filter: FIR filter, (1, 1) for DDPM++, (1, 3, 3, 1) for NCSN++.
    num_classes: alias of label_dim (the registry's conditional-model option).
    rngs: `nnx.Rngs`.
  """

  def __init__(self, in_channels=3, *, img_resolution=32, out_channels=None, label_dim=0, augment_dim=0,
               model_channels=128, channel_mult=(1, 2, 2, 2), channel_mult_emb=4, num_blocks=4,
               attn_resolutions=(16,), dropout=0.10, embedding_type="positional", channel_mult_noise=1,
               encoder_type="standard", decoder_type="standard", resample_filter=(1, 1), num_classes=None, rngs):
    if embedding_type not in EMBEDDING_TYPES:
      raise ValueError(f"embedding_type must be one of {EMBEDDING_TYPES}, got {embedding_type!r}")
    if encoder_type not in ENCODER_TYPES:
      raise ValueError(f"encoder_type must be one of {ENCODER_TYPES}, got {encoder_type!r}")
    if decoder_type not in DECODER_TYPES:
      raise ValueError(f"decoder_type must be one of {DECODER_TYPES}, got {decoder_type!r}")
    _check_config("SongUNet", img_resolution, channel_mult)
    label_dim = _label_dim("SongUNet", label_dim, num_classes)
    out_channels = out_channels or in_channels
    self.in_channels, self.out_channels, self.img_resolution = in_channels, out_channels, img_resolution
    self.label_dim, self.augment_dim = label_dim, augment_dim
    emb_channels = model_channels * channel_mult_emb
    self.noise_channels = noise_channels = model_channels * channel_mult_noise
    block_kwargs = dict(emb_channels=emb_channels, num_heads=1, dropout=dropout, skip_scale=math.sqrt(0.5), eps=1e-6,
                        resample_filter=resample_filter, resample_proj=True, adaptive_scale=False, init=SONG_INIT,
                        init_zero=SONG_INIT_ZERO, init_attn=SONG_INIT_ATTN, rngs=rngs)

    # Mapping.
    self.map_noise = FourierEmbedding(noise_channels, rngs=rngs) if embedding_type == "fourier" else None
    self.map_label = Linear(label_dim, noise_channels, init=SONG_INIT, rngs=rngs) if label_dim else None
    self.map_augment = Linear(augment_dim, noise_channels, bias=False, init=SONG_INIT,
                              rngs=rngs) if augment_dim else None
    self.map_layer0 = Linear(noise_channels, emb_channels, init=SONG_INIT, rngs=rngs)
    self.map_layer1 = Linear(emb_channels, emb_channels, init=SONG_INIT, rngs=rngs)

    # Encoder.
    enc = {}
    cout = caux = in_channels
    for level, mult in enumerate(channel_mult):
      res = img_resolution >> level
      if level == 0:
        cin, cout = cout, model_channels
        enc[f"{res}x{res}_conv"] = Conv2d(cin, cout, 3, init=SONG_INIT, rngs=rngs)
      else:
        enc[f"{res}x{res}_down"] = UNetBlock(cout, cout, down=True, **block_kwargs)
        if encoder_type == "skip":
          enc[f"{res}x{res}_aux_down"] = Conv2d(caux, caux, 0, down=True, resample_filter=resample_filter, rngs=rngs)
          enc[f"{res}x{res}_aux_skip"] = Conv2d(caux, cout, 1, init=SONG_INIT, rngs=rngs)
        if encoder_type == "residual":
          enc[f"{res}x{res}_aux_residual"] = Conv2d(caux, cout, 3, down=True, resample_filter=resample_filter,
                                                    fused_resample=True, init=SONG_INIT, rngs=rngs)
          caux = cout
      for idx in range(num_blocks):
        cin, cout = cout, model_channels * mult
        enc[f"{res}x{res}_block{idx}"] = UNetBlock(cin, cout, attention=res in attn_resolutions, **block_kwargs)
    skips = [m.out_channels for name, m in enc.items() if "aux" not in name]

    # Decoder.
    dec = {}
    for level, mult in reversed(list(enumerate(channel_mult))):
      res = img_resolution >> level
      if level == len(channel_mult) - 1:
        dec[f"{res}x{res}_in0"] = UNetBlock(cout, cout, attention=True, **block_kwargs)
        dec[f"{res}x{res}_in1"] = UNetBlock(cout, cout, **block_kwargs)
      else:
        dec[f"{res}x{res}_up"] = UNetBlock(cout, cout, up=True, **block_kwargs)
      for idx in range(num_blocks + 1):
        cin, cout = cout + skips.pop(), model_channels * mult
        attn = idx == num_blocks and res in attn_resolutions
        dec[f"{res}x{res}_block{idx}"] = UNetBlock(cin, cout, attention=attn, **block_kwargs)
      if decoder_type == "skip" or level == 0:
        if decoder_type == "skip" and level < len(channel_mult) - 1:
          dec[f"{res}x{res}_aux_up"] = Conv2d(out_channels, out_channels, 0, up=True, resample_filter=resample_filter,
                                              rngs=rngs)
        dec[f"{res}x{res}_aux_norm"] = group_norm(cout, 1e-6, rngs)
        dec[f"{res}x{res}_aux_conv"] = Conv2d(cout, out_channels, 3, init=SONG_INIT_ZERO, rngs=rngs)
    # nnx.Dict does not keep insertion order through split/merge: the order is kept separately
    self.enc_order, self.dec_order = tuple(enc), tuple(dec)
    self.enc, self.dec = nnx.Dict(enc), nnx.Dict(dec)

  def _noise_features(self, c_noise):
    if self.map_noise is None:
      emb = positional_embedding(c_noise, self.noise_channels, endpoint=True)
    else:
      emb = self.map_noise(c_noise)
    return _swap_halves(emb)

  def __call__(self, x, c_noise, cond=None, augment_labels=None):
    """F(x; c_noise, labels).

    Args:
      x: (B, H, W, in_channels) network input (c_in-scaled by the preconditioning).
      c_noise: per-example noise labels (B,) (or a scalar, broadcast).
      cond: class labels (see `class_vector`); None = the null label. Only with label_dim > 0.
      augment_labels: (B, augment_dim) augmentation labels, or None (the reference then skips
        map_augment, the same as zeros).

    Returns:
      (B, H, W, out_channels).
    """
    _check_x("SongUNet", x, self.img_resolution, self.in_channels)
    batch = x.shape[0]
    c_noise = jnp.broadcast_to(jnp.asarray(c_noise, jnp.float32), (batch,))
    emb = self._noise_features(c_noise)
    if self.map_label is not None:
      emb = emb + self.map_label(class_vector(cond, self.label_dim, batch, emb.dtype) * math.sqrt(self.label_dim))
    elif cond is not None:
      raise ValueError("cond was given to a SongUNet built with label_dim=0 (unconditional)")
    if augment_labels is not None:
      if self.map_augment is None:
        raise ValueError("augment_labels were given to a SongUNet built with augment_dim=0")
      emb = emb + self.map_augment(jnp.asarray(augment_labels, emb.dtype))
    emb = nnx.silu(self.map_layer1(nnx.silu(self.map_layer0(emb))))

    skips, aux = [], x
    for name in self.enc_order:
      block = self.enc[name]
      if "aux_down" in name:
        aux = block(aux)
      elif "aux_skip" in name:
        x = skips[-1] = x + block(aux)
      elif "aux_residual" in name:
        x = skips[-1] = aux = (x + block(aux)) / math.sqrt(2)
      else:
        x = block(x, emb) if isinstance(block, UNetBlock) else block(x)
        skips.append(x)

    aux = tmp = None
    for name in self.dec_order:
      block = self.dec[name]
      if "aux_up" in name:
        aux = block(aux)
      elif "aux_norm" in name:
        tmp = block(x)
      elif "aux_conv" in name:
        tmp = block(nnx.silu(tmp))
        aux = tmp if aux is None else tmp + aux
      else:
        if x.shape[-1] != block.in_channels:
          x = jnp.concatenate([x, skips.pop()], axis=-1)
        x = block(x, emb)
    return aux


# --------------------------------------------------------------------------------------------
# DhariwalUNet (ADM)
# --------------------------------------------------------------------------------------------
class DhariwalUNet(nnx.Module):
  """`DhariwalUNet(x, c_noise, cond=None, augment_labels=None)`: EDM's ADM on NHWC images.

  Mapping: emb = SiLU(map_layer1(SiLU(map_layer0(pos(c_noise) + map_augment(aug)))) + map_label(labels))
  with [cos, sin] positional features (endpoint=False) of width mc and a bias-free label map
  (weights ~ N(0, 1)). Encoder: conv3x3 to mc * mult[0], per level a down-sampling block (levels
  > 0) and `num_blocks` blocks; decoder: in0 (attention) / in1 at the lowest resolution, else an
  up-sampling block, then num_blocks + 1 blocks on [x, skip]; every block at `attn_resolutions`
  attends with C // 64 heads. Output GN - SiLU - conv3x3, zero-initialised (output exactly 0).

  Args:
    in_channels: image channels.
    img_resolution: H = W of the input.
    out_channels: output channels (default in_channels; iDDPM's learned variance uses 2 x).
    label_dim: number of classes (0: unconditional); 1000 for ImageNet.
    augment_dim: augmentation-label size (0: none).
    model_channels, channel_mult, channel_mult_emb, num_blocks, attn_resolutions, dropout: as
      SongUNet (defaults: EDM's ImageNet-64 config).
    num_classes: alias of label_dim.
    rngs: `nnx.Rngs`.
  """

  def __init__(self, in_channels=3, *, img_resolution=64, out_channels=None, label_dim=0, augment_dim=0,
               model_channels=192, channel_mult=(1, 2, 3, 4), channel_mult_emb=4, num_blocks=3,
               attn_resolutions=(32, 16, 8), dropout=0.10, num_classes=None, rngs):
    _check_config("DhariwalUNet", img_resolution, channel_mult)
    label_dim = _label_dim("DhariwalUNet", label_dim, num_classes)
    out_channels = out_channels or in_channels
    self.in_channels, self.out_channels, self.img_resolution = in_channels, out_channels, img_resolution
    self.label_dim, self.augment_dim, self.model_channels = label_dim, augment_dim, model_channels
    emb_channels = model_channels * channel_mult_emb
    block_kwargs = dict(emb_channels=emb_channels, channels_per_head=64, dropout=dropout, init=ADM_INIT,
                        init_zero=ADM_INIT_ZERO, rngs=rngs)

    # Mapping.
    self.map_augment = Linear(augment_dim, model_channels, bias=False, init=ADM_INIT_ZERO,
                              rngs=rngs) if augment_dim else None
    self.map_layer0 = Linear(model_channels, emb_channels, init=ADM_INIT, rngs=rngs)
    self.map_layer1 = Linear(emb_channels, emb_channels, init=ADM_INIT, rngs=rngs)
    self.map_label = Linear(label_dim, emb_channels, bias=False, init=Init("kaiming_normal", math.sqrt(label_dim)),
                            rngs=rngs) if label_dim else None

    # Encoder.
    enc = {}
    cout = in_channels
    for level, mult in enumerate(channel_mult):
      res = img_resolution >> level
      if level == 0:
        cin, cout = cout, model_channels * mult
        enc[f"{res}x{res}_conv"] = Conv2d(cin, cout, 3, init=ADM_INIT, rngs=rngs)
      else:
        enc[f"{res}x{res}_down"] = UNetBlock(cout, cout, down=True, **block_kwargs)
      for idx in range(num_blocks):
        cin, cout = cout, model_channels * mult
        enc[f"{res}x{res}_block{idx}"] = UNetBlock(cin, cout, attention=res in attn_resolutions, **block_kwargs)
    skips = [m.out_channels for m in enc.values()]

    # Decoder.
    dec = {}
    for level, mult in reversed(list(enumerate(channel_mult))):
      res = img_resolution >> level
      if level == len(channel_mult) - 1:
        dec[f"{res}x{res}_in0"] = UNetBlock(cout, cout, attention=True, **block_kwargs)
        dec[f"{res}x{res}_in1"] = UNetBlock(cout, cout, **block_kwargs)
      else:
        dec[f"{res}x{res}_up"] = UNetBlock(cout, cout, up=True, **block_kwargs)
      for idx in range(num_blocks + 1):
        cin, cout = cout + skips.pop(), model_channels * mult
        dec[f"{res}x{res}_block{idx}"] = UNetBlock(cin, cout, attention=res in attn_resolutions, **block_kwargs)
    self.enc_order, self.dec_order = tuple(enc), tuple(dec)
    self.enc, self.dec = nnx.Dict(enc), nnx.Dict(dec)
    self.out_norm = group_norm(cout, 1e-5, rngs)
    self.out_conv = Conv2d(cout, out_channels, 3, init=ADM_INIT_ZERO, rngs=rngs)

  def __call__(self, x, c_noise, cond=None, augment_labels=None):
    """F(x; c_noise, labels); arguments as `SongUNet.__call__`."""
    _check_x("DhariwalUNet", x, self.img_resolution, self.in_channels)
    batch = x.shape[0]
    c_noise = jnp.broadcast_to(jnp.asarray(c_noise, jnp.float32), (batch,))
    emb = positional_embedding(c_noise, self.model_channels)
    if augment_labels is not None:
      if self.map_augment is None:
        raise ValueError("augment_labels were given to a DhariwalUNet built with augment_dim=0")
      emb = emb + self.map_augment(jnp.asarray(augment_labels, emb.dtype))
    emb = self.map_layer1(nnx.silu(self.map_layer0(emb)))
    if self.map_label is not None:
      emb = emb + self.map_label(class_vector(cond, self.label_dim, batch, emb.dtype))
    elif cond is not None:
      raise ValueError("cond was given to a DhariwalUNet built with label_dim=0 (unconditional)")
    emb = nnx.silu(emb)

    skips = []
    for name in self.enc_order:
      block = self.enc[name]
      x = block(x, emb) if isinstance(block, UNetBlock) else block(x)
      skips.append(x)
    for name in self.dec_order:
      block = self.dec[name]
      if x.shape[-1] != block.in_channels:
        x = jnp.concatenate([x, skips.pop()], axis=-1)
      x = block(x, emb)
    return self.out_conv(nnx.silu(self.out_norm(x)))


# --------------------------------------------------------------------------------------------
# Named configurations
# --------------------------------------------------------------------------------------------
# EDM train.py `--arch=ddpmpp` / `--arch=ncsnpp` on CIFAR-10 (defaults --dropout=0.13, --augment=0.12,
# hence augment_dim=9); 55,733,891 / 56,397,827 parameters unconditional (label_dim=0).
EDM_CIFAR10 = {
    "ddpmpp": dict(model_channels=128, channel_mult=(2, 2, 2), num_blocks=4, attn_resolutions=(16,), dropout=0.13,
                   embedding_type="positional", channel_mult_noise=1, encoder_type="standard",
                   resample_filter=(1, 1), augment_dim=9),
    "ncsnpp": dict(model_channels=128, channel_mult=(2, 2, 2), num_blocks=4, attn_resolutions=(16,), dropout=0.13,
                   embedding_type="fourier", channel_mult_noise=2, encoder_type="residual",
                   resample_filter=(1, 3, 3, 1), augment_dim=9),
}
# EDM's FFHQ-64 / AFHQv2-64 `--arch=ddpmpp --cres=1,2,2,2 --dropout=0.05 --augment=0.15` (61,805,571
# parameters; PFGM++'s FFHQ-64 runs use it too).
EDM_FFHQ64 = {**EDM_CIFAR10["ddpmpp"], "img_resolution": 64, "channel_mult": (1, 2, 2, 2), "dropout": 0.05}
# EDM's ImageNet-64 `--arch=adm --cond=1 --dropout=0.10 --augment=0` (DhariwalUNet defaults otherwise;
# 295,899,267 parameters).
ADM_IMAGENET64 = dict(img_resolution=64, label_dim=1000)
_TINY_SONG = dict(img_resolution=8, model_channels=16, channel_mult=(1, 2), num_blocks=1, attn_resolutions=(4,),
                  dropout=0.0, augment_dim=0)

# name -> (constructor, defaults), for `register_models`.
MODELS = {
    "ddpmpp_cifar10": (SongUNet, EDM_CIFAR10["ddpmpp"]),
    "ncsnpp_cifar10": (SongUNet, EDM_CIFAR10["ncsnpp"]),
    "ddpmpp_cifar10_cond": (SongUNet, {**EDM_CIFAR10["ddpmpp"], "label_dim": 10}),
    "ncsnpp_cifar10_cond": (SongUNet, {**EDM_CIFAR10["ncsnpp"], "label_dim": 10}),
    "ddpmpp_ffhq64": (SongUNet, EDM_FFHQ64),
    "adm_imagenet64": (DhariwalUNet, ADM_IMAGENET64),
    # 8x8 CPU-sized networks (pass num_classes=... for class-conditional ones)
    "ddpmpp_tiny": (SongUNet, {**EDM_CIFAR10["ddpmpp"], **_TINY_SONG}),
    "ncsnpp_tiny": (SongUNet, {**EDM_CIFAR10["ncsnpp"], **_TINY_SONG}),
    "adm_tiny": (DhariwalUNet, dict(img_resolution=8, model_channels=32, channel_mult=(1, 2), num_blocks=1,
                                    attn_resolutions=(4,), dropout=0.0)),
}


def effective_config(constructor, defaults):
  """The constructor's keyword defaults updated with `defaults` (to compare registrations)."""
  params = inspect.signature(constructor.__init__).parameters
  base = {n: p.default for n, p in params.items() if p.default is not inspect.Parameter.empty}
  return {**base, **defaults}


def register_models():
  """Registers the `MODELS` names that are not registered yet (idempotent).

  Returns:
    The names registered by this call.
  """
  added = []
  for name, (constructor, defaults) in MODELS.items():
    if name not in registry.list_models():
      registry.register(name, constructor, **defaults)
      added.append(name)
  return added
