"""A small DDPM-style U-Net for NHWC images (Ho et al. 2020; score_sde's `ddpm` model, scaled down).

Levels of residual blocks (GroupNorm-SiLU-Conv3x3, noise embedding added after the first conv),
optional self-attention at chosen resolutions, average-pool downsampling, nearest-neighbour
upsampling + conv, and skip connections from every block of the way down.
"""
import jax.numpy as jnp
from flax import nnx

from diffjax.models.embeddings import NoiseEmbedding


def _groups(channels, max_groups=8):
  g = min(max_groups, channels)
  while channels % g:
    g -= 1
  return g


class ResBlock(nnx.Module):

  def __init__(self, in_ch, out_ch, emb_dim, *, dropout, rngs):
    self.norm1 = nnx.GroupNorm(in_ch, num_groups=_groups(in_ch), rngs=rngs)
    self.conv1 = nnx.Conv(in_ch, out_ch, (3, 3), rngs=rngs)
    self.emb = nnx.Linear(emb_dim, out_ch, rngs=rngs)
    self.norm2 = nnx.GroupNorm(out_ch, num_groups=_groups(out_ch), rngs=rngs)
    self.dropout = nnx.Dropout(dropout, rngs=rngs)
    self.conv2 = nnx.Conv(out_ch, out_ch, (3, 3), kernel_init=nnx.initializers.zeros, rngs=rngs)
    self.skip = nnx.Conv(in_ch, out_ch, (1, 1), rngs=rngs) if in_ch != out_ch else None

  def __call__(self, x, emb):
    h = self.conv1(nnx.silu(self.norm1(x)))
    h = h + self.emb(nnx.silu(emb))[:, None, None, :]
    h = self.conv2(self.dropout(nnx.silu(self.norm2(h))))
    return (self.skip(x) if self.skip is not None else x) + h


class SelfAttention(nnx.Module):

  def __init__(self, ch, *, num_heads=1, rngs):
    self.norm = nnx.GroupNorm(ch, num_groups=_groups(ch), rngs=rngs)
    self.attn = nnx.MultiHeadAttention(num_heads, ch, decode=False, rngs=rngs,
                                       out_kernel_init=nnx.initializers.zeros)

  def __call__(self, x):
    b, h, w, c = x.shape
    y = self.norm(x).reshape(b, h * w, c)
    return x + self.attn(y).reshape(b, h, w, c)


class UNet(nnx.Module):
  """`UNet(x, t, cond=None)`: x (B, H, W, C) with H, W divisible by 2^(levels - 1).

  Args:
    in_channels: image channels.
    ch: base channel count.
    ch_mult: channel multiplier per level (len = number of levels).
    num_res_blocks: residual blocks per level.
    attn_resolutions: spatial sizes (H) at which self-attention follows each block; needs
      `resolution`, the input size H the model is built for.
    dropout: dropout rate inside residual blocks (active only when the module is in train mode
      via `model.train()`; `split_apply` runs it deterministically, `split_train_apply` with masks
      from an explicit key; the trainer uses the latter whenever the rate is > 0).
    num_classes: if set, class-conditional (label `num_classes` is the null label).
    out_channels: output channels (default `in_channels`).
  """

  def __init__(self, in_channels, *, ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(),
               dropout=0.0, num_classes=None, out_channels=None, embedding="sinusoidal",
               resolution=None, rngs):
    if attn_resolutions and resolution is None:
      raise ValueError("UNet: attn_resolutions needs resolution (the input image size)")
    self.in_channels = in_channels
    emb_dim = 4 * ch
    self.embed = NoiseEmbedding(emb_dim, frequency_dim=ch, kind=embedding, num_classes=num_classes, rngs=rngs)
    self.conv_in = nnx.Conv(in_channels, ch, (3, 3), rngs=rngs)
    self.num_levels = len(ch_mult)
    self.attn_resolutions = tuple(attn_resolutions)
    attn = {}  # block name -> attention after it, at the resolutions asked for
    down, skips_ch, cur = [], [ch], ch
    res = resolution
    for level, mult in enumerate(ch_mult):
      for _ in range(num_res_blocks):
        down.append(ResBlock(cur, ch * mult, emb_dim, dropout=dropout, rngs=rngs))
        cur = ch * mult
        skips_ch.append(cur)
        if res in self.attn_resolutions:
          attn[f"down{len(down) - 1}"] = SelfAttention(cur, rngs=rngs)
      if level != self.num_levels - 1:
        skips_ch.append(cur)
        res = None if res is None else res // 2
    self.down = nnx.List(down)
    self.mid1 = ResBlock(cur, cur, emb_dim, dropout=dropout, rngs=rngs)
    self.mid_attn = SelfAttention(cur, rngs=rngs)
    self.mid2 = ResBlock(cur, cur, emb_dim, dropout=dropout, rngs=rngs)
    up, up_convs = [], []
    for level, mult in reversed(list(enumerate(ch_mult))):
      for _ in range(num_res_blocks + 1):
        up.append(ResBlock(cur + skips_ch.pop(), ch * mult, emb_dim, dropout=dropout, rngs=rngs))
        cur = ch * mult
        if res in self.attn_resolutions:
          attn[f"up{len(up) - 1}"] = SelfAttention(cur, rngs=rngs)
      if level != 0:
        up_convs.append(nnx.Conv(cur, cur, (3, 3), rngs=rngs))
        res = None if res is None else res * 2
    self.up = nnx.List(up)
    self.up_convs = nnx.List(up_convs)
    self.attn = nnx.Dict(attn)
    self.norm_out = nnx.GroupNorm(cur, num_groups=_groups(cur), rngs=rngs)
    self.conv_out = nnx.Conv(cur, out_channels or in_channels, (3, 3), kernel_init=nnx.initializers.zeros,
                             rngs=rngs)
    self.num_res_blocks = num_res_blocks

  def _maybe_attn(self, name, h):
    return self.attn[name](h) if name in self.attn else h

  def __call__(self, x, t, cond=None):
    if x.ndim != 4 or x.shape[-1] != self.in_channels:
      raise ValueError(f"UNet expects x of shape (batch, H, W, {self.in_channels}), got {x.shape}")
    factor = 2**(self.num_levels - 1)
    if x.shape[1] % factor or x.shape[2] % factor:
      raise ValueError(f"UNet with {self.num_levels} levels needs H, W divisible by {factor}, got {x.shape[1:3]}")
    t = jnp.broadcast_to(jnp.asarray(t, x.dtype), (x.shape[0],))
    emb = self.embed(t, cond)
    h = self.conv_in(x)
    skips = [h]
    i = 0
    for level in range(self.num_levels):
      for _ in range(self.num_res_blocks):
        h = self._maybe_attn(f"down{i}", self.down[i](h, emb))
        i += 1
        skips.append(h)
      if level != self.num_levels - 1:
        b, hh, ww, c = h.shape
        h = h.reshape(b, hh // 2, 2, ww // 2, 2, c).mean(axis=(2, 4))
        skips.append(h)
    h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
    i, convs = 0, iter(self.up_convs)
    for level in reversed(range(self.num_levels)):
      for _ in range(self.num_res_blocks + 1):
        h = self._maybe_attn(f"up{i}", self.up[i](jnp.concatenate([h, skips.pop()], axis=-1), emb))
        i += 1
      if level != 0:
        h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)
        h = next(convs)(h)
    return self.conv_out(nnx.silu(self.norm_out(h)))
