"""MLKD (Wu et al., ACL 2023) on the offline real-text benchmark: a student LM distilled from a
fine-tuned teacher detects out-of-distribution sentences by its perplexity.

  python experiments/mlkd.py                                   # configs/mlkd/offline.py, 3 seeds
  python experiments/mlkd.py --config=configs/mlkd/offline.py:tiny --seeds=2 --out=/tmp/mlkd

1. The GPT-2 stand-in: a tokenizer and an LM pretrained once on the benchmark's `pretrain` text
   (`diffjax.mlkd.run.pretrain_lm`), saved in Hugging Face format, shared by every seed as the
   paper's pretrained GPT-2 is.
2. Per training seed (the data split is fixed): the teacher M_finetune (that LM fine-tuned on the
   ID text), and four students from a random init: MLKD, the prediction-layer-only and
   intermediate-layer-only ablations, and M_fromScratch (LM loss only).
3. AUROC / AUPR-OUT / AUPR-IN / FAR95 of each model's perplexity (and the distilled students'
   KL + hidden-state discrepancy, `kd_loss`), mean and standard deviation over seeds, and the
   AUROC per OOD source.

Writes mlkd.json, mlkd.png and the README section into --out.
"""
import argparse
import json
import os
import platform
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")
sys.path.insert(0, ROOT)

import _report  # noqa: E402
from diffjax.configuration import load_config_file  # noqa: E402
from diffjax.data import text as text_lib  # noqa: E402
from diffjax.metrics import ood  # noqa: E402
from diffjax.mlkd import run as mlkd_run  # noqa: E402

DEFAULT_CONFIG = "configs/mlkd/offline.py"
MODELS = ("teacher_finetuned", "from_scratch", "prediction_only", "intermediate_only", "mlkd")
LABELS = {"teacher_finetuned": "M_finetune (teacher)", "from_scratch": "M_fromScratch", "prediction_only":
          "MLKD, prediction layer only", "intermediate_only": "MLKD, intermediate layers only", "mlkd": "MLKD"}
METRICS = ("auroc", "aupr_out", "aupr_in", "far95")


def run_seeds(config, seeds, workdir):
  """Pretrains the shared LM once, then runs every seed; returns {seed: results rows}."""
  pretrained = mlkd_run.pretrain_lm(config, os.path.join(workdir, "shared"))
  out = {}
  for seed in seeds:
    c = type(config)(config.to_dict())
    c.seed = int(seed)
    c.model.pretrained_dir = pretrained
    c.data.tokenizer_dir = pretrained
    out[int(seed)] = mlkd_run.train_and_evaluate(c, os.path.join(workdir, f"seed_{seed}"))
  return out


def per_source_auroc(config, workdir, seeds):
  """AUROC of each model's perplexity against each OOD source alone, mean over seeds."""
  splits = mlkd_run.load_splits(config)
  sources = np.asarray(splits.ood_sources)
  table = {}
  for name in MODELS:
    per_seed = []
    for seed in seeds:
      path = os.path.join(workdir, f"seed_{seed}", f"scores_{name}.npz")
      if not os.path.exists(path):
        break
      s = np.load(path)
      per_seed.append({src: 100 * ood.auroc(s["id_perplexity"], s["ood_perplexity"][sources == src])
                       for src in sorted(set(sources))})
    if per_seed:
      table[name] = {src: float(np.mean([p[src] for p in per_seed])) for src in per_seed[0]}
  return table


def summarize(results):
  """{(model, score): {metric: (mean, std, values)}} over seeds."""
  summary = {}
  for rows in results.values():
    for row in rows:
      key = (row["model"], row["score"])
      for m in METRICS + ("id_perplexity", "ood_perplexity"):
        if m in row:
          summary.setdefault(key, {}).setdefault(m, []).append(row[m])
  return {k: {m: (float(np.mean(v)), float(np.std(v)), v) for m, v in ms.items()} for k, ms in summary.items()}


