"""A tiny deterministic training problem shared by the training tests and ``_train_script.py``.

An MLP denoiser (NNX) learns to predict the noise of a 2-D ring distribution under the
interpolation ``x_t = (1 - t) x0 + t eps``. The dataset is a pure function of (seed, index), so
its position (``{"index": i}``) restores exactly.
"""
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from diffjax import training


class MLP(nnx.Module):
  """(x, t) -> eps estimate; 3 -> width -> width -> 2 with SiLU."""

  def __init__(self, width: int, *, rngs: nnx.Rngs):
    self.l1 = nnx.Linear(3, width, rngs=rngs)
    self.l2 = nnx.Linear(width, width, rngs=rngs)
    self.l3 = nnx.Linear(width, 2, rngs=rngs)

  def __call__(self, x):
    return self.l3(nnx.silu(self.l2(nnx.silu(self.l1(x)))))


def make_model(width: int = 32, seed: int = 0):
  """Returns ``(graphdef, params)`` with params an ``nnx.State`` of the model's Params."""
  model = MLP(width, rngs=nnx.Rngs(seed))
  graphdef, params = nnx.split(model, nnx.Param)
  return graphdef, params


def make_loss_fn(graphdef):
  """``loss_fn(params, batch, key) -> (loss, aux)`` for the toy noise-prediction objective."""

  def loss_fn(params, batch, key):
    x0 = batch["x"]
    kt, ke = jax.random.split(key)
    t = jax.random.uniform(kt, (x0.shape[0], 1), minval=0.05, maxval=1.0)
    eps = jax.random.normal(ke, x0.shape)
    xt = (1.0 - t) * x0 + t * eps
    pred = nnx.merge(graphdef, params)(jnp.concatenate([xt, t], axis=-1))
    loss = jnp.mean((pred - eps) ** 2)
    return loss, {"x_mean": jnp.mean(x0)}

  return loss_fn


class ToyDataset:
  """Endless batches of ``{"x": (batch_size, 2) float32}`` points on a noisy ring.

  Args:
    batch_size: per-host batch size.
    seed: data seed.
    nan_at: index of a batch whose first entry is NaN (None for no NaN).
    sleep: seconds to sleep per batch (slows a run down so a test can signal it mid-way).
    process_slice: ``(i, n)``: return only the i-th of n equal row blocks of each batch (the
      per-host part of a global batch of ``batch_size``).
  """

  def __init__(self, batch_size: int, seed: int = 0, nan_at=None, sleep: float = 0.0,
               process_slice=(0, 1)):
    self.batch_size, self.seed, self.nan_at, self.sleep = batch_size, seed, nan_at, sleep
    self.process_slice = process_slice
    self.index = 0

  def __iter__(self):
    return self

  def __next__(self):
    if self.sleep:
      time.sleep(self.sleep)
    rng = np.random.default_rng([self.seed, self.index])
    angle = rng.uniform(0, 2 * np.pi, self.batch_size)
    r = 1.0 + 0.1 * rng.standard_normal(self.batch_size)
    x = np.stack([r * np.cos(angle), r * np.sin(angle)], -1).astype(np.float32)
    if self.nan_at is not None and self.index in np.atleast_1d(self.nan_at):
      x[0, 0] = np.nan
    self.index += 1
    i, n = self.process_slice
    rows = self.batch_size // n
    return {"x": x[i * rows:(i + 1) * rows]}

  def get_state(self):
    return {"index": self.index}

  def set_state(self, state):
    self.index = int(state["index"])


def make_config(**training_overrides) -> ml_collections.ConfigDict:
  """A run config with ``optim`` and ``training`` sections for the toy problem."""
  config = ml_collections.ConfigDict()
  config.optim = training.default_optim_config()
  config.optim.lr = 1e-3
  config.optim.warmup_steps = 5
  config.optim.grad_clip = 1.0
  config.training = training.default_training_config()
  config.training.update(dict(num_steps=20, log_every=1, ckpt_every=10, keep_checkpoints=2,
                              ema_decay=0.9, nonfinite="skip"))
  config.training.update(training_overrides)
  return config


def setup(config, *, width: int = 32, seed: int = 0):
  """Builds ``(state, train_step, graphdef)`` for the toy problem from ``config``."""
  graphdef, params = make_model(width, seed)
  optimizer, train_step = training.build_train_step(make_loss_fn(graphdef), config)
  state = training.TrainState.create(params, optimizer, jax.random.key(seed + 1))
  return state, train_step, graphdef
