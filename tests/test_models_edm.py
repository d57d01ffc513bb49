"""EDM's SongUNet (DDPM++, NCSN++) and DhariwalUNet (ADM): exact parameter counts, reference
initialisation, zero output at init, labels, and the layers against direct formulas.

Parameter counts. `_song_count` / `_adm_count` below redo the arithmetic of the constructors of
`NVlabs/edm` `training/networks.py` (SongUNet / DhariwalUNet / UNetBlock / Conv2d / Linear /
GroupNorm), without building modules, for the configurations of EDM's `train.py`:
  --arch=ddpmpp (CIFAR-10, --augment=0.12 so augment_dim=9): 55,733,891 (label_dim=10: 55,735,299)
  --arch=ncsnpp (same):                                      56,397,827 (label_dim=10: 56,400,643)
  --arch=adm --cond=1 (ImageNet-64, --augment=0):            295,899,267
EDM reports about 55.7 M / 56.4 M / 295.9 M (Table 7, as recalled in the project notes
/work/shared/notes/architectures.md section 4.1). NCSN++'s Fourier frequencies are a buffer in
the reference and are not counted.

The numpy references (`_np_*`) follow PyTorch's NCHW semantics of the reference ops
(group_norm, conv2d, conv_transpose2d, the attention reshape) written out from their definitions.
"""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from diffjax.models import edm_unets, registry


# --------------------------------------------------------------------------------------------
# Parameter arithmetic of the reference constructors
# --------------------------------------------------------------------------------------------
def _lin(i, o, bias=True):
  return i * o + (o if bias else 0)


def _conv(i, o, k, bias=True):
  return i * o * k * k + (o if k and bias else 0)


def _block(cin, cout, emb, *, heads=0, resample=False, adaptive=False, resample_proj=False):
  n = 2 * cin + _conv(cin, cout, 3) + _lin(emb, cout * (2 if adaptive else 1)) + 2 * cout + _conv(cout, cout, 3)
  if cout != cin or resample:
    n += _conv(cin, cout, 1 if resample_proj or cout != cin else 0)
  if heads:
    n += 2 * cout + _conv(cout, 3 * cout, 1) + _conv(cout, cout, 1)
  return n


def _song_count(*, in_channels=3, img_resolution=32, label_dim=0, augment_dim=0, model_channels=128,
                channel_mult=(1, 2, 2, 2), num_blocks=4, attn_resolutions=(16,), channel_mult_noise=1,
                encoder_type="standard", decoder_type="standard", **_):
  mc, emb, out = model_channels, 4 * model_channels, in_channels
  noise = mc * channel_mult_noise
  blk = lambda cin, cout, attn=False, resample=False: _block(cin, cout, emb, heads=int(attn), resample=resample,
                                                             resample_proj=True)
  n = (_lin(label_dim, noise) if label_dim else 0) + (_lin(augment_dim, noise, False) if augment_dim else 0)
  n += _lin(noise, emb) + _lin(emb, emb)
  cout = caux = in_channels
  skips = []
  for level, mult in enumerate(channel_mult):
    res = img_resolution >> level
    if level == 0:
      n += _conv(cout, mc, 3)
      cout = mc
    else:
      n += blk(cout, cout, resample=True)
      if encoder_type == "skip":
        n += _conv(caux, cout, 1)
      if encoder_type == "residual":
        n += _conv(caux, cout, 3)
        caux = cout
    skips.append(cout)
    for _ in range(num_blocks):
      n += blk(cout, mc * mult, attn=res in attn_resolutions)
      cout = mc * mult
      skips.append(cout)
  for level, mult in reversed(list(enumerate(channel_mult))):
    res = img_resolution >> level
    if level == len(channel_mult) - 1:
      n += blk(cout, cout, attn=True) + blk(cout, cout)
    else:
      n += blk(cout, cout, resample=True)
    for idx in range(num_blocks + 1):
      n += blk(cout + skips.pop(), mc * mult, attn=idx == num_blocks and res in attn_resolutions)
      cout = mc * mult
    if decoder_type == "skip" or level == 0:
      n += 2 * cout + _conv(cout, out, 3)
  return n


