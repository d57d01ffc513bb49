"""What the command-line entry points (`diffjax.main`, `diffjax.finetune.main`, `diffjax.distill.main`)
share: the argument check, logging set-up and turning a config error into a usage error."""
import logging
import sys

from absl import app


def start(argv):
  """Rejects positional arguments and sends INFO logs to stderr (absl's own at WARNING)."""
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                      stream=sys.stderr)
  logging.getLogger("absl").setLevel(logging.WARNING)


def validate(validate_fn, config):
  """`validate_fn(config)`; a ValueError becomes `app.UsageError("invalid config: ...")`."""
  try:
    validate_fn(config)
  except ValueError as e:
    raise app.UsageError(f"invalid config: {e}") from None
