r"""Command line: train, evaluate or sample a diffusion model from a config file.

  python -m diffjax.main --config=configs/quickstart.py --workdir=/tmp/quickstart --mode=train
  python -m diffjax.main --config=configs/score_sde/vp_digits.py:tiny --workdir=/tmp/digits
  python -m diffjax.main --config=configs/quickstart.py --config.training.num_steps=500 ...

Modes:
  train   train (resuming from `workdir/checkpoints` if present), then evaluate: writes
          `samples.png`, `samples.npz` and `metrics.json` in the workdir.
  eval    evaluate the latest checkpoint (metrics.json, samples.png).
  sample  draw `eval.n_samples` samples from the latest checkpoint (samples.npz, samples.png).

Config values are overridden with `--config.<field>=<value>`; every name and size is checked
before anything is built (`diffjax.configuration.validate_config`).
"""
from absl import app, flags
from ml_collections import config_flags

from diffjax import cli

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Path to a config file (with optional :options).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and samples.")
flags.DEFINE_enum("mode", "train", ["train", "eval", "sample"], "What to run.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  cli.start(argv)
  from diffjax import configuration, experiment, training
  config = FLAGS.config
  training.maybe_initialize(config)
  cli.validate(configuration.validate_config, config)
  if FLAGS.mode == "train":
    experiment.train_and_evaluate(config, FLAGS.workdir)
  elif FLAGS.mode == "eval":
    experiment.evaluate(config, FLAGS.workdir)
  else:
    experiment.sample(config, FLAGS.workdir)


def run():
  app.run(main)


if __name__ == "__main__":
  run()
