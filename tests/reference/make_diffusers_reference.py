"""Produces tests/reference/diffusers.npz: diffusers' DDIM, DPMSolverMultistep and UniPCMultistep
schedulers on a Gaussian-mixture model, in float64.

Run once, in a separate environment with the reference packages (not a diffjax dependency):

  python3 -m venv /tmp/peers && /tmp/peers/bin/pip install torch==2.13.0 diffusers==0.42.1 jax
  /tmp/peers/bin/python tests/reference/make_diffusers_reference.py

diffusers builds its tables in float32 (`torch.linspace(..., dtype=torch.float32)`, sigmas
`.astype(np.float32)`) and upcasts samples to float32 inside `step`; to record the algorithm in
float64, `torch.float32` and `np.float32` are aliased to their 64-bit types while a scheduler is
built and run. The model is the exact noise prediction of the mixture under the discrete VP
process x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps (betas linspace(1e-4, 0.02, 1000)). The
noises of sde-dpmsolver++ are drawn with JAX as diffjax draws them (`normal(fold_in(key, i))`).
"""
import contextlib
import os

import numpy as np

import jax  # noqa: E402
import torch  # noqa: E402
import diffusers  # noqa: E402

jax.config.update("jax_enable_x64", True)
HERE = os.path.dirname(os.path.abspath(__file__))
WEIGHTS = np.array([0.2, 0.5, 0.3])
MEANS = np.array([[0.0, 1.0], [1.5, -0.5], [-1.0, -1.0]])
VARS = np.array([0.05, 0.2, 0.1])
BATCH, STEPS, SEED = 16, 20, 11
BETAS = np.linspace(1e-4, 0.02, 1000, dtype=np.float64)
ABAR = np.cumprod(1.0 - BETAS)


@contextlib.contextmanager
def float64_everywhere():
  saved = torch.float32, np.float32
  torch.float32, np.float32 = torch.float64, np.float64
  try:
    yield
  finally:
    torch.float32, np.float32 = saved


def eps_model(x, t):
  """Exact eps prediction of the mixture at integer timestep t (torch float64)."""
  a, s = float(np.sqrt(ABAR[int(t)])), float(np.sqrt(1 - ABAR[int(t)]))
  mu = torch.from_numpy(MEANS)[None]
  v = torch.from_numpy(VARS)[None, :, None]
  c = a**2 * v + s**2
  diff = x[:, None, :] - a * mu
  logp = torch.log(torch.from_numpy(WEIGHTS))[None] - 0.5 * (diff**2 / c).sum(-1) - torch.log(c[..., 0])
  r = torch.softmax(logp, dim=1)
  x0 = (r[..., None] * (mu + a * v / c * diff)).sum(1)
  return (x - a * x0) / s


def run(scheduler, x, noises=None):
  with float64_everywhere():
    scheduler.set_timesteps(STEPS)
    sample = x.clone()
    for i, t in enumerate(scheduler.timesteps):
      kwargs = {} if noises is None else {"variance_noise": torch.from_numpy(noises[i])}
      sample = scheduler.step(eps_model(sample, t), t, sample, **kwargs).prev_sample
  assert sample.dtype == torch.float64
  return np.asarray(scheduler.timesteps), sample.numpy()


def make(cls, **config):
  with float64_everywhere():
    return cls(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear", **config)


def main():
  rng = np.random.default_rng(0)
  x_T = rng.standard_normal((BATCH, 2))
  x = torch.from_numpy(x_T)
  key = jax.random.PRNGKey(SEED)
  noises = np.stack([np.asarray(jax.random.normal(jax.random.fold_in(key, i), (BATCH, 2), jax.numpy.float64))
                     for i in range(STEPS)])
  out = {"weights": WEIGHTS, "means": MEANS, "vars": VARS, "betas": BETAS, "x_T": x_T, "noise_seed": np.array(SEED)}
  cases = {
      "ddim": (diffusers.DDIMScheduler, dict(clip_sample=False), None),
      "dpmpp_2m": (diffusers.DPMSolverMultistepScheduler, dict(algorithm_type="dpmsolver++", solver_order=2), None),
      "dpmpp_3m": (diffusers.DPMSolverMultistepScheduler, dict(algorithm_type="dpmsolver++", solver_order=3), None),
      "dpmsolver_2m": (diffusers.DPMSolverMultistepScheduler,
                       dict(algorithm_type="dpmsolver", solver_order=2, final_sigmas_type="sigma_min"), None),
      "sde_dpmpp_2m": (diffusers.DPMSolverMultistepScheduler, dict(algorithm_type="sde-dpmsolver++", solver_order=2),
                       noises),
      "unipc_bh2_2": (diffusers.UniPCMultistepScheduler, dict(solver_order=2, solver_type="bh2"), None),
      "unipc_bh2_3": (diffusers.UniPCMultistepScheduler, dict(solver_order=3, solver_type="bh2"), None),
      # bh1 with final_sigmas_type="zero" gives NaN in diffusers (B(h) = h = -inf on the last step).
      "unipc_bh1_2": (diffusers.UniPCMultistepScheduler,
                      dict(solver_order=2, solver_type="bh1", final_sigmas_type="sigma_min"), None),
  }
  for name, (cls, config, case_noises) in cases.items():
    scheduler = make(cls, **config)
    timesteps, final = run(scheduler, x, case_noises)
    out[f"{name}_timesteps"] = timesteps
    out[f"{name}_final"] = final
    out[f"{name}_config"] = np.array(repr(dict(scheduler.config)))
  out["versions"] = np.array(f"diffusers {diffusers.__version__}, torch {torch.__version__}, jax {jax.__version__}")
  path = os.path.join(HERE, "diffusers.npz")
  np.savez_compressed(path, **out)
  print("wrote", path, sorted(k for k in out if k.endswith("_final")))


if __name__ == "__main__":
  main()
