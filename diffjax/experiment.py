"""A diffusion run from a config: build the parts, train, sample, evaluate.

This is the glue between the pure numerical core (processes, parametrization, losses, samplers)
and the generic training loop. Every builder is a small function of the config, usable on its own:

  build_process(config)                        -> Process
  build_model(config, example_shape, rngs)     -> nnx.Module
  make_denoiser(config, process, apply_fn)     -> denoiser(params, x, t, cond=None) -> x0_hat
  make_loss_fn(config, process, apply_fn)      -> loss_fn(params, batch, key) -> (loss, aux)
  make_sampler(config, process, apply_fn, ...) -> sample(params, key, n) -> samples

and `train_and_evaluate`, `evaluate`, `sample` are what `diffjax.main` runs.
"""
import functools
import json
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from diffjax import data as data_lib
from diffjax.data import augment
from diffjax import losses, metrics, models, processes, samplers, timesteps, training
from diffjax import parametrization as prm

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------------------------
def build_process(config):
  return processes.get_process(config.process.name, **config.process.options.to_dict())


def build_model(config, example_shape, rngs):
  """The network, with its input size taken from the data (`in_features` or `in_channels`)."""
  options = config.model.options.to_dict()
  if len(example_shape) == 1:
    options.setdefault("in_features", example_shape[0])
  else:
    options.setdefault("in_channels", example_shape[-1])
  return models.create(config.model.name, rngs=rngs, **options)


def _time_input(config, process, t):
  kind = config.model.time_input
  if kind == "t":
    return t
  if kind == "t1000":
    return 999.0 * t
  if kind == "ddpm_label":
    return process.model_time(t)
  return 0.25 * jnp.log(process.edm_sigma(t))


def make_denoiser(config, process, apply_fn):
  """`denoiser(params, x, t, cond=None)`: the x0 estimate of the network named by the config."""
  if config.model.parametrization == "edm":
    def denoiser(params, x, t, cond=None):
      net = lambda x_in, c_noise: apply_fn(params, x_in, c_noise, cond)
      return prm.edm_denoiser(net, process, config.model.precond, **_precond_options(config))(x, t)
  else:
    def denoiser(params, x, t, cond=None):
      t = jnp.broadcast_to(t, (x.shape[0],))
      out = _prediction(config, apply_fn(params, x, _time_input(config, process, t), cond))
      return prm.to_x0(out, x, t, process, config.model.parametrization)
  return denoiser


def _learn_sigma(config):
  return bool(config.model.options.get("learn_sigma", False))


