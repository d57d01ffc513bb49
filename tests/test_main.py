"""The command line: config validation errors name the field, and a tiny run writes its outputs."""
import json
import os
import subprocess
import sys

import pytest

from diffjax import configuration, experiment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _quickstart():
  sys.path.insert(0, os.path.join(ROOT, "configs"))
  try:
    import quickstart
  finally:
    sys.path.pop(0)
  return quickstart.get_config()


@pytest.mark.parametrize("field,value,message", [
    ("process.name", "vpsde", "process.name='vpsde' is not valid; valid choices"),
    ("sampling.sampler", "rk45", "sampling.sampler='rk45' is not valid; valid choices"),
    ("model.name", "resnet", "model.name='resnet' is not valid; valid choices"),
    ("data.name", "ring9", "data.name='ring9' is not valid; valid choices"),
    ("data.batch_size", -8, "data.batch_size must be a positive integer"),
    ("sampling.num_steps", 0, "sampling.num_steps must be a positive integer"),
    ("eval.n_samples", -1, "eval.n_samples must be a positive integer"),
    ("training.num_steps", -5, "training.num_steps"),
    ("optim.optimizer", "sgd2", "optim.optimizer"),
    ("model.parametrization", "noise", "model.parametrization='noise' is not valid"),
])
def test_invalid_config_fails_with_field_name(field, value, message):
  config = _quickstart()
  section, name = field.split(".")
  config[section][name] = value
  with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
    configuration.validate_config(config)


def test_invalid_options_and_pairings():
  config = _quickstart()
  config.process.options.beta_min = 0.1  # not a field of EDM
  with pytest.raises(ValueError, match="process.options"):
    configuration.validate_config(config)
  config = _quickstart()
  config.sampling.options.eta = 1.0  # heun has no eta
  with pytest.raises(ValueError, match="sampling.options.*valid options"):
    configuration.validate_config(config)
  config = _quickstart()
  config.process.name = "vp"
  config.process.options = configuration.d()
  with pytest.raises(ValueError, match="loss.name='edm'.*process.name='edm'"):
    configuration.validate_config(config)


def test_batch_size_not_divisible_by_devices_fails_at_start(tmp_path):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
  proc = subprocess.run(
      [sys.executable, "-m", "diffjax.main", f"--config={ROOT}/configs/quickstart.py",
       f"--workdir={tmp_path}", "--config.data.batch_size=12"],
      capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
  assert proc.returncode != 0
  assert "data.batch_size=12 must be divisible by the number of devices (8)" in proc.stderr
  assert not os.path.exists(tmp_path / "checkpoints")


def test_tiny_quickstart_run_writes_outputs(tmp_path):
  config = _quickstart()
  config.training.num_steps = 30
  config.training.log_every = 10
  config.training.ckpt_every = 15
  config.training.sample_every = 0
  config.optim.decay_steps = 30
  config.optim.warmup_steps = 5
  config.eval.n_samples = 500
  config.sampling.num_steps = 4
  configuration.validate_config(config)
  result = experiment.train_and_evaluate(config, str(tmp_path))
  for name in ("samples.png", "samples.npz", "metrics.json", "metrics.jsonl"):
    assert (tmp_path / name).exists(), name
  metrics = json.loads((tmp_path / "metrics.json").read_text())
  assert metrics == result and len(metrics["mode_shares"]) == 8 and metrics["n_samples"] == 500
  assert metrics["sliced_wasserstein_noise_floor"] > 0
  # eval mode restores the checkpoint and reproduces the same samples.
  again = experiment.evaluate(config, str(tmp_path))
  assert again == metrics


def test_cli_helpers_turn_bad_input_into_usage_errors():
  from absl import app

  from diffjax import cli
  with pytest.raises(app.UsageError, match=r"unexpected arguments: \['extra'\]"):
    cli.start(["prog", "extra"])

  def bad(config):
    raise ValueError("data.batch_size must be a positive integer, got 0")

  with pytest.raises(app.UsageError, match="invalid config: data.batch_size"):
    cli.validate(bad, None)
  cli.validate(lambda config: None, None)
