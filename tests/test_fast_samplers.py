"""DDIM, DPM-Solver(++), UniPC and the adaptive PF-ODE on the Gaussian oracle (float64).

Measured convergence orders (slope of the max error vs steps on a logSNR grid, VP, t: 1 -> 1e-3)
and exactness identities from the official algorithms (see the samplers notes).
"""
import functools
import sys
import os
sys.path.insert(0, os.path.dirname(__file__))

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffjax import processes as P
from diffjax import timesteps
from diffjax.samplers.ddim import ddim
from diffjax.samplers.dpm_solver import dpm_solver, dynamic_thresholding, multistep_orders
from diffjax.samplers.pf_ode import pf_ode
from diffjax.samplers.unipc import unipc
from test_samplers_basic import MU, VAR, exact_flow, gaussian_denoiser

VP = P.VP()


def _slope(sampler, ns=(20, 40, 80, 160)):
  x_T = jax.random.normal(jax.random.PRNGKey(0), (8, 3))
  den = gaussian_denoiser(VP)
  errors = []
  for n in ns:
    ts = timesteps.log_snr_uniform(n, 1.0, 1e-3, VP)
    out = jax.jit(lambda x: sampler(den, x, ts, process=VP))(x_T)
    errors.append(float(jnp.max(jnp.abs(out - exact_flow(VP, x_T, ts[0], ts[-1])))))
  return -np.polyfit(np.log(ns), np.log(errors), 1)[0]


P_ = functools.partial
ORDER_CASES = [
    ("ddim", ddim, 1.0),
    ("dpm1", P_(dpm_solver, order=1), 1.0),
    ("2M++", P_(dpm_solver, order=2, lower_order_final=False), 2.0),
    ("2M taylor", P_(dpm_solver, order=2, solver_type="taylor", lower_order_final=False), 2.0),
    ("2M noise", P_(dpm_solver, order=2, algorithm="dpmsolver", lower_order_final=False), 2.0),
    ("3M reference", P_(dpm_solver, order=3, lower_order_final=False), 2.0),
    ("3M noise reference", P_(dpm_solver, order=3, algorithm="dpmsolver", lower_order_final=False), 2.0),
    ("2S", P_(dpm_solver, order=2, method="singlestep"), 2.0),
    ("2S noise taylor", P_(dpm_solver, order=2, method="singlestep", algorithm="dpmsolver", solver_type="taylor"), 2.0),
    ("3S", P_(dpm_solver, order=3, method="singlestep"), 3.0),
    ("3S noise taylor", P_(dpm_solver, order=3, method="singlestep", algorithm="dpmsolver", solver_type="taylor"), 3.0),
    ("unipc1 bh1", P_(unipc, order=1, variant="bh1", lower_order_final=False), 2.0),
    ("unipc1 bh2 noise", P_(unipc, order=1, variant="bh2", predict_x0=False, lower_order_final=False), 2.0),
    ("unipc2 bh2", P_(unipc, order=2, variant="bh2", lower_order_final=False), 3.0),
    ("unipc2 bh1 noise", P_(unipc, order=2, variant="bh1", predict_x0=False, lower_order_final=False), 3.0),
]


@pytest.mark.parametrize("name,sampler,expected", ORDER_CASES, ids=[c[0] for c in ORDER_CASES])
def test_convergence_order(x64, name, sampler, expected):
  slope = _slope(sampler)
  assert expected - 0.3 < slope < expected + 0.45, slope


@pytest.mark.parametrize("name,sampler", [
    ("3M corrected", P_(dpm_solver, order=3, corrected_3m=True, lower_order_final=False)),
    ("unipc3 bh2", P_(unipc, order=3, variant="bh2", lower_order_final=False)),
    ("unipc3 bh1 noise", P_(unipc, order=3, variant="bh1", predict_x0=False, lower_order_final=False)),
])
def test_third_order_or_better(x64, name, sampler):
  assert _slope(sampler) > 2.7


def test_point_mass_is_exact_in_one_step(x64):
  x0 = jnp.array([[0.3, -1.2]])
  den = lambda x, t: jnp.broadcast_to(x0, x.shape)
  x_T = jnp.array([[0.5, 2.0]])
  ts = jnp.array([1.0, 1e-3])
  exact = VP.alpha(1e-3) * x0 + VP.sigma(1e-3) * (x_T - VP.alpha(1.0) * x0) / VP.sigma(1.0)
  for sampler in (ddim, P_(dpm_solver, order=3, method="singlestep"), P_(dpm_solver, algorithm="dpmsolver"),
                  P_(unipc, order=3)):
    np.testing.assert_allclose(sampler(den, x_T, ts, process=VP), exact, rtol=1e-12, atol=1e-13)


