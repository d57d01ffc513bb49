"""Rewards (diffjax.rewards): exact values on constructed points, normalisation, registry."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from diffjax import rewards as R
from diffjax.data import preference as pref
from diffjax.data import toy
from diffjax.data.digits import load_digits
from diffjax.metrics.digits_classifier import DigitsClassifier, DigitsCNN

RING = toy.ring8()  # radius 2, std 0.1


def _radial(mode, r):
  """The point at distance r from mode's centre, radially outward (its nearest mode stays `mode`)."""
  m = np.asarray(RING.means[mode])
  return m + r * m / np.linalg.norm(m)


# --- 2-D toys -----------------------------------------------------------------------------------

def test_target_mode_indicator_exact_at_centres_and_far_points():
  f = R.target_mode_indicator(RING.means, RING.mode_stds, target=0)
  np.testing.assert_array_equal(f(RING.means), [1, 0, 0, 0, 0, 0, 0, 0])
  np.testing.assert_array_equal(f(10 * RING.means), np.zeros(8))  # nearest mode right, but 18 std away
  np.testing.assert_array_equal(f(jnp.zeros((1, 2))), [0])
  inside, outside = _radial(0, 0.29), _radial(0, 0.31)  # 2.9 and 3.1 std
  np.testing.assert_array_equal(f(jnp.asarray(np.stack([inside, outside]))), [1, 0])
  np.testing.assert_array_equal(jax.jit(f)(RING.means), f(RING.means))
  assert f(RING.means).dtype == jnp.float32
  wide = R.target_mode_indicator(RING.means, RING.mode_stds, target=0, n_std=4.0)
  np.testing.assert_array_equal(wide(jnp.asarray(outside[None])), [1])
  # With a ball wider than half the mode spacing (1.53), the nearest-mode condition decides:
  # 0.45 / 0.55 of the way from m0 to m1 are both within 10 std of m0, only the first is nearer m0.
  m0, m1 = np.asarray(RING.means[0]), np.asarray(RING.means[1])
  between = jnp.asarray(np.stack([m0 + 0.45 * (m1 - m0), m0 + 0.55 * (m1 - m0)]))
  np.testing.assert_array_equal(R.target_mode_indicator(RING.means, 0.1, target=0, n_std=10.0)(between), [1, 0])


def test_target_mode_indicator_conditional_target():
  f = R.target_mode_indicator(RING.means, RING.mode_stds, target=None)
  np.testing.assert_array_equal(jax.jit(f)(RING.means, jnp.arange(8)), np.ones(8))
  np.testing.assert_array_equal(f(RING.means, (jnp.arange(8) + 1) % 8), np.zeros(8))
  with pytest.raises(ValueError, match="target"):
    R.target_mode_indicator(RING.means, RING.mode_stds, target=8)


def test_negative_distance_exact():
  f = R.negative_distance(jnp.array([0.0, 0.0]))
  np.testing.assert_allclose(f(jnp.array([[3.0, 4.0], [0.0, 0.0], [-1.0, 0.0]])), [-5.0, 0.0, -1.0], rtol=0, atol=0)
  table = R.negative_distance(jnp.array([[0.0, 0.0], [3.0, 0.0]]))
  np.testing.assert_allclose(table(jnp.array([[3.0, 4.0], [3.0, 4.0]]), jnp.array([0, 1])), [-5.0, -4.0], atol=0)
  with pytest.raises(ValueError, match="cond"):
    table(jnp.zeros((1, 2)))


def test_log_density_of_mode_and_bump():
  f = R.log_density_of_mode(RING.means, RING.mode_stds, target=0)
  x = jnp.asarray(np.stack([_radial(0, 0.0), _radial(0, 0.2), _radial(3, 0.0)]), jnp.float32)
  m0, s = np.asarray(RING.means[0], np.float64), 0.1
  expect = [-0.5 * np.sum((np.asarray(xi, np.float64) - m0)**2) / s**2 - 2 * np.log(s) - np.log(2 * np.pi)
            for xi in np.asarray(x)]
  np.testing.assert_allclose(f(x), expect, rtol=1e-5)
  b = R.gaussian_bump(RING.means[0], width=0.5, height=2.0)
  np.testing.assert_allclose(b(RING.means[:1]), [2.0], rtol=1e-6)
  vals = b(10 * jax.random.normal(jax.random.PRNGKey(0), (64, 2)))
  assert jnp.all((vals >= 0) & (vals <= 2.0))


