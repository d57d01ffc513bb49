"""DiT: Diffusion Transformer with adaLN-Zero (Peebles & Xie 2023, "Scalable Diffusion Models with
Transformers"), following the official `facebookresearch/DiT/models.py`, in Flax NNX on NHWC inputs.

  tokens = PatchEmbed(x) + pos_embed                     (p x p patches, fixed 2-D sin-cos, sec. 3.2)
  c = TimestepEmbedder(t) + LabelEmbedder(y)
  for each block: x += gate_msa Attn(LN(x)(1 + scale_msa) + shift_msa)
                  x += gate_mlp MLP(LN(x)(1 + scale_mlp) + shift_mlp)     (adaLN-Zero, sec. 3.2)
  out = unpatchify(Linear(LN(x)(1 + scale) + shift))

Initialisation as the reference `initialize_weights`: xavier-uniform linears with zero bias; the
patch-embedding kernel xavier-initialised on its (D, C p^2) view, its bias left at PyTorch's Conv2d
default U(+-1/sqrt(C p^2)) (the reference only re-initialises `nn.Linear` biases); timestep-MLP and
label-table weights ~ N(0, 0.02^2); the adaLN modulations and the final linear zero, so the output
is exactly 0 at init and every block is the identity.

The fixed position embedding is an `nnx.Variable`, not an `nnx.Param`: `count_params` and
optimisers leave it out. The reference keeps it as a frozen `nn.Parameter`, which its parameter
counts include (DiT-XL/2: 675,129,632 with it, 674,834,720 without).

Class dropout for classifier-free guidance (sec. 3.1, "classifier-free guidance"; p = 0.1): the
label tables have the extra null row `num_classes` when `class_dropout_prob > 0`, as the reference.
`cond=None` means the null label. The reference's training-mode `token_drop` is
`model(x, t, y, dropout_key=key)` (or `force_drop_ids=...`); diffjax's training loop does the same
drop itself (`config.model.label_dropout`, diffjax/experiment.py) and calls the model without a key.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from diffjax.models.embeddings import sinusoidal_embedding
from diffjax.models.registry import register

_xavier = nnx.initializers.xavier_uniform()
_normal02 = nnx.initializers.normal(0.02)
_zeros = nnx.initializers.zeros


def _linear(din, dout, rngs, kernel_init=_xavier):
  return nnx.Linear(din, dout, kernel_init=kernel_init, bias_init=_zeros, rngs=rngs)


def linear_view_xavier_init(key, shape, dtype=jnp.float32):
  """xavier-uniform of an HWIO conv kernel on its (out, in k k) view, as the reference does for the
  patch embedding (`xavier_uniform_(w.view([w.shape[0], -1]))`): fan_in = in k k, fan_out = out."""
  fan_in, fan_out = math.prod(shape[:-1]), shape[-1]
  limit = math.sqrt(6.0 / (fan_in + fan_out))
  return jax.random.uniform(key, shape, dtype, -limit, limit)


def torch_conv_bias_init(fan_in):
  """PyTorch's default Conv2d bias init U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
  bound = 1.0 / math.sqrt(fan_in)
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


