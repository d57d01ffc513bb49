"""Fréchet distance, KID and Inception Score from features or class probabilities (float64 NumPy).

  FD  = ||mu_1 - mu_2||^2 + tr(S_1 + S_2 - 2 (S_1^{1/2} S_2 S_1^{1/2})^{1/2})    (Heusel et al. 2017, eq. 6)
  KID = unbiased MMD^2 with the kernel k(x, y) = (x.y / d + 1)^3, averaged over random subsets
        (Binkowski et al. 2018, sec. 3; torch-fidelity's defaults: 100 subsets of 1,000)
  IS  = exp(E_x KL(p(y|x) || p(y))), mean and std over 10 splits            (Salimans et al. 2016)

Matrix square root (method="eigh", the default): with R_i = S_i^{1/2} from a symmetric
eigendecomposition (eigenvalues clipped at 0), (R_1 R_2)(R_1 R_2)^T = R_1 S_2 R_1, so
tr((S_1^{1/2} S_2 S_1^{1/2})^{1/2}) is the sum of the singular values of R_1 R_2 (its nuclear norm).
Singular values carry no square-root amplification of round-off: for rank-deficient covariances
(fewer samples than feature dimensions) the distance of a set to itself is ~1e-10, where the
square roots of the eigenvalues of R_1 S_2 R_1 give ~1e-3 at d = 2048. method="sqrtm" is
pytorch-fid's `calculate_frechet_distance`: `scipy.linalg.sqrtm(S_1 S_2)`, retried with eps added
to both diagonals if not finite, and rejected if the diagonal has an imaginary part above 1e-3.

FID proper is this distance in the pool features of the FID Inception-v3
(`diffjax.metrics.inception`); these functions take any features (e.g.
`diffjax.metrics.digits_classifier` on 8x8 digits).
"""
import jax
import numpy as np
import scipy.linalg
from tqdm.auto import tqdm

METHODS = ("eigh", "sqrtm")


def _psd_sqrt(s):
  """Symmetric square root of a symmetric PSD matrix (negative round-off eigenvalues -> 0)."""
  w, v = np.linalg.eigh(s)
  return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def _check_stats(mu, sigma, mu_name, sigma_name):
  mu, sigma = np.asarray(mu, np.float64), np.asarray(sigma, np.float64)
  if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
    raise ValueError(f"{mu_name} must have shape (d,) and {sigma_name} (d, d), got {mu.shape} and {sigma.shape}")
  return mu, sigma


def _trace_sqrt_product_eigh(sigma1, sigma2):
  """tr((S1^{1/2} S2 S1^{1/2})^{1/2}) = ||S1^{1/2} S2^{1/2}||_* (nuclear norm)."""
  return float(np.sum(np.linalg.svd(_psd_sqrt(sigma1) @ _psd_sqrt(sigma2), compute_uv=False)))


def _trace_sqrt_product_sqrtm(sigma1, sigma2, eps):
  """pytorch-fid's tr(sqrtm(S1 S2)): eps-offset retry, imaginary-component check."""
  covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
  if not np.isfinite(covmean).all():
    offset = np.eye(sigma1.shape[0]) * eps
    covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
  if np.iscomplexobj(covmean):
    imag = np.max(np.abs(np.diagonal(covmean).imag))
    if imag > 1e-3:
      raise ValueError(f"frechet_distance(method='sqrtm'): sqrtm(sigma1 @ sigma2) has an imaginary "
                       f"component {imag:.3g} on its diagonal; method='eigh' avoids it")
    covmean = covmean.real
  return float(np.trace(covmean))


