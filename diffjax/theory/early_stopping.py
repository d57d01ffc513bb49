"""When to stop gradient descent on noisy labels.

`kernel_stopping_step` is the data-dependent rule of Raskutti, Wainwright & Yu (2014, JMLR 15,
"Early stopping and non-parametric regression: an optimal data-dependent stopping rule", eq. 6),
which Han, Razaviyayn & Xu (2024, Assumption 3.11) extend to the vector-valued, unbounded-input
score problem. Their exact statement could not be confirmed, so diffjax implements the scalar
rule of Raskutti et al. applied to the d-output kernel, which is the closest rule stated purely
in terms of the empirical kernel: with lambda_i the eigenvalues of the (n d, n d) kernel matrix
divided by n (kernel normalised so that max_i K(u_i, u_i) = 1, step size rescaled to keep the
same GD path), the empirical local Rademacher complexity is

    R(eps) = sqrt( (1 / (n d)) sum_i min(lambda_i, eps^2) ),

and with eta_t = t * lr the accumulated step size, GD stops at

    T_hat = min{ t : R(1 / sqrt(eta_t)) > 1 / (2 e sigma eta_t) } - 1,

sigma the label-noise level (per coordinate). For K = k (x) I_d this is the scalar rule on k.
The rule is stated for a regression function in the unit ball of the (normalised) RKHS. For a
ball of radius R, GD being linear in the labels, dividing the labels by R gives the same
stopping time with noise sigma / R: `rkhs_radius=R` applies the rule that way. R is rarely
known, which is why the experiments also report the held-out rule (`best_step` on a validation
loss) and the oracle (`best_step` on the true error).
"""
import math

import numpy as np

from diffjax.theory.ntk import kernel_matrix


def empirical_kernel_complexity(eigenvalues, eps):
  """R(eps) = sqrt(mean_i min(lambda_i, eps^2)) for eigenvalues (N,) of K / n and eps (S,)."""
  eps2 = np.asarray(eps, np.float64)[:, None]**2
  return np.sqrt(np.mean(np.minimum(np.maximum(eigenvalues, 0.0)[None], eps2), axis=-1))


def kernel_stopping_step(kernel, *, lr, noise_std, max_steps, rkhs_radius=1.0):
  """Raskutti-Wainwright-Yu stopping step for GD with step size `lr` on this kernel.

  Args:
    kernel: K(X, X), block (n, n, d, d) or scalar (n, n).
    lr: the GD step size on (1/2n) sum ||f - y||^2.
    noise_std: sigma, the per-coordinate standard deviation of the label noise.
    max_steps: returned if the rule has not fired by then.
    rkhs_radius: R, the assumed RKHS norm bound of the regression function (the rule of
      Raskutti et al. is R = 1).

  Returns:
    (step, info) with info = {"normalisation": max_i K_ii, "fired": bool}.
  """
  if noise_std <= 0:
    raise ValueError(f"kernel_stopping_step: noise_std must be positive; got {noise_std}")
  if rkhs_radius <= 0:
    raise ValueError(f"kernel_stopping_step: rkhs_radius must be positive; got {rkhs_radius}")
  noise_std = noise_std / rkhs_radius
  n = kernel.shape[0]
  k = np.asarray(kernel if kernel.ndim == 2 else kernel_matrix(kernel), np.float64)
  scale = float(np.max(np.diag(k)))
  eigenvalues = np.linalg.eigvalsh(k / scale) / n
  for start in range(1, max_steps + 1, 1024):
    steps = np.arange(start, min(start + 1024, max_steps + 1))
    eta = steps * lr * scale  # the same GD path: lr K = (lr scale) (K / scale)
    fired = empirical_kernel_complexity(eigenvalues, 1.0 / np.sqrt(eta)) > 1.0 / (2 * math.e * noise_std * eta)
    if fired.any():
      return int(steps[np.argmax(fired)] - 1), {"normalisation": scale, "fired": True}
  return int(max_steps), {"normalisation": scale, "fired": False}


def best_step(steps, losses):
  """The checkpoint with the smallest loss: the held-out rule on a validation loss, the
  oracle on the true error. Returns (step, index)."""
  index = int(np.argmin(np.asarray(losses)))
  return int(np.asarray(steps)[index]), index
