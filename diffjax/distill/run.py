"""A distillation run from a config: teacher, method, one sharded multi-network train loop, evaluation.

Config (``configs/<method>/*.py``; defaults in `default_distill_config`):

  seed            seed of the student's keys.
  teacher         config_path, config_options, workdir: the EDM teacher (`distill.Teacher`; trained
                  there first if the directory has no checkpoint).
  method          one of `methods.METHODS`; method_options: that method's options
                  (`methods.DEFAULT_OPTIONS`, unknown keys are errors).
  data            batch_size: per-step batch of the teacher's data set (real data for CD / iCT /
                  progressive / the GAN; the data-free generators draw this many z).
  optim           optimizer of the generator / student; critic_optim: of the critic (fake score +
                  head). DMD2 uses the same learning rate for both.
  training        the train loop's fields (`training.default_training_config`); for progressive
                  distillation ``num_steps`` is per halving stage.
  eval            n_samples; step_counts (NFEs to sample the student at, when it supports several:
                  consistency models); use_ema.

Outputs in ``workdir``: the train loop's ``checkpoints/`` (all networks, optimizer states, the
EMA and the teacher), ``metrics.jsonl``, and ``results.json`` (one row per NFE) with
``samples_<nfe>.npz``. Progressive distillation trains one stage per halving in
``workdir/stage_<N>`` (each resumes on its own).
"""
import json
import logging
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from diffjax import data as data_lib
from diffjax import experiment, training, utils
from diffjax.configuration import d
from diffjax.distill import evaluation, methods
from diffjax.distill.step import DistillState, make_distill_step
from diffjax.distill.teacher import Teacher

log = logging.getLogger(__name__)


def default_distill_config():
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.teacher = d(config_path="configs/distillation/teacher.py", config_options="grid",
                     workdir="/tmp/diffjax_distill_teacher_grid")
  config.method = "dmd2"
  config.method_options = d()
  config.data = d(batch_size=512)
  config.optim = training.default_optim_config()
  config.critic_optim = training.default_optim_config()
  config.training = training.default_training_config()
  config.training.ema_decay = 0.0
  config.training.tensorboard = False
  config.eval = d(n_samples=10_000, step_counts=[1, 2, 4], use_ema=True)
  return config


