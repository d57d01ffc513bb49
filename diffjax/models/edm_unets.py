"""EDM's SongUNet: the DDPM++ and NCSN++ networks of Song et al. (2021) as reimplemented by Karras
et al. (2022, "Elucidating the Design Space of Diffusion-Based Generative Models", `NVlabs/edm`
`training/networks.py`), in Flax NNX on NHWC images. The raw network F(x, c_noise, labels) that
`diffjax.parametrization.edm_denoiser` preconditions.

UNetBlock (additive embedding, `adaptive_scale=False`):
  h = conv3x3(SiLU(GN(x)))  [with FIR up/down-sampling]
  h = conv3x3(dropout(SiLU(GN(h + Linear(emb)))))          (second conv "zero"-initialised)
  x = (h + skip(x)) sqrt(1/2);  optional attention: x = (proj(attn(GN(x))) + x) sqrt(1/2)

Mapping: [sin, cos] positional (DDPM++, endpoint frequencies) or Gaussian Fourier (NCSN++, scale 16)
features of c_noise, plus Linear(one-hot * sqrt(label_dim)) labels and bias-free augment labels,
then SiLU(Linear(SiLU(Linear(.)))) to 4 x model_channels. Encoder levels with down-sampling blocks
(NCSN++ adds a residual FIR down-sampling path scaled by 1/sqrt 2), decoder with skip concatenation
and up-sampling blocks, output GN - SiLU - conv3x3.

Initialisation as the reference: xavier-uniform weights, zero biases; the "zero" layers (second
conv of each block, attention projection, output conv) are xavier * 1e-5 (so the output is ~1e-5,
not exactly 0, at init) and the qkv convs xavier * sqrt(0.2). Group norms have min(32, C // 4)
groups and eps 1e-6. Class labels are integers; the null label `label_dim` (classifier-free
guidance) maps to the zero one-hot vector, as EDM's label dropout does.

`DhariwalUNet` is EDM's ADM (ImageNet-64 config: 295,899,267 parameters, class-conditional). Not
implemented: the `skip` encoder/decoder types of SongUNet.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


def _scaled_xavier(gain):
  base = nnx.initializers.xavier_uniform()
  return lambda key, shape, dtype=jnp.float32: base(key, shape, dtype) * gain


_INIT, _INIT_ZERO, _INIT_ATTN = _scaled_xavier(1.0), _scaled_xavier(1e-5), _scaled_xavier(math.sqrt(0.2))


def _conv(cin, cout, k, rngs, init=_INIT, bias=True):
  return nnx.Conv(cin, cout, (k, k), padding="SAME", kernel_init=init, bias_init=nnx.initializers.zeros,
                  use_bias=bias, rngs=rngs)


def _linear(cin, cout, rngs, bias=True):
  return nnx.Linear(cin, cout, kernel_init=_INIT, bias_init=nnx.initializers.zeros, use_bias=bias, rngs=rngs)


def _group_norm(c, rngs):
  return nnx.GroupNorm(c, num_groups=min(32, c // 4), epsilon=1e-6, rngs=rngs)


def _fir(resample_filter):
  f = np.asarray(resample_filter, np.float32)
  f2 = np.outer(f, f) / f.sum()**2
  return f2, (len(f) - 1) // 2


def fir_downsample(x, resample_filter=(1, 1)):
  """EDM's down-sampling: depthwise conv with f f^T / (sum f)^2, stride 2, padding (len(f) - 1) // 2."""
  f2, pad = _fir(resample_filter)
  c = x.shape[-1]
  kernel = jnp.asarray(np.tile(f2[:, :, None, None], (1, 1, 1, c)), x.dtype)
  return jax.lax.conv_general_dilated(x, kernel, (2, 2), ((pad, pad), (pad, pad)), feature_group_count=c,
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def fir_upsample(x, resample_filter=(1, 1)):
  """EDM's up-sampling: the stride-2 transposed depthwise conv with 4 f f^T / (sum f)^2 (with (1, 1),
  nearest-neighbour up-sampling)."""
  f2, pad = _fir(resample_filter)
  c, k = x.shape[-1], f2.shape[0]
  kernel = jnp.asarray(np.tile(4 * f2[::-1, ::-1, None, None], (1, 1, 1, c)), x.dtype)
  p = k - 1 - pad
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), ((p, p), (p, p)), lhs_dilation=(2, 2),
                                      feature_group_count=c, dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _kaiming_torch_default():
  """PyTorch's default layer init, EDM's ADM `init`: kaiming-uniform x sqrt(1/3) = U(+-1/sqrt(fan_in))."""
  base = nnx.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
  return lambda key, shape, dtype=jnp.float32: base(key, shape, dtype) * math.sqrt(3.0)


