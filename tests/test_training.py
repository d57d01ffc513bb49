"""Train step, optimizers, config validation, logging and the train loop (incl. SIGTERM/resume
and non-finite handling)."""
import json
import logging
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

import _toy
from diffjax import training
from diffjax.training import logging as tlog

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "_train_script.py")

# ----------------------------------------------------------------------------- optimizers


@pytest.mark.parametrize("field,value,match", [
    ("optimizer", "sgd", r"optim\.optimizer must be one of \['adam', 'adamw'\]"),
    ("schedule", "linear", r"optim\.schedule must be one of \['constant', 'cosine'\]"),
    ("lr", 0.0, r"optim\.lr must be in \(0\.0, inf\]"),
    ("beta1", 1.0, r"optim\.beta1 must be in \[0\.0, 1\.0\)"),
    ("eps", -1.0, r"optim\.eps"),
    ("warmup_steps", -1, r"optim\.warmup_steps must be in \[0"),
    ("warmup_steps", 1.5, r"optim\.warmup_steps must be an integer"),
    ("grad_clip", -1.0, r"optim\.grad_clip"),
    ("weight_decay", 0.1, r"optim\.weight_decay must be 0 with optim\.optimizer='adam'"),
    ("lr", "big", r"optim\.lr must be a number"),
])
def test_optimizer_config_errors_name_the_field(field, value, match):
  cfg = training.default_optim_config().to_dict()  # a plain dict accepts any type
  cfg[field] = value
  with pytest.raises(ValueError, match=match):
    training.make_optimizer(cfg)


def test_optimizer_config_unknown_field_and_cosine_decay_steps():
  cfg = training.default_optim_config()
  cfg.lrr = 1.0
  with pytest.raises(ValueError, match=r"unknown field\(s\) \['lrr'\]"):
    training.make_optimizer(cfg)
  cfg = training.default_optim_config()
  cfg.update(schedule="cosine", warmup_steps=10, decay_steps=10)
  with pytest.raises(ValueError, match=r"optim\.decay_steps must be > optim\.warmup_steps"):
    training.make_optimizer(cfg)


def test_lr_schedules():
  cfg = training.default_optim_config()
  cfg.update(lr=1.0, warmup_steps=4)
  sched = training.make_lr_schedule(cfg)
  np.testing.assert_allclose([float(sched(i)) for i in range(7)],
                             [0, .25, .5, .75, 1, 1, 1], atol=1e-7)
  cfg.update(schedule="cosine", decay_steps=8, min_lr=0.1)
  sched = training.make_lr_schedule(cfg)
  assert float(sched(4)) == pytest.approx(1.0)
  assert float(sched(6)) == pytest.approx(0.1 + 0.9 * 0.5, abs=1e-6)
  assert float(sched(8)) == pytest.approx(0.1) and float(sched(100)) == pytest.approx(0.1)


def test_optimizer_matches_optax_reference():
  """adamw + clipping equals the hand-built optax chain; 'adam' equals optax.adam."""
  params = {"w": jnp.array([1.0, -2.0, 3.0])}
  grads = {"w": jnp.array([30.0, 40.0, 0.0])}  # norm 50, clipped to 1
  cfg = training.default_optim_config()
  cfg.update(optimizer="adamw", lr=0.1, weight_decay=0.01, grad_clip=1.0)
  ref = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(0.1, weight_decay=0.01))
  for opt_cfg, tx in ((cfg, ref), (training.default_optim_config(), optax.adam(2e-4))):
    opt = training.make_optimizer(opt_cfg)
    u, _ = opt.update(grads, opt.init(params), params)
    v, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_array_equal(u["w"], v["w"])

# ----------------------------------------------------------------------------- train step


def _quadratic_setup(ema_decay=0.5, nonfinite="skip", n_steps=1):
  """A linear least-squares problem with an SGD optimizer: every quantity is easy to predict."""
  def loss_fn(params, batch, key):
    del key
    r = batch["x"] @ params["w"] - batch["y"]
    return jnp.mean(r ** 2), {"r_max": jnp.max(jnp.abs(r))}
  opt = optax.sgd(0.1)
  state = training.TrainState.create({"w": jnp.ones((2,))}, opt, jax.random.key(0))
  step = training.make_train_step(loss_fn, opt, ema_decay=ema_decay, nonfinite=nonfinite,
                                  n_steps=n_steps)
  return state, jax.jit(step)