def frechet_distance(mu1, sigma1, mu2, sigma2, *, method="eigh", eps=1e-6):
  """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (Heusel et al. 2017, eq. 6), float64.

  Args:
    mu1, sigma1: mean (d,) and covariance (d, d) of the first Gaussian.
    mu2, sigma2: the same for the second.
    method: "eigh" (nuclear norm of S1^{1/2} S2^{1/2}; see the module docstring) or "sqrtm"
      (pytorch-fid's scipy.linalg.sqrtm of S1 S2).
    eps: the diagonal offset of the "sqrtm" retry when sqrtm(S1 S2) is not finite.

  Returns:
    ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1^{1/2} S2 S1^{1/2})^{1/2}) as a Python float.
  """
  mu1, sigma1 = _check_stats(mu1, sigma1, "mu1", "sigma1")
  mu2, sigma2 = _check_stats(mu2, sigma2, "mu2", "sigma2")
  if mu1.shape != mu2.shape:
    raise ValueError(f"frechet_distance: feature sizes differ, mu1 {mu1.shape} and mu2 {mu2.shape}")
  sigma1, sigma2 = 0.5 * (sigma1 + sigma1.T), 0.5 * (sigma2 + sigma2.T)
  if method == "eigh":
    tr_covmean = _trace_sqrt_product_eigh(sigma1, sigma2)
  elif method == "sqrtm":
    tr_covmean = _trace_sqrt_product_sqrtm(sigma1, sigma2, eps)
  else:
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")
  diff = mu1 - mu2
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)


def _check_features(features, name, min_rows=2):
  f = np.asarray(features, np.float64)
  if f.ndim != 2 or f.shape[0] < min_rows:
    raise ValueError(f"{name} must have shape (N >= {min_rows}, d), got {f.shape}")
  return f


def feature_statistics(features):
  """(mean, unbiased covariance) of (N, d) features, float64 (pytorch-fid's `np.cov(rowvar=False)`)."""
  f = _check_features(features, "features")
  return f.mean(0), np.cov(f, rowvar=False)


def _check_pair(features1, features2, fn):
  f1, f2 = _check_features(features1, "features1"), _check_features(features2, "features2")
  if f1.shape[1] != f2.shape[1]:
    raise ValueError(f"{fn}: features1 and features2 must have the same d, got {f1.shape} and {f2.shape}")
  return f1, f2


def fid_from_features(features1, features2, *, method="eigh"):
  """Fréchet distance between the Gaussian fits of two (N, d) feature sets, float64."""
  f1, f2 = _check_pair(features1, features2, "fid_from_features")
  return frechet_distance(*feature_statistics(f1), *feature_statistics(f2), method=method)


def polynomial_kernel(x, y, degree=3, gamma=None, coef0=1.0):
  """k(x, y) = (gamma x.y + coef0)^degree, gamma = 1/d by default (Binkowski et al. 2018)."""
  gamma = 1.0 / x.shape[1] if gamma is None else gamma
  return (gamma * (x @ y.T) + coef0)**degree


def unbiased_mmd2(x, y, kernel=polynomial_kernel):
  """Unbiased MMD^2 (Gretton et al. 2012, eq. 3) with `kernel(a, b) -> Gram matrix`."""
  m, n = x.shape[0], y.shape[0]
  kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
  return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
               - 2.0 * kxy.mean())


def kid_from_features(features1, features2, *, num_subsets=100, subset_size=1000, seed=0):
  """Kernel Inception Distance (Binkowski et al. 2018, sec. 3), torch-fidelity's estimator.

  Args:
    features1, features2: (N1, d), (N2, d) features.
    num_subsets: number of random subset pairs.
    subset_size: samples per subset (drawn without replacement), capped by min(N1, N2).
    seed: seed of the subset draws.

  Returns:
    (mean, std) over subsets of the unbiased MMD^2 with the kernel (x.y / d + 1)^3.
  """
  f1, f2 = _check_pair(features1, features2, "kid_from_features")
  if num_subsets < 1:
    raise ValueError(f"num_subsets must be >= 1, got {num_subsets}")
  if subset_size < 2:
    raise ValueError(f"subset_size must be >= 2, got {subset_size}")
  m = min(subset_size, f1.shape[0], f2.shape[0])
  rng = np.random.default_rng(seed)
  values = []
  for _ in range(num_subsets):
    x = f1[rng.choice(f1.shape[0], m, replace=False)]
    y = f2[rng.choice(f2.shape[0], m, replace=False)]
    values.append(unbiased_mmd2(x, y))
  return float(np.mean(values)), float(np.std(values))