def validate_distill_config(config):
  """Checks names and sizes before anything is built; errors name the field."""
  methods.method_options(config)
  for field, value in (("data.batch_size", config.data.batch_size), ("eval.n_samples", config.eval.n_samples)):
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
      raise ValueError(f"{field} must be a positive integer, got {value!r}")
  counts = list(config.eval.step_counts)
  if not counts or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in counts):
    raise ValueError(f"eval.step_counts must be a non-empty list of positive integers, got {counts!r}")
  training.validate_training_config(config.training)
  training.validate_optim_config(config.optim)
  if "critic_optim" in config:
    try:
      training.validate_optim_config(config.critic_optim)
    except ValueError as e:
      raise ValueError(str(e).replace("optim.", "critic_optim.", 1)) from None
  if config.method == "progressive":
    o = methods.method_options(config)
    start, end = o["start_steps"], o["end_steps"]
    if not (end >= 1 and start > end and start % end == 0 and ((start // end) & (start // end - 1)) == 0):
      raise ValueError(f"method_options.start_steps / end_steps must be a power-of-two ratio with start > end >= 1, "
                       f"got {start} / {end}")


def _dataset(config, teacher):
  data_config = ml_collections.ConfigDict(teacher.config.data.to_dict())
  data_config.batch_size = config.data.batch_size
  data_config.seed = config.seed + 31
  return data_lib.make_dataset(data_config)


def train_method(config, workdir, teacher, method, *, mesh=None, frozen=None):
  """Trains `method` with the distillation step in `training.train`; returns the `TrainResult`."""
  c = training.validate_training_config(config.training)
  # a run resumes only with the config it was started with, up to its length, logging and evaluation
  experiment.check_same_config(experiment.stored_config(workdir), config, workdir,
                               ignore=experiment.RESUME_MAY_CHANGE)
  mesh = mesh if mesh is not None else training.make_mesh()
  frozen = teacher.params if frozen is None else frozen
  # Copies: the loop donates the state's buffers; the teacher's arrays stay usable afterwards.
  state = DistillState.create(method.params, method.phases, jax.tree.map(jnp.copy, frozen),
                              jax.random.PRNGKey(config.seed + 21), student=method.student)
  train_step = make_distill_step(method.phases, student=method.student, ema_decay=c["ema_decay"],
                                 nonfinite=c["nonfinite"], n_steps=c["n_jitted_steps"], prepare=method.prepare,
                                 data_sharding=training.batch_sharding(mesh, 1 if c["n_jitted_steps"] > 1 else 0))
  return training.train(config=config, workdir=workdir, state=state, train_step=train_step,
                        dataset=_dataset(config, teacher), mesh=mesh,
                        metadata={"config": config.to_dict(), "method": method.name})


def evaluate_student(config, teacher, method, params, workdir, *, step_counts=None):
  """Samples the student at each supported NFE and measures it against fresh data; writes samples."""
  n = config.eval.n_samples
  data = data_lib.reference_samples(teacher.config.data, jax.random.PRNGKey(config.seed + 41), n)
  floor = data_lib.reference_samples(teacher.config.data, jax.random.PRNGKey(config.seed + 42), n)
  mixture = data_lib.toy_distribution(teacher.config.data)
  mixture = mixture if mixture is not None and hasattr(mixture, "means") else None
  counts = step_counts if step_counts is not None else (
      method.step_counts if method.step_counts is not None else list(config.eval.step_counts))
  rows = []
  for nfe in counts:
    sample = jax.jit(lambda p, k, nfe=nfe: method.sample(p, k, n, nfe))
    samples = np.asarray(sample(params, jax.random.PRNGKey(config.seed + 43)))
    utils.save_npz_atomic(os.path.join(workdir, f"samples_{nfe}.npz"), samples=samples)
    row = {"method": method.name, "nfe": int(nfe),
           **evaluation.sample_metrics(samples, data, jax.random.PRNGKey(config.seed + 44), floor_data=floor,
                                       mixture=mixture)}
    log.info("%s at %d NFE: %s", method.name, nfe, json.dumps(row))
    rows.append(row)
  return rows


def _student_params(config, result, method):
  return result.state.ema_params if config.eval.use_ema else result.state.params[method.student]


def distill(config, workdir, *, teacher=None, mesh=None):
  """Runs the configured distillation (resuming) and evaluates the student; returns the result rows.

  Returns an empty list when a signal interrupted training (rerun the same command to resume).
  """
  validate_distill_config(config)
  os.makedirs(workdir, exist_ok=True)
  teacher = teacher if teacher is not None else Teacher(config.teacher)
  if config.method == "progressive":
    rows = _progressive(config, workdir, teacher, mesh)
  else:
    method = methods.build_method(config, teacher)
    result = train_method(config, workdir, teacher, method, mesh=mesh)
    if result.interrupted:
      return []
    rows = evaluate_student(config, teacher, method, _student_params(config, result, method), workdir)
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(rows, f, indent=2)
  return rows


def progressive_stages(start_steps, end_steps):
  """The students' step counts of progressive distillation: start/2, start/4, ..., end."""
  out, n = [], start_steps // 2
  while n >= end_steps:
    out.append(n)
    n //= 2
  return out


def _progressive(config, workdir, teacher, mesh):
  """Halving stages: stage N's student starts from, and is taught by, stage 2N's (the teacher first)."""
  o = methods.method_options(config)
  rows, previous = [], None
  for n in progressive_stages(o["start_steps"], o["end_steps"]):
    stage_config = ml_collections.ConfigDict(config.to_dict())
    stage_config.method_options.num_steps = n
    method = methods.build_method(stage_config, teacher, student_params=previous)
    result = train_method(stage_config, os.path.join(workdir, f"stage_{n:04d}"), teacher, method, mesh=mesh,
                          frozen=previous)
    if result.interrupted:
      return []
    # Salimans & Ho: the next stage's teacher and initialisation are this student (EMA when configured).
    previous = jax.tree.map(np.asarray, _student_params(config, result, method))
    rows += evaluate_student(config, teacher, method, previous, workdir, step_counts=[n])
  return rows
