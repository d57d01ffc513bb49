"""Run configs: the shared defaults every `configs/<paper>/<setting>.py` starts from, and checks.

A run config is an `ml_collections.ConfigDict` with these sections (VDM/score_sde style):

  seed          base seed of the run (model init, training keys, sampling keys).
  data          name, batch_size (global), options (forwarded to the dataset builder).
  process       name (see `diffjax.processes.list_processes()`), options (its fields).
  model         name (see `diffjax.models.list_models()`), options (constructor overrides),
                parametrization: "edm" (EDM preconditioning, `precond`, `sigma_data`) or the
                network's prediction ("eps", "x0", "v", "score", "flow"); time_input: what the
                network receives as its noise label when not EDM-preconditioned ("t", "t1000"
                = 999 t as DDPM, "c_noise" = log(sigma / alpha) / 4 as EDM, "ddpm_label" = the integer
                label n of a vp_discrete process, (t - 1/N) N, as DiT/ADM); label_dropout
                (class-conditional models: probability of the null label in training, for
                classifier-free guidance).
  loss          name ("edm", "score_matching", "eps", "v", "flow_matching"), options.
  optim         see `diffjax.training.default_optim_config()`.
  training      see `diffjax.training.default_training_config()`.
  sampling      sampler (see `diffjax.samplers.list_samplers()`), options, grid, grid_options,
                num_steps, t_start / t_end (None: the process's range), use_ema, batch_size,
                guidance_scale (classifier-free guidance of class-conditional models).
  augment       p (0: off) and options of EDM's augmentation pipe (`diffjax.data.augment`), applied
                to each training batch with its labels fed to the network (`augment_labels`).
  eval          n_samples, and the metrics computed on them.
  distributed   see `diffjax.training.default_distributed_config()`.

`validate_config` checks every name and size before anything is built, and raises ValueError
naming the field and the valid choices.
"""
import importlib.util
import os

import ml_collections

PARAMETRIZATIONS = ("edm", "eps", "x0", "v", "score", "flow")
TIME_INPUTS = ("t", "t1000", "c_noise", "ddpm_label")
LOSS_NAMES = ("edm", "score_matching", "eps", "v", "flow_matching", "hybrid")
# Samplers that need the raw network (a learned variance), not a denoiser: built in experiment.make_sampler.
NETWORK_SAMPLERS = ("ddpm_learned_variance",)


def d(**kwargs):
  """A ConfigDict from keyword arguments (VDM's helper)."""
  return ml_collections.ConfigDict(initial_dictionary=kwargs)


def parse_options(options, name, valid):
  """The comma-separated options of a config file (e.g. 'cond,noaug') as a set.

  Raises:
    ValueError: an option not in `valid`, or a repeated one; names the config and the valid options.
  """
  parts = [p for p in options.split(",") if p]
  bad = [p for p in parts if p not in valid]
  if bad or len(set(parts)) != len(parts):
    raise ValueError(f"unknown or repeated option(s) {bad or parts} for {name}; valid: any of {list(valid)}, "
                     "comma-separated")
  return set(parts)


def get_default_config():
  """Defaults shared by every run config; per-paper configs override fields."""
  from diffjax import training
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.data = d(name="ring8", batch_size=512, options=d())
  config.process = d(name="edm", options=d())
  config.model = d(
      name="mlp",
      options=d(),
      parametrization="edm",  # edm / eps / x0 / v / score / flow
      precond="edm",  # edm / vp / ve (with parametrization="edm")
      sigma_data=0.5,
      time_input="c_noise",  # t / t1000 / c_noise (without EDM preconditioning)
      label_dropout=0.0,  # class-conditional models: null-label probability (CFG training)
  )
  config.loss = d(name="edm", options=d())
  config.optim = training.default_optim_config()
  config.training = training.default_training_config()
  config.sampling = d(
      sampler="heun",
      options=d(),
      grid="karras",  # time_uniform / time_quadratic / log_snr / karras
      grid_options=d(),
      num_steps=18,
      t_start=None,
      t_end=None,
      use_ema=True,
      batch_size=10_000,
      guidance_scale=1.0,  # classifier-free guidance for class-conditional models (1 = off)
  )
  config.augment = d(p=0.0, options=d())
  config.eval = d(n_samples=10_000, plot_samples=True)
  config.distributed = training.default_distributed_config()
  return config


def _choice(field, value, valid):
  if value not in valid:
    raise ValueError(f"{field}={value!r} is not valid; valid choices: {sorted(valid)}")


def _positive_int(field, value):
  if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
    raise ValueError(f"{field} must be a positive integer, got {value!r}")


