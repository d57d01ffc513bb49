"""Time-Shift DDIM: window 1 (or a cutoff above every time) is DDIM; the shift follows the
variance criterion of TS-DPM."""
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from diffjax import processes as P  # noqa: E402
from diffjax import timesteps  # noqa: E402
from diffjax.data import toy  # noqa: E402
from diffjax.samplers.ddim import ddim  # noqa: E402
from diffjax.samplers.time_shift import time_shift_ddim  # noqa: E402


def _setup():
  process = P.VPDiscrete.from_ddpm("linear", 1000)
  data = toy.Gaussian(jnp.zeros(16), jnp.full((16,), 0.5))
  den = lambda x, t: data.denoiser(x, t, process)
  ts = timesteps.discrete_to_continuous(timesteps.ddpm_discrete(20, 1000, "leading"), 1000)
  x = jax.random.normal(jax.random.PRNGKey(0), (8, 16))
  return process, den, ts, x


def test_window_one_and_high_cutoff_are_ddim(x64):
  process, den, ts, x = _setup()
  ref = ddim(den, x, ts, process=process)
  np.testing.assert_allclose(time_shift_ddim(den, x, ts, process=process, window=1, cutoff=0), ref, rtol=1e-12)
  np.testing.assert_allclose(time_shift_ddim(den, x, ts, process=process, window=9, cutoff=1000), ref, rtol=1e-12)


def test_shift_changes_samples_toward_matching_variance(x64):
  process, den, ts, x = _setup()
  x_noisy = x * 1.3  # a state noisier than its nominal time
  shifted = time_shift_ddim(den, x_noisy, ts[:3], process=process, window=31, cutoff=0)
  plain = ddim(den, x_noisy, ts[:3], process=process)
  assert not np.allclose(shifted, plain)
  with pytest.raises(ValueError, match="VPDiscrete"):
    time_shift_ddim(den, x, ts, process=P.VP())
