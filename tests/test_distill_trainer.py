"""The multi-network distillation step and runner (`diffjax.distill`).

Exact checks of the step on scalar "networks" with SGD, written out by hand: update rules (DMD2's
generator every n steps with the critic every step, FastGen's alternation), phase order and the
shared prepared samples, EMA only on student steps, non-finite steps, the n-step scan. Then the
real methods on a tiny EDM teacher: DMD2's first generator gradient is exactly zero (fake score =
teacher), backward simulation equals the hand-written chain, a run resumes bitwise from its
checkpoint (generator, fake score, head, optimizer states, EMA), and config errors name the field.
"""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from diffjax import distill, training
from diffjax.configuration import d
from diffjax.distill.step import DistillState, Phase, every, except_every, make_distill_step

LR = 0.1


def _toy_phases(generator_rule, critic_rule, *, nan_at=None):
  """generator loss 0.5 (g - c)^2, critic loss 0.5 (c - x)^2 with x = 2 g prepared before the step."""
  def gen_loss(gp, params, frozen, batch, key, step):
    return 0.5 * (gp["g"] - params["critic"]["c"])**2, {"g": gp["g"]}

  def critic_loss(cp, params, frozen, batch, key, step):
    loss = 0.5 * (cp["c"] - batch["x_gen"])**2
    if nan_at is not None:
      loss = jnp.where(step == nan_at, jnp.nan, loss)
    return loss, {}

  sgd = optax.sgd(LR)
  return (Phase("generator", gen_loss, sgd, generator_rule), Phase("critic", critic_loss, sgd, critic_rule))


def _prepare(params, frozen, batch, key):
  return {"x_gen": 2.0 * params["generator"]["g"]}


def _init(phases):
  params = {"generator": {"g": jnp.array(1.0)}, "critic": {"c": jnp.array(-0.5)}}
  return DistillState.create(params, phases, frozen={}, rng=jax.random.PRNGKey(0), student="generator")


def _hand(num_steps, gen_runs, critic_runs, ema_decay=0.0):
  g, c, ema, out = 1.0, -0.5, 1.0, []
  for s in range(num_steps):
    x = 2.0 * g  # prepared from the parameters before the step
    if gen_runs(s):
      g = g - LR * (g - c)  # sees the critic before its update of this step
      ema = ema_decay * ema + (1 - ema_decay) * g
    if critic_runs(s):
      c = c - LR * (c - x)
    out.append((g, c, ema))
  return out


@pytest.mark.parametrize("rule", ["dmd2", "alternate"])
def test_update_rules_phase_order_and_prepared_samples(x64, rule):
  critic_rule = every(1) if rule == "dmd2" else except_every(3)
  phases = _toy_phases(every(3), critic_rule)
  step = jax.jit(make_distill_step(phases, student="generator", ema_decay=0.5, prepare=_prepare))
  state = _init(phases)
  critic_runs = (lambda s: True) if rule == "dmd2" else (lambda s: s % 3 != 0)
  expected = _hand(7, lambda s: s % 3 == 0, critic_runs, ema_decay=0.5)
  for s in range(7):
    state, m = step(state, {"x": jnp.zeros((2, 1))})
    g, c, ema = expected[s]
    np.testing.assert_allclose(state.params["generator"]["g"], g, rtol=1e-14)
    np.testing.assert_allclose(state.params["critic"]["c"], c, rtol=1e-14)
    np.testing.assert_allclose(state.ema_params["g"], ema, rtol=1e-14)  # moves only on generator steps
    assert bool(m["generator/active"]) == (s % 3 == 0)
    assert bool(m["critic/active"]) == critic_runs(s)
    if not bool(m["generator/active"]):
      assert float(m["generator/loss"]) == 0.0 and float(m["generator/grad_norm"]) == 0.0
  assert int(state.step) == 7


@pytest.mark.parametrize("mode", ["skip", "stop"])
def test_nonfinite_step_changes_nothing(x64, mode):
  phases = _toy_phases(every(1), every(1), nan_at=2)
  step = jax.jit(make_distill_step(phases, student="generator", ema_decay=0.0, nonfinite=mode, prepare=_prepare))
  state = _init(phases)
  for _ in range(2):
    state, _ = step(state, {"x": jnp.zeros((2, 1))})
  before = jax.tree.map(np.asarray, (state.params, state.opt_state, state.ema_params))
  state, m = step(state, {"x": jnp.zeros((2, 1))})
  assert not bool(m["finite"])
  after = jax.tree.map(np.asarray, (state.params, state.opt_state, state.ema_params))
  jax.tree.map(np.testing.assert_array_equal, before, after)  # the finite generator update is dropped too
  assert int(state.step) == (3 if mode == "skip" else 2)


