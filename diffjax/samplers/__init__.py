"""Samplers with one signature: `f(denoiser, x, ts, *, process, key=None, **options) -> x`.

Each runs as one compiled `lax.scan` over the steps of `ts` (noise to data).
"""
from diffjax.samplers.ode import euler, heun
from diffjax.samplers.sde import euler_maruyama
from diffjax.samplers.registry import get_sampler, list_samplers, sample

__all__ = ["euler", "heun", "euler_maruyama", "get_sampler", "list_samplers", "sample"]
