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
from diffjax import utils  # noqa: E402
from diffjax.samplers.dpm_solver import dpm_solver  # noqa: E402
from diffjax.samplers.time_shift import time_shift_ddim, time_shift_dpm_solver  # noqa: E402


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


def test_dpm_solver_path_window_one_and_high_cutoff_are_dpm_solver(x64):
  """On a label grid, window 1 or a cutoff above every label is the fork's multistep DPM-Solver
  (lower_order_final below 15 steps)."""
  process, den, ts, x = _setup()
  ts = ts[:9]  # 8 steps: lower_order_final active
  for order, algorithm in [(2, "dpmsolver"), (3, "dpmsolver++")]:
    ref = dpm_solver(den, x, ts, process=process, order=order, algorithm=algorithm, lower_order_final_threshold=15)
    for kw in (dict(window=1, cutoff=0), dict(window=31, cutoff=1000)):
      out = time_shift_dpm_solver(den, x, ts, process=process, order=order, algorithm=algorithm, **kw)
      np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)


def test_dpm_solver_path_shifts_by_the_last_model_output(x64):
  """The shifted label minimises (var(eps_hat) - (1 - abar_k))^2 over the window (unbiased var),
  and it is used as the next model time: checked against a step-by-step transcription."""
  process, den, ts, x = _setup()
  ts = ts[:4]
  window, cutoff, n = 41, 0, process.num_steps
  abar = process.alphas_cumprod
  out = time_shift_dpm_solver(den, x, ts, process=process, order=1, window=window, cutoff=cutoff)

  def eps(x, t):
    a, s = process.alpha(t), process.sigma(t)
    return (x - utils.expand_to(a, x) * den(x, t)) / utils.expand_to(s, x)

  t = jnp.full((x.shape[0],), ts[0])
  y = x
  for step in range(1, 4):
    e = eps(y, t)
    j = int(round(float((ts[step] - 1 / n) * n)))
    t_next = []
    for b in range(x.shape[0]):
      v = float(np.var(np.asarray(e[b]), ddof=1))
      cands = list(range(max(j - window // 2, 0), min(j + window // 2, n - 1) + 1))
      k = cands[int(np.argmin([(v - (1 - float(abar[c])))**2 for c in cands]))]
      t_next.append(k / n + 1 / n)
    t_next = jnp.asarray(t_next)
    a_s, a_t, s_t = process.alpha(t), process.alpha(t_next), process.sigma(t_next)
    h = process.log_snr(t_next) - process.log_snr(t)
    y = utils.expand_to(a_t / a_s, y) * y - utils.expand_to(s_t * jnp.expm1(h), y) * e
    t = t_next
  np.testing.assert_allclose(out, y, rtol=1e-10, atol=1e-10)
  assert not np.allclose(t, ts[3])  # the times did move
  with pytest.raises(ValueError, match="VPDiscrete"):
    time_shift_dpm_solver(den, x, ts, process=P.VP())
  with pytest.raises(ValueError, match="algorithm"):
    time_shift_dpm_solver(den, x, ts, process=process, algorithm="sde-dpmsolver")
