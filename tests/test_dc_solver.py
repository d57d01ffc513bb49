"""DC-Solver: ratios 1 are UniPC; the ratio search lowers the error to a fine reference."""
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from diffjax import processes as P  # noqa: E402
from diffjax import timesteps  # noqa: E402
from diffjax.data import toy  # noqa: E402
from diffjax.samplers.dc_solver import dc_solver, search_dc_ratios  # noqa: E402
from diffjax.samplers.ddim import ddim  # noqa: E402
from diffjax.samplers.unipc import unipc  # noqa: E402

VP = P.VP()


def _setup():
  mixture = toy.GaussianMixture(jnp.array([0.3, 0.7]), jnp.array([[1.0, 0.5], [-1.0, -0.5]]), jnp.array([0.05, 0.2]))
  den = lambda x, t: mixture.denoiser(x, t, VP)
  x = jax.random.normal(jax.random.PRNGKey(0), (10, 2))
  ts = timesteps.log_snr_uniform(6, 1.0, 1e-3, VP)
  return den, x, ts


def test_unit_ratios_are_unipc(x64):
  den, x, ts = _setup()
  for order, variant in ((2, "bh2"), (3, "bh1")):
    np.testing.assert_allclose(dc_solver(den, x, ts, process=VP, dc_ratios=jnp.ones(6), order=order, variant=variant),
                               unipc(den, x, ts, process=VP, order=order, variant=variant), rtol=1e-12, atol=1e-13)


def test_ratio_search_reduces_error(x64):
  den, x, ts = _setup()
  ratios, losses = search_dc_ratios(den, x, ts, process=VP, num_iters=40)
  assert ratios.shape == (6,) and float(ratios[0]) == 1.0 and float(ratios[1]) == 1.0
  fine = jnp.linspace(0.0, 1.0, 6 * 40 + 1)
  fine = VP.t_from_log_snr(VP.log_snr(1.0) + fine * (VP.log_snr(1e-3) - VP.log_snr(1.0)))
  ref = ddim(den, x, fine, process=VP)
  err = lambda r: float(jnp.sqrt(jnp.mean((dc_solver(den, x, ts, process=VP, dc_ratios=r,
                                                     lower_order_final=False) - ref)**2)))
  assert err(ratios) < err(jnp.ones(6))
