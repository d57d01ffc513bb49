"""Parity with k-diffusion (crowsonkb/k-diffusion 0.1.1.post1) on a Gaussian-mixture denoiser, float64.

Reference values: tests/reference/kdiffusion.npz, produced once by
`python tests/reference/make_kdiffusion_reference.py` in an environment with torch and k-diffusion
(see that script and tests/reference/README.md). The stochastic samplers use the same JAX-drawn
noise on both sides.
"""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffjax as dj
from diffjax.data import toy

REF = np.load(os.path.join(os.path.dirname(__file__), "reference", "kdiffusion.npz"))
EDM = dj.processes.EDM()


def _denoiser():
  mixture = toy.GaussianMixture(jnp.asarray(REF["weights"]), jnp.asarray(REF["means"]), jnp.asarray(REF["vars"]))
  return lambda x, t: mixture.denoiser(x, t, EDM)


def _inputs(n):
  return jnp.asarray(REF[f"x_T_{n}"]), jnp.asarray(REF[f"sigmas_{n}"])


@pytest.mark.parametrize("n", [10, 25])
def test_deterministic_samplers(x64, n):
  den = _denoiser()
  x, sigmas = _inputs(n)
  np.testing.assert_allclose(dj.samplers.euler(den, x, sigmas, process=EDM), REF[f"euler_{n}"], rtol=1e-8, atol=1e-8)
  np.testing.assert_allclose(dj.samplers.heun(den, x, sigmas, process=EDM), REF[f"heun_{n}"], rtol=1e-8, atol=1e-8)
  # sample_dpmpp_2m: second order whenever a previous value exists, and the step into sigma = 0
  # returns the denoiser output: no lower_order_final, denoise_to_zero at the last nonzero sigma.
  out = dj.samplers.dpm_solver(den, x, sigmas[:-1], process=EDM, order=2, algorithm="dpmsolver++",
                               lower_order_final=False, denoise_to_zero=True)
  np.testing.assert_allclose(out, REF[f"dpmpp_2m_{n}"], rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("n", [10, 25])
@pytest.mark.parametrize("solver_type", ["midpoint", "heun"])
def test_dpmpp_2m_sde_same_noise(x64, n, solver_type):
  den = _denoiser()
  x, sigmas = _inputs(n)
  key = jax.random.PRNGKey(int(REF[f"noise_seed_{n}"]))
  out = dj.samplers.dpm_solver(den, x, sigmas[:-1], process=EDM, order=2, algorithm="sde-dpmsolver++",
                               solver_type=solver_type, lower_order_final=False, denoise_to_zero=True, key=key)
  np.testing.assert_allclose(out, REF[f"dpmpp_2m_sde_{solver_type}_{n}"], rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("n", [10, 25])
def test_heun_with_churn_same_noise(x64, n):
  den = _denoiser()
  x, sigmas = _inputs(n)
  key = jax.random.PRNGKey(int(REF[f"noise_seed_{n}"]))
  out = dj.samplers.heun(den, x, sigmas, process=EDM, s_churn=40.0, s_tmin=0.05, s_tmax=50.0, s_noise=1.003, key=key)
  np.testing.assert_allclose(out, REF[f"heun_churn_{n}"], rtol=1e-8, atol=1e-8)


# --------------------------------------------------------------------------------------------
# diffusers (0.42.1) schedulers: tests/reference/diffusers.npz from
# `python tests/reference/make_diffusers_reference.py`. Integer DDPM timestep n is the
# continuous time (n + 1) / 1000 of `VPDiscrete` (exact at the table's nodes).
# --------------------------------------------------------------------------------------------
DREF = np.load(os.path.join(os.path.dirname(__file__), "reference", "diffusers.npz"))


def _discrete_setup(name):
  process = dj.processes.VPDiscrete(tuple(DREF["betas"].tolist()))
  mixture = toy.GaussianMixture(jnp.asarray(DREF["weights"]), jnp.asarray(DREF["means"]), jnp.asarray(DREF["vars"]))
  den = lambda x, t: mixture.denoiser(x, t, process)
  ts = dj.timesteps.discrete_to_continuous(DREF[f"{name}_timesteps"], 1000)
  return process, den, jnp.asarray(DREF["x_T"]), ts


def test_diffusers_ddim(x64):
  """DDIMScheduler with clip_sample=False (its default clips x0_hat to [-1, 1])."""
  process, den, x, ts = _discrete_setup("ddim")
  # DDIM to the last timestep, then the final step to alpha = 1 (set_alpha_to_one) returns x0_hat.
  out = dj.samplers.ddim(den, x, ts, process=process)
  out = den(out, jnp.full((x.shape[0],), ts[-1]))
  np.testing.assert_allclose(out, DREF["ddim_final"], rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("name,order", [("dpmpp_2m", 2), ("dpmpp_3m", 3)])
def test_diffusers_dpm_solver_pp(x64, name, order):
  """20 steps, final_sigmas_type='zero': the step into sigma = 0 is first order (denoise_to_zero);
  lower_order_final applies only below 15 steps."""
  process, den, x, ts = _discrete_setup(name)
  out = dj.samplers.dpm_solver(den, x, ts, process=process, order=order, algorithm="dpmsolver++",
                               denoise_to_zero=True, lower_order_final_threshold=15)
  np.testing.assert_allclose(out, DREF[f"{name}_final"], rtol=1e-8, atol=1e-8)


def test_diffusers_dpm_solver_noise_prediction(x64):
  """algorithm_type='dpmsolver' with final_sigmas_type='sigma_min': one more ordinary step to the
  first table entry (continuous time 1/1000)."""
  process, den, x, ts = _discrete_setup("dpmsolver_2m")
  ts = jnp.concatenate([ts, jnp.array([1e-3])])
  out = dj.samplers.dpm_solver(den, x, ts, process=process, order=2, algorithm="dpmsolver",
                               lower_order_final_threshold=15)
  np.testing.assert_allclose(out, DREF["dpmsolver_2m_final"], rtol=1e-8, atol=1e-8)


def test_diffusers_sde_dpm_solver_pp_same_noise(x64):
  process, den, x, ts = _discrete_setup("sde_dpmpp_2m")
  out = dj.samplers.dpm_solver(den, x, ts, process=process, order=2, algorithm="sde-dpmsolver++",
                               solver_type="midpoint", denoise_to_zero=True, lower_order_final_threshold=15,
                               key=jax.random.PRNGKey(int(DREF["noise_seed"])))
  np.testing.assert_allclose(out, DREF["sde_dpmpp_2m_final"], rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("name,order,variant", [("unipc_bh2_2", 2, "bh2"), ("unipc_bh2_3", 3, "bh2")])
def test_diffusers_unipc(x64, name, order, variant):
  """final_sigmas_type='zero': a last first-order step to sigma = 0 (denoise_to_zero)."""
  process, den, x, ts = _discrete_setup(name)
  out = dj.samplers.unipc(den, x, ts, process=process, order=order, variant=variant, denoise_to_zero=True)
  np.testing.assert_allclose(out, DREF[f"{name}_final"], rtol=1e-8, atol=1e-8)


def test_diffusers_unipc_bh1_to_sigma_min(x64):
  """bh1 with final_sigmas_type='sigma_min': an ordinary last step to time 1/1000, uncorrected."""
  process, den, x, ts = _discrete_setup("unipc_bh1_2")
  ts = jnp.concatenate([ts, jnp.array([1e-3])])
  out = dj.samplers.unipc(den, x, ts, process=process, order=2, variant="bh1")
  np.testing.assert_allclose(out, DREF["unipc_bh1_2_final"], rtol=1e-8, atol=1e-8)
