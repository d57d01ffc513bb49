"""DiCo vs DiT throughput at S and B size on 32x32x4 latents (the 256x256 ImageNet setting).

  python benchmarks/architectures.py            # writes benchmarks/architectures.md
  python benchmarks/architectures.py --quick    # fewer repeats

For DiCo-S/B and DiT-S/2, DiT-B/2 (1,000 classes, learned sigma, as the papers) this measures, in
one process on this machine:

  forward     images/s of the jitted forward pass (the DiCo code's `test_model_throughout`
              protocol: eval mode, random latents, fixed t and y, warm-up, then timed calls)
  train step  images/s of a jitted EDM-loss step with Adam (forward + backward + update)

at a small batch (CPU), with parameter counts and MACs, and the DiCo / DiT ratios. The paper's
anchor is DiCo-XL 2.7x faster than DiT-XL/2 at 256x256 on GPU; XLA's CPU convolutions (depthwise in
particular) are a different regime, so the ratio here is measured, not expected to match.
"""
import argparse
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import optax
from flax import nnx

import diffjax as dj
from diffjax.models import macs

HERE = os.path.dirname(os.path.abspath(__file__))
PAIRS = (("S", "dico_s", "dit_s_2"), ("B", "dico_b", "dit_b_2"))


def _median_rate(fn, n_items, repeats):
  jax.block_until_ready(fn())
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return n_items / statistics.median(times)


def measure(name, batch, repeats):
  model = dj.models.create(name, rngs=nnx.Rngs(0))
  n_params = dj.models.count_params(model)
  gmacs = macs.model_macs(model, (1, 32, 32, 4)) / 1e9
  apply_fn, params = dj.models.split_apply(model)
  process = dj.processes.EDM()
  x = jax.random.normal(jax.random.PRNGKey(0), (batch, 32, 32, 4))
  t = jnp.full((batch,), 500.0)
  y = jnp.zeros((batch,), jnp.int32)
  fwd = jax.jit(lambda p, x: apply_fn(p, x, t, y))
  forward = _median_rate(lambda: fwd(params, x), batch, repeats)

  def net(p):
    # the first 4 output channels are the prediction (learned sigma adds 4 more)
    return dj.parametrization.edm_denoiser(lambda x_in, c, cond: apply_fn(p, x_in, c, cond)[..., :4], process)

  opt = optax.adam(1e-4)
  opt_state = opt.init(params)

  @jax.jit
  def step(p, s, key):
    loss_fn = lambda p: dj.losses.edm_loss(lambda xx, sig, cond: net(p)(xx, sig, cond), x, key, cond=y)[0]
    loss, g = jax.value_and_grad(loss_fn)(p)
    updates, s = opt.update(g, s, p)
    return optax.apply_updates(p, updates), s, loss

  train = _median_rate(lambda: step(params, opt_state, jax.random.PRNGKey(1))[2], batch, repeats)
  return {"params": n_params, "gmacs": gmacs, "forward": forward, "train": train}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--quick", action="store_true")
  args = parser.parse_args()
  repeats = 3 if args.quick else 7
  rows = []
  for size, dico, dit in PAIRS:
    a, b = measure(dico, args.batch, repeats), measure(dit, args.batch, repeats)
    rows.append((size, dico, dit, a, b))
    print(size, a, b, flush=True)
  lines = ["# DiCo vs DiT throughput (32x32x4 latents)", "",
           f"Produced by `python benchmarks/architectures.py{' --quick' if args.quick else ''}"
           f"{f' --batch {args.batch}' if args.batch != 8 else ''}` (one run; "
           f"{platform.machine()}, {os.cpu_count()} CPU cores, JAX {jax.__version__}, backend "
           f"{jax.default_backend()}); batch {args.batch}, float32, median of {repeats} timed calls after a "
           "warm-up. Forward: the jitted model call; train step: EDM loss, backward and Adam update. DiT "
           "parameter counts exclude the fixed position embedding (a non-trainable variable here).", "",
           "| size | model | parameters | GMACs / image | forward images/s | train-step images/s |",
           "|---|---|---|---|---|---|"]
  for size, dico, dit, a, b in rows:
    for name, r in ((dico, a), (dit, b)):
      lines.append(f"| {size} | `{name}` | {r['params']:,} | {r['gmacs']:.2f} | {r['forward']:.1f} | {r['train']:.1f} |")
  lines += ["", "| size | DiCo / DiT forward | DiCo / DiT train step | DiT / DiCo MACs |", "|---|---|---|---|"]
  for size, _, _, a, b in rows:
    lines.append(f"| {size} | {a['forward'] / b['forward']:.2f} | {a['train'] / b['train']:.2f} | "
                 f"{b['gmacs'] / a['gmacs']:.2f} |")
  lines += ["", "Anchor: the DiCo paper reports DiCo-XL 2.7x faster than DiT-XL/2 at 256x256 (GPU, forward "
            "throughput). On this CPU the ratio is what the table says."]
  with open(os.path.join(HERE, "architectures.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  main()