def _uniform_bias(fan_in):
  bound = 1.0 / math.sqrt(fan_in)
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


class _Style:
  """Per-architecture settings of EDM's UNetBlock: SongUNet (DDPM++/NCSN++) or Dhariwal (ADM)."""

  def __init__(self, adm):
    self.adm = adm
    self.eps = 1e-5 if adm else 1e-6
    self.skip_scale = 1.0 if adm else math.sqrt(0.5)

  def conv(self, cin, cout, k, rngs, kind="init"):
    if not self.adm:
      init = {"init": _INIT, "zero": _INIT_ZERO, "attn": _INIT_ATTN}[kind]
      return _conv(cin, cout, k, rngs, init=init)
    if kind == "zero":
      return nnx.Conv(cin, cout, (k, k), padding="SAME", kernel_init=nnx.initializers.zeros,
                      bias_init=nnx.initializers.zeros, rngs=rngs)
    return nnx.Conv(cin, cout, (k, k), padding="SAME", kernel_init=_kaiming_torch_default(),
                    bias_init=_uniform_bias(cin * k * k), rngs=rngs)

  def linear(self, cin, cout, rngs, bias=True):
    if not self.adm:
      return _linear(cin, cout, rngs, bias=bias)
    return nnx.Linear(cin, cout, kernel_init=_kaiming_torch_default(), bias_init=_uniform_bias(cin), use_bias=bias,
                      rngs=rngs)

  def norm(self, c, rngs):
    return nnx.GroupNorm(c, num_groups=min(32, c // 4), epsilon=self.eps, rngs=rngs)


class UNetBlock(nnx.Module):
  """EDM's UNetBlock. SongUNet style: additive embedding, skip scale sqrt(1/2), 1x1 skip on every
  resampling block, one attention head. ADM style (`adm=True`): adaptive scale/shift, skip scale 1,
  plain resampling skips, C // 64 heads (levels under 64 channels get none)."""

  def __init__(self, cin, cout, emb_channels, *, up=False, down=False, attention=False, dropout=0.0,
               resample_filter=(1, 1), adm=False, rngs):
    st = _Style(adm)
    self.up, self.down, self.resample_filter = up, down, tuple(resample_filter)
    self.adm, self.skip_scale = adm, st.skip_scale
    self.out_features = cout
    self.norm0 = st.norm(cin, rngs)
    self.conv0 = st.conv(cin, cout, 3, rngs)
    self.affine = st.linear(emb_channels, cout * (2 if adm else 1), rngs)
    self.norm1 = st.norm(cout, rngs)
    self.dropout = nnx.Dropout(dropout, rngs=rngs)
    self.conv1 = st.conv(cout, cout, 3, rngs, "zero")
    # SongUNet (resample_proj=True): a 1x1 skip conv whenever channels change or the block resamples;
    # ADM: only when channels change (otherwise the skip is the plain resampling)
    needs_conv = cin != cout or ((up or down) and not adm)
    self.skip = st.conv(cin, cout, 1, rngs) if needs_conv else None
    self.num_heads = (cout // 64 if adm else 1) if attention else 0
    if self.num_heads:
      self.norm2 = st.norm(cout, rngs)
      self.qkv = st.conv(cout, 3 * cout, 1, rngs, "init" if adm else "attn")
      self.proj = st.conv(cout, cout, 1, rngs, "zero")

  def _resample(self, x):
    if self.up:
      return fir_upsample(x, self.resample_filter)
    if self.down:
      return fir_downsample(x, self.resample_filter)
    return x

  def __call__(self, x, emb):
    orig = x
    h = self.conv0(self._resample(nnx.silu(self.norm0(x))))
    params = self.affine(emb)[:, None, None]
    if self.adm:
      scale, shift = jnp.split(params, 2, axis=-1)
      h = nnx.silu(shift + self.norm1(h) * (scale + 1))
    else:
      h = nnx.silu(self.norm1(h + params))
    h = self.conv1(self.dropout(h))
    skip = self._resample(orig)
    if self.skip is not None:
      skip = self.skip(skip)
    x = (h + skip) * self.skip_scale
    if self.num_heads:
      b, hh, ww, c = x.shape
      nh = self.num_heads
      # channel layout of the reference's reshape(N * heads, C / heads, 3, HW)
      qkv = self.qkv(self.norm2(x)).reshape(b, hh * ww, nh, c // nh, 3)
      q, k, v = qkv[..., 0], qkv[..., 1], qkv[..., 2]
      w = jax.nn.softmax(jnp.einsum("bqhc,bkhc->bhqk", q, k / math.sqrt(c // nh)), axis=-1)
      a = jnp.einsum("bhqk,bkhc->bqhc", w, v).reshape(b, hh, ww, c)
      x = (self.proj(a) + x) * self.skip_scale
    return x


class SongUNet(nnx.Module):
  """`SongUNet(x, c_noise, cond=None)`: EDM's DDPM++ / NCSN++ F network on NHWC images.

  Args:
    in_channels: image channels (out channels are the same).
    img_resolution: H = W.
    label_dim: number of classes (0: unconditional); cond = integer labels, label_dim = null.
    augment_dim: augmentation-label size (9 with EDM's augment pipe; fed zeros when not given).
    model_channels, channel_mult, channel_mult_emb, num_blocks, attn_resolutions, dropout: as EDM.
    embedding_type: "positional" (DDPM++) or "fourier" (NCSN++); channel_mult_noise 1 or 2.
    encoder_type: "standard" (DDPM++) or "residual" (NCSN++).
    resample_filter: (1, 1) for DDPM++, (1, 3, 3, 1) for NCSN++.
    num_classes: alias of label_dim (the registry's conditional-model convention).
  """

  def __init__(self, in_channels=3, *, img_resolution=32, label_dim=0, augment_dim=0, model_channels=128,
               channel_mult=(2, 2, 2), channel_mult_emb=4, num_blocks=4, attn_resolutions=(16,), dropout=0.10,
               embedding_type="positional", channel_mult_noise=1, encoder_type="standard",
               resample_filter=(1, 1), num_classes=None, rngs):
    if embedding_type not in ("positional", "fourier"):
      raise ValueError(f"embedding_type must be 'positional' or 'fourier', got {embedding_type!r}")
    if encoder_type not in ("standard", "residual"):
      raise ValueError(f"encoder_type must be 'standard' or 'residual', got {encoder_type!r}")
    label_dim = num_classes or label_dim
    self.in_channels, self.img_resolution = in_channels, img_resolution
    self.label_dim, self.augment_dim = label_dim, augment_dim
    self.embedding_type, self.encoder_type = embedding_type, encoder_type
    emb_channels = model_channels * channel_mult_emb
    self.noise_channels = noise_channels = model_channels * channel_mult_noise
    if embedding_type == "fourier":
      self.fourier_freqs = nnx.Variable(jax.random.normal(rngs.params(), (noise_channels // 2,)) * 16.0)
    self.map_label = _linear(label_dim, noise_channels, rngs) if label_dim else None
    self.map_augment = _linear(augment_dim, noise_channels, rngs, bias=False) if augment_dim else None
    self.map_layer0 = _linear(noise_channels, emb_channels, rngs)
    self.map_layer1 = _linear(emb_channels, emb_channels, rngs)
    block = lambda cin, cout, **kw: UNetBlock(cin, cout, emb_channels, dropout=dropout,
                                              resample_filter=resample_filter, rngs=rngs, **kw)
    self.enc = nnx.List()
    self.enc_kind = []
    cout, caux = in_channels, in_channels
    for level, mult in enumerate(channel_mult):
      res = img_resolution >> level
      if level == 0:
        self.enc.append(_conv(cout, model_channels, 3, rngs))
        self.enc_kind.append("conv")
        cout = model_channels
      else:
        self.enc.append(block(cout, cout, down=True))
        self.enc_kind.append("block")
        if encoder_type == "residual":
          self.enc.append(_conv(caux, cout, 3, rngs))
          self.enc_kind.append("aux_residual")
          caux = cout
      for _ in range(num_blocks):
        cin, cout = cout, model_channels * mult
        self.enc.append(block(cin, cout, attention=res in attn_resolutions))
        self.enc_kind.append("block")
    skips = [m for m, kind in zip(self.enc, self.enc_kind) if kind != "aux_residual"]
    skip_channels = [m.out_features for m in skips]
    self.dec = nnx.List()
    self.dec_concat = []
    for level, mult in reversed(list(enumerate(channel_mult))):
      res = img_resolution >> level
      if level == len(channel_mult) - 1:
        self.dec.append(block(cout, cout, attention=True))
        self.dec.append(block(cout, cout))
        self.dec_concat += [False, False]
      else:
        self.dec.append(block(cout, cout, up=True))
        self.dec_concat.append(False)
      for idx in range(num_blocks + 1):
        cin = cout + skip_channels.pop()
        cout = model_channels * mult
        self.dec.append(block(cin, cout, attention=idx == num_blocks and res in attn_resolutions))
        self.dec_concat.append(True)
    self.out_norm = _group_norm(cout, rngs)
    self.out_conv = _conv(cout, in_channels, 3, rngs, init=_INIT_ZERO)
    self.resample_filter = tuple(resample_filter)

  def _noise_features(self, c_noise):
    if self.embedding_type == "positional":
      half = self.noise_channels // 2
      freqs = (1.0 / 10_000) ** (jnp.arange(half, dtype=jnp.float32) / (half - 1))  # endpoint=True
      args = c_noise[:, None] * freqs[None]
    else:
      args = c_noise[:, None] * (2 * math.pi * self.fourier_freqs[...])[None]
    return jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)  # the reference's swapped [cos, sin]

  def __call__(self, x, c_noise, cond=None, augment_labels=None):
    if x.ndim != 4 or x.shape[1:] != (self.img_resolution, self.img_resolution, self.in_channels):
      raise ValueError(f"SongUNet expects x of shape (batch, {self.img_resolution}, {self.img_resolution}, "
                       f"{self.in_channels}), got {x.shape}")
    c_noise = jnp.broadcast_to(jnp.asarray(c_noise, x.dtype), (x.shape[0],))
    emb = self._noise_features(c_noise)
    if self.map_label is not None:
      if cond is None:
        onehot = jnp.zeros((x.shape[0], self.label_dim), x.dtype)
      else:
        onehot = jax.nn.one_hot(cond, self.label_dim, dtype=x.dtype)  # label_dim (null) -> zeros
      emb = emb + self.map_label(onehot * math.sqrt(self.label_dim))
    elif cond is not None:
      raise ValueError("a class label was given to a SongUNet built without label_dim")
    if self.map_augment is not None:
      aug = jnp.zeros((x.shape[0], self.augment_dim), x.dtype) if augment_labels is None else augment_labels
      emb = emb + self.map_augment(aug)
    emb = nnx.silu(self.map_layer1(nnx.silu(self.map_layer0(emb))))
    skips, aux = [], x
    for module, kind in zip(self.enc, self.enc_kind):
      if kind == "aux_residual":
        aux = _residual_down(module, aux, self.resample_filter)
        x = skips[-1] = aux = (x + aux) / math.sqrt(2)
      else:
        x = module(x) if kind == "conv" else module(x, emb)
        skips.append(x)
    for module, concat in zip(self.dec, self.dec_concat):
      if concat:
        x = jnp.concatenate([x, skips.pop()], axis=-1)
      x = module(x, emb)
    return self.out_conv(nnx.silu(self.out_norm(x)))


def _residual_down(conv, x, resample_filter):
  """NCSN++'s fused `aux_residual`: conv3x3 with padding 1 + pad_f, then the FIR filter at stride 2
  without padding (EDM `Conv2d(..., down=True, fused_resample=True)`)."""
  f2, pad = _fir(resample_filter)
  w = conv.kernel[...]
  x = jax.lax.conv_general_dilated(x, w, (1, 1), ((1 + pad, 1 + pad),) * 2, dimension_numbers=("NHWC", "HWIO", "NHWC"))
  c = x.shape[-1]
  kernel = jnp.asarray(np.tile(f2[:, :, None, None], (1, 1, 1, c)), x.dtype)
  x = jax.lax.conv_general_dilated(x, kernel, (2, 2), ((0, 0), (0, 0)), feature_group_count=c,
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
  return x + conv.bias[...]


class DhariwalUNet(nnx.Module):
  """`DhariwalUNet(x, c_noise, cond=None)`: EDM's reimplementation of ADM (Dhariwal & Nichol 2021).

  Positional [cos, sin] noise features -> SiLU(Linear) -> Linear, + Linear(one-hot labels) (no bias),
  SiLU; encoder/decoder of ADM-style UNetBlocks (adaptive scale, C // 64 attention heads at
  `attn_resolutions`, every decoder block at those resolutions attends); GN - SiLU - conv3x3 output,
  exactly 0 at init (zero-initialised output conv). PyTorch-default init elsewhere.
  """

  def __init__(self, in_channels=3, *, img_resolution=64, label_dim=0, augment_dim=0, model_channels=192,
               channel_mult=(1, 2, 3, 4), channel_mult_emb=4, num_blocks=3, attn_resolutions=(32, 16, 8),
               dropout=0.10, num_classes=None, rngs):
    label_dim = num_classes or label_dim
    st = _Style(True)
    self.in_channels, self.img_resolution = in_channels, img_resolution
    self.label_dim, self.model_channels, self.augment_dim = label_dim, model_channels, augment_dim
    emb_channels = model_channels * channel_mult_emb
    self.map_augment = (nnx.Linear(augment_dim, model_channels, use_bias=False, kernel_init=nnx.initializers.zeros,
                                   rngs=rngs) if augment_dim else None)
    self.map_layer0 = st.linear(model_channels, emb_channels, rngs)
    self.map_layer1 = st.linear(emb_channels, emb_channels, rngs)
    self.map_label = (nnx.Linear(label_dim, emb_channels, use_bias=False,
                                 kernel_init=nnx.initializers.variance_scaling(float(label_dim), "fan_in", "normal"),
                                 rngs=rngs) if label_dim else None)
    block = lambda cin, cout, **kw: UNetBlock(cin, cout, emb_channels, dropout=dropout, adm=True, rngs=rngs, **kw)
    self.enc = nnx.List()
    self.enc_is_conv = []
    cout = in_channels
    for level, mult in enumerate(channel_mult):
      res = img_resolution >> level
      if level == 0:
        self.enc.append(st.conv(cout, model_channels * mult, 3, rngs))
        self.enc_is_conv.append(True)
        cout = model_channels * mult
      else:
        self.enc.append(block(cout, cout, down=True))
        self.enc_is_conv.append(False)
      for _ in range(num_blocks):
        cin, cout = cout, model_channels * mult
        self.enc.append(block(cin, cout, attention=res in attn_resolutions))
        self.enc_is_conv.append(False)
    skip_channels = [m.out_features for m in self.enc]
    self.dec = nnx.List()
    self.dec_concat = []
    for level, mult in reversed(list(enumerate(channel_mult))):
      res = img_resolution >> level
      if level == len(channel_mult) - 1:
        self.dec.append(block(cout, cout, attention=True))
        self.dec.append(block(cout, cout))
        self.dec_concat += [False, False]
      else:
        self.dec.append(block(cout, cout, up=True))
        self.dec_concat.append(False)
      for _ in range(num_blocks + 1):
        cin = cout + skip_channels.pop()
        cout = model_channels * mult
        self.dec.append(block(cin, cout, attention=res in attn_resolutions))
        self.dec_concat.append(True)
    self.out_norm = st.norm(cout, rngs)
    self.out_conv = st.conv(cout, in_channels, 3, rngs, "zero")

  def __call__(self, x, c_noise, cond=None, augment_labels=None):
    if x.ndim != 4 or x.shape[1:] != (self.img_resolution, self.img_resolution, self.in_channels):
      raise ValueError(f"DhariwalUNet expects x of shape (batch, {self.img_resolution}, {self.img_resolution}, "
                       f"{self.in_channels}), got {x.shape}")
    c_noise = jnp.broadcast_to(jnp.asarray(c_noise, x.dtype), (x.shape[0],))
    half = self.model_channels // 2
    freqs = (1.0 / 10_000) ** (jnp.arange(half, dtype=jnp.float32) / half)  # endpoint=False
    args = c_noise[:, None] * freqs[None]
    emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
    if self.map_augment is not None and augment_labels is not None:
      emb = emb + self.map_augment(augment_labels)
    emb = self.map_layer1(nnx.silu(self.map_layer0(emb)))
    if self.map_label is not None:
      onehot = (jnp.zeros((x.shape[0], self.label_dim), x.dtype) if cond is None
                else jax.nn.one_hot(cond, self.label_dim, dtype=x.dtype))
      emb = emb + self.map_label(onehot)
    elif cond is not None:
      raise ValueError("a class label was given to a DhariwalUNet built without label_dim")
    emb = nnx.silu(emb)
    skips = []
    for module, is_conv in zip(self.enc, self.enc_is_conv):
      x = module(x) if is_conv else module(x, emb)
      skips.append(x)
    for module, concat in zip(self.dec, self.dec_concat):
      if concat:
        x = jnp.concatenate([x, skips.pop()], axis=-1)
      x = module(x, emb)
    return self.out_conv(nnx.silu(self.out_norm(x)))


EDM_CIFAR10 = {
    "ddpmpp": dict(model_channels=128, channel_mult=(2, 2, 2), num_blocks=4, attn_resolutions=(16,), dropout=0.13,
                   embedding_type="positional", channel_mult_noise=1, encoder_type="standard",
                   resample_filter=(1, 1), augment_dim=9),
    "ncsnpp": dict(model_channels=128, channel_mult=(2, 2, 2), num_blocks=4, attn_resolutions=(16,), dropout=0.13,
                   embedding_type="fourier", channel_mult_noise=2, encoder_type="residual",
                   resample_filter=(1, 3, 3, 1), augment_dim=9),
}
