"""Models by name: `create(name, *, rngs, **overrides)`, `register`, `count_params`, `split_apply`,
`split_train_apply` (dropout active, pure in an explicit key)."""
import inspect

import jax
from flax import nnx

_MODELS = {}


def register(name, constructor, **defaults):
  """Registers `constructor(**defaults, **overrides, rngs=...)` under `name`."""
  if name in _MODELS:
    raise ValueError(f"model {name!r} is already registered")
  _MODELS[name] = (constructor, defaults)
  return constructor


def list_models():
  return sorted(_MODELS)


def _accepted(constructor):
  params = inspect.signature(constructor.__init__).parameters
  return sorted(n for n, p in params.items() if n not in ("self", "rngs") and p.kind != p.VAR_KEYWORD)


def create(name, *, rngs, **overrides):
  """Builds the registered model `name` with keyword overrides of its defaults.

  Raises:
    ValueError: unknown name (lists the valid names) or unknown override (lists the valid keys).
  """
  if name not in _MODELS:
    raise ValueError(f"unknown model {name!r}; valid models: {list_models()}")
  constructor, defaults = _MODELS[name]
  valid = _accepted(constructor)
  unknown = sorted(set(overrides) - set(valid))
  if unknown:
    raise ValueError(f"unknown option(s) {unknown} for model {name!r}; valid options: {valid}")
  return constructor(**{**defaults, **overrides}, rngs=rngs)


def count_params(model):
  """Number of scalars in the model's `nnx.Param`s."""
  return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def dropout_rate(model):
  """The largest `nnx.Dropout` rate in the model (0.0 if it has none)."""
  rates = [m.rate for _, m in nnx.iter_graph(model) if isinstance(m, nnx.Dropout)]
  return max(rates, default=0.0)


def split_apply(model):
  """Splits an NNX model into a pure `apply_fn(params, x, t, cond=None, **model_kwargs)` and its `params`.

  `model_kwargs` go to the module's call (e.g. EDM networks' `augment_labels`).

  The non-parameter state (fixed Fourier frequencies, ...) is closed over. The model is put in
  evaluation mode first, so dropout is off in `apply_fn` (DESIGN principle 5: models enter the
  numerical core as pure functions). `split_train_apply` is the training-mode counterpart.

  Returns:
    (apply_fn, params) with params an `nnx.State` of the model's `nnx.Param`s.
  """
  model.eval()
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  def apply_fn(params, x, t, cond=None, **model_kwargs):
    return nnx.merge(graphdef, params, rest)(x, t, cond, **model_kwargs)

  return apply_fn, params


def split_train_apply(model):
  """Like `split_apply`, in training mode: `apply_fn(params, x, t, cond=None, *, key)`.

  Dropout is active and its masks are drawn from `key`: the i-th `nnx.Dropout` of the model gets a
  fresh stream seeded with `fold_in(key, i)` (the model's own, stateful streams are not touched), so
  the function stays pure: the same key gives the same masks. The model itself is left in
  evaluation mode.

  Returns:
    (apply_fn, params), params as `split_apply`'s.
  """
  model.eval()
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  def apply_fn(params, x, t, cond=None, *, key, **model_kwargs):
    module = nnx.merge(graphdef, params, rest)
    train_with_dropout_key(module, key)
    return module(x, t, cond, **model_kwargs)

  return apply_fn, params


def train_with_dropout_key(module, key):
  """Puts `module` in training mode with its dropout masks drawn from `key`: the i-th `nnx.Dropout`
  gets a fresh stream seeded with `fold_in(key, i)`, so a pure function built around the module
  gives the same masks for the same key."""
  module.train()
  dropouts = [m for _, m in nnx.iter_graph(module) if isinstance(m, nnx.Dropout)]
  for i, layer in enumerate(dropouts):
    layer.rngs = nnx.RngStream(jax.random.fold_in(key, i), tag="dropout")


def split_features(model):
  """`features_fn(params, x, t, cond=None)`: the model's `features` method as a pure function of the
  same `params` as `split_apply` (e.g. `MLP.features`, the activations a discriminator head reads).

  Raises:
    ValueError: the model has no `features` method.
  """
  if not callable(getattr(model, "features", None)):
    raise ValueError(f"{type(model).__name__} has no `features` method: a discriminator head on its features "
                     "needs one (the MLP has it)")
  model.eval()
  graphdef, _, rest = nnx.split(model, nnx.Param, ...)

  def features_fn(params, x, t, cond=None):
    return nnx.merge(graphdef, params, rest).features(x, t, cond)

  return features_fn
