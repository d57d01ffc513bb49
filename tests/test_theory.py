"""diffjax.theory: NTK tools, kernel GD, the DSM-as-regression identity, early stopping.

Oracles: the closed-form two-layer ReLU NTK against autodiff (float64), kernel GD in closed
form against linearised GD run step by step, the arc-cosine limit against a Monte-Carlo width
with its own standard error, and a stopping rule derived by hand for an identity kernel.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffjax as dj
from diffjax import theory as th
from diffjax.losses.score_matching import score_matching_loss


def _mixture():
  means = jnp.array([[2.0, 0.0], [-2.0, 0.0], [0.0, 2.0], [0.0, -2.0]])
  return dj.data.toy.GaussianMixture(jnp.ones(4), means, 0.25)


def _score_problem(seed, n, process):
  """n DSM regression triples of the 4-component mixture, with network inputs u = (x_t, t, 1)."""
  key_x, key_t = jax.random.split(jax.random.PRNGKey(seed))
  data = th.regression_data(key_t, _mixture().sample(key_x, n), process)
  return data, th.score_features(data.x_t, data.t)


def _mlp(params, x):
  """A generic three-leaf model, to check the NTK tools on something that is not the paper's net."""
  return jnp.tanh(x @ params["w1"] + params["b1"]) @ params["w2"]


def _mlp_params(key, k=3, h=16, d=2):
  k1, k2, k3 = jax.random.split(key, 3)
  return {"w1": jax.random.normal(k1, (k, h)), "b1": jax.random.normal(k2, (h,)),
          "w2": jax.random.normal(k3, (h, d)) / 4}


# --- NTK ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("width,in_dim,out_dim", [(64, 4, 2), (128, 3, 3), (33, 5, 1)])
def test_analytic_two_layer_ntk_equals_autodiff(x64, width, in_dim, out_dim):
  model, w0 = th.init_two_layer_relu(jax.random.PRNGKey(width), in_dim, out_dim, width,
                                     antisymmetric=width % 2 == 0, dtype=jnp.float64)
  u1 = jax.random.normal(jax.random.PRNGKey(1), (9, in_dim))
  u2 = jax.random.normal(jax.random.PRNGKey(2), (6, in_dim))
  for a, b in [(u1, None), (u1, u2)]:
    autodiff = th.ntk_by_jacobian(model, w0, a, b)
    analytic = th.two_layer_relu_ntk(w0, model.a, a, b)
    assert autodiff.shape == (9, 9 if b is None else 6, out_dim, out_dim)
    np.testing.assert_allclose(analytic, autodiff, rtol=0, atol=1e-10)


def test_ntk_vector_products_equal_jacobian_contraction(x64):
  params = _mlp_params(jax.random.PRNGKey(0))
  x1 = jax.random.normal(jax.random.PRNGKey(1), (7, 3))
  x2 = jax.random.normal(jax.random.PRNGKey(2), (5, 3))
  v = jax.random.normal(jax.random.PRNGKey(3), (5, 2))
  kernel = th.ntk_by_jacobian(_mlp, params, x1, x2)
  expected = jnp.einsum("ijab,jb->ia", kernel, v)
  np.testing.assert_allclose(th.ntk_vector_product(_mlp, params, x1, x2, v), expected, atol=1e-12)
  np.testing.assert_allclose(th.ntk_by_products(_mlp, params, x1, x2, 2), kernel, atol=1e-12)
  # the kernel is symmetric: Theta(x1, x2)_{ab} = Theta(x2, x1)_{ba}
  np.testing.assert_allclose(th.ntk_by_jacobian(_mlp, params, x2, x1), kernel.transpose(1, 0, 3, 2),
                             atol=1e-12)


def test_wide_empirical_ntk_matches_the_arccosine_limit_within_its_standard_error(x64):
  half = 100_000
  model, w0 = th.init_two_layer_relu(jax.random.PRNGKey(0), 3, 2, 2 * half, dtype=jnp.float64)
  u = jax.random.normal(jax.random.PRNGKey(1), (6, 3))
  empirical = np.asarray(th.two_layer_relu_ntk(w0, model.a, u))
  limit = np.asarray(th.relu_ntk_infinite_width(u))
  # Each entry is a mean over `half` independent neurons: (u.u') 1[.]1[.] for a = b, (u.u') (+-1) 1[.]1[.]
  # for a != b; p = P(both active) = limit / (u.u').
  gram = np.asarray(u @ u.T)
  p = limit / gram
  sd_diag = np.abs(gram) * np.sqrt(p * (1 - p) / half)
  sd_off = np.abs(gram) * np.sqrt(p / half)
  for a in range(2):
    assert np.all(np.abs(empirical[:, :, a, a] - limit) <= 5 * sd_diag + 1e-12)
    assert np.all(np.abs(empirical[:, :, a, 1 - a]) <= 5 * sd_off)
  # on the diagonal both units are active together half the time: K(u, u) = |u|^2 / 2
  np.testing.assert_allclose(np.diag(limit), np.sum(np.asarray(u)**2, -1) / 2, rtol=1e-12)


