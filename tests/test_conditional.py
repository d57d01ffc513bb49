"""Class-conditional runs: label dropout for classifier-free guidance, balanced labels and CFG
in sampling, and the config checks."""
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffjax import configuration, experiment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(label_dropout=0.1, guidance_scale=2.0):
  sys.path.insert(0, os.path.join(ROOT, "configs", "score_sde"))
  try:
    import vp_digits
  finally:
    sys.path.pop(0)
  config = vp_digits.get_config("tiny")
  config.model.options.num_classes = 10
  config.model.label_dropout = label_dropout
  config.sampling.guidance_scale = guidance_scale
  config.sampling.sampler = "ddim"
  config.sampling.options = configuration.d()
  config.sampling.num_steps = 3
  config.training.num_steps = 2
  config.data.batch_size = 16
  return config


def test_label_dropout_replaces_labels_by_the_null_class():
  config = _config(label_dropout=1.0 - 1e-9)
  run = experiment.Run(config)
  batch = {"x": jnp.zeros((4, 8, 8, 1)), "label": jnp.array([0, 3, 5, 9])}
  key = jax.random.PRNGKey(0)
  # perturb the weights: the zero-initialised output layer would hide the labels
  leaves, treedef = jax.tree.flatten(run.initial_state.params)
  keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
  params = jax.tree.unflatten(treedef, [p + 0.05 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])
  dropped, _ = run.loss_fn(params, batch, key)
  config_nodrop = _config(label_dropout=0.0)
  loss_nodrop = experiment.make_loss_fn(config_nodrop, run.process, run.apply_fn)
  null, _ = loss_nodrop(params, {"x": batch["x"], "label": jnp.full((4,), 10)},
                        jax.random.split(key)[0])
  kept, _ = loss_nodrop(params, batch, jax.random.split(key)[0])
  np.testing.assert_allclose(dropped, null, rtol=1e-6)
  assert abs(float(kept) - float(null)) > 0  # the label does reach the network


def test_guided_sampling_uses_balanced_labels_and_one_batched_call():
  config = _config()
  np.testing.assert_array_equal(experiment.sample_labels(config, 12, offset=5), (np.arange(5, 17) % 10))
  run = experiment.Run(config)
  calls = []
  apply_fn = run.apply_fn

  def counting_apply(params, x, t, cond=None):
    calls.append((x.shape[0], None if cond is None else cond.shape))
    return apply_fn(params, x, t, cond)

  sample = experiment.make_sampler(config, run.process, counting_apply, run.example_shape)
  out = sample(run.initial_state.params, jax.random.PRNGKey(0), 6, progress=False)
  assert out.shape == (6, 8, 8, 1) and np.all(np.isfinite(out))
  # traced once: every network call sees [x; x] with [labels; null]
  assert calls and all(c == (12, (12,)) for c in calls)


@pytest.mark.parametrize("field,value,message", [
    ("label_dropout", 1.5, "model.label_dropout must be in"),
])
def test_config_checks(field, value, message):
  config = _config()
  config.model[field] = value
  with pytest.raises(ValueError, match=message):
    configuration.validate_config(config)
  config = _config(label_dropout=0.2)
  del config.model.options["num_classes"]
  with pytest.raises(ValueError, match="needs a class-conditional model"):
    configuration.validate_config(config)