def sincos_pos_embed_2d(dim, grid_size):
  """The reference's `get_2d_sincos_pos_embed` (from MAE), shape (grid_size^2, dim).

  Token t = row * grid_size + col. The first dim/2 channels encode the column ("w goes first"), the
  last dim/2 the row; each half is [sin, cos] of pos * 10000^(-i / (dim / 4)), i < dim / 4.
  """
  if dim % 4:
    raise ValueError(f"position embedding dim must be divisible by 4, got {dim}")
  omega = 1.0 / 10000 ** (np.arange(dim // 4, dtype=np.float64) / (dim / 4))

  def one_d(pos):
    out = pos.reshape(-1)[:, None] * omega[None]
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)

  rows, cols = np.meshgrid(np.arange(grid_size, dtype=np.float64), np.arange(grid_size, dtype=np.float64),
                           indexing="ij")
  return np.concatenate([one_d(cols), one_d(rows)], axis=1).astype(np.float32)


def drop_labels(labels, num_classes, *, prob=0.0, key=None, force_drop_ids=None):
  """The reference's `LabelEmbedder.token_drop` (classifier-free guidance, Ho & Salimans 2021).

  Args:
    labels: (B,) integer class labels.
    num_classes: the null label id.
    prob: probability of replacing each label by the null label (used with `key`).
    key: PRNG key for the random drop; None with `force_drop_ids` None returns `labels`.
    force_drop_ids: optional (B,) array; where it equals 1 the label is dropped (overrides `key`).

  Returns:
    (B,) labels with the dropped ones set to `num_classes`.
  """
  if force_drop_ids is not None:
    drop = jnp.asarray(force_drop_ids) == 1
  elif key is not None:
    drop = jax.random.uniform(key, labels.shape) < prob
  else:
    return labels
  return jnp.where(drop, num_classes, labels)


class TimestepEmbedder(nnx.Module):
  """[cos, sin] features of t (256 dims, max period 10^4) -> Linear - SiLU - Linear (DiT, DiCo)."""

  def __init__(self, dim, *, frequency_dim=256, rngs):
    self.frequency_dim = frequency_dim
    self.fc1 = _linear(frequency_dim, dim, rngs, _normal02)
    self.fc2 = _linear(dim, dim, rngs, _normal02)

  def __call__(self, t):
    return self.fc2(nnx.silu(self.fc1(sinusoidal_embedding(t, self.frequency_dim))))


class LabelEmbedder(nnx.Module):
  """Class table of widths `dims` (one table per width: DiCo uses three), ~ N(0, 0.02^2).

  Has num_classes + 1 rows when `class_dropout_prob > 0`; row num_classes is the null label.
  """

  def __init__(self, num_classes, dims, *, class_dropout_prob=0.1, rngs):
    if not 0.0 <= class_dropout_prob < 1.0:
      raise ValueError(f"class_dropout_prob must be in [0, 1), got {class_dropout_prob!r}")
    self.num_classes = num_classes
    self.class_dropout_prob = class_dropout_prob
    self.has_null = class_dropout_prob > 0
    rows = num_classes + int(self.has_null)
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    self.single = len(dims) == 1
    self.tables = nnx.List([nnx.Embed(rows, d, embedding_init=_normal02, rngs=rngs) for d in dims])

  def labels(self, batch, cond=None, *, dropout_key=None, force_drop_ids=None):
    """The labels to embed: `cond` (None = the null label) after the optional class dropout."""
    dropping = dropout_key is not None or force_drop_ids is not None
    if (cond is None or dropping) and not self.has_null:
      raise ValueError("this model was built with class_dropout_prob=0, so it has no null class: pass integer "
                       "labels as cond and no dropout_key / force_drop_ids")
    if cond is None:
      return jnp.full((batch,), self.num_classes, jnp.int32)
    return drop_labels(jnp.asarray(cond), self.num_classes, prob=self.class_dropout_prob, key=dropout_key,
                       force_drop_ids=force_drop_ids)

  def __call__(self, labels):
    embs = [table(labels) for table in self.tables]
    return embs[0] if self.single else embs


def modulate(x, shift, scale):
  """x (B, ..., D) * (1 + scale) + shift, with (B, D) shift and scale broadcast over the middle axes."""
  expand = (slice(None),) + (None,) * (x.ndim - 2)
  return x * (1 + scale[expand]) + shift[expand]


class Attention(nnx.Module):
  """timm `Attention(qkv_bias=True)`: fused qkv [q | k | v], heads contiguous, scale head_dim^-1/2."""

  def __init__(self, dim, num_heads, *, rngs):
    if dim % num_heads:
      raise ValueError(f"hidden_size {dim} must be divisible by num_heads {num_heads}")
    self.num_heads = num_heads
    self.qkv = _linear(dim, 3 * dim, rngs)
    self.proj = _linear(dim, dim, rngs)

  def __call__(self, x):
    b, n, d = x.shape
    h = self.num_heads
    qkv = self.qkv(x).reshape(b, n, 3, h, d // h)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # (B, N, H, hd)
    logits = jnp.einsum("bnhd,bmhd->bhnm", q, k) / math.sqrt(d // h)
    out = jnp.einsum("bhnm,bmhd->bnhd", jax.nn.softmax(logits, axis=-1), v)
    return self.proj(out.reshape(b, n, d))


class DiTBlock(nnx.Module):
  """adaLN-Zero transformer block (Peebles & Xie 2023, sec. 3.2, Fig. 3): MLP GELU is tanh-approx."""

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
    patch_size: p (2, 4 or 8 in the paper).
    hidden_size, depth, num_heads, mlp_ratio: the transformer (Table 1: S 384/12/6, B 768/12/12,
      L 1024/24/16, XL 1152/28/16; mlp_ratio 4).
    num_classes: class-conditional if set; None for an unconditional model.
    class_dropout_prob: > 0 adds the null row to the label table (0.1 in the paper) and is the drop
      probability used with `dropout_key`.
    learn_sigma: output 2C channels (eps and the variance interpolation v, sec. 3.1), as the paper.
  """

  def __init__(self, in_channels=4, *, input_size=32, patch_size=2, hidden_size=1152, depth=28, num_heads=16,
               mlp_ratio=4.0, num_classes=1000, class_dropout_prob=0.1, learn_sigma=True, rngs):
    if input_size % patch_size:
      raise ValueError(f"input_size {input_size} must be divisible by patch_size {patch_size}")
    self.in_channels, self.patch_size, self.input_size = in_channels, patch_size, input_size
    self.out_channels = 2 * in_channels if learn_sigma else in_channels
    self.num_classes = num_classes
    fan_in = in_channels * patch_size * patch_size
    self.x_embedder = nnx.Conv(in_channels, hidden_size, (patch_size, patch_size), strides=patch_size,
                               padding="VALID", kernel_init=linear_view_xavier_init,
                               bias_init=torch_conv_bias_init(fan_in), rngs=rngs)
    grid = input_size // patch_size
    self.pos_embed = nnx.Variable(jnp.asarray(sincos_pos_embed_2d(hidden_size, grid))[None])  # fixed
    self.t_embedder = TimestepEmbedder(hidden_size, rngs=rngs)
    self.y_embedder = (LabelEmbedder(num_classes, hidden_size, class_dropout_prob=class_dropout_prob, rngs=rngs)
                       if num_classes else None)
    self.blocks = nnx.List([DiTBlock(hidden_size, num_heads, mlp_ratio, rngs=rngs) for _ in range(depth)])
    self.final_norm = nnx.LayerNorm(hidden_size, epsilon=1e-6, use_scale=False, use_bias=False, rngs=rngs)
    self.final_ada = _linear(hidden_size, 2 * hidden_size, rngs, _zeros)
    self.final_linear = _linear(hidden_size, patch_size * patch_size * self.out_channels, rngs, _zeros)

  def unpatchify(self, tokens):
    """(B, T, p p C_out) -> (B, H, W, C_out): the reference's `nhwpqc -> nchpwq`, in NHWC."""
    b, p, c = tokens.shape[0], self.patch_size, self.out_channels
    g = self.input_size // p
    x = tokens.reshape(b, g, g, p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, g * p, g * p, c)

  def embed_condition(self, t, cond=None, *, dropout_key=None, force_drop_ids=None):
    """c = t_emb + y_emb, (B, D)."""
    c = self.t_embedder(t)
    if self.y_embedder is not None:
      c = c + self.y_embedder(self.y_embedder.labels(c.shape[0], cond, dropout_key=dropout_key,
                                                     force_drop_ids=force_drop_ids))
    elif cond is not None or dropout_key is not None or force_drop_ids is not None:
      raise ValueError("class labels / class dropout were given to a DiT built with num_classes=None")
    return c

  def __call__(self, x, t, cond=None, *, dropout_key=None, force_drop_ids=None):
    """Args: x (B, H, W, C); t (B,) or scalar; cond (B,) labels or None (the null label);
    dropout_key / force_drop_ids: optional class dropout, as the reference's training-mode
    `token_drop` (see `drop_labels`). Returns (B, H, W, C_out)."""
    if x.ndim != 4 or x.shape[1:] != (self.input_size, self.input_size, self.in_channels):
      raise ValueError(f"DiT expects x of shape (batch, {self.input_size}, {self.input_size}, {self.in_channels}), "
                       f"got {x.shape}")
    t = jnp.broadcast_to(jnp.asarray(t, x.dtype), (x.shape[0],))
    h = self.x_embedder(x)
    h = h.reshape(h.shape[0], -1, h.shape[-1]) + self.pos_embed[...]
    c = self.embed_condition(t, cond, dropout_key=dropout_key, force_drop_ids=force_drop_ids)
    for block in self.blocks:
      h = block(h, c)
    shift, scale = jnp.split(self.final_ada(nnx.silu(c)), 2, axis=-1)
    return self.unpatchify(self.final_linear(modulate(self.final_norm(h), shift, scale)))


# hidden size, depth, heads (Peebles & Xie 2023, Table 1)
DIT_SIZES = {"s": (384, 12, 6), "b": (768, 12, 12), "l": (1024, 24, 16), "xl": (1152, 28, 16)}
# 8x8x1 class-conditional digits on CPU: 723,844 parameters (+1,536 fixed pos-embed), 7.56 M MACs
DIT_TINY = dict(in_channels=1, input_size=8, patch_size=2, hidden_size=96, depth=4, num_heads=4, num_classes=10,
                learn_sigma=False)


def dit_kwargs(size, patch):
  """Constructor options of DiT-{size}/{patch} (size in DIT_SIZES, patch in 2, 4, 8)."""
  if size not in DIT_SIZES:
    raise ValueError(f"DiT size must be one of {sorted(DIT_SIZES)}, got {size!r}")
  if patch not in (2, 4, 8):
    raise ValueError(f"DiT patch must be one of [2, 4, 8], got {patch!r}")
  hidden, depth, heads = DIT_SIZES[size]
  return dict(hidden_size=hidden, depth=depth, num_heads=heads, patch_size=patch)


def register_all():
  """Registers "dit_{s,b,l,xl}_{2,4,8}" (32x32x4 latents, 1000 classes, learned sigma) and "dit_tiny"."""
  for size in DIT_SIZES:
    for patch in (2, 4, 8):
      register(f"dit_{size}_{patch}", DiT, **dit_kwargs(size, patch))
  register("dit_tiny", DiT, **DIT_TINY)
