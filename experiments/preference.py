"""Preference optimisation at small scale: Diffusion-DPO, RankDPO, D3PO, SPO and DDO over a beta grid.

  python experiments/preference.py --task ring      # writes the experiments/README.md section + PNG
  python experiments/preference.py --task digits
  python experiments/preference.py --task ring --tiny --out /tmp/pref   # seconds, a smoke test

Each method runs its config (configs/<method>/toy.py:<task>) for every beta of its grid, starting from
the same reference model (configs/preference/<task>_base.py, trained on first use), and reports
the final policy's mean reward, accuracy (target-mode hit on the ring, classifier agreement with
the prompted class on digits), mode coverage, and two divergences from the reference: the exact
path KL of the 20-step DDIM (eta 1) sampler and the MMD between policy and reference samples.
SFT on the winners is the reference-free baseline. The reward-vs-KL frontier is plotted.

The offline methods (Diffusion-DPO, RankDPO, SFT) train on the same generated images: lists of 4
per prompt from two generators of the reference; RankDPO ranks each list, Diffusion-DPO and SFT
use its two disjoint pairs (equal generation budget, equal images per step).
"""
import argparse
import importlib.util
import json
import os
import platform
import sys
import time

import jax

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")
sys.path.insert(0, ROOT)

import _report  # noqa: E402
from diffjax.finetune import run as ft_run  # noqa: E402
from diffjax.finetune import tasks  # noqa: E402

GRIDS = {
    "ring": {"diffusion_dpo": [100.0, 300.0, 1000.0, 3000.0], "rank_dpo": [100.0, 300.0, 1000.0, 3000.0],
             "d3po": [0.1, 1.0, 10.0], "spo": [0.1, 1.0, 10.0], "ddo": [0.1, 1.0], "sft": [None]},
    "digits": {"diffusion_dpo": [1000.0, 10000.0], "rank_dpo": [1000.0, 10000.0], "d3po": [1.0, 10.0],
               "spo": [1.0, 10.0], "ddo": [0.1], "sft": [None]},
}
LABELS = {"diffusion_dpo": "Diffusion-DPO", "rank_dpo": "RankDPO (k=4)", "d3po": "D3PO", "spo": "SPO",
          "ddo": "DDO", "sft": "SFT (winners)"}


