"""Time grids for samplers, from noise (ts[0]) to data (ts[-1]).

All grids return N + 1 times for N steps (DPM-Solver's `get_time_steps` convention); `karras`
appends a final 0 when `append_zero` (EDM / k-diffusion's `get_sigmas_karras`, N + 1 values).
"""
import jax.numpy as jnp


def _check_steps(num_steps):
  if not isinstance(num_steps, int) or num_steps < 1:
    raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}")


def time_uniform(num_steps, t_start, t_end):
  """linspace(t_start, t_end, N + 1)."""
  _check_steps(num_steps)
  return jnp.linspace(t_start, t_end, num_steps + 1)


def time_quadratic(num_steps, t_start, t_end):
  """linspace(sqrt(t_start), sqrt(t_end), N + 1)^2 (DPM-Solver 'time_quadratic')."""
  _check_steps(num_steps)
  return jnp.linspace(jnp.sqrt(t_start), jnp.sqrt(t_end), num_steps + 1)**2


def log_snr_uniform(num_steps, t_start, t_end, process):
  """Times equally spaced in log-SNR lambda (DPM-Solver 'logSNR')."""
  _check_steps(num_steps)
  lam = jnp.linspace(process.log_snr(t_start), process.log_snr(t_end), num_steps + 1)
  return process.t_from_log_snr(lam)


def karras(num_steps, sigma_min=0.002, sigma_max=80.0, rho=7.0, *, append_zero=True, process=None):
  """EDM's noise levels (Karras et al. 2022, eq. 5), as times of `process`.

  sigma_i = (sigma_max^(1/rho) + i / (N - 1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho, i < N,
  followed by 0 when `append_zero`. The sigmas are EDM noise levels sigma / alpha; for a process
  other than EDM they are mapped to times with `process.t_from_edm_sigma` (and the final 0 is
  kept only for processes with alpha(0) = 1, sigma(0) = 0).
  """
  _check_steps(num_steps)
  if num_steps == 1:
    sigmas = jnp.array([sigma_max])
  else:
    ramp = jnp.linspace(0.0, 1.0, num_steps)
    lo, hi = sigma_min**(1.0 / rho), sigma_max**(1.0 / rho)
    sigmas = (hi + ramp * (lo - hi))**rho
  ts = sigmas if process is None else process.t_from_edm_sigma(sigmas)
  if append_zero:
    ts = jnp.concatenate([ts, jnp.zeros((1,), ts.dtype)])
  return ts


DDPM_SPACINGS = ("linspace", "leading", "trailing")


def ddpm_discrete(num_steps, num_train_steps=1000, spacing="leading", steps_offset=0):
  """Integer DDPM timesteps (descending) as diffusers' `set_timesteps` chooses them.

  "linspace": round(linspace(0, N - 1, n)); "leading": arange(n) * (N // n) + steps_offset
  (DDIM, Song et al. 2021); "trailing": round(arange(N, 0, -N / n)) - 1 (Lin et al. 2024,
  "Common diffusion noise schedules and sample steps are flawed", Table 2).

  Returns:
    int array of the n timesteps from noise to data.
  """
  import numpy as np
  _check_steps(num_steps)
  if num_steps > num_train_steps:
    raise ValueError(f"num_steps ({num_steps}) must not exceed num_train_steps ({num_train_steps})")
  if spacing == "linspace":
    steps = np.linspace(0, num_train_steps - 1, num_steps).round()[::-1]
  elif spacing == "leading":
    steps = (np.arange(0, num_steps) * (num_train_steps // num_steps)).round()[::-1] + steps_offset
  elif spacing == "trailing":
    steps = np.round(np.arange(num_train_steps, 0, -num_train_steps / num_steps)) - 1
  else:
    raise ValueError(f"unknown spacing {spacing!r}; valid spacings: {DDPM_SPACINGS}")
  return np.asarray(steps, dtype=np.int64)


def discrete_to_continuous(steps, num_train_steps=1000):
  """DDPM integer step n -> continuous time t = (n + 1) / N of `processes.VPDiscrete`."""
  return (jnp.asarray(steps) + 1.0) / num_train_steps


GRIDS = ("time_uniform", "time_quadratic", "log_snr", "karras")


def get_timesteps(name, num_steps, process, *, t_start=None, t_end=None, **kwargs):
  """Builds a named grid between `process.t_max` (or t_start) and `process.t_min` (or t_end)."""
  t_start = process.t_max if t_start is None else t_start
  t_end = process.t_min if t_end is None else t_end
  if name == "time_uniform":
    return time_uniform(num_steps, t_start, t_end)
  if name == "time_quadratic":
    return time_quadratic(num_steps, t_start, t_end)
  if name == "log_snr":
    return log_snr_uniform(num_steps, t_start, t_end, process)
  if name == "karras":
    sigma_max = float(process.edm_sigma(t_start))
    sigma_min = float(process.edm_sigma(t_end))
    return karras(num_steps, sigma_min, sigma_max, process=process, **kwargs)
  raise ValueError(f"unknown time grid {name!r}; valid grids: {GRIDS}")
