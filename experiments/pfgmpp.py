"""PFGM++ robustness against D (Xu et al. 2023, sec. 5.2): the same EDM recipe trained with
augmented dimension D, then sampled under three kinds of error.

  python experiments/pfgmpp.py --task digits   # 8x8 digits as 64-vectors; writes the README section + PNG
  python experiments/pfgmpp.py --task grid     # the 25-Gaussian grid in 2-D
  python experiments/pfgmpp.py --task grid --tiny --out /tmp/pfgmpp   # a smoke test (minutes)

Each D in `--dims` (default 16, 64, 128, 2048 and inf = EDM) trains `configs/pfgmpp/toy.py:<task>,D=<D>`
(trained on first use in `--workdir`, reused afterwards if its stored config is the same). Its EMA
network is then sampled with EDM's Heun sampler from its own prior, the noise and directions of
every sample shared across D and studies, in the paper's three studies:

  noise injection   x += alpha * sigma_i * z before every Heun step (the official generate_alpha.py),
                    alpha in {0, 0.1, 0.2}, 18 steps (35 NFE);
  quantization      every weight matrix quantized to 9 ... 5 bits by the official min-max rule
                    (`diffjax.models.quantize`), 35 NFE;
  NFE               Heun with 3 ... 18 steps (5 ... 35 NFE), as generate_steps.py sweeps small NFE.

Metrics against fresh data: on digits the Frechet distance in the library's digit-classifier
features (FD-digits, `metrics.digits_classifier.DigitsFeatures`) and sliced Wasserstein-2; on the
grid SW-2, the modes covered and the high-quality fraction (`distill.evaluation.sample_metrics`).
"""
import argparse
import importlib.util
import json
import math
import os
import platform
import sys
import time

import jax
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")
sys.path.insert(0, ROOT)

import _report  # noqa: E402
from diffjax import data as data_lib  # noqa: E402
from diffjax import experiment, samplers, timesteps, training  # noqa: E402
from diffjax.distill import evaluation  # noqa: E402
from diffjax.metrics.digits_classifier import DigitsFeatures  # noqa: E402
from diffjax.models import quantize  # noqa: E402

ALPHAS = (0.0, 0.1, 0.2)
BITS = (9, 8, 7, 6, 5)
STEPS = (3, 4, 5, 6, 8, 10, 13, 18)  # NFE = 2 * steps - 1
DEFAULT_DIMS = ("16", "64", "128", "2048", "inf")


