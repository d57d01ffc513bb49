"""Data parallelism with ``jax.jit`` + ``NamedSharding``: a mesh, sharded batches, replicas.

The same code runs on one CPU, on emulated CPU devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=8``) and on a multi-host pod. Batches are
split along their batch axis over the ``data`` mesh axis; the train state is replicated. XLA
inserts the gradient all-reduce itself: no pmap, no shard_map, no manual collectives.
"""
from typing import Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(axes: Sequence[str] = (DATA_AXIS,), shape: Sequence[int] | None = None) -> Mesh:
  """A mesh over all devices (of all processes).

  Args:
    axes: mesh axis names; the batch is split over ``'data'``.
    shape: size of each axis. Default: every device on the first axis, 1 on the others.

  Returns:
    A ``jax.sharding.Mesh`` with ``Auto`` axis types (classic GSPMD propagation, so loss
    functions need no sharding annotations).
  """
  axes = tuple(axes)
  n = jax.device_count()
  if shape is None:
    shape = (n,) + (1,) * (len(axes) - 1)
  shape = tuple(int(s) for s in shape)
  if len(shape) != len(axes):
    raise ValueError(f"mesh shape {shape} and mesh axes {axes} must have the same length")
  if int(np.prod(shape)) != n:
    raise ValueError(f"mesh shape {shape} must multiply to the device count {n}")
  return jax.make_mesh(shape, axes, axis_types=(AxisType.Auto,) * len(axes))


def replicated(mesh: Mesh) -> NamedSharding:
  """The fully replicated sharding ``NamedSharding(mesh, P())``."""
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, batch_axis: int = 0, data_axis: str = DATA_AXIS) -> NamedSharding:
  """Sharding that splits axis ``batch_axis`` over the mesh axis ``data_axis``."""
  return NamedSharding(mesh, P(*([None] * batch_axis), data_axis))


def _check_divisible(size: int, mesh: Mesh, data_axis: str, what: str):
  n = mesh.shape[data_axis]
  if size % n:
    raise ValueError(
        f"data.batch_size must be divisible by the number of devices on the '{data_axis}' mesh "
        f"axis ({n}); got {what} {size}")


def shard_batch(batch, mesh: Mesh, *, batch_axis: int = 0, data_axis: str = DATA_AXIS):
  """Places a host batch (pytree of numpy arrays) as global arrays split over ``data_axis``.

  Single process: ``jax.device_put`` with ``NamedSharding(mesh, P('data'))``. Several
  processes: each passes its own per-host batch and ``jax.make_array_from_process_local_data``
  assembles the global batch (global size = per-host size x process count).

  Args:
    batch: pytree of arrays; every leaf has the batch on axis ``batch_axis``.
    mesh: the mesh (``make_mesh``).
    batch_axis: 0 normally; 1 for a stacked ``(n_jitted_steps, batch, ...)`` batch.
    data_axis: the mesh axis to split over.

  Raises:
    ValueError: naming ``data.batch_size`` when the global batch does not divide evenly over
      the devices of ``data_axis``.
  """
  sharding = batch_sharding(mesh, batch_axis, data_axis)
  nproc = jax.process_count()

  def place(x):
    x = np.asarray(x)
    if x.ndim <= batch_axis:
      raise ValueError(f"batch leaf of shape {x.shape} has no batch axis {batch_axis}")
    global_size = x.shape[batch_axis] * nproc
    what = ("batch size" if nproc == 1 else
            f"global batch size ({x.shape[batch_axis]} per host x {nproc} hosts) =")
    _check_divisible(global_size, mesh, data_axis, what)
    if nproc == 1:
      return jax.device_put(x, sharding)
    return jax.make_array_from_process_local_data(sharding, x)

  return jax.tree.map(place, batch)


def replicate(tree, mesh: Mesh):
  """Copies every leaf of ``tree`` to all devices of ``mesh`` (``NamedSharding(mesh, P())``).

  With several processes every process must pass the same values (e.g. the same init seed).
  """
  sharding = replicated(mesh)
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)

  def place(x):
    x = np.asarray(jax.device_get(x))
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])

  return jax.tree.map(place, tree)


def make_sharded_step(train_step, mesh: Mesh, *, batch_axis: int | None = None,
                      data_axis: str = DATA_AXIS, state_sharding=None, donate: bool = True):
  """Jits ``train_step(state, batch)`` with explicit in/out shardings.

  Args:
    train_step: the pure step (``make_train_step``).
    mesh: the mesh.
    batch_axis: the batch axis of every batch leaf. Default: 1 when ``train_step.n_steps > 1``
      (stacked batches), else 0.
    data_axis: mesh axis the batch is split over.
    state_sharding: sharding (or pytree prefix of shardings) of the state; default replicated.
    donate: donate the input state's buffers (halves parameter memory).

  Returns:
    ``jax.jit(train_step, in_shardings=(state, batch), out_shardings=(state, replicated))``.
  """
  if batch_axis is None:
    batch_axis = 1 if getattr(train_step, "n_steps", 1) > 1 else 0
  state_sharding = replicated(mesh) if state_sharding is None else state_sharding
  return jax.jit(
      train_step,
      in_shardings=(state_sharding, batch_sharding(mesh, batch_axis, data_axis)),
      out_shardings=(state_sharding, replicated(mesh)),
      donate_argnums=(0,) if donate else ())