def test_scan_of_steps_equals_single_steps(x64):
  phases = _toy_phases(every(2), every(1))
  single = jax.jit(make_distill_step(phases, student="generator", ema_decay=0.9, prepare=_prepare))
  scanned = jax.jit(make_distill_step(phases, student="generator", ema_decay=0.9, prepare=_prepare, n_steps=4))
  s1 = s4 = _init(phases)
  for _ in range(4):
    s1, _ = single(s1, {"x": jnp.zeros((2, 1))})
  s4, m = scanned(s4, {"x": jnp.zeros((4, 2, 1))})
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-15), s1.params, s4.params)
  assert m["generator/active"].tolist() == [True, False, True, False]


def test_phase_and_rule_arguments_are_checked():
  phases = _toy_phases(every(1), every(1))
  with pytest.raises(ValueError, match="except_every"):
    except_every(1)
  with pytest.raises(ValueError, match="every"):
    every(0)
  with pytest.raises(ValueError, match="student='fake'"):
    make_distill_step(phases, student="fake", ema_decay=0.0)
  with pytest.raises(ValueError, match=r"phases train group\(s\) \['critic'\]"):
    DistillState.create({"generator": {}}, phases, {}, jax.random.PRNGKey(0), student="generator")
  with pytest.raises(ValueError, match="training.nonfinite"):
    make_distill_step(phases, student="generator", ema_decay=0.0, nonfinite="ignore")


# ---------------------------------------------------------------------------------------------
# the methods on a tiny EDM teacher
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("teacher"))
  return distill.Teacher(d(config_path="configs/distillation/teacher.py", config_options="grid,tiny",
                           workdir=workdir))


def _config(method, workdir_teacher, **options):
  config = distill.default_distill_config()
  config.teacher = d(config_path="configs/distillation/teacher.py", config_options="grid,tiny",
                     workdir=workdir_teacher)
  config.method = method
  config.method_options = d(**options)
  config.data.batch_size = 64
  config.training.num_steps = 4
  config.training.log_every = 1
  config.training.ckpt_every = 2
  config.training.async_checkpoints = False
  config.eval.n_samples = 256
  return config


def test_dmd2_first_generator_gradient_is_exactly_zero(teacher):
  """The fake score starts as a copy of the teacher, so DMD2's field, and the generator's first
  gradient (the generator goes first), is exactly 0; the critic's is not."""
  config = _config("dmd2", teacher.workdir, generator_every=2)
  method = distill.build_method(config, teacher)
  step = jax.jit(make_distill_step(method.phases, student="generator", ema_decay=0.0, prepare=method.prepare))
  state = DistillState.create(method.params, method.phases, teacher.params, jax.random.PRNGKey(3), student="generator")
  batch = {"x": jnp.asarray(next(teacher.run.dataset)["x"][:64])}
  state, m = step(state, batch)
  assert float(m["generator/grad_norm"]) == 0.0 and bool(m["generator/active"])
  assert float(m["critic/grad_norm"]) > 0.0
  state, m = step(state, batch)  # step 1: critic only; then the generator's field is no longer 0
  assert not bool(m["generator/active"])
  state, m = step(state, batch)
  assert float(m["generator/grad_norm"]) > 0.0


def test_backward_simulation_is_the_generators_own_chain(teacher):
  config = _config("dmd2", teacher.workdir, num_steps=4)
  o = distill.methods.method_options(config)
  gen = distill.methods._Generator(teacher, o)
  hi, lo = 80.0**(1 / 7), 0.002**(1 / 7)
  np.testing.assert_allclose(gen.ts, [(hi + i / 4 * (lo - hi))**7 for i in range(4)], rtol=1e-5)  # Karras, 5 levels
  params = teacher.params
  z = jax.random.normal(jax.random.PRNGKey(0), (16, 2))
  key = jax.random.PRNGKey(1)
  for stage in range(4):
    x_in, t = gen.input_at_stage(params, z, jnp.asarray(stage), key)
    x = 80.0 * z
    for i in range(stage):  # hand-written chain: x0 = G(x, t_i), then fresh noise at t_{i+1}
      x0 = teacher.denoiser(params, x, jnp.full((16,), gen.ts[i]))
      x = x0 + gen.ts[i + 1] * jax.random.normal(jax.random.fold_in(key, i), x.shape)
    np.testing.assert_allclose(x_in, x, rtol=1e-5, atol=1e-5)
    assert float(t) == pytest.approx(float(gen.ts[stage]))


