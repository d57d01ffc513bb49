"""Distillation methods as trainable parameter groups, phases and a few-step sampler.

`build_method(config, teacher)` turns ``config.method`` and ``config.method_options`` into a
`Method`: the initial parameter groups, the `Phase`s of `diffjax.distill.step`, an optional
``prepare`` (the batch's generated samples, shared by the phases) and ``sample``. The losses are
`diffjax.losses.distillation`'s; this module only wires networks to them.

  dmd2            generator + critic {fake_score[, head]} (Yin et al. 2024): DM loss (+ GAN), critic =
                  fake-score DSM (+ discriminator); generator every ``generator_every`` steps; the
                  multi-step generator is trained with backward simulation.
  diff_instruct   generator + critic {fake_score} (Luo et al. 2023), 1:1, critic first.
  sim             generator + critic {fake_score} with SIM's pseudo-Huber surrogate (Luo et al. 2024).
  cd              consistency distillation (Song et al. 2023): student from the teacher, Heun teacher
                  step, target = stop-gradient online network (mu = 0, the official CD config).
  ict             improved consistency training (Song & Dhariwal 2024): student from scratch, no
                  teacher, pseudo-Huber, discrete log-normal sigmas, 1/(t - t2) weighting, doubling N.
  progressive     one stage of progressive distillation (Salimans & Ho 2022): the student with
                  ``num_steps`` DDIM steps matches two steps of the teacher (the previous stage).

Generators (dmd2, diff_instruct, sim) start from the teacher and are the teacher's denoiser called
at ``generator_sigma`` on ``generator_sigma * z`` (DMD2's EDM path, ``conditioning_sigma = 80``);
with ``num_steps = K > 1`` they are called at the first K levels of a Karras grid of K + 1 levels
(`generator_times`) with fresh-noise re-noising in between (`samplers.renoise_multistep`).
"""
import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from diffjax import samplers, timesteps
from diffjax.distill.step import Phase, every, except_every
from diffjax.losses import distillation as dl
from diffjax.training import make_optimizer

METHODS = ("dmd2", "diff_instruct", "sim", "cd", "ict", "progressive")
UPDATE_RULES = ("dmd2", "alternate")

# Defaults of config.method_options per method; a key not listed here is an error.
GENERATOR_DEFAULTS = dict(generator_sigma=80.0, num_steps=1, backward_simulation=True)
DEFAULT_OPTIONS = {
    "dmd2": dict(GENERATOR_DEFAULTS, generator_every=5, update_rule="dmd2", min_index=dl.DMD2_MIN_INDEX,
                 max_index=dl.DMD2_MAX_INDEX, gen_cls_loss_weight=0.0, cls_loss_weight=0.0, diffusion_gan=True,
                 diffusion_gan_max_index=dl.DMD2_NUM_SIGMAS, head_width=128),
    "diff_instruct": dict(GENERATOR_DEFAULTS, generator_every=1, p_mean=-1.2, p_std=1.2),
    "sim": dict(GENERATOR_DEFAULTS, generator_every=1, distance="pseudo_huber", c=1.0, sampling="stop_gradient",
                weighting="uniform", p_mean=-1.2, p_std=1.2),
    "cd": dict(num_scales=18, solver="heun", distance="l2", weighting="uniform", sigma_min=0.002, sigma_max=80.0,
               rho=7.0),
    "ict": dict(s0=10, s1=1280, distance="pseudo_huber", c=None, weighting="ict", p_mean=-1.1, p_std=2.0,
                sigma_min=0.002, sigma_max=80.0, rho=7.0, init_seed=1),
    "progressive": dict(start_steps=64, end_steps=1, num_steps=32, weighting="snr_trunc", sigma_min=0.002,
                        sigma_max=80.0, rho=7.0),
}


@dataclasses.dataclass
class Method:
  """What the runner trains and evaluates.

  Attributes:
    name: the method.
    params: dict group -> initial parameters.
    phases: the `Phase`s (one per trained group).
    student: the group that is evaluated (its EMA).
    sample: ``sample(student_params, key, n, num_steps) -> (n, *shape)``.
    step_counts: the NFEs ``sample`` supports (None: any).
    prepare: optional ``prepare(params, frozen, batch, key) -> dict`` (`make_distill_step`).
  """
  name: str
  params: dict
  phases: tuple
  student: str
  sample: Callable
  step_counts: Any = None
  prepare: Callable | None = None