def load_config(method, task, tiny):
  name = "diffusion_dpo" if method == "sft" else method
  path = os.path.join(ROOT, "configs", name, "toy.py")
  spec = importlib.util.spec_from_file_location(f"pref_{name}_{task}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(task + (",tiny" if tiny else ""))
  if method == "sft":
    config.method, config.method_options = "sft", {}
  return config


def run_grid(task_name, methods, tiny, workdir):
  task = tasks.get_task(task_name)
  rows = []
  for method in methods:
    for beta in GRIDS[task_name][method]:
      config = load_config(method, task_name, tiny)
      if beta is not None:
        config.method_options.beta = beta
      tag = f"{method}" + ("" if beta is None else f"_beta{beta:g}")
      print(f"--- {task_name}: {tag}", flush=True)
      start = time.time()
      run_dir = os.path.join(workdir, task_name, tag)
      result = ft_run.finetune(config, run_dir, task=task)
      row = {"method": method, "beta": beta, **result[-1], "reference": result[0],
             "minutes": (time.time() - start) / 60, "steps": int(result[-1]["step"]),
             "rounds": config.rounds.num_rounds, "n_samples": config.eval.n_samples,
             "train_log": train_log(run_dir, config.rounds.num_rounds)}
      print({k: v for k, v in row.items() if k not in ("reference", "mode_shares")}, flush=True)
      rows.append(row)
  return rows


def train_log(run_dir, rounds):
  """The logged training metrics of the last round (metrics.jsonl of the foundation's loop)."""
  path = os.path.join(run_dir, f"round_{rounds - 1}", "metrics.jsonl")
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def dpo_displacement_lines(rows):
  """Diffusion-DPO's winner/loser denoising errors relative to the reference during training.

  The official loss logs reward_w = -beta/2 (err_w - ref_err_w); Delta err = -2 reward / beta.
  """
  dpo = [r for r in rows if r["method"] == "diffusion_dpo" and r.get("train_log")]
  if not dpo:
    return []
  lines = ["Diffusion-DPO during training (from each run's `metrics.jsonl`: one batch of pairs at the first, "
           "middle and last logged step): the change of the policy's denoising error (eps-MSE per dimension) "
           "against the reference's on the winners and on the losers, `Delta err = err_policy - err_ref = "
           "-2 reward / beta`, and the implicit accuracy at the last step. A positive Delta err on the winners is "
           "the likelihood displacement of DPO: the policy separates the pair by fitting the losers worse, and "
           "its winners worse too.", "",
           "| beta | steps | Delta err winners | Delta err losers | implicit accuracy |", "|---|---|---|---|---|"]
  for r in dpo:
    logs = [m for m in r["train_log"] if "reward_w" in m]
    if not logs:
      continue
    picked = [logs[0], logs[len(logs) // 2], logs[-1]] if len(logs) >= 3 else logs
    fmt = lambda key: " / ".join(f"{-2 * m[key] / r['beta']:+.4f}" for m in picked)
    lines.append(f"| {r['beta']:g} | {' / '.join(str(m['step']) for m in picked)} | {fmt('reward_w')} | "
                 f"{fmt('reward_l')} | {picked[-1]['implicit_acc']:.2f} |")
  return lines + [""]


def offline_data_lines(task_name, rows, workdir):
  """How good the offline methods' pairs are: their count and the winners' and losers' accuracy."""
  dpo = [r for r in rows if r["method"] == "diffusion_dpo"]
  if not dpo:
    return []
  import jax.numpy as jnp
  from diffjax.data import preference as pref_data
  tag = f"diffusion_dpo_beta{dpo[0]['beta']:g}"
  data = pref_data.load_preference_dataset(os.path.join(workdir, task_name, tag, "preference_data"))
  pairs = ft_run.disjoint_pairs(data)
  task = tasks.get_task(task_name)
  acc = lambda x: float(jnp.mean(task.accuracy_fn(jnp.asarray(x), jnp.asarray(pairs["cond"]))))
  n_lists, k = data.samples.shape[:2]
  return [f"Offline data (the same for Diffusion-DPO, RankDPO and SFT): {n_lists:,} prompts x {k} images; of their "
          f"{n_lists * (k // 2):,} disjoint pairs, the {len(pairs['x_w']):,} without a tie in the win counts have "
          f"winners with {'target-mode' if task_name == 'ring' else 'class'} accuracy {acc(pairs['x_w']):.3f} and "
          f"losers {acc(pairs['x_l']):.3f}.", ""]


def plot_frontier(rows, path, task_name):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  key = "accuracy"
  for method in dict.fromkeys(r["method"] for r in rows):
    rs = sorted([r for r in rows if r["method"] == method], key=lambda r: r["path_kl"])
    kl = [max(r["path_kl"], 1e-4) for r in rs]
    for ax, metric in zip(axes, ("reward", key)):
      ax.plot(kl, [r[metric] for r in rs], "o-", label=LABELS[method])
      for r, k in zip(rs, kl):
        if r["beta"] is not None:
          ax.annotate(f"{r['beta']:g}", (k, r[metric]), fontsize=7, xytext=(3, 3), textcoords="offset points")
  ref = rows[0]["reference"]
  for ax, metric in zip(axes, ("reward", key)):
    ax.axhline(ref[metric], color="gray", ls="--", lw=1, label="reference")
    ax.set_xscale("log")
    ax.set_xlabel("path KL(policy || reference) of the 20-step DDIM sampler")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=8)
  fig.suptitle(f"Preference fine-tuning on {task_name}: reward vs divergence (labels: beta)")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def write_section(rows, task_name, args, out_dir):
  ref = rows[0]["reference"]
  ring = task_name == "ring"
  acc_name = "target-mode accuracy" if ring else "class accuracy"
  reward_name = "reward (-distance to mode 0)" if ring else "reward (log p(class))"
  cmd = f"python experiments/preference.py --task {task_name}" + (" --tiny" if args.tiny else "")
  lines = [
      f"## Preference optimization: {task_name}",
      "",
      f"Produced by `{cmd}` (one run, one seed; {platform.machine()}, {os.cpu_count()} CPU cores, JAX "
      f"{jax.__version__}). Every method starts from the same reference "
      f"(`configs/preference/{task_name}_base.py`) and runs its config `configs/<method>/toy.py:{task_name}` with the "
      f"beta in the table; metrics of the final policy on {rows[0]['n_samples']:,} samples of the 20-step DDIM "
      "(eta 1) sampler. "
      "Path KL: the exact KL between the policy's and the reference's sampling chains (mean over "
      "trajectories, with its standard error), an upper bound on the KL of the samples; sample MMD: "
      "policy samples vs reference samples; data MMD: policy samples vs held-out data.",
      "",
      f"| method | beta | rounds x steps | {reward_name} | {acc_name} | "
      + ("modes covered / off-mode | " if ring else "") + "path KL | sample MMD | data MMD | minutes |",
      "|---|---|---|---|---|" + ("---|" if ring else "") + "---|---|---|---|",
      f"| reference | | | {ref['reward']:.3f} | {ref['accuracy']:.3f} | "
      + (f"{ref['modes_covered']} / {ref['off_mode']:.3f} | " if ring else "")
      + f"0 | 0 | {ref['data_mmd']:.4f} | |",
  ]
  for r in rows:
    beta = "" if r["beta"] is None else f"{r['beta']:g}"
    rounds = f"{r['rounds']} x {r['steps'] // r['rounds']}"
    lines.append(
        f"| {LABELS[r['method']]} | {beta} | {rounds} | {r['reward']:.3f} | {r['accuracy']:.3f} | "
        + (f"{r['modes_covered']} / {r['off_mode']:.3f} | " if ring else "")
        + f"{r['path_kl']:.3g} ± {r['path_kl_se']:.2g} | {r['sample_mmd']:.4f} | {r['data_mmd']:.4f} | "
        f"{r['minutes']:.1f} |")
  png = f"preference_{task_name}.png"
  lines += ["", f"![reward vs KL, {task_name}]({png})", ""] + offline_data_lines(task_name, rows, args.workdir)
  lines += dpo_displacement_lines(rows)
  section = "\n".join(lines) + "\n"
  _report.write_section(out_dir, f"## Preference optimization: {task_name}", section)
  print(section)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--task", choices=sorted(GRIDS), default="ring")
  parser.add_argument("--methods", default="diffusion_dpo,rank_dpo,sft,d3po,spo,ddo")
  parser.add_argument("--tiny", action="store_true", help="tiny configs (seconds; smoke test)")
  parser.add_argument("--workdir", default="/tmp/diffjax_preference_experiment")
  parser.add_argument("--out", default=HERE)
  parser.add_argument("--report_only", action="store_true",
                      help="rewrite the README section and plot from --out's JSON and --workdir's logs (no training)")
  args = parser.parse_args()
  methods = args.methods.split(",")
  unknown = sorted(set(methods) - set(GRIDS[args.task]))
  if unknown:
    raise ValueError(f"--methods: unknown {unknown}; valid: {sorted(GRIDS[args.task])}")
  os.makedirs(args.out, exist_ok=True)
  json_path = os.path.join(args.out, f"preference_{args.task}.json")
  if args.report_only:  # rewrite the section and plot from a finished run (its JSON and workdir)
    with open(json_path) as f:
      rows = json.load(f)
    for r in rows:
      if "train_log" not in r:
        tag = r["method"] + ("" if r["beta"] is None else f"_beta{r['beta']:g}")
        r["train_log"] = train_log(os.path.join(args.workdir, args.task, tag), r["rounds"])
  else:
    rows = run_grid(args.task, methods, args.tiny, args.workdir)
  with open(json_path, "w") as f:
    json.dump(rows, f, indent=1)
  plot_frontier(rows, os.path.join(args.out, f"preference_{args.task}.png"), args.task)
  write_section(rows, args.task, args, args.out)


if __name__ == "__main__":
  main()
