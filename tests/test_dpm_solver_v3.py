"""DPM-Solver-v3 on the Gaussian oracle (float64).

For Gaussian data N(mu, diag(v)) the EMS are known in closed form: eps is affine in x with the
diagonal Jacobian (1 - alpha^2 v / C) / sigma, C = alpha^2 v + sigma^2, so Hutchinson's diagonal
estimate with Rademacher probes is exact, l = sigma^2 / C; and with l = 1 (f = -x0_hat) the
relation f' = s f + b holds pointwise along the ODE with s = d log(alpha / sqrt(C)) / d lambda,
b = s mu. With the exact l, N = sigma eps - l x does not depend on x, so one v3 step solves the
PF-ODE up to the quadrature and finite-difference error of the statistics.
"""
import functools
import importlib
import os
import sys
sys.path.insert(0, os.path.dirname(__file__))

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffjax import processes as P
from diffjax import timesteps
from diffjax.samplers import get_sampler
from diffjax.samplers.ddim import ddim
from diffjax.samplers.dpm_solver import dpm_solver
from test_samplers_basic import MU, VAR, exact_flow, gaussian_denoiser

V = importlib.import_module("diffjax.samplers.dpm_solver_v3")  # the module, not the function
VP = P.VP()


def _data(n=64):
  return MU + np.sqrt(VAR) * np.random.default_rng(0).standard_normal((n, 3))


@functools.lru_cache(maxsize=None)
def _degenerated(num_steps):
  with jax.enable_x64(True):
    return V.degenerated_ems(VP, 1.0, 1e-3, (3,), num_steps)


def _errors(ems, ns, **kw):
  x_T = jax.random.normal(jax.random.PRNGKey(0), (8, 3), jnp.float64)
  den = gaussian_denoiser(VP)
  errors = []
  for n in ns:
    ts = timesteps.log_snr_uniform(n, 1.0, 1e-3, VP)
    out = jax.jit(lambda x: V.dpm_solver_v3(den, x, ts, process=VP, ems=ems, lower_order_final=False, **kw))(x_T)
    errors.append(float(jnp.max(jnp.abs(out - exact_flow(VP, x_T, ts[0], ts[-1])))))
  return errors


@pytest.mark.parametrize("order,pseudo,lo,hi", [(1, False, 0.8, 1.2), (2, False, 1.8, 2.3),
                                                (3, False, 2.7, 4.5), (3, True, 1.8, 2.3)])
def test_predictor_convergence_order(x64, order, pseudo, lo, hi):
  """Slopes 1, 2 and >= 3 (3.9 measured: like the corrected 3M, pre-asymptotic on this oracle);
  the pseudo-order predictor (divided differences) is second order."""
  # Degenerated EMS on a fine grid (quadrature error far below the discretisation error).
  ns = (10, 20, 40, 80)
  errors = _errors(_degenerated(19200), ns, order=order, p_pseudo=pseudo, use_corrector=False)
  slope = -np.polyfit(np.log(ns), np.log(errors), 1)[0]
  assert lo < slope < hi, (slope, errors)


@pytest.mark.parametrize("order", [2, 3])
def test_corrector_reduces_error_at_small_nfe(x64, order):
  ems = _degenerated(19200)
  plain = _errors(ems, (10, 20), order=order, use_corrector=False)
  corrected = _errors(ems, (10, 20), order=order, use_corrector=True)
  assert all(c < 0.8 * p for c, p in zip(corrected, plain)), (plain, corrected)  # 0.76, 0.35 measured (order 2)