def _adm_count(*, in_channels=3, img_resolution=64, label_dim=0, augment_dim=0, model_channels=192,
               channel_mult=(1, 2, 3, 4), num_blocks=3, attn_resolutions=(32, 16, 8), **_):
  mc, emb = model_channels, 4 * model_channels
  blk = lambda cin, cout, attn=False, resample=False: _block(cin, cout, emb, heads=cout // 64 if attn else 0,
                                                             resample=resample, adaptive=True)
  n = (_lin(augment_dim, mc, False) if augment_dim else 0) + _lin(mc, emb) + _lin(emb, emb)
  n += _lin(label_dim, emb, False) if label_dim else 0
  cout = in_channels
  skips = []
  for level, mult in enumerate(channel_mult):
    res = img_resolution >> level
    if level == 0:
      n += _conv(cout, mc * mult, 3)
      cout = mc * mult
    else:
      n += blk(cout, cout, resample=True)
    skips.append(cout)
    for _ in range(num_blocks):
      n += blk(cout, mc * mult, attn=res in attn_resolutions)
      cout = mc * mult
      skips.append(cout)
  for level, mult in reversed(list(enumerate(channel_mult))):
    res = img_resolution >> level
    if level == len(channel_mult) - 1:
      n += blk(cout, cout, attn=True) + blk(cout, cout)
    else:
      n += blk(cout, cout, resample=True)
    for _ in range(num_blocks + 1):
      n += blk(cout + skips.pop(), mc * mult, attn=res in attn_resolutions)
      cout = mc * mult
  return n + 2 * cout + _conv(cout, in_channels, 3)


def _count(name, **overrides):
  constructor, defaults = edm_unets.MODELS[name]
  config = {**defaults, **overrides}
  return (_song_count if constructor is edm_unets.SongUNet else _adm_count)(**config)


def _build(name, abstract=False, **overrides):
  constructor, defaults = edm_unets.MODELS[name]
  make = lambda: constructor(**{**defaults, **overrides}, rngs=nnx.Rngs(0))
  return nnx.eval_shape(make) if abstract else make()


@functools.lru_cache(maxsize=None)
def _abstract(name):
  return _build(name, abstract=True)


def _nparams(model):
  return registry.count_params(model)


# --------------------------------------------------------------------------------------------
# Full-size networks (abstract: nothing is allocated)
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,expected,published_m", [("ddpmpp_cifar10", 55_733_891, 55.7),
                                                       ("ddpmpp_cifar10_cond", 55_735_299, 55.7),
                                                       ("ncsnpp_cifar10", 56_397_827, 56.4),
                                                       ("ncsnpp_cifar10_cond", 56_400_643, 56.4),
                                                       ("ddpmpp_ffhq64", 61_805_571, 61.8),
                                                       ("adm_imagenet64", 295_899_267, 295.9)])
def test_full_size_parameter_counts(name, expected, published_m):
  assert _count(name) == expected
  assert abs(expected / 1e6 - published_m) < 0.05
  assert _nparams(_abstract(name)) == expected


def test_full_size_structure_follows_the_reference():
  ddpmpp = _abstract("ddpmpp_cifar10")
  level = lambda r, first: [first] + [f"{r}x{r}_block{i}" for i in range(4)]
  assert list(ddpmpp.enc_order) == level(32, "32x32_conv") + level(16, "16x16_down") + level(8, "8x8_down")
  assert ddpmpp.dec_order[:2] == ("8x8_in0", "8x8_in1") and ddpmpp.dec_order[-2:] == ("32x32_aux_norm",
                                                                                        "32x32_aux_conv")
  # attention: every encoder block at 16x16, only the last decoder block there, and in0
  assert [n for n in ddpmpp.enc_order if getattr(ddpmpp.enc[n], "num_heads", 0)] == level(16, "")[1:]
  assert [n for n in ddpmpp.dec_order if getattr(ddpmpp.dec[n], "num_heads", 0)] == ["8x8_in0", "16x16_block4"]
  assert ddpmpp.enc["16x16_down"].skip.kernel.shape == (1, 1, 256, 256)  # resample_proj: 1x1 conv skip
  ncsnpp = _abstract("ncsnpp_cifar10")
  assert "16x16_aux_residual" in ncsnpp.enc_order and "8x8_aux_residual" in ncsnpp.enc_order
  assert ncsnpp.map_noise.freqs.shape == (128,)  # 2 mc Fourier features, a buffer
  adm = _abstract("adm_imagenet64")
  assert adm.enc["64x64_block0"].num_heads == 0 and adm.enc["32x32_block0"].num_heads == 6
  assert adm.dec["8x8_in0"].num_heads == 12 and adm.dec["64x64_block3"].num_heads == 0
  assert adm.enc["32x32_down"].skip.kernel is None  # kernel 0: a plain FIR-resampling skip


