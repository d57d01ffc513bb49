"""The digits classifier behind the Fréchet classifier distance on 8x8 digits."""
import jax
import numpy as np
import pytest

from diffjax.data.digits import load_digits
from diffjax.metrics import digits_classifier as dc


def test_classifier_learns_digits_and_gives_features():
  clf = dc.train_digits_classifier(jax.random.PRNGKey(0), steps=300)
  assert clf.test_accuracy > 0.9, clf.test_accuracy
  test = load_digits("test")
  f = clf.features(test["x"], batch_size=100)
  assert f.shape == (len(test["x"]), 64)
  mu, cov = dc.feature_statistics(f)
  assert mu.shape == (64,) and cov.shape == (64, 64) and mu.dtype == np.float64
  # noise images are not digits: the classifier's features move far from the data's
  noise = np.random.default_rng(0).uniform(-1, 1, test["x"].shape).astype(np.float32)
  mu_n, _ = dc.feature_statistics(clf.features(noise))
  mu_t, _ = dc.feature_statistics(clf.features(load_digits("train")["x"]))
  assert np.linalg.norm(mu_n - mu) > 5 * np.linalg.norm(mu_t - mu)
  with pytest.raises(ValueError, match="steps must be"):
    dc.train_digits_classifier(jax.random.PRNGKey(0), steps=0)