def test_kernel_matrix_flattening_and_errors(x64):
  k = jax.random.normal(jax.random.PRNGKey(0), (3, 4))
  np.testing.assert_array_equal(th.kernel_matrix(k, out_dim=2)[::2, ::2], k)
  block = jnp.einsum("ij,ab->ijab", k, jnp.eye(2))
  np.testing.assert_array_equal(th.kernel_matrix(block), th.kernel_matrix(k, out_dim=2))
  with pytest.raises(ValueError, match="out_dim"):
    th.kernel_matrix(k)
  with pytest.raises(ValueError, match="kernel must be"):
    th.kernel_matrix(jnp.ones((2, 2, 2)))


# --- kernel gradient descent -------------------------------------------------------------------
@pytest.mark.parametrize("antisymmetric", [True, False])
def test_kernel_predictor_equals_linearised_gd_step_by_step(x64, antisymmetric):
  process = th.ou_process(0.05, 1.0)
  data, u = _score_problem(0, 24, process)
  test, u_test = _score_problem(1, 10, process)
  model, w0 = th.init_two_layer_relu(jax.random.PRNGKey(2), 4, 2, 64, antisymmetric=antisymmetric,
                                     dtype=jnp.float64)
  linear = th.linearize(model, w0)
  lr, checkpoints = 0.7, [0, 1, 2, 5, 17, 60]
  grad = jax.jit(jax.grad(lambda w: th.regression_loss(linear(w, u), data.x0)))
  w, by_steps = w0, []
  for step in range(checkpoints[-1] + 1):
    if step in checkpoints:
      by_steps.append((linear(w, u_test), linear(w, u)))
    w = w - lr * grad(w)
  kernel = th.two_layer_relu_ntk(w0, model.a, u)
  closed = th.kernel_gd_predictor(kernel, th.two_layer_relu_ntk(w0, model.a, u_test, u), data.x0,
                                  lr=lr, steps=np.array(checkpoints), f0_train=model(w0, u),
                                  f0_test=model(w0, u_test))
  for i, (pred_test, pred_train) in enumerate(by_steps):
    np.testing.assert_allclose(closed["test"][i], pred_test, rtol=0, atol=1e-10)
    np.testing.assert_allclose(closed["train"][i], pred_train, rtol=0, atol=1e-10)
  assert not np.allclose(closed["test"][-1], closed["test"][1])  # the predictions did move


def test_scalar_kernel_predictor_equals_function_space_iteration_and_handles_zero_modes(x64):
  x = jnp.linspace(-1, 1, 12)[:, None]
  features = jnp.concatenate([x, x**2], -1)  # rank 2: ten zero eigenvalues
  kernel = features @ features.T
  y = jnp.stack([jnp.sin(3 * x[:, 0]), jnp.cos(2 * x[:, 0])], -1)
  x_test = jnp.array([[0.3], [-0.7]])
  k_test = jnp.concatenate([x_test, x_test**2], -1) @ features.T
  n, lr = 12, 1.5
  f, f_test, expected = jnp.zeros_like(y), jnp.zeros((2, 2)), {}
  for step in range(41):
    expected[step] = f_test
    residual = f - y
    f, f_test = f - lr / n * kernel @ residual, f_test - lr / n * k_test @ residual
  closed = th.kernel_gd_predictor(kernel, k_test, y, lr=lr, steps=np.array([0, 3, 40]))
  for i, step in enumerate([0, 3, 40]):
    np.testing.assert_allclose(closed["test"][i], expected[step], atol=1e-12)
  assert float(th.max_stable_lr(kernel, n)) == pytest.approx(2 * n / np.linalg.eigvalsh(kernel)[-1])


def test_kernel_predictor_rejects_mismatched_shapes(x64):
  with pytest.raises(ValueError, match="kernel_train"):
    th.kernel_gd_predictor(jnp.eye(3), jnp.ones((2, 3)), jnp.ones((4, 1)), lr=0.1, steps=[1])
  with pytest.raises(ValueError, match="kernel_test_train"):
    th.kernel_gd_predictor(jnp.eye(3), jnp.ones((2, 4)), jnp.ones((3, 1)), lr=0.1, steps=[1])


