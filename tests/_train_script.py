"""Runs the toy training problem with ``diffjax.training.train`` in a fresh process.

Used by the tests for what needs its own JAX process: a different device count
(``XLA_FLAGS=--xla_force_host_platform_device_count=8``), several processes joined by
``jax.distributed`` (``--coordinator``), and SIGTERM / restart. Writes
``<workdir>/result.json`` with the outcome. Example:

  python tests/_train_script.py --workdir /tmp/run --num_steps 20 --batch_size 64
"""
import argparse
import json
import logging
import os
import sys

import jax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _cache import enable_compilation_cache  # noqa: E402

enable_compilation_cache()


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--num_steps", type=int, default=20)
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--ckpt_every", type=int, default=10)
  parser.add_argument("--n_jitted_steps", type=int, default=1)
  parser.add_argument("--sleep", type=float, default=0.0)
  parser.add_argument("--check_batch", type=int, default=0,
                      help="also try to shard a batch of this size and record the error")
  parser.add_argument("--coordinator", default="",
                      help="host:port; enables jax.distributed with --num_processes processes")
  parser.add_argument("--num_processes", type=int, default=1)
  parser.add_argument("--process_id", type=int, default=0)
  args = parser.parse_args()
  if args.coordinator:
    import ml_collections
    from diffjax.training import distributed
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    cfg = ml_collections.ConfigDict({"distributed": distributed.default_distributed_config()})
    cfg.distributed.update(enabled=True, coordinator_address=args.coordinator,
                           num_processes=args.num_processes, process_id=args.process_id,
                           initialization_timeout=60)
    distributed.maybe_initialize(cfg)
  logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
  logging.getLogger("diffjax").setLevel(logging.INFO)

  import _toy
  from diffjax import training

  config = _toy.make_config(num_steps=args.num_steps, ckpt_every=args.ckpt_every,
                            n_jitted_steps=args.n_jitted_steps)
  state, train_step, _ = _toy.setup(config)
  # Each process reads its slice of the global batch, so every process count sees the same data.
  dataset = _toy.ToyDataset(args.batch_size, sleep=args.sleep,
                            process_slice=(jax.process_index(), jax.process_count()))
  mesh = training.make_mesh()
  result = {"device_count": jax.device_count()}
  if args.check_batch:
    try:
      training.shard_batch(next(_toy.ToyDataset(args.check_batch)), mesh)
      result["check_batch_error"] = None
    except ValueError as e:
      result["check_batch_error"] = str(e)
  res = training.train(config=config, workdir=args.workdir, state=state, train_step=train_step,
                       dataset=dataset, mesh=mesh)
  x = jax.tree.leaves(res.state.params)[0]
  result.update(step=res.step, interrupted=res.interrupted, resumed_from=res.resumed_from,
                n_shards=len(x.sharding.device_set))
  name = "result.json" if jax.process_index() == 0 else f"result.{jax.process_index()}.json"
  with open(os.path.join(args.workdir, name), "w") as f:
    json.dump(result, f)


if __name__ == "__main__":
  main()
