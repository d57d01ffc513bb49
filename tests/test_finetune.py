"""Preference fine-tuning: the frozen reference, the objectives' wiring (shared t and noise, the
log 2 identities through a real network), the generated data, and a config-driven run that resumes."""
import json
import math
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import diffjax as dj
from diffjax import parametrization as prm
from diffjax import training
from diffjax.finetune import generation, objectives, run
from diffjax.finetune.reference import (POLICY, REFERENCE, frozen_reference_optimizer, split_policy_reference,
                                        with_frozen_reference)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROCESS = dj.processes.VPDiscrete.from_ddpm("linear", 10, beta_start=1e-3, beta_end=0.3)


def _model(seed=0):
  model = dj.models.create("mlp_tiny", rngs=nnx.Rngs(seed), in_features=2)
  apply_fn, params = dj.models.split_apply(model)

  def denoiser(p, x, t, cond=None):
    t = jnp.broadcast_to(t, (x.shape[0],))
    return prm.to_x0(apply_fn(p, x, PROCESS.model_time(t)), x, t, PROCESS, "eps")

  return denoiser, params


def _perturb(params, scale, seed):
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
  return jax.tree.unflatten(tree, [p + scale * jax.random.normal(k, p.shape, p.dtype) for p, k in zip(leaves, keys)])


def _batches(key, b=16):
  x = jax.random.normal(key, (4, b, 2))
  return {
      "pairs": {"x_w": x[0], "x_l": x[1]},
      "lists": {"x": jnp.stack([x[0], x[1], x[2], x[3]], axis=1), "phi": jnp.tile(jnp.array([1.0, 2 / 3, 1 / 3, 0.0]), (b, 1))},
      "ddo": {"x_real": x[0], "x_fake": x[1]},
  }


def test_frozen_reference_is_bitwise_unchanged_and_gets_no_gradient():
  denoiser, params = _model()
  params = with_frozen_reference(_perturb(params, 0.1, 1), params)
  reference_before = jax.tree.map(np.array, params[REFERENCE])
  loss_fn = objectives.diffusion_dpo_objective(denoiser, PROCESS, beta=50.0)
  grads = jax.grad(lambda p: loss_fn(p, _batches(jax.random.PRNGKey(0))["pairs"], jax.random.PRNGKey(1))[0])(params)
  assert all(np.all(g == 0) for g in jax.tree.leaves(grads[REFERENCE]))
  assert any(np.any(g != 0) for g in jax.tree.leaves(grads[POLICY]))
  optimizer = frozen_reference_optimizer(training.make_optimizer(run.default_finetune_config().optim))
  step = jax.jit(training.make_train_step(loss_fn, optimizer, ema_decay=0.0))
  state = training.TrainState.create(params, optimizer, jax.random.PRNGKey(2))
  policy_before = jax.tree.map(np.array, params[POLICY])
  for i in range(5):
    state, metrics = step(state, _batches(jax.random.PRNGKey(10 + i))["pairs"])
    assert bool(metrics["finite"])
  for before, after in zip(jax.tree.leaves(reference_before), jax.tree.leaves(state.params[REFERENCE])):
    np.testing.assert_array_equal(before, np.asarray(after))
  assert any(not np.array_equal(a, np.asarray(b))
             for a, b in zip(jax.tree.leaves(policy_before), jax.tree.leaves(state.params[POLICY])))


def test_frozen_reference_params_must_be_the_pair():
  with pytest.raises(ValueError, match="policy"):
    split_policy_reference({"policy": 1})


