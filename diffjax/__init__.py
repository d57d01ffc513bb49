"""diffjax: diffusion models in JAX.

Submodules are imported on first attribute access (``dj.processes``, ``dj.samplers`` ...), so
``import diffjax as dj`` stays cheap and optional dependencies (tfds, grain) load only when used.
"""
import importlib

__version__ = "0.1.0"

_SUBMODULES = (
    "processes", "parametrization", "timesteps", "samplers", "losses", "models", "data",
    "metrics", "training", "utils", "configuration", "finetune", "distill", "theory", "mlkd",
)


def __getattr__(name):
  if name in _SUBMODULES:
    module = importlib.import_module(f"diffjax.{name}")
    globals()[name] = module
    return module
  raise AttributeError(f"module 'diffjax' has no attribute {name!r}")


def __dir__():
  return sorted(list(globals()) + list(_SUBMODULES))
