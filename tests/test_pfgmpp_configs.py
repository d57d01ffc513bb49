"""The EDM and PFGM++ reproduction configs: the papers' hyper-parameters, the networks' sizes, option
errors, and one tiny run of the recipe end to end."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import diffjax as dj
from diffjax import configuration, experiment, training

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load(relpath, options=""):
  return configuration.load_config_file(os.path.join(ROOT, "configs", relpath), options)


# relpath, options, model params, process (name, D), batch, lr, augment p, Heun steps
PAPER = [
    ("edm/cifar10_ddpmpp.py", "", 55_733_891, ("edm", None), 512, 1e-3, 0.12, 18),
    ("edm/cifar10_ddpmpp.py", "cond", 55_735_299, ("edm", None), 512, 1e-3, 0.12, 18),
    ("edm/cifar10_ncsnpp.py", "", 56_397_827, ("edm", None), 512, 1e-3, 0.12, 18),
    ("edm/cifar10_ncsnpp.py", "noaug", 56_397_827 - 9 * 256, ("edm", None), 512, 1e-3, 0.0, 18),
    ("pfgmpp/cifar10_D128.py", "", 56_397_827, ("pfgmpp", 128.0), 512, 1e-3, 0.12, 18),
    ("pfgmpp/cifar10_D2048.py", "", 56_397_827, ("pfgmpp", 2048.0), 512, 1e-3, 0.12, 18),
    ("pfgmpp/cifar10_D2048.py", "cond", 56_400_643, ("pfgmpp", 2048.0), 512, 1e-3, 0.12, 18),
    ("pfgmpp/ffhq64_D128.py", "", 61_805_571, ("pfgmpp", 128.0), 256, 2e-4, 0.15, 40),
]


@pytest.mark.parametrize("relpath,options,n_params,process,batch,lr,augment,steps", PAPER,
                         ids=[f"{p[0]}:{p[1]}" for p in PAPER])
def test_paper_configs_carry_the_edm_recipe(relpath, options, n_params, process, batch, lr, augment, steps):
  config = _load(relpath, options)
  configuration.validate_config(config)
  model = nnx.eval_shape(lambda: dj.models.create(config.model.name, rngs=nnx.Rngs(0),
                                                  **config.model.options.to_dict()))
  assert dj.models.count_params(model) == n_params
  assert config.process.name == process[0] and config.process.options.get("D") == process[1]
  assert config.data.batch_size == batch and config.optim.lr == lr
  assert config.optim.warmup_steps == 10_000_000 // batch  # lr ramp over 10 Mimg
  assert config.training.num_steps == 200_000_000 // batch  # 200 Mimg
  assert config.training.ema_halflife_images == 500_000 and config.training.ema_rampup_ratio == 0.05
  assert config.augment.p == augment
  assert (config.model.options.get("augment_dim", 9) == 9) == (augment > 0)
  assert config.loss.name == "edm" and config.loss.options.to_dict() == dict(p_mean=-1.2, p_std=1.2, reduce="sum")
  assert config.model.precond == "edm" and config.model.sigma_data == 0.5
  assert config.sampling.sampler == "heun" and config.sampling.grid == "karras"
  assert config.sampling.num_steps == steps
  process_obj = experiment.build_process(config)
  assert (process_obj.sigma_min, process_obj.sigma_max) == (0.002, 80.0)


@pytest.mark.parametrize("relpath,options,match", [
    ("edm/cifar10_ddpmpp.py", "fast", "edm/cifar10_ddpmpp"),
    ("pfgmpp/cifar10_D128.py", "tiny,tiny", "repeated"),
    ("pfgmpp/ffhq64_D128.py", "cond", "pfgmpp/ffhq64_D128"),
    ("pfgmpp/toy.py", "digits,D=abc", "not a number"),
    ("pfgmpp/toy.py", "cifar", "give one task"),
])
def test_bad_options_name_the_config(relpath, options, match):
  with pytest.raises(ValueError, match=match):
    _load(relpath, options)


@pytest.mark.parametrize("D,process", [("64", "pfgmpp"), ("inf", "edm")])
def test_toy_configs_match_except_the_process(D, process):
  config = _load("pfgmpp/toy.py", f"digits,D={D}")
  configuration.validate_config(config)
  assert config.process.name == process
  other = _load("pfgmpp/toy.py", "digits,D=2048")
  differ = experiment.config_differences(config.to_dict(), other.to_dict())
  assert set(differ) <= {"process.name", "process.options.D", "process.options"}


def test_ffhq_data_path_is_required_at_run_time():
  config = _load("pfgmpp/ffhq64_D128.py")
  assert config.data.name == "npz" and config.data.options.path == "/data/ffhq64.npz"


def test_tiny_pfgmpp_recipe_trains_and_samples(tmp_path):
  """The D=128 NCSN++ recipe at tiny size: finite losses, EDM's EMA ramp-up as logged, samples from
  the PFGM++ prior."""
  config = _load("pfgmpp/cifar10_D128.py", "tiny")
  config.training.num_steps = 6
  config.training.log_every = 1
  config.training.ckpt_every = 6
  config.eval.n_samples = 8
  config.sampling.num_steps = 3
  result = experiment.train_and_evaluate(config, str(tmp_path))
  assert np.isfinite(result["sliced_wasserstein"])
  rows = training.read_jsonl(os.path.join(tmp_path, "metrics.jsonl"))
  assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6] and all(np.isfinite(r["loss"]) for r in rows)
  schedule = training.edm_ema_schedule(64, config.training.ema_halflife_images, 0.05)
  # row k is the k-th step, taken from state.step = k - 1 (64 (k - 1) images seen before it)
  np.testing.assert_allclose([r["ema_decay"] for r in rows], [float(schedule(k - 1)) for k in range(1, 7)],
                             rtol=1e-6)
  assert rows[0]["ema_decay"] == 0.0


def test_training_batches_are_augmented_and_the_network_gets_the_labels():
  """With augment.p > 0 the loss draws the pipe on the batch and calls the network with its labels
  (here xflip only, p = 1: a fair coin per image); with p = 0 no labels are passed."""
  config = _load("edm/cifar10_ddpmpp.py", "tiny")
  config.augment.options = configuration.d(xflip=1e8)
  config.model.options.augment_dim = 1
  configuration.validate_config(config)
  seen = {}

  def apply_fn(params, x, c_noise, cond=None, augment_labels=None):
    seen["labels"] = augment_labels
    return params * x

  process = experiment.build_process(config)
  x = jax.random.normal(jax.random.PRNGKey(0), (256, 8, 8, 1))
  loss_fn = experiment.make_loss_fn(config, process, apply_fn)
  loss, _ = loss_fn(jnp.float32(0.5), {"x": x}, jax.random.PRNGKey(1))
  labels = np.asarray(seen["labels"])
  assert labels.shape == (256, 1) and set(np.unique(labels)) == {0.0, 1.0} and 80 < labels.sum() < 176
  config.augment.p = 0.0
  experiment.make_loss_fn(config, process, apply_fn)(jnp.float32(0.5), {"x": x}, jax.random.PRNGKey(1))
  assert seen["labels"] is None


@pytest.mark.parametrize("field,value,match", [("p", -0.1, "augment.p must be"),
                                               ("augment_dim", 3, "model.options.augment_dim=3"),
                                               ("options", {"rotate": 1.0}, "augment.options")])
def test_augment_config_errors_name_the_field(field, value, match):
  config = _load("edm/cifar10_ddpmpp.py")
  if field == "augment_dim":
    config.model.options.augment_dim = value
  elif field == "options":
    config.augment.options = configuration.d(**value)
  else:
    config.augment.p = value
  with pytest.raises(ValueError, match=match):
    configuration.validate_config(config)
