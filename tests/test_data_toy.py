"""Toy oracles: exact marginal density, score and denoiser under every process (float64)."""
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import diffjax as dj
from diffjax import processes as P
from diffjax.data import toy

PROCESSES = [P.VP(), P.VE(), P.EDM(), P.RectifiedFlow(), P.SubVP()]


def _mixture():
  rng = np.random.default_rng(0)
  covs = []
  for _ in range(3):
    a = rng.normal(size=(2, 2))
    covs.append(a @ a.T * 0.2 + 0.05 * np.eye(2))
  return toy.GaussianMixture(jnp.array([0.2, 0.5, 0.3]), jnp.array([[0.0, 1.0], [1.5, -0.5], [-1.0, -1.0]]),
                             jnp.asarray(np.stack(covs)))


def _times(p):
  return p.t_min + jnp.array([0.0, 0.1, 0.5, 0.9]) * (p.t_max - p.t_min)


@pytest.mark.parametrize("process", PROCESSES, ids=lambda p: type(p).__name__)
def test_score_is_gradient_of_log_density(x64, process):
  m = _mixture()
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 2)) * 2
  t = _times(process)
  grad = jax.vmap(jax.grad(lambda xi, ti: m.marginal_log_prob(xi[None], ti[None], process)[0]))(x, t)
  np.testing.assert_allclose(m.score(x, t, process), grad, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("process", PROCESSES, ids=lambda p: type(p).__name__)
def test_tweedie(x64, process):
  """E[x0 | x_t] = (x + sigma^2 score) / alpha."""
  m = _mixture()
  x = jax.random.normal(jax.random.PRNGKey(1), (4, 2))
  t = _times(process)[1:]
  x = x[1:]
  a, s = process.alpha(t)[:, None], process.sigma(t)[:, None]
  np.testing.assert_allclose(m.denoiser(x, t, process), (x + s**2 * m.score(x, t, process)) / a, rtol=1e-8)


def test_density_integrates_to_one(x64):
  m = _mixture()
  g = jnp.linspace(-8, 8, 401)
  xx, yy = jnp.meshgrid(g, g)
  pts = jnp.stack([xx.ravel(), yy.ravel()], -1)
  for t in (0.0, 0.3):
    mass = jnp.sum(jnp.exp(m.marginal_log_prob(pts, t, P.VP()))) * (g[1] - g[0])**2
    assert abs(float(mass) - 1.0) < 1e-6


def test_gaussian_closed_form_and_edges(x64):
  mu, v = jnp.array([0.5, -1.0]), jnp.array([0.3, 2.0])
  g = toy.Gaussian(mu, v)
  p = P.VP()
  x = jnp.array([[0.1, 0.2], [1.0, -3.0]])
  t = jnp.array([0.2, 0.7])
  a, s = p.alpha(t)[:, None], p.sigma(t)[:, None]
  c = a**2 * v + s**2
  ref = jnp.sum(-0.5 * (x - a * mu)**2 / c - 0.5 * jnp.log(2 * math.pi * c), -1)
  np.testing.assert_allclose(g.marginal_log_prob(x, t, p), ref, rtol=1e-12)
  np.testing.assert_allclose(g.denoiser(x, t, p), mu + a * v * (x - a * mu) / c, rtol=1e-12)
  # sigma = 0: the data score; alpha = 0 (rectified flow at t = 1): denoiser is the mean.
  np.testing.assert_allclose(g.score(x, 0.0, p), -(x - mu) / v, rtol=1e-12)
  np.testing.assert_allclose(g.denoiser(x, 0.0, p), x, rtol=1e-12)
  np.testing.assert_allclose(g.denoiser(x, 1.0, P.RectifiedFlow()), jnp.broadcast_to(mu, x.shape), rtol=1e-12)
  # A one-component mixture is the Gaussian.
  m = toy.GaussianMixture(jnp.ones(1), mu[None], v[None])
  np.testing.assert_allclose(m.score(x, t, p), g.score(x, t, p), rtol=1e-12)


def test_sampling_moments(x64):
  m = _mixture()
  x = m.sample(jax.random.PRNGKey(0), 400_000)
  mean = jnp.sum(m.weights[:, None] * m.means, 0)
  second = jnp.sum(m.weights[:, None, None] * (m.covs + jnp.einsum("ki,kj->kij", m.means, m.means)), 0)
  cov = second - jnp.outer(mean, mean)
  np.testing.assert_allclose(x.mean(0), mean, atol=0.01)
  np.testing.assert_allclose(jnp.cov(x.T), cov, atol=0.02)


def test_constructors_and_modes():
  r = toy.ring8()
  np.testing.assert_allclose(jnp.linalg.norm(r.means, axis=-1), 2.0, rtol=1e-6)
  assert toy.grid25().num_components == 25
  m = toy.random_mixture(seed=1, n_components=3, dim=5)
  assert m.means.shape == (3, 5) and bool(jnp.all(jnp.linalg.eigvalsh(m.covs) > 0))
  np.testing.assert_array_equal(r.mode_of(r.means), jnp.arange(8))
  with pytest.raises(ValueError, match="valid"):
    toy.get_toy("ring9")


def test_toy_dataset_state_resumes_exactly():
  cfg = ml_collections.ConfigDict(dict(name="ring8", batch_size=8, seed=3))
  a = dj.data.make_dataset(cfg)
  first = [next(a)["x"] for _ in range(3)]
  state = a.get_state()
  nxt = next(a)["x"]
  b = dj.data.make_dataset(cfg)
  b.set_state(state)
  np.testing.assert_array_equal(next(b)["x"], nxt)
  # Hosts take disjoint slices of the same global batch.
  h0 = dj.data.ToyDataset(toy.ring8(), 8, seed=3, process_index=0, process_count=2)
  h1 = dj.data.ToyDataset(toy.ring8(), 8, seed=3, process_index=1, process_count=2)
  np.testing.assert_array_equal(np.concatenate([next(h0)["x"], next(h1)["x"]]), first[0])


def test_digits_and_array_dataset():
  d = dj.data.load_digits()
  assert d["x"].shape == (1797, 8, 8, 1) and d["x"].min() == -1.0 and d["x"].max() == 1.0
  train, test = dj.data.load_digits("train"), dj.data.load_digits("test")
  assert len(train["x"]) + len(test["x"]) == 1797
  ds = dj.data.ArrayDataset(train, 100, seed=0)
  for _ in range(int(len(train["x"]) // 100) + 2):
    next(ds)
  state = ds.get_state()
  assert state["epoch"] == 1
  nxt = next(ds)
  ds2 = dj.data.ArrayDataset(train, 100, seed=0)
  ds2.set_state(state)
  np.testing.assert_array_equal(next(ds2)["x"], nxt["x"])
  with pytest.raises(ValueError, match="batch_size"):
    dj.data.make_dataset(ml_collections.ConfigDict(dict(name="digits", batch_size=-4)))
  with pytest.raises(ValueError, match="valid"):
    dj.data.make_dataset(ml_collections.ConfigDict(dict(name="mnist8", batch_size=4)))
