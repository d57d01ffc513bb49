"""Fréchet distance, KID and Inception Score from features or class probabilities (float64 NumPy).

  FD  = ||mu_1 - mu_2||^2 + tr(S_1 + S_2 - 2 (S_1^{1/2} S_2 S_1^{1/2})^{1/2})    (Heusel et al. 2017, eq. 6)
  KID = unbiased MMD^2 with the kernel k(x, y) = (x.y / d + 1)^3, averaged over random subsets
        (Binkowski et al. 2018, sec. 3; torch-fidelity's defaults: 100 subsets of 1,000)
  IS  = exp(E_x KL(p(y|x) || p(y))), mean and std over 10 splits            (Salimans et al. 2016)

The matrix square root uses symmetric eigendecompositions: tr((S_1^{1/2} S_2 S_1^{1/2})^{1/2}) is
the sum of the square roots of the (clipped non-negative) eigenvalues of the symmetric PSD matrix
S_1^{1/2} S_2 S_1^{1/2}. This equals pytorch-fid's `sqrtm(S_1 S_2)` trace without its complex
round-off and eps-offset fallback.

FID proper is this distance in the pool features of the FID Inception-v3; these functions take any
features (e.g. `diffjax.metrics.digits_classifier` on 8x8 digits).
"""
import numpy as np
from tqdm.auto import tqdm


def _psd_sqrt(s):
  w, v = np.linalg.eigh(s)
  return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def _check_stats(mu, sigma, name):
  mu, sigma = np.asarray(mu, np.float64), np.asarray(sigma, np.float64)
  if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
    raise ValueError(f"{name}: mu must have shape (d,) and sigma (d, d), got {mu.shape} and {sigma.shape}")
  return mu, 0.5 * (sigma + sigma.T)


def frechet_distance(mu1, sigma1, mu2, sigma2):
  """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64."""
  mu1, sigma1 = _check_stats(mu1, sigma1, "frechet_distance (first)")
  mu2, sigma2 = _check_stats(mu2, sigma2, "frechet_distance (second)")
  if mu1.shape != mu2.shape:
    raise ValueError(f"frechet_distance: feature sizes differ, {mu1.shape} and {mu2.shape}")
  r1 = _psd_sqrt(sigma1)
  m = r1 @ sigma2 @ r1
  tr_covmean = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh(0.5 * (m + m.T)), 0.0, None)))
  diff = mu1 - mu2
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)


def feature_statistics(features):
  """(mean, unbiased covariance) of (N, d) features, float64."""
  f = np.asarray(features, np.float64)
  if f.ndim != 2 or f.shape[0] < 2:
    raise ValueError(f"features must have shape (N >= 2, d), got {f.shape}")
  return f.mean(0), np.cov(f, rowvar=False)


def fid_from_features(features1, features2):
  """Fréchet distance between the Gaussian fits of two feature sets."""
  return frechet_distance(*feature_statistics(features1), *feature_statistics(features2))


def kid_from_features(features1, features2, *, num_subsets=100, subset_size=1000, seed=0):
  """Kernel Inception Distance: (mean, std) over subsets of the unbiased MMD^2 with the cubic
  polynomial kernel; subset_size is capped by the smaller set."""
  f1, f2 = np.asarray(features1, np.float64), np.asarray(features2, np.float64)
  if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1]:
    raise ValueError(f"kid_from_features: features must be (N, d) with equal d, got {f1.shape} and {f2.shape}")
  m = min(subset_size, f1.shape[0], f2.shape[0])
  if m < 2:
    raise ValueError("kid_from_features: need at least 2 samples per set")
  d = f1.shape[1]
  rng = np.random.default_rng(seed)
  values = []
  for _ in range(num_subsets):
    x = f1[rng.choice(f1.shape[0], m, replace=False)]
    y = f2[rng.choice(f2.shape[0], m, replace=False)]
    values.append(unbiased_mmd2(x, y, lambda a, b: (a @ b.T / d + 1.0)**3))
  return float(np.mean(values)), float(np.std(values))


def unbiased_mmd2(x, y, kernel):
  """Unbiased MMD^2 estimate (Gretton et al. 2012, eq. 3) with `kernel(a, b) -> Gram matrix`."""
  m, n = x.shape[0], y.shape[0]
  kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
  return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
               - 2.0 * kxy.mean())


def inception_score_from_probs(probs, *, splits=10):
  """(mean, std) over `splits` of exp(E_x KL(p(y|x) || p(y))) from class probabilities (N, K)."""
  p = np.asarray(probs, np.float64)
  if p.ndim != 2 or p.shape[0] < splits:
    raise ValueError(f"inception_score_from_probs: probs must be (N >= splits, K), got {p.shape}")
  scores = []
  for part in np.array_split(p, splits):
    marginal = part.mean(0, keepdims=True)
    kl = np.sum(part * (np.log(np.clip(part, 1e-30, None)) - np.log(np.clip(marginal, 1e-30, None))), axis=1)
    scores.append(np.exp(kl.mean()))
  return float(np.mean(scores)), float(np.std(scores))


def inception_score_from_logits(logits, *, splits=10):
  """Inception Score from logits (softmax taken here)."""
  z = np.asarray(logits, np.float64)
  z = z - z.max(axis=1, keepdims=True)
  p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
  return inception_score_from_probs(p, splits=splits)


def compute_statistics(images, feature_fn, *, batch_size=250, progress=True):
  """(mu, sigma) of `feature_fn(batch)` over `images`, batched, with a progress bar."""
  feats = [np.asarray(feature_fn(images[i:i + batch_size]))
           for i in tqdm(range(0, len(images), batch_size), desc="features", disable=not progress)]
  return feature_statistics(np.concatenate(feats))


def save_statistics(path, mu, sigma):
  """Writes reference statistics as pytorch-fid / ADM do: an `.npz` with `mu` and `sigma`."""
  np.savez(path, mu=np.asarray(mu, np.float64), sigma=np.asarray(sigma, np.float64))


def load_statistics(path):
  """Reads `mu`, `sigma` from an `.npz` (pytorch-fid / ADM reference batches also store them so)."""
  with np.load(path) as f:
    if "mu" not in f.files or "sigma" not in f.files:
      raise ValueError(f"load_statistics: {path} must contain arrays 'mu' and 'sigma', has {sorted(f.files)}")
    return _check_stats(f["mu"], f["sigma"], "load_statistics")
