"""Score estimation with a GD-trained two-layer network, as kernel regression with noisy labels
(Han, Razaviyayn & Xu, ICLR 2024), measured on a Gaussian mixture with exact scores.

  python experiments/score_estimation.py --config=configs/score_estimation/gmm2d.py
  python experiments/score_estimation.py --config=configs/score_estimation/gmm2d.py:tiny --out=/tmp/se

Denoising score matching is run as the paper's regression of X_0 on (t, X_t): the network f_W
is trained by full-batch GD on (1/2n) sum ||f_W(u_i) - x_0,i||^2, and its score is
(alpha_t f_W - x) / sigma_t^2. The test error is E ||f_W - f*||^2 over fresh (t, X_t), with
f* = E[X_0 | X_t] exact for the mixture; a score error is the same quantity weighted by
alpha_t^2 / sigma_t^4 (study `time`).

Next to every network run: the kernel predictor of `diffjax.theory.kernel_gd_predictor` with the
network's empirical NTK at initialisation (the linearised network), and with the infinite-width
NTK. Stopping rules (`diffjax.theory.early_stopping`): the oracle (smallest test error), the
held-out rule (smallest loss on a fresh validation set of val_fraction * n triples) and the
Raskutti-Wainwright-Yu empirical-kernel rule on the NTK at initialisation with the exact
label-noise level.

Writes score_estimation.json, score_estimation.png and the README section into --out.
"""
import argparse
import json
import os
import platform
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import scipy.stats  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")
sys.path.insert(0, ROOT)

import _report  # noqa: E402
from diffjax import theory  # noqa: E402
from diffjax.configuration import load_config_file  # noqa: E402
from diffjax.data.toy import GaussianMixture  # noqa: E402

DEFAULT_CONFIG = "configs/score_estimation/gmm2d.py"


# --- the problem -------------------------------------------------------------------------------
class Problem:
  """The mixture, the OU process, the shared test set and the exact label-noise level."""

  def __init__(self, config):
    data = config.data
    means = jnp.asarray(data.means, jnp.float64)
    self.mixture = GaussianMixture(jnp.ones(means.shape[0]), means, data.std**2)
    self.process = theory.ou_process(data.t0, data.T)
    self.dim = means.shape[1]
    self.test, self.u_test = self.draw(jax.random.PRNGKey(10_000), data.n_test)
    self.f_test = self.target(self.test)
    big, _ = self.draw(jax.random.PRNGKey(10_001), 100_000)
    self.noise_std = float(jnp.sqrt(theory.label_noise_variance(self.mixture, big, self.process)))
    t_grid = np.linspace(data.t0, data.T, data.time_grid)
    self.t_grid = t_grid
    key_x, key_z = jax.random.split(jax.random.PRNGKey(10_002))
    x0 = self.mixture.sample(key_x, data.time_grid * data.per_time)
    t = jnp.repeat(jnp.asarray(t_grid), data.per_time)
    noise = jax.random.normal(key_z, x0.shape, x0.dtype)
    self.grid = theory.RegressionData(x0, t, noise, self.process.marginal(x0, t, noise))
    self.u_grid = theory.score_features(self.grid.x_t, self.grid.t)
    self.f_grid = self.target(self.grid)

  def draw(self, key, n):
    key_x, key_t = jax.random.split(key)
    data = theory.regression_data(key_t, self.mixture.sample(key_x, n), self.process)
    return data, theory.score_features(data.x_t, data.t)

  def target(self, data):
    return self.mixture.denoiser(data.x_t, data.t, self.process)


def squared_error(pred, target):
  """Mean over examples of ||pred - target||^2, for predictions (..., n, d)."""
  return np.mean(np.sum((np.asarray(pred) - np.asarray(target))**2, -1), -1)