def test_edm_ema_schedule_matches_the_edm_training_loop():
  """beta(k) = 0.5 ** (B / max(min(H, ratio * k * B), 1e-8)) as NVlabs/edm training_loop.py, with
  cur_nimg = k * B the images seen before step k; the first step copies the parameters."""
  B, H, ratio = 512, 500_000, 0.05
  schedule = training.edm_ema_schedule(B, H, ratio)
  for k in (0, 1, 10, 1000, 19_531, 19_532, 100_000):
    halflife = max(min(H, ratio * k * B), 1e-8)
    np.testing.assert_allclose(float(schedule(jnp.asarray(k))), 0.5 ** (B / halflife), rtol=1e-6)
  assert float(schedule(0)) == 0.0
  np.testing.assert_allclose(float(training.edm_ema_schedule(B, H)(0)), 0.5 ** (B / H), rtol=1e-6)


def test_train_step_with_ema_schedule_uses_the_step_decay():
  def loss_fn(params, batch, key):
    del key
    return jnp.sum((params["w"] - batch["y"])**2), {}
  opt = optax.sgd(0.1)
  state = training.TrainState.create({"w": jnp.ones((2,))}, opt, jax.random.key(0))
  schedule = lambda step: jnp.where(step == 0, 0.0, 0.75)
  step = jax.jit(training.make_train_step(loss_fn, opt, ema_decay=0.5, ema_schedule=schedule))
  batch = {"y": np.zeros(2, np.float32)}
  s1, m1 = step(state, batch)
  np.testing.assert_allclose(s1.ema_params["w"], s1.params["w"], rtol=1e-6)  # beta = 0 at step 0
  s2, m2 = step(s1, batch)
  np.testing.assert_allclose(s2.ema_params["w"], 0.75 * s1.ema_params["w"] + 0.25 * s2.params["w"], rtol=1e-6)
  assert float(m1["ema_decay"]) == 0.0 and float(m2["ema_decay"]) == 0.75


@pytest.mark.parametrize("field,value,match", [
    ("ema_halflife_images", -1, "ema_halflife_images must be 0"),
    ("ema_rampup_ratio", 0.0, "ema_rampup_ratio must be None or > 0"),
])
def test_ema_halflife_config_errors(field, value, match):
  cfg = training.default_training_config()
  cfg[field] = value
  with pytest.raises(ValueError, match=match):
    training.validate_training_config(cfg)
  cfg = training.default_training_config()
  cfg.ema_rampup_ratio = 0.05
  with pytest.raises(ValueError, match="needs training.ema_halflife_images"):
    training.validate_training_config(cfg)


def _batch(nan=False, lead=()):
  x = np.tile(np.array([[1.0, 0.0], [0.0, 2.0]], np.float32), lead + (1, 1))
  y = np.tile(np.array([1.0, -1.0], np.float32), lead + (1,))
  if nan:
    x[..., 0, 0] = np.nan
  return {"x": x, "y": y}


def test_train_step_update_ema_and_metrics():
  state, step = _quadratic_setup(ema_decay=0.5)
  assert state.rng.dtype == jnp.uint32  # typed keys are stored as raw key data
  new, m = step(state, _batch())
  grads = jax.grad(lambda p: jnp.mean((_batch()["x"] @ p["w"] - _batch()["y"]) ** 2))(
      state.params)
  np.testing.assert_allclose(new.params["w"], state.params["w"] - 0.1 * grads["w"], rtol=1e-6)
  np.testing.assert_allclose(new.ema_params["w"], 0.5 * state.params["w"] + 0.5 * new.params["w"],
                             rtol=1e-6)
  assert int(new.step) == 1 and bool(m["finite"])
  assert set(m) == {"loss", "grad_norm", "finite", "r_max"}
  np.testing.assert_allclose(m["grad_norm"], np.linalg.norm(grads["w"]), rtol=1e-6)


