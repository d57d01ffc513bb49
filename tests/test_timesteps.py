"""Time grids: endpoints, spacing and the published discrete schedules."""
import numpy as np
import pytest

from diffjax import processes as P
from diffjax import timesteps


def test_continuous_grids(x64):
  p = P.VP()
  for ts in (timesteps.time_uniform(10, 1.0, 1e-3), timesteps.time_quadratic(10, 1.0, 1e-3),
             timesteps.log_snr_uniform(10, 1.0, 1e-3, p)):
    assert ts.shape == (11,)
    np.testing.assert_allclose([ts[0], ts[-1]], [1.0, 1e-3], rtol=1e-12)
    assert np.all(np.diff(np.asarray(ts)) < 0)
  np.testing.assert_allclose(np.diff(np.asarray(timesteps.time_quadratic(10, 1.0, 1e-3))**0.5),
                             (1e-3**0.5 - 1.0) / 10, rtol=1e-10)
  lam = p.log_snr(timesteps.log_snr_uniform(10, 1.0, 1e-3, p))
  np.testing.assert_allclose(np.diff(np.asarray(lam)), float(lam[1] - lam[0]), rtol=1e-9)


def test_karras_matches_edm_formula(x64):
  ts = timesteps.karras(18, 0.002, 80.0, 7.0)
  i = np.arange(18)
  ref = (80.0**(1 / 7) + i / 17 * (0.002**(1 / 7) - 80.0**(1 / 7)))**7
  np.testing.assert_allclose(ts[:-1], ref, rtol=1e-13)
  assert ts[-1] == 0.0 and ts.shape == (19,)
  vp = P.VP()
  ts_vp = timesteps.karras(5, 0.01, 10.0, process=vp, append_zero=False)
  np.testing.assert_allclose(vp.edm_sigma(ts_vp), timesteps.karras(5, 0.01, 10.0, append_zero=False), rtol=1e-9)


def test_ddpm_discrete_spacings():
  np.testing.assert_array_equal(timesteps.ddpm_discrete(10, 1000, "leading", 1)[:3], [901, 801, 701])
  np.testing.assert_array_equal(timesteps.ddpm_discrete(10, 1000, "trailing")[:3], [999, 899, 799])
  np.testing.assert_array_equal(timesteps.ddpm_discrete(4, 1000, "linspace"), [999, 666, 333, 0])
  np.testing.assert_allclose(timesteps.discrete_to_continuous(np.array([0, 999])), [0.001, 1.0])
  with pytest.raises(ValueError, match="valid spacings"):
    timesteps.ddpm_discrete(10, 1000, "uniform")


def test_named_grids_and_errors():
  edm = P.EDM()
  ts = timesteps.get_timesteps("karras", 5, edm)
  np.testing.assert_allclose([ts[0], ts[-2], ts[-1]], [80.0, 0.002, 0.0], rtol=1e-6)
  with pytest.raises(ValueError, match="valid grids"):
    timesteps.get_timesteps("cosine", 5, edm)
  with pytest.raises(ValueError, match="positive integer"):
    timesteps.time_uniform(0, 1.0, 0.0)
