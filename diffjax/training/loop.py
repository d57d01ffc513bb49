"""The generic training loop: resume, step, log, sample, checkpoint, stop cleanly on signals.

It knows nothing about diffusion: it drives any pure ``train_step(state, batch) -> (state,
metrics)`` (``make_train_step``) over any dataset with the protocol

  ``next(dataset) -> dict of host numpy arrays``  (this host's batch),
  ``dataset.get_state() -> JSON-able dict``,  ``dataset.set_state(dict)``.

Fields of ``config.training`` (defaults in ``default_training_config()``):

  num_steps         total train steps, >= 0 (a resumed run stops at the same total).
  log_every         write metrics every this many steps, >= 1. Non-finite steps are always logged.
  ckpt_every        checkpoint every this many steps, >= 0 (0: only at the end / on a signal).
  keep_checkpoints  most recent checkpoints kept, >= 1.
  sample_every      call ``sample_fn(state, step)`` every this many steps, >= 0 (0: never).
  eval_every        call ``eval_fn(state, step) -> dict`` every this many steps, >= 0 (0: never);
                    logged with an ``eval/`` prefix.
  n_jitted_steps    steps per compiled call (one ``lax.scan``), >= 1; must divide ``num_steps``.
  nonfinite         'skip' (drop the update, log loudly, continue) or 'stop' (log, then raise
                    ``NonFiniteLossError``; the last checkpoint stays the newest).
  ema_decay         EMA decay in [0, 1], used by the caller's ``make_train_step``.
  ema_halflife_images  0 (default: the constant ``ema_decay``) or EDM's EMA half-life in images;
                    with ``ema_rampup_ratio`` (None or > 0) its ramp-up (``edm_ema_schedule``;
                    the batch size is ``config.data.batch_size``).
  tensorboard       also write TensorBoard event files to ``workdir/tb`` (default True).
  async_checkpoints write checkpoints in the background (default True).

Outputs in ``workdir``: ``metrics.jsonl``, ``tb/events.out.tfevents.*``, ``checkpoints/<step>/``.
On SIGTERM or SIGINT (Ctrl-C) the loop finishes the running step, writes a checkpoint and
returns normally (``TrainResult.interrupted`` names the signal); a second Ctrl-C aborts.
"""
import dataclasses
import logging
import os
import signal
import threading
import time
from typing import Any, Callable

import jax
import ml_collections
import numpy as np
from tqdm.auto import tqdm

from diffjax.training.checkpoint import Checkpointer
from diffjax.training.logging import MetricWriter
from diffjax.training.sharding import make_mesh, make_sharded_step, replicate, shard_batch
from diffjax.training.optim import make_lr_schedule, make_optimizer
from diffjax.training.state import NONFINITE_MODES, edm_ema_schedule, make_train_step

log = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
  """Raised by ``train`` when a step is non-finite and ``training.nonfinite='stop'``."""


def default_training_config() -> ml_collections.ConfigDict:
  """The default ``config.training``."""
  return ml_collections.ConfigDict(dict(
      num_steps=1000,
      log_every=50,
      ckpt_every=1000,
      keep_checkpoints=3,
      sample_every=0,
      eval_every=0,
      n_jitted_steps=1,
      nonfinite="stop",
      ema_decay=0.999,
      ema_halflife_images=0,
      ema_rampup_ratio=None,
      tensorboard=True,
      async_checkpoints=True,
  ))


def _int(cfg, name, lo):
  value = cfg[name]
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise ValueError(f"training.{name} must be an integer >= {lo}, got {value!r}")
  if value < lo:
    raise ValueError(f"training.{name} must be >= {lo}, got {value!r}")
  return int(value)


