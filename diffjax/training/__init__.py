"""Training: train state + EMA, optimizers, sharding, checkpoints, logging and the train loop.

  state        ``TrainState``, ``make_train_step`` (EMA, non-finite handling, n-step scan)
  optim        ``make_optimizer``, ``make_lr_schedule``, ``default_optim_config``
  sharding     ``make_mesh``, ``shard_batch``, ``replicate``, ``make_sharded_step``
  checkpoint   ``Checkpointer`` (Orbax ``CheckpointManager``: state + dataset position)
  logging      ``MetricWriter`` (JSONL + TensorBoard), ``save_image_grid``, ``save_scatter``
  loop         ``train``, ``build_train_step``, ``default_training_config``
  distributed  ``maybe_initialize`` (``jax.distributed.initialize`` from the config)
"""
from diffjax.training.checkpoint import Checkpointer, NonFiniteStateError, abstract_like
from diffjax.training.distributed import default_distributed_config, maybe_initialize
from diffjax.training.logging import (EventFileWriter, MetricWriter, read_events, read_jsonl,
                                      read_scalars, save_image_grid, save_scatter)
from diffjax.training.loop import (NonFiniteLossError, TrainResult, build_train_step,
                                   default_training_config, train, validate_training_config)
from diffjax.training.optim import (default_optim_config, make_lr_schedule, make_optimizer,
                                    validate_optim_config)
from diffjax.training.sharding import (batch_sharding, make_mesh, make_sharded_step, replicate,
                                       replicated, shard_batch)
from diffjax.training.state import TrainState, all_finite, edm_ema_schedule, make_train_step

__all__ = [
    "Checkpointer", "NonFiniteStateError", "abstract_like", "default_distributed_config",
    "maybe_initialize", "EventFileWriter", "MetricWriter", "read_events", "read_jsonl",
    "read_scalars", "save_image_grid", "save_scatter", "NonFiniteLossError", "TrainResult", "build_train_step",
    "default_training_config", "train", "validate_training_config", "default_optim_config",
    "make_lr_schedule", "make_optimizer", "validate_optim_config", "batch_sharding",
    "make_mesh", "make_sharded_step", "replicate", "replicated", "shard_batch", "TrainState",
    "all_finite", "edm_ema_schedule", "make_train_step",
]