def plot(summary, per_source, path, title):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  names = [m for m in MODELS if (m, "perplexity") in summary]
  fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
  x = np.arange(len(names))
  for i, (metric, label) in enumerate((("auroc", "AUROC"), ("aupr_out", "AUPR-OUT"), ("far95", "FAR95 (lower is better)"))):
    means = [summary[(n, "perplexity")][metric][0] for n in names]
    stds = [summary[(n, "perplexity")][metric][1] for n in names]
    axes[0].bar(x + (i - 1) * 0.27, means, 0.27, yerr=stds, capsize=3, label=label)
  axes[0].set_xticks(x, [LABELS[n].replace(", ", ",\n") for n in names], fontsize=7)
  axes[0].set_ylabel("% (perplexity score, mean +- std over seeds)")
  axes[0].legend(fontsize=8)
  axes[0].set_title(title, fontsize=9)
  sources = sorted(next(iter(per_source.values()))) if per_source else []
  for j, src in enumerate(sources):
    axes[1].bar(x + (j - (len(sources) - 1) / 2) * 0.8 / len(sources), [per_source[n][src] for n in names],
                0.8 / len(sources), label=src)
  axes[1].set_xticks(x, [LABELS[n].replace(", ", ",\n") for n in names], fontsize=7)
  axes[1].set_ylabel("AUROC % against one OOD source")
  axes[1].set_ylim(40, 100)
  axes[1].legend(fontsize=8)
  axes[1].set_title("perplexity AUROC per OOD source (mean over seeds)", fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def _fmt(stat, digits=2):
  mean, std, _ = stat
  return f"{mean:.{digits}f} ± {std:.{digits}f}"


def section(summary, per_source, sizes, config_arg, seeds, minutes, command):
  lines = ["## MLKD: text OOD detection by multi-level knowledge distillation", "",
           f"`{command}` ({minutes:.0f} min on {platform.machine()}, {os.cpu_count()} CPU cores; config "
           f"`{config_arg}`; seeds {', '.join(map(str, seeds))}; results in `mlkd.json`, plot `mlkd.png`).", "",
           f"Offline benchmark (`diffjax.data.text.offline_benchmark`): ID = news sentences, {sizes['train']} train / "
           f"{sizes['test_id']} test; OOD = {sizes['test_ood']} sentences from movie reviews, 20 Newsgroups posts and "
           f"chatterbot dialogue; the teacher's stand-in for GPT-2 pretraining: {sizes['pretrain']} other sentences; "
           f"byte-level BPE of {sizes['vocab_size']} tokens. Score = the model's perplexity (higher = OOD); all "
           "numbers in %, mean ± std over seeds.", "",
           "| model | AUROC ↑ | AUPR-OUT ↑ | AUPR-IN ↑ | FAR95 ↓ | ID ppl | OOD ppl |",
           "|---|---|---|---|---|---|---|"]
  for name in MODELS:
    s = summary.get((name, "perplexity"))
    if s is None:
      continue
    lines.append(f"| {LABELS[name]} | " + " | ".join(_fmt(s[m]) for m in METRICS) +
                 f" | {s['id_perplexity'][0]:.1f} | {s['ood_perplexity'][0]:.1f} |")
  kd_rows = [(n, summary[(n, "kd_loss")]) for n in MODELS if (n, "kd_loss") in summary]
  if kd_rows:
    lines += ["", "The distillation discrepancy as the score instead (`eval.scores = kd_loss`: token KL to the "
              "teacher + the student layers' top-2 hidden-state distances):", "",
              "| student | AUROC ↑ | AUPR-OUT ↑ | AUPR-IN ↑ | FAR95 ↓ |", "|---|---|---|---|---|"]
    lines += [f"| {LABELS[n]} | " + " | ".join(_fmt(s[m]) for m in METRICS) + " |" for n, s in kd_rows]
  if per_source:
    sources = sorted(next(iter(per_source.values())))
    lines += ["", "Perplexity AUROC against each OOD source alone (mean over seeds):", "",
              "| model | " + " | ".join(sources) + " |", "|---|" + "---|" * len(sources)]
    lines += [f"| {LABELS[n]} | " + " | ".join(f"{per_source[n][s]:.2f}" for s in sources) + " |"
              for n in MODELS if n in per_source]
  lines += ["", "Paper, CLINC150 with GPT-2 small (5 seeds): MLKD 92.51 / 70.94 / 27.16 (AUROC / AUPR / FAR95), "
            "M_finetune 89.76 / 62.39 / 33.77, M_fromScratch 91.73 / 68.78 / 28.31.", ""]
  return "\n".join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", default=DEFAULT_CONFIG)
  parser.add_argument("--seeds", type=int, default=3, help="number of training seeds (0, 1, ...)")
  parser.add_argument("--workdir", default="/tmp/diffjax_mlkd", help="checkpoints; a rerun resumes")
  parser.add_argument("--out", default=HERE)
  args = parser.parse_args()
  path, _, options = args.config.partition(":")
  config = load_config_file(os.path.join(ROOT, path) if not os.path.isabs(path) else path, options)
  seeds = list(range(args.seeds))
  start = time.time()
  results = run_seeds(config, seeds, args.workdir)
  minutes = (time.time() - start) / 60
  summary = summarize(results)
  per_source = per_source_auroc(config, args.workdir, seeds)
  with open(os.path.join(args.workdir, "seed_0", "results.json")) as f:
    sizes = json.load(f)["sizes"]
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "mlkd.json"), "w") as f:
    json.dump({"config": args.config, "seeds": seeds, "sizes": sizes, "minutes": minutes,
               "summary": {f"{m}/{s}": {k: {"mean": v[0], "std": v[1], "values": v[2]} for k, v in ms.items()}
                           for (m, s), ms in summary.items()},
               "per_source_auroc": per_source, "per_seed": results}, f, indent=1)
  splits_name = text_lib.offline_benchmark.__name__ if config.data.source == "offline" else config.data.source
  plot(summary, per_source, os.path.join(args.out, "mlkd.png"), f"MLKD, {splits_name} ({len(seeds)} seeds)")
  command = "python experiments/mlkd.py" + ("" if args.config == DEFAULT_CONFIG else f" --config={args.config}") + (
      "" if args.seeds == 3 else f" --seeds={args.seeds}")
  _report.write_section(args.out, "## MLKD", section(summary, per_source, sizes, args.config, seeds, minutes,
                                                     command))
  print(json.dumps({f"{m}/{s}": {k: v[:2] for k, v in ms.items()} for (m, s), ms in summary.items()}, indent=1))


if __name__ == "__main__":
  main()