def method_options(config):
  """``config.method_options`` over the method's defaults; unknown keys raise, naming the valid ones."""
  if config.method not in METHODS:
    raise ValueError(f"method={config.method!r} is not valid; valid choices: {list(METHODS)}")
  defaults = DEFAULT_OPTIONS[config.method]
  given = config.method_options.to_dict() if isinstance(config.method_options, ml_collections.ConfigDict) else dict(
      config.method_options)
  unknown = sorted(set(given) - set(defaults))
  if unknown:
    raise ValueError(f"method_options {unknown} are not options of method {config.method!r}; valid: "
                     f"{sorted(defaults)}")
  o = {**defaults, **given}
  if "update_rule" in o and o["update_rule"] not in UPDATE_RULES:
    raise ValueError(f"method_options.update_rule={o['update_rule']!r} is not valid; valid choices: "
                     f"{list(UPDATE_RULES)}")
  for name in ("num_steps", "generator_every", "num_scales"):
    if name in o and (isinstance(o[name], bool) or not isinstance(o[name], int) or o[name] < 1):
      raise ValueError(f"method_options.{name} must be a positive integer, got {o[name]!r}")
  return o


def generator_times(num_steps, sigma_max=80.0, sigma_min=0.002, rho=7.0):
  """The K call levels of a K-step generator: the first K of a Karras grid of K + 1 levels
  (``[80]``; ``[80, 2.52]``; ``[80, 17.5, 2.52, 0.170]`` for K = 1, 2, 4 with EDM's defaults)."""
  return timesteps.karras(num_steps + 1, sigma_min, sigma_max, rho, append_zero=False)[:num_steps]


def karras_time_schedule(sigma_min=0.002, sigma_max=80.0, rho=7.0):
  """u in [0, 1] -> sigma on EDM's rho-grid (u = 0: sigma_min, u = 1: sigma_max), for progressive distillation."""
  lo, hi = sigma_min**(1.0 / rho), sigma_max**(1.0 / rho)
  return lambda u: (lo + jnp.clip(u, 0.0, 1.0) * (hi - lo))**rho


def balanced_labels(teacher, n):
  """Labels 0, 1, ..., K - 1, 0, 1, ... of n samples of a class-conditional teacher, else None."""
  return None if teacher.num_classes is None else jnp.arange(n) % teacher.num_classes


def data_labels(teacher, batch):
  """The data batch's labels for a class-conditional teacher, else None."""
  if teacher.num_classes is None:
    return None
  if "label" not in batch:
    raise ValueError("the teacher is class-conditional (model.options.num_classes) but the data batch has no 'label'")
  return batch["label"]


def _critic_optimizer(config):
  return make_optimizer(config.critic_optim if "critic_optim" in config else config.optim)


# ---------------------------------------------------------------------------------------------
# generator methods: dmd2, diff_instruct, sim
# ---------------------------------------------------------------------------------------------
class _Generator:
  """G(params, z, stage) with backward simulation, and its sampler."""

  def __init__(self, teacher, o):
    self.teacher, self.o = teacher, o
    self.ts = generator_times(o["num_steps"], o["generator_sigma"])

  def call(self, params, x_t, t, cond=None):
    return self.teacher.denoiser(params, x_t, t, cond)

  def sample(self, params, key, n, num_steps=None):
    if num_steps not in (None, self.o["num_steps"]):
      raise ValueError(f"this generator was trained for {self.o['num_steps']} step(s); got num_steps={num_steps}")
    k_z, k_chain = jax.random.split(key)
    z = jax.random.normal(k_z, (n,) + self.teacher.example_shape)
    cond = balanced_labels(self.teacher, n)
    return samplers.renoise_multistep(lambda x, t: self.call(params, x, t, cond), self.ts[0] * z, self.ts,
                                      process=self.teacher.process, key=k_chain)

  def draw(self, batch, key):
    """z, the class labels of a conditional teacher (uniform, as DMD2 draws them) and the training
    stage of this batch (one stage per batch, as DMD2 shares it across GPUs)."""
    k_z, k_stage, k_chain, k_label = jax.random.split(key, 4)
    z = jax.random.normal(k_z, batch["x"].shape, batch["x"].dtype)
    stage = jax.random.randint(k_stage, (), 0, self.o["num_steps"])
    out = {"z": z, "stage_key": k_chain, "stage": stage}
    if self.teacher.num_classes is not None:
      out["gen_label"] = jax.random.randint(k_label, (z.shape[0],), 0, self.teacher.num_classes)
    return out

  def input_at_stage(self, params, z, stage, key, cond=None):
    """The generator's input at its stage: sigma_0 z, or (backward simulation, no gradient) the
    current generator's own chain run from sigma_0 z through `stage` re-noisings; without backward
    simulation the later stages see no generated input and stage 0 is used."""
    ts = self.ts.astype(z.dtype)
    x = ts[0] * z
    if self.o["num_steps"] == 1 or not self.o["backward_simulation"]:
      return x, ts[0]

    def body(x, inputs):
      i, t, t_next = inputs
      x0 = jax.lax.stop_gradient(self.call(params, x, jnp.full((x.shape[0],), t), cond))
      renoised = x0 + t_next * jax.random.normal(jax.random.fold_in(key, i), x.shape, x.dtype)
      return jnp.where(i < stage, renoised, x), None

    n = self.o["num_steps"] - 1
    x, _ = jax.lax.scan(body, x, (jnp.arange(n), ts[:-1], ts[1:]))
    return jax.lax.stop_gradient(x), ts[stage]

  def generate(self, params, batch):
    cond = batch.get("gen_label")
    x_in, t = self.input_at_stage(params, batch["z"], batch["stage"], batch["stage_key"], cond)
    return self.call(params, x_in, jnp.full((x_in.shape[0],), t), cond)