# --------------------------------------------------------------------------------------------
# Tiny networks
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
  return {name: _build(name, in_channels=3, num_classes=10) for name in ("ddpmpp_tiny", "ncsnpp_tiny", "adm_tiny")}


@nnx.jit
def _label_variants(model, x, c_noise, labels):
  onehot = jax.nn.one_hot(labels, 10)
  return (model(x, c_noise, labels), model(x, c_noise), model(x, c_noise, jnp.full(labels.shape, 10)),
          model(x, c_noise, onehot), model(x, c_noise, labels.at[0].set(9)))


@pytest.mark.parametrize("name", ["ddpmpp_tiny", "ncsnpp_tiny", "adm_tiny"])
def test_tiny_forward_labels_and_zero_init(tiny, name):
  model = tiny[name]
  assert _nparams(model) == _count(name, label_dim=10)
  x = jax.random.normal(jax.random.PRNGKey(0), (3, 8, 8, 3))
  c_noise = jnp.array([-1.0, 0.0, 1.5])
  out, out_none, out_null, out_onehot, out_other = _label_variants(model, x, c_noise, jnp.array([0, 4, 7]))
  assert out.shape == x.shape and out.dtype == jnp.float32
  np.testing.assert_array_equal(out_none, out_null)  # cond=None is the null label (zero label vector)
  np.testing.assert_allclose(out_onehot, out, rtol=1e-6, atol=1e-12)  # float label vectors as the reference
  if name == "adm_tiny":
    assert float(jnp.max(jnp.abs(out))) == 0.0  # the reference zero-initialises out_conv (weight and bias)
    out_conv = model.out_conv
    assert not np.any(out_conv.kernel[...]) and not np.any(out_conv.bias[...])
  else:
    # SongUNet's "zero" layers are xavier x 1e-5: the output is ~1e-5, not exactly 0
    assert 0 < float(jnp.max(jnp.abs(out))) < 1e-3
    assert float(jnp.max(jnp.abs(out_other[0] - out[0]))) > 0  # the label reaches the output


def test_tiny_unconditional_and_errors(tiny):
  model = _build("ddpmpp_tiny")
  assert _nparams(model) == _count("ddpmpp_tiny") == _nparams(tiny["ddpmpp_tiny"]) - _lin(10, 16)
  x = jnp.ones((2, 8, 8, 3))
  with pytest.raises(ValueError, match="label_dim=0"):
    model(x, 0.5, jnp.array([1, 2]))
  with pytest.raises(ValueError, match="augment_dim=0"):
    model(x, 0.5, augment_labels=jnp.zeros((2, 9)))
  with pytest.raises(ValueError, match=r"expects x of shape \(batch, 8, 8, 3\)"):
    model(jnp.ones((2, 16, 16, 3)), 0.5)
  with pytest.raises(ValueError, match="vectors of size label_dim=10"):
    tiny["adm_tiny"](x, 0.5, jnp.ones((2, 3)))


@pytest.mark.parametrize("kwargs,match", [(dict(embedding_type="sinusoidal"), "embedding_type must be one of"),
                                          (dict(encoder_type="unet"), "encoder_type must be one of"),
                                          (dict(decoder_type="residual"), "decoder_type must be one of"),
                                          (dict(img_resolution=7), "img_resolution must be divisible by"),
                                          (dict(label_dim=10, num_classes=100), "num_classes .* and label_dim")])
def test_invalid_configurations(kwargs, match):
  with pytest.raises(ValueError, match=match):
    edm_unets.SongUNet(3, **{**edm_unets.MODELS["ddpmpp_tiny"][1], **kwargs}, rngs=nnx.Rngs(0))


