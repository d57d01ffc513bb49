"""scikit-learn's 8x8 handwritten digits (1,797 images, shipped with scikit-learn; no download)."""
import numpy as np


def load_digits(split="all", test_fraction=0.2, seed=0, flatten=False):
  """Digits as NHWC float32 images in [-1, 1] with integer labels.

  Args:
    split: "all", "train" or "test" (a fixed stratification-free random split).
    test_fraction: share of images in the test split.
    seed: seed of the split permutation.
    flatten: return 64-vectors (N, 64) instead of images, for MLP models.

  Returns:
    dict with "x": (N, 8, 8, 1) (or (N, 64)) float32 in [-1, 1] (pixel values 0..16 scaled),
    "label": (N,) int32.
  """
  from sklearn import datasets
  if split not in ("all", "train", "test"):
    raise ValueError(f"unknown digits split {split!r}; valid: ['all', 'train', 'test']")
  raw = datasets.load_digits()
  x = (raw.images.astype(np.float32) / 8.0 - 1.0)[..., None]
  y = raw.target.astype(np.int32)
  if flatten:
    x = x.reshape(len(x), -1)
  if split == "all":
    return {"x": x, "label": y}
  perm = np.random.default_rng(seed).permutation(len(x))
  n_test = int(round(test_fraction * len(x)))
  idx = perm[:n_test] if split == "test" else perm[n_test:]
  return {"x": x[idx], "label": y[idx]}
