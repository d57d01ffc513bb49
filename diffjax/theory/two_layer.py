"""The network of Han, Razaviyayn & Xu (2024, §3): two-layer ReLU, output layer fixed, trained by
full-batch gradient descent on the first layer.

    f_W(u) = m^{-1/2} sum_{r=1}^m a_r relu(w_r . u),   u = (x, t, 1),  a_r in {-1, +1}^d fixed,

initialised antisymmetrically (Chizat, Oyallon & Bach 2019; Bai & Lee 2020): neurons come in
pairs (w_r, a_r), (w_r, -a_r), so f_{W_0} = 0 (to rounding) and kernel GD starts from the zero
function, while the tangent kernel at W_0 keeps its full-width value.
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from diffjax.theory.kernel_gd import regression_loss


class TwoLayerReLU(NamedTuple):
  """f_W(u) = relu(u W^T) a / sqrt(m); the fixed output layer `a` (m, d) is part of the model."""
  a: jax.Array

  @property
  def width(self):
    return self.a.shape[0]

  @property
  def out_dim(self):
    return self.a.shape[1]

  def __call__(self, w, u):
    """Network output (n, d) at inputs u (n, k) for first-layer weights w (m, k)."""
    return jax.nn.relu(u @ w.T) @ self.a / np.sqrt(self.width)


def init_two_layer_relu(key, in_dim, out_dim, width, *, antisymmetric=True, dtype=jnp.float32):
  """Draws w_r ~ N(0, I_k) and random signs a_r; returns (model, w0).

  Args:
    key: PRNG key.
    in_dim: k, the input size (d + 2 for u = (x, t, 1)).
    out_dim: d, the output size.
    width: m, the number of hidden units; even when `antisymmetric`.
    antisymmetric: pair each neuron with a copy of opposite output sign, so f_{w0} = 0.
    dtype: parameter dtype.
  """
  if width < 1 or (antisymmetric and width % 2):
    raise ValueError(f"width must be a positive{' even' if antisymmetric else ''} integer "
                     f"(antisymmetric={antisymmetric}); got {width}")
  key_w, key_a = jax.random.split(key)
  half = width // 2 if antisymmetric else width
  w = jax.random.normal(key_w, (half, in_dim), dtype)
  a = jnp.where(jax.random.bernoulli(key_a, 0.5, (half, out_dim)), 1.0, -1.0).astype(dtype)
  if antisymmetric:
    w, a = jnp.concatenate([w, w]), jnp.concatenate([a, -a])
  return TwoLayerReLU(a), w


def score_features(x, t, *, bias=True):
  """The network input u = (x, t[, 1]) for states x (n, d) and times t (n,)."""
  parts = [x, jnp.asarray(t, x.dtype)[:, None]]
  if bias:
    parts.append(jnp.ones_like(parts[1]))
  return jnp.concatenate(parts, axis=-1)


def gd_checkpoints(max_steps, num):
  """About `num` log-spaced step counts from 0 to `max_steps` inclusive, as sorted ints."""
  steps = np.unique(np.round(np.geomspace(1, max_steps, num)).astype(int))
  return np.concatenate([[0], steps])


def train_by_gd(model, w0, u, y, *, lr, checkpoints, evaluate=None, progress=False):
  """Full-batch GD on (1/2n) sum ||f_W(u_i) - y_i||^2 over W, recording each checkpoint.

  Args:
    model: a `TwoLayerReLU` (its output layer stays fixed).
    w0: (m, k) initial first layer.
    u: (n, k) training inputs; y: (n, d) labels.
    lr: step size.
    checkpoints: increasing step counts at which to record (0 records the initialisation).
    evaluate: dict name -> (n_name, k) inputs whose predictions are recorded.
    progress: show a tqdm bar over steps (rate and ETA).

  Returns:
    dict with "steps" (S,), "train_loss" (S,), "movement" (S,) = ||W - W0||_F / ||W0||_F and
    "predictions": name -> (S, n_name, d), and "final_w".
  """
  checkpoints = np.asarray(checkpoints, int)
  if checkpoints.ndim != 1 or np.any(np.diff(checkpoints) <= 0) or checkpoints[0] < 0:
    raise ValueError(f"checkpoints must be increasing non-negative step counts; got {checkpoints}")
  evaluate = dict(evaluate or {})
  grad_fn = jax.grad(lambda w: regression_loss(model(w, u), y))

  @jax.jit
  def advance(w, num_steps):
    return jax.lax.fori_loop(0, num_steps, lambda _, w: w - lr * grad_fn(w), w)

  @jax.jit
  def record(w):
    preds = {name: model(w, inputs) for name, inputs in evaluate.items()}
    movement = jnp.linalg.norm(w - w0) / jnp.linalg.norm(w0)
    return regression_loss(model(w, u), y), movement, preds

  w, done, records = w0, 0, []
  with tqdm(total=int(checkpoints[-1]), desc="gd", unit="step", disable=not progress) as bar:
    for step in checkpoints:
      w = advance(w, int(step - done))
      bar.update(int(step - done))
      done = int(step)
      records.append(jax.device_get(record(w)))
      if not np.isfinite(records[-1][0]):
        raise FloatingPointError(f"train_by_gd: the training loss is not finite at step {step} "
                                 f"(lr={lr}); lower the step size")
  return {
      "steps": checkpoints,
      "train_loss": np.array([r[0] for r in records]),
      "movement": np.array([r[1] for r in records]),
      "predictions": {name: np.stack([r[2][name] for r in records]) for name in evaluate},
      "final_w": w,
  }