@pytest.mark.parametrize("method,options,batch,expected", [
    ("diffusion_dpo", dict(beta=500.0), "pairs", math.log(2)),
    ("rank_dpo", dict(beta=500.0), "lists", None),
    ("ddo", dict(alpha=2.0, beta=0.3), "ddo", 3 * math.log(2)),
])
def test_objectives_at_policy_equal_reference(method, options, batch, expected):
  """log 2 per pair (RankDPO: log 2 times the summed DCG pair weights; DDO: (1 + alpha) log 2)."""
  denoiser, params = _model()
  params = with_frozen_reference(params)
  loss_fn = objectives.get_objective(method, denoiser, PROCESS, **options)
  loss, _ = loss_fn(params, _batches(jax.random.PRNGKey(0))[batch], jax.random.PRNGKey(3))
  if expected is None:
    gains = 2.0**np.array([1.0, 2 / 3, 1 / 3, 0.0]) - 1
    disc = 1 / np.log1p(np.arange(1, 5))
    weights = sum(abs(gains[i] - gains[j]) * abs(disc[i] - disc[j]) for i in range(4) for j in range(i + 1, 4))
    expected = math.log(2) * weights
  np.testing.assert_allclose(float(loss), expected, rtol=1e-6)


@pytest.mark.parametrize("method,batch", [("diffusion_dpo", "pairs"), ("rank_dpo", "lists")])
def test_objectives_share_time_and_noise_across_the_compared_images(method, batch, x64):
  """With identical images the policy's two errors are identical only if t and noise are shared:
  then the gradient vanishes whatever the policy (relative to the gradient on distinct images)."""
  denoiser, params = _model()
  params = jax.tree.map(lambda p: p.astype(jnp.float64), with_frozen_reference(_perturb(params, 0.3, 4), params))
  b = jax.tree.map(lambda a: a.astype(jnp.float64), _batches(jax.random.PRNGKey(0))[batch])
  loss_fn = objectives.get_objective(method, denoiser, PROCESS, beta=500.0)
  grad_norm = lambda batch: max(float(jnp.max(jnp.abs(g))) for g in
                                jax.tree.leaves(jax.grad(lambda p: loss_fn(p, batch, jax.random.PRNGKey(5))[0])(params)[POLICY]))
  distinct = grad_norm(b)
  if batch == "pairs":
    b = {"x_w": b["x_w"], "x_l": b["x_w"]}
  else:
    b = {"x": jnp.repeat(b["x"][:, :1], 4, axis=1), "phi": b["phi"]}
  assert distinct > 1e-3
  assert grad_norm(b) < 1e-9 * distinct


def test_trajectory_objectives_are_log2_at_policy_equal_reference():
  denoiser, params = _model()
  params = with_frozen_reference(params)
  cond = None
  data = generation.d3po_transitions(denoiser, params[POLICY], jax.random.PRNGKey(0), cond, (8, 2), process=PROCESS,
                                     ts=jnp.linspace(1.0, PROCESS.t_min, 6), reward_fn=lambda x, c: -jnp.sum(x**2, -1))
  assert data["x_t"].shape == (5 * 8, 2, 2) and set(np.unique(data["preference"])) <= {-1, 0, 1}
  # Consecutive states: row i's x_next is the state after x_t on the same trajectory.
  np.testing.assert_array_equal(data["x_next"][:-8], data["x_t"][8:])
  loss, _ = objectives.d3po_objective(denoiser, PROCESS, beta=1.0)(params, data, None)
  np.testing.assert_allclose(float(loss), math.log(2), rtol=1e-6)


def test_spo_resampler_pairs_are_ordered_by_the_step_reward():
  denoiser, params = _model()
  reward = lambda x, c: -jnp.sum((x - 1.0)**2, -1)
  ts = jnp.linspace(1.0, PROCESS.t_min, 6)
  out = generation.spo_transitions(denoiser, params, jax.random.PRNGKey(0), None, (32, 2), process=PROCESS, ts=ts,
                                   step_reward_fn=reward, num_candidates=4, threshold=0.1, divert_start_step=2)
  n = len(out["x_t"])
  assert 0 < n <= 3 * 32 and out["t"].shape == (n,) and 0 < out["keep_fraction"] <= 1
  assert np.all(out["t"] > out["t_next"]) and np.all(out["t"] <= float(ts[2]) + 1e-6)  # none before the divert step
  score = lambda x, t: np.asarray(reward(denoiser(params, jnp.asarray(x), jnp.asarray(t)), None))
  margin = np.tanh((score(out["x_w"], out["t_next"]) - score(out["x_l"], out["t_next"])) / 2)
  assert np.all(margin > 0.1 - 1e-5)


