"""Noise-level embeddings shared by the networks."""
import math

import jax
import jax.numpy as jnp
from flax import nnx


def sinusoidal_embedding(t, dim, max_period=10_000.0):
  """Transformer/DDPM sinusoidal features of a per-example scalar (Vaswani et al. 2017; Ho et al. 2020).

  Args:
    t: noise labels, shape (B,) or scalar.
    dim: even embedding size.
    max_period: the longest wavelength.

  Returns:
    (B, dim) features [cos(t w_k), sin(t w_k)], w_k = max_period^(-k / (dim / 2)).
  """
  if dim % 2:
    raise ValueError(f"embedding dim must be even, got {dim}")
  t = jnp.atleast_1d(jnp.asarray(t, jnp.float32))
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args = t[:, None] * freqs[None]
  return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


class FourierFeatures(nnx.Module):
  """Gaussian random Fourier features of log-noise (score_sde NCSN++ `GaussianFourierProjection`)."""

  def __init__(self, dim, scale=16.0, *, rngs):
    if dim % 2:
      raise ValueError(f"embedding dim must be even, got {dim}")
    self.w = nnx.Variable(jax.random.normal(rngs.params(), (dim // 2,)) * scale)  # fixed, not trained

  def __call__(self, t):
    t = jnp.atleast_1d(jnp.asarray(t, jnp.float32))
    args = 2 * math.pi * t[:, None] * self.w.value[None]
    return jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)


class NoiseEmbedding(nnx.Module):
  """Noise label -> sinusoidal (or Fourier) features -> Linear-SiLU-Linear, plus an optional class embedding.

  Class label `num_classes` is the null label used for classifier-free guidance.
  """

  def __init__(self, dim, *, frequency_dim=128, kind="sinusoidal", num_classes=None, rngs):
    if kind not in ("sinusoidal", "fourier"):
      raise ValueError(f"embedding kind must be 'sinusoidal' or 'fourier', got {kind!r}")
    self.frequency_dim = frequency_dim
    self.fourier = FourierFeatures(frequency_dim, rngs=rngs) if kind == "fourier" else None
    self.fc1 = nnx.Linear(frequency_dim, dim, rngs=rngs)
    self.fc2 = nnx.Linear(dim, dim, rngs=rngs)
    self.num_classes = num_classes
    self.class_embed = nnx.Embed(num_classes + 1, dim, rngs=rngs) if num_classes else None

  def __call__(self, t, cond=None):
    feats = self.fourier(t) if self.fourier is not None else sinusoidal_embedding(t, self.frequency_dim)
    emb = self.fc2(nnx.silu(self.fc1(feats)))
    if self.class_embed is not None:
      if cond is None:
        cond = jnp.full((emb.shape[0],), self.num_classes, jnp.int32)
      emb = emb + self.class_embed(cond)
    elif cond is not None:
      raise ValueError("a class label was given to a model built without num_classes")
    return emb
