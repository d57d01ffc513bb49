"""The empirical distribution of a finite point set, and its exact perturbed marginals and denoiser.

For data p_0 = (1/M) sum_i delta(x - x_i) and any forward kernel q(x_t | x_0) (a process's
`kernel_logpdf`: Gaussian for the diffusion processes, the Student-t of PFGM++), the marginal is
the mixture p_t(y) = (1/M) sum_i q(y | x_i) and the minimiser of the denoising loss is the
posterior mean

    D*(y, t) = E[x_0 | x_t = y] = sum_i w_i(y) x_i,   w_i ∝ q(y | x_i),

which is the "ideal denoiser" of Karras et al. 2022 (eq. 57) and the large-batch target of the
official PFGM++ loss (`pfgmv2_target`, whose weights are (||y - x_i||^2 + r^2)^(-(N+D)/2)). It is
exact for every process, which makes it the oracle of the PFGM++-to-EDM convergence tests and
an exact stand-in for a trained network in sampler studies.
"""
import math

import jax
import jax.numpy as jnp


class EmpiricalDistribution:
  """Uniform weights on `points` (M, ...); methods take a batch y (B, ...) and a time t."""

  def __init__(self, points):
    self.points = jnp.asarray(points)

  @property
  def num_points(self):
    return self.points.shape[0]

  def _log_kernel(self, y, t, process):
    """(B, M) log q(y_b | x_i)."""
    t = jnp.broadcast_to(jnp.asarray(t, y.dtype), y.shape[:1])

    def one(y_b, t_b):
      y_rep = jnp.broadcast_to(y_b, self.points.shape)
      return process.kernel_logpdf(y_rep, self.points, jnp.full((self.num_points,), t_b))

    return jax.vmap(one)(y, t)

  def marginal_log_prob(self, y, t, process):
    """log p_t(y) = logsumexp_i log q(y | x_i) - log M, (B,)."""
    return jax.scipy.special.logsumexp(self._log_kernel(y, t, process), axis=-1) - math.log(self.num_points)

  def posterior_weights(self, y, t, process):
    """w_i(y) = q(y | x_i) / sum_j q(y | x_j), (B, M)."""
    return jax.nn.softmax(self._log_kernel(y, t, process), axis=-1)

  def denoiser(self, y, t, process):
    """E[x_0 | x_t = y] (B, ...)."""
    w = self.posterior_weights(y, t, process)
    return jnp.tensordot(w, self.points, axes=1)
