r"""Command line: distillation from a config file.

  python -m diffjax.distill.main --config=configs/dmd2/toy.py:grid --workdir=/tmp/dmd2_grid
  python -m diffjax.distill.main --config=configs/cd/toy.py:digits,tiny --workdir=/tmp/cd --config.training.num_steps=100

Trains the teacher first if `teacher.workdir` has no checkpoint, then the method (resuming from
`workdir/checkpoints`), and writes `results.json` (one row of sample metrics per NFE) and
`samples_<nfe>.npz` into the workdir.
"""
import json
import logging
import sys

from absl import app, flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Path to a distillation config file (with optional :options).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                      stream=sys.stderr)
  logging.getLogger("absl").setLevel(logging.WARNING)
  from diffjax.distill import run
  try:
    run.validate_distill_config(FLAGS.config)
  except ValueError as e:
    raise app.UsageError(f"invalid config: {e}") from None
  rows = run.distill(FLAGS.config, FLAGS.workdir)
  print(json.dumps(rows, indent=2))


if __name__ == "__main__":
  app.run(main)