def validate_training_config(training_config) -> dict:
  """Checks ``config.training`` (missing fields take their defaults); returns a plain dict.

  Fields the loop does not know are allowed (logged as a warning), so a config may keep other
  run settings in ``config.training``.

  Raises:
    ValueError: naming ``training.<field>`` and the allowed values.
  """
  defaults = default_training_config()
  unknown = sorted(set(training_config.keys()) - set(defaults.keys()))
  if unknown:  # configs often keep other run settings here (e.g. batch_size): warn only
    log.warning("config.training field(s) %s are not used by the train loop (its fields: %s)",
                unknown, sorted(defaults.keys()))
  cfg = {k: training_config[k] if k in training_config else defaults[k] for k in defaults}
  c = dict(
      num_steps=_int(cfg, "num_steps", 0),
      log_every=_int(cfg, "log_every", 1),
      ckpt_every=_int(cfg, "ckpt_every", 0),
      keep_checkpoints=_int(cfg, "keep_checkpoints", 1),
      sample_every=_int(cfg, "sample_every", 0),
      eval_every=_int(cfg, "eval_every", 0),
      n_jitted_steps=_int(cfg, "n_jitted_steps", 1),
  )
  if cfg["nonfinite"] not in NONFINITE_MODES:
    raise ValueError(f"training.nonfinite must be one of {list(NONFINITE_MODES)}, "
                     f"got {cfg['nonfinite']!r}")
  c["nonfinite"] = cfg["nonfinite"]
  decay = cfg["ema_decay"]
  if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 <= decay <= 1:
    raise ValueError(f"training.ema_decay must be a number in [0, 1], got {decay!r}")
  c["ema_decay"] = float(decay)
  halflife, ratio = cfg["ema_halflife_images"], cfg["ema_rampup_ratio"]
  if isinstance(halflife, bool) or not isinstance(halflife, (int, float)) or halflife < 0:
    raise ValueError(f"training.ema_halflife_images must be 0 (constant ema_decay) or > 0, got {halflife!r}")
  if ratio is not None and (isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or ratio <= 0):
    raise ValueError(f"training.ema_rampup_ratio must be None or > 0, got {ratio!r}")
  if ratio is not None and not halflife:
    raise ValueError("training.ema_rampup_ratio needs training.ema_halflife_images > 0")
  c["ema_halflife_images"], c["ema_rampup_ratio"] = float(halflife), ratio
  for name in ("tensorboard", "async_checkpoints"):
    if not isinstance(cfg[name], bool):
      raise ValueError(f"training.{name} must be True or False, got {cfg[name]!r}")
    c[name] = cfg[name]
  if c["num_steps"] % c["n_jitted_steps"]:
    raise ValueError(f"training.num_steps ({c['num_steps']}) must be a multiple of "
                     f"training.n_jitted_steps ({c['n_jitted_steps']})")
  return c


@dataclasses.dataclass
class TrainResult:
  """What ``train`` returns.

  Attributes:
    state: the final ``TrainState`` (replicated over the mesh).
    step: its step as a Python int.
    interrupted: 'SIGTERM' / 'SIGINT' when a signal ended the run early, else None.
    resumed_from: the checkpoint step the run started from, or None for a fresh start.
    nonfinite_steps: steps whose update was skipped as non-finite.
  """
  state: Any
  step: int
  interrupted: str | None = None
  resumed_from: int | None = None
  nonfinite_steps: list = dataclasses.field(default_factory=list)


class _StopSignals:
  """Turns the first SIGTERM/SIGINT into a flag; a second SIGINT raises KeyboardInterrupt."""

  def __init__(self):
    self.received: str | None = None
    self._old = {}

  def __enter__(self):
    if threading.current_thread() is not threading.main_thread():
      log.warning("train() is not running in the main thread: SIGTERM/SIGINT are not caught")
      return self
    for sig in (signal.SIGTERM, signal.SIGINT):
      self._old[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame):
    name = signal.Signals(signum).name
    if self.received is not None and signum == signal.SIGINT:
      raise KeyboardInterrupt
    self.received = name
    log.warning("received %s: finishing the current step, saving a checkpoint and exiting "
                "(press Ctrl-C again to abort without saving)", name)

  def __exit__(self, *exc):
    for sig, old in self._old.items():
      signal.signal(sig, old)


