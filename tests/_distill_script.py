"""Runs a tiny DMD2 (+GAN) distillation with `diffjax.distill` in a fresh process (for the device count).

  XLA_FLAGS=--xla_force_host_platform_device_count=8 python tests/_distill_script.py \
      --workdir /tmp/run --teacher_workdir /tmp/teacher

Writes ``<workdir>/result.json``: the device count, the number of devices the state lives on, and
whether the compiled step holds any full-batch hidden activation (``f32[<batch>,<width>]``), i.e.
work that is replicated instead of split over the devices.
"""
import argparse
import json
import logging
import os
import sys

import jax

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _cache import enable_compilation_cache  # noqa: E402

enable_compilation_cache()


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--teacher_workdir", required=True)
  parser.add_argument("--num_steps", type=int, default=6)
  parser.add_argument("--batch_size", type=int, default=48)
  parser.add_argument("--no_constraint", action="store_true",
                      help="compile the inspected step without the prepared samples' sharding constraint")
  args = parser.parse_args()
  logging.basicConfig(level=logging.WARNING)
  from diffjax import distill, training
  from diffjax.configuration import d

  config = distill.default_distill_config()
  config.teacher = d(config_path="configs/distillation/teacher.py", config_options="grid,tiny",
                     workdir=args.teacher_workdir)
  config.method = "dmd2"
  config.method_options = d(generator_every=2, gen_cls_loss_weight=3e-3, cls_loss_weight=1e-2, num_steps=2)
  config.data.batch_size = args.batch_size
  config.training.num_steps = args.num_steps
  config.training.log_every = 1
  config.training.ckpt_every = 0
  config.training.async_checkpoints = False
  teacher = distill.Teacher(config.teacher, train_if_missing=False)
  method = distill.build_method(config, teacher)
  mesh = training.make_mesh()
  res = distill.run.train_method(config, args.workdir, teacher, method, mesh=mesh)
  # The compiled step, as the loop builds it, on a fresh state: look for replicated full-batch work.
  state = training.replicate(distill.DistillState.create(distill.build_method(config, teacher).params, method.phases,
                                                         teacher.params, jax.random.PRNGKey(0), student="generator"),
                             mesh)
  step = distill.make_distill_step(method.phases, student="generator", ema_decay=0.0, prepare=method.prepare,
                                   data_sharding=None if args.no_constraint else training.batch_sharding(mesh))
  batch = training.shard_batch({"x": jax.numpy.zeros((args.batch_size, 2))}, mesh)
  hlo = training.make_sharded_step(step, mesh).lower(state, batch).compile().as_text()
  width = teacher.config.model.options.width
  x = jax.tree.leaves(res.state.params)[0]
  result = {"device_count": jax.device_count(), "n_shards": len(x.sharding.device_set), "step": res.step,
            "full_batch_hidden": f"f32[{args.batch_size},{width}]" in hlo,
            "per_device_hidden": f"f32[{args.batch_size // jax.device_count()},{width}]" in hlo}
  with open(os.path.join(args.workdir, "result.json"), "w") as f:
    json.dump(result, f)


if __name__ == "__main__":
  main()