# --- one run -----------------------------------------------------------------------------------
def run(problem, config, *, n, width, seed, max_steps, radii=(1.0,), extra_steps=(),
        infinite_kernel=True, on_grid=False, progress=False):
  """Trains one network and its kernel predictors; returns per-checkpoint errors and stopping steps.

  The RWY rule is evaluated for each RKHS radius in `radii`; its steps become checkpoints.
  """
  key = jax.random.fold_in(jax.random.PRNGKey(seed), n)
  key_train, key_val, key_init = jax.random.split(key, 3)
  train, u = problem.draw(key_train, n)
  val, u_val = problem.draw(key_val, max(int(config.data.val_fraction * n), 8))
  in_dim = u.shape[1]
  model, w0 = theory.init_two_layer_relu(key_init, in_dim, problem.dim, width,
                                         antisymmetric=config.model.antisymmetric, dtype=jnp.float64)
  lr = config.training.lr
  kernel = theory.two_layer_relu_ntk(w0, model.a, u)
  stable = float(theory.max_stable_lr(kernel, n))
  if lr >= stable:
    raise ValueError(f"training.lr={lr} is not below the stable step size {stable:.3f} of this kernel")
  rwy_steps = [theory.kernel_stopping_step(kernel, lr=lr, noise_std=problem.noise_std, max_steps=max_steps,
                                           rkhs_radius=radius)[0] for radius in radii]
  steps = np.union1d(theory.gd_checkpoints(max_steps, config.training.num_checkpoints),
                     [*rwy_steps, *extra_steps])
  evaluate = {"test": problem.u_test, "val": u_val}
  if on_grid:
    evaluate["grid"] = problem.u_grid
  started = time.time()
  net = theory.train_by_gd(model, w0, u, train.x0, lr=lr, checkpoints=steps, evaluate=evaluate,
                           progress=progress)
  seconds = time.time() - started
  f0 = {"f0_train": model(w0, u), "f0_test": model(w0, problem.u_test)}
  linear = theory.kernel_gd_predictor(kernel, theory.two_layer_relu_ntk(w0, model.a, problem.u_test, u),
                                      train.x0, lr=lr, steps=steps, **f0)["test"]
  pred = net["predictions"]["test"]
  out = {
      "n": n, "width": width, "seed": seed, "steps": steps.tolist(), "seconds": seconds,
      "test_error": squared_error(pred, problem.f_test).tolist(),
      "val_loss": squared_error(net["predictions"]["val"], val.x0).tolist(),
      "train_loss": net["train_loss"].tolist(),
      "movement": net["movement"].tolist(),
      "kernel_test_error": squared_error(linear, problem.f_test).tolist(),
      "gap": squared_error(pred, linear).tolist(),
      "radii": list(radii), "rwy_steps": rwy_steps,
  }
  if infinite_kernel:
    k_inf = theory.relu_ntk_infinite_width(u)
    limit = theory.kernel_gd_predictor(k_inf, theory.relu_ntk_infinite_width(problem.u_test, u),
                                       train.x0, lr=lr, steps=steps)["test"]
    out["infinite_kernel_test_error"] = squared_error(limit, problem.f_test).tolist()
    out["gap_infinite"] = squared_error(pred, limit).tolist()
  out["oracle_step"], oracle = theory.best_step(steps, out["test_error"])
  out["val_step"], chosen = theory.best_step(steps, out["val_loss"])
  out["rwy_errors"] = [out["test_error"][int(np.searchsorted(steps, st))] for st in rwy_steps]
  out["rwy_step"], out["rwy_error"] = rwy_steps[0], out["rwy_errors"][0]
  out["rwy_cal_step"], out["rwy_cal_error"] = rwy_steps[-1], out["rwy_errors"][-1]
  out["oracle_error"], out["val_error"] = out["test_error"][oracle], out["test_error"][chosen]
  out["final_error"] = out["test_error"][-1]
  out["kernel_oracle_error"] = float(np.min(out["kernel_test_error"]))
  if on_grid:
    grid = net["predictions"]["grid"]
    per_t = lambda p: squared_error(np.asarray(p).reshape(len(problem.t_grid), -1, problem.dim),
                                    np.asarray(problem.f_grid).reshape(len(problem.t_grid), -1, problem.dim))
    weight = np.asarray(theory.score_error_weight(jnp.asarray(problem.t_grid), problem.process))
    out["t_grid"] = problem.t_grid.tolist()
    out["f_error_by_t"] = {"oracle": per_t(grid[oracle]).tolist(), "final": per_t(grid[-1]).tolist()}
    out["score_error_by_t"] = {k: (np.asarray(v) * weight).tolist() for k, v in out["f_error_by_t"].items()}
  return out