def test_degenerated_equals_dpm_solver_pp_up_to_quadrature(x64):
  """l = 1, s = b = 0 is DPM-Solver++: order 1 = DDIM, order 2 = 2M (Taylor form), order 3 = the
  corrected 3M, up to the trapezoid error of the EMS integrals (O(grid step^2))."""
  den = gaussian_denoiser(VP)
  x = jax.random.normal(jax.random.PRNGKey(0), (8, 3), jnp.float64)
  ts = timesteps.log_snr_uniform(40, 1.0, 1e-3, VP)
  cases = [(1, ddim), (2, functools.partial(dpm_solver, order=2, solver_type="taylor", lower_order_final=False)),
           (3, functools.partial(dpm_solver, order=3, corrected_3m=True, solver_type="taylor",
                                 lower_order_final=False))]
  diffs = {}
  for num_steps in (1200, 4800):
    ems = _degenerated(num_steps)
    for order, ref in cases:
      ours = V.dpm_solver_v3(den, x, ts, process=VP, ems=ems, order=order, use_corrector=False,
                             lower_order_final=False)
      diffs[num_steps, order] = float(jnp.max(jnp.abs(ours - ref(den, x, ts, process=VP))))
  for order, _ in cases:
    assert diffs[4800, order] < 1e-5, diffs
    # second-order quadrature: 4x finer grid, ~16x smaller difference
    assert diffs[1200, order] / diffs[4800, order] > 10, diffs


def test_pseudo_and_vandermonde_agree_for_two_points(x64):
  ems = _degenerated(1200)
  a = _errors(ems, (10,), order=2, p_pseudo=True, use_corrector=False)
  b = _errors(ems, (10,), order=2, p_pseudo=False, use_corrector=False)
  assert a == b


def test_compute_l_is_exact_for_gaussian_data(x64):
  den = gaussian_denoiser(VP)
  lambdas = V.ems_grid(VP, 1.0, 1e-3, 50)
  l = V.compute_l(den, VP, jnp.asarray(_data()), lambdas, jax.random.PRNGKey(1), batch_size=16, progress=False)
  t = VP.t_from_log_snr(lambdas)
  a, s = VP.alpha(t)[:, None], VP.sigma(t)[:, None]
  np.testing.assert_allclose(l, s**2 / (a**2 * VAR + s**2), rtol=1e-12, atol=1e-13)


