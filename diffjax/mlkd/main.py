r"""Command line: an MLKD run from a config file.

  python -m diffjax.mlkd.main --config=configs/mlkd/offline.py --workdir=/tmp/mlkd_offline
  python -m diffjax.mlkd.main --config=configs/mlkd/clinc150.py --workdir=/tmp/mlkd_clinc \
      --config.data.data_dir=/data/OOD_dataset/CLINIC150 --config.model.pretrained_dir=/models/gpt2

Trains (resuming) the tokenizer, teacher and each configured student in the workdir, and writes
``results.json``: AUROC / AUPR-OUT / AUPR-IN / FAR95 (%) per model and OOD score.
"""
import json

from absl import app, flags
from ml_collections import config_flags

from diffjax import cli

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Path to an MLKD config file (with optional :options).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for the tokenizer, checkpoints, metrics and results.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  cli.start(argv)
  from diffjax.mlkd import run
  cli.validate(run.validate_mlkd_config, FLAGS.config)
  rows = run.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  print(json.dumps(rows, indent=2))


if __name__ == "__main__":
  app.run(main)
