"""Distribution distances against closed forms."""
import jax
import jax.numpy as jnp
import numpy as np

import diffjax as dj


def test_sliced_wasserstein_1d_is_exact_w2():
  k1, k2 = jax.random.split(jax.random.PRNGKey(0))
  x = jax.random.normal(k1, (20_000, 1))
  y = jax.random.normal(k2, (20_000, 1)) + 0.7
  sw = dj.metrics.sliced_wasserstein(jax.random.PRNGKey(1), x, y, n_projections=4)
  assert abs(float(sw) - 0.7) < 0.03  # W2(N(0,1), N(0.7,1)) = 0.7
  np.testing.assert_allclose(dj.metrics.sliced_wasserstein(jax.random.PRNGKey(1), x, x), 0.0, atol=1e-7)


def test_sliced_wasserstein_shift_in_2d():
  """For a shift m, SW2^2 = E_theta (theta . m)^2 = |m|^2 / d."""
  x = jax.random.normal(jax.random.PRNGKey(0), (4000, 2))
  m = jnp.array([1.0, 1.0])
  sw = dj.metrics.sliced_wasserstein(jax.random.PRNGKey(1), x, x + m, n_projections=1024)
  np.testing.assert_allclose(sw, np.sqrt(2.0 / 2.0), rtol=0.05)


def test_mmd_and_energy_distance():
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
  x = jax.random.normal(k1, (3000, 2))
  y = jax.random.normal(k2, (3000, 2))
  z = jax.random.normal(k3, (3000, 2)) + 1.0
  assert abs(float(dj.metrics.mmd(x, y, unbiased=True))) < 0.01
  assert float(dj.metrics.mmd(x, z)) > 10 * abs(float(dj.metrics.mmd(x, y)))
  np.testing.assert_allclose(dj.metrics.mmd(x, x), 0.0, atol=1e-5)
  # Energy distance between N(0, I) and N(m, I) in 1-D: 2E|X-Y| - 2E|X-X'| with closed forms.
  a = jax.random.normal(k1, (4000, 1))
  b = jax.random.normal(k2, (4000, 1)) + 1.0
  from scipy.stats import norm
  s = np.sqrt(2.0)
  e_xy = s * 2 * norm.pdf(1 / s) + 1.0 * (1 - 2 * norm.cdf(-1 / s))  # E|N(1, 2)|
  e_xx = s * np.sqrt(2 / np.pi)
  np.testing.assert_allclose(dj.metrics.energy_distance(a, b), 2 * e_xy - 2 * e_xx, atol=0.03)
  # Symmetry.
  np.testing.assert_allclose(dj.metrics.energy_distance(a, b), dj.metrics.energy_distance(b, a), rtol=1e-4)


def test_mode_coverage():
  means = jnp.array([[0.0, 0.0], [10.0, 0.0]])
  samples = jnp.array([[0.1, 0.0], [0.0, 0.2], [9.9, 0.1], [5.0, 0.0]])
  cov = dj.metrics.mode_coverage(samples, means, stds=1.0, radius=3.0)
  np.testing.assert_allclose(cov["shares"], [0.5, 0.25])
  np.testing.assert_allclose(cov["off_mode"], 0.25)
  assert int(cov["modes_hit"]) == 2