def test_toy_rewards_disagree():
  """negative distance to m0 prefers an off-ring point near m0; the data density prefers mode 1."""
  near_target_off_ring = 0.5 * RING.means[0]
  other_mode = RING.means[1]
  x = jnp.stack([near_target_off_ring, other_mode])
  nd = R.negative_distance(RING.means[0])(x)
  real = R.mixture_log_density(RING)(x)
  assert nd[0] > nd[1] and real[0] < real[1]
  phi = pref.aggregated_preference(np.stack([nd, real], -1))
  np.testing.assert_array_equal(phi, [0.5, 0.5])  # one model each: a split decision


# --- digits -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def random_classifier():
  graphdef, params = nnx.split(DigitsCNN(rngs=nnx.Rngs(0)))
  return DigitsClassifier(graphdef, params, 0.0)


def test_classifier_log_prob_is_log_softmax_at_label(random_classifier):
  clf = random_classifier
  x = jax.random.uniform(jax.random.PRNGKey(1), (6, 8, 8, 1), minval=-1, maxval=1)
  labels = jnp.array([0, 1, 2, 7, 8, 9])
  f = R.classifier_log_prob(clf)
  expect = jax.nn.log_softmax(clf.logits(x), -1)[jnp.arange(6), labels]
  np.testing.assert_allclose(f(x, labels), expect, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(jax.jit(f)(x, labels), expect, rtol=1e-5, atol=1e-6)
  total = sum(jnp.exp(f(x, jnp.full((6,), c))) for c in range(10))
  np.testing.assert_allclose(total, np.ones(6), rtol=1e-5)
  fixed = R.classifier_log_prob(clf, label=7)
  np.testing.assert_allclose(fixed(x), f(x, jnp.full((6,), 7)), rtol=1e-6)
  with pytest.raises(ValueError, match="cond"):
    f(x)


def test_classifier_log_prob_prefers_prompted_class():
  """A nearest-template classifier (logits = -||x - mean image of class c||^2) passed as a callable."""
  d = load_digits("all")
  x, y = d["x"][:400], d["label"][:400]
  templates = jnp.asarray(np.stack([d["x"][d["label"] == c].mean(0) for c in range(10)]))
  logits = lambda x: -jnp.sum((x[:, None] - templates[None])**2, (2, 3, 4))
  f = jax.jit(R.classifier_log_prob(logits))
  right, wrong = f(x, y), f(x, (y + 1) % 10)
  assert float(jnp.mean(right > wrong)) > 0.95


def test_stroke_mass_exact():
  f = R.stroke_mass()
  x = jnp.stack([-jnp.ones((8, 8, 1)), jnp.ones((8, 8, 1)), jnp.zeros((8, 8, 1))])
  np.testing.assert_array_equal(f(x), [0.0, 1.0, 0.5])
  half = jnp.concatenate([-jnp.ones((1, 4, 8, 1)), jnp.ones((1, 4, 8, 1))], 1)
  np.testing.assert_array_equal(f(half), [0.5])
  np.testing.assert_allclose(R.stroke_mass(target=0.25)(x), [-0.25, -0.75, -0.25])
  table = R.stroke_mass(target=jnp.array([0.0, 1.0]))
  np.testing.assert_allclose(table(x, jnp.array([0, 1, 0])), [0.0, 0.0, -0.5])
  with pytest.raises(ValueError, match="cond"):
    table(x)


def test_smoothness_exact():
  f = R.smoothness()
  checker = jnp.asarray((np.indices((8, 8)).sum(0) % 2) * 2.0 - 1.0)[None, ..., None]
  np.testing.assert_allclose(f(jnp.concatenate([-jnp.ones((1, 8, 8, 1)), checker])), [0.0, -4.0], atol=0)
  digit = jnp.asarray(load_digits("all")["x"][:8])
  noisy = jnp.clip(digit + 0.5 * jax.random.normal(jax.random.PRNGKey(0), digit.shape), -1, 1)
  assert jnp.all(jax.jit(f)(digit) > f(noisy))


# --- normalisation ------------------------------------------------------------------------------

def test_normalize_rewards_methods():
  r = jnp.array([1.0, 2.0, 2.0, 5.0])
  np.testing.assert_allclose(R.normalize_rewards(r, "rank"), [0.0, 0.5, 0.5, 1.0])
  np.testing.assert_allclose(R.normalize_rewards(r, "minmax"), [0.0, 0.25, 0.25, 1.0])
  z = R.normalize_rewards(r, "zscore")
  np.testing.assert_allclose([jnp.mean(z), jnp.std(z)], [0.0, 1.0], atol=1e-6)
  const = jnp.full((3,), 7.0)
  np.testing.assert_array_equal(R.normalize_rewards(const, "zscore"), np.zeros(3))
  np.testing.assert_array_equal(R.normalize_rewards(const, "minmax"), np.full(3, 0.5))
  np.testing.assert_array_equal(R.normalize_rewards(const, "rank"), np.full(3, 0.5))
  with pytest.raises(ValueError, match="'zscore', 'rank', 'minmax'"):
    R.normalize_rewards(r, "softmax")


def test_normalize_per_reward_model_and_per_prompt():
  rng = np.random.default_rng(0)
  raw = rng.normal(size=(20, 4, 3)) * np.array([1.0, 100.0, 0.01]) + np.array([0.0, -50.0, 3.0])
  z = np.asarray(R.normalize_rewards(raw, "zscore"))
  np.testing.assert_allclose(z.reshape(-1, 3).mean(0), 0, atol=1e-4)  # float32: 3 +- 0.01 keeps ~4 digits
  np.testing.assert_allclose(z.reshape(-1, 3).std(0), 1, atol=1e-4)
  per_prompt = np.asarray(R.normalize_rewards(raw, "minmax", axis=1))
  np.testing.assert_allclose(per_prompt.min(1), 0, atol=1e-6)
  np.testing.assert_allclose(per_prompt.max(1), 1, atol=1e-6)


def test_rank_average_within_prompt_equals_phi_without_ties():
  raw = np.random.default_rng(1).normal(size=(30, 5, 4))
  avg = R.average_rewards(raw, normalize="rank", axis=1)
  np.testing.assert_allclose(avg, pref.aggregated_preference(raw), atol=1e-6)


def test_average_rewards_weights():
  r = jnp.array([[0.0, 1.0], [2.0, 3.0]])
  np.testing.assert_allclose(R.average_rewards(r, normalize=None), [0.5, 2.5])
  np.testing.assert_allclose(R.average_rewards(r, weights=[3.0, 1.0], normalize=None), [0.25, 2.25])
  with pytest.raises(ValueError, match="weights"):
    R.average_rewards(r, weights=[1.0, 1.0, 1.0])


def test_noisy_variant_bounded_and_deterministic():
  base = R.negative_distance(RING.means[0])
  x = RING.sample(jax.random.PRNGKey(0), 256)
  a, a2 = R.noisy_variant(base, 0.3, seed=1), R.noisy_variant(base, 0.3, seed=1)
  b = R.noisy_variant(base, 0.3, seed=2)
  np.testing.assert_array_equal(a(x), a2(x))
  np.testing.assert_allclose(jax.jit(a)(x), a(x), rtol=1e-6, atol=1e-6)
  assert jnp.max(jnp.abs(a(x) - base(x))) <= 0.3 + 1e-6
  assert not np.allclose(a(x), b(x))


# --- registry -----------------------------------------------------------------------------------

def test_get_reward_by_name():
  f = R.get_reward("target_mode_indicator", means=RING.means, stds=RING.mode_stds, target=2)
  np.testing.assert_array_equal(f(RING.means), np.eye(8)[2])
  np.testing.assert_array_equal(R.get_reward("stroke_mass")(jnp.ones((2, 8, 8, 1))), [1.0, 1.0])
  noisy = R.get_reward("negative_distance", point=jnp.zeros(2), noise={"scale": 0.1, "seed": 0})
  assert noisy(jnp.ones((3, 2))).shape == (3,)
  assert {"classifier_log_prob", "negative_distance", "smoothness", "stroke_mass",
          "target_mode_indicator"} <= set(R.list_rewards())


def test_get_reward_errors_name_valid_choices():
  with pytest.raises(ValueError, match=r"unknown reward 'nope'.*stroke_mass"):
    R.get_reward("nope")
  with pytest.raises(ValueError, match="'negative_distance'"):
    R.get_reward("negative_distance", centre=jnp.zeros(2))
