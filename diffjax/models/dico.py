"""DiCo: Diffusion ConvNet (Ai et al. 2025, "DiCo: Revitalizing ConvNets for Scalable and Efficient
Diffusion Modeling"), following the official `shallowdream204/DiCo/dico_models.py`, NHWC in Flax NNX.

DiCo block (sec. 3.2), adaLN-gated like DiT with a conv module in place of attention:

  x = inp + gate1 conv3(CCA(GELU(dwconv3x3(conv1(modulate(LN(inp), shift1, scale1))))))
  x = x + gate2 conv5(GELU(conv4(modulate(LN(x), shift2, scale2))))

with exact (erf) GELU, LN over channels without affine (eps 1e-6), and compact channel attention
CCA(x) = x * sigmoid(conv1x1(mean_HW(x))) (one full 1x1 conv on the pooled vector, no bottleneck).

Macro-architecture (sec. 3.3, no patchify): a 3x3 stem to C channels; encoder levels of C and 2C
channels, a bottleneck of 4C, decoder levels of 2C and 2C; down-sampling conv3x3 (to half the
channels, no bias) + PixelUnshuffle(2), up-sampling conv3x3 (to twice the channels, no bias) +
PixelShuffle(2), skip concatenation [up, skip] + 1x1 reduction; three timestep and label embedders
of widths C, 2C, 4C (level 1 uses the first; level 2, both decoder levels and the final layer the
second; the bottleneck the third); final LN - modulate - conv3x3.

Initialisation as the reference: xavier-uniform convs and linears with zero bias (the stem on its
(C, C_in 9) view), timestep-MLP and label weights ~ N(0, 0.02^2), and every adaLN modulation plus
the final conv zero, so the output is exactly 0 at init and every block is the identity.
Class dropout and the null label work as in DiT (see diffjax/models/dit.py).
"""
import jax.numpy as jnp
from flax import nnx

from diffjax.models.dit import LabelEmbedder, TimestepEmbedder, linear_view_xavier_init, modulate
from diffjax.models.registry import register

_xavier = nnx.initializers.xavier_uniform()
_zeros = nnx.initializers.zeros


def _conv(cin, cout, k, rngs, *, bias=True, groups=1, kernel_init=_xavier):
  return nnx.Conv(cin, cout, (k, k), padding="SAME", feature_group_count=groups, use_bias=bias,
                  kernel_init=kernel_init, bias_init=_zeros, rngs=rngs)


def _layer_norm(h, rngs):
  """LayerNorm2d(affine=False, eps=1e-6): over channels at every pixel."""
  return nnx.LayerNorm(h, epsilon=1e-6, use_scale=False, use_bias=False, rngs=rngs)


