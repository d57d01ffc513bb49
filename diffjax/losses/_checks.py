"""Argument checks shared by the loss modules: errors name the function, the argument and what is allowed."""
import jax
import jax.numpy as jnp


def concrete_scalar(value):
  """float(value) when it is a concrete scalar, None when it is traced."""
  try:
    return float(value)
  except (TypeError, jax.errors.ConcretizationTypeError, jax.errors.TracerIntegerConversionError):
    return None


def check_choice(fn, name, value, choices):
  if value not in choices:
    raise ValueError(f"{fn}: unknown {name} {value!r}; valid choices: {tuple(choices)}")


def check_same_shape(fn, **arrays):
  shapes = {k: jnp.shape(v) for k, v in arrays.items()}
  if len(set(shapes.values())) > 1:
    desc = ", ".join(f"{k} {s}" for k, s in shapes.items())
    raise ValueError(f"{fn}: shape mismatch: {desc}; these arguments must have the same shape")


def stop_gradient_tree(tree):
  return jax.tree_util.tree_map(jax.lax.stop_gradient, tree)
