"""Small array helpers shared by the numerical core."""
import os

import jax.numpy as jnp
import numpy as np


def expand_to(t, x):
  """Broadcasts a per-example array `t` of shape () or (B,) against `x` of shape (B, ...).

  Args:
    t: scalar or array of shape (B,).
    x: array whose leading axis is the batch.

  Returns:
    `t` reshaped to (B, 1, ..., 1) (or left scalar) so that `t * x` broadcasts per example.
  """
  t = jnp.asarray(t)
  if t.ndim == 0:
    return t
  if t.ndim != 1 or t.shape[0] != x.shape[0]:
    raise ValueError(f"time array of shape {t.shape} does not match batch of shape {x.shape}; "
                     "expected a scalar or shape (batch,)")
  return t.reshape(t.shape + (1,) * (x.ndim - 1))


def batch_times(t, x):
  """Returns `t` as a (B,) array for a batch `x` of shape (B, ...)."""
  return jnp.broadcast_to(jnp.asarray(t, dtype=x.dtype), (x.shape[0],))


def sum_except_batch(x):
  """Sums over every axis but the first."""
  return jnp.sum(x.reshape(x.shape[0], -1), axis=-1)


def mean_except_batch(x):
  """Averages over every axis but the first."""
  return jnp.mean(x.reshape(x.shape[0], -1), axis=-1)


def save_npz_atomic(path, **arrays):
  """`np.savez(path, **arrays)` through a temporary sibling file and a rename: a reader sees the
  old file or the complete new one, never a partial write."""
  path = os.fspath(path)
  tmp = path + ".tmp.npz"
  np.savez(tmp, **arrays)
  os.replace(tmp, path)
