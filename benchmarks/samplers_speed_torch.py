"""Sampler speed against k-diffusion on PyTorch CPU: the same network, weights and Euler steps.

  python benchmarks/samplers_speed_torch.py --torch-python /path/to/python   # writes samplers_speed_torch.md

`--torch-python` is an interpreter with torch and k-diffusion (not diffjax dependencies; e.g. the
environment of tests/reference/make_kdiffusion_reference.py). The script, run with diffjax's
Python, builds the quickstart MLP (`dj.models.create("mlp", rngs=nnx.Rngs(0), in_features=2)`),
times diffjax's compiled Euler loop (EDM preconditioning, Karras grid without the final zero, as
benchmarks/samplers_speed.py), exports the weights, and runs itself under `--torch-python` to
time `k_diffusion.sampling.sample_euler` on a PyTorch port of the same MLP with the same weights,
sigmas and preconditioning (torch.inference_mode, 2 threads). Both sides report the median over
repeats after a warm-up call and are measured in this one run; the torch side also checks that its
denoiser equals diffjax's on a random batch.

Only the MLP is compared: porting the U-Net to PyTorch is not done here.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
BATCHES = (1, 64, 4096)
STEPS = (10, 50)
SIGMA_MIN, SIGMA_MAX, RHO = 0.002, 80.0, 7.0


def _karras(n):
  ramp = np.linspace(0, 1, n)
  return (SIGMA_MAX**(1 / RHO) + ramp * (SIGMA_MIN**(1 / RHO) - SIGMA_MAX**(1 / RHO)))**RHO


# --- the diffjax side ---------------------------------------------------------------------------

def diffjax_side(export_path, repeats):
  import jax
  import jax.numpy as jnp
  from flax import nnx

  import diffjax as dj
  process = dj.processes.EDM()
  model = dj.models.create("mlp", rngs=nnx.Rngs(0), in_features=2)
  apply_fn, params = dj.models.split_apply(model)
  den = dj.parametrization.edm_denoiser(lambda x, c: apply_fn(params, x, c), process)
  flat = {".".join(str(k) for k in path): np.asarray(v.get_value() if hasattr(v, "get_value") else v)
          for path, v in nnx.to_flat_state(params)}
  x_check = np.asarray(jax.random.normal(jax.random.PRNGKey(5), (16, 2)) * 3.0)
  sig_check = np.exp(np.linspace(np.log(0.01), np.log(50.0), 16))
  d_check = np.asarray(den(jnp.asarray(x_check), jnp.asarray(sig_check)))
  np.savez(export_path, x_check=x_check, sigma_check=sig_check, d_check=d_check, **{"w:" + k: v for k, v in flat.items()})
  times = {}
  for steps in STEPS:
    ts = jnp.asarray(_karras(steps + 1), jnp.float32)
    fn = jax.jit(lambda x, ts=ts: dj.samplers.euler(den, x, ts, process=process))
    for batch in BATCHES:
      x = jax.random.normal(jax.random.PRNGKey(0), (batch, 2)) * SIGMA_MAX
      times[f"{batch},{steps}"] = _median(lambda: jax.block_until_ready(fn(x)), repeats)
  return times, sorted(flat)


def _median(fn, repeats):
  fn()
  out = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    out.append(time.perf_counter() - start)
  return statistics.median(out)


# --- the torch side -----------------------------------------------------------------------------

def torch_side(export_path, repeats, out_path):
  import importlib.util
  import math
  import types
  for name in ("torchvision", "torchvision.transforms", "torchvision.transforms.functional"):
    sys.modules.setdefault(name, types.ModuleType(name))
  sys.modules["torchvision.transforms"].functional = sys.modules["torchvision.transforms.functional"]
  import torch
  torch.set_num_threads(2)
  spec = importlib.util.find_spec("k_diffusion")
  package = types.ModuleType("k_diffusion")
  package.__path__ = list(spec.submodule_search_locations)
  sys.modules["k_diffusion"] = package
  for sub in ("utils", "sampling"):
    sub_spec = importlib.util.spec_from_file_location(f"k_diffusion.{sub}", os.path.join(package.__path__[0], f"{sub}.py"))
    module = importlib.util.module_from_spec(sub_spec)
    sys.modules[f"k_diffusion.{sub}"] = module
    sub_spec.loader.exec_module(module)
    setattr(package, sub, module)
  sampling = package.sampling

  data = np.load(export_path)
  w = {k[2:]: torch.from_numpy(np.array(data[k])) for k in data.files if k.startswith("w:")}
  lin = lambda name: (w[name + ".kernel"], w[name + ".bias"])
  blocks = sorted({k.split(".")[1] for k in w if k.startswith("blocks.")}, key=int)

  def linear(h, name):
    kernel, bias = lin(name)
    return h @ kernel + bias

  def mlp(x, c_noise):
    half = 64
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, dtype=torch.float32) / half)
    args = c_noise[:, None] * freqs[None]
    feats = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    emb = linear(torch.nn.functional.silu(linear(feats, "embed.fc1")), "embed.fc2")
    h = linear(x, "fc_in")
    for b in blocks:
      u = linear(torch.nn.functional.silu(h), f"blocks.{b}.fc1") + linear(torch.nn.functional.silu(emb), f"blocks.{b}.emb")
      h = h + linear(torch.nn.functional.silu(u), f"blocks.{b}.fc2")
    return linear(torch.nn.functional.silu(h), "fc_out")

  def denoiser(x, sigma):
    sigma_data = 0.5
    c_skip = sigma_data**2 / (sigma**2 + sigma_data**2)
    c_out = sigma * sigma_data / torch.sqrt(sigma**2 + sigma_data**2)
    c_in = 1.0 / torch.sqrt(sigma_data**2 + sigma**2)
    return c_skip[:, None] * x + c_out[:, None] * mlp(c_in[:, None] * x, 0.25 * torch.log(sigma))

  with torch.inference_mode():
    d = denoiser(torch.from_numpy(data["x_check"]).float(), torch.from_numpy(data["sigma_check"]).float())
    max_diff = float(np.max(np.abs(d.numpy() - data["d_check"])))
    times = {}
    for steps in STEPS:
      sigmas = torch.from_numpy(_karras(steps + 1)).float()
      for batch in BATCHES:
        x = torch.randn(batch, 2, generator=torch.Generator().manual_seed(0)) * SIGMA_MAX
        times[f"{batch},{steps}"] = _median(lambda: sampling.sample_euler(denoiser, x, sigmas, disable=True), repeats)
  with open(out_path, "w") as f:
    json.dump({"times": times, "max_abs_diff": max_diff, "torch": torch.__version__}, f)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--torch-python", help="interpreter with torch and k-diffusion")
  parser.add_argument("--repeats", type=int, default=7)
  parser.add_argument("--torch-side", nargs=2, metavar=("EXPORT", "OUT"), help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.torch_side:
    torch_side(args.torch_side[0], args.repeats, args.torch_side[1])
    return
  if not args.torch_python:
    parser.error("--torch-python is required (an interpreter with torch and k-diffusion)")
  import jax
  with tempfile.TemporaryDirectory() as tmp:
    export, out = os.path.join(tmp, "mlp.npz"), os.path.join(tmp, "torch.json")
    jax_times, _ = diffjax_side(export, args.repeats)
    env = dict(os.environ, OMP_NUM_THREADS="2")
    subprocess.run([args.torch_python, os.path.abspath(__file__), "--repeats", str(args.repeats),
                    "--torch-side", export, out], check=True, env=env)
    with open(out) as f:
      torch_result = json.load(f)
  lines = ["# Sampler speed: diffjax (JAX, compiled loop) vs k-diffusion (PyTorch CPU)", "",
           f"Produced by `python benchmarks/samplers_speed_torch.py --torch-python <python with torch and "
           f"k-diffusion>` (one run; {os.cpu_count()} CPU cores; JAX {jax.__version__}, torch "
           f"{torch_result['torch']}, k-diffusion 0.1.1.post1, torch with 2 threads). Euler sampler, EDM "
           "preconditioning, Karras sigmas 80 -> 0.002 (rho 7, no final zero), the quickstart MLP (width 256, 3 "
           "residual blocks) with the same weights on both sides; median of "
           f"{args.repeats} runs after a warm-up. The two denoisers agree to "
           f"{torch_result['max_abs_diff']:.1e} (max abs, float32) on a random batch.", "",
           "| batch | steps (NFE) | diffjax compiled (ms) | k-diffusion torch (ms) | torch / diffjax |",
           "|---|---|---|---|---|"]
  for steps in STEPS:
    for batch in BATCHES:
      k = f"{batch},{steps}"
      j, t = 1e3 * jax_times[k], 1e3 * torch_result["times"][k]
      lines.append(f"| {batch} | {steps} | {j:.2f} | {t:.2f} | {t / j:.1f} |")
  text = "\n".join(lines) + "\n"
  with open(os.path.join(HERE, "samplers_speed_torch.md"), "w") as f:
    f.write(text)
  print(text)


if __name__ == "__main__":
  main()