def _prediction(config, out):
  """The prediction channels of the network output (the first half when it also learns the variance)."""
  return out[..., :out.shape[-1] // 2] if _learn_sigma(config) else out


def _precond_options(config):
  return {"sigma_data": config.model.sigma_data} if config.model.precond == "edm" else {}


def _native_net(config, process, apply_fn, params, cond):
  """The network as `net(x, t)` with the prediction it natively makes."""
  if config.model.parametrization == "edm":
    den = make_denoiser(config, process, apply_fn)
    return (lambda x, t: den(params, x, t, cond)), "x0"
  net = lambda x, t: _prediction(config, apply_fn(params, x, _time_input(config, process, t), cond))
  return net, config.model.parametrization


def make_loss_fn(config, process, apply_fn, train_apply_fn=None):
  """`loss_fn(params, batch, key) -> (loss, aux)` for the train step; batch = {"x", ["label"]}.

  With `train_apply_fn(params, x, t, cond=None, *, key)` (`models.split_train_apply`) the network
  runs in training mode, its dropout masks drawn from a key split off the step's key.
  """
  name, options = config.loss.name, config.loss.options.to_dict()
  conditional = config.model.options.get("num_classes") is not None

  num_classes = config.model.options.get("num_classes")
  label_dropout = config.model.get("label_dropout", 0.0)
  augment_p, augment_options = augment_settings(config)

  def loss_fn(params, batch, key):
    x0 = batch["x"]
    net_fn = apply_fn
    if train_apply_fn is not None:
      key, k_dropout = jax.random.split(key)
      net_fn = functools.partial(train_apply_fn, key=k_dropout)
    if augment_p > 0:
      # EDM's non-leaky augmentation (Karras et al. 2022, app. F.2): the network sees the transform
      # through its augment labels; sampling passes none (= zeros).
      key, k_aug = jax.random.split(key)
      x0, aug_labels = augment.augment_pipe(k_aug, x0, p=augment_p, **augment_options)
      net_fn = functools.partial(_with_augment_labels, net_fn, aug_labels)
    cond = batch.get("label") if conditional else None
    if cond is not None and label_dropout > 0:
      # Classifier-free guidance training (Ho & Salimans 2021): the null label num_classes with
      # probability label_dropout.
      key, k_drop = jax.random.split(key)
      cond = jnp.where(jax.random.bernoulli(k_drop, label_dropout, cond.shape), num_classes, cond)
    if name == "edm":
      den = make_denoiser(config, process, net_fn)
      loss, _ = losses.edm_loss(lambda x, s: den(params, x, s, cond), x0, key,
                                sigma_data=config.model.sigma_data, process=process, **options)
      return loss, {}
    if name == "hybrid":
      # Improved DDPM / ADM / DiT: L_simple + L_vlb with the learned-range variance.
      model_fn = lambda x_t, t_int: net_fn(params, x_t, t_int.astype(x_t.dtype), cond)
      loss, aux = losses.hybrid_loss(model_fn, x0, key, process=process, **options)
      return loss, {"mse": aux["mse"], "vb": aux["vb"]}
    net, native = _native_net(config, process, net_fn, params, cond)
    if name == "flow_matching":
      flow_net = lambda x, t: prm.convert(net(x, t), x, t, process, source=native, target="flow")
      loss, _ = losses.flow_matching_loss(flow_net, x0, key, process=process, **options)
      return loss, {}
    weighting = {"eps": "sigma2", "v": "v"}.get(name)
    if weighting is not None:
      options.setdefault("weighting", weighting)
    loss, _ = losses.score_matching_loss(net, x0, key, process=process, prediction=native, **options)
    return loss, {}

  return loss_fn


def augment_settings(config):
  """(p, options) of `config.augment` (p = 0: none; configs without the section have none)."""
  section = config.get("augment")
  if section is None:
    return 0.0, {}
  options = section.get("options")
  return float(section.get("p", 0.0)), options.to_dict() if options else {}


def _with_augment_labels(apply_fn, labels, params, x, t, cond=None, **kwargs):
  return apply_fn(params, x, t, cond, augment_labels=labels, **kwargs)


def make_time_grid(config, process):
  s = config.sampling
  return timesteps.get_timesteps(s.grid, s.num_steps, process, t_start=s.t_start, t_end=s.t_end,
                                 **s.grid_options.to_dict())


def sample_labels(config, n, offset=0):
  """Class labels of conditional samples: 0, 1, ..., num_classes - 1, repeated (balanced)."""
  return (np.arange(offset, offset + n) % config.model.options.num_classes).astype(np.int32)


def make_sampler(config, process, apply_fn, example_shape):
  """`sample(params, key, n) -> (n, *example_shape)` samples with the configured sampler.

  Class-conditional models (`model.options.num_classes`) draw balanced labels (`sample_labels`)
  with classifier-free guidance at `sampling.guidance_scale` (1 = plain conditional; the null
  label is num_classes). Each chunk of `sampling.batch_size` samples runs as one compiled sampling
  loop; a progress bar shows the chunks.
  """
  den = make_denoiser(config, process, apply_fn)
  num_classes = config.model.options.get("num_classes")
  scale = config.sampling.get("guidance_scale", 1.0)
  network_sampler = config.sampling.sampler == "ddpm_learned_variance"
  if not network_sampler:
    sampler = samplers.get_sampler(config.sampling.sampler, **config.sampling.options.to_dict())
    ts = make_time_grid(config, process)

  def learned_variance_chunk(params, key, x, labels):
    """DiT's sampling: ancestral steps with the learned variance, CFG on the eps channels only."""
    def model_fn(x_t, t_int):
      t_in = t_int.astype(x_t.dtype)
      if num_classes is None:
        return apply_fn(params, x_t, t_in)
      out_c = apply_fn(params, x_t, t_in, labels)
      if scale == 1.0:
        return out_c
      out_u = apply_fn(params, x_t, t_in, jnp.full_like(labels, num_classes))
      c = out_c.shape[-1] // 2
      eps = out_u[..., :c] + scale * (out_c[..., :c] - out_u[..., :c])
      return jnp.concatenate([eps, out_c[..., c:]], axis=-1)
    return samplers.learned_variance.ddpm_learned_variance(
        model_fn, x, process=process, key=key, num_steps=config.sampling.num_steps,
        **config.sampling.options.to_dict())

  @functools.partial(jax.jit, static_argnames="n")
  def sample_chunk(params, key, n, labels):
    k_prior, k_sampler = jax.random.split(key)
    x = process.prior_sample(k_prior, (n,) + tuple(example_shape))
    if network_sampler:
      return learned_variance_chunk(params, k_sampler, x, labels)
    if num_classes is None:
      denoiser = lambda x, t: den(params, x, t)
    else:
      guided = prm.classifier_free_guidance(lambda x, t, c: den(params, x, t, c), scale, num_classes)
      denoiser = lambda x, t: guided(x, t, labels)
    return sampler(denoiser, x, ts, process=process, key=k_sampler)

  def sample(params, key, n, *, progress=True):
    chunk = min(config.sampling.batch_size, n)
    out = []
    pieces = range(0, n, chunk)
    for i in tqdm(pieces, desc="sample", disable=not progress or len(pieces) == 1):
      m = min(chunk, n - i)
      labels = None if num_classes is None else jnp.asarray(sample_labels(config, m, i))
      out.append(np.asarray(sample_chunk(params, jax.random.fold_in(key, i), m, labels)))
    return np.concatenate(out)

  return sample


# --------------------------------------------------------------------------------------------
# A run
# --------------------------------------------------------------------------------------------
class Run:
  """Everything built from one config: process, dataset, model, loss, optimizer, sampler."""

  def __init__(self, config):
    self.config = config
    self.process = build_process(config)
    self.dataset = data_lib.make_dataset(config.data)
    self.example_shape = tuple(self.dataset.example_shape)
    model = build_model(config, self.example_shape, nnx.Rngs(config.seed))
    self.apply_fn, params = models.split_apply(model)
    # Dropout acts in training only, and only when the model has some (EDM's 0.13, ADM's 0.1);
    # without it the step's key is used exactly as before.
    train_apply_fn = models.split_train_apply(model)[0] if models.dropout_rate(model) > 0 else None
    self.loss_fn = make_loss_fn(config, self.process, self.apply_fn, train_apply_fn)
    self.optimizer, self.train_step = training.build_train_step(self.loss_fn, config)
    self.initial_state = training.TrainState.create(params, self.optimizer,
                                                    jax.random.PRNGKey(config.seed + 1))
    self.sample = make_sampler(config, self.process, self.apply_fn, self.example_shape)
    log.info("model %s: %d parameters", config.model.name, models.count_params(model))

  def sampling_params(self, state):
    return state.ema_params if self.config.sampling.use_ema else state.params

  def restore(self, workdir, *, require_same_config=False):
    """The latest TrainState in `workdir/checkpoints`.

    With `require_same_config`, a checkpoint whose stored config (`metadata["config"]`) differs
    from this run's config raises a ValueError naming the differing fields: a model trained by
    another version of a config file is not silently reused.
    """
    ckpt = training.Checkpointer(os.path.join(workdir, "checkpoints"))
    try:
      restored = ckpt.restore_latest(self.initial_state)
      stored = None if restored is None else ckpt.metadata(ckpt.latest_step()).get("metadata", {}).get("config")
    finally:
      ckpt.close()
    if restored is None:
      raise FileNotFoundError(f"no checkpoint in {workdir}/checkpoints; run --mode=train first")
    if require_same_config:
      check_same_config(stored, self.config, workdir)
    return restored[0]


#: fields a resumed run may change: how long it runs, how often it logs / saves / samples, evaluation
RESUME_MAY_CHANGE = ("training.num_steps", "training.log_every", "training.ckpt_every", "training.keep_checkpoints",
                     "training.sample_every", "training.eval_every", "training.tensorboard",
                     "training.async_checkpoints", "eval.")


def check_same_config(stored, config, workdir, ignore=()):
  """Raises a ValueError naming the fields where a checkpoint's stored config dict differs from `config`.

  Fields equal to or starting with an entry of `ignore` (e.g. `RESUME_MAY_CHANGE`) may differ.
  """
  if stored is None:
    return
  differ = [f for f in config_differences(stored, config.to_dict())
            if not any(f == i or (i.endswith(".") and f.startswith(i)) for i in ignore)]
  if differ:
    raise ValueError(f"the checkpoint in {workdir} was trained with a different config (fields "
                     f"{differ[:8]}{' ...' if len(differ) > 8 else ''} differ); delete the directory to "
                     "retrain, or point to another one")


def stored_config(workdir):
  """The config dict stored with the latest checkpoint in `workdir/checkpoints`, or None."""
  path = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(path):
    return None
  ckpt = training.Checkpointer(path)
  try:
    step = ckpt.latest_step()
    return None if step is None else ckpt.metadata(step).get("metadata", {}).get("config")
  finally:
    ckpt.close()


def config_differences(a, b, prefix=""):
  """Dotted names of the fields where two config dicts differ (after a JSON round trip)."""
  a, b = json.loads(json.dumps(a, default=str)), json.loads(json.dumps(b, default=str))
  if not (isinstance(a, dict) and isinstance(b, dict)):
    return [] if a == b else [prefix.rstrip(".") or "<root>"]
  out = []
  for k in sorted(set(a) | set(b)):
    if k not in a or k not in b:
      out.append(prefix + k)
    else:
      out += config_differences(a[k], b[k], prefix + k + ".")
  return out


def _plot_samples(path, samples, reference=None):
  if samples.ndim == 2:
    training.save_scatter(path, samples[:, :2], reference=None if reference is None else reference[:, :2])
  else:
    training.save_image_grid(path, samples[:64], value_range=(-1, 1), upscale=max(1, 64 // samples.shape[1]))


def _evaluate_samples(run, samples, key):
  """Distances of model samples to fresh data samples, against the data-vs-data noise floor."""
  n = samples.shape[0]
  k_ref, k_floor, k_sw1, k_sw2 = jax.random.split(key, 4)
  reference = data_lib.reference_samples(run.config.data, k_ref, n)
  floor_samples = data_lib.reference_samples(run.config.data, k_floor, n)
  flat = lambda a: jnp.asarray(a.reshape(a.shape[0], -1), jnp.float32)
  result = {
      "n_samples": int(n),
      "sliced_wasserstein": float(metrics.sliced_wasserstein(k_sw1, flat(samples), flat(reference))),
      "sliced_wasserstein_noise_floor": float(
          metrics.sliced_wasserstein(k_sw1, flat(floor_samples), flat(reference))),
  }
  result["sliced_wasserstein_ratio"] = result["sliced_wasserstein"] / result["sliced_wasserstein_noise_floor"]
  dist = data_lib.toy_distribution(run.config.data)
  if dist is not None and hasattr(dist, "means"):
    coverage = metrics.mode_coverage(jnp.asarray(samples), dist.means, dist.mode_stds)
    result["mode_shares"] = [float(s) for s in coverage["shares"]]
    result["off_mode_fraction"] = float(coverage["off_mode"])
  return result, reference


def _write_outputs(run, workdir, samples, key, evaluate=True):
  os.makedirs(workdir, exist_ok=True)
  np.savez_compressed(os.path.join(workdir, "samples.npz"), samples=samples)
  reference = None
  result = None
  if evaluate:
    result, reference = _evaluate_samples(run, samples, key)
    with open(os.path.join(workdir, "metrics.json"), "w") as f:
      json.dump(result, f, indent=2)
    log.info("metrics: %s", json.dumps(result))
  if run.config.eval.plot_samples:
    _plot_samples(os.path.join(workdir, "samples.png"), samples, reference)
  return result


def train_and_evaluate(config, workdir):
  """Trains (resuming if possible), then samples `eval.n_samples` and writes metrics.json."""
  run = Run(config)

  def sample_fn(state, step):
    x = run.sample(run.sampling_params(state), jax.random.PRNGKey(step), 512 if len(run.example_shape) == 1 else 64,
                   progress=False)
    _plot_samples(os.path.join(workdir, "samples", f"step_{step:07d}.png"), x)

  result = training.train(config=config, workdir=workdir, state=run.initial_state,
                          train_step=run.train_step, dataset=run.dataset, sample_fn=sample_fn,
                          metadata={"config": config.to_dict()})
  if result.interrupted:
    return None
  samples = run.sample(run.sampling_params(result.state), jax.random.PRNGKey(config.seed + 2),
                       config.eval.n_samples)
  return _write_outputs(run, workdir, samples, jax.random.PRNGKey(config.seed + 3))


def evaluate(config, workdir):
  run = Run(config)
  state = run.restore(workdir)
  samples = run.sample(run.sampling_params(state), jax.random.PRNGKey(config.seed + 2), config.eval.n_samples)
  return _write_outputs(run, workdir, samples, jax.random.PRNGKey(config.seed + 3))


def sample(config, workdir):
  run = Run(config)
  state = run.restore(workdir)
  samples = run.sample(run.sampling_params(state), jax.random.PRNGKey(config.seed + 2), config.eval.n_samples)
  _write_outputs(run, workdir, samples, None, evaluate=False)
  return samples