def build_train_step(loss_fn: Callable, config):
  """``make_optimizer(config.optim)`` and the matching ``make_train_step`` for ``train``.

  Args:
    loss_fn: pure ``loss_fn(params, batch, key) -> (loss, aux)``.
    config: run config with ``optim`` and ``training`` sections.

  Returns:
    ``(optimizer, train_step)``; ``train_step`` reports the learning rate as ``metrics['lr']``.
  """
  c = validate_training_config(config.training)
  optimizer = make_optimizer(config.optim)
  ema_schedule = None
  if c["ema_halflife_images"]:
    ema_schedule = edm_ema_schedule(int(config.data.batch_size), c["ema_halflife_images"], c["ema_rampup_ratio"])
  train_step = make_train_step(loss_fn, optimizer, ema_decay=c["ema_decay"],
                               nonfinite=c["nonfinite"], n_steps=c["n_jitted_steps"],
                               lr_schedule=make_lr_schedule(config.optim), ema_schedule=ema_schedule)
  return optimizer, train_step


def _crossed(prev: int, step: int, every: int) -> bool:
  """Whether a multiple of ``every`` lies in ``(prev, step]``."""
  return every > 0 and step // every > prev // every


def _any_process(flag: bool) -> bool:
  if jax.process_count() == 1:
    return flag
  from jax.experimental import multihost_utils
  return bool(np.max(multihost_utils.process_allgather(np.int32(flag))))


def _row(metrics, i):
  """Row i of an n-step call's metrics. A phase that did not run at step i (``<name>/active``
  False, e.g. a distillation generator updated every 5th step) reports the values of its latest
  run earlier in the same call instead of zeros, with ``<name>/steps_since_active``."""
  m = {k: v[i] for k, v in metrics.items()}
  for flag in [k for k in m if k.endswith("/active")]:
    if bool(m[flag]):
      continue
    ran = np.flatnonzero(np.asarray(metrics[flag][:i + 1]))
    if ran.size:
      j, prefix = int(ran[-1]), flag[:-len("active")]
      m.update({k: v[j] for k, v in metrics.items() if k.startswith(prefix) and k != flag})
      m[prefix + "steps_since_active"] = i - j
  return m


def _next_batch(dataset, n: int):
  if n == 1:
    return next(dataset)
  batches = [next(dataset) for _ in range(n)]
  return jax.tree.map(lambda *xs: np.stack(xs), *batches)