def inception_score_from_probs(probs, *, splits=10):
  """Inception Score (Salimans et al. 2016) from class probabilities.

  Args:
    probs: (N, K) rows of p(y|x), N >= splits.
    splits: the samples are cut into this many consecutive parts (np.array_split).

  Returns:
    (mean, std) over the parts of exp(mean_x KL(p(y|x) || p(y))), p(y) the part's mean.
  """
  p = np.asarray(probs, np.float64)
  if splits < 1:
    raise ValueError(f"splits must be >= 1, got {splits}")
  if p.ndim != 2 or p.shape[0] < splits:
    raise ValueError(f"probs must have shape (N >= splits = {splits}, K), got {p.shape}")
  scores = []
  for part in np.array_split(p, splits):
    marginal = part.mean(0, keepdims=True)
    kl = np.sum(part * (np.log(np.clip(part, 1e-30, None)) - np.log(np.clip(marginal, 1e-30, None))), axis=1)
    scores.append(np.exp(kl.mean()))
  return float(np.mean(scores)), float(np.std(scores))


def inception_score_from_logits(logits, *, splits=10):
  """Inception Score from (N, K) logits (softmax in float64 here).

  The score of Salimans et al. and torch-fidelity uses the FID Inception's 1008 logits without the
  fc bias: `inception.make_feature_fn(net, "logits_unbiased")`.
  """
  z = np.asarray(logits, np.float64)
  if z.ndim != 2:
    raise ValueError(f"logits must have shape (N, K), got {z.shape}")
  z = z - z.max(axis=1, keepdims=True)
  p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
  return inception_score_from_probs(p, splits=splits)


def _batches(images, batch_size, pad_last):
  """(batch, number of real rows) of an array, the last one padded by repeating its last row."""
  n = len(images)
  for start in range(0, n, batch_size):
    batch = images[start:start + batch_size]
    rows = len(batch)
    if pad_last and start > 0 and rows < batch_size:
      xp = jax.numpy if isinstance(batch, jax.Array) else np
      batch = xp.concatenate([batch, xp.repeat(batch[-1:], batch_size - rows, axis=0)])
    yield batch, rows


def compute_features(images, feature_fn, *, batch_size=250, progress=True, pad_last=True):
  """Features of all images, batched, with a tqdm progress bar.

  Args:
    images: an array (N, ...) (cut into batches of `batch_size`), or an iterable of batches (e.g. a
      generator of sampler outputs).
    feature_fn: batch -> (B, d) features, e.g. `inception.make_feature_fn(net)`.
    batch_size: rows per call for an array input.
    progress: show the progress bar.
    pad_last: pad a short last batch of an array to `batch_size` (so a jitted `feature_fn` is not
      compiled again) and drop the padded rows' features.

  Returns:
    (N, d) NumPy features.
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  if hasattr(images, "shape") and hasattr(images, "__getitem__"):
    if len(images) == 0:
      raise ValueError("images must hold at least one image, got an empty array")
    batches = _batches(images, batch_size, pad_last)
    total = -(-len(images) // batch_size)
  else:
    batches, total = ((batch, len(batch)) for batch in images), None
  feats = []
  for batch, rows in tqdm(batches, total=total, desc="features", unit="batch", disable=not progress):
    f = np.asarray(feature_fn(batch))
    if f.ndim != 2 or f.shape[0] < rows:
      raise ValueError(f"feature_fn must map a batch of {rows} to features (B, d), got shape {f.shape}")
    feats.append(f[:rows])
  if not feats:
    raise ValueError("images must hold at least one batch, got an empty iterable")
  return np.concatenate(feats)


def compute_statistics(images, feature_fn, *, batch_size=250, progress=True, pad_last=True):
  """(mu, sigma) in float64 of `feature_fn` over `images`; see `compute_features` for the arguments."""
  return feature_statistics(compute_features(images, feature_fn, batch_size=batch_size, progress=progress,
                                             pad_last=pad_last))


def save_statistics(path, mu, sigma):
  """Writes reference statistics as pytorch-fid's `--save-stats` does: an `.npz` with `mu`, `sigma`."""
  mu, sigma = _check_stats(mu, sigma, "mu", "sigma")
  np.savez(path, mu=mu, sigma=sigma)


def load_statistics(path):
  """(mu, sigma) in float64 from an `.npz` holding `mu` and `sigma` (pytorch-fid's `--save-stats`,
  TTUR's precomputed statistics, ADM's reference batches)."""
  with np.load(path) as f:
    if "mu" not in f.files or "sigma" not in f.files:
      raise ValueError(f"load_statistics: {path} must contain arrays 'mu' and 'sigma', has {sorted(f.files)}")
    return _check_stats(f["mu"], f["sigma"], "mu", "sigma")
