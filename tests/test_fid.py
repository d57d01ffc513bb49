"""Fréchet distance, KID and IS against closed forms and direct computations (float64)."""
import numpy as np
import pytest

from diffjax.metrics import fid


def _random_cov(rng, d):
  a = rng.standard_normal((d, d))
  return a @ a.T / d + 0.1 * np.eye(d)


def test_distance_of_a_set_with_itself_is_zero():
  f = np.random.default_rng(0).standard_normal((500, 16))
  assert abs(fid.fid_from_features(f, f)) < 1e-8


def test_commuting_covariances_closed_form():
  mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, -1.0])
  a, b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
  expected = np.sum((mu1 - mu2)**2) + np.sum((np.sqrt(a) - np.sqrt(b))**2)
  assert fid.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-12)


def test_full_covariances_against_the_definition():
  rng = np.random.default_rng(1)
  s1, s2 = _random_cov(rng, 6), _random_cov(rng, 6)
  mu1, mu2 = rng.standard_normal(6), rng.standard_normal(6)
  # tr((S1^1/2 S2 S1^1/2)^1/2) = sum of sqrt of the eigenvalues of S1 S2 (similar matrices)
  tr = np.sum(np.sqrt(np.linalg.eigvals(s1 @ s2).real))
  expected = np.sum((mu1 - mu2)**2) + np.trace(s1) + np.trace(s2) - 2 * tr
  assert fid.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-10)
  # symmetric in its arguments
  assert fid.frechet_distance(mu2, s2, mu1, s1) == pytest.approx(expected, rel=1e-10)


def test_gaussian_features_converge_to_the_closed_form():
  rng = np.random.default_rng(2)
  s1, s2 = _random_cov(rng, 4), _random_cov(rng, 4)
  mu1, mu2 = np.zeros(4), np.full(4, 0.5)
  f1 = rng.multivariate_normal(mu1, s1, 200_000)
  f2 = rng.multivariate_normal(mu2, s2, 200_000)
  assert fid.fid_from_features(f1, f2) == pytest.approx(fid.frechet_distance(mu1, s1, mu2, s2), abs=0.02)


def test_kid_matches_a_direct_unbiased_mmd():
  rng = np.random.default_rng(3)
  x, y = rng.standard_normal((60, 5)), rng.standard_normal((60, 5)) + 0.7
  mean, std = fid.kid_from_features(x, y, num_subsets=1, subset_size=60)
  d = 5
  k = lambda a, b: (a @ b.T / d + 1.0)**3
  direct = sum(k(x[i:i + 1], x[j:j + 1])[0, 0] for i in range(60) for j in range(60) if i != j) / (60 * 59)
  direct += sum(k(y[i:i + 1], y[j:j + 1])[0, 0] for i in range(60) for j in range(60) if i != j) / (60 * 59)
  direct -= 2 * np.mean(k(x, y))
  assert mean == pytest.approx(direct, rel=1e-10) and std == 0.0
  # independent samples of one distribution: about 0 (the estimator is unbiased), far below the shift's
  x2 = rng.standard_normal((2000, 5))
  x3 = rng.standard_normal((2000, 5))
  same, _ = fid.kid_from_features(x2, x3, num_subsets=20, subset_size=1000)
  shifted, _ = fid.kid_from_features(x2, x3 + 0.7, num_subsets=20, subset_size=1000)
  assert abs(same) < 0.02 * shifted, (same, shifted)


def test_inception_score_limits():
  k = 10
  assert fid.inception_score_from_probs(np.full((100, k), 1.0 / k))[0] == pytest.approx(1.0)
  onehot = np.eye(k)[np.arange(100) % k]
  assert fid.inception_score_from_probs(onehot, splits=10)[0] == pytest.approx(k, rel=1e-9)
  logits = np.log(np.clip(onehot, 1e-300, None))
  assert fid.inception_score_from_logits(logits)[0] == pytest.approx(k, rel=1e-6)


def test_statistics_files_and_errors(tmp_path):
  rng = np.random.default_rng(4)
  mu, sigma = fid.compute_statistics(rng.standard_normal((30, 3)), lambda b: b * 2.0, batch_size=7, progress=False)
  path = str(tmp_path / "ref.npz")
  fid.save_statistics(path, mu, sigma)
  mu2, sigma2 = fid.load_statistics(path)
  np.testing.assert_array_equal(mu, mu2)
  np.testing.assert_allclose(sigma, sigma2, rtol=0, atol=0)
  np.savez(tmp_path / "bad.npz", m=mu)
  with pytest.raises(ValueError, match="must contain arrays 'mu' and 'sigma'"):
    fid.load_statistics(str(tmp_path / "bad.npz"))
  with pytest.raises(ValueError, match="feature sizes differ"):
    fid.frechet_distance(mu, sigma, mu[:2], sigma[:2, :2])
