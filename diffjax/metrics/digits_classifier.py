"""A small digit classifier whose penultimate features define a Fréchet distance on 8x8 digits.

FID's Inception network has no meaning on 8x8 digits, so sample quality there is measured in the
feature space of a classifier trained on the digits themselves ("Fréchet classifier distance", as
FID with a domain network; Heusel et al. 2017, eq. 6), and class-conditional samples are scored by
that classifier's accuracy on their intended labels.

  clf = train_digits_classifier(jax.random.PRNGKey(0))
  feats = clf.features(images)            # (N, 64)
  acc = clf.accuracy(images, labels)
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from diffjax.data.digits import load_digits


class DigitsCNN(nnx.Module):
  """conv3x3(32)-GELU-conv3x3(64)-GELU-avgpool2-dense(64)-GELU-dense(10) on (B, 8, 8, 1) in [-1, 1]."""

  def __init__(self, *, feature_dim=64, num_classes=10, rngs):
    self.conv1 = nnx.Conv(1, 32, (3, 3), rngs=rngs)
    self.conv2 = nnx.Conv(32, 64, (3, 3), rngs=rngs)
    self.fc = nnx.Linear(4 * 4 * 64, feature_dim, rngs=rngs)
    self.head = nnx.Linear(feature_dim, num_classes, rngs=rngs)

  def features(self, x):
    h = nnx.gelu(self.conv2(nnx.gelu(self.conv1(x))))
    h = nnx.avg_pool(h, (2, 2), strides=(2, 2))
    return nnx.gelu(self.fc(h.reshape(h.shape[0], -1)))

  def __call__(self, x):
    return self.head(self.features(x))


@dataclasses.dataclass
class DigitsClassifier:
  """A trained `DigitsCNN` as pure functions, with its held-out test accuracy."""
  graphdef: object
  params: object
  test_accuracy: float

  def _model(self):
    return nnx.merge(self.graphdef, self.params)

  def features(self, x, batch_size=1024):
    x = jnp.asarray(x, jnp.float32)
    fn = jax.jit(lambda p, x: nnx.merge(self.graphdef, p).features(x))
    return jnp.concatenate([fn(self.params, x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)])

  def logits(self, x, batch_size=1024):
    x = jnp.asarray(x, jnp.float32)
    fn = jax.jit(lambda p, x: nnx.merge(self.graphdef, p)(x))
    return jnp.concatenate([fn(self.params, x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)])

  def accuracy(self, x, labels):
    return float(jnp.mean(jnp.argmax(self.logits(x), -1) == jnp.asarray(labels)))


def train_digits_classifier(key, *, steps=1500, batch_size=128, learning_rate=2e-3, noise_std=0.1):
  """Trains `DigitsCNN` on the digits train split (AdamW, light Gaussian input noise for robustness
  to samples' pixel noise) and reports accuracy on the test split.

  Returns:
    `DigitsClassifier`.
  """
  if steps < 1:
    raise ValueError(f"train_digits_classifier: steps must be >= 1, got {steps}")
  train, test = load_digits("train"), load_digits("test")
  k_init, k_train = jax.random.split(key)
  model = DigitsCNN(rngs=nnx.Rngs(int(jax.random.randint(k_init, (), 0, 2**31 - 1))))
  graphdef, params = nnx.split(model)
  opt = optax.adamw(learning_rate, weight_decay=1e-4)
  state = opt.init(params)
  x_all, y_all = jnp.asarray(train["x"]), jnp.asarray(train["label"])

  @jax.jit
  def step(params, state, key):
    k_idx, k_noise = jax.random.split(key)
    idx = jax.random.randint(k_idx, (batch_size,), 0, x_all.shape[0])
    x = x_all[idx] + noise_std * jax.random.normal(k_noise, x_all[idx].shape)

    def loss_fn(p):
      logits = nnx.merge(graphdef, p)(x)
      return optax.softmax_cross_entropy_with_integer_labels(logits, y_all[idx]).mean()

    loss, g = jax.value_and_grad(loss_fn)(params)
    updates, state = opt.update(g, state, params)
    return optax.apply_updates(params, updates), state, loss

  for i in range(steps):
    params, state, _ = step(params, state, jax.random.fold_in(k_train, i))
  clf = DigitsClassifier(graphdef, params, 0.0)
  clf.test_accuracy = clf.accuracy(test["x"], test["label"])
  return clf


def feature_statistics(features):
  """Mean and covariance (float64, unbiased) of (N, d) features."""
  f = np.asarray(features, np.float64)
  return f.mean(0), np.cov(f, rowvar=False)


class DigitsFeatures:
  """Sample quality on 8x8 digits with the library's digit classifier (trained once, `seed`):
  the Frechet distance between the samples' and the data's classifier features ("FD-digits", the
  FID recipe with this classifier in place of Inception) and the total variation between their
  predicted-class histograms. Samples are clipped to [-1, 1]; any shape reshaping to (N, 8, 8, 1).
  """

  def __init__(self, data, seed=0):
    self.clf = train_digits_classifier(jax.random.PRNGKey(seed))
    self.data_feats, self.data_hist = self._stats(data)

  def _stats(self, x):
    images = jnp.asarray(np.asarray(x).reshape(-1, 8, 8, 1))
    feats = np.asarray(self.clf.features(images), np.float64)
    classes = np.asarray(jnp.argmax(self.clf.logits(images), -1))
    return feats, np.bincount(classes, minlength=10) / len(classes)

  def __call__(self, samples):
    from diffjax.metrics import fid
    feats, hist = self._stats(np.clip(samples, -1.0, 1.0))
    return {"fd_digits": float(fid.fid_from_features(feats, self.data_feats)),
            "class_tv": float(0.5 * np.abs(hist - self.data_hist).sum())}
