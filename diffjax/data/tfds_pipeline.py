"""Image datasets prepared by TensorFlow Datasets, read without TensorFlow.

`tfds.data_source` opens the ArrayRecord files of a prepared dataset (run `tfds build <name>` or
`tfds.builder(name).download_and_prepare()` once on a machine with network access, then point
`data_dir` at the result); grain shuffles (a new permutation each epoch), repeats and batches them
by random access. Batch k of host i is element k of the host's strided view, so the whole iterator
state is one integer and resuming is exact. Images become float32 NHWC in [-1, 1].

Supported: mnist, cifar10 (as stored), celeb_a and imagenet2012 (center crop to a square and
resize to `image_size`). Any other tfds image dataset with an "image" feature works with
`image_size` set.
"""
import numpy as np

KNOWN = {"mnist": 28, "cifar10": 32, "celeb_a": 64, "imagenet2012": 64}


def center_crop_resize(image, size):
  """Center-crops an HWC uint8 image to a square and resizes it (bicubic, PIL) to size x size."""
  from PIL import Image
  h, w = image.shape[:2]
  s = min(h, w)
  top, left = (h - s) // 2, (w - s) // 2
  crop = image[top:top + s, left:left + s]
  if s == size:
    return crop
  squeeze = crop.shape[-1] == 1
  pil = Image.fromarray(crop[..., 0] if squeeze else crop)
  out = np.asarray(pil.resize((size, size), Image.BICUBIC))
  return out[..., None] if squeeze else out


def make_preprocess(image_size=None):
  """uint8 image -> float32 in [-1, 1] (optionally center-cropped and resized); label kept."""

  def preprocess(example):
    image = np.asarray(example["image"])
    if image_size is not None and image.shape[:2] != (image_size, image_size):
      image = center_crop_resize(image, image_size)
    out = {"x": image.astype(np.float32) / 127.5 - 1.0}
    if "label" in example:
      out["label"] = np.asarray(example["label"], np.int32)
    return out

  return preprocess


class TfdsDataset:
  """A tfds dataset as a checkpointable iterator of host batches (the train-loop protocol).

  Args:
    name: tfds name, e.g. "mnist", "cifar10", "celeb_a", "imagenet2012".
    batch_size: global batch size (divisible by the number of hosts).
    split: tfds split string.
    data_dir: where the prepared dataset lives (tfds default if None).
    seed: shuffle seed.
    image_size: output size; default: stored size for mnist/cifar10, 64 for celeb_a/imagenet2012.
    process_index, process_count: this host and the number of hosts (default: from JAX).
  """

  def __init__(self, name, *, batch_size, split="train", data_dir=None, seed=0, image_size=None,
               process_index=None, process_count=None):
    import grain
    import jax
    import tensorflow_datasets as tfds
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    if batch_size % process_count:
      raise ValueError(f"data.batch_size={batch_size} must be divisible by the number of hosts ({process_count})")
    if image_size is None and name in ("celeb_a", "imagenet2012"):
      image_size = KNOWN[name]
    self.source = tfds.data_source(name, split=split, data_dir=data_dir)
    self.batch_size = batch_size // process_count
    ds = grain.MapDataset.source(self.source).shuffle(seed=seed).repeat(None)
    ds = ds[process_index::process_count].map(make_preprocess(image_size))
    self._batches = ds.batch(self.batch_size, drop_remainder=True)
    self.example_shape = tuple(self._batches[0]["x"].shape[1:])
    self._step = 0

  def __iter__(self):
    return self

  def __next__(self):
    batch = self._batches[self._step]
    self._step += 1
    return batch

  def get_state(self):
    return {"step": self._step}

  def set_state(self, state):
    self._step = int(state["step"])
