"""Produces tests/reference/kdiffusion.npz: k-diffusion's samplers on a Gaussian-mixture denoiser, float64.

Run once, in a separate environment with the reference packages (not a diffjax dependency):

  python3 -m venv /tmp/peers && /tmp/peers/bin/pip install torch==2.13.0 jax
  /tmp/peers/bin/pip install --no-deps k-diffusion==0.1.1.post1
  /tmp/peers/bin/pip install jsonmerge torchsde torchdiffeq scipy tqdm einops safetensors
  /tmp/peers/bin/python tests/reference/make_kdiffusion_reference.py

k_diffusion/__init__ imports training-only dependencies, so `k_diffusion.sampling` and
`k_diffusion.utils` are loaded from their files directly (with an empty torchvision stand-in for a
PIL helper of utils that the samplers do not use). The per-step noises of the stochastic samplers are
drawn with JAX exactly as diffjax draws them (`normal(fold_in(key, i))`) and fed to k-diffusion
(a list-based noise sampler, and `torch.randn_like` replaced for `sample_heun`), so both sides use
identical noise.
"""
import os
import sys
import types

import numpy as np

for name in ("torchvision", "torchvision.transforms", "torchvision.transforms.functional"):
  sys.modules.setdefault(name, types.ModuleType(name))
sys.modules["torchvision.transforms"].functional = sys.modules["torchvision.transforms.functional"]

import jax  # noqa: E402
import torch  # noqa: E402
import importlib.util  # noqa: E402


def _load_kdiffusion_sampling():
  """Imports k_diffusion.sampling (and its utils) without the package __init__, which pulls in
  training-only dependencies (torchvision, clean-fid, dctorch, scikit-image)."""
  spec = importlib.util.find_spec("k_diffusion")
  package = types.ModuleType("k_diffusion")
  package.__path__ = list(spec.submodule_search_locations)
  sys.modules["k_diffusion"] = package
  for sub in ("utils", "sampling"):
    sub_spec = importlib.util.spec_from_file_location(f"k_diffusion.{sub}",
                                                      os.path.join(package.__path__[0], f"{sub}.py"))
    module = importlib.util.module_from_spec(sub_spec)
    sys.modules[f"k_diffusion.{sub}"] = module
    sub_spec.loader.exec_module(module)
    setattr(package, sub, module)
  return package.sampling


sampling = _load_kdiffusion_sampling()

jax.config.update("jax_enable_x64", True)
HERE = os.path.dirname(os.path.abspath(__file__))
WEIGHTS = np.array([0.2, 0.5, 0.3])
MEANS = np.array([[0.0, 1.0], [1.5, -0.5], [-1.0, -1.0]])
VARS = np.array([0.05, 0.2, 0.1])
BATCH = 16


def denoiser(x, sigma):
  """Exact E[x0 | x0 + sigma n = x] of the isotropic mixture, in torch float64."""
  s2 = sigma.reshape(-1, 1, 1) ** 2
  mu = torch.from_numpy(MEANS)[None]
  v = torch.from_numpy(VARS)[None, :, None]
  diff = x[:, None, :] - mu
  logp = torch.log(torch.from_numpy(WEIGHTS))[None] - 0.5 * (diff**2 / (v + s2)).sum(-1) - (torch.log(v + s2)[..., 0])
  r = torch.softmax(logp, dim=1)
  post = mu + v / (v + s2) * diff
  return (r[..., None] * post).sum(1)


def jax_noises(seed, n, shape):
  key = jax.random.PRNGKey(seed)
  return np.stack([np.asarray(jax.random.normal(jax.random.fold_in(key, i), shape, jax.numpy.float64))
                   for i in range(n)])


def main():
  out = {"weights": WEIGHTS, "means": MEANS, "vars": VARS}
  rng = np.random.default_rng(0)
  for n in (10, 25):
    sigmas = sampling.get_sigmas_karras(n, 0.002, 80.0, rho=7.0).double()
    x_T = rng.standard_normal((BATCH, 2)) * 80.0
    out[f"sigmas_{n}"] = sigmas.numpy()
    out[f"x_T_{n}"] = x_T
    x = torch.from_numpy(x_T)
    out[f"euler_{n}"] = sampling.sample_euler(denoiser, x, sigmas, disable=True).numpy()
    out[f"heun_{n}"] = sampling.sample_heun(denoiser, x, sigmas, disable=True).numpy()
    out[f"dpmpp_2m_{n}"] = sampling.sample_dpmpp_2m(denoiser, x, sigmas, disable=True).numpy()
    noises = jax_noises(7, n, (BATCH, 2))
    out[f"noise_seed_{n}"] = np.array(7)
    for solver_type in ("midpoint", "heun"):
      it = iter(noises)
      noise_sampler = lambda s, s_next: torch.from_numpy(next(it))
      out[f"dpmpp_2m_sde_{solver_type}_{n}"] = sampling.sample_dpmpp_2m_sde(
          denoiser, x, sigmas, disable=True, eta=1.0, noise_sampler=noise_sampler, solver_type=solver_type).numpy()
    it = iter(noises)
    original = torch.randn_like
    torch.randn_like = lambda t: torch.from_numpy(next(it))
    try:
      out[f"heun_churn_{n}"] = sampling.sample_heun(denoiser, x, sigmas, disable=True, s_churn=40.0, s_tmin=0.05,
                                                    s_tmax=50.0, s_noise=1.003).numpy()
    finally:
      torch.randn_like = original
  from importlib.metadata import version
  out["versions"] = np.array(f"k-diffusion {version('k-diffusion')}, torch {torch.__version__}, jax {jax.__version__}")
  path = os.path.join(HERE, "kdiffusion.npz")
  np.savez_compressed(path, **out)
  print("wrote", path, sorted(out))


if __name__ == "__main__":
  main()