def test_scan_of_n_steps_equals_n_single_steps():
  state, step = _quadratic_setup()
  _, step3 = _quadratic_setup(n_steps=3)
  s1 = state
  losses = []
  for _ in range(3):
    s1, m = step(s1, _batch())
    losses.append(float(m["loss"]))
  s3, m3 = step3(state, _batch(lead=(3,)))
  assert m3["loss"].shape == (3,) and int(s3.step) == 3
  np.testing.assert_allclose(m3["loss"], losses, rtol=1e-6)
  np.testing.assert_allclose(s3.params["w"], s1.params["w"], rtol=1e-6)


def test_nonfinite_skip_keeps_params_and_advances_step():
  state, step = _quadratic_setup()
  state, _ = step(state, _batch())
  new, m = step(state, _batch(nan=True))
  assert not bool(m["finite"]) and int(new.step) == int(state.step) + 1
  for a, b in zip(jax.tree.leaves((new.params, new.opt_state, new.ema_params)),
                  jax.tree.leaves((state.params, state.opt_state, state.ema_params))):
    np.testing.assert_array_equal(a, b)


def test_nonfinite_stop_freezes_the_rest_of_the_scan():
  state, step3 = _quadratic_setup(nonfinite="stop", n_steps=3)
  _, step1 = _quadratic_setup(nonfinite="stop")
  batch = _batch(lead=(3,))
  batch["x"][1, 0, 0] = np.nan  # the second of three steps is bad
  new, m = step3(state, batch)
  assert m["finite"].tolist() == [True, False, True]
  after_first, _ = step1(state, _batch())
  assert int(new.step) == 1  # points at the offending step
  np.testing.assert_array_equal(new.params["w"], after_first.params["w"])


@pytest.mark.parametrize("kwargs,match", [
    (dict(nonfinite="ignore"), r"training\.nonfinite must be one of \['skip', 'stop'\]"),
    (dict(n_steps=0), r"training\.n_jitted_steps must be an integer >= 1"),
    (dict(ema_decay=1.5), r"training\.ema_decay must be in \[0, 1\]"),
])
def test_make_train_step_errors(kwargs, match):
  kw = dict(ema_decay=0.9)
  kw.update(kwargs)
  with pytest.raises(ValueError, match=match):
    training.make_train_step(lambda p, b, k: (0.0, {}), optax.sgd(1.0), **kw)

# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize("field,value,match", [
    ("num_steps", -1, r"training\.num_steps must be >= 0"),
    ("log_every", 0, r"training\.log_every must be >= 1"),
    ("ckpt_every", -5, r"training\.ckpt_every must be >= 0"),
    ("keep_checkpoints", 0, r"training\.keep_checkpoints must be >= 1"),
    ("sample_every", -1, r"training\.sample_every must be >= 0"),
    ("n_jitted_steps", 0, r"training\.n_jitted_steps must be >= 1"),
    ("n_jitted_steps", 3, r"training\.num_steps \(1000\) must be a multiple of "
                          r"training\.n_jitted_steps \(3\)"),
    ("nonfinite", "ignore", r"training\.nonfinite must be one of \['skip', 'stop'\]"),
    ("ema_decay", 2.0, r"training\.ema_decay must be a number in \[0, 1\]"),
    ("num_steps", 2.5, r"training\.num_steps must be an integer"),
])
def test_training_config_errors_name_the_field(field, value, match):
  cfg = training.default_training_config().to_dict()
  cfg[field] = value
  with pytest.raises(ValueError, match=match):
    training.validate_training_config(cfg)


def test_unknown_training_fields_only_warn(caplog):
  cfg = training.default_training_config()
  cfg.batch_size = 128
  with caplog.at_level(logging.WARNING, logger="diffjax"):
    assert training.validate_training_config(cfg)["num_steps"] == 1000
  assert "['batch_size'] are not used by the train loop" in caplog.text


