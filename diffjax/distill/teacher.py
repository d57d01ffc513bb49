"""The frozen EDM teacher of a distillation run, trained by the library from its own config.

`Teacher(config.teacher)` loads the teacher's run config (``config_path`` + ``config_options``),
restores its latest checkpoint from ``workdir`` (the stored config must match: a teacher trained
with an older version of the file is not reused silently) or trains it there first, and exposes
the pure functions every distillation method is written in:

  raw(params, x_in, c_noise, cond=None)   the network F (EDM preconditioning's inner net)
  denoiser(params, x, sigma, cond=None)   D(x, sigma) = c_skip x + c_out F(c_in x, c_noise)
  features(params, x, sigma, cond=None)   F's last hidden activations at the preconditioned input
  new_params(seed)                        a freshly initialised network of the same architecture

Teachers must be EDM-parametrised (``model.parametrization = "edm"`` on the ``edm`` process):
the distillation losses use D(x, sigma) with x_sigma = x + sigma eps.
"""
import logging

import jax
import jax.numpy as jnp
from flax import nnx

from diffjax import configuration, experiment, models
from diffjax import parametrization as prm

log = logging.getLogger(__name__)


def load_config_file(path, options=""):
  """`get_config(options)` of the teacher's config file (`teacher.config_path`)."""
  return configuration.load_config_file(path, options, field="teacher.config_path")


class Teacher:
  """The teacher run: its config, process, pure network functions and (EMA) parameters."""

  def __init__(self, teacher_config, *, train_if_missing=True):
    self.config = load_config_file(teacher_config.config_path, teacher_config.get("config_options", ""))
    if self.config.model.parametrization != "edm" or self.config.process.name != "edm":
      raise ValueError("the distillation teacher must be EDM-parametrised on the edm process (teacher config "
                       f"model.parametrization={self.config.model.parametrization!r}, "
                       f"process.name={self.config.process.name!r})")
    self.workdir = teacher_config.workdir
    self.run = experiment.Run(self.config)
    try:
      state = self.run.restore(self.workdir, require_same_config=True)
    except FileNotFoundError:
      if not train_if_missing:
        raise
      log.info("no teacher checkpoint in %s: training the teacher first", self.workdir)
      experiment.train_and_evaluate(self.config, self.workdir)
      state = self.run.restore(self.workdir)
    self.params = state.ema_params
    self.process = self.run.process
    self.example_shape = self.run.example_shape
    self.sigma_data = float(self.config.model.sigma_data)
    self.num_classes = self.config.model.options.get("num_classes")
    self._model = lambda seed: experiment.build_model(self.config, self.example_shape, nnx.Rngs(seed))
    model = self._model(self.config.seed)
    self.raw, _ = models.split_apply(model)
    self._model_for_features = model

  def new_params(self, seed):
    """Parameters of a freshly initialised network of the teacher's architecture (iCT's student)."""
    return models.split_apply(self._model(seed))[1]

  def copy_params(self):
    """A copy of the teacher's parameters (students and fake scores start from the teacher)."""
    return jax.tree.map(jnp.copy, self.params)

  def denoiser(self, params, x, sigma, cond=None):
    """EDM's D(x, sigma) of the network with ``params`` (sigma scalar or (B,))."""
    net = lambda x_in, c_noise: self.raw(params, x_in, c_noise, cond)
    return prm.edm_denoiser(net, self.process, "edm", sigma_data=self.sigma_data)(x, sigma)

  def network(self, params, cond=None):
    """F(x_in, c_noise) of ``params``, for `losses.distillation.consistency_fn`."""
    return lambda x_in, c_noise: self.raw(params, x_in, c_noise, cond)

  def features(self, params, x, sigma, cond=None):
    """F's last hidden activations at EDM's preconditioned input (c_in x, c_noise)."""
    if not hasattr(self, "_features"):
      self._features = models.split_features(self._model_for_features)
    sigma = jnp.broadcast_to(jnp.asarray(sigma, x.dtype), (x.shape[0],))
    _, _, c_in, c_noise = prm.edm_preconditioning(sigma, "edm", sigma_data=self.sigma_data)
    c_in = c_in.reshape((-1,) + (1,) * (x.ndim - 1))
    return self._features(params, c_in * x, c_noise, cond)

  def feature_dim(self):
    """Width of `features` (from one evaluation on a dummy input)."""
    x = jnp.zeros((1,) + self.example_shape)
    return int(jax.eval_shape(lambda: self.features(self.params, x, jnp.ones((1,)))).shape[-1])
