"""Sampler speed: diffjax's compiled loop vs a Python loop of jitted steps vs NFE x forward time.

  python benchmarks/samplers_speed.py            # writes benchmarks/samplers_speed.md
  python benchmarks/samplers_speed.py --quick    # fewer repeats

For each network (the quickstart MLP on 2-D data, the digits U-Net on 8x8x1 images), batch size
and number of steps, three timings of the Euler sampler (NFE = steps) are taken in one process:

  compiled  `jax.jit(lambda x: dj.samplers.euler(den, x, ts, process=p))`: the whole loop is one
            `lax.scan`, one dispatch.
  python    the same update as a jitted single step called from a Python loop (how diffusers-style
            schedulers drive a model): one dispatch per step.
  limit     NFE x the time of one jitted denoiser call: what any sampler needs for this network.

Each time is the median over repeats after a warm-up call (compilation excluded).
"""
import argparse
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
from flax import nnx

import diffjax as dj

HERE = os.path.dirname(os.path.abspath(__file__))


def _median_time(fn, repeats):
  jax.block_until_ready(fn())
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def _network(name):
  process = dj.processes.EDM()
  if name == "mlp":
    model = dj.models.create("mlp", rngs=nnx.Rngs(0), in_features=2)
    shape = (2,)
  else:
    model = dj.models.create("unet_digits", rngs=nnx.Rngs(0), in_channels=1)
    shape = (8, 8, 1)
  apply_fn, params = dj.models.split_apply(model)
  den = dj.parametrization.edm_denoiser(lambda x, c: apply_fn(params, x, c), process)
  return process, den, shape


def bench(network, batch, steps, repeats):
  process, den, shape = _network(network)
  x = process.prior_sample(jax.random.PRNGKey(0), (batch,) + shape)
  ts = dj.timesteps.karras(steps, append_zero=False)

  compiled = jax.jit(lambda x: dj.samplers.euler(den, x, ts, process=process))

  @jax.jit
  def one_step(x, t_cur, t_next):
    t_b = jnp.full((x.shape[0],), t_cur)
    return x + (t_next - t_cur) * process.pf_ode_velocity(x, t_b, den(x, t_b))

  def python_loop():
    y = x
    for i in range(steps):
      y = one_step(y, ts[i], ts[i + 1])
    return y

  forward = jax.jit(lambda x: den(x, jnp.full((x.shape[0],), 1.0)))
  return {
      "compiled": _median_time(lambda: compiled(x), repeats),
      "python": _median_time(python_loop, repeats),
      "limit": steps * _median_time(lambda: forward(x), repeats * 3),
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="fewer repeats")
  parser.add_argument("--out", default=os.path.join(HERE, "samplers_speed.md"))
  args = parser.parse_args()
  repeats = 3 if args.quick else 7
  rows = []
  for network, batches in (("mlp", (1, 64, 4096)), ("unet_digits", (1, 64, 512))):
    for batch in batches:
      for steps in (10, 50):
        r = bench(network, batch, steps, repeats)
        rows.append((network, batch, steps, r))
        print(network, batch, steps, {k: f"{v * 1e3:.2f} ms" for k, v in r.items()}, flush=True)
  lines = [
      "# Sampler speed: compiled loop vs Python loop of jitted steps",
      "",
      "Produced by `python benchmarks/samplers_speed.py` (one process, one run) on "
      f"{platform.machine()}, {os.cpu_count()} CPU cores, JAX {jax.__version__}, backend "
      f"{jax.default_backend()}. Euler sampler, EDM preconditioning, median of {repeats} runs after warm-up.",
      "",
      "| network | batch | steps (NFE) | compiled (ms) | Python loop (ms) | NFE x forward (ms) | Python / compiled | compiled / limit |",
      "|---|---|---|---|---|---|---|---|",
  ]
  for network, batch, steps, r in rows:
    lines.append(f"| {network} | {batch} | {steps} | {r['compiled'] * 1e3:.2f} | {r['python'] * 1e3:.2f} | "
                 f"{r['limit'] * 1e3:.2f} | {r['python'] / r['compiled']:.2f} | {r['compiled'] / r['limit']:.2f} |")
  lines += ["", "The U-Net at batch 4096 is left out on this 2-core CPU (minutes per configuration); "
            "batch 512 stands in for the large-batch regime."]
  with open(args.out, "w") as f:
    f.write("\n".join(lines) + "\n")
  print("wrote", args.out)


if __name__ == "__main__":
  main()
