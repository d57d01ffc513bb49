"""Time-conditioned residual MLP for vector data (2-D toys, low-dimensional mixtures)."""
import jax.numpy as jnp
from flax import nnx

from diffjax.models.embeddings import NoiseEmbedding


class ResidualBlock(nnx.Module):
  """x + Linear(SiLU(Linear(SiLU(LN(x)) + emb)))."""

  def __init__(self, width, *, layer_norm, rngs):
    self.norm = nnx.LayerNorm(width, rngs=rngs) if layer_norm else None
    self.fc1 = nnx.Linear(width, width, rngs=rngs)
    self.emb = nnx.Linear(width, width, rngs=rngs)
    self.fc2 = nnx.Linear(width, width, rngs=rngs)

  def __call__(self, x, emb):
    h = self.norm(x) if self.norm is not None else x
    h = self.fc1(nnx.silu(h)) + self.emb(nnx.silu(emb))
    return x + self.fc2(nnx.silu(h))


class MLP(nnx.Module):
  """`MLP(x, t, cond=None)`: x (B, in_features), noise label t (B,), optional class label (B,).

  Args:
    in_features: data dimension.
    width: hidden width.
    num_blocks: residual blocks, each conditioned on the noise (and class) embedding.
    num_classes: if set, a learned class embedding; label `num_classes` is the null label.
    layer_norm: LayerNorm at the start of each block.
    zero_init_output: start with output exactly 0 (a common choice for EDM's F).
    embedding: "sinusoidal" or "fourier" noise features.
  """

  def __init__(self, in_features, *, width=256, num_blocks=3, num_classes=None, layer_norm=False,
               zero_init_output=False, embedding="sinusoidal", rngs):
    self.in_features = in_features
    self.embed = NoiseEmbedding(width, kind=embedding, num_classes=num_classes, rngs=rngs)
    self.fc_in = nnx.Linear(in_features, width, rngs=rngs)
    self.blocks = nnx.List([ResidualBlock(width, layer_norm=layer_norm, rngs=rngs) for _ in range(num_blocks)])
    init = nnx.initializers.zeros if zero_init_output else nnx.initializers.lecun_normal()
    self.fc_out = nnx.Linear(width, in_features, kernel_init=init, rngs=rngs)

  def features(self, x, t, cond=None):
    """The last hidden activations, (B, width): what a discriminator head reads (DMD2's GAN head
    sits on the fake score's bottleneck)."""
    if x.ndim != 2 or x.shape[-1] != self.in_features:
      raise ValueError(f"MLP expects x of shape (batch, {self.in_features}), got {x.shape}")
    t = jnp.broadcast_to(jnp.asarray(t, x.dtype), (x.shape[0],))
    emb = self.embed(t, cond)
    h = self.fc_in(x)
    for block in self.blocks:
      h = block(h, emb)
    return nnx.silu(h)

  def __call__(self, x, t, cond=None):
    return self.fc_out(self.features(x, t, cond))