def test_network_kernel_gap_shrinks_like_one_over_width(x64):
  process = th.ou_process(0.05, 1.0)
  data, u = _score_problem(0, 32, process)
  _, u_test = _score_problem(1, 128, process)
  widths, steps, gaps = [64, 256, 1024, 4096], 100, []
  for width in widths:
    per_seed = []
    for seed in range(3):
      model, w0 = th.init_two_layer_relu(jax.random.PRNGKey(10 + seed), 4, 2, width, dtype=jnp.float64)
      net = th.train_by_gd(model, w0, u, data.x0, lr=0.5, checkpoints=[steps], evaluate={"test": u_test})
      kernel = th.kernel_gd_predictor(th.two_layer_relu_ntk(w0, model.a, u),
                                      th.two_layer_relu_ntk(w0, model.a, u_test, u), data.x0,
                                      lr=0.5, steps=np.array([steps]))
      per_seed.append(np.mean(np.sum((net["predictions"]["test"][-1] - kernel["test"][-1])**2, -1)))
    gaps.append(np.mean(per_seed))
  assert np.all(np.diff(gaps) < 0), gaps
  slope = np.polyfit(np.log(widths), np.log(gaps), 1)[0]
  assert -1.5 < slope < -0.7, (slope, gaps)


# --- DSM as regression -------------------------------------------------------------------------
def test_weighted_dsm_is_the_regression_loss_example_by_example(x64):
  process = th.ou_process(0.01, 1.0)
  x0 = _mixture().sample(jax.random.PRNGKey(0), 64)
  key = jax.random.PRNGKey(1)
  f = lambda x, t: 0.3 * x + jnp.sin(t)[:, None]  # any X_0-regressor
  _, aux = score_matching_loss(f, x0, key, process=process, prediction="x0", weighting="x0",
                               reduce="sum")
  data = th.regression_data(key, x0, process)
  np.testing.assert_array_equal(aux["t"], data.t)
  np.testing.assert_allclose(aux["per_example"], jnp.sum((f(data.x_t, data.t) - x0)**2, -1), rtol=1e-12)
  # and in score form: ||s_f - grad log q(x_t|x_0)||^2 sigma^4 / alpha^2 = ||f - x_0||^2
  s = th.parametric_score(f, process)(data.x_t, data.t)
  target = -data.noise / process.sigma(data.t)[:, None]
  np.testing.assert_allclose(jnp.sum((s - target)**2, -1) / th.score_error_weight(data.t, process),
                             jnp.sum((f(data.x_t, data.t) - x0)**2, -1), rtol=1e-10)


def test_parametric_score_of_the_posterior_mean_is_the_true_score(x64):
  process = th.ou_process(0.05, 1.0)
  assert float(process.alpha(0.7)) == pytest.approx(math.exp(-0.7), rel=1e-14)
  assert float(process.sigma(0.7)**2) == pytest.approx(1 - math.exp(-1.4), rel=1e-14)
  gm = _mixture()
  data, _ = _score_problem(3, 50, process)
  score = th.parametric_score(lambda x, t: gm.denoiser(x, t, process), process)
  np.testing.assert_allclose(score(data.x_t, data.t), gm.score(data.x_t, data.t, process), atol=1e-12)
  # label noise: per-coordinate variance of X_0 - E[X_0|X_t] is below the data's own variance
  var = float(th.label_noise_variance(gm, data, process))
  assert 0 < var < float(jnp.mean(jnp.var(data.x0, 0)))


def test_posterior_mean_matches_monte_carlo(x64):
  """f*(t, x) = E[X_0 | X_t = x]: self-normalised importance weights over prior draws."""
  process = th.ou_process(0.05, 1.0)
  gm = _mixture()
  x0 = gm.sample(jax.random.PRNGKey(0), 400_000)
  x, t = jnp.array([[0.5, -0.3], [1.5, 1.0]]), jnp.array([0.3, 0.8])
  alpha, sigma = process.alpha(t), process.sigma(t)
  logw = -jnp.sum((x[:, None] - alpha[:, None, None] * x0[None])**2, -1) / (2 * sigma[:, None]**2)
  w = jax.nn.softmax(logw, axis=-1)
  mc = jnp.einsum("bn,nd->bd", w, x0)
  ess = 1.0 / jnp.sum(w**2, -1)
  spread = jnp.sqrt(jnp.einsum("bn,bnd->bd", w, (x0[None] - mc[:, None])**2))
  assert np.all(np.abs(gm.denoiser(x, t, process) - mc) < 5 * spread / jnp.sqrt(ess)[:, None])


def test_ou_process_and_width_errors():
  with pytest.raises(ValueError, match="t0"):
    th.ou_process(0.0, 1.0)
  with pytest.raises(ValueError, match="width"):
    th.init_two_layer_relu(jax.random.PRNGKey(0), 3, 2, 7)
  with pytest.raises(ValueError, match="beta_min"):
    dj.processes.VP(beta_min=3.0, beta_max=2.0)