def test_skip_encoder_decoder_and_augment_labels():
  kw = dict(encoder_type="skip", decoder_type="skip", augment_dim=9, label_dim=10)
  model = _build("ncsnpp_tiny", **kw)
  assert _nparams(model) == _count("ncsnpp_tiny", **kw)
  assert "8x8_aux_conv" in model.dec_order and "8x8_aux_up" in model.dec_order and "4x4_aux_skip" in model.enc_order
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8, 3))
  # a scalar c_noise broadcasts over the batch
  f = nnx.jit(lambda m, x, aug: (m(x, 0.0, jnp.array([1, 2])), m(x, jnp.zeros(2), jnp.array([1, 2]), aug)))
  out, out_aug = f(model, x, jnp.ones((2, 9)))
  assert out.shape == x.shape and float(jnp.max(jnp.abs(out_aug - out))) > 0


def test_dropout_only_in_train_mode():
  model = _build("ddpmpp_tiny", dropout=0.5)
  x = jax.random.normal(jax.random.PRNGKey(2), (2, 8, 8, 3))
  block = model.enc["8x8_block0"]
  emb = jax.random.normal(jax.random.PRNGKey(3), (2, 64))
  model.eval()
  np.testing.assert_array_equal(block(x @ jnp.ones((3, 16)), emb), block(x @ jnp.ones((3, 16)), emb))
  model.train()
  assert float(jnp.max(jnp.abs(block(x @ jnp.ones((3, 16)), emb) - block(x @ jnp.ones((3, 16)), emb)))) > 0


# --------------------------------------------------------------------------------------------
# Initialisation
# --------------------------------------------------------------------------------------------
def _bound_check(values, bound, fill=0.8):
  values = np.abs(np.asarray(values))
  assert values.max() <= bound * (1 + 1e-6) and values.max() >= fill * bound


def test_song_initialisation(tiny):
  model = tiny["ddpmpp_tiny"]
  block = model.enc["4x4_block0"]  # 16 -> 32 channels, attention at 4x4
  xavier = lambda cin, cout, k: math.sqrt(6 / ((cin + cout) * k * k))
  _bound_check(block.conv0.kernel[...], xavier(16, 32, 3))
  _bound_check(block.conv1.kernel[...], 1e-5 * xavier(32, 32, 3))  # init_zero: xavier x 1e-5
  _bound_check(block.qkv.kernel[...], math.sqrt(0.2) * xavier(32, 96, 1))  # init_attn: xavier x sqrt(0.2)
  _bound_check(block.proj.kernel[...], 1e-5 * xavier(32, 32, 1))
  _bound_check(block.skip.kernel[...], xavier(16, 32, 1))
  _bound_check(model.map_label.kernel[...], xavier(10, 16, 1))
  for conv in (block.conv0, block.conv1, block.qkv, block.proj, block.skip):
    assert not np.any(conv.bias[...])  # init_bias 0
  assert not np.any(model.map_layer0.bias[...])
  freqs = tiny["ncsnpp_tiny"].map_noise.freqs
  assert isinstance(freqs, nnx.Variable) and not isinstance(freqs, nnx.Param)


def test_adm_initialisation(tiny):
  model = tiny["adm_tiny"]
  block = model.enc["4x4_block0"]  # 32 -> 64 channels, one head at 4x4
  assert block.num_heads == 1 and model.enc["8x8_block0"].num_heads == 0
  torch_default = lambda fan_in: 1 / math.sqrt(fan_in)  # kaiming_uniform x sqrt(1/3), weights and biases
  _bound_check(block.conv0.kernel[...], torch_default(32 * 9))
  _bound_check(block.conv0.bias[...], torch_default(32 * 9), fill=0.5)
  _bound_check(model.map_layer0.kernel[...], torch_default(32))
  _bound_check(block.qkv.kernel[...], torch_default(64))
  for zero in (block.conv1, block.proj, model.out_conv):
    assert not np.any(zero.kernel[...]) and not np.any(zero.bias[...])
  label = np.asarray(model.map_label.kernel[...])  # kaiming_normal x sqrt(label_dim): N(0, 1)
  assert model.map_label.bias is None and abs(label.std() - 1) < 0.1