def _generator_method(config, teacher, o, generator_loss, critic_loss, critic_params, *, critic_first):
  gen = _Generator(teacher, o)

  def prepare(params, frozen, batch, key):
    draws = gen.draw(batch, key)
    return dict(draws, x_gen=gen.generate(params["generator"], {**batch, **draws}))

  def generator_phase_loss(gen_params, params, frozen, batch, key, step):
    x = gen.generate(gen_params, batch)
    critic = jax.lax.stop_gradient(params["critic"])
    return generator_loss(x, frozen, critic, batch, key)

  def critic_phase_loss(critic_params, params, frozen, batch, key, step):
    return critic_loss(critic_params, frozen, batch, key)

  ratio = o["generator_every"]
  generator_rule = every(ratio)
  critic_rule = except_every(ratio) if o.get("update_rule") == "alternate" else every(1)
  g = Phase("generator", generator_phase_loss, make_optimizer(config.optim), generator_rule)
  c = Phase("critic", critic_phase_loss, _critic_optimizer(config), critic_rule)
  phases = (c, g) if critic_first else (g, c)
  params = {"generator": teacher.copy_params(), "critic": critic_params}
  return Method(config.method, params, phases, "generator", gen.sample, (o["num_steps"],), prepare)


class DiscriminatorHead(nnx.Module):
  """DMD2's classification branch on the fake score's features, for vector features:
  Linear -> SiLU -> Linear(1) (the EDM path's conv head, `edm_guidance.py`, for feature maps)."""

  def __init__(self, in_features, width, *, rngs):
    self.fc1 = nnx.Linear(in_features, width, rngs=rngs)
    self.fc2 = nnx.Linear(width, 1, rngs=rngs)

  def __call__(self, h):
    return self.fc2(nnx.silu(self.fc1(h)))[..., 0]


def _dmd2(config, teacher, o):
  use_gan = o["gen_cls_loss_weight"] > 0 or o["cls_loss_weight"] > 0
  sigmas = dl.karras_index_sigmas(dl.DMD2_NUM_SIGMAS, ascending=True)
  critic_params = {"fake_score": teacher.copy_params()}
  if use_gan:
    head = DiscriminatorHead(teacher.feature_dim(), o["head_width"], rngs=nnx.Rngs(config.seed + 7))
    head_graph, head_params = nnx.split(head, nnx.Param)
    critic_params["head"] = head_params
    head_apply = lambda p, h: nnx.merge(head_graph, p)(h)

  def gan_logits(critic, x, key, cond):
    """Logits of the head on the fake score's features of x noised at a diffusion-GAN level."""
    if o["diffusion_gan"]:
      index = jax.random.randint(key, (x.shape[0],), 0, o["diffusion_gan_max_index"])
    else:
      index = jnp.zeros((x.shape[0],), jnp.int32)
    sigma = sigmas.astype(x.dtype)[index]
    noise = jax.random.normal(jax.random.fold_in(key, 1), x.shape, x.dtype)
    x_t = x + sigma.reshape((-1,) + (1,) * (x.ndim - 1)) * noise
    return head_apply(critic["head"], teacher.features(critic["fake_score"], x_t, sigma, cond))

  def generator_loss(x, frozen, critic, batch, key):
    k_dm, k_gan = jax.random.split(key)
    cond = batch.get("gen_label")
    real = lambda x_t, s: teacher.denoiser(frozen, x_t, s, cond)
    fake = lambda x_t, s: teacher.denoiser(critic["fake_score"], x_t, s, cond)
    loss, aux = dl.dmd_loss(x, real, fake, k_dm, min_index=o["min_index"], max_index=o["max_index"])
    out = {"dm_loss": loss, "dm_grad_norm": aux["grad_norm"]}
    if use_gan and o["gen_cls_loss_weight"] > 0:
      gan, _ = dl.gan_generator_loss(gan_logits(critic, x, k_gan, cond))
      loss = loss + o["gen_cls_loss_weight"] * gan
      out["gan_loss"] = gan
    return loss, out

  def critic_loss(critic, frozen, batch, key):
    k_fake, k_real, k_gen = jax.random.split(key, 3)
    cond = batch.get("gen_label")
    loss, _ = dl.fake_score_loss(batch["x_gen"], lambda x_t, s: teacher.denoiser(critic["fake_score"], x_t, s, cond),
                                 k_fake, sigma_data=teacher.sigma_data)
    out = {"fake_score_loss": loss}
    if use_gan and o["cls_loss_weight"] > 0:
      d_loss, aux = dl.gan_discriminator_loss(gan_logits(critic, batch["x_gen"], k_gen, cond),
                                              gan_logits(critic, batch["x"], k_real, data_labels(teacher, batch)))
      loss = loss + o["cls_loss_weight"] * d_loss
      out.update(discriminator_loss=d_loss, **aux)
    return loss, out

  return _generator_method(config, teacher, o, generator_loss, critic_loss, critic_params, critic_first=False)


