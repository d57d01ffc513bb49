"""Dropout in training: `split_train_apply` is pure in its key, and the trainer's loss uses it."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import diffjax as dj
from diffjax import experiment
from diffjax.configuration import d, get_default_config


class _TwoDropouts(nnx.Module):
  """x -> (dropout_a(x), dropout_b(x)): two layers whose masks must be independent."""

  def __init__(self, rate, *, rngs):
    self.scale = nnx.Param(jnp.ones(()))
    self.a = nnx.Dropout(rate, rngs=rngs)
    self.b = nnx.Dropout(rate, rngs=rngs)

  def __call__(self, x, t, cond=None):
    return jnp.stack([self.a(self.scale * x), self.b(self.scale * x)])


def test_dropout_rate_of_models():
  assert dj.models.dropout_rate(_TwoDropouts(0.3, rngs=nnx.Rngs(0))) == pytest.approx(0.3)
  assert dj.models.dropout_rate(dj.models.create("mlp_tiny", rngs=nnx.Rngs(0), in_features=2)) == 0.0
  unet = dj.models.create("unet_tiny", rngs=nnx.Rngs(0), in_channels=1, dropout=0.13)
  assert dj.models.dropout_rate(unet) == pytest.approx(0.13)


def test_train_apply_masks_are_inverted_dropout_and_pure_in_the_key():
  rate = 0.25
  model = _TwoDropouts(rate, rngs=nnx.Rngs(0))
  train_apply, params = dj.models.split_train_apply(model)
  eval_apply, _ = dj.models.split_apply(model)
  x = jnp.ones((200_000,))
  out = jax.jit(train_apply)(params, x, None, key=jax.random.PRNGKey(1))
  kept = np.asarray(out) != 0
  # Inverted dropout: kept entries are 1 / (1 - rate), the drop fraction is the rate (binomial SE 1e-3).
  np.testing.assert_allclose(np.asarray(out)[kept], 1.0 / (1.0 - rate), rtol=1e-6)
  assert abs(1.0 - kept.mean() - rate) < 5e-3
  assert abs((kept[0] & kept[1]).mean() - (1 - rate)**2) < 5e-3  # the two layers' masks are independent
  again = jax.jit(train_apply)(params, x, None, key=jax.random.PRNGKey(1))
  np.testing.assert_array_equal(out, again)  # same key, same masks
  other = train_apply(params, x, None, key=jax.random.PRNGKey(2))
  assert not np.array_equal(out, other)
  np.testing.assert_array_equal(eval_apply(params, x, None), jnp.stack([x, x]))  # eval mode untouched


def _digits_config(dropout):
  config = get_default_config()
  config.data = d(name="digits", batch_size=8, options=d(split="train"))
  config.process = d(name="vp", options=d())
  config.model.name = "unet_tiny"
  config.model.options = d(dropout=dropout)
  config.model.parametrization = "eps"
  config.model.time_input = "t1000"
  config.loss = d(name="score_matching", options=d(weighting="sigma2"))
  config.training.num_steps = 1
  return config


def test_trainer_loss_applies_dropout_only_when_the_model_has_it():
  batch = {"x": jnp.asarray(dj.data.load_digits("train")["x"][:8])}
  key = jax.random.PRNGKey(0)
  with_dropout = experiment.Run(_digits_config(0.5))
  without = experiment.Run(_digits_config(0.0))
  # A non-zero output layer, so the network's output (and so dropout) reaches the loss.
  params = jax.tree.map(lambda p: p + 0.05 * jax.random.normal(jax.random.PRNGKey(3), p.shape, p.dtype),
                        with_dropout.initial_state.params)
  loss_train = lambda run, k: float(run.loss_fn(params, batch, k)[0])
  # Dropout on: the loss depends on the masks, so two keys differ even for the same eval-mode params,
  # and the training loss is not the eval-mode network's loss.
  assert loss_train(with_dropout, key) != loss_train(without, key)
  assert loss_train(with_dropout, key) == loss_train(with_dropout, key)
  # The sampler side (eval mode) of the dropout model is the dropout-free network exactly.
  x = batch["x"]
  t = jnp.full((8,), 500.0)
  np.testing.assert_array_equal(with_dropout.apply_fn(params, x, t), without.apply_fn(params, x, t))
