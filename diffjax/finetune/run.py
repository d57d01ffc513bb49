"""A preference fine-tuning run from a config: base model, data, rounds of training, evaluation.

  finetune(config, workdir) -> list of per-round metric dicts (also written to results.json)

Config fields (`default_finetune_config`; per-method configs live in configs/<method>/):

  task                   "ring" | "digits" (`tasks.py`)
  base.config_path, base.config_options, base.workdir
                         the pretrained diffusion run (trained there first if it has no checkpoint);
                         its EMA weights are the reference and the policy's initialisation
  method                 diffusion_dpo | rank_dpo | sft | kto | d3po | spo | ddo
  method_options         keyword options of the objective (`objectives.py`): beta, loss_type, ...
  sampling               num_steps, eta: the stochastic DDIM sampler of the trajectory methods and
                         of every evaluation (ts uniform from t_max to the process's t_min)
  generation             offline data (diffusion_dpo, rank_dpo, sft, kto): num_prompts, generators
                         (list of {name, eta, guidance}), k_per_generator, or `path` of a saved
                         data set (`data.preference` format) to train on instead; pairs for pairwise
                         methods come from disjoint halves of each list, so the same images feed
                         pairs and rankings (equal generation budget)
  rounds                 num_rounds, prompts_per_round: online methods sample fresh data from the
                         current policy each round (d3po, spo) or from the round's reference (ddo)
  spo                    num_candidates, threshold, divert_start_step
  ddo                    selection_every: steps between evaluations for best-checkpoint selection
  data.batch_size        pairs / lists / transitions per step
  optim, training        as every diffjax run (training.num_steps = steps per round)
  eval.n_samples

Resume: each round trains in `workdir/round_<r>` with the foundation's loop (atomic checkpoints,
exact resume); a round's generated data is saved there first (`data.npz`), so a restarted round
trains on exactly the same data.
"""
import json
import logging
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from diffjax import configuration, experiment, parametrization as prm, training, utils
from diffjax.configuration import d
from diffjax.data import datasets as datasets_lib
from diffjax.data import preference as pref_data
from diffjax.finetune import evaluation, generation, objectives, tasks
from diffjax.finetune.reference import POLICY, REFERENCE, frozen_reference_optimizer, with_frozen_reference

log = logging.getLogger(__name__)

OFFLINE = ("diffusion_dpo", "rank_dpo", "sft", "kto")
ONLINE = ("d3po", "spo", "ddo")


def default_finetune_config():
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.task = "ring"
  config.base = d(config_path="configs/preference/ring_base.py", config_options="",
                  workdir="/tmp/diffjax_preference_base_ring")
  config.method = "diffusion_dpo"
  config.method_options = d(beta=1000.0)
  config.sampling = d(num_steps=20, eta=1.0)
  config.generation = d(path="", num_prompts=2048, k_per_generator=2,
                        generators=[d(name="ddim_eta1", eta=1.0, guidance=1.0),
                                    d(name="ddim_eta0.5", eta=0.5, guidance=1.0)])
  config.rounds = d(num_rounds=1, prompts_per_round=512)
  config.spo = d(num_candidates=4, threshold=0.3, divert_start_step=4)
  config.ddo = d(selection_every=0)
  config.data = d(batch_size=256)
  config.optim = training.default_optim_config()
  config.optim.optimizer = "adam"
  config.optim.lr = 1e-4
  config.optim.schedule = "constant"
  config.optim.warmup_steps = 0
  config.optim.grad_clip = 1.0
  config.training = training.default_training_config()
  config.training.num_steps = 1000
  config.training.ema_decay = 0.0  # fine-tuning evaluates the parameters themselves
  config.training.ckpt_every = 0
  config.training.tensorboard = False
  config.eval = d(n_samples=4096)
  return config


def load_config_file(path, options=""):
  """`get_config(options)` of the base model's config file (`base.config_path`)."""
  return configuration.load_config_file(path, options, field="base.config_path")