def test_distributed_config():
  config = ml_collections.ConfigDict({"distributed": training.default_distributed_config()})
  assert training.maybe_initialize(config) is False  # disabled: a no-op
  assert training.maybe_initialize(ml_collections.ConfigDict()) is False
  from diffjax.training.distributed import initialize_kwargs
  cfg = training.default_distributed_config()
  cfg.update(enabled=True, coordinator_address="10.0.0.1:1234", num_processes=2, process_id=1,
             local_device_ids="0,1")
  assert initialize_kwargs(cfg) == dict(coordinator_address="10.0.0.1:1234", num_processes=2,
                                        process_id=1, local_device_ids=[0, 1],
                                        initialization_timeout=300)
  cfg.process_id = 2
  with pytest.raises(ValueError, match=r"distributed\.process_id must be in \[0, 2\)"):
    initialize_kwargs(cfg)
  cfg.process_id, cfg.num_processes = 0, 0
  with pytest.raises(ValueError, match=r"distributed\.num_processes"):
    initialize_kwargs(cfg)

# ----------------------------------------------------------------------------- logging


def test_crc32c_and_event_file_round_trip(tmp_path):
  assert tlog.crc32c(b"123456789") == 0xE3069283
  w = tlog.EventFileWriter(str(tmp_path))
  w.scalars(3, {"loss": 0.25, "grad_norm": 1.5})
  w.image(3, "samples", np.full((4, 5, 3), 0.5))
  w.close()
  events = tlog.read_events(w.path)
  assert events[0]["file_version"] == "brain.Event:2"
  assert events[1]["step"] == 3 and events[1]["scalars"] == {"loss": 0.25, "grad_norm": 1.5}
  h, wd, png = events[2]["images"]["samples"]
  assert (h, wd) == (4, 5) and png.startswith(b"\x89PNG")
  with open(w.path, "r+b") as f:  # a flipped byte is detected
    f.seek(30)
    byte = f.read(1)
    f.seek(30)
    f.write(bytes([byte[0] ^ 1]))
  with pytest.raises(ValueError, match="CRC"):
    tlog.read_events(w.path)


def test_png_helpers(tmp_path):
  from matplotlib import image as mpimg
  grid = training.save_image_grid(str(tmp_path / "grid.png"),
                                  np.random.default_rng(0).uniform(-1, 1, (5, 8, 8, 3)),
                                  value_range=(-1, 1))
  assert grid.shape == (2 * 9 + 1, 3 * 9 + 1, 3) and grid.dtype == np.uint8
  back = mpimg.imread(str(tmp_path / "grid.png"))
  assert back.shape[:2] == grid.shape[:2]
  training.save_image_grid(str(tmp_path / "gray.png"), np.zeros((4, 6, 6)))
  training.save_scatter(str(tmp_path / "sub" / "scatter.png"), np.zeros((10, 2)),
                        reference=np.ones((5, 2)), lim=2.0, title="samples")
  with open(tmp_path / "sub" / "scatter.png", "rb") as f:
    assert f.read(4) == b"\x89PNG"
  with pytest.raises(ValueError, match=r"points must have shape \(N, 2\)"):
    training.save_scatter(str(tmp_path / "bad.png"), np.zeros((10, 3)))

# ----------------------------------------------------------------------------- loop


def _ckpt_states(workdir, config):
  """Every checkpoint in ``workdir/checkpoints`` restored: ``{step: state}``."""
  target, _, _ = _toy.setup(config)
  with training.Checkpointer(os.path.join(workdir, "checkpoints")) as ckpt:
    return {s: ckpt.restore(s, target)[0] for s in ckpt.all_steps()}


