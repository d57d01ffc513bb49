"""tfds pipelines through `tfds.data_source` + grain, offline with `tfds.testing.mock_data` (no TensorFlow)."""
import ml_collections
import numpy as np
import pytest

import diffjax as dj

import tensorflow_datasets as tfds  # noqa: E402  (the "data" extra)
from diffjax.data import tfds_pipeline  # noqa: E402


@pytest.mark.parametrize("name,shape", [("mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))])
def test_batches_shape_range_and_resume(name, shape):
  with tfds.testing.mock_data(num_examples=24):
    ds = dj.data.make_dataset(ml_collections.ConfigDict(dict(name=f"tfds:{name}", batch_size=8, seed=1)))
    b = next(ds)
    assert b["x"].shape == (8,) + shape and b["x"].dtype == np.float32
    assert b["x"].min() >= -1.0 and b["x"].max() <= 1.0 and b["label"].shape == (8,)
    assert ds.example_shape == shape
    for _ in range(4):  # crosses an epoch boundary (24 examples)
      next(ds)
    state = ds.get_state()
    expected = next(ds)
    again = dj.data.make_dataset(ml_collections.ConfigDict(dict(name=f"tfds:{name}", batch_size=8, seed=1)))
    again.set_state(state)
    np.testing.assert_array_equal(next(again)["x"], expected["x"])


def test_hosts_get_disjoint_examples():
  with tfds.testing.mock_data(num_examples=16):
    hosts = [tfds_pipeline.TfdsDataset("mnist", batch_size=8, process_index=i, process_count=2) for i in range(2)]
    a, b = (next(h)["x"].reshape(4, -1) for h in hosts)
    assert hosts[0].batch_size == 4
    assert not any(np.array_equal(r, s) for r in a for s in b)


def test_center_crop_resize():
  image = np.arange(6 * 10 * 3, dtype=np.uint8).reshape(6, 10, 3)
  out = tfds_pipeline.center_crop_resize(image, 6)
  np.testing.assert_array_equal(out, image[:, 2:8])
  assert tfds_pipeline.center_crop_resize(image, 4).shape == (4, 4, 3)
  with tfds.testing.mock_data(num_examples=4):
    ds = tfds_pipeline.TfdsDataset("cifar10", batch_size=2, image_size=16)
    assert next(ds)["x"].shape == (2, 16, 16, 3)
