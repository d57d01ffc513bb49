"""Sampler quality vs NFE on the digits model (the foundation issue's VP-SDE U-Net on 8x8 digits).

  python benchmarks/samplers_digits.py      # writes benchmarks/samplers_digits.md and .png

Trains `configs/score_sde/vp_digits.py:tiny` into --workdir (or restores it when a checkpoint is
there), then, from the same 700 prior draws, runs every sampler at NFE 5, 10, 15, 20 and 50 on a
logSNR-uniform grid t: 1 -> 1e-3 and reports

  * the sliced Wasserstein-2 distance (512 projections, flattened pixels) of the samples to 700
    training digits, with the floor given by 700 other training digits (same sample size);
  * the RMS distance per pixel to a 500-step DPM-Solver++(2M) solve from the same prior draws
    (the discretisation error of each sampler's ODE solution; stochastic samplers are omitted).

DPM-Solver-v3 uses EMS computed from this model on 512 training digits (grid of 400 logSNR steps).
"""
import argparse
import functools
import importlib
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import diffjax as dj
from diffjax import experiment

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "configs", "score_sde"))
import vp_digits  # noqa: E402

V3 = importlib.import_module("diffjax.samplers.dpm_solver_v3")  # the module (the package exports the function)
BUDGETS = (5, 10, 15, 20, 50)
P = functools.partial


def _samplers(ems):
  """name -> (sampler, NFE per step, stochastic)."""
  s = dj.samplers
  return {
      "euler": (s.euler, 1, False),
      "heun": (s.heun, 2, False),
      "ddim": (s.ddim, 1, False),
      "dpm_solver++ 2M": (P(s.dpm_solver, order=2), 1, False),
      "dpm_solver++ 3M (reference)": (P(s.dpm_solver, order=3), 1, False),
      "dpm_solver++ 3M (corrected)": (P(s.dpm_solver, order=3, corrected_3m=True), 1, False),
      "dpm_solver 2S": (P(s.dpm_solver, order=2, method="singlestep"), 2, False),
      "dpm_solver 3S": (P(s.dpm_solver, order=3, method="singlestep"), 3, False),
      "unipc bh2 2": (P(s.unipc, order=2, variant="bh2"), 1, False),
      "unipc bh1 3": (P(s.unipc, order=3, variant="bh1"), 1, False),
      "dpm_solver_v3 3 (EMS)": (P(s.dpm_solver_v3, ems=ems, order=3), 1, False),
      "euler_maruyama": (s.euler_maruyama, 1, True),
      "ddim eta=1": (P(s.ddim, eta=1.0), 1, True),
      "sde-dpmsolver++ 2M": (P(s.dpm_solver, order=2, algorithm="sde-dpmsolver++"), 1, True),
  }