# --------------------------------------------------------------------------------------------
# Layers against direct formulas (PyTorch NCHW semantics)
# --------------------------------------------------------------------------------------------
def _np_group_norm(x, groups, gamma, beta, eps):
  n, c = x.shape[:2]
  xg = x.reshape(n, groups, -1)
  y = (xg - xg.mean(-1, keepdims=True)) / np.sqrt(xg.var(-1, keepdims=True) + eps)
  return y.reshape(x.shape) * gamma[None, :, None, None] + beta[None, :, None, None]


def _np_conv2d(x, w, pad, stride=1, groups=1):
  """out[n, o, i, j] = sum_{c, a, b} w[o, c, a, b] xpad[n, c, s i + a, s j + b] within each group."""
  n, _, h, wd = x.shape
  o, cg, k, _ = w.shape
  xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
  oh, ow = (h + 2 * pad - k) // stride + 1, (wd + 2 * pad - k) // stride + 1
  out = np.zeros((n, o, oh, ow))
  og = o // groups
  for g in range(groups):
    xs = xp[:, g * cg:(g + 1) * cg]
    for a in range(k):
      for b in range(k):
        patch = xs[:, :, a:a + stride * oh:stride, b:b + stride * ow:stride]
        out[:, g * og:(g + 1) * og] += np.einsum("oc,nchw->nohw", w[g * og:(g + 1) * og, :, a, b], patch)
  return out


def _np_conv_transpose2d_depthwise(x, w, pad):
  """PyTorch conv_transpose2d(stride 2, groups=C): out[y] = sum_i x[i] w[y + pad - 2 i]."""
  n, c, h, wd = x.shape
  k = w.shape[-1]
  full = np.zeros((n, c, 2 * (h - 1) + k, 2 * (wd - 1) + k))
  for a in range(k):
    for b in range(k):
      full[:, :, a:a + 2 * h - 1:2, b:b + 2 * wd - 1:2] += x * w[:, 0, a, b][None, :, None, None]
  return full[:, :, pad:full.shape[2] - pad, pad:full.shape[3] - pad]


def _np_fir(f, channels, gain=1.0):
  f = np.asarray(f, np.float64)
  return np.tile((gain * np.outer(f, f) / f.sum()**2)[None, None], (channels, 1, 1, 1))


def _np_edm_conv(x, w, b, *, up=False, down=False, f=(1, 1), fused=False):
  """The reference Conv2d.forward (w OIHW or None)."""
  f_pad = (len(f) - 1) // 2
  w_pad = 0 if w is None else w.shape[-1] // 2
  if fused and down and w is not None:
    x = _np_conv2d(x, w, w_pad + f_pad)
    x = _np_conv2d(x, _np_fir(f, w.shape[0]), 0, stride=2, groups=w.shape[0])
  else:
    if up:
      x = _np_conv_transpose2d_depthwise(x, _np_fir(f, x.shape[1], 4.0), f_pad)
    if down:
      x = _np_conv2d(x, _np_fir(f, x.shape[1]), f_pad, stride=2, groups=x.shape[1])
    if w is not None:
      x = _np_conv2d(x, w, w_pad)
  return x if b is None else x + b[None, :, None, None]


def _np_softmax(z, axis):
  z = np.exp(z - z.max(axis, keepdims=True))
  return z / z.sum(axis, keepdims=True)