def pixel_unshuffle(x, r=2):
  """NHWC PixelUnshuffle with PyTorch's channel order: out[..., c r^2 + i r + j] = x[r h + i, r w + j, c]."""
  n, h, w, c = x.shape
  if h % r or w % r:
    raise ValueError(f"pixel_unshuffle needs H and W divisible by r={r}, got {x.shape}")
  x = x.reshape(n, h // r, r, w // r, r, c).transpose(0, 1, 3, 5, 2, 4)
  return x.reshape(n, h // r, w // r, c * r * r)


def pixel_shuffle(x, r=2):
  """NHWC PixelShuffle, the inverse of `pixel_unshuffle`: out[r h + i, r w + j, c] = x[..., c r^2 + i r + j]."""
  n, h, w, c = x.shape
  if c % (r * r):
    raise ValueError(f"pixel_shuffle needs C divisible by r^2={r * r}, got {x.shape}")
  x = x.reshape(n, h, w, c // (r * r), r, r).transpose(0, 1, 4, 2, 5, 3)
  return x.reshape(n, h * r, w * r, c // (r * r))


class CompactChannelAttention(nnx.Module):
  """CCA (Ai et al. 2025, sec. 3.2): x * sigmoid(W mean_HW(x) + b), W a full h x h 1x1 conv."""

  def __init__(self, h, *, rngs):
    self.proj = nnx.Linear(h, h, kernel_init=_xavier, bias_init=_zeros, rngs=rngs)  # == Conv2d(h, h, 1)

  def __call__(self, x):
    return x * nnx.sigmoid(self.proj(jnp.mean(x, axis=(1, 2))))[:, None, None]


class DiCoBlock(nnx.Module):
  """The DiCo block of width h and MLP ratio r: (9 + 2r) h^2 + (20 + r) h parameters."""

  def __init__(self, h, mlp_ratio=2, *, rngs):
    ffn = int(mlp_ratio * h)
    self.norm1 = _layer_norm(h, rngs)
    self.conv1 = _conv(h, h, 1, rngs)
    self.conv2 = _conv(h, h, 3, rngs, groups=h)  # depthwise 3x3
    self.ca = CompactChannelAttention(h, rngs=rngs)
    self.conv3 = _conv(h, h, 1, rngs)
    self.norm2 = _layer_norm(h, rngs)
    self.conv4 = _conv(h, ffn, 1, rngs)
    self.conv5 = _conv(ffn, h, 1, rngs)
    self.ada = nnx.Linear(h, 6 * h, kernel_init=_zeros, bias_init=_zeros, rngs=rngs)

  def __call__(self, inp, c):
    shift1, scale1, gate1, shift2, scale2, gate2 = jnp.split(self.ada(nnx.silu(c)), 6, axis=-1)
    x = nnx.gelu(self.conv2(self.conv1(modulate(self.norm1(inp), shift1, scale1))), approximate=False)
    x = inp + gate1[:, None, None] * self.conv3(self.ca(x))
    h = self.conv5(nnx.gelu(self.conv4(modulate(self.norm2(x), shift2, scale2)), approximate=False))
    return x + gate2[:, None, None] * h


class DiCo(nnx.Module):
  """`DiCo(x, t, cond=None)`: x (B, H, W, C) with H, W divisible by 4; t (B,); cond (B,) labels.

  Args:
    in_channels: C of the input (4 for SD-VAE latents).
    hidden_size: width of the first level (S 128, B 256, L 352, XL 416, H 416); must be even.
    depth: blocks per level [enc1, enc2, bottleneck, dec2, dec1].
    mlp_ratio: r (2; 4 for H).
    num_classes: class-conditional if set; None for an unconditional model.
    class_dropout_prob: > 0 adds the null row to the label tables (0.1 in the paper) and is the drop
      probability used with `dropout_key`.
    learn_sigma: output 2C channels, as the paper.
  """

  def __init__(self, in_channels=4, *, hidden_size=128, depth=(5, 4, 4, 4, 4), mlp_ratio=2, num_classes=1000,
               class_dropout_prob=0.1, learn_sigma=True, rngs):
    c = hidden_size
    if c % 2:
      raise ValueError(f"DiCo hidden_size must be even, got {c}")
    if len(depth) != 5:
      raise ValueError(f"DiCo depth must list 5 levels [enc1, enc2, mid, dec2, dec1], got {depth}")
    self.in_channels, self.num_classes = in_channels, num_classes
    self.out_channels = 2 * in_channels if learn_sigma else in_channels
    self.x_embedder = _conv(in_channels, c, 3, rngs, kernel_init=linear_view_xavier_init)
    widths = (c, 2 * c, 4 * c)
    self.t_embedders = nnx.List([TimestepEmbedder(w, rngs=rngs) for w in widths])
    self.y_embedder = (LabelEmbedder(num_classes, widths, class_dropout_prob=class_dropout_prob, rngs=rngs)
                       if num_classes else None)
    blocks = lambda h, n: nnx.List([DiCoBlock(h, mlp_ratio, rngs=rngs) for _ in range(n)])
    self.enc1 = blocks(c, depth[0])
    self.down1_2 = _conv(c, c // 2, 3, rngs, bias=False)
    self.enc2 = blocks(2 * c, depth[1])
    self.down2_3 = _conv(2 * c, c, 3, rngs, bias=False)
    self.latent = blocks(4 * c, depth[2])
    self.up3_2 = _conv(4 * c, 8 * c, 3, rngs, bias=False)
    self.reduce2 = _conv(4 * c, 2 * c, 1, rngs)
    self.dec2 = blocks(2 * c, depth[3])
    self.up2_1 = _conv(2 * c, 4 * c, 3, rngs, bias=False)
    self.reduce1 = _conv(2 * c, 2 * c, 1, rngs)
    self.dec1 = blocks(2 * c, depth[4])
    self.final_norm = _layer_norm(2 * c, rngs)
    self.final_ada = nnx.Linear(2 * c, 4 * c, kernel_init=_zeros, bias_init=_zeros, rngs=rngs)
    self.final_conv = _conv(2 * c, self.out_channels, 3, rngs, kernel_init=_zeros)

  def levels(self):
    """[(blocks, downsampling factor)] of the five levels, in forward order."""
    return [(self.enc1, 1), (self.enc2, 2), (self.latent, 4), (self.dec2, 2), (self.dec1, 1)]

  def conditions(self, t, cond=None, *, dropout_key=None, force_drop_ids=None):
    """(c1, c2, c3) of widths C, 2C, 4C: t_i + y_i."""
    cs = [emb(t) for emb in self.t_embedders]
    if self.y_embedder is not None:
      labels = self.y_embedder.labels(t.shape[0], cond, dropout_key=dropout_key, force_drop_ids=force_drop_ids)
      cs = [c + y for c, y in zip(cs, self.y_embedder(labels))]
    elif cond is not None or dropout_key is not None or force_drop_ids is not None:
      raise ValueError("class labels / class dropout were given to a DiCo built with num_classes=None")
    return cs

  def __call__(self, x, t, cond=None, *, dropout_key=None, force_drop_ids=None):
    """Args: x (B, H, W, C); t (B,) or scalar; cond (B,) labels or None (the null label);
    dropout_key / force_drop_ids: optional class dropout (see `dit.drop_labels`). Returns
    (B, H, W, C_out)."""
    if x.ndim != 4 or x.shape[-1] != self.in_channels or x.shape[1] % 4 or x.shape[2] % 4:
      raise ValueError(f"DiCo expects x of shape (batch, H, W, {self.in_channels}) with H, W divisible by 4, "
                       f"got {x.shape}")
    t = jnp.broadcast_to(jnp.asarray(t, x.dtype), (x.shape[0],))
    c1, c2, c3 = self.conditions(t, cond, dropout_key=dropout_key, force_drop_ids=force_drop_ids)
    h = self.x_embedder(x)
    for blk in self.enc1:
      h = blk(h, c1)
    skip1 = h
    h = pixel_unshuffle(self.down1_2(h))
    for blk in self.enc2:
      h = blk(h, c2)
    skip2 = h
    h = pixel_unshuffle(self.down2_3(h))
    for blk in self.latent:
      h = blk(h, c3)
    h = self.reduce2(jnp.concatenate([pixel_shuffle(self.up3_2(h)), skip2], axis=-1))
    for blk in self.dec2:
      h = blk(h, c2)
    h = self.reduce1(jnp.concatenate([pixel_shuffle(self.up2_1(h)), skip1], axis=-1))
    for blk in self.dec1:
      h = blk(h, c2)
    shift, scale = jnp.split(self.final_ada(nnx.silu(c2)), 2, axis=-1)
    return self.final_conv(modulate(self.final_norm(h), shift, scale))


# `dico_models.py` configs (params at 32x32x4, 1000 classes, learned sigma: S 33,137,672,
# B 129,992,712, L 463,897,992, XL 701,151,368 as the training logs; H 1,037,408,328)
DICO_SIZES = {
    "s": dict(hidden_size=128, depth=(5, 4, 4, 4, 4), mlp_ratio=2),
    "b": dict(hidden_size=256, depth=(5, 4, 4, 4, 4), mlp_ratio=2),
    "l": dict(hidden_size=352, depth=(9, 8, 9, 8, 9), mlp_ratio=2),
    "xl": dict(hidden_size=416, depth=(9, 9, 10, 9, 9), mlp_ratio=2),
    "h": dict(hidden_size=416, depth=(14, 12, 10, 12, 14), mlp_ratio=4),
}
# 8x8x1 class-conditional digits on CPU: 735,913 parameters, 5.87 M MACs (cf. DIT_TINY)
DICO_TINY = dict(in_channels=1, hidden_size=24, depth=(2, 2, 2, 2, 2), mlp_ratio=2, num_classes=10, learn_sigma=False)


def register_all():
  """Registers "dico_{s,b,l,xl,h}" (32x32x4 latents, 1000 classes, learned sigma) and "dico_tiny"."""
  for size, kwargs in DICO_SIZES.items():
    register(f"dico_{size}", DiCo, **kwargs)
  register("dico_tiny", DiCo, **DICO_TINY)