def validate_finetune_config(config):
  """Names and sizes, checked before anything is built; errors name the field."""
  if config.method not in objectives.OBJECTIVES:
    raise ValueError(f"method={config.method!r} is not valid; valid choices: {sorted(objectives.OBJECTIVES)}")
  if config.task not in tasks.TASKS:
    raise ValueError(f"task={config.task!r} is not valid; valid choices: {sorted(tasks.TASKS)}")
  for field, value in (("data.batch_size", config.data.batch_size), ("sampling.num_steps", config.sampling.num_steps),
                       ("rounds.num_rounds", config.rounds.num_rounds), ("eval.n_samples", config.eval.n_samples),
                       ("generation.num_prompts", config.generation.num_prompts)):
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
      raise ValueError(f"{field} must be a positive integer, got {value!r}")
  if not config.sampling.eta > 0:
    raise ValueError(f"sampling.eta must be > 0 (transition log-probabilities need noise), got {config.sampling.eta}")
  if config.method in OFFLINE and config.rounds.num_rounds != 1:
    raise ValueError(f"rounds.num_rounds must be 1 for the offline method {config.method!r}")


# --------------------------------------------------------------------------------------------
# Base model
# --------------------------------------------------------------------------------------------
class Base:
  """The pretrained run: process, denoiser(params, x, t, cond), its EMA parameters, example shape."""

  def __init__(self, config):
    self.config = load_config_file(config.base.config_path, config.base.config_options)
    self.workdir = config.base.workdir
    self.run = experiment.Run(self.config)
    try:
      state = self.run.restore(self.workdir, require_same_config=True)
    except FileNotFoundError:
      log.info("no base checkpoint in %s: training the base model first", self.workdir)
      experiment.train_and_evaluate(self.config, self.workdir)
      state = self.run.restore(self.workdir)
    self.params = state.ema_params
    self.process = self.run.process
    self.example_shape = self.run.example_shape
    den = experiment.make_denoiser(self.config, self.process, self.run.apply_fn)
    self.conditional = self.config.model.options.get("num_classes") is not None
    self.num_classes = self.config.model.options.get("num_classes")
    self.denoiser = den if self.conditional else (lambda p, x, t, cond=None: den(p, x, t, None))

  def guided(self, scale):
    """denoiser(params, x, t, cond) with classifier-free guidance at `scale` (1 = the plain model)."""
    if not self.conditional or scale == 1.0:
      return self.denoiser
    den = self.denoiser

    def guided(params, x, t, cond):
      return prm.classifier_free_guidance(lambda z, s, c: den(params, z, s, c), scale, self.num_classes)(x, t, cond)

    return guided


def time_grid(config, process):
  t_min = float(getattr(process, "t_min", 1e-3))
  return jnp.linspace(float(getattr(process, "t_max", 1.0)), t_min, config.sampling.num_steps + 1)


# --------------------------------------------------------------------------------------------
# Data per round
# --------------------------------------------------------------------------------------------
def _generators(config, base, ts):
  out = {}
  for g in config.generation.generators:
    den = base.guided(g.guidance)

    def gen(key, cond, den=den, eta=g.eta):
      shape = (len(cond),) + base.example_shape
      return generation.sample_images(den, base.params, key, jnp.asarray(cond), shape, process=base.process,
                                      ts=ts, eta=eta)

    out[g.name] = jax.jit(gen)
  return out


def offline_preference_data(config, base, task, ts, key, workdir):
  """The ranked data of the offline methods, in diffjax's on-disk format (`data.preference`).

  `generation.path` names an existing data set (e.g. one a user built with their own generators and
  reward models); otherwise Syn-Pic-style lists are generated from the reference's generators,
  scored by every task reward, and saved in `workdir/preference_data` (reused on a rerun).
  """
  path = config.generation.get("path")
  if path:
    return pref_data.load_preference_dataset(path)
  path = os.path.join(workdir, "preference_data")
  if os.path.exists(path):
    return pref_data.load_preference_dataset(path)
  prompts = task.prompts(config.generation.num_prompts)
  data = pref_data.build_preference_data(_generators(config, base, ts), prompts,
                                         config.generation.k_per_generator, task.rewards, key,
                                         config=config.generation.to_dict())
  pref_data.save_preference_dataset(path, data)
  return data


