"""DiCo: Diffusion ConvNet (Ai et al. 2025, "DiCo: Revitalizing ConvNets for Scalable and Efficient
Diffusion Modeling"), following the official `shallowdream204/DiCo/dico_models.py`, NHWC in Flax NNX.

DiCo block (sec. 3.2), adaLN-gated like DiT with a conv module in place of attention:

  x = inp + gate1 conv3(CCA(GELU(dwconv3x3(conv1(modulate(LN(inp), shift1, scale1))))))
  x = x + gate2 conv5(GELU(conv4(modulate(LN(x), shift2, scale2))))

with exact (erf) GELU, LN over channels without affine, and compact channel attention
CCA(x) = x * sigmoid(conv1x1(mean_HW(x))) (one full 1x1 conv on the pooled vector, no bottleneck).

Macro-architecture (sec. 3.3, no patchify): a 3x3 stem to C channels; encoder levels of C and 2C
channels, a bottleneck of 4C, decoder levels of 2C and 2C; down-sampling conv3x3 + PixelUnshuffle(2),
up-sampling conv3x3 + PixelShuffle(2), skip concatenation + 1x1 reduction; three timestep and label
embedders of widths C, 2C, 4C (level 1 uses the first; level 2, both decoder levels and the final
layer the second; the bottleneck the third); final LN - modulate - conv3x3.

Initialisation as the reference: xavier-uniform convs and linears with zero bias, timestep-MLP and
label weights ~ N(0, 0.02^2), and every adaLN modulation plus the final conv zero, so the output is
exactly 0 at init.
"""
import jax.numpy as jnp
from flax import nnx

from diffjax.models.dit import LabelEmbedder, TimestepEmbedder

_xavier = nnx.initializers.xavier_uniform()
_zeros = nnx.initializers.zeros


def _conv(cin, cout, k, rngs, *, bias=True, groups=1, kernel_init=_xavier):
  return nnx.Conv(cin, cout, (k, k), padding="SAME", feature_group_count=groups, use_bias=bias,
                  kernel_init=kernel_init, bias_init=_zeros, rngs=rngs)


