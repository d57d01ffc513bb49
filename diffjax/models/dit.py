"""DiT: Diffusion Transformer with adaLN-Zero (Peebles & Xie 2023, "Scalable Diffusion Models with
Transformers"), following the official `facebookresearch/DiT/models.py`, in Flax NNX on NHWC inputs.

  tokens = PatchEmbed(x) + pos_embed                     (p x p patches, fixed 2-D sin-cos, sec. 3.2)
  c = TimestepEmbedder(t) + LabelEmbedder(y)
  for each block: x += gate_msa Attn(LN(x)(1 + scale_msa) + shift_msa)
                  x += gate_mlp MLP(LN(x)(1 + scale_mlp) + shift_mlp)     (adaLN-Zero, sec. 3.2)
  out = unpatchify(Linear(LN(x)(1 + scale) + shift))

Initialisation as the reference: xavier-uniform linears with zero bias, the patch embedding
xavier-initialised on its (D, C p^2) view, timestep-MLP and label-table weights ~ N(0, 0.02^2), and
the adaLN modulations and the final linear zero, so the output is exactly 0 at init.

The fixed position embedding is an `nnx.Variable`, not an `nnx.Param`: `count_params` leaves it
out (the reference keeps it as a frozen `nn.Parameter`, which counts; DiT-XL/2: 675,129,632 with
it, 674,834,720 without). Class dropout for classifier-free guidance happens in the training loss
(`model.label_dropout`); the label table has the extra null row `num_classes` when
`class_dropout_prob > 0`, as in the reference.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from diffjax.models.embeddings import sinusoidal_embedding

_xavier = nnx.initializers.xavier_uniform()
_normal02 = nnx.initializers.normal(0.02)
_zeros = nnx.initializers.zeros


def _linear(din, dout, rngs, kernel_init=_xavier):
  return nnx.Linear(din, dout, kernel_init=kernel_init, bias_init=_zeros, rngs=rngs)


def _patch_embed_init(key, shape, dtype=jnp.float32):
  """xavier-uniform on the (D, C p^2) view of the patch conv, as the reference."""
  p1, p2, cin, d = shape
  limit = math.sqrt(6.0 / (cin * p1 * p2 + d))
  return jax.random.uniform(key, shape, dtype, -limit, limit)


def sincos_pos_embed_2d(dim, grid_size):
  """The reference's `get_2d_sincos_pos_embed`: (grid_size^2, dim), token t = row * grid_size + col;
  the first dim/2 channels encode the column, the last dim/2 the row, each [sin, cos] of
  pos * 10000^(-i / (dim / 4))."""
  if dim % 4:
    raise ValueError(f"position embedding dim must be divisible by 4, got {dim}")
  omega = 1.0 / 10000 ** (np.arange(dim // 4, dtype=np.float64) / (dim / 4))

  def one_d(pos):
    out = pos.reshape(-1)[:, None] * omega[None]
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)

  rows, cols = np.meshgrid(np.arange(grid_size, dtype=np.float64), np.arange(grid_size, dtype=np.float64),
                           indexing="ij")
  return np.concatenate([one_d(cols), one_d(rows)], axis=1).astype(np.float32)


class TimestepEmbedder(nnx.Module):
  """[cos, sin] features of t (256, max period 10^4) -> Linear - SiLU - Linear (DiT, DiCo)."""

  def __init__(self, dim, *, frequency_dim=256, rngs):
    self.frequency_dim = frequency_dim
    self.fc1 = _linear(frequency_dim, dim, rngs, _normal02)
    self.fc2 = _linear(dim, dim, rngs, _normal02)

  def __call__(self, t):
    return self.fc2(nnx.silu(self.fc1(sinusoidal_embedding(t, self.frequency_dim))))


class LabelEmbedder(nnx.Module):
  """Class table (num_classes + 1 rows when class dropout is used; row num_classes is the null label)."""

  def __init__(self, num_classes, dim, *, class_dropout_prob=0.1, rngs):
    self.num_classes = num_classes
    rows = num_classes + (1 if class_dropout_prob > 0 else 0)
    self.table = nnx.Embed(rows, dim, embedding_init=_normal02, rngs=rngs)

  def __call__(self, y):
    return self.table(y)


def modulate(x, shift, scale):
  return x * (1 + scale[:, None]) + shift[:, None]


class Attention(nnx.Module):
  """timm `Attention(qkv_bias=True)`: fused qkv [q | k | v], heads contiguous, scale head_dim^-1/2."""

  def __init__(self, dim, num_heads, *, rngs):
    if dim % num_heads:
      raise ValueError(f"hidden size {dim} must be divisible by num_heads {num_heads}")
    self.num_heads = num_heads
    self.qkv = _linear(dim, 3 * dim, rngs)
    self.proj = _linear(dim, dim, rngs)

  def __call__(self, x):
    b, n, d = x.shape
    h = self.num_heads
    q, k, v = jnp.split(self.qkv(x).reshape(b, n, 3, h, d // h), 3, axis=2)
    q, k, v = q[:, :, 0], k[:, :, 0], v[:, :, 0]  # (B, N, H, hd)
    logits = jnp.einsum("bnhd,bmhd->bhnm", q, k) / math.sqrt(d // h)
    out = jnp.einsum("bhnm,bmhd->bnhd", jax.nn.softmax(logits, axis=-1), v)
    return self.proj(out.reshape(b, n, d))


class DiTBlock(nnx.Module):

  def __init__(self, dim, num_heads, mlp_ratio=4.0, *, rngs):
    self.norm1 = nnx.LayerNorm(dim, epsilon=1e-6, use_scale=False, use_bias=False, rngs=rngs)
    self.attn = Attention(dim, num_heads, rngs=rngs)
    self.norm2 = nnx.LayerNorm(dim, epsilon=1e-6, use_scale=False, use_bias=False, rngs=rngs)
    hidden = int(dim * mlp_ratio)
    self.fc1 = _linear(dim, hidden, rngs)
    self.fc2 = _linear(hidden, dim, rngs)
    self.ada = _linear(dim, 6 * dim, rngs, _zeros)

  def __call__(self, x, c):
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = jnp.split(self.ada(nnx.silu(c)), 6, axis=-1)
    x = x + gate_msa[:, None] * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
    h = self.fc2(nnx.gelu(self.fc1(modulate(self.norm2(x), shift_mlp, scale_mlp)), approximate=True))
    return x + gate_mlp[:, None] * h


class DiT(nnx.Module):
  """`DiT(x, t, cond=None)`: x (B, H, W, C) latents, t (B,) noise labels, cond (B,) class labels.

  Args:
    in_channels: C.
    input_size: H = W.
    patch_size: p (2, 4 or 8).
    hidden_size, depth, num_heads, mlp_ratio: the transformer (S 384/12/6, B 768/12/12,
      L 1024/24/16, XL 1152/28/16).
    num_classes: class-conditional if set (cond=None then means the null label).
    class_dropout_prob: > 0 adds the null row to the label table (0.1 in the paper).
    learn_sigma: output 2C channels (eps and the variance interpolation), as the paper.
  """

  def __init__(self, in_channels=4, *, input_size=32, patch_size=2, hidden_size=1152, depth=28, num_heads=16,
               mlp_ratio=4.0, num_classes=1000, class_dropout_prob=0.1, learn_sigma=True, rngs):
    if input_size % patch_size:
      raise ValueError(f"input_size {input_size} must be divisible by patch_size {patch_size}")
    self.in_channels, self.patch_size, self.input_size = in_channels, patch_size, input_size
    self.out_channels = 2 * in_channels if learn_sigma else in_channels
    self.num_classes = num_classes
    self.x_embedder = nnx.Conv(in_channels, hidden_size, (patch_size, patch_size), strides=patch_size,
                               padding="VALID", kernel_init=_patch_embed_init, bias_init=_zeros, rngs=rngs)
    grid = input_size // patch_size
    self.pos_embed = nnx.Variable(jnp.asarray(sincos_pos_embed_2d(hidden_size, grid))[None])
    self.t_embedder = TimestepEmbedder(hidden_size, rngs=rngs)
    self.y_embedder = (LabelEmbedder(num_classes, hidden_size, class_dropout_prob=class_dropout_prob, rngs=rngs)
                       if num_classes else None)
    self.blocks = nnx.List([DiTBlock(hidden_size, num_heads, mlp_ratio, rngs=rngs) for _ in range(depth)])
    self.final_norm = nnx.LayerNorm(hidden_size, epsilon=1e-6, use_scale=False, use_bias=False, rngs=rngs)
    self.final_ada = _linear(hidden_size, 2 * hidden_size, rngs, _zeros)
    self.final_linear = _linear(hidden_size, patch_size * patch_size * self.out_channels, rngs, _zeros)

  def unpatchify(self, tokens):
    b, p, c = tokens.shape[0], self.patch_size, self.out_channels
    g = self.input_size // p
    x = tokens.reshape(b, g, g, p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, g * p, g * p, c)

  def embed_condition(self, t, cond):
    c = self.t_embedder(t)
    if self.y_embedder is not None:
      if cond is None:
        cond = jnp.full((c.shape[0],), self.num_classes, jnp.int32)
      c = c + self.y_embedder(cond)
    elif cond is not None:
      raise ValueError("a class label was given to a DiT built without num_classes")
    return c

  def __call__(self, x, t, cond=None):
    if x.ndim != 4 or x.shape[1:] != (self.input_size, self.input_size, self.in_channels):
      raise ValueError(f"DiT expects x of shape (batch, {self.input_size}, {self.input_size}, {self.in_channels}), "
                       f"got {x.shape}")
    t = jnp.broadcast_to(jnp.asarray(t, x.dtype), (x.shape[0],))
    h = self.x_embedder(x)
    h = h.reshape(h.shape[0], -1, h.shape[-1]) + self.pos_embed[...]
    c = self.embed_condition(t, cond)
    for block in self.blocks:
      h = block(h, c)
    shift, scale = jnp.split(self.final_ada(nnx.silu(c)), 2, axis=-1)
    return self.unpatchify(self.final_linear(modulate(self.final_norm(h), shift, scale)))


DIT_SIZES = {"s": (384, 12, 6), "b": (768, 12, 12), "l": (1024, 24, 16), "xl": (1152, 28, 16)}


def dit_kwargs(size, patch):
  hidden, depth, heads = DIT_SIZES[size]
  return dict(hidden_size=hidden, depth=depth, num_heads=heads, patch_size=patch)
