"""Models by name: `create(name, *, rngs, **overrides)`, `register`, `count_params`, `split_apply`."""
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


def split_apply(model):
  """Splits an NNX model into a pure `apply_fn(params, x, t, cond=None)` and its `params`.

  The non-parameter state (fixed Fourier frequencies, ...) is closed over. The model is put in
  evaluation mode first, so dropout is off in `apply_fn` (DESIGN principle 5: models enter the
  numerical core as pure functions).

  Returns:
    (apply_fn, params) with params an `nnx.State` of the model's `nnx.Param`s.
  """
  model.eval()
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  def apply_fn(params, x, t, cond=None):
    return nnx.merge(graphdef, params, rest)(x, t, cond)

  return apply_fn, params