def pixel_unshuffle(x, r=2):
  """NHWC PixelUnshuffle with PyTorch's channel order: out[..., c r^2 + i r + j] = x[r h + i, r w + j, c]."""
  n, h, w, c = x.shape
  x = x.reshape(n, h // r, r, w // r, r, c).transpose(0, 1, 3, 5, 2, 4)
  return x.reshape(n, h // r, w // r, c * r * r)


def pixel_shuffle(x, r=2):
  """NHWC PixelShuffle, the inverse of `pixel_unshuffle`."""
  n, h, w, c = x.shape
  x = x.reshape(n, h, w, c // (r * r), r, r).transpose(0, 1, 4, 2, 5, 3)
  return x.reshape(n, h * r, w * r, c // (r * r))


def _modulate(x, shift, scale):
  return x * (1 + scale[:, None, None]) + shift[:, None, None]


class DiCoBlock(nnx.Module):
  """The DiCo block of width h and MLP ratio r: (9 + 2r) h^2 + (20 + r) h parameters."""

  def __init__(self, h, mlp_ratio=2, *, rngs):
    self.norm1 = nnx.LayerNorm(h, epsilon=1e-6, use_scale=False, use_bias=False, rngs=rngs)
    self.conv1 = _conv(h, h, 1, rngs)
    self.conv2 = _conv(h, h, 3, rngs, groups=h)
    self.ca = nnx.Linear(h, h, kernel_init=_xavier, bias_init=_zeros, rngs=rngs)  # the CCA's 1x1 conv
    self.conv3 = _conv(h, h, 1, rngs)
    self.norm2 = nnx.LayerNorm(h, epsilon=1e-6, use_scale=False, use_bias=False, rngs=rngs)
    self.conv4 = _conv(h, int(mlp_ratio * h), 1, rngs)
    self.conv5 = _conv(int(mlp_ratio * h), h, 1, rngs)
    self.ada = nnx.Linear(h, 6 * h, kernel_init=_zeros, bias_init=_zeros, rngs=rngs)

  def __call__(self, inp, c):
    shift1, scale1, gate1, shift2, scale2, gate2 = jnp.split(self.ada(nnx.silu(c)), 6, axis=-1)
    x = self.conv2(self.conv1(_modulate(self.norm1(inp), shift1, scale1)))
    x = nnx.gelu(x, approximate=False)
    x = x * nnx.sigmoid(self.ca(jnp.mean(x, axis=(1, 2))))[:, None, None]
    x = inp + gate1[:, None, None] * self.conv3(x)
    h = self.conv5(nnx.gelu(self.conv4(_modulate(self.norm2(x), shift2, scale2)), approximate=False))
    return x + gate2[:, None, None] * h


class DiCo(nnx.Module):
  """`DiCo(x, t, cond=None)`: x (B, H, W, C) with H, W divisible by 4; t (B,); cond (B,) labels.

  Args:
    in_channels: C of the input (4 for SD-VAE latents).
    hidden_size: C of the first level (S 128, B 256, L 352, XL 416, H 416).
    depth: blocks per level [enc1, enc2, bottleneck, dec2, dec1].
    mlp_ratio: r (2; 4 for H).
    num_classes: class-conditional if set (cond=None then means the null label).
    class_dropout_prob: > 0 adds the null row to the label tables (0.1 in the paper).
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
    self.x_embedder = _conv(in_channels, c, 3, rngs)
    widths = (c, 2 * c, 4 * c)
    self.t_embedders = nnx.List([TimestepEmbedder(w, rngs=rngs) for w in widths])
    self.y_embedders = (nnx.List([LabelEmbedder(num_classes, w, class_dropout_prob=class_dropout_prob, rngs=rngs)
                                  for w in widths]) if num_classes else None)
    block = lambda h, n: nnx.List([DiCoBlock(h, mlp_ratio, rngs=rngs) for _ in range(n)])
    self.enc1 = block(c, depth[0])
    self.down1_2 = _conv(c, c // 2, 3, rngs, bias=False)
    self.enc2 = block(2 * c, depth[1])
    self.down2_3 = _conv(2 * c, c, 3, rngs, bias=False)
    self.latent = block(4 * c, depth[2])
    self.up3_2 = _conv(4 * c, 8 * c, 3, rngs, bias=False)
    self.reduce2 = _conv(4 * c, 2 * c, 1, rngs)
    self.dec2 = block(2 * c, depth[3])
    self.up2_1 = _conv(2 * c, 4 * c, 3, rngs, bias=False)
    self.reduce1 = _conv(2 * c, 2 * c, 1, rngs)
    self.dec1 = block(2 * c, depth[4])
    self.final_norm = nnx.LayerNorm(2 * c, epsilon=1e-6, use_scale=False, use_bias=False, rngs=rngs)
    self.final_ada = nnx.Linear(2 * c, 4 * c, kernel_init=_zeros, bias_init=_zeros, rngs=rngs)
    self.final_conv = _conv(2 * c, self.out_channels, 3, rngs, kernel_init=_zeros)

  def conditions(self, t, cond):
    cs = [emb(t) for emb in self.t_embedders]
    if self.y_embedders is not None:
      if cond is None:
        cond = jnp.full((t.shape[0],), self.num_classes, jnp.int32)
      cs = [c + emb(cond) for c, emb in zip(cs, self.y_embedders)]
    elif cond is not None:
      raise ValueError("a class label was given to a DiCo built without num_classes")
    return cs

  def __call__(self, x, t, cond=None):
    if x.ndim != 4 or x.shape[-1] != self.in_channels or x.shape[1] % 4 or x.shape[2] % 4:
      raise ValueError(f"DiCo expects x of shape (batch, H, W, {self.in_channels}) with H, W divisible by 4, "
                       f"got {x.shape}")
    t = jnp.broadcast_to(jnp.asarray(t, x.dtype), (x.shape[0],))
    c1, c2, c3 = self.conditions(t, cond)
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
    return self.final_conv(_modulate(self.final_norm(h), shift, scale))


DICO_SIZES = {
    "s": dict(hidden_size=128, depth=(5, 4, 4, 4, 4), mlp_ratio=2),
    "b": dict(hidden_size=256, depth=(5, 4, 4, 4, 4), mlp_ratio=2),
    "l": dict(hidden_size=352, depth=(9, 8, 9, 8, 9), mlp_ratio=2),
    "xl": dict(hidden_size=416, depth=(9, 9, 10, 9, 9), mlp_ratio=2),
    "h": dict(hidden_size=416, depth=(14, 12, 10, 12, 14), mlp_ratio=4),
}