# --- early stopping ----------------------------------------------------------------------------
def test_kernel_stopping_rule_on_an_identity_kernel_matches_the_hand_derivation():
  # K = I: the eigenvalues of K / n are all 1 / n, so R(eps) = min(1 / sqrt(n), eps). While
  # eta_t < n, R(1 / sqrt(eta_t)) = 1 / sqrt(n) and the rule fires once
  # 1 / sqrt(n) > 1 / (2 e sigma eta_t), i.e. eta_t > sqrt(n) / (2 e sigma).
  n, sigma, lr = 50, 2.0, 0.01
  step, info = th.kernel_stopping_step(np.eye(n), lr=lr, noise_std=sigma, max_steps=1000)
  first = math.floor(math.sqrt(n) / (2 * math.e * sigma) / lr) + 1
  assert first * lr < n and info["fired"] and step == first - 1 == 65
  # a rescaled kernel with the step size rescaled back is the same GD path and the same step
  again, _ = th.kernel_stopping_step(7.0 * np.eye(n), lr=lr / 7.0, noise_std=sigma, max_steps=1000)
  assert again == step
  # more noise stops earlier; a rule that never fires returns max_steps
  noisier, _ = th.kernel_stopping_step(np.eye(n), lr=lr, noise_std=4 * sigma, max_steps=1000)
  assert noisier < step
  never, info = th.kernel_stopping_step(np.eye(n), lr=lr, noise_std=sigma, max_steps=5)
  assert never == 5 and not info["fired"]
  # a radius-R ball is the unit ball with the labels, hence the noise, divided by R
  wider, _ = th.kernel_stopping_step(np.eye(n), lr=lr, noise_std=sigma, max_steps=1000, rkhs_radius=4.0)
  assert wider == th.kernel_stopping_step(np.eye(n), lr=lr, noise_std=sigma / 4, max_steps=1000)[0] > step
  with pytest.raises(ValueError, match="noise_std"):
    th.kernel_stopping_step(np.eye(3), lr=0.1, noise_std=0.0, max_steps=10)
  with pytest.raises(ValueError, match="rkhs_radius"):
    th.kernel_stopping_step(np.eye(3), lr=0.1, noise_std=1.0, max_steps=10, rkhs_radius=-1.0)


def test_empirical_kernel_complexity_limits():
  lam = np.array([1.0, 0.25, 0.0])
  np.testing.assert_allclose(th.empirical_kernel_complexity(lam, [0.0, 0.5, 10.0]),
                             [0.0, math.sqrt((0.25 + 0.25) / 3), math.sqrt(1.25 / 3)])


def test_early_stopping_beats_training_to_the_end_on_noisy_labels(x64):
  process = th.ou_process(0.05, 1.0)
  data, u = _score_problem(0, 64, process)
  val, u_val = _score_problem(1, 256, process)
  test, u_test = _score_problem(2, 512, process)
  target = _mixture().denoiser(test.x_t, test.t, process)
  model, w0 = th.init_two_layer_relu(jax.random.PRNGKey(3), 4, 2, 1024, dtype=jnp.float64)
  steps = th.gd_checkpoints(5000, 30)
  run = th.train_by_gd(model, w0, u, data.x0, lr=0.5, checkpoints=steps,
                       evaluate={"val": u_val, "test": u_test})
  error = np.mean(np.sum((run["predictions"]["test"] - target[None])**2, -1), -1)
  val_loss = np.mean(np.sum((run["predictions"]["val"] - val.x0[None])**2, -1), -1)
  oracle_step, oracle = th.best_step(steps, error)
  val_step, chosen = th.best_step(steps, val_loss)
  assert 0 < oracle_step < steps[-1]  # the test error is U-shaped: it falls, then rises
  assert error[oracle] < 0.5 * error[-1]
  assert error[chosen] < 0.7 * error[-1]
  assert run["train_loss"][-1] < run["train_loss"][oracle]  # while the training loss keeps falling


# --- the experiment config ---------------------------------------------------------------------
def test_score_estimation_config_and_options():
  import os
  from diffjax.configuration import load_config_file
  path = os.path.join(os.path.dirname(__file__), "..", "configs", "score_estimation", "gmm2d.py")
  full, tiny = load_config_file(path), load_config_file(path, "tiny")
  assert full.curve.width == 16384 and full.sample_size.seeds == 5 and len(full.sample_size.ns) == 5
  assert tiny.curve.width < full.curve.width and tiny.sample_size.max_steps < full.sample_size.max_steps
  for config in (full, tiny):
    assert set(config.width.gap_steps) <= set(range(config.width.max_steps + 1))
    assert all(m % 2 == 0 for m in config.width.widths)  # antisymmetric pairs
    assert 1.0 in config.stopping.radius_grid
  with pytest.raises(ValueError, match="only option is 'tiny'"):
    load_config_file(path, "huge")