def test_gan_run_checkpoints_every_network_and_resumes_exactly(teacher, tmp_path):
  config = _config("dmd2", teacher.workdir, generator_every=2, gen_cls_loss_weight=3e-3, cls_loss_weight=1e-2)
  config.training.n_jitted_steps = 2
  straight = distill.run.train_method(config, str(tmp_path / "straight"), teacher, distill.build_method(config, teacher))
  half = _config("dmd2", teacher.workdir, generator_every=2, gen_cls_loss_weight=3e-3, cls_loss_weight=1e-2)
  half.training.num_steps = 2
  half.training.n_jitted_steps = 2
  distill.run.train_method(half, str(tmp_path / "resumed"), teacher, distill.build_method(half, teacher))
  resumed = distill.run.train_method(config, str(tmp_path / "resumed"), teacher, distill.build_method(config, teacher))
  assert resumed.resumed_from == 2 and resumed.step == straight.step == 4
  assert set(straight.state.params) == {"generator", "critic"}
  assert set(straight.state.params["critic"]) == {"fake_score", "head"}
  leaves = lambda s: jax.tree.leaves((s.params, s.opt_state, s.ema_params, s.frozen, s.step))
  for a, b in zip(leaves(straight.state), leaves(resumed.state)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # the head trained (the discriminator loss reaches the critic) and the teacher did not move
  rows = training.read_jsonl(str(tmp_path / "straight" / "metrics.jsonl"))
  assert all(np.isfinite(r["critic/discriminator_loss"]) for r in rows)
  # two steps per compiled call: the generator runs at even steps; the odd rows report its last run
  assert [r["generator/active"] for r in rows] == [True, False, True, False]
  assert [r.get("generator/steps_since_active") for r in rows] == [None, 1, None, 1]
  assert rows[1]["generator/loss"] == rows[0]["generator/loss"] and rows[3]["generator/loss"] > 0
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, straight.state.frozen),
               jax.tree.map(np.asarray, teacher.params))
  # a changed config (here the critic's learning rate) is not silently continued in the same workdir
  changed = _config("dmd2", teacher.workdir, generator_every=2, gen_cls_loss_weight=3e-3, cls_loss_weight=1e-2)
  changed.training.n_jitted_steps = 2
  changed.critic_optim.lr = 1e-5
  with pytest.raises(ValueError, match="critic_optim.lr"):
    distill.run.train_method(changed, str(tmp_path / "resumed"), teacher, distill.build_method(changed, teacher))


@pytest.mark.parametrize("method", ["diff_instruct", "sim", "cd", "ict"])
def test_each_method_trains_and_samples(teacher, tmp_path, method):
  config = _config(method, teacher.workdir, **(dict(s0=10, s1=20) if method == "ict" else {}))  # 2 stages of N
  rows = distill.distill(config, str(tmp_path), teacher=teacher)
  counts = [1] if method in ("diff_instruct", "sim") else [1, 2, 4]
  assert [r["nfe"] for r in rows] == counts
  assert all(np.isfinite(r["sliced_wasserstein"]) and r["finite_fraction"] == 1.0 for r in rows)
  assert rows[0]["num_modes"] == 25
  assert os.path.exists(tmp_path / "results.json") and os.path.exists(tmp_path / f"samples_{counts[-1]}.npz")
  if method == "ict":  # the doubling curriculum N(k) = min(s0 2^floor(k / K'), s1) + 1 with K' = 2
    logged = training.read_jsonl(str(tmp_path / "metrics.jsonl"))
    assert [r["student/num_scales"] for r in logged] == [11, 11, 21, 21]


def test_progressive_stages_halve_and_chain(teacher, tmp_path):
  config = _config("progressive", teacher.workdir, start_steps=8, end_steps=2)
  rows = distill.distill(config, str(tmp_path), teacher=teacher)
  assert distill.run.progressive_stages(8, 2) == [4, 2]
  assert [r["nfe"] for r in rows] == [4, 2]
  assert sorted(os.listdir(tmp_path / "stage_0004" / "checkpoints")) == ["2", "4"]


