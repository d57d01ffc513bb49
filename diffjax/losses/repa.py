"""REPA: representation alignment as a regulariser (Yu et al. 2025, "Representation Alignment for
Generation: Training Diffusion Transformers Is Easier Than You Think"; official `sihyun-yu/REPA`).

An intermediate hidden state of the denoiser, h (tokens, shape (B, N, D), or a feature map
(B, H, W, D) flattened to tokens), is mapped by a small MLP projector to the feature size of a
frozen encoder and aligned with that encoder's patch features z* of the clean image:

  L_REPA = - mean_{batch, tokens} cos(projector(h), z*)                 (paper eq. 8)
  L = L_diffusion + lambda L_REPA,   lambda = 0.5 (`proj_coeff` in the official code).

The projector is Linear(D, 2048) - SiLU - Linear(2048, 2048) - SiLU - Linear(2048, z_dim) as in
the official `build_mlp`; its parameters train with the model. The frozen encoder is any callable
`encoder(x0) -> (B, N, z_dim)` (e.g. DINOv2 patch tokens, loaded by the user); the token counts of h
and z* must match (the official code resizes images so that SiT/2's 256 tokens match DINOv2's 16x16).
"""
import jax
import jax.numpy as jnp
from flax import nnx


class Projector(nnx.Module):
  """REPA's projector MLP from hidden size `in_dim` to the encoder's feature size `z_dim`."""

  def __init__(self, in_dim, z_dim, *, hidden_dim=2048, rngs):
    self.fc1 = nnx.Linear(in_dim, hidden_dim, rngs=rngs)
    self.fc2 = nnx.Linear(hidden_dim, hidden_dim, rngs=rngs)
    self.fc3 = nnx.Linear(hidden_dim, z_dim, rngs=rngs)

  def __call__(self, h):
    return self.fc3(nnx.silu(self.fc2(nnx.silu(self.fc1(h)))))


def as_tokens(h):
  """(B, H, W, D) feature maps or (B, N, D) tokens as (B, N, D) tokens."""
  if h.ndim == 4:
    return h.reshape(h.shape[0], -1, h.shape[-1])
  if h.ndim != 3:
    raise ValueError(f"hidden states must have shape (B, N, D) or (B, H, W, D), got {h.shape}")
  return h


def repa_alignment_loss(projected, target, eps=1e-12):
  """- mean over batch and tokens of cos(projected, target); both (B, N, z_dim)."""
  if projected.shape != target.shape:
    raise ValueError(f"projected hidden states {projected.shape} and encoder features {target.shape} "
                     "must have the same shape (match the token counts)")
  norm = lambda v: v / jnp.maximum(jnp.linalg.norm(v, axis=-1, keepdims=True), eps)
  return -jnp.mean(jnp.sum(norm(projected) * norm(target), axis=-1))


def repa_loss(diffusion_loss, hidden, encoder_features, projector, weight=0.5):
  """L_diffusion + weight * L_REPA, with the encoder features held fixed (stop-gradient).

  Args:
    diffusion_loss: the scalar denoising loss of the batch.
    hidden: the denoiser's hidden state at the aligned layer, (B, N, D) or (B, H, W, D).
    encoder_features: the frozen encoder's features of the clean batch, (B, N, z_dim).
    projector: `Projector` (or any callable (B, N, D) -> (B, N, z_dim)).
    weight: lambda (0.5 in the paper).

  Returns:
    (total loss, {"repa": alignment loss}).
  """
  align = repa_alignment_loss(projector(as_tokens(hidden)), jax.lax.stop_gradient(encoder_features))
  return diffusion_loss + weight * align, {"repa": align}