def test_disjoint_pairs_follow_the_win_counts():
  from diffjax.data.preference import PreferenceData
  rewards = np.array([[[1.0, 5.0], [0.0, 0.0], [2.0, 6.0], [0.0, 1.0]],   # (2 prompts, k=4, n=2)
                      [[1.0, 1.0], [0.0, 0.0], [1.0, 1.0], [5.0, 0.0]]])
  data = PreferenceData(samples=np.arange(8, dtype=np.float32).reshape(2, 4, 1), cond=np.array([3, 7], np.int32),
                        rewards=rewards, phi=np.zeros((2, 4)), generator_id=np.zeros((2, 4), np.int32), metadata={})
  pairs = run.disjoint_pairs(data)
  # prompt 0, pair (0, 2): image 2 wins both rewards; pair (1, 3): image 3 wins one reward, ties the other.
  # prompt 1, pair (0, 2): a tie, dropped; pair (1, 3): image 3 wins.
  np.testing.assert_array_equal(pairs["x_w"][:, 0], [2.0, 3.0, 7.0])
  np.testing.assert_array_equal(pairs["x_l"][:, 0], [0.0, 1.0, 5.0])
  np.testing.assert_array_equal(pairs["cond"], [3, 3, 7])


def _tiny_config(tmp_path, method, **options):
  sys.path.insert(0, os.path.join(ROOT, "configs", "preference"))
  try:
    from _common import toy_config
  finally:
    sys.path.pop(0)
  config = toy_config(method, "ring", tiny=True, **options)
  config.base.workdir = str(tmp_path / "base")
  return config


def test_config_errors_name_the_field(tmp_path):
  config = _tiny_config(tmp_path, "diffusion_dpo", beta=10.0)
  config.method = "dpo2"
  with pytest.raises(ValueError, match="method='dpo2' is not valid"):
    run.validate_finetune_config(config)
  config = _tiny_config(tmp_path, "d3po", beta=1.0)
  config.sampling.eta = 0.0
  with pytest.raises(ValueError, match="sampling.eta"):
    run.validate_finetune_config(config)
  with pytest.raises(ValueError, match="unknown option"):
    objectives.get_objective("d3po", None, PROCESS, beta=1.0, gamma=2.0)


def test_online_run_resumes_exactly(tmp_path):
  """Two D3PO rounds; deleting round 1's checkpoints and rerunning gives the same result."""
  config = _tiny_config(tmp_path, "d3po", beta=1.0)
  config.rounds.num_rounds = 2
  first = run.finetune(config, str(tmp_path / "ft"))
  assert [r["round"] for r in first] == [0, 1, 2] and first[0]["path_kl"] < 1e-6
  assert first[-1]["path_kl"] > first[0]["path_kl"] and os.path.exists(tmp_path / "ft" / "round_1" / "data.npz")
  import shutil
  shutil.rmtree(tmp_path / "ft" / "round_1" / "checkpoints")
  second = run.finetune(config, str(tmp_path / "ft"))
  assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)
  # A base model trained by another version of its config is not silently reused.
  config.base.config_options = ""  # the full ring base recipe, not the tiny one in base.workdir
  with pytest.raises(ValueError, match=r"different config \(fields \[.*training.num_steps"):
    run.finetune(config, str(tmp_path / "ft_other_base"))


def test_config_differences_names_the_dotted_fields():
  from diffjax.experiment import config_differences
  a = {"a": {"b": 1, "c": (1, 2)}, "d": 1}
  assert config_differences(a, {"a": {"b": 2, "c": [1, 2]}, "e": 1}) == ["a.b", "d", "e"]
  assert config_differences(a, a) == []


def _load_config(relpath, options=""):
  import importlib.util
  spec = importlib.util.spec_from_file_location("cfg_" + relpath.replace("/", "_")[:-3], os.path.join(ROOT, "configs", relpath))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(options)


METHODS = ("diffusion_dpo", "rank_dpo", "d3po", "spo", "ddo")


