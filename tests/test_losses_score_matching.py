"""Score-matching losses on the Gaussian oracle: the exact denoiser attains each loss's analytic
minimum, and the Monte Carlo gradient at the exact denoiser vanishes (float64).

Data N(mu, diag(v)), D = 3. With x_t = alpha x0 + sigma eps, Var(eps | x_t) = alpha^2 v / C_t and
Var(x0 | x_t) = v sigma^2 / C_t (C_t = alpha^2 v + sigma^2), so the minimum of
E w(t) mean_d (eps_hat - eps)^2 is E_t[w(t) mean_d alpha^2 v / C_t].

Tolerance: the Monte Carlo estimate uses K = 16 independent chunks; the loss must lie within
6 standard errors of the analytic minimum and every gradient component within 6 standard errors of
zero (the standard error is estimated from the chunks). A power check shows the same test sees the
gradient of a wrong mean.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffjax import losses
from diffjax import parametrization as prm
from diffjax import processes as P

MU = jnp.array([0.5, -1.0, 0.2])
LOG_V = jnp.log(jnp.array([0.04, 0.25, 1.5]))
K, N = 16, 2**13


def exact_x0(theta, process):
  mu, v = theta[:3], jnp.exp(theta[3:])

  def den(x, t, *cond):
    a, s = process.alpha(t)[:, None], process.sigma(t)[:, None]
    return mu + a * v * (x - a * mu) / (a**2 * v + s**2)

  return den


def _data(key, n):
  return MU + jnp.exp(0.5 * LOG_V) * jax.random.normal(key, (n, 3))


def _mc(loss_of_theta, theta):
  """Per-chunk loss values and gradients."""
  def chunk(key):
    kd, kl = jax.random.split(key)
    x0 = _data(kd, N)
    return jax.value_and_grad(lambda th: loss_of_theta(th, x0, kl))(theta)

  return jax.lax.map(chunk, jax.random.split(jax.random.PRNGKey(42), K))


def _check(loss_of_theta, analytic):
  theta = jnp.concatenate([MU, LOG_V])
  mc = jax.jit(lambda th: _mc(loss_of_theta, th))
  values, grads = mc(theta)
  se = np.std(values, ddof=1) / np.sqrt(K)
  assert abs(np.mean(values) - analytic) < 6 * se, (np.mean(values), analytic, se)
  g_mean, g_se = np.mean(grads, 0), np.std(grads, 0, ddof=1) / np.sqrt(K)
  np.testing.assert_array_less(np.abs(g_mean), 6 * g_se)
  # Power: a wrong mean gives a gradient the same test detects.
  _, wrong = mc(theta.at[0].add(0.2))
  assert abs(np.mean(wrong[:, 0])) > 6 * np.std(wrong[:, 0], ddof=1) / np.sqrt(K)


def _quad_t(fn, lo, hi, n=4000):
  x, w = np.polynomial.legendre.leggauss(n)
  t = 0.5 * (hi - lo) * x + 0.5 * (hi + lo)
  return 0.5 * (hi - lo) * np.sum(w * np.asarray(fn(jnp.asarray(t))))


CASES = ([("eps", w) for w in losses.score_matching.WEIGHTINGS]
         + [(p, "sigma2") for p in ("x0", "v", "score", "flow")])


@pytest.mark.parametrize("prediction,weighting", CASES)
def test_score_matching_minimum_and_gradient(x64, weighting, prediction):
  process = P.VP()
  t_eps = 1e-3 if weighting in ("sigma2", "x0", "min_snr") else 0.05

  def loss_of_theta(theta, x0, key):
    den = exact_x0(theta, process)
    net = lambda x, t: prm.from_x0(den(x, t), x, t, process, prediction)
    return losses.score_matching_loss(net, x0, key, process=process, prediction=prediction,
                                      weighting=weighting, t_eps=t_eps)[0]

  v = jnp.exp(LOG_V)

  def integrand(t):
    a2, s2 = process.alpha(t)[:, None]**2, process.sigma(t)[:, None]**2
    w = losses.score_matching.eps_weight(process, t, weighting)
    return w * jnp.mean(a2 * v / (a2 * v + s2), -1)

  analytic = _quad_t(integrand, t_eps, 1.0) / (1.0 - t_eps)
  _check(loss_of_theta, analytic)


def test_edm_loss_minimum_and_gradient(x64):
  process = P.EDM()

  def loss_of_theta(theta, x0, key):
    return losses.edm_loss(exact_x0(theta, process), x0, key, p_mean=-1.2, p_std=1.2, sigma_data=0.5)[0]

  v = np.exp(np.asarray(LOG_V))
  z, w = np.polynomial.hermite_e.hermegauss(200)
  sigma = np.exp(-1.2 + 1.2 * z)[:, None]
  per_sigma = ((sigma**2 + 0.25) / (0.25 * sigma**2) * v * sigma**2 / (v + sigma**2)).mean(-1)
  analytic = np.sum(w * per_sigma) / np.sqrt(2 * np.pi)
  _check(loss_of_theta, analytic)


def test_edm_loss_is_one_when_data_std_is_sigma_data(x64):
  """EDM's weighting makes the optimal loss exactly 1 at every sigma when std(data) = sigma_data."""
  process = P.EDM()
  theta = jnp.concatenate([MU, jnp.log(jnp.full((3,), 0.25))])
  x0 = MU + 0.5 * jax.random.normal(jax.random.PRNGKey(0), (2**16, 3))
  _, aux = losses.edm_loss(exact_x0(theta, process), x0, jax.random.PRNGKey(1))
  assert abs(float(aux["per_example"].mean()) - 1.0) < 6 * float(aux["per_example"].std()) / 2**8


