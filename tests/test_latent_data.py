"""The `.npz` dataset used by the latent configs (DiT, DiCo), on a file the test writes."""
import numpy as np
import pytest

from diffjax.configuration import d
from diffjax.data import datasets


def test_npz_dataset_reads_scaled_latents_and_labels(tmp_path):
  rng = np.random.default_rng(0)
  x = rng.standard_normal((40, 32, 32, 4)).astype(np.float16)
  labels = rng.integers(0, 1000, 40)
  path = str(tmp_path / "latents.npz")
  np.savez(path, x=x, label=labels)
  ds = datasets.make_dataset(d(name="npz", batch_size=8, options=d(path=path, scale=0.18215)))
  batch = next(ds)
  assert batch["x"].shape == (8, 32, 32, 4) and batch["x"].dtype == np.float32
  assert batch["label"].shape == (8,)
  loaded = datasets.load_npz(path, scale=0.18215)
  np.testing.assert_allclose(loaded["x"], x.astype(np.float32) * np.float32(0.18215))
  np.testing.assert_array_equal(loaded["label"], labels)
  with pytest.raises(ValueError, match="x_key='z' is not in"):
    datasets.load_npz(path, x_key="z")
  with pytest.raises(ValueError, match="data.options.path"):
    datasets.make_dataset(d(name="npz", batch_size=8, options=d()))
