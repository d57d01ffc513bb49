"""Checkpoints of the train state and the dataset position, on Orbax's ``CheckpointManager``.

Each checkpoint ``<directory>/<step>/`` holds two items:
  * ``state``: the ``TrainState`` (Orbax ``StandardSave``), restored bitwise into an abstract
    target (always pass one: without it optax NamedTuples come back as lists);
  * ``data``: JSON ``{"step", "dataset": <dataset.get_state()>, "metadata": {...}}``.
Writes are atomic (Orbax writes to a temporary directory and renames it when complete), the
latest ``keep`` checkpoints are kept, and a state with non-finite values is never written.

Multi-host: every process calls ``save``/``restore`` (arrays are global); the JSON item is
written by process 0, so the dataset state must be host-independent (e.g. a global batch index
from which each host derives its own slice).
"""
import logging
import time

import jax
import orbax.checkpoint as ocp

from diffjax.training.state import all_finite

log = logging.getLogger(__name__)


class NonFiniteStateError(ValueError):
  """Raised instead of writing a checkpoint whose arrays hold NaN or Inf."""


_all_finite = jax.jit(all_finite)


def abstract_like(tree):
  """``ShapeDtypeStruct`` (with sharding) for every array leaf of ``tree``; others unchanged."""
  def conv(x):
    if isinstance(x, jax.ShapeDtypeStruct):
      return x
    if isinstance(x, jax.Array):
      return ocp.utils.to_shape_dtype_struct(x)
    return x
  return jax.tree.map(conv, tree)


class Checkpointer:
  """Saves and restores ``(TrainState, dataset state)`` under ``directory``.

  Args:
    directory: checkpoint root (e.g. ``workdir/checkpoints``); created if missing.
    keep: number of most recent checkpoints kept (Orbax ``LatestN``), >= 1.
    save_every: ``save`` writes only at multiples of this many steps unless ``force=True``;
      0 means only forced saves.
    async_save: write in a background thread (device-to-host copies finish before ``save``
      returns, so the caller may donate/overwrite the state right away).
  """

  def __init__(self, directory: str, *, keep: int = 3, save_every: int = 0,
               async_save: bool = True):
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
      raise ValueError(f"training.keep_checkpoints must be an integer >= 1, got {keep!r}")
    if isinstance(save_every, bool) or not isinstance(save_every, int) or save_every < 0:
      raise ValueError(f"training.ckpt_every must be an integer >= 0, got {save_every!r}")
    self.directory = directory
    self.save_every = save_every
    options = ocp.CheckpointManagerOptions(
        preservation_policy=ocp.checkpoint_managers.LatestN(n=keep),
        save_decision_policy=ocp.checkpoint_managers.FixedIntervalPolicy(max(save_every, 1)),
        enable_async_checkpointing=async_save,
        create=True)
    self._mngr = ocp.CheckpointManager(directory, options=options)
    self._saved: set[int] = set()

  def latest_step(self) -> int | None:
    """The newest complete checkpoint's step, or None."""
    return self._mngr.latest_step()

  def all_steps(self) -> list[int]:
    """Steps of all complete checkpoints, ascending."""
    return sorted(self._mngr.all_steps())

  def should_save(self, step: int) -> bool:
    """Whether ``save(step, ...)`` without ``force`` would write."""
    return (self.save_every > 0 and step % self.save_every == 0 and step not in self._saved and
            step not in self.all_steps())

  def save(self, step: int, state, *, data_state: dict | None = None,
           metadata: dict | None = None, force: bool = False) -> bool:
    """Writes a checkpoint at ``step`` when due (or ``force``) and not already present.

    Args:
      step: the step number (normally ``int(state.step)``).
      state: the ``TrainState`` (or any pytree of arrays).
      data_state: JSON-able dataset position (``dataset.get_state()``).
      metadata: extra JSON-able information (e.g. the config as a dict).
      force: write even if ``step`` is not a multiple of ``save_every``.

    Returns:
      True when a checkpoint was started.

    Raises:
      NonFiniteStateError: ``state`` holds NaN/Inf; nothing is written.
    """
    step = int(step)
    if step in self._saved or step in self._mngr.all_steps():
      return False
    if not force and not self.should_save(step):
      return False
    if not bool(_all_finite(state)):
      msg = (f"refusing to save checkpoint at step {step} in {self.directory}: the train state "
             "holds non-finite values (NaN/Inf)")
      log.error(msg)
      raise NonFiniteStateError(msg)
    data = {"step": step, "dataset": data_state, "metadata": metadata or {},
            "time": time.time()}
    self._mngr.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data)), force=True)
    self._saved.add(step)
    return True

  def restore(self, step: int, abstract_state) -> tuple:
    """Restores checkpoint ``step`` into the structure/dtypes/shardings of ``abstract_state``.

    Args:
      step: an existing step (``all_steps()``).
      abstract_state: a state of the right structure: concrete arrays or ``ShapeDtypeStruct``s.

    Returns:
      ``(state, data_state)``: the restored state and the saved dataset position.
    """
    restored = self._mngr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_like(abstract_state)),
        data=ocp.args.JsonRestore()))
    data = restored["data"] or {}
    return restored["state"], data.get("dataset")

  def restore_latest(self, abstract_state):
    """``restore(latest_step(), abstract_state)``, or None when there is no checkpoint."""
    step = self.latest_step()
    if step is None:
      return None
    return self.restore(step, abstract_state)

  def metadata(self, step: int) -> dict:
    """The JSON item (step, dataset, metadata, time) of checkpoint ``step``."""
    restored = self._mngr.restore(step, args=ocp.args.Composite(data=ocp.args.JsonRestore()))
    return restored["data"]

  def wait(self):
    """Blocks until background writes are finished."""
    self._mngr.wait_until_finished()

  def close(self):
    """Waits for pending writes and releases the manager."""
    self._mngr.wait_until_finished()
    self._mngr.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
