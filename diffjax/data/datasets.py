"""Datasets the train loop consumes: host numpy batches with a checkpointable position.

Protocol (see `diffjax.training.loop`): `next(ds) -> {"x": (B, ...), ["label": (B,)]}` with B the
per-host batch, `ds.get_state() -> dict`, `ds.set_state(dict)`, `ds.batch_size`, `ds.example_shape`.
On several hosts every host keeps the same (global) position and takes its own slice of each global
batch, so the saved state is host-independent.
"""
import jax
import numpy as np

from diffjax.data import digits as digits_lib
from diffjax.data import toy


def _host_slice(global_batch, process_index, process_count):
  if global_batch % process_count:
    raise ValueError(f"data.batch_size={global_batch} must be divisible by the number of hosts ({process_count})")
  per_host = global_batch // process_count
  return slice(process_index * per_host, (process_index + 1) * per_host)


class ToyDataset:
  """Fresh samples of a toy distribution: global batch k is drawn with `fold_in(PRNGKey(seed), k)`."""

  def __init__(self, dist, batch_size, seed=0, process_index=None, process_count=None):
    self.dist = dist
    self.global_batch_size = batch_size
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    self._slice = _host_slice(batch_size, process_index, process_count)
    self.batch_size = batch_size // process_count
    self.example_shape = (dist.dim,)
    self._key = jax.random.PRNGKey(seed)
    self._step = 0
    self._draw = jax.jit(lambda key: dist.sample(key, batch_size))

  def __iter__(self):
    return self

  def __next__(self):
    x = np.asarray(self._draw(jax.random.fold_in(self._key, self._step)), np.float32)
    self._step += 1
    return {"x": x[self._slice]}

  def get_state(self):
    return {"step": self._step}

  def set_state(self, state):
    self._step = int(state["step"])


class ArrayDataset:
  """Epochs over in-memory arrays, reshuffled each epoch with `default_rng([seed, epoch])`.

  Drops the last incomplete batch of an epoch. The position is (epoch, index of the next batch).
  """

  def __init__(self, arrays, batch_size, seed=0, shuffle=True, process_index=None, process_count=None):
    sizes = {k: len(v) for k, v in arrays.items()}
    if len(set(sizes.values())) != 1:
      raise ValueError(f"arrays must have the same length, got {sizes}")
    self.arrays = arrays
    self.num_examples = next(iter(sizes.values()))
    if batch_size > self.num_examples:
      raise ValueError(f"data.batch_size={batch_size} exceeds the dataset size {self.num_examples}")
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    self._slice = _host_slice(batch_size, process_index, process_count)
    self.global_batch_size = batch_size
    self.batch_size = batch_size // process_count
    first = arrays["x"] if "x" in arrays else next(iter(arrays.values()))
    self.example_shape = tuple(first.shape[1:])  # of "x" (else of the first array)
    self.seed, self.shuffle = seed, shuffle
    self._epoch, self._batch = 0, 0
    self._perm = self._permutation(0)

  def _permutation(self, epoch):
    if not self.shuffle:
      return np.arange(self.num_examples)
    return np.random.default_rng([self.seed, epoch]).permutation(self.num_examples)

  def __iter__(self):
    return self

  def __next__(self):
    if (self._batch + 1) * self.global_batch_size > self.num_examples:
      self._epoch, self._batch = self._epoch + 1, 0
      self._perm = self._permutation(self._epoch)
    idx = self._perm[self._batch * self.global_batch_size:(self._batch + 1) * self.global_batch_size]
    self._batch += 1
    idx = idx[self._slice]
    return {k: v[idx] for k, v in self.arrays.items()}

  def get_state(self):
    return {"epoch": self._epoch, "batch": self._batch}

  def set_state(self, state):
    self._epoch, self._batch = int(state["epoch"]), int(state["batch"])
    self._perm = self._permutation(self._epoch)


IMAGE_DATASETS = ("digits", "npz")
TFDS_PREFIX = "tfds:"


def load_npz(path=None, x_key="x", label_key="label", scale=1.0, mmap=True):
  """Arrays from a `.npz` file: {"x": scale * file[x_key], ["label": file[label_key]]}.

  For pre-extracted latents (e.g. SD-VAE latents of ImageNet stored NHWC as (N, 32, 32, 4) with
  their class labels; `scale` = 0.18215 when the file holds raw VAE latents). See
  `configs/dit/README.md` for how to prepare such a file.
  """
  if path is None:
    raise ValueError("data.options.path must name the .npz file for data.name='npz'")
  with np.load(path, mmap_mode="r" if mmap else None) as f:
    if x_key not in f.files:
      raise ValueError(f"data.options.x_key={x_key!r} is not in {path}; arrays there: {sorted(f.files)}")
    out = {"x": np.asarray(f[x_key], np.float32) * np.float32(scale)}
    if label_key is not None and label_key in f.files:
      out["label"] = np.asarray(f[label_key], np.int32)
  return out


def list_datasets():
  """Dataset names accepted by `make_dataset` (plus any `tfds:<name>`)."""
  return sorted(toy.list_toys()) + list(IMAGE_DATASETS) + [TFDS_PREFIX + n for n in ("mnist", "cifar10", "celeb_a", "imagenet2012")]


def _options(data_config):
  return data_config.options.to_dict() if "options" in data_config else {}


def _check_batch_size(data_config):
  b = data_config.batch_size
  if isinstance(b, bool) or not isinstance(b, int) or b <= 0:
    raise ValueError(f"data.batch_size must be a positive integer, got {b!r}")


def make_dataset(data_config):
  """Builds the dataset named by `data_config.name` (see `list_datasets()`).

  Fields: name, batch_size (global), seed (default 0), options (forwarded: toy constructor
  options; for digits `split`; for npz `path`, `x_key`, `label_key`, `scale`; for tfds the
  pipeline options).
  """
  _check_batch_size(data_config)
  name, seed = data_config.name, data_config.get("seed", 0)
  options = _options(data_config)
  if name in toy.list_toys():
    return ToyDataset(toy.get_toy(name, **options), data_config.batch_size, seed=seed)
  if name == "digits":
    return ArrayDataset(digits_lib.load_digits(**options), data_config.batch_size, seed=seed)
  if name == "npz":
    return ArrayDataset(load_npz(**options), data_config.batch_size, seed=seed)
  if name.startswith(TFDS_PREFIX):
    from diffjax.data import tfds_pipeline
    return tfds_pipeline.TfdsDataset(name[len(TFDS_PREFIX):], batch_size=data_config.batch_size,
                                     seed=seed, **options)
  raise ValueError(f"unknown data.name {name!r}; valid: {list_datasets()}")


def toy_distribution(data_config):
  """The toy distribution behind a config, or None for image datasets."""
  if data_config.name in toy.list_toys():
    return toy.get_toy(data_config.name, **_options(data_config))
  return None


def reference_samples(data_config, key, n):
  """n data samples to compare model samples with: fresh toy samples, or images drawn with
  replacement from the whole image set (for digits: all 1,797 images)."""
  dist = toy_distribution(data_config)
  if dist is not None:
    return np.asarray(dist.sample(key, n))
  if data_config.name == "digits":
    x = digits_lib.load_digits("all", flatten=_options(data_config).get("flatten", False))["x"]
  elif data_config.name == "npz":
    x = load_npz(**_options(data_config))["x"]
  else:
    raise ValueError(f"reference samples for data.name={data_config.name!r} are not available")
  idx = np.asarray(jax.random.randint(key, (n,), 0, len(x)))
  return x[idx]