def test_flow_matching_minimum_and_gradient(x64):
  process = P.RectifiedFlow()

  def loss_of_theta(theta, x0, key):
    den = exact_x0(theta, process)
    net = lambda x, t: prm.from_x0(den(x, t), x, t, process, "flow")
    return losses.flow_matching_loss(net, x0, key, process=process, t_eps=1e-4)[0]

  v = jnp.exp(LOG_V)

  def integrand(t):
    t = t[:, None]
    return jnp.mean(v / ((1 - t)**2 * v + t**2), -1)

  analytic = _quad_t(integrand, 1e-4, 1.0) / (1.0 - 1e-4)
  _check(loss_of_theta, analytic)


def test_reductions_and_named_losses(x64):
  process = P.VP()
  x0 = jnp.ones((4, 2, 3))
  key = jax.random.PRNGKey(0)
  net = lambda x, t: 0.3 * x
  mean, aux = losses.score_matching_loss(net, x0, key, process=process, reduce="mean")
  total, _ = losses.score_matching_loss(net, x0, key, process=process, reduce="sum")
  np.testing.assert_allclose(total, 6 * mean, rtol=1e-12)
  np.testing.assert_allclose(losses.eps_loss(net, x0, key, process=process)[0], mean, rtol=1e-12)
  # The same (t, noise) as inside the loss: key -> (key_t, key_n).
  t = aux["t"][:, None, None]
  noise = jax.random.normal(jax.random.split(key)[1], x0.shape)
  x_t = process.alpha(t) * x0 + process.sigma(t) * noise
  # "v" weighting is exactly v-regression, "x0" exactly x0-regression.
  v_loss, _ = losses.v_loss(net, x0, key, process=process)
  np.testing.assert_allclose(v_loss, jnp.mean((0.3 * x_t - (process.alpha(t) * noise - process.sigma(t) * x0))**2),
                             rtol=1e-10)
  x0_loss, _ = losses.score_matching_loss(net, x0, key, process=process, prediction="x0", weighting="x0")
  np.testing.assert_allclose(x0_loss, jnp.mean((0.3 * x_t - x0)**2), rtol=1e-10)


def test_bad_options():
  with pytest.raises(ValueError, match="valid"):
    losses.score_matching_loss(lambda x, t: x, jnp.ones((2, 2)), jax.random.PRNGKey(0), process=P.VP(),
                               weighting="elbo")
  with pytest.raises(ValueError, match="valid losses"):
    losses.get_loss_fn("dsm2")
  with pytest.raises(ValueError, match="valid options"):
    losses.get_loss_fn("edm", P_mean=-1.2)