def disjoint_pairs(data):
  """Pairs (0, k/2), (1, k/2 + 1), ... of each list, labelled by win counts over the rewards of
  the two images alone (Algorithm 1 with k = 2); ties dropped. Same images as the ranked lists."""
  half = data.k // 2
  idx = np.stack([np.arange(half), np.arange(half, 2 * half)], axis=1)  # (k/2, 2)
  rewards = data.rewards[:, idx]  # (P, k/2, 2, n_rewards)
  phi = pref_data.aggregated_preference(rewards.reshape((-1, 2) + rewards.shape[3:]))  # one 2-list per pair
  pairs = pref_data.to_pairs(phi)
  x = data.samples[:, idx].reshape((-1, 2) + data.samples.shape[2:])
  rows = pairs["prompt"]
  return {"x_w": x[rows, pairs["winner"]], "x_l": x[rows, pairs["loser"]], "cond": np.repeat(data.cond, half)[rows]}


def _round_arrays(config, base, task, params, ts, key, r, workdir):
  """The training arrays of round r (method-specific; module docstring)."""
  m = config.method
  shape = (config.rounds.prompts_per_round,) + base.example_shape
  cond = jnp.asarray(task.prompts(shape[0], offset=r * shape[0]))
  if m in OFFLINE:
    data = offline_preference_data(config, base, task, ts, key, workdir)
    if m == "rank_dpo":
      return {"x": data.samples, "phi": data.phi.astype(np.float32), "cond": data.cond}
    pairs = disjoint_pairs(data)
    if m == "kto":
      x = np.concatenate([pairs["x_w"], pairs["x_l"]])
      desirable = np.concatenate([np.ones(len(pairs["x_w"])), np.zeros(len(pairs["x_l"]))]).astype(np.float32)
      return {"x": x, "desirable": desirable, "cond": np.concatenate([pairs["cond"]] * 2)}
    return pairs
  if m == "d3po":
    out = generation.d3po_transitions(base.denoiser, params[POLICY], key, cond, shape, process=base.process, ts=ts,
                                      reward_fn=task.reward_fn, eta=config.sampling.eta)
    out.pop("rewards")
    return out
  if m == "spo":
    out = generation.spo_transitions(base.denoiser, params[POLICY], key, cond, shape, process=base.process, ts=ts,
                                     step_reward_fn=task.step_reward_fn, eta=config.sampling.eta,
                                     num_candidates=config.spo.num_candidates, threshold=config.spo.threshold,
                                     divert_start_step=config.spo.divert_start_step)
    log.info("spo round %d: %.1f%% of (step, prompt) pairs above the threshold", r, 100 * out.pop("keep_fraction"))
    return out
  if m == "ddo":
    real = base.run.dataset
    xs = []
    while sum(len(x) for x in xs) < shape[0]:
      xs.append(np.asarray(next(real)["x"]))
    real_x = np.concatenate(xs)[:shape[0]]
    return generation.ddo_real_fake(base.denoiser, params[REFERENCE], key, jnp.asarray(real_x),
                                    cond if base.conditional else None, process=base.process, ts=ts,
                                    eta=config.sampling.eta)
  raise ValueError(f"method={m!r} is not valid")


def _load_or_make(path, make):
  if os.path.exists(path):
    with np.load(path) as f:
      return {k: f[k] for k in f.files}
  arrays = make()
  utils.save_npz_atomic(path, **arrays)
  return arrays


