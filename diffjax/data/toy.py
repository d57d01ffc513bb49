"""Toy distributions with exact densities, scores and denoisers at every noise level.

These are the oracles of diffjax's tests. For a Gaussian mixture sum_k w_k N(mu_k, Sigma_k) and
a process x_t = alpha(t) x0 + sigma(t) eps, the marginal is again a mixture,

    p_t(x) = sum_k w_k N(x; alpha mu_k, C_k),   C_k = alpha^2 Sigma_k + sigma^2 I,

with responsibilities r_k(x) proportional to w_k N(x; alpha mu_k, C_k), score
grad log p_t(x) = -sum_k r_k C_k^{-1} (x - alpha mu_k), and posterior mean (Tweedie)
E[x0 | x_t = x] = sum_k r_k (mu_k + alpha Sigma_k C_k^{-1} (x - alpha mu_k)).
Only `process.alpha(t)` and `process.sigma(t)` are used. The formulas hold at alpha = 0
(pure noise) and at sigma = 0 (the data itself) as long as every Sigma_k is positive definite.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np


def _as_covs(covs, k, d):
  covs = jnp.asarray(covs)
  if covs.ndim == 0:
    return jnp.broadcast_to(covs * jnp.eye(d), (k, d, d))
  if covs.ndim == 1:  # one isotropic variance per component
    return covs[:, None, None] * jnp.eye(d)[None]
  if covs.ndim == 2:  # diagonal variances per component
    return jax.vmap(jnp.diag)(covs)
  return covs


@jax.tree_util.register_pytree_node_class
class GaussianMixture:
  """sum_k weights[k] N(means[k], covs[k]).

  Args:
    weights: (K,) nonnegative, normalised here.
    means: (K, D).
    covs: scalar (shared isotropic variance), (K,) isotropic variances, (K, D) diagonal
      variances, or (K, D, D) full covariances.
  """

  def __init__(self, weights, means, covs):
    means = jnp.asarray(means)
    if means.ndim != 2:
      raise ValueError(f"means must have shape (K, D), got {means.shape}")
    k, d = means.shape
    weights = jnp.asarray(weights, means.dtype)
    if weights.shape != (k,):
      raise ValueError(f"weights must have shape ({k},), got {weights.shape}")
    self.weights = weights / jnp.sum(weights)
    self.means = means
    self.covs = _as_covs(covs, k, d).astype(means.dtype)
    # C_k(t) = alpha^2 Sigma_k + sigma^2 I shares Sigma_k's eigenvectors: one eigh here replaces a
    # Cholesky factorization per example, component and time in every call.
    self.cov_eigvals, self.cov_eigvecs = jnp.linalg.eigh(self.covs)

  def tree_flatten(self):
    return (self.weights, self.means, self.covs, self.cov_eigvals, self.cov_eigvecs), None

  @classmethod
  def tree_unflatten(cls, aux, children):
    obj = cls.__new__(cls)
    obj.weights, obj.means, obj.covs, obj.cov_eigvals, obj.cov_eigvecs = children
    return obj

  @property
  def dim(self):
    return self.means.shape[1]

  @property
  def num_components(self):
    return self.means.shape[0]

  @property
  def mode_stds(self):
    """Largest standard deviation of each component, (K,)."""
    return jnp.sqrt(jnp.max(jnp.linalg.eigvalsh(self.covs), axis=-1))

  # --- data ----------------------------------------------------------------------------
  def sample(self, key, n):
    k_comp, k_noise = jax.random.split(key)
    comp = jax.random.choice(k_comp, self.num_components, (n,), p=self.weights)
    chol = jnp.linalg.cholesky(self.covs)
    z = jax.random.normal(k_noise, (n, self.dim), self.means.dtype)
    return self.means[comp] + jnp.einsum("nij,nj->ni", chol[comp], z)

  def log_prob(self, x):
    return self._log_prob(x, jnp.ones(x.shape[:1], x.dtype), jnp.zeros(x.shape[:1], x.dtype))

  def mode_of(self, x):
    """Index of the nearest component mean, (B,)."""
    return jnp.argmin(jnp.sum((x[:, None] - self.means[None])**2, -1), axis=-1)

  # --- noisy marginals -------------------------------------------------------------------
  def _coefficients(self, x, t, process):
    t = jnp.broadcast_to(jnp.asarray(t, x.dtype), x.shape[:1])
    return process.alpha(t).astype(x.dtype), process.sigma(t).astype(x.dtype)

  def _parts(self, x, alpha, sigma):
    """Per example and component: log w_k N(x; alpha mu_k, C_k), C_k^{-1}(x - alpha mu_k).

    With Sigma_k = U diag(e) U^T, C_k = U diag(alpha^2 e + sigma^2) U^T.
    """
    d = self.dim
    ev = alpha[:, None, None]**2 * self.cov_eigvals[None] + sigma[:, None, None]**2  # (B, K, D)
    diff = x[:, None, :] - alpha[:, None, None] * self.means[None]  # (B, K, D)
    proj = jnp.einsum("kdj,bkd->bkj", self.cov_eigvecs, diff)
    prec_diff = jnp.einsum("kdj,bkj->bkd", self.cov_eigvecs, proj / ev)
    logdet = jnp.sum(jnp.log(ev), -1)
    log_comp = jnp.log(self.weights)[None] - 0.5 * (jnp.sum(proj**2 / ev, -1) + logdet + d * math.log(2 * math.pi))
    return log_comp, prec_diff

  def _log_prob(self, x, alpha, sigma):
    log_comp, _ = self._parts(x, alpha, sigma)
    return jax.scipy.special.logsumexp(log_comp, axis=-1)

  def marginal_log_prob(self, x, t, process):
    """log p_t(x), (B,)."""
    return self._log_prob(x, *self._coefficients(x, t, process))

  def responsibilities(self, x, t, process):
    """Posterior component probabilities r_k(x_t), (B, K)."""
    log_comp, _ = self._parts(x, *self._coefficients(x, t, process))
    return jax.nn.softmax(log_comp, axis=-1)

  def score(self, x, t, process):
    """grad_x log p_t(x), (B, D)."""
    log_comp, prec_diff = self._parts(x, *self._coefficients(x, t, process))
    r = jax.nn.softmax(log_comp, axis=-1)
    return -jnp.einsum("bk,bkd->bd", r, prec_diff)

  def denoiser(self, x, t, process):
    """E[x0 | x_t = x], (B, D)."""
    alpha, sigma = self._coefficients(x, t, process)
    log_comp, prec_diff = self._parts(x, alpha, sigma)
    r = jax.nn.softmax(log_comp, axis=-1)
    post = self.means[None] + alpha[:, None, None] * jnp.einsum("kij,bkj->bki", self.covs, prec_diff)
    return jnp.einsum("bk,bkd->bd", r, post)


class Gaussian(GaussianMixture):
  """N(mean, cov): a one-component mixture (cov: scalar, (D,) diagonal or (D, D) full)."""

  def __init__(self, mean, cov):
    mean = jnp.atleast_1d(jnp.asarray(mean))
    cov = jnp.asarray(cov, mean.dtype)
    if cov.ndim == 0:
      cov = cov * jnp.eye(mean.shape[0])
    elif cov.ndim == 1:
      cov = jnp.diag(cov)
    super().__init__(jnp.ones((1,), mean.dtype), mean[None], cov[None])


def ring8(radius=2.0, std=0.1):
  """Eight equal Gaussians on a circle of `radius`, isotropic `std` (the "8 Gaussians" toy)."""
  angles = 2 * np.pi * np.arange(8) / 8
  means = radius * np.stack([np.cos(angles), np.sin(angles)], -1)
  return GaussianMixture(np.ones(8), jnp.asarray(means, jnp.float32), jnp.full((8,), std**2, jnp.float32))


def grid25(spacing=1.0, std=0.1):
  """25 equal Gaussians on the 5x5 grid {-2, ..., 2}^2 * spacing, isotropic `std`."""
  c = spacing * np.arange(-2, 3)
  means = np.stack(np.meshgrid(c, c, indexing="ij"), -1).reshape(-1, 2)
  return GaussianMixture(np.ones(25), jnp.asarray(means, jnp.float32), jnp.full((25,), std**2, jnp.float32))


def gaussian(dim=2, mean=0.0, std=1.0):
  """Isotropic N(mean, std^2 I) in `dim` dimensions."""
  return Gaussian(jnp.full((dim,), mean, jnp.float32), jnp.full((dim,), std**2, jnp.float32))


def random_mixture(seed=0, n_components=4, dim=8, scale=2.0, min_std=0.2, max_std=0.6):
  """A random mixture with random means (N(0, scale^2)), weights and full covariances."""
  rng = np.random.default_rng(seed)
  means = rng.normal(0, scale, (n_components, dim))
  weights = rng.uniform(0.5, 1.5, n_components)
  covs = []
  for _ in range(n_components):
    q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    stds = rng.uniform(min_std, max_std, dim)
    covs.append(q @ np.diag(stds**2) @ q.T)
  return GaussianMixture(weights, jnp.asarray(means, jnp.float32), jnp.asarray(np.stack(covs), jnp.float32))


_TOYS = {"ring8": ring8, "grid25": grid25, "gaussian": gaussian, "mixture": random_mixture}


def list_toys():
  return sorted(_TOYS)


def get_toy(name, **options):
  """A toy distribution by name (`list_toys()`) with keyword options of its constructor."""
  if name not in _TOYS:
    raise ValueError(f"unknown toy distribution {name!r}; valid: {list_toys()}")
  try:
    return _TOYS[name](**options)
  except TypeError as e:
    raise ValueError(f"invalid options for toy distribution {name!r}: {e}") from None
