"""Checkpoints: bitwise round trip, keep-N retention, optimizer state and dataset position."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import _toy
from diffjax import training


def _trained_state(n_steps=3, **overrides):
  """A toy state after ``n_steps`` updates, with its jitted step and dataset."""
  config = _toy.make_config(**overrides)
  state, train_step, _ = _toy.setup(config)
  step = jax.jit(train_step)
  data = _toy.ToyDataset(16)
  for _ in range(n_steps):
    state, _ = step(state, next(data))
  return state, step, data, config


def _assert_bitwise_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    x, y = np.asarray(x), np.asarray(y)
    assert x.dtype == y.dtype and x.shape == y.shape
    assert np.array_equal(x, y)


def test_round_trip_is_bitwise_and_keeps_dataset_position(tmp_path):
  state, _, data, _ = _trained_state()
  with training.Checkpointer(str(tmp_path), keep=2) as ckpt:
    assert ckpt.restore_latest(state) is None
    assert ckpt.save(3, state, data_state=data.get_state(), metadata={"note": "toy"}, force=True)
    ckpt.wait()
    assert ckpt.all_steps() == [3]
    # A fresh target (step 0, zero moments) must be fully overwritten.
    fresh, _, _ = _toy.setup(_toy.make_config())
    restored, data_state = ckpt.restore_latest(fresh)
    assert ckpt.metadata(3)["metadata"] == {"note": "toy"}
  _assert_bitwise_equal(restored, state)
  assert type(restored.params) is type(state.params)  # nnx.State, not a plain dict
  assert data_state == {"index": 3}
  # Abstract targets work too.
  with training.Checkpointer(str(tmp_path), keep=2) as ckpt:
    restored2, _ = ckpt.restore(3, training.abstract_like(fresh))
  _assert_bitwise_equal(restored2, state)


def test_resume_restores_optimizer_state(tmp_path):
  """The optimizer moments and count come back, so the next step equals the uninterrupted one
  and differs from a step taken with a fresh optimizer state."""
  state, step, data, config = _trained_state()
  count = int(state.opt_state[1][0].count)  # chain(clip, adam): the Adam state
  assert count == 3
  with training.Checkpointer(str(tmp_path), keep=1) as ckpt:
    ckpt.save(3, state, data_state=data.get_state(), force=True)
    ckpt.wait()
    fresh, _, _ = _toy.setup(config)
    restored, data_state = ckpt.restore_latest(fresh)
  assert int(restored.opt_state[1][0].count) == count
  mu = jax.tree.leaves(restored.opt_state[1][0].mu)
  assert any(float(jnp.abs(m).max()) > 0 for m in mu)
  data2 = _toy.ToyDataset(16)
  data2.set_state(data_state)
  batch = next(data)
  np.testing.assert_array_equal(next(data2)["x"], batch["x"])
  expected, _ = step(state, batch)
  resumed, _ = step(restored, batch)
  _assert_bitwise_equal(resumed, expected)
  wrong, _ = step(restored.replace(opt_state=fresh.opt_state), batch)
  assert not np.array_equal(jax.tree.leaves(wrong.params)[0],
                            jax.tree.leaves(expected.params)[0])


def test_keep_n_retention_and_interval(tmp_path):
  state, _, _, _ = _trained_state(n_steps=1)
  with training.Checkpointer(str(tmp_path), keep=2, save_every=2) as ckpt:
    saved = [s for s in range(1, 8) if ckpt.save(s, state)]
    assert saved == [2, 4, 6]
    assert ckpt.save(7, state, force=True)
    assert not ckpt.save(7, state, force=True)  # already there
    ckpt.wait()
    assert ckpt.all_steps() == [6, 7]
  assert sorted(os.listdir(tmp_path)) == ["6", "7"]


def test_refuses_non_finite_state(tmp_path, caplog):
  state, _, _, _ = _trained_state(n_steps=1)
  bad = state.replace(ema_params=jax.tree.map(lambda x: x.at[..., 0].set(jnp.nan),
                                              state.ema_params))
  with training.Checkpointer(str(tmp_path), keep=2) as ckpt:
    with pytest.raises(training.NonFiniteStateError, match="non-finite"):
      ckpt.save(1, bad, force=True)
    assert ckpt.all_steps() == []
  assert "refusing to save checkpoint at step 1" in caplog.text


def test_async_save_then_donated_step_is_safe(tmp_path):
  """The loop donates the state right after an async save; the checkpoint must still hold the
  values at save time."""
  state, _, data, config = _trained_state(n_steps=1)
  _, train_step, _ = _toy.setup(config)
  donating = jax.jit(train_step, donate_argnums=0)
  expected = jax.device_get(state)
  with training.Checkpointer(str(tmp_path), keep=1, async_save=True) as ckpt:
    ckpt.save(1, state, force=True)
    for _ in range(3):
      state, _ = donating(state, next(data))
    ckpt.wait()
    fresh, _, _ = _toy.setup(config)
    restored, _ = ckpt.restore(1, fresh)
  _assert_bitwise_equal(jax.device_get(restored), expected)


def test_checkpointer_argument_errors(tmp_path):
  with pytest.raises(ValueError, match="training.keep_checkpoints"):
    training.Checkpointer(str(tmp_path), keep=0)
  with pytest.raises(ValueError, match="training.ckpt_every"):
    training.Checkpointer(str(tmp_path), save_every=-1)