# --- studies -----------------------------------------------------------------------------------
def study_curve(problem, config):
  """The training curve, with the RWY rule for every radius of the calibration grid."""
  c = config.curve
  radii = [1.0, *config.stopping.radius_grid]
  out = run(problem, config, n=c.n, width=c.width, seed=c.seed, max_steps=c.max_steps, radii=radii, progress=True)
  # the radius whose RWY step is closest to the oracle step (in log steps): one constant, fitted
  # on this run only and then used unchanged by the other studies
  gaps = [abs(np.log1p(st) - np.log1p(out["oracle_step"])) for st in out["rwy_steps"][1:]]
  best = int(np.argmin(gaps))
  out["calibrated_radius"] = float(config.stopping.radius_grid[best])
  out["rwy_cal_step"], out["rwy_cal_error"] = out["rwy_steps"][1 + best], out["rwy_errors"][1 + best]
  return out


def study_width(problem, config, radius):
  c = config.width
  jobs = [(m, s) for m in c.widths for s in range(c.seeds)]
  return [run(problem, config, n=c.n, width=m, seed=s, max_steps=c.max_steps, radii=(1.0, radius),
              extra_steps=c.gap_steps)
          for m, s in tqdm(jobs, desc="width study", unit="run")]


def study_sample_size(problem, config, radius):
  c = config.sample_size
  jobs = [(n, s) for n in c.ns for s in range(c.seeds)]
  return [run(problem, config, n=n, width=c.width, seed=s, max_steps=c.max_steps, radii=(1.0, radius),
              infinite_kernel=False, on_grid=s == 0)
          for n, s in tqdm(jobs, desc="sample-size study", unit="run")]


def loglog_slope(x, y):
  return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def slope_with_ci(rows, ns, key):
  """Per-seed log-log slope of rows[key] against n; mean and 95% t-interval over seeds."""
  seeds = sorted({r["seed"] for r in rows})
  slopes = []
  for s in seeds:
    by_n = {r["n"]: r[key] for r in rows if r["seed"] == s}
    slopes.append(loglog_slope(ns, [by_n[n] for n in ns]))
  slopes = np.array(slopes)
  half = scipy.stats.t.ppf(0.975, len(slopes) - 1) * slopes.std(ddof=1) / np.sqrt(len(slopes))
  return float(slopes.mean()), float(half)


def width_gaps(rows, widths, step):
  """Mean and sd over seeds of the gap at `step`, per width, for both kernels."""
  out = {}
  for key in ("gap", "gap_infinite", "movement"):
    values = [[r[key][r["steps"].index(step)] for r in rows if r["width"] == m] for m in widths]
    out[key] = ([float(np.mean(v)) for v in values], [float(np.std(v, ddof=1)) for v in values])
  return out