def test_config_errors_name_the_field(teacher):
  bad = [(dict(method="dmd3"), "method='dmd3' is not valid"),
         (dict(method_options=d(ratio=5)), r"method_options \['ratio'\] are not options of method 'dmd2'"),
         (dict(method_options=d(update_rule="fastgen")), "update_rule='fastgen' is not valid"),
         (dict(method_options=d(num_steps=0)), "method_options.num_steps must be a positive integer"),
         (dict(method="progressive", method_options=d(start_steps=12, end_steps=1)), "power-of-two"),
         (dict(eval=d(n_samples=10, step_counts=[]), ), "eval.step_counts")]
  for fields, match in bad:
    config = _config("dmd2", teacher.workdir)
    for k, v in fields.items():
      config[k] = v
    with pytest.raises(ValueError, match=match):
      distill.validate_distill_config(config)
  config = _config("dmd2", teacher.workdir)
  config.critic_optim.lr = -1.0
  with pytest.raises(ValueError, match="critic_optim.lr"):
    distill.validate_distill_config(config)


def _launch(script_args, devices):
  env = dict(os.environ)
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={devices}").strip()
  script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_distill_script.py")
  return subprocess.Popen([sys.executable, script, *map(str, script_args)], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


def test_eight_devices_match_one_and_split_the_generated_batch(teacher, tmp_path):
  """DMD2 (2-step generator, GAN head) on 8 emulated devices logs the same losses as on 1 (<= 1e-5),
  the state lives on all 8, and the compiled step has no full-batch hidden activation: the z drawn
  inside the step is split like the data. Without the constraint it is not (the check can fail)."""
  runs = {"one": (1, []), "eight": (8, []), "eight_unconstrained": (8, ["--no_constraint"])}
  procs = {k: _launch(["--workdir", tmp_path / k, "--teacher_workdir", teacher.workdir, *extra], n)
           for k, (n, extra) in runs.items()}
  results = {}
  for k, p in procs.items():
    out, _ = p.communicate(timeout=600)
    assert p.returncode == 0, out[-3000:]
    with open(tmp_path / k / "result.json") as f:
      results[k] = json.load(f)
  assert results["one"]["device_count"] == 1 and results["eight"]["n_shards"] == 8
  assert not results["eight"]["full_batch_hidden"] and results["eight"]["per_device_hidden"]
  assert results["eight_unconstrained"]["full_batch_hidden"]
  logs = {k: training.read_jsonl(str(tmp_path / k / "metrics.jsonl")) for k in ("one", "eight")}
  assert [r["step"] for r in logs["one"]] == [r["step"] for r in logs["eight"]] == list(range(1, 7))
  for key in ("generator/loss", "critic/loss", "critic/discriminator_loss"):
    np.testing.assert_allclose([r[key] for r in logs["eight"]], [r[key] for r in logs["one"]], rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def conditional_teacher(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("teacher_cond"))
  return distill.Teacher(d(config_path="configs/distillation/teacher.py", config_options="digits,cond,tiny",
                           workdir=workdir))


@pytest.mark.parametrize("method,options", [("dmd2", dict(num_steps=2)), ("cd", {}), ("progressive",
                                                                                      dict(start_steps=4, end_steps=2))])
def test_class_conditional_teacher(conditional_teacher, tmp_path, method, options):
  """With a class-conditional teacher the generators draw uniform labels, the data-based methods use the
  batch's labels, and every network call gets them (a wrong or missing label would not even trace)."""
  teacher = conditional_teacher
  assert teacher.num_classes == 10
  config = _config(method, teacher.workdir, **options)
  config.teacher.config_options = "digits,cond,tiny"
  rows = distill.distill(config, str(tmp_path), teacher=teacher)
  assert rows and all(r["finite_fraction"] == 1.0 for r in rows)
  if method == "dmd2":
    m = distill.build_method(config, teacher)
    batch = {k: jnp.asarray(v[:64]) for k, v in next(teacher.run.dataset).items()}
    prepared = m.prepare(m.params, teacher.params, batch, jax.random.PRNGKey(0))
    assert prepared["gen_label"].shape == (64,) and int(prepared["gen_label"].max()) < 10
    # the fake score sees the generator's labels: other labels change its loss
    critic = m.phases[1]
    loss_a, _ = critic.loss_fn(m.params["critic"], m.params, teacher.params, {**batch, **prepared}, jax.random.PRNGKey(1), 0)
    flipped = dict(prepared, gen_label=(prepared["gen_label"] + 1) % 10)
    loss_b, _ = critic.loss_fn(m.params["critic"], m.params, teacher.params, {**batch, **flipped}, jax.random.PRNGKey(1), 0)
    assert float(loss_a) != float(loss_b)