@pytest.mark.parametrize("relpath", [f"{m}/{t}.py" for m in METHODS for t in ("toy", "paper")])
def test_preference_configs_validate(relpath):
  toy_options = ("", "ring", "ring,tiny", "digits", "tiny,digits")
  for options in (toy_options if relpath.endswith("toy.py") else ("",)):
    config = _load_config(relpath, options)
    run.validate_finetune_config(config)
    objectives.get_objective(config.method, None, PROCESS, **config.method_options.to_dict())  # options exist


def test_paper_configs_hold_the_official_hyperparameters():
  dpo = _load_config("diffusion_dpo/paper.py")
  assert dpo.method_options.beta == 5000.0 and dpo.method_options.scaling == "official"
  assert dpo.optim.lr == pytest.approx(2.048e-5) and dpo.data.batch_size == 2048 and dpo.training.num_steps == 2000
  assert _load_config("diffusion_dpo/paper.py", "sd15_paper").method_options.beta == 2000.0
  d3po = _load_config("d3po/paper.py")
  assert (d3po.method_options.beta, d3po.method_options.clip_eps, d3po.optim.lr) == (0.1, 0.1, 3e-5)
  spo = _load_config("spo/paper.py")
  assert (spo.method_options.beta, spo.spo.num_candidates, spo.spo.threshold, spo.optim.lr) == (10.0, 4, 0.3, 6e-5)
  sdxl = _load_config("spo/paper.py", "sdxl")
  assert (sdxl.spo.num_candidates, sdxl.spo.threshold, sdxl.optim.lr) == (2, 0.4, 1e-5)
  ddo = _load_config("ddo/paper.py")
  assert (ddo.method_options.alpha, ddo.method_options.beta) == (1.0, 0.02)
  rank = _load_config("rank_dpo/paper.py")
  assert rank.data.batch_size == 1024 and rank.training.num_steps == 400


def test_offline_run_writes_its_ranked_data_and_trains_on_a_given_data_set(tmp_path):
  from diffjax.data import preference as pref_data
  config = _tiny_config(tmp_path, "rank_dpo", beta=100.0)
  first = run.finetune(config, str(tmp_path / "a"))
  data = pref_data.load_preference_dataset(str(tmp_path / "a" / "preference_data"))
  assert data.samples.shape == (64, 4, 2) and data.rewards.shape == (64, 4, 3)
  assert np.all((data.phi >= 0) & (data.phi <= 1))
  config.generation.path = str(tmp_path / "a" / "preference_data")
  second = run.finetune(config, str(tmp_path / "b"))
  assert not os.path.exists(tmp_path / "b" / "preference_data")
  with np.load(tmp_path / "a" / "round_0" / "data.npz") as fa, np.load(tmp_path / "b" / "round_0" / "data.npz") as fb:
    for k in fa.files:
      np.testing.assert_array_equal(fa[k], fb[k])
  assert first[-1]["reward"] == second[-1]["reward"]


def test_policy_evaluator_measures_divergence_from_the_fixed_reference():
  from diffjax.finetune import evaluation
  denoiser, params = _model()
  ts = jnp.linspace(1.0, 0.1, 6)
  cond = None
  reward = lambda x, c: -jnp.sum(x**2, -1)
  evaluate = evaluation.make_policy_evaluator(denoiser, params, jax.random.PRNGKey(3), cond, (256, 2), process=PROCESS,
                                              ts=ts, reward_fn=reward)
  same, x_same = evaluate(params)
  assert abs(same["path_kl"]) < 1e-9 and same["path_kl_se"] < 1e-9  # float32 rounding only
  assert abs(same["sample_mmd"]) < 1e-6  # the same key: identical samples
  moved, x_moved = evaluate(_perturb(params, 0.3, 5))
  assert moved["path_kl"] > 10 * moved["path_kl_se"] > 0
  assert moved["sample_mmd"] > 1e-3
  again, x_again = evaluate(params)  # evaluations do not disturb each other
  np.testing.assert_array_equal(x_again, x_same)
  assert again == same