def test_identities(x64):
  den = gaussian_denoiser(VP)
  x = jax.random.normal(jax.random.PRNGKey(2), (4, 3))
  ts = timesteps.log_snr_uniform(12, 1.0, 1e-3, VP)
  # DPM-Solver-1 == DDIM (eta = 0), data and noise prediction.
  np.testing.assert_allclose(dpm_solver(den, x, ts, process=VP, order=1), ddim(den, x, ts, process=VP), rtol=1e-12)
  np.testing.assert_allclose(dpm_solver(den, x, ts, process=VP, order=1, algorithm="dpmsolver"),
                             ddim(den, x, ts, process=VP), rtol=1e-11)
  # UniP-2 with B(h) = e^h - 1 (no corrector) is DPM-Solver++(2M).
  np.testing.assert_allclose(
      unipc(den, x, ts, process=VP, order=2, variant="bh2", use_corrector=False, lower_order_final=False),
      dpm_solver(den, x, ts, process=VP, order=2, lower_order_final=False), rtol=1e-12, atol=1e-14)


def test_ddim_is_euler_in_scaled_coordinates(x64):
  """DDIM(eta=0) = Euler on dy/drho = eps with y = x/alpha, rho = sigma/alpha (notes §0.8)."""
  import diffrax
  den = gaussian_denoiser(VP)
  x = jax.random.normal(jax.random.PRNGKey(3), (4, 3))
  ts = timesteps.log_snr_uniform(10, 1.0, 1e-3, VP)
  rhos = VP.edm_sigma(ts)

  def vf(rho, y, args):
    t = VP.t_from_edm_sigma(rho)
    x_t = VP.alpha(t) * y
    return (x_t - VP.alpha(t) * den(x_t, jnp.full((4,), t))) / VP.sigma(t)

  sol = diffrax.diffeqsolve(diffrax.ODETerm(vf), diffrax.Euler(), t0=rhos[0], t1=rhos[-1], dt0=None,
                            y0=x / VP.alpha(ts[0]), stepsize_controller=diffrax.StepTo(ts=rhos),
                            saveat=diffrax.SaveAt(t1=True))
  np.testing.assert_allclose(ddim(den, x, ts, process=VP), sol.ys[-1] * VP.alpha(ts[-1]), rtol=1e-10)


def test_ddim_eta_one_moments(x64):
  """DDIM with eta = 1 is DDPM's ancestral sampler: its steps are affine for Gaussian data, so
  the exact mean and variance can be propagated and compared with Monte Carlo."""
  den = gaussian_denoiser(VP)
  ts = timesteps.time_uniform(40, 1.0, 1e-3)
  n = 100_000
  x = VP.prior_sample(jax.random.PRNGKey(0), (n, 3))
  out = jax.jit(lambda x: ddim(den, x, ts, process=VP, eta=1.0, key=jax.random.PRNGKey(1)))(x)
  m, var = _ancestral_moments(ts)
  np.testing.assert_array_less(np.abs(np.asarray(out.mean(0)) - m), 5 * np.sqrt(var / n))
  np.testing.assert_allclose(np.asarray(out.var(0)), var, rtol=5 * np.sqrt(2 / n))
  # With many steps the propagated moments reach the true marginal at t_end.
  m_fine, var_fine = _ancestral_moments(timesteps.time_uniform(4000, 1.0, 1e-3))
  np.testing.assert_allclose(var_fine, float(VP.alpha(1e-3))**2 * VAR + float(VP.sigma(1e-3))**2, rtol=0.02)
  np.testing.assert_allclose(m_fine, float(VP.alpha(1e-3)) * MU, rtol=0.02)


def _ancestral_moments(ts):
  m, var = np.zeros(3), np.ones(3)
  ts = np.asarray(ts)
  a_all, s_all = np.asarray(VP.alpha(ts)), np.asarray(VP.sigma(ts))
  for i in range(len(ts) - 1):
    a, s, an, sn = a_all[i], s_all[i], a_all[i + 1], s_all[i + 1]
    k = a * VAR / (a**2 * VAR + s**2)  # x0_hat = mu + k (x - a mu)
    c = (sn / s) * np.sqrt(s**2 - (a / an)**2 * sn**2)
    d = np.sqrt(sn**2 - c**2)
    slope = an * k + d * (1 - a * k) / s
    intercept = an * (MU - k * a * MU) - d * a * (MU - k * a * MU) / s
    m, var = slope * m + intercept, slope**2 * var + c**2
  return m, var