def _diff_instruct_critic(teacher, o):
  def critic_loss(critic, frozen, batch, key):
    cond = batch.get("gen_label")
    loss, _ = dl.diff_instruct_fake_score_loss(
        batch["x_gen"], lambda x_t, s: teacher.denoiser(critic["fake_score"], x_t, s, cond), key, p_mean=o["p_mean"],
        p_std=o["p_std"], sigma_data=teacher.sigma_data, reduce="mean")
    return loss, {"fake_score_loss": loss}
  return critic_loss


def _diff_instruct(config, teacher, o):
  def generator_loss(x, frozen, critic, batch, key):
    cond = batch.get("gen_label")
    loss, _ = dl.diff_instruct_generator_loss(
        x, lambda x_t, s: teacher.denoiser(frozen, x_t, s, cond),
        lambda x_t, s: teacher.denoiser(critic["fake_score"], x_t, s, cond), key, p_mean=o["p_mean"], p_std=o["p_std"])
    return loss, {}

  return _generator_method(config, teacher, o, generator_loss, _diff_instruct_critic(teacher, o),
                           {"fake_score": teacher.copy_params()}, critic_first=True)


def _sim(config, teacher, o):
  def generator_loss(x, frozen, critic, batch, key):
    cond = batch.get("gen_label")
    loss, _ = dl.sim_generator_loss(
        x, lambda x_t, s: teacher.denoiser(frozen, x_t, s, cond),
        lambda x_t, s: teacher.denoiser(critic["fake_score"], x_t, s, cond), key, distance=o["distance"], c=o["c"],
        sampling=o["sampling"], weighting=o["weighting"], p_mean=o["p_mean"], p_std=o["p_std"])
    return loss, {}

  return _generator_method(config, teacher, o, generator_loss, _diff_instruct_critic(teacher, o),
                           {"fake_score": teacher.copy_params()}, critic_first=True)


# ---------------------------------------------------------------------------------------------
# consistency models: cd, ict
# ---------------------------------------------------------------------------------------------
def _consistency_sampler(teacher, o):
  def sample(params, key, n, num_steps=1):
    ts = generator_times(num_steps, o["sigma_max"], o["sigma_min"], o["rho"])
    k_z, k_chain = jax.random.split(key)
    x = ts[0] * jax.random.normal(k_z, (n,) + teacher.example_shape)
    f = lambda x, s: dl.consistency_fn(teacher.network(params, balanced_labels(teacher, n)), x, s,
                                       sigma_data=teacher.sigma_data, sigma_min=o["sigma_min"])
    return samplers.consistency_multistep(f, x, ts, key=k_chain, sigma_min=o["sigma_min"])
  return sample