def train(*, config, workdir: str, state, train_step: Callable, dataset,
          mesh: jax.sharding.Mesh | None = None,
          sample_fn: Callable | None = None, eval_fn: Callable | None = None,
          metadata: dict | None = None) -> TrainResult:
  """Runs (or resumes) training until ``config.training.num_steps``.

  Args:
    config: the run config; ``config.training`` is read (see the module docstring).
    workdir: run directory for metrics, TensorBoard files and checkpoints.
    state: the initial ``TrainState`` (used as is for a fresh run, and as the restore target
      when ``workdir/checkpoints`` has a checkpoint). Its buffers may be donated to the first
      step: use ``TrainResult.state`` afterwards, not this object.
    train_step: the pure step from ``make_train_step`` (not jitted; the loop jits it with
      shardings over ``mesh``). Its ``n_steps``/``nonfinite`` must match the config.
    dataset: iterator with ``get_state``/``set_state`` (module docstring).
    mesh: device mesh; default ``make_mesh()`` over all devices (data parallel).
    sample_fn: optional ``sample_fn(state, step)``, e.g. writing PNGs with ``save_image_grid``.
    eval_fn: optional ``eval_fn(state, step) -> dict of scalars``.
    metadata: JSON-able dict stored with each checkpoint (e.g. ``config.to_dict()``).

  Returns:
    A ``TrainResult``.

  Raises:
    NonFiniteLossError: with ``training.nonfinite='stop'`` after a non-finite step (logged
      first; no checkpoint is written for it).
    ValueError: invalid ``config.training`` fields, or a ``train_step`` built with different
      ``n_steps``/``nonfinite``/``ema_decay`` than the config.
  """
  c = validate_training_config(config.training)
  n = c["n_jitted_steps"]
  for attr, field in (("n_steps", "n_jitted_steps"), ("nonfinite", "nonfinite"),
                      ("ema_decay", "ema_decay")):
    if hasattr(train_step, attr) and getattr(train_step, attr) != c[field]:
      raise ValueError(f"train_step was built with {attr}={getattr(train_step, attr)!r} but "
                       f"training.{field} is {c[field]!r}")
  is_main = jax.process_index() == 0
  mesh = mesh if mesh is not None else make_mesh()
  state = replicate(state, mesh)

  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), keep=c["keep_checkpoints"],
                      save_every=c["ckpt_every"], async_save=c["async_checkpoints"])
  writer = None
  pbar = None
  try:
    resumed_from = None
    restored = ckpt.restore_latest(state)
    if restored is not None:
      state, data_state = restored
      resumed_from = int(state.step)
      if data_state is not None:
        dataset.set_state(data_state)
      log.info("resumed from checkpoint step %d in %s", resumed_from, workdir)
    step = int(state.step)
    result = TrainResult(state=state, step=step, resumed_from=resumed_from)
    writer = MetricWriter(workdir, tensorboard=c["tensorboard"], resume_step=step)
    jitted = make_sharded_step(train_step, mesh, batch_axis=1 if n > 1 else 0)

    def save(force):
      return ckpt.save(step, state, data_state=dataset.get_state(), metadata=metadata,
                       force=force)

    pbar = tqdm(total=c["num_steps"], initial=step, desc="train", dynamic_ncols=True,
                disable=not is_main, smoothing=0.1)
    last_log_time, last_log_step = time.perf_counter(), step
    with _StopSignals() as signals:
      while step < c["num_steps"]:
        if _any_process(signals.received is not None):
          result.interrupted = signals.received or "signal on another process"
          break
        try:
          batch = _next_batch(dataset, n)
        except StopIteration:
          log.warning("dataset exhausted at step %d (before training.num_steps=%d)", step,
                      c["num_steps"])
          break
        batch = shard_batch(batch, mesh, batch_axis=1 if n > 1 else 0)
        state, metrics = jitted(state, batch)
        metrics = jax.device_get(metrics)
        now = time.perf_counter()
        prev = step
        rate = (prev + n - last_log_step) / max(now - last_log_time, 1e-9)
        logged = False
        for i in range(n):
          m = _row(metrics, i) if n > 1 else metrics
          s = prev + i + 1
          if not bool(m["finite"]):
            result.nonfinite_steps.append(s)
            log.error("NON-FINITE step %d: loss=%s grad_norm=%s; update %s "
                      "(training.nonfinite=%r)", s, float(m["loss"]), float(m["grad_norm"]),
                      "skipped" if c["nonfinite"] == "skip" else "not applied, stopping",
                      c["nonfinite"])
            writer.write(s, m)
            if c["nonfinite"] == "stop":
              raise NonFiniteLossError(
                  f"non-finite loss or gradient at step {s} (loss={float(m['loss'])}, "
                  f"grad_norm={float(m['grad_norm'])}) with training.nonfinite='stop'; the "
                  f"newest checkpoint is step {ckpt.latest_step()} in {ckpt.directory}")
          elif s % c["log_every"] == 0:
            writer.write(s, {**m, "steps_per_sec": rate})
            logged = True
        step = prev + n
        if logged:
          last_log_time, last_log_step = now, step
        result.state, result.step = state, step
        pbar.update(n)
        pbar.set_postfix(loss=f"{float(np.asarray(m['loss'])):.4g}", refresh=False)
        if eval_fn is not None and _crossed(prev, step, c["eval_every"]):
          writer.write(step, eval_fn(state, step), prefix="eval/")
        if sample_fn is not None and _crossed(prev, step, c["sample_every"]):
          sample_fn(state, step)
        if _crossed(prev, step, c["ckpt_every"]):
          save(force=True)
      if signals.received is not None and result.interrupted is None:
        result.interrupted = signals.received  # arrived during the last step
      save(force=True)
      ckpt.wait()
      if result.interrupted:
        log.warning("stopped by %s at step %d; checkpoint saved in %s", result.interrupted,
                    step, ckpt.directory)
    return result
  finally:
    if pbar is not None:
      pbar.close()
    if writer is not None:
      writer.close()
    ckpt.close()