def load_config(task, D, tiny):
  spec = importlib.util.spec_from_file_location("pfgmpp_toy_config", os.path.join(ROOT, "configs", "pfgmpp", "toy.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(f"{task},D={D}" + (",tiny" if tiny else ""))


def trained_run(config, workdir):
  """The run and its EMA parameters: trained into `workdir` unless a checkpoint of this config is there."""
  ckpt_dir = os.path.join(workdir, "checkpoints")
  done = os.path.isdir(ckpt_dir) and any(n.isdigit() and int(n) == config.training.num_steps
                                         for n in os.listdir(ckpt_dir))
  if not done and experiment.train_and_evaluate(config, workdir) is None:
    raise SystemExit(f"training in {workdir} was interrupted (checkpoint saved); rerun the command to resume")
  run = experiment.Run(config)
  state = run.restore(workdir, require_same_config=True)
  return run, run.sampling_params(state)


def train_minutes(workdir, log_every):
  rows = training.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
  return sum(log_every / r["steps_per_sec"] for r in rows if r.get("steps_per_sec")) / 60


class Studies:
  """Samples one trained network under each study's perturbation, with shared keys."""

  def __init__(self, run, params, n, seed):
    self.run, self.params, self.n = run, params, n
    self.den = experiment.make_denoiser(run.config, run.process, run.apply_fn)
    self.k_prior, self.k_inject = jax.random.split(jax.random.PRNGKey(seed))

  def sample(self, *, steps=18, alpha=0.0, bits=None):
    params = self.params if bits is None else quantize.quantize_params(self.params, bits)
    ts = timesteps.karras(steps, self.run.process.sigma_min, self.run.process.sigma_max)
    shape = (self.n,) + tuple(self.run.example_shape)
    return np.asarray(_sample(self.den, params, self.k_prior, self.k_inject, ts, self.run.process, shape, alpha))


def _sample(den, params, k_prior, k_inject, ts, process, shape, alpha):
  @jax.jit
  def go(params, ts):
    x = process.prior_sample(k_prior, shape)
    return samplers.heun(lambda x, t: den(params, x, t), x, ts, process=process, inject_noise=alpha,
                         key=k_inject if alpha > 0 else None)
  return go(params, ts)


def measure(task, samples, refs, key):
  data, floor, mixture, features = refs
  out = evaluation.sample_metrics(samples, data, key, floor_data=floor, mixture=mixture)
  if features is not None:
    out.update(features(samples))
  return out


def references(config, n, seed):
  data = data_lib.reference_samples(config.data, jax.random.PRNGKey(seed + 41), n)
  floor = data_lib.reference_samples(config.data, jax.random.PRNGKey(seed + 42), n)
  mixture = data_lib.toy_distribution(config.data)
  mixture = mixture if mixture is not None and hasattr(mixture, "means") else None
  features = DigitsFeatures(data) if config.data.name == "digits" else None
  return data, floor, mixture, features


def run_task(args):
  rows, samples_by = [], {}
  refs = None
  for D in args.dims:
    config = load_config(args.task, D, args.tiny)
    workdir = os.path.join(args.workdir, f"pfgmpp_{args.task}_D{D}" + ("_tiny" if args.tiny else ""))
    run, params = trained_run(config, workdir)
    n = min(config.eval.n_samples, args.n_samples)
    if refs is None:
      refs = references(config, n, config.seed)
    studies = Studies(run, params, n, seed=args.seed)
    minutes = train_minutes(workdir, config.training.log_every)
    plans = ([("alpha", a, dict(alpha=a)) for a in ALPHAS] + [("bits", b, dict(bits=b)) for b in BITS]
             + [("steps", s, dict(steps=s)) for s in STEPS if s != 18])
    for study, value, kwargs in plans:
      t0 = time.time()
      x = studies.sample(**kwargs)
      row = {"D": D, "study": study, "value": value, "nfe": 2 * kwargs.get("steps", 18) - 1,
             "train_minutes": minutes, "sample_seconds": time.time() - t0,
             **measure(args.task, x, refs, jax.random.PRNGKey(args.seed + 7))}
      rows.append(row)
      if study == "alpha" and value == 0.0:
        samples_by[D] = x
      print(json.dumps(row), flush=True)
  return rows, samples_by, refs


def primary(task):
  return ("fd_digits", "FD-digits") if task == "digits" else ("sliced_wasserstein", "SW-2")


def plot(rows, samples_by, task, dims, path, data):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  key, name = primary(task)
  fig, axes = plt.subplots(1, 3 + 1, figsize=(17, 3.8))
  panels = [("alpha", "injected noise alpha", ALPHAS), ("bits", "weight bits", BITS),
            ("steps", "NFE", STEPS)]
  for ax, (study, xlabel, values) in zip(axes, panels):
    for D in dims:
      pick = {r["value"]: r[key] for r in rows if r["D"] == D and r["study"] == study}
      base = [r[key] for r in rows if r["D"] == D and r["study"] == "alpha" and r["value"] == 0.0][0]
      if study == "steps":
        pick[18] = base
      xs = [v for v in values if v in pick]
      xv = [2 * v - 1 for v in xs] if study == "steps" else xs
      ax.plot(xv, [pick[v] for v in xs], "o-", label=f"D={D}" if D != "inf" else "D=inf (EDM)")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(name)
    ax.set_yscale("log")
    if study == "bits":
      ax.invert_xaxis()
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=7)
  ax = axes[3]
  D0 = dims[0]
  x = samples_by[D0]
  if task == "digits":
    grid = np.clip((np.asarray(x[:64]).reshape(8, 8, 8, 8).transpose(0, 2, 1, 3).reshape(64, 64) + 1) / 2, 0, 1)
    ax.imshow(grid, cmap="gray_r", vmin=0, vmax=1)
  else:
    ax.scatter(np.asarray(data)[:4000, 0], np.asarray(data)[:4000, 1], s=1, alpha=0.2, c="gray")
    ax.scatter(x[:4000, 0], x[:4000, 1], s=1, alpha=0.3)
    ax.set_xlim(-3.2, 3.2)
    ax.set_ylim(-3.2, 3.2)
  ax.set_title(f"D={D0}, 35 NFE samples", fontsize=8)
  ax.set_xticks([])
  ax.set_yticks([])
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def _value(rows, D, study, value, key):
  hit = [r[key] for r in rows if r["D"] == D and r["study"] == study and r["value"] == value]
  return hit[0] if hit else math.nan


def write_section(rows, task, args, out_dir, png):
  key, name = primary(task)
  dims = args.dims
  cmd = (f"python experiments/pfgmpp.py --task {task}" + ("" if tuple(dims) == DEFAULT_DIMS else f" --dims {','.join(dims)}")
         + (" --tiny" if args.tiny else ""))
  title = {"digits": "8x8 digits (N = 64)", "grid": "25-Gaussian grid (N = 2)"}[task]
  base = {D: _value(rows, D, "alpha", 0.0, key) for D in dims}
  floor = rows[0].get("sliced_wasserstein_floor")
  cfg = load_config(task, dims[0], args.tiny)
  lines = [
      f"## PFGM++ against D: {title}",
      "",
      f"Produced by `{cmd}` (one training run per D, one seed; {platform.machine()}, {os.cpu_count()} CPU cores, "
      f"JAX {jax.__version__}). Each D trains `configs/pfgmpp/toy.py:{task},D=<D>` with the same EDM recipe "
      f"({cfg.training.num_steps} steps, batch {cfg.data.batch_size}); only the perturbation kernel changes "
      "(D = inf is EDM). Heun from each model's prior; all rows share the prior noise directions' key and the "
      f"injected noise. {name} over {min(cfg.eval.n_samples, args.n_samples)} samples against fresh data"
      + (f" (data-vs-data SW-2 floor {floor:.4f})" if floor is not None else "") + "; lower is better.",
      "",
      f"**Injected noise** (x += alpha sigma_i z before every step, 35 NFE): {name}, and in brackets the ratio "
      "to the same model at alpha = 0.",
      "",
      "| D | train min | alpha = 0 | alpha = 0.1 | alpha = 0.2 |",
      "|---|---|---|---|---|",
  ]
  for D in dims:
    minutes = [r["train_minutes"] for r in rows if r["D"] == D][0]
    cells = [f"{base[D]:.4g}"] + [f"{_value(rows, D, 'alpha', a, key):.4g} ({_value(rows, D, 'alpha', a, key) / base[D]:.2f}x)"
                                   for a in ALPHAS[1:]]
    lines.append(f"| {D} | {minutes:.1f} | " + " | ".join(cells) + " |")
  lines += ["", f"**Weight quantization** (all weight matrices, min-max per tensor; 35 NFE): {name} (ratio to full precision).",
            "", "| D | full | " + " | ".join(f"{b} bits" for b in BITS) + " |",
            "|---|---|" + "---|" * len(BITS)]
  for D in dims:
    cells = [f"{base[D]:.4g}"] + [f"{_value(rows, D, 'bits', b, key):.4g} ({_value(rows, D, 'bits', b, key) / base[D]:.2f}x)"
                                   for b in BITS]
    lines.append(f"| {D} | " + " | ".join(cells) + " |")
  nfe_steps = [s for s in STEPS if s != 18]
  lines += ["", f"**NFE** (Heun steps s, NFE = 2s - 1): {name}.", "",
            "| D | " + " | ".join(f"{2 * s - 1}" for s in nfe_steps) + " | 35 |",
            "|---|" + "---|" * (len(nfe_steps) + 1)]
  for D in dims:
    cells = [f"{_value(rows, D, 'steps', s, key):.4g}" for s in nfe_steps] + [f"{base[D]:.4g}"]
    lines.append(f"| {D} | " + " | ".join(cells) + " |")
  if task == "grid":
    lines += ["", "Modes covered (of 25) / high-quality fraction at 35 NFE, alpha = 0 and 0.2:", ""]
    for D in dims:
      r0 = [r for r in rows if r["D"] == D and r["study"] == "alpha" and r["value"] == 0.0][0]
      r2 = [r for r in rows if r["D"] == D and r["study"] == "alpha" and r["value"] == 0.2][0]
      lines.append(f"- D = {D}: {r0['modes_covered']} / {r0['hq_fraction']:.2f}; alpha 0.2: "
                   f"{r2['modes_covered']} / {r2['hq_fraction']:.2f}")
  lines += ["", f"![PFGM++ studies on {task}]({png})", ""]
  _report.write_section(out_dir, f"## PFGM++ against D: {title}", "\n".join(lines))


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--task", choices=("digits", "grid"), default="digits")
  parser.add_argument("--dims", default=",".join(DEFAULT_DIMS), help="comma-separated D values; 'inf' is EDM")
  parser.add_argument("--tiny", action="store_true")
  parser.add_argument("--n_samples", type=int, default=10_000)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--workdir", default="/tmp/diffjax_pfgmpp")
  parser.add_argument("--out", default=HERE)
  args = parser.parse_args()
  args.dims = [d.strip() for d in args.dims.split(",") if d.strip()]
  os.makedirs(args.out, exist_ok=True)
  rows, samples_by, refs = run_task(args)
  suffix = "_tiny" if args.tiny else ""
  with open(os.path.join(args.out, f"pfgmpp_{args.task}{suffix}.json"), "w") as f:
    json.dump(rows, f, indent=1)
  png = f"pfgmpp_{args.task}{suffix}.png"
  plot(rows, samples_by, args.task, args.dims, os.path.join(args.out, png), refs[0])
  write_section(rows, args.task, args, args.out, png)


if __name__ == "__main__":
  main()
