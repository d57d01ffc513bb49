"""Multi-host start-up: ``jax.distributed.initialize`` from ``config.distributed``.

Fields of ``config.distributed`` (defaults in ``default_distributed_config()``):

  enabled              bool, default False. When False ``maybe_initialize`` does nothing
                       (single process: one CPU, emulated CPU devices, or one GPU/TPU host).
  coordinator_address  'host:port' of process 0, or '' to let JAX detect the cluster
                       (Cloud TPU, SLURM, Open MPI, ...).
  num_processes        number of processes, or -1 to detect.
  process_id           this process's index in [0, num_processes), or -1 to detect.
  local_device_ids     comma-separated local device ids for this process ('' = all).
  initialization_timeout  seconds to wait for all processes (default 300).

Call it first, before anything touches a JAX device.
"""
import logging

import jax
import ml_collections

log = logging.getLogger(__name__)


def default_distributed_config() -> ml_collections.ConfigDict:
  """The default ``config.distributed``: disabled."""
  return ml_collections.ConfigDict(dict(
      enabled=False,
      coordinator_address="",
      num_processes=-1,
      process_id=-1,
      local_device_ids="",
      initialization_timeout=300,
  ))


def _int_field(cfg, name, default):
  value = cfg.get(name, default)
  if isinstance(value, bool) or not isinstance(value, int):
    raise ValueError(f"distributed.{name} must be an integer, got {value!r}")
  return value


def initialize_kwargs(dist_cfg) -> dict:
  """Validates ``config.distributed`` and returns the ``jax.distributed.initialize`` kwargs."""
  known = set(default_distributed_config().keys())
  unknown = sorted(set(dist_cfg.keys()) - known)
  if unknown:
    raise ValueError(f"distributed has unknown field(s) {unknown}; allowed fields are "
                     f"{sorted(known)}")
  address = dist_cfg.get("coordinator_address", "")
  if not isinstance(address, str):
    raise ValueError(f"distributed.coordinator_address must be a 'host:port' string or '', "
                     f"got {address!r}")
  num = _int_field(dist_cfg, "num_processes", -1)
  pid = _int_field(dist_cfg, "process_id", -1)
  timeout = _int_field(dist_cfg, "initialization_timeout", 300)
  if num == 0 or num < -1:
    raise ValueError(f"distributed.num_processes must be >= 1 or -1 (detect), got {num}")
  if pid < -1 or (num > 0 and pid >= num):
    raise ValueError(f"distributed.process_id must be in [0, {num}) or -1 (detect), got {pid}")
  ids = dist_cfg.get("local_device_ids", "")
  try:
    ids = [int(i) for i in str(ids).split(",") if i.strip()] if ids != "" else None
  except ValueError:
    raise ValueError(f"distributed.local_device_ids must be comma-separated integers or '', "
                     f"got {dist_cfg.get('local_device_ids')!r}") from None
  return dict(
      coordinator_address=address or None,
      num_processes=None if num == -1 else num,
      process_id=None if pid == -1 else pid,
      local_device_ids=ids,
      initialization_timeout=timeout)


def maybe_initialize(config) -> bool:
  """Calls ``jax.distributed.initialize`` when ``config.distributed.enabled``.

  Args:
    config: the run config; ``config.distributed`` may be missing (then nothing happens).

  Returns:
    True when this call initialized the distributed runtime, False otherwise (disabled or
    already initialized).
  """
  dist_cfg = config.get("distributed", None) if hasattr(config, "get") else None
  if dist_cfg is None or not dist_cfg.get("enabled", False):
    return False
  kwargs = initialize_kwargs(dist_cfg)
  if jax.distributed.is_initialized():
    log.info("jax.distributed already initialized; skipping")
    return False
  jax.distributed.initialize(**kwargs)
  log.info("jax.distributed initialized: process %d of %d, %d local / %d global devices",
           jax.process_index(), jax.process_count(), jax.local_device_count(),
           jax.device_count())
  return True