def _np_attention(qkv, heads):
  """The reference: qkv.reshape(N * heads, C / heads, 3, HW), softmax(q^T k / sqrt(C / heads)) v."""
  n, c3, h, w = qkv.shape
  q, k, v = np.moveaxis(qkv.reshape(n * heads, c3 // 3 // heads, 3, h * w), 2, 0)
  weights = _np_softmax(np.einsum("ncq,nck->nqk", q, k / np.sqrt(k.shape[1])), axis=2)
  return np.einsum("nqk,nck->ncq", weights, v).reshape(n, c3 // 3, h, w)


nchw = lambda x: np.asarray(x, np.float64).transpose(0, 3, 1, 2)
nhwc = lambda x: np.asarray(x).transpose(0, 2, 3, 1)


@pytest.mark.parametrize("f", [(1, 1), (1, 3, 3, 1)])
def test_fir_resampling_against_definition(f):
  x = np.random.default_rng(0).standard_normal((2, 8, 8, 3)).astype(np.float32)
  down = edm_unets.fir_downsample(jnp.asarray(x), f)
  up = edm_unets.fir_upsample(jnp.asarray(x), f)
  np.testing.assert_allclose(down, nhwc(_np_edm_conv(nchw(x), None, None, down=True, f=f)), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(up, nhwc(_np_edm_conv(nchw(x), None, None, up=True, f=f)), rtol=1e-5, atol=1e-6)
  if f == (1, 1):  # 2x2 average pooling and nearest-neighbour up-sampling
    np.testing.assert_allclose(down, x.reshape(2, 4, 2, 4, 2, 3).mean(axis=(2, 4)), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(up, np.repeat(np.repeat(x, 2, 1), 2, 2))


def test_fused_residual_down_conv():
  conv = edm_unets.Conv2d(3, 5, 3, down=True, resample_filter=(1, 3, 3, 1), fused_resample=True,
                          init=edm_unets.Init("xavier_uniform", bias=1.0), rngs=nnx.Rngs(0))
  x = np.random.default_rng(1).standard_normal((2, 8, 8, 3)).astype(np.float32)
  w, b = np.asarray(conv.kernel[...]).transpose(3, 2, 0, 1), np.asarray(conv.bias[...])
  expected = _np_edm_conv(nchw(x), w, b, down=True, f=(1, 3, 3, 1), fused=True)
  np.testing.assert_allclose(conv(jnp.asarray(x)), nhwc(expected), rtol=1e-4, atol=1e-5)


def test_group_norm_and_attention_against_formulas():
  rng = np.random.default_rng(2)
  x = (3 + 2 * rng.standard_normal((2, 4, 4, 64))).astype(np.float32)
  norm = edm_unets.group_norm(64, 1e-6, nnx.Rngs(0))
  assert norm.num_groups == 16  # min(32, C // 4)
  gamma, beta = rng.standard_normal(64).astype(np.float32), rng.standard_normal(64).astype(np.float32)
  norm.scale[...], norm.bias[...] = jnp.asarray(gamma), jnp.asarray(beta)
  np.testing.assert_allclose(norm(jnp.asarray(x)), nhwc(_np_group_norm(nchw(x), 16, gamma, beta, 1e-6)),
                             rtol=1e-4, atol=1e-4)
  qkv = rng.standard_normal((2, 4, 4, 3 * 64)).astype(np.float32)
  for heads in (1, 4):
    np.testing.assert_allclose(edm_unets.attention(jnp.asarray(qkv), heads), nhwc(_np_attention(nchw(qkv), heads)),
                               rtol=1e-4, atol=1e-5)


def test_noise_embeddings_against_formulas():
  x = jnp.array([-2.0, 0.3, 7.0])
  emb = np.asarray(edm_unets.positional_embedding(x, 8, endpoint=True))
  freqs = 1e-4**(np.arange(4) / 3)  # endpoint: the last frequency is exactly 1 / max_positions
  np.testing.assert_allclose(emb, np.concatenate([np.cos(np.outer(x, freqs)), np.sin(np.outer(x, freqs))], 1),
                             rtol=1e-5, atol=1e-6)
  adm = np.asarray(edm_unets.positional_embedding(x, 8))
  np.testing.assert_allclose(adm[:, :4], np.cos(np.outer(x, 1e-4**(np.arange(4) / 4))), rtol=1e-5, atol=1e-6)
  fourier = edm_unets.FourierEmbedding(8, rngs=nnx.Rngs(0))
  arg = np.outer(x, 2 * np.pi * np.asarray(fourier.freqs[...]))
  np.testing.assert_allclose(fourier(x), np.concatenate([np.cos(arg), np.sin(arg)], 1), rtol=1e-4, atol=1e-4)
  np.testing.assert_array_equal(edm_unets._swap_halves(jnp.asarray(emb)), np.concatenate([emb[:, 4:], emb[:, :4]], 1))


def _randomise(module, seed):
  """Replaces every parameter (including the zero-initialised ones) with N(0, 0.3^2) draws."""
  leaves, treedef = jax.tree.flatten(nnx.state(module, nnx.Param))
  rng = np.random.default_rng(seed)
  nnx.update(module, jax.tree.unflatten(treedef, [jnp.asarray(0.3 * rng.standard_normal(v.shape), jnp.float32)
                                                  for v in leaves]))


def _np_unet_block(block, x, emb, *, up=False, down=False, f=(1, 1)):
  """The reference UNetBlock.forward on NCHW x with the block's (ported) weights."""
  conv_w = lambda c: (None if c.kernel is None else np.asarray(c.kernel[...], np.float64).transpose(3, 2, 0, 1),
                      None if c.bias is None else np.asarray(c.bias[...], np.float64))
  gn = lambda norm, x: _np_group_norm(x, norm.num_groups, np.asarray(norm.scale[...], np.float64),
                                      np.asarray(norm.bias[...], np.float64), norm.epsilon)
  silu = lambda v: v / (1 + np.exp(-v))
  orig = x
  x = _np_edm_conv(silu(gn(block.norm0, x)), *conv_w(block.conv0), up=up, down=down, f=f)
  params = (emb @ np.asarray(block.affine.kernel[...]) + np.asarray(block.affine.bias[...]))[:, :, None, None]
  if block.adaptive_scale:
    scale, shift = np.split(params, 2, axis=1)
    x = silu(shift + gn(block.norm1, x) * (scale + 1))
  else:
    x = silu(gn(block.norm1, x + params))
  x = _np_edm_conv(x, *conv_w(block.conv1))
  skip = orig if block.skip is None else _np_edm_conv(orig, *conv_w(block.skip), up=up, down=down, f=f)
  x = (x + skip) * block.skip_scale
  if block.num_heads:
    a = _np_attention(_np_edm_conv(gn(block.norm2, x), *conv_w(block.qkv)), block.num_heads)
    x = (_np_edm_conv(a, *conv_w(block.proj)) + x) * block.skip_scale
  return x


@pytest.mark.parametrize("style", ["song_down_attention", "adm_up_two_heads", "adm_channels_change"])
def test_unet_block_against_reference_forward(style):
  rngs = nnx.Rngs(0)
  song = dict(num_heads=1, skip_scale=math.sqrt(0.5), eps=1e-6, resample_proj=True, adaptive_scale=False)
  cfg = {"song_down_attention": (16, 32, dict(down=True, attention=True, resample_filter=(1, 3, 3, 1), **song)),
         "adm_up_two_heads": (128, 128, dict(up=True, attention=True)),
         "adm_channels_change": (64, 128, dict(attention=True))}[style]
  cin, cout, kw = cfg
  block = edm_unets.UNetBlock(cin, cout, 24, **kw, rngs=rngs)
  _randomise(block, seed=3)
  rng = np.random.default_rng(4)
  x = rng.standard_normal((2, 8, 8, cin)).astype(np.float32)
  emb = rng.standard_normal((2, 24)).astype(np.float32)
  expected = _np_unet_block(block, nchw(x), emb.astype(np.float64), up=kw.get("up", False),
                            down=kw.get("down", False), f=kw.get("resample_filter", (1, 1)))
  out = block(jnp.asarray(x), jnp.asarray(emb))
  assert out.shape == nhwc(expected).shape
  np.testing.assert_allclose(out, nhwc(expected), rtol=2e-4, atol=2e-4 * np.abs(expected).max())


# --------------------------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------------------------
def test_register_models_is_idempotent_and_matches_the_registry(monkeypatch):
  import diffjax.models  # noqa: F401  (registers the package's models)
  for name, (constructor, defaults) in edm_unets.MODELS.items():
    if name in registry.list_models():  # already registered elsewhere: the same configuration
      reg_constructor, reg_defaults = registry._MODELS[name]
      assert reg_constructor is constructor
      assert edm_unets.effective_config(constructor, reg_defaults) == edm_unets.effective_config(constructor, defaults)
  monkeypatch.setattr(registry, "_MODELS", {})
  assert edm_unets.register_models() == list(edm_unets.MODELS)
  assert edm_unets.register_models() == []
  assert set(registry.list_models()) == set(edm_unets.MODELS)
