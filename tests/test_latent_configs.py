"""The paper configs of the architectures issue: they validate, build their models (abstractly),
and the latent pipeline (npz latents, vp_discrete, DDPM labels, CFG, ancestral sampling) runs end
to end at a tiny size."""
import os

import numpy as np
import pytest
from flax import nnx

import diffjax as dj
from diffjax import configuration, experiment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = ["dit/imagenet256_xl2.py"] + [f"dico/imagenet256_{s}.py" for s in ("s", "b", "l", "xl", "h")]


def _load(relpath, options=""):
  return configuration.load_config_file(os.path.join(ROOT, "configs", relpath), options)


@pytest.mark.parametrize("relpath", CONFIGS)
def test_latent_configs_validate_and_build(relpath):
  config = _load(relpath)
  configuration.validate_config(config)
  model = nnx.eval_shape(lambda: dj.models.create(config.model.name, rngs=nnx.Rngs(0),
                                                  **config.model.options.to_dict()))
  assert dj.models.count_params(model) > 30_000_000
  assert config.model.label_dropout == 0.1 and config.optim.lr == 1e-4 and config.data.batch_size == 256
  assert config.model.options.learn_sigma and config.loss.name == "hybrid"
  assert config.sampling.sampler == "ddpm_learned_variance" and config.sampling.num_steps == 250


def test_hybrid_loss_needs_learned_sigma():
  config = _load("dit/imagenet256_xl2.py")
  config.model.options.learn_sigma = False
  with pytest.raises(ValueError, match="learn_sigma"):
    configuration.validate_config(config)


@pytest.mark.parametrize("learn_sigma", [True, False], ids=["hybrid_learned_variance", "eps_ancestral"])
def test_latent_pipeline_end_to_end(tmp_path, learn_sigma):
  rng = np.random.default_rng(0)
  path = str(tmp_path / "latents.npz")
  np.savez(path, x=rng.standard_normal((64, 8, 8, 4)).astype(np.float32), label=rng.integers(0, 10, 64))
  config = _load("dit/imagenet256_xl2.py")
  config.data.options.path = path
  config.data.batch_size = 16
  config.model.name = "dit_tiny"
  config.model.options = configuration.d(num_classes=10, learn_sigma=learn_sigma)
  if not learn_sigma:  # the fixed-variance recipe: eps loss, ancestral DDPM steps
    config.loss = configuration.d(name="eps", options=configuration.d(reduce="mean"))
    config.sampling.sampler, config.sampling.options = "ancestral", configuration.d()
  config.training.num_steps = 2
  config.training.ckpt_every = 2
  config.training.sample_every = 0
  config.sampling.num_steps = 4
  config.sampling.batch_size = 8
  config.eval.n_samples = 8
  configuration.validate_config(config)
  result = experiment.train_and_evaluate(config, str(tmp_path / "run"))
  samples = np.load(str(tmp_path / "run" / "samples.npz"))["samples"]
  assert samples.shape == (8, 8, 8, 4) and np.all(np.isfinite(samples))
  assert np.isfinite(result["sliced_wasserstein"])


def test_missing_latent_file_is_named():
  config = _load("dico/imagenet256_s.py")
  with pytest.raises(ValueError, match="data.options.path"):
    dj.data.make_dataset(config.data)


@pytest.mark.parametrize("options", ["", "cond"])
def test_edm_cifar10_config(options):
  config = _load("edm/cifar10_ddpmpp.py", options)
  configuration.validate_config(config)
  model = nnx.eval_shape(lambda: dj.models.create(config.model.name, rngs=nnx.Rngs(0),
                                                  **config.model.options.to_dict()))
  assert dj.models.count_params(model) == (55_735_299 if options == "cond" else 55_733_891)
  assert config.training.num_steps == 390_625 and config.sampling.num_steps == 18