def validate_config(config):
  """Checks names and sizes of a run config; raises ValueError naming the field.

  Checked: data.name, data.batch_size (positive, divisible by the device count), process.name and
  its options, model.name, model.parametrization, model.time_input, loss.name and its pairing with
  the process/model, sampling.sampler and its options, sampling.grid, sampling.num_steps,
  eval.n_samples, and the optim/training sections.
  """
  import jax
  from diffjax import data, models, processes, samplers, timesteps, training

  _choice("data.name", config.data.name, data.list_datasets())
  _positive_int("data.batch_size", config.data.batch_size)
  n_dev = jax.device_count()
  if config.data.batch_size % n_dev:
    raise ValueError(f"data.batch_size={config.data.batch_size} must be divisible by the number of "
                     f"devices ({n_dev})")
  _choice("process.name", config.process.name, processes.list_processes())
  try:
    processes.get_process(config.process.name, **config.process.options.to_dict())
  except ValueError as e:
    raise ValueError(f"process.options: {e}") from None
  _choice("model.name", config.model.name, models.list_models())
  _choice("model.parametrization", config.model.parametrization, PARAMETRIZATIONS)
  if config.model.parametrization == "edm":
    from diffjax import parametrization
    _choice("model.precond", config.model.precond, parametrization.PRECONDITIONINGS)
  else:
    _choice("model.time_input", config.model.time_input, TIME_INPUTS)
    if config.model.time_input == "ddpm_label" and config.process.name != "vp_discrete":
      raise ValueError("model.time_input='ddpm_label' needs process.name='vp_discrete', "
                       f"got {config.process.name!r}")
  _choice("loss.name", config.loss.name, LOSS_NAMES)
  if config.loss.name == "edm" and config.process.name not in ("edm", "pfgmpp"):
    raise ValueError(f"loss.name='edm' samples EDM noise levels and needs process.name='edm' or 'pfgmpp', "
                     f"got process.name={config.process.name!r}")
  if config.process.name == "pfgmpp":
    _check_pfgmpp_sampler(config)
  if config.get("augment") is not None:
    _check_augment(config)
  learn_sigma = bool(config.model.options.get("learn_sigma", False))
  if config.loss.name == "hybrid":
    if config.process.name != "vp_discrete" or config.model.parametrization != "eps" or not learn_sigma:
      raise ValueError("loss.name='hybrid' (L_simple + L_vlb, learned variance) needs process.name='vp_discrete', "
                       "model.parametrization='eps' and model.options.learn_sigma=True; got "
                       f"{config.process.name!r}, {config.model.parametrization!r}, learn_sigma={learn_sigma}")
  _choice("sampling.sampler", config.sampling.sampler, samplers.list_samplers() + list(NETWORK_SAMPLERS))
  if config.sampling.sampler in NETWORK_SAMPLERS:
    if not learn_sigma or config.process.name != "vp_discrete":
      raise ValueError(f"sampling.sampler={config.sampling.sampler!r} needs model.options.learn_sigma=True and "
                       f"process.name='vp_discrete'")
    unknown = sorted(set(config.sampling.options) - {"clip_denoised"})
    if unknown:
      raise ValueError(f"sampling.options: unknown option(s) {unknown} for {config.sampling.sampler!r}; "
                       "valid options: ['clip_denoised'] (sampling.num_steps is the respacing)")
  else:
    try:
      samplers.get_sampler(config.sampling.sampler, **config.sampling.options.to_dict())
    except ValueError as e:
      raise ValueError(f"sampling.options: {e}") from None
  _choice("sampling.grid", config.sampling.grid, timesteps.GRIDS)
  _positive_int("sampling.num_steps", config.sampling.num_steps)
  _positive_int("sampling.batch_size", config.sampling.batch_size)
  _positive_int("eval.n_samples", config.eval.n_samples)
  label_dropout = config.model.get("label_dropout", 0.0)
  if not 0.0 <= label_dropout < 1.0:
    raise ValueError(f"model.label_dropout must be in [0, 1), got {label_dropout!r}")
  if label_dropout > 0 and config.model.options.get("num_classes") is None:
    raise ValueError("model.label_dropout > 0 needs a class-conditional model (model.options.num_classes)")
  training.validate_optim_config(config.optim)
  training.validate_training_config(config.training)


#: samplers that assume a Gaussian forward SDE, undefined for PFGM++ at finite D
GAUSSIAN_SDE_SAMPLERS = ("ancestral", "euler_maruyama", "langevin", "pc", "reverse_diffusion")


def _check_pfgmpp_sampler(config):
  """PFGM++ at finite D has no Gaussian forward SDE: only ODE samplers (and Heun's churn) apply."""
  D = config.process.options.get("D", 128.0)
  if D == float("inf"):
    return
  stochastic_ddim = config.sampling.sampler == "ddim" and config.sampling.options.get("eta", 0.0) != 0.0
  if config.sampling.sampler in GAUSSIAN_SDE_SAMPLERS or stochastic_ddim:
    raise ValueError(f"sampling.sampler={config.sampling.sampler!r} assumes a Gaussian forward SDE, which "
                     f"process.name='pfgmpp' with D={D} does not have; use an ODE sampler (heun, euler, "
                     "dpm_solver, unipc, ddim with eta=0, pf_ode)")


def load_config_file(path, options="", *, field="config_path"):
  """`get_config(options)` of a config file, as `--config=path:options` loads it.

  Args:
    path: the config file.
    options: the string after the colon.
    field: the config field that named `path`, for the error (e.g. "teacher.config_path").

  Raises:
    ValueError: `path` does not exist (naming `field`).
  """
  if not os.path.exists(path):
    raise ValueError(f"{field}={path!r} does not exist")
  spec = importlib.util.spec_from_file_location("diffjax_loaded_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(options)


def _check_augment(config):
  """augment.p >= 0, its options are augment-pipe options, and the network takes their labels."""
  from diffjax.data import augment
  from diffjax.models import registry
  p = config.augment.get("p", 0.0)
  if isinstance(p, bool) or not isinstance(p, (int, float)) or not p >= 0:
    raise ValueError(f"augment.p must be a number >= 0 (0: no augmentation), got {p!r}")
  if not p:
    return
  options = config.augment.get("options", d()).to_dict()
  try:
    width = augment.augment_dim(**options)
  except (TypeError, ValueError) as e:
    raise ValueError(f"augment.options: {e}") from None
  defaults = registry._MODELS.get(config.model.name, (None, {}))[1]
  model_dim = config.model.options.get("augment_dim", defaults.get("augment_dim", 0))
  if model_dim != width:
    raise ValueError(f"augment.options give {width} augment labels but model {config.model.name!r} takes "
                     f"model.options.augment_dim={model_dim}; set it to {width} or augment.p=0")