def test_train_loop_logs_samples_evaluates_and_checkpoints(tmp_path):
  config = _toy.make_config(num_steps=6, log_every=2, ckpt_every=2, keep_checkpoints=2,
                            sample_every=3, eval_every=3)
  state, train_step, _ = _toy.setup(config)
  calls = []

  def sample_fn(st, step):
    calls.append(("sample", step, int(st.step)))
    training.save_scatter(str(tmp_path / "samples" / f"{step}.png"), np.zeros((4, 2)))

  def eval_fn(st, step):
    calls.append(("eval", step, int(st.step)))
    return {"score": float(step)}

  res = training.train(config=config, workdir=str(tmp_path), state=state,
                       train_step=train_step, dataset=_toy.ToyDataset(8), sample_fn=sample_fn,
                       eval_fn=eval_fn, metadata={"run": "toy"})
  assert res.step == 6 and res.interrupted is None and res.resumed_from is None
  assert sorted(calls) == [("eval", 3, 3), ("eval", 6, 6), ("sample", 3, 3), ("sample", 6, 6)]
  assert sorted(os.listdir(tmp_path / "samples")) == ["3.png", "6.png"]
  rows = training.read_jsonl(str(tmp_path / "metrics.jsonl"))
  train_rows = [r for r in rows if "loss" in r]
  assert [r["step"] for r in train_rows] == [2, 4, 6]
  assert {"loss", "grad_norm", "finite", "lr", "x_mean", "steps_per_sec"} <= set(train_rows[0])
  assert all(0 < r["steps_per_sec"] < 1e5 for r in train_rows)
  assert [r["eval/score"] for r in rows if "eval/score" in r] == [3.0, 6.0]
  tb = training.read_scalars(str(tmp_path / "tb"))
  assert [s for s, _ in tb["loss"]] == [2, 4, 6]
  np.testing.assert_array_equal([v for _, v in tb["loss"]],
                                np.float32([r["loss"] for r in train_rows]))
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["4", "6"]
  with training.Checkpointer(str(tmp_path / "checkpoints")) as ckpt:
    meta = ckpt.metadata(6)
  assert meta["dataset"] == {"index": 6} and meta["metadata"] == {"run": "toy"}
  # Running again resumes at the end and does nothing more.
  state, train_step, _ = _toy.setup(config)
  again = training.train(config=config, workdir=str(tmp_path), state=state,
                         train_step=train_step, dataset=_toy.ToyDataset(8))
  assert again.resumed_from == 6 and again.step == 6


def test_loop_checks_train_step_against_config(tmp_path):
  config = _toy.make_config(num_steps=4)
  state, train_step, _ = _toy.setup(_toy.make_config(num_steps=4, n_jitted_steps=2))
  with pytest.raises(ValueError, match=r"n_steps=2 but training\.n_jitted_steps is 1"):
    training.train(config=config, workdir=str(tmp_path), state=state, train_step=train_step,
                   dataset=_toy.ToyDataset(8))


def test_nan_batch_is_skipped(tmp_path, caplog):
  """nonfinite='skip': the NaN batch's update is dropped, logged loudly, training continues
  and every checkpoint is finite."""
  config = _toy.make_config(num_steps=8, log_every=4, ckpt_every=2, keep_checkpoints=10,
                            nonfinite="skip", n_jitted_steps=2)
  state, train_step, _ = _toy.setup(config)
  with caplog.at_level(logging.ERROR, logger="diffjax"):
    res = training.train(config=config, workdir=str(tmp_path), state=state,
                         train_step=train_step, dataset=_toy.ToyDataset(8, nan_at=4))
  assert res.step == 8 and res.nonfinite_steps == [5]
  assert "NON-FINITE step 5: loss=nan" in caplog.text and "skipped" in caplog.text
  rows = training.read_jsonl(str(tmp_path / "metrics.jsonl"))
  assert [(r["step"], r["finite"]) for r in rows] == [(4, True), (5, False), (8, True)]
  states = _ckpt_states(str(tmp_path), config)
  assert sorted(states) == [2, 4, 6, 8]
  for s in states.values():
    assert bool(training.all_finite(s))
  # The skipped step left params and optimizer state exactly as after step 4.
  np.testing.assert_array_equal(states[6].opt_state[1][0].count, 5)


def test_nan_batch_stops_the_run(tmp_path, caplog):
  """nonfinite='stop': a clear log line, then NonFiniteLossError; no checkpoint at or after the
  bad step, and the existing ones are finite."""
  config = _toy.make_config(num_steps=10, log_every=1, ckpt_every=2, keep_checkpoints=10,
                            nonfinite="stop")
  state, train_step, _ = _toy.setup(config)
  with caplog.at_level(logging.ERROR, logger="diffjax"):
    with pytest.raises(training.NonFiniteLossError,
                       match=r"non-finite loss or gradient at step 5 .*training\.nonfinite="
                             r"'stop'; the newest checkpoint is step 4"):
      training.train(config=config, workdir=str(tmp_path), state=state, train_step=train_step,
                     dataset=_toy.ToyDataset(8, nan_at=4))
  assert "NON-FINITE step 5" in caplog.text
  rows = training.read_jsonl(str(tmp_path / "metrics.jsonl"))
  assert rows[-1]["step"] == 5 and rows[-1]["finite"] is False
  states = _ckpt_states(str(tmp_path), config)
  assert sorted(states) == [2, 4]
  assert all(bool(training.all_finite(s)) for s in states.values())