# --- report ------------------------------------------------------------------------------------
def plot(results, path):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, 4, figsize=(21, 4.6))
  curve = results["curve"]
  ax = axes[0]
  steps = np.maximum(curve["steps"], 0.5)
  ax.loglog(steps, curve["test_error"], label="network", lw=2)
  ax.loglog(steps, curve["kernel_test_error"], "--", label="kernel GD, NTK at init")
  ax.loglog(steps, curve["infinite_kernel_test_error"], ":", label="kernel GD, infinite width")
  ax.loglog(steps, curve["train_loss"], alpha=0.6, label="train loss (1/2n sum)")
  radius = curve["calibrated_radius"]
  for key, style, name in (("oracle_step", "k", "oracle"), ("val_step", "g", "validation"), ("rwy_step", "r", "RWY, R=1"),
                           ("rwy_cal_step", "m", f"RWY, R={radius:g}")):
    ax.axvline(max(curve[key], 0.5), color=style, ls="--", lw=0.8, label=f"{name}: {curve[key]}")
  ax.set(xlabel="GD step", ylabel="test E||f - f*||^2", title=f"(a) n={curve['n']}, m={curve['width']}")
  ax.legend(fontsize=7)
  ax = axes[1]
  w = results["width_summary"]
  for step, marker in zip(w["steps"], "os"):
    mean, sd = w[str(step)]["gap"]
    ax.errorbar(w["widths"], mean, yerr=sd, marker=marker, capsize=3, label=f"vs NTK at init, step {step}")
    mean, sd = w[str(step)]["gap_infinite"]
    ax.errorbar(w["widths"], mean, yerr=sd, marker=marker, ls=":", capsize=3, label=f"vs infinite-width, step {step}")
  ref = np.array(w["widths"], float)
  ax.loglog(ref, w[str(w["steps"][0])]["gap"][0][0] * ref[0] / ref, "k-", lw=0.6, label="1/m")
  ax.set(xscale="log", yscale="log", xlabel="width m", ylabel="E||f_NN - f_kernel||^2", title="(b) network-kernel gap")
  ax.legend(fontsize=7)
  ax = axes[2]
  s = results["sample_summary"]
  for key, name in (("oracle_error", "oracle early stop"), ("val_error", "validation rule"), ("rwy_error", "RWY, R=1"),
                    ("rwy_cal_error", f"RWY, R={curve['calibrated_radius']:g}"),
                    ("final_error", f"final (step {results['config']['sample_size']['max_steps']})")):
    ax.errorbar(s["ns"], s[key]["mean"], yerr=s[key]["sd"], marker="o", capsize=3,
                label=f"{name}: slope {s[key]['slope']:.2f} +- {s[key]['ci']:.2f}")
  ax.set(xscale="log", yscale="log", xlabel="n", ylabel="test E||f - f*||^2", title="(c) sample size")
  ax.legend(fontsize=7)
  ax = axes[3]
  for r in [r for r in results["sample_size"] if "t_grid" in r]:
    ax.semilogy(r["t_grid"], r["score_error_by_t"]["oracle"], marker=".", label=f"n={r['n']}")
  ax.set(xlabel="t", ylabel="E||s - s*||^2 at t (early-stopped)", title="(d) score error vs t")
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def summarise(results, config):
  w = config.width
  summary_steps = list(w.gap_steps)
  widths = list(w.widths)
  results["width_summary"] = {"widths": widths, "steps": summary_steps}
  for step in summary_steps:
    gaps = width_gaps(results["width"], widths, step)
    gaps["slope"] = loglog_slope(widths, gaps["gap"][0])
    gaps["slope_infinite"] = loglog_slope(widths, gaps["gap_infinite"][0])
    results["width_summary"][str(step)] = gaps
  ns = list(config.sample_size.ns)
  rows = results["sample_size"]
  s = {"ns": ns}
  for key in ("oracle_error", "val_error", "rwy_error", "rwy_cal_error", "final_error", "kernel_oracle_error",
              "oracle_step", "val_step", "rwy_step", "rwy_cal_step"):
    values = [[r[key] for r in rows if r["n"] == n] for n in ns]
    s[key] = {"mean": [float(np.mean(v)) for v in values], "sd": [float(np.std(v, ddof=1)) for v in values]}
    if key.endswith("error"):
      s[key]["slope"], s[key]["ci"] = slope_with_ci(rows, ns, key)
  results["sample_summary"] = s


def _pm(mean, sd, fmt=".4f"):
  return f"{mean:{fmt}} +- {sd:{fmt}}"