def _model(workdir):
  config = vp_digits.get_config("tiny")
  if not os.path.isdir(os.path.join(workdir, "checkpoints")):
    experiment.train_and_evaluate(config, workdir)
  run = experiment.Run(config)
  params = run.sampling_params(run.restore(workdir))
  den = experiment.make_denoiser(config, run.process, run.apply_fn)
  return run.process, jax.jit(lambda x, t: den(params, x, t)), (lambda x, t: den(params, x, t))


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--workdir", default="/tmp/diffjax_bench_vp_digits_tiny")
  parser.add_argument("--n_samples", type=int, default=700)
  args = parser.parse_args()

  process, _, den = _model(args.workdir)
  train = dj.data.load_digits("train")["x"]
  n = args.n_samples
  if 2 * n > len(train):
    raise ValueError(f"--n_samples must be at most {len(train) // 2} (two disjoint sets of training digits)")
  reference, other = train[:n].reshape(n, -1), train[n:2 * n].reshape(n, -1)
  key = jax.random.PRNGKey(0)
  x_T = process.prior_sample(jax.random.PRNGKey(1), (args.n_samples, 8, 8, 1))
  t_start, t_end = 1.0, 1e-3
  grid = lambda n: dj.timesteps.log_snr_uniform(n, t_start, t_end, process)
  sw = lambda x: float(dj.metrics.sliced_wasserstein(key, x.reshape(len(x), -1), reference))
  floor = sw(other)

  start = time.perf_counter()
  ems = V3.compute_ems(den, process, jnp.asarray(train[:512]), jax.random.PRNGKey(2), t_start=t_start, t_end=t_end,
                       num_steps=400, batch_size=256)
  ems_seconds = time.perf_counter() - start
  fine = jax.jit(lambda x: dj.samplers.dpm_solver(den, x, grid(500), process=process, order=2))(x_T)

  results = {}
  for name, (sampler, per_step, stochastic) in _samplers(ems).items():
    row = []
    for budget in BUDGETS:
      steps = max(budget // per_step, 1)
      fn = jax.jit(lambda x, k, steps=steps, sampler=sampler: sampler(den, x, grid(steps), process=process, key=k))
      out = np.asarray(fn(x_T, jax.random.PRNGKey(3)))
      rms = None if stochastic else float(np.sqrt(np.mean((out - np.asarray(fine))**2)))
      row.append((steps * per_step, sw(out), rms))
      print(f"{name:30s} NFE {steps * per_step:3d}  SW {row[-1][1]:.4f}  RMS {rms}", flush=True)
    results[name] = row

  _write(results, floor, ems_seconds, args)
  _plot(results, floor, os.path.join(HERE, "samplers_digits.png"))


def _write(results, floor, ems_seconds, args):
  header = "| sampler | " + " | ".join(f"NFE <= {b}" for b in BUDGETS) + " |\n|---|" + "---|" * len(BUDGETS)
  lines = ["# Sampler quality vs NFE on the digits model\n",
           f"Produced by `python benchmarks/samplers_digits.py` (one run; {platform.machine()}, JAX {jax.__version__}, "
           f"backend {jax.default_backend()}). Model: `configs/score_sde/vp_digits.py:tiny` trained in "
           f"`{args.workdir}` (VP SDE, eps-prediction U-Net, EMA). {args.n_samples} samples from the same prior "
           "draws; logSNR-uniform grid t: 1 -> 1e-3; samplers with their defaults. NFE actually used in parentheses. "
           f"DPM-Solver-v3's EMS: 512 training digits, 400 grid steps, computed in {ems_seconds:.0f} s.\n",
           "![sliced W2 vs NFE](samplers_digits.png)\n",
           f"## Sliced W2 to 700 training digits (700 other training digits: {floor:.4f})\n", header]
  for name, row in results.items():
    lines.append(f"| {name} | " + " | ".join(f"{s:.4f} ({n})" for n, s, _ in row) + " |")
  lines += ["\n## RMS per pixel to a 500-step DPM-Solver++(2M) solve from the same noise (deterministic samplers)\n",
            header]
  for name, row in results.items():
    if row[0][2] is not None:
      lines.append(f"| {name} | " + " | ".join(f"{r:.2e} ({n})" for n, _, r in row) + " |")
  with open(os.path.join(HERE, "samplers_digits.md"), "w") as f:
    f.write("\n".join(lines))


def _plot(results, floor, path):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
  for i, (name, row) in enumerate(results.items()):
    nfe = [n for n, _, _ in row]
    style = dict(marker="o", label=name, color=f"C{i % 10}", linestyle="-" if i < 10 else "--")
    axes[0].plot(nfe, [s for _, s, _ in row], **style)
    if row[0][2] is not None:
      axes[1].loglog(nfe, [r for _, _, r in row], **style)
  axes[0].axhline(floor, color="k", ls="--", label="other training digits")
  axes[0].set(xlabel="NFE", ylabel="sliced W2 to training digits", yscale="log", title="sample quality")
  axes[1].set(xlabel="NFE", ylabel="RMS to 500-step solve", title="ODE discretisation error")
  axes[0].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)


if __name__ == "__main__":
  main()