def _cd(config, teacher, o):
  def loss(student, params, frozen, batch, key, step):
    cond = data_labels(teacher, batch)
    f = lambda x, s: dl.consistency_fn(teacher.network(student, cond), x, s, sigma_data=teacher.sigma_data,
                                       sigma_min=o["sigma_min"])
    target = lambda x, s: dl.consistency_fn(teacher.network(jax.lax.stop_gradient(student), cond), x, s,
                                            sigma_data=teacher.sigma_data, sigma_min=o["sigma_min"])
    value, aux = dl.consistency_loss(
        f, target, batch["x"], key, num_scales=o["num_scales"], mode="cd",
        teacher_denoiser=lambda x, s: teacher.denoiser(frozen, x, s, cond), solver=o["solver"], distance=o["distance"],
        weighting=o["weighting"], sigma_min=o["sigma_min"], sigma_max=o["sigma_max"], rho=o["rho"])
    return value, {"distance": aux["distance"]}

  phase = Phase("student", loss, make_optimizer(config.optim))
  return Method("cd", {"student": teacher.copy_params()}, (phase,), "student", _consistency_sampler(teacher, o))


def _ict(config, teacher, o):
  total = int(config.training.num_steps)
  stages = dl.ict_stages(total, o["s0"], o["s1"])

  def loss(student, params, frozen, batch, key, step):
    cond = data_labels(teacher, batch)
    f = lambda x, s: dl.consistency_fn(teacher.network(student, cond), x, s, sigma_data=teacher.sigma_data,
                                       sigma_min=o["sigma_min"])
    target = lambda x, s: dl.consistency_fn(teacher.network(jax.lax.stop_gradient(student), cond), x, s,
                                            sigma_data=teacher.sigma_data, sigma_min=o["sigma_min"])

    def with_scales(n):
      def branch(_):
        value, aux = dl.consistency_loss(
            f, target, batch["x"], key, num_scales=n, mode="ct", solver="euler", distance=o["distance"], c=o["c"],
            weighting=o["weighting"], index_sampling="lognormal", sigma_min=o["sigma_min"],
            sigma_max=o["sigma_max"], rho=o["rho"], p_mean=o["p_mean"], p_std=o["p_std"])
        return value, aux["distance"]
      return branch

    n_now = dl.ict_num_scales(step, total, o["s0"], o["s1"])
    branch = jnp.searchsorted(jnp.asarray(stages), n_now)
    value, distance = jax.lax.switch(branch, [with_scales(n) for n in stages], None)
    return value, {"distance": distance, "num_scales": n_now.astype(jnp.float32)}

  phase = Phase("student", loss, make_optimizer(config.optim))
  return Method("ict", {"student": teacher.new_params(o["init_seed"])}, (phase,), "student",
                _consistency_sampler(teacher, o))


# ---------------------------------------------------------------------------------------------
# progressive distillation
# ---------------------------------------------------------------------------------------------
def progressive_sampler(teacher, o):
  """DDIM (= Euler for EDM) with ``num_steps`` steps on the rho-grid u = 1, ..., 0 of training."""
  schedule = karras_time_schedule(o["sigma_min"], o["sigma_max"], o["rho"])

  def sample(params, key, n, num_steps=None):
    num_steps = o["num_steps"] if num_steps is None else num_steps
    ts = schedule(jnp.linspace(1.0, 0.0, num_steps + 1))
    x = ts[0] * jax.random.normal(key, (n,) + teacher.example_shape)
    cond = balanced_labels(teacher, n)
    return samplers.ddim(lambda x, t: teacher.denoiser(params, x, t, cond), x, ts, process=teacher.process)
  return sample


def _progressive(config, teacher, o, student_params=None):
  schedule = karras_time_schedule(o["sigma_min"], o["sigma_max"], o["rho"])

  def loss(student, params, frozen, batch, key, step):
    cond = data_labels(teacher, batch)
    value, aux = dl.progressive_distillation_loss(
        lambda z, t: teacher.denoiser(student, z, t, cond), lambda z, t: teacher.denoiser(frozen, z, t, cond),
        batch["x"], key,
        process=teacher.process, num_steps=o["num_steps"], weighting=o["weighting"], time_schedule=schedule)
    return value, {"x_mse": jnp.mean(aux["x_mse"])}

  init = teacher.copy_params() if student_params is None else jax.tree.map(jnp.copy, student_params)
  phase = Phase("student", loss, make_optimizer(config.optim))
  return Method("progressive", {"student": init}, (phase,), "student", progressive_sampler(teacher, o),
                (o["num_steps"],))


_BUILDERS = {"dmd2": _dmd2, "diff_instruct": _diff_instruct, "sim": _sim, "cd": _cd, "ict": _ict}


def build_method(config, teacher, **kwargs):
  """The `Method` of ``config.method`` with ``config.method_options`` (see `DEFAULT_OPTIONS`)."""
  o = method_options(config)
  if config.method == "progressive":
    return _progressive(config, teacher, o, **kwargs)
  return _BUILDERS[config.method](config, teacher, o)
