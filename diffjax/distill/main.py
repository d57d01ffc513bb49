r"""Command line: distillation from a config file.

  python -m diffjax.distill.main --config=configs/dmd2/toy.py:grid --workdir=/tmp/dmd2_grid
  python -m diffjax.distill.main --config=configs/cd/toy.py:digits,tiny --workdir=/tmp/cd --config.training.num_steps=100

Trains the teacher first if `teacher.workdir` has no checkpoint, then the method (resuming from
`workdir/checkpoints`), and writes `results.json` (one row of sample metrics per NFE) and
`samples_<nfe>.npz` into the workdir.
"""
import json

from absl import app, flags
from ml_collections import config_flags

from diffjax import cli

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Path to a distillation config file (with optional :options).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  cli.start(argv)
  from diffjax.distill import run
  cli.validate(run.validate_distill_config, FLAGS.config)
  rows = run.distill(FLAGS.config, FLAGS.workdir)
  print(json.dumps(rows, indent=2))


if __name__ == "__main__":
  app.run(main)
