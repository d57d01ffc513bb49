"""Samplers by name, so configs choose them with a string and keyword options."""
import functools
import inspect

from diffjax.samplers.dc_solver import dc_solver
from diffjax.samplers.ddim import ddim
from diffjax.samplers.dpm_solver import dpm_solver
from diffjax.samplers.dpm_solver_v3 import dpm_solver_v3
from diffjax.samplers.ode import euler, heun
from diffjax.samplers.pf_ode import pf_ode
from diffjax.samplers.score_sde import ancestral, langevin, pc, reverse_diffusion
from diffjax.samplers.sde import euler_maruyama
from diffjax.samplers.time_shift import time_shift_ddim, time_shift_dpm_solver
from diffjax.samplers.unipc import unipc

_SAMPLERS = {
    "euler": euler,
    "heun": heun,
    "euler_maruyama": euler_maruyama,
    "ddim": ddim,
    "dpm_solver": dpm_solver,
    "dpm_solver_v3": dpm_solver_v3,
    "unipc": unipc,
    "pf_ode": pf_ode,
    "pc": pc,
    "reverse_diffusion": reverse_diffusion,
    "ancestral": ancestral,
    "langevin": langevin,
    "time_shift_ddim": time_shift_ddim,
    "time_shift_dpm_solver": time_shift_dpm_solver,
    "dc_solver": dc_solver,
}


def list_samplers():
  return sorted(_SAMPLERS)


def register(name, fn):
  """Adds a sampler `fn(denoiser, x, ts, *, process, key=None, **options)` under `name`."""
  _SAMPLERS[name] = fn
  return fn


def _options(fn):
  params = inspect.signature(fn).parameters
  return sorted(n for n, p in params.items() if p.kind == p.KEYWORD_ONLY and n not in ("process", "key"))


def get_sampler(name, **options):
  """Returns `sampler(denoiser, x, ts, *, process, key=None)` with `options` bound.

  Raises:
    ValueError: unknown name (lists the valid names) or unknown option (lists the valid options).
  """
  if name not in _SAMPLERS:
    raise ValueError(f"unknown sampler {name!r}; valid samplers: {list_samplers()}")
  fn = _SAMPLERS[name]
  valid = _options(fn)
  unknown = sorted(set(options) - set(valid))
  if unknown:
    raise ValueError(f"unknown option(s) {unknown} for sampler {name!r}; valid options: {valid}")
  return functools.partial(fn, **options)


def sample(name, denoiser, x, ts, *, process, key=None, **options):
  """Runs the sampler `name` (see `get_sampler`)."""
  return get_sampler(name, **options)(denoiser, x, ts, process=process, key=key)