class _InterruptingDataset(_toy.ToyDataset):
  """Sends this process SIGINT (a Ctrl-C) while producing batch ``at``."""

  def __init__(self, *args, at, **kwargs):
    super().__init__(*args, **kwargs)
    self.at = at

  def __next__(self):
    if self.index == self.at:
      os.kill(os.getpid(), signal.SIGINT)
    return super().__next__()


def test_ctrl_c_finishes_the_step_and_saves(tmp_path):
  config = _toy.make_config(num_steps=20, log_every=1, ckpt_every=0)
  state, train_step, _ = _toy.setup(config)
  old = signal.getsignal(signal.SIGINT)
  res = training.train(config=config, workdir=str(tmp_path), state=state,
                       train_step=train_step, dataset=_InterruptingDataset(8, at=5))
  assert signal.getsignal(signal.SIGINT) is old  # handlers are restored
  assert res.interrupted == "SIGINT" and res.step == 6  # batch 5 was still trained on
  with training.Checkpointer(str(tmp_path / "checkpoints")) as ckpt:
    assert ckpt.all_steps() == [6] and ckpt.metadata(6)["dataset"] == {"index": 6}


def _launch(workdir, *args):
  return subprocess.Popen([sys.executable, SCRIPT, "--workdir", str(workdir), *map(str, args)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait(proc, timeout=300):
  out, _ = proc.communicate(timeout=timeout)
  assert proc.returncode == 0, out[-3000:]
  return out


def _result(workdir):
  with open(os.path.join(workdir, "result.json")) as f:
    return json.load(f)


def test_sigterm_then_restart_reproduces_uninterrupted_run(tmp_path):
  """A run stopped by SIGTERM saves a checkpoint and exits 0; its restart logs exactly the
  losses (and ends with exactly the parameters) of an uninterrupted run."""
  n = 30
  ref_dir, run_dir = tmp_path / "reference", tmp_path / "interrupted"
  ref = _launch(ref_dir, "--num_steps", n, "--batch_size", 16)
  run = _launch(run_dir, "--num_steps", n, "--batch_size", 16, "--sleep", 0.1)
  metrics = run_dir / "metrics.jsonl"
  deadline = time.time() + 120
  while time.time() < deadline and run.poll() is None:
    if metrics.exists() and len(training.read_jsonl(str(metrics))) >= 8:
      break
    time.sleep(0.05)
  assert run.poll() is None, "the run ended before it could be interrupted"
  run.send_signal(signal.SIGTERM)
  out = _wait(run)
  first = _result(run_dir)
  assert first["interrupted"] == "SIGTERM" and 8 <= first["step"] < n, out[-2000:]
  assert "received SIGTERM" in out and "checkpoint saved" in out
  assert (run_dir / "checkpoints" / str(first["step"])).is_dir()
  _wait(_launch(run_dir, "--num_steps", n, "--batch_size", 16))
  second = _result(run_dir)
  assert second["resumed_from"] == first["step"] and second["step"] == n
  _wait(ref)
  ref_rows = training.read_jsonl(str(ref_dir / "metrics.jsonl"))
  run_rows = training.read_jsonl(str(metrics))
  assert [r["step"] for r in run_rows] == list(range(1, n + 1))
  for key in ("loss", "grad_norm", "lr", "x_mean"):
    assert [r[key] for r in run_rows] == [r[key] for r in ref_rows], key  # bitwise
  config = _toy.make_config(num_steps=n)
  final_ref = _ckpt_states(str(ref_dir), config)[n]
  final_run = _ckpt_states(str(run_dir), config)[n]
  for a, b in zip(jax.tree.leaves(final_ref), jax.tree.leaves(final_run)):
    np.testing.assert_array_equal(a, b)