def test_sde_dpmsolver_moments(x64):
  den = gaussian_denoiser(VP)
  ts = timesteps.log_snr_uniform(100, 1.0, 1e-3, VP)
  x = VP.prior_sample(jax.random.PRNGKey(0), (100_000, 3))
  target = float(VP.alpha(1e-3))**2 * VAR + float(VP.sigma(1e-3))**2
  for algorithm in ("sde-dpmsolver++", "sde-dpmsolver"):
    out = jax.jit(lambda x: dpm_solver(den, x, ts, process=VP, order=2, algorithm=algorithm,
                                       key=jax.random.PRNGKey(1)))(x)
    np.testing.assert_allclose(np.asarray(out.var(0)), target, rtol=0.03)
    np.testing.assert_allclose(np.asarray(out.mean(0)), float(VP.alpha(1e-3)) * MU, atol=0.02)


def test_thresholding_and_options(x64):
  x0 = jnp.array([[0.5, 3.0, -4.0, 0.1], [0.2, 0.1, -0.3, 0.4]])
  out = dynamic_thresholding(x0, percentile=0.5, max_val=1.0)
  s0 = float(jnp.quantile(jnp.abs(x0[0]), 0.5))
  np.testing.assert_allclose(out[0], jnp.clip(x0[0], -s0, s0) / s0)
  np.testing.assert_allclose(out[1], x0[1])  # quantile below max_val = 1: s = 1, no change
  assert multistep_orders(5, 3, True) == [1, 2, 3, 2, 1] and multistep_orders(12, 3, True)[-1] == 3
  den = gaussian_denoiser(VP)
  x, ts = jnp.ones((1, 3)), jnp.array([1.0, 0.5, 1e-3])
  with pytest.raises(ValueError, match="valid"):
    dpm_solver(den, x, ts, process=VP, algorithm="dpm++")
  with pytest.raises(ValueError, match="order"):
    unipc(den, x, ts, process=VP, order=4)
  with pytest.raises(ValueError, match="key"):
    dpm_solver(den, x, ts, process=VP, algorithm="sde-dpmsolver++")
  with pytest.raises(ValueError, match="thresholding"):
    dpm_solver(den, x, ts, process=VP, algorithm="dpmsolver", thresholding=True)


@pytest.mark.parametrize("process", [VP, P.EDM()], ids=["VP", "EDM"])
def test_pf_ode_matches_exact_flow(x64, process):
  den = gaussian_denoiser(process)
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 3)) * process.prior_std
  t1 = 1e-3 if process is VP else 0.01
  out, nfe = jax.jit(lambda x: pf_ode(den, x, process.t_max, t1, process=process, rtol=1e-9, atol=1e-9,
                                      return_nfe=True))(x)
  np.testing.assert_allclose(out, exact_flow(process, x, process.t_max, t1), rtol=1e-6, atol=1e-6)
  loose, nfe_loose = pf_ode(den, x, jnp.array([process.t_max, t1]), process=process, rtol=1e-4, atol=1e-4,
                            return_nfe=True)
  assert int(nfe_loose) < int(nfe)
  np.testing.assert_allclose(loose, exact_flow(process, x, process.t_max, t1), atol=5e-3 * process.prior_std)


@pytest.mark.parametrize("order", [2, 3])
def test_adaptive_dpm_solver(x64, order):
  """DPM-Solver-12/23 reach the exact flow map; tighter tolerances cost more evaluations."""
  from diffjax.samplers.dpm_solver import _adaptive
  den = gaussian_denoiser(VP)
  x = jax.random.normal(jax.random.PRNGKey(0), (8, 3))
  exact = exact_flow(VP, x, 1.0, 1e-3)
  out = dpm_solver(den, x, jnp.array([1.0, 1e-3]), process=VP, order=order, method="adaptive", rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(out, exact, atol=2e-3)
  model = lambda x, t: den(x, jnp.full((x.shape[0],), t))
  nfes = []
  for tol in (0.05, 1e-3):
    _, nfe = _adaptive(model, VP, VP.log_snr, x, 1.0, 1e-3, order, True, False, atol=tol, rtol=tol, h_init=0.05,
                       theta=0.9, t_err=1e-5, max_evals=10_000)
    nfes.append(int(nfe))
  assert nfes[0] < nfes[1] < 10_000