def test_compute_sb_is_exact_for_gaussian_data(x64):
  den = gaussian_denoiser(VP)
  ems = V.compute_ems(den, VP, _data(), jax.random.PRNGKey(1), t_start=1.0, t_end=1e-3, num_steps=60,
                      l=jnp.ones((61, 3)), progress=False)

  def log_ratio(lam):
    t = VP.t_from_log_snr(lam)
    a, s = VP.alpha(t), VP.sigma(t)
    return jnp.log(a / jnp.sqrt(a**2 * VAR + s**2))

  s_exact = jax.vmap(jax.jacfwd(log_ratio))(ems.lambdas)
  np.testing.assert_allclose(ems.s, s_exact, rtol=1e-7, atol=1e-8)
  np.testing.assert_allclose(ems.b, s_exact * MU, rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("process", [VP, P.EDM()], ids=["VP", "EDM"])
def test_exact_ems_make_one_step_nearly_exact(x64, process):
  """Gaussian data: with its computed EMS one step of v3 is accurate to the statistics' own
  (finite-difference) error, where DPM-Solver++ is off by O(1)."""
  t_start, t_end = (1.0, 1e-3) if process is VP else (80.0, 0.002)
  den = gaussian_denoiser(process)
  ems = V.compute_ems(den, process, _data(), jax.random.PRNGKey(1), t_start=t_start, t_end=t_end,
                      num_steps=1200, progress=False)
  x = process.prior_std * jax.random.normal(jax.random.PRNGKey(0), (8, 3), jnp.float64)
  ts = jnp.asarray([t_start, t_end])
  exact = exact_flow(process, x, t_start, t_end)
  err_v3 = float(jnp.max(jnp.abs(V.dpm_solver_v3(den, x, ts, process=process, ems=ems) - exact)))
  err_pp = float(jnp.max(jnp.abs(dpm_solver(den, x, ts, process=process, order=1) - exact)))
  assert err_v3 < 2e-3 and err_v3 < 1e-3 * err_pp, (err_v3, err_pp)


def test_snapping_to_the_grid(x64):
  ems = _degenerated(1200)
  ts = jnp.asarray([1.0, 0.5, 0.1, 1e-3])
  idx, snapped = V.snap_to_grid(ts, ems, VP)
  assert idx[0] == 0 and idx[-1] == 1200
  np.testing.assert_allclose(VP.log_snr(snapped), ems.lambdas[idx], rtol=1e-12)
  assert float(jnp.max(jnp.abs(VP.log_snr(snapped) - VP.log_snr(ts)))) <= 0.5 * float(ems.lambdas[1] - ems.lambdas[0]) + 1e-12


def test_orders_of_the_reference_driver():
  # order 3, corrector on: the corrector follows the previous predictor order; last steps lower.
  p, c = V.v3_orders(6, 3, True, False, True)
  assert p == [1, 2, 3, 3, 2, 1] and c == [0, 0, 2, 3, 3, 2]
  p, c = V.v3_orders(4, 2, True, True, False)
  assert p == [1, 2, 2, 2] and c == [0, 2, 3, 3]


def test_half_corrector_follows_the_code(x64):
  """half=True corrects only while t_{i-1} > 0.5; with every grid time below 0.5 it equals no corrector."""
  den = gaussian_denoiser(VP)
  ems = _degenerated(1200)
  x = jax.random.normal(jax.random.PRNGKey(0), (8, 3), jnp.float64)
  ts = timesteps.log_snr_uniform(8, 0.45, 1e-3, VP)
  run = lambda **kw: V.dpm_solver_v3(den, x, ts, process=VP, ems=ems, **kw)
  np.testing.assert_array_equal(run(use_corrector=True, half=True), run(use_corrector=False))
  assert float(jnp.max(jnp.abs(run(use_corrector=True) - run(use_corrector=False)))) > 1e-6


def test_save_and_load_round_trip(tmp_path, x64):
  ems = V.EMS(*(jnp.asarray(np.random.default_rng(i).standard_normal(shape))
                for i, shape in enumerate([(11,), (11, 4, 4, 2), (11, 4, 4, 2), (11, 4, 4, 2)])))
  path = str(tmp_path / "ems.npz")
  V.save_ems(path, ems)
  loaded = V.load_ems(path)
  for a, b in zip(jax.tree.leaves(ems), jax.tree.leaves(loaded)):
    np.testing.assert_array_equal(a, b)
  np.savez(tmp_path / "bad.npz", l=np.ones(3))
  with pytest.raises(ValueError, match="lacks the arrays"):
    V.load_ems(str(tmp_path / "bad.npz"))


def test_load_official_layout(tmp_path, x64):
  l = np.random.default_rng(0).standard_normal((11, 2, 4, 4))
  np.savez(tmp_path / "l.npz", l=l)
  np.savez(tmp_path / "sb.npz", s=2 * l, b=3 * l)
  ems = V.load_official_ems(str(tmp_path), VP, 1.0, 1e-3)
  assert ems.l.shape == (11, 4, 4, 2)
  np.testing.assert_array_equal(ems.s, np.moveaxis(2 * l, 1, -1))
  np.testing.assert_allclose(ems.lambdas, V.ems_grid(VP, 1.0, 1e-3, 10))


def test_registry_and_errors(x64):
  ems = _degenerated(1200)
  den = gaussian_denoiser(VP)
  x = jnp.zeros((2, 3))
  ts = timesteps.log_snr_uniform(5, 1.0, 1e-3, VP)
  out = get_sampler("dpm_solver_v3", ems=ems, order=2)(den, x, ts, process=VP)
  assert out.shape == x.shape and bool(jnp.all(jnp.isfinite(out)))
  with pytest.raises(ValueError, match="order must be 1, 2 or 3"):
    V.dpm_solver_v3(den, x, ts, process=VP, ems=ems, order=4)
  with pytest.raises(ValueError, match="event shape"):
    V.dpm_solver_v3(den, jnp.zeros((2, 4)), ts, process=VP, ems=ems)
  with pytest.raises(ValueError, match="ems must be an EMS"):
    V.dpm_solver_v3(den, x, ts, process=VP, ems=None)
  with pytest.raises(ValueError, match="data must have shape"):
    V.compute_ems(den, VP, jnp.zeros((1, 3)), jax.random.PRNGKey(0), t_start=1.0, t_end=1e-3)