def _data_samples(base, task, n, key):
  """Held-out data to measure the samples' distance to the data distribution."""
  if task.mixture is not None:
    return np.asarray(task.mixture.sample(key, n))
  from diffjax import data as data_lib
  return np.asarray(data_lib.reference_samples(base.config.data, key, n))


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------
def finetune(config, workdir, *, task=None, progress=True):
  """Fine-tunes the base model with `config.method`; returns the per-round evaluation rows."""
  validate_finetune_config(config)
  os.makedirs(workdir, exist_ok=True)
  base = Base(config)
  task = task if task is not None else tasks.get_task(config.task)
  ts = time_grid(config, base.process)
  loss_fn = objectives.get_objective(config.method, base.denoiser, base.process, **config.method_options.to_dict())
  c = training.validate_training_config(config.training)
  optimizer = frozen_reference_optimizer(training.make_optimizer(config.optim))
  train_step = training.make_train_step(loss_fn, optimizer, ema_decay=c["ema_decay"], nonfinite=c["nonfinite"],
                                        n_steps=c["n_jitted_steps"],
                                        lr_schedule=training.make_lr_schedule(config.optim))
  # Copies: the train loop donates the state's buffers, and base.params stays the evaluation reference.
  params = with_frozen_reference(jax.tree.map(jnp.copy, base.params))
  state = training.TrainState.create(params, optimizer, jax.random.PRNGKey(config.seed + 11))
  eval_key = jax.random.PRNGKey(config.seed + 12)
  n_eval = config.eval.n_samples
  eval_cond = jnp.asarray(task.prompts(n_eval))
  eval_shape = (n_eval,) + base.example_shape

  data_samples = _data_samples(base, task, n_eval, jax.random.PRNGKey(config.seed + 14))
  # Always against the base model: DDO's rounds move their own reference, the divergence reported
  # is from where fine-tuning started.
  evaluator = evaluation.make_policy_evaluator(base.denoiser, base.params, eval_key, eval_cond, eval_shape,
                                               process=base.process, ts=ts, reward_fn=task.reward_fn,
                                               accuracy_fn=task.accuracy_fn, mixture=task.mixture,
                                               eta=config.sampling.eta, data_samples=data_samples)

  def evaluate(p):
    return evaluator(p[POLICY])

  rows = []
  m0, _ = evaluate(params)
  rows.append({"round": 0, "step": 0, **m0})
  steps_per_round = c["num_steps"]
  for r in range(config.rounds.num_rounds):
    round_dir = os.path.join(workdir, f"round_{r}")
    os.makedirs(round_dir, exist_ok=True)
    key = jax.random.fold_in(jax.random.PRNGKey(config.seed + 13), r)
    arrays = _load_or_make(os.path.join(round_dir, "data.npz"),
                           lambda: _round_arrays(config, base, task, state.params, ts, key, r, workdir))
    dataset = datasets_lib.ArrayDataset(arrays, min(config.data.batch_size, len(next(iter(arrays.values())))),
                                        seed=config.seed + r)
    round_config = ml_collections.ConfigDict(config.to_dict())
    round_config.training.num_steps = (r + 1) * steps_per_round
    selection = _BestSelection(evaluate) if config.method == "ddo" and config.ddo.selection_every > 0 else None
    if selection is not None:
      round_config.training.eval_every = config.ddo.selection_every
    result = training.train(config=round_config, workdir=round_dir, state=state, train_step=train_step,
                            dataset=dataset, eval_fn=selection, metadata={"method": config.method, "round": r})
    if result.interrupted:
      log.warning("interrupted in round %d; rerun the same command to resume", r)
      return rows
    state = result.state
    if selection is not None and selection.best is not None:
      # DDO self-play: the best checkpoint of the round is the next round's policy and reference.
      best = selection.best
      state = state.replace(params=with_frozen_reference(best[POLICY], jax.tree.map(jnp.copy, best[POLICY])))
    metrics, samples = evaluate(state.params)
    rows.append({"round": r + 1, "step": int(state.step), **metrics,
                 **({"selected_step": selection.best_step} if selection is not None else {})})
    np.savez_compressed(os.path.join(workdir, "samples.npz"), samples=samples)
    with open(os.path.join(workdir, "results.json"), "w") as f:
      json.dump(rows, f, indent=2)
  return rows


class _BestSelection:
  """eval_fn for the train loop: evaluates the policy and keeps the parameters closest to the data
  by sample MMD (DDO's "pick the best checkpoint of a round, not the last")."""

  def __init__(self, evaluate):
    self.evaluate, self.best, self.best_value, self.best_step = evaluate, None, -np.inf, None

  def __call__(self, state, step):
    metrics, _ = self.evaluate(state.params)
    value = -metrics["data_mmd"]
    if value > self.best_value:
      self.best_value, self.best_step = value, int(step)
      self.best = jax.tree.map(np.asarray, state.params)
    return {k: v for k, v in metrics.items() if np.isscalar(v)}