def write_section(results, config, cmd, out_dir, png):
  curve, s, w = results["curve"], results["sample_summary"], results["width_summary"]
  c = config
  lines = [
      "## Score estimation as kernel regression (Han, Razaviyayn & Xu 2024)",
      "",
      f"Produced by `{cmd}` ({platform.machine()}, {os.cpu_count()} CPU cores, JAX {jax.__version__}, float64; "
      f"{results['minutes']:.1f} min). Data: 4 Gaussians N(+-2 e_i, {c.data.std}^2 I) in 2-D under the OU process, "
      f"t ~ U[{c.data.t0}, {c.data.T}]; the network f_W(u) = m^-1/2 sum_r a_r relu(w_r . u), u = (x_t, t, 1), output "
      f"layer fixed, antisymmetric init, full-batch GD (lr {c.training.lr}) on (1/2n) sum ||f(u_i) - x_0,i||^2. "
      f"Test error E||f - f*||^2 on {c.data.n_test} fresh (t, x_t) with the exact f* = E[X_0 | X_t] "
      f"(label-noise variance per coordinate {results['noise_std']**2:.4f}, the floor of the training loss's "
      "2x). Kernel predictors: `theory.kernel_gd_predictor` with the network's empirical NTK at init and with the "
      "infinite-width NTK. Rules: oracle (best test error among the checkpoints), validation (best loss on "
      f"{c.data.val_fraction:g} n fresh triples), RWY (Raskutti-Wainwright-Yu on the NTK at init, exact noise level).",
      "",
      f"**(a) Over training** (n = {curve['n']}, m = {curve['width']}, one seed): the test error is U-shaped while the "
      "training loss keeps falling.",
      "",
      "| GD step | network | kernel, NTK at init | kernel, infinite width | train loss | ||f_NN - f_kernel||^2 | ||W - W0|| / ||W0|| |",
      "|---|---|---|---|---|---|---|",
  ]
  steps = curve["steps"]
  shown = sorted({steps[min(range(len(steps)), key=lambda i: abs(steps[i] - target))]
                  for target in (1, 10, 100, curve["oracle_step"], 1000, 5000, steps[-1])})
  for step in shown:
    i = steps.index(step)
    mark = " (oracle)" if step == curve["oracle_step"] else ""
    lines.append(f"| {step}{mark} | {curve['test_error'][i]:.4f} | {curve['kernel_test_error'][i]:.4f} | "
                 f"{curve['infinite_kernel_test_error'][i]:.4f} | {curve['train_loss'][i]:.4f} | {curve['gap'][i]:.2e} | "
                 f"{curve['movement'][i]:.4f} |")
  radius = curve["calibrated_radius"]
  lines += ["", f"Stopping rules: oracle step {curve['oracle_step']} (error {curve['oracle_error']:.4f}), validation "
            f"step {curve['val_step']} ({curve['val_error']:.4f}), RWY with R = 1 step {curve['rwy_step']} "
            f"({curve['rwy_error']:.4f}), RWY with R = {radius:g} (the grid radius closest to this run's oracle step, "
            f"then fixed for (b) and (c)) step {curve['rwy_cal_step']} ({curve['rwy_cal_error']:.4f}); "
            f"final step {steps[-1]}: {curve['final_error']:.4f}, {curve['final_error'] / curve['oracle_error']:.2f}x the "
            "early-stopped error.", "",
            f"**(b) Network-kernel gap against width** (n = {c.width.n}, {c.width.seeds} seeds, mean +- sd over seeds of "
            "the test-set mean ||f_NN - f_kernel||^2):", "",
            "| m | " + " | ".join(f"vs NTK at init, step {st} | vs infinite width, step {st}" for st in w["steps"]) + " |",
            "|---|" + "---|---|" * len(w["steps"])]
  for j, m in enumerate(w["widths"]):
    cells = []
    for st in w["steps"]:
      g = w[str(st)]
      cells += [_pm(g["gap"][0][j], g["gap"][1][j], ".2e"), _pm(g["gap_infinite"][0][j], g["gap_infinite"][1][j], ".2e")]
    lines.append(f"| {m} | " + " | ".join(cells) + " |")
  lines += ["", "Log-log slope of the mean gap against m: " + "; ".join(
      f"step {st}: {w[str(st)]['slope']:.2f} (NTK at init), {w[str(st)]['slope_infinite']:.2f} (infinite width)"
      for st in w["steps"]) + ".", "",
      f"**(c) Sample size** (m = {c.sample_size.width}, {c.sample_size.max_steps} steps, {c.sample_size.seeds} seeds; "
      "mean +- sd over seeds; slope = mean of the per-seed log-log slopes against n with its 95% t-interval):", "",
      f"| n | oracle step | oracle error | validation rule | RWY R=1 step | RWY R=1 | RWY R={radius:g} step | RWY R={radius:g} "
      "| final | kernel GD (NTK at init), oracle |",
      "|---|---|---|---|---|---|---|---|---|---|"]
  for j, n in enumerate(s["ns"]):
    lines.append(f"| {n} | {s['oracle_step']['mean'][j]:.0f} | {_pm(s['oracle_error']['mean'][j], s['oracle_error']['sd'][j])} | "
                 f"{_pm(s['val_error']['mean'][j], s['val_error']['sd'][j])} | {s['rwy_step']['mean'][j]:.0f} | "
                 f"{_pm(s['rwy_error']['mean'][j], s['rwy_error']['sd'][j])} | {s['rwy_cal_step']['mean'][j]:.0f} | "
                 f"{_pm(s['rwy_cal_error']['mean'][j], s['rwy_cal_error']['sd'][j])} | "
                 f"{_pm(s['final_error']['mean'][j], s['final_error']['sd'][j])} | "
                 f"{_pm(s['kernel_oracle_error']['mean'][j], s['kernel_oracle_error']['sd'][j])} |")
  lines += ["| slope | | " + " | ".join(
      f"{s[k]['slope']:.2f} +- {s[k]['ci']:.2f}" for k in ("oracle_error", "val_error")) + " | | "
      + f"{s['rwy_error']['slope']:.2f} +- {s['rwy_error']['ci']:.2f} | | "
      + " | ".join(f"{s[k]['slope']:.2f} +- {s[k]['ci']:.2f}" for k in ("rwy_cal_error", "final_error", "kernel_oracle_error")) + " |"]
  grid_rows = [r for r in results["sample_size"] if "t_grid" in r]
  if grid_rows:
    big = grid_rows[-1]
    lines += ["", f"**(d) Error against t** (seed 0, n = {big['n']}, early-stopped at the oracle step and final): "
              "E||f - f*||^2 at each t and the score error E||s - s*||^2 = alpha_t^2 / sigma_t^4 E||f - f*||^2.", "",
              "| t | f error, early-stopped | f error, final | score error, early-stopped | score error, final |",
              "|---|---|---|---|---|"]
    for j, t in enumerate(big["t_grid"]):
      if j % max(len(big["t_grid"]) // 8, 1) and j != len(big["t_grid"]) - 1:
        continue
      lines.append(f"| {t:.3f} | {big['f_error_by_t']['oracle'][j]:.4f} | {big['f_error_by_t']['final'][j]:.4f} | "
                   f"{big['score_error_by_t']['oracle'][j]:.3f} | {big['score_error_by_t']['final'][j]:.3f} |")
  lines += ["", f"![score estimation studies]({png})", ""]
  _report.write_section(out_dir, "## Score estimation as kernel regression", "\n".join(lines))


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", default=DEFAULT_CONFIG, help="path[:options] of a configs/score_estimation file")
  parser.add_argument("--out", default=HERE)
  args = parser.parse_args()
  path, _, options = args.config.partition(":")
  config = load_config_file(os.path.join(ROOT, path) if not os.path.isabs(path) else path, options, field="--config")
  started = time.time()
  problem = Problem(config)
  results = {"config": config.to_dict(), "noise_std": problem.noise_std}
  results["curve"] = study_curve(problem, config)
  radius = results["curve"]["calibrated_radius"]
  results["width"] = study_width(problem, config, radius)
  results["sample_size"] = study_sample_size(problem, config, radius)
  results["minutes"] = (time.time() - started) / 60
  summarise(results, config)
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "score_estimation.json"), "w") as f:
    json.dump(results, f, indent=1)
  png = "score_estimation.png"
  plot(results, os.path.join(args.out, png))
  cmd = "python experiments/score_estimation.py" + ("" if args.config == DEFAULT_CONFIG else f" --config={args.config}")
  write_section(results, config, cmd, args.out, png)
  print(f"wrote {args.out}/score_estimation.json, {png} and the README section ({results['minutes']:.1f} min)")


if __name__ == "__main__":
  main()
