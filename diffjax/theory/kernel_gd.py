"""Gradient descent on the squared loss in function space: the kernel regime of a network.

Full-batch GD with step size eta on  L(f) = (1/2n) sum_i ||f(u_i) - y_i||^2  moves a model that
is linear in its parameters, f(u) = f_0(u) + J(u) (theta - theta_0), by

    F_{s+1} = F_s - (eta / n) K (F_s - Y),       K = J J^T the (n d, n d) NTK of the data,

so the residual on the data is (I - eta K / n)^s (F_0 - Y) and, at any other input,

    f_s(u*) = f_0(u*) - K(u*, X) K^{-1} (I - (I - eta K / n)^s) (F_0 - Y)

(the kernel-regression form of Han, Razaviyayn & Xu 2024, §3, and of Raskutti, Wainwright &
Yu 2014, eq. 5). `kernel_gd_predictor` evaluates it for many s at once through one
eigendecomposition K = Q diag(lambda) Q^T, with (1 - (1 - eta lambda / n)^s) / lambda -> s eta / n
at lambda = 0, so a singular K is fine.
"""
import jax
import jax.numpy as jnp

from diffjax.theory.ntk import kernel_matrix


def regression_loss(pred, y):
  """(1/2n) sum_i ||pred_i - y_i||^2, the paper's empirical loss."""
  return 0.5 * jnp.mean(jnp.sum((pred - y)**2, axis=-1))


def max_stable_lr(kernel, num_examples):
  """Largest step size for which GD on the kernel's quadratic converges: 2 n / lambda_max."""
  lam_max = jnp.linalg.eigvalsh(kernel_matrix(kernel, out_dim=1 if kernel.ndim == 2 else None))[-1]
  return 2.0 * num_examples / lam_max


def _spectral_filter(lam, steps, lr, n):
  """(1 - (1 - lr lam / n)^s) / lam for each s in `steps` (S,) and eigenvalue lam (N,): (S, N)."""
  lam = jnp.maximum(lam, 0.0)
  contraction = jnp.log1p(-lr * lam / n)  # log(1 - lr lam / n); NaN beyond the stable step
  s = jnp.asarray(steps, lam.dtype)[:, None]
  safe = jnp.where(lam > 0, lam, 1.0)
  filt = -jnp.expm1(s * contraction) / safe
  return jnp.where(lam > 0, filt, s * lr / n)


def kernel_gd_predictor(kernel_train, kernel_test_train, y, *, lr, steps, f0_train=None,
                        f0_test=None):
  """Predictions of kernel gradient descent after each number of steps in `steps`.

  Args:
    kernel_train: K(X, X), block (n, n, d, d) or scalar (n, n) (meaning K (x) I_d).
    kernel_test_train: K(X*, X), (n*, n, d, d) or (n*, n), of the same kind.
    y: (n, d) labels.
    lr: step size eta of GD on (1/2n) sum ||f - y||^2; stable for eta < `max_stable_lr`.
    steps: (S,) numbers of GD steps (integers >= 0).
    f0_train: (n, d) outputs at initialisation on X (default 0, the antisymmetric init).
    f0_test: (n*, d) outputs at initialisation on X* (default 0).

  Returns:
    dict with "test": (S, n*, d) and "train": (S, n, d) predictions.
  """
  n, d = y.shape
  if kernel_train.shape[:2] != (n, n):
    raise ValueError(f"kernel_train must start with (n, n) = {(n, n)}; got {kernel_train.shape}")
  if kernel_test_train.shape[1] != n or kernel_test_train.ndim != kernel_train.ndim:
    raise ValueError("kernel_test_train must be K(X*, X) of the same kind as kernel_train; "
                     f"got {kernel_test_train.shape} against {kernel_train.shape}")
  n_test = kernel_test_train.shape[0]
  f0_train = jnp.zeros_like(y) if f0_train is None else f0_train
  f0_test = jnp.zeros((n_test, d), y.dtype) if f0_test is None else f0_test
  k = kernel_matrix(kernel_train, d)
  k_star = kernel_matrix(kernel_test_train, d)
  lam, q = jnp.linalg.eigh(k)
  r0 = q.T @ (f0_train - y).reshape(-1)  # initial residual in the eigenbasis
  filt = _spectral_filter(lam, steps, lr, n)  # (S, N)
  coef = (filt * r0[None]) @ q.T  # (S, N): K^{-1}(I - (I - eta K/n)^s) r0
  test = f0_test.reshape(-1)[None] - coef @ k_star.T
  decay = 1.0 - filt * jnp.maximum(lam, 0.0)[None]  # (1 - eta lam / n)^s
  train = y.reshape(-1)[None] + (decay * r0[None]) @ q.T
  steps_shape = jnp.shape(steps)
  return {"test": test.reshape(steps_shape + (n_test, d)),
          "train": train.reshape(steps_shape + (n, d))}


def linearize(apply_fn, params0):
  """The first-order Taylor model of `apply_fn` around `params0`, as `apply(params, x)`.

  f_lin(params, x) = f(params0, x) + J(params0, x) (params - params0), by one jvp. Its GD
  trajectory is exactly the kernel GD of `kernel_gd_predictor` with the empirical NTK at
  `params0`.
  """
  def apply(params, x):
    delta = jax.tree_util.tree_map(jnp.subtract, params, params0)
    out, tangent_out = jax.jvp(lambda p: apply_fn(p, x), (params0,), (delta,))
    return out + tangent_out

  return apply
