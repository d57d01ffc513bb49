r"""Command line: preference fine-tuning from a config file.

  python -m diffjax.finetune.main --config=configs/diffusion_dpo/toy.py:ring --workdir=/tmp/dpo_ring
  python -m diffjax.finetune.main --config=configs/d3po/toy.py:digits,tiny --workdir=/tmp/d3po --config.method_options.beta=10

Trains the base model first if `base.workdir` has no checkpoint, then runs the configured rounds
(resuming from `workdir/round_<r>`) and writes `results.json` (one row of metrics per round, row 0
is the reference) and `samples.npz` into the workdir.
"""
import json

from absl import app, flags
from ml_collections import config_flags

from diffjax import cli

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Path to a preference config file (with optional :options).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for the rounds' data, checkpoints and results.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  cli.start(argv)
  from diffjax.finetune import run
  cli.validate(run.validate_finetune_config, FLAGS.config)
  rows = run.finetune(FLAGS.config, FLAGS.workdir)
  print(json.dumps(rows[-1], indent=2))


if __name__ == "__main__":
  app.run(main)
