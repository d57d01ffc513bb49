"""MLKD losses (diffjax.losses.knowledge_distillation): exact values, finite differences, layer matching."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffjax.losses import knowledge_distillation as kd


def _logits(key, shape=(3, 5, 7), scale=2.0):
  return scale * jax.random.normal(key, shape, jnp.float64)


MASK = jnp.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]])


def test_prediction_kl_is_zero_for_identical_logits_and_positive_otherwise(x64):
  z = _logits(jax.random.PRNGKey(0))
  for tau in (1.0, 0.5):
    assert float(kd.prediction_layer_loss(z, z, MASK, temperature=tau)) == pytest.approx(0.0, abs=1e-14)
  assert float(kd.prediction_layer_loss(z + 0.3 * _logits(jax.random.PRNGKey(1)), z, MASK)) > 1e-3


def test_prediction_kl_equals_numpy_formula(x64):
  s, t = _logits(jax.random.PRNGKey(0)), _logits(jax.random.PRNGKey(1))
  tau = 0.5
  sn, tn, m = np.asarray(s) / tau, np.asarray(t) / tau, np.asarray(MASK, float)
  log_q = sn - np.log(np.exp(sn).sum(-1, keepdims=True))
  log_p = tn - np.log(np.exp(tn).sum(-1, keepdims=True))
  kl = (np.exp(log_p) * (log_p - log_q)).sum(-1)
  expected = (kl * m).sum() / m.sum()
  assert float(kd.prediction_layer_loss(s, t, MASK, temperature=tau)) == pytest.approx(expected, rel=1e-12)


def test_prediction_kl_gradient_matches_finite_difference(x64):
  s, t = _logits(jax.random.PRNGKey(2)), _logits(jax.random.PRNGKey(3))
  f = lambda z: kd.prediction_layer_loss(z, t, MASK, temperature=0.7)
  grad = np.asarray(jax.grad(f)(s))
  direction = np.asarray(jax.random.normal(jax.random.PRNGKey(4), s.shape, jnp.float64))
  h = 1e-6
  fd = (float(f(s + h * direction)) - float(f(s - h * direction))) / (2 * h)
  assert np.sum(grad * direction) == pytest.approx(fd, rel=1e-7)
  # masked tokens get no gradient; analytic form (softmax(s/tau) - softmax(t/tau)) / (tau * n_active)
  assert np.all(grad[np.asarray(MASK) == 0] == 0)
  tau, n = 0.7, float(MASK.sum())
  analytic = (jax.nn.softmax(s / tau) - jax.nn.softmax(t / tau)) / (tau * n) * MASK[..., None]
  np.testing.assert_allclose(grad, analytic, atol=1e-13)


def _constructed_hiddens():
  """Teacher layers at distinct constant vectors; student layer 0 sits between teacher 3 and 1,
  student layer 1 right at teacher 0 with teacher 4 second closest."""
  b, t, dim = 2, 3, 4
  centers = jnp.array([[0., 0, 0, 0], [4., 0, 0, 0], [0, 9., 0, 0], [5., 0, 0, 0], [0, 0.6, 0, 0]])
  teacher = jnp.broadcast_to(centers[:, None, None, :], (5, b, t, dim))
  student = jnp.stack([jnp.full((b, t, dim), 0.) + jnp.array([4.6, 0, 0, 0]),
                       jnp.full((b, t, dim), 0.) + jnp.array([0, 0.1, 0, 0])])
  return student, teacher


def test_layer_matching_picks_the_closest_teacher_layers(x64):
  student, teacher = _constructed_hiddens()
  identity = kd.LayerMap(kernel=jnp.eye(4), bias=jnp.zeros(4))
  d = kd.layer_distances(student, teacher, identity)
  assert d.shape == (2, 3, 2, 5)
  values, idx = kd.closest_teacher_layers(d, top_k=2)
  assert np.all(np.asarray(idx[:, :, 0]) == [3, 1])      # 0.4^2 then 0.6^2
  assert np.all(np.asarray(idx[:, :, 1]) == [0, 4])      # 0.1^2 then 0.5^2
  np.testing.assert_allclose(values[0, 0], [[0.16 / 4, 0.36 / 4], [0.01 / 4, 0.25 / 4]], rtol=1e-12)
  # the learned map decides the matching: W sends teacher layer 2, (0, 9, 0, 0), onto student layer 0
  kernel = jnp.zeros((4, 4)).at[1, 0].set(4.6 / 9)
  _, idx = kd.closest_teacher_layers(kd.layer_distances(student, teacher, kd.LayerMap(kernel, jnp.zeros(4))), 1)
  assert np.all(np.asarray(idx[:, :, 0, 0]) == 2)


def test_intermediate_loss_sums_top2_weighted_by_beta(x64):
  student, teacher = _constructed_hiddens()
  identity = kd.LayerMap(kernel=jnp.eye(4), bias=jnp.zeros(4))
  beta = jnp.array([1.0, 2.0, 3.0, 4.0])
  loss = kd.intermediate_layer_loss(student, teacher, MASK[:2, :3], identity, beta, top_k=2)
  expected = (0.16 * 1 + 0.36 * 2 + 0.01 * 3 + 0.25 * 4) / 4
  assert float(loss) == pytest.approx(expected, rel=1e-12)
  assert float(kd.intermediate_layer_loss(student, teacher, None, identity, None)) == pytest.approx(
      (0.16 + 0.36 + 0.01 + 0.25) / 4, rel=1e-12)
  with pytest.raises(ValueError, match="layer_weights must have shape"):
    kd.intermediate_layer_loss(student, teacher, None, identity, jnp.ones(3))
  with pytest.raises(ValueError, match="top_k must be in"):
    kd.closest_teacher_layers(jnp.zeros((1, 1, 2, 5)), top_k=6)


def test_intermediate_loss_gradient_flows_to_map_and_student(x64):
  student, teacher = _constructed_hiddens()
  student = student + 0.1 * jax.random.normal(jax.random.PRNGKey(0), student.shape, jnp.float64)
  lm = kd.init_layer_map(jax.random.PRNGKey(1), 4, 4)
  lm = jax.tree.map(lambda x: x.astype(jnp.float64), lm)
  f = lambda s, m: kd.intermediate_layer_loss(s, teacher, None, m, None)
  gs, gm = jax.grad(f, argnums=(0, 1))(student, lm)
  direction = jax.random.normal(jax.random.PRNGKey(2), student.shape, jnp.float64)
  h = 1e-6
  fd = (float(f(student + h * direction, lm)) - float(f(student - h * direction, lm))) / (2 * h)
  assert float(jnp.sum(gs * direction)) == pytest.approx(fd, rel=1e-6)
  assert float(jnp.abs(gm.kernel).sum()) > 0


def test_mlkd_loss_components_and_ablations(x64):
  key = jax.random.PRNGKey(5)
  ks = jax.random.split(key, 6)
  v, dim, n_layers = 11, 6, 4
  ids = jax.random.randint(ks[0], (2, 5), 0, v)
  mask = jnp.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
  s_logits, t_logits = _logits(ks[1], (2, 5, v)), _logits(ks[2], (2, 5, v))
  s_h = tuple(jax.random.normal(k, (2, 5, dim), jnp.float64) for k in jax.random.split(ks[3], n_layers + 1))
  t_h = tuple(jax.random.normal(k, (2, 5, dim), jnp.float64) for k in jax.random.split(ks[4], n_layers + 1))
  params = kd.init_mlkd_params(ks[5], teacher_dim=dim, student_dim=dim, num_student_layers=2)
  params = jax.tree.map(lambda x: x.astype(jnp.float64), params)
  common = dict(student_layers=(1, 2), teacher_layers=(1, 2, 3, 4), temperature=1.0)
  full, aux = kd.mlkd_loss(s_logits, s_h, t_logits, t_h, ids, mask, params, **common)
  pred, _ = kd.mlkd_loss(s_logits, s_h, t_logits, t_h, ids, mask, params, intermediate_weight=0.0, **common)
  inter, _ = kd.mlkd_loss(s_logits, s_h, t_logits, t_h, ids, mask, params, prediction_weight=0.0, **common)
  both, aux_lm = kd.mlkd_loss(s_logits, s_h, t_logits, t_h, ids, mask, params, lm_weight=1.0, **common)
  assert float(full) == pytest.approx(float(pred) + float(inter), rel=1e-12)
  assert float(pred) == pytest.approx(float(kd.prediction_layer_loss(s_logits, t_logits, mask)), rel=1e-12)
  assert float(both) == pytest.approx(float(full) + float(kd.causal_lm_loss(s_logits, ids, mask)), rel=1e-12)
  assert set(aux) == {"kd/prediction", "kd/intermediate"} and "kd/lm" in aux_lm
  # teacher outputs are constants of the loss
  g = jax.grad(lambda t: kd.mlkd_loss(s_logits, s_h, t, t_h, ids, mask, params, **common)[0])(t_logits)
  assert float(jnp.abs(g).max()) == 0.0
  with pytest.raises(ValueError, match="student_layers must be"):
    kd.mlkd_loss(s_logits, s_h, t_logits, t_h, ids, mask, params, **{**common, "student_layers": (7,)})
  scores = kd.kd_scores(s_logits, s_h, t_logits, t_h, mask, params, student_layers=(1, 2), teacher_layers=(1, 2, 3, 4))
  assert scores["kd_loss"].shape == (2,)
  np.testing.assert_allclose(scores["kd_loss"], scores["kl"] + scores["hidden"], rtol=1e-12)


def test_sequence_nll_scores_the_official_positions(x64):
  v = 6
  ids = jnp.array([[2, 3, 4, 0, 0], [1, 2, 3, 4, 5]])       # 0 = pad = eos
  mask = jnp.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
  logits = _logits(jax.random.PRNGKey(7), (2, 5, v))
  logp = np.asarray(jax.nn.log_softmax(logits, -1))
  # row 0: positions 0, 1, 2 predict 3, 4 and the first pad (eos) 0; row 1: positions 0..3
  row0 = -(logp[0, 0, 3] + logp[0, 1, 4] + logp[0, 2, 0]) / 3
  row1 = -sum(logp[1, i, ids[1, i + 1]] for i in range(4)) / 4
  np.testing.assert_allclose(kd.sequence_nll(logits, ids, mask), [row0, row1], rtol=1e-12)
  # Hugging Face labels=input_ids loss: all T-1 predictions, padding included
  hf = -np.mean([logp[r, i, ids[r, i + 1]] for r in range(2) for i in range(4)])
  assert float(kd.causal_lm_loss(logits, ids, mask)) == pytest.approx(hf, rel=1e-12)
  masked = -(logp[0, 0, 3] + logp[0, 1, 4] + logp[0, 2, 0] + sum(logp[1, i, ids[1, i + 1]] for i in range(4))) / 7
  assert float(kd.causal_lm_loss(logits, ids, mask, include_padding=False)) == pytest.approx(masked, rel=1e-12)
  with pytest.raises(ValueError, match="attention_mask must have shape"):
    kd.sequence_nll(logits, ids, mask[:, :3])
