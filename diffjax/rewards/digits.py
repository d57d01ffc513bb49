"""Rewards on 8x8 digits (NHWC, values in [-1, 1]; `diffjax.data.digits.load_digits`).

Every reward is a pure, jittable function ``reward(x, cond=None) -> (B,)`` (higher is better).

* `classifier_log_prob(classifier)`: log p(class = cond | x) under a small trained classifier
  (`diffjax.metrics.digits_classifier.train_digits_classifier`): the "prompt alignment" reward
  of the small-scale protocol (preference notes §8.2). `cond` is the prompted class label.
* `stroke_mass(target=None)`: the mean ink (x + 1) / 2 in [0, 1], or, with a target,
  -|mean ink - target| ("draw with this much ink"). A reward about *style*, not class, so it
  disagrees with the classifier, as the n = 5 different reward models of RankDPO's Syn-Pic do.
* `smoothness()`: minus the anisotropic total variation (mean absolute difference of vertical
  neighbours plus that of horizontal neighbours); 0 for a constant image, -4 for a +-1
  checkerboard. Prefers clean strokes over speckle noise.
"""
import jax
import jax.numpy as jnp


def _logits_fn(classifier):
  """A pure logits function from a `DigitsClassifier` (graphdef + params) or any callable."""
  if hasattr(classifier, "graphdef") and hasattr(classifier, "params"):
    from flax import nnx
    graphdef, params = classifier.graphdef, classifier.params
    return lambda x: nnx.merge(graphdef, params)(x)
  if hasattr(classifier, "logits"):
    return classifier.logits
  if callable(classifier):
    return classifier
  raise ValueError("classifier_log_prob: classifier must be a DigitsClassifier, an object with "
                   f".logits(x), or a callable x -> logits; got {type(classifier)}")


def classifier_log_prob(classifier, label=None):
  """log softmax(classifier(x))[cond]: the log-probability of the prompted class.

  Args:
    classifier: a `DigitsClassifier` (its network is merged from graphdef/params inside the
      reward, so the reward is jittable), an object with `.logits(x)`, or a callable x -> logits.
    label: a fixed class to reward; None (default) reads the class from `cond` (B,) per example.

  Returns:
    reward(x, cond=None) -> (B,) float32, <= 0.
  """
  logits_fn = _logits_fn(classifier)

  def reward(x, cond=None):
    x = jnp.asarray(x, jnp.float32)
    if label is not None:
      y = jnp.full(x.shape[:1], int(label), jnp.int32)
    elif cond is None:
      raise ValueError("classifier_log_prob: cond (the prompted class labels, shape (B,)) is required "
                       "when no fixed label is given")
    else:
      y = jnp.broadcast_to(jnp.asarray(cond, jnp.int32), x.shape[:1])
    logp = jax.nn.log_softmax(logits_fn(x).astype(jnp.float32), -1)
    return jnp.take_along_axis(logp, y[:, None], 1)[:, 0]

  return reward


def _ink(x):
  x = jnp.asarray(x)
  return jnp.mean((x.reshape(x.shape[0], -1) + 1) / 2, -1)


def stroke_mass(target=None):
  """Mean ink m(x) = mean((x + 1) / 2) in [0, 1] (all -1 -> 0, all +1 -> 1).

  Args:
    target: None to reward m(x) itself (more ink is better); a float to reward -|m(x) - target|;
      or a (num_classes,) table of per-class targets selected by `cond` (e.g. each digit's mean
      ink in the data).
  """
  tgt = None if target is None else jnp.asarray(target, jnp.float32)
  if tgt is not None and tgt.ndim > 1:
    raise ValueError(f"stroke_mass: target must be a scalar or a (num_classes,) table, got shape {tgt.shape}")

  def reward(x, cond=None):
    m = _ink(x)
    if tgt is None:
      return m
    if tgt.ndim == 0:
      return -jnp.abs(m - tgt)
    if cond is None:
      raise ValueError("stroke_mass: a per-class target table needs cond (class labels, shape (B,))")
    return -jnp.abs(m - tgt[jnp.asarray(cond, jnp.int32)])

  return reward


def smoothness():
  """-(mean |x[i+1, j] - x[i, j]| + mean |x[i, j+1] - x[i, j]|) over (H, W, C) of NHWC images."""

  def reward(x, cond=None):
    x = jnp.asarray(x)
    if x.ndim == 3:
      x = x[..., None]
    if x.ndim != 4:
      raise ValueError(f"smoothness: x must be (B, H, W, C) or (B, H, W), got shape {x.shape}")
    tv_h = jnp.mean(jnp.abs(x[:, 1:] - x[:, :-1]), (1, 2, 3))
    tv_w = jnp.mean(jnp.abs(x[:, :, 1:] - x[:, :, :-1]), (1, 2, 3))
    return -(tv_h + tv_w)

  return reward
