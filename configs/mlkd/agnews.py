"""MLKD on AG News: one of the four classes ID, the other three OOD (scripts/ag/run_kd_clm.sh).

  python -m diffjax.mlkd.main --config=configs/mlkd/agnews.py:world --workdir=/tmp/mlkd_ag_world \
      --config.data.data_dir=<dir> --config.model.pretrained_dir=<gpt2 dir> --config.data.tokenizer_dir=<gpt2 dir>

The README of the official code gives no AG News numbers; the paper names AG News as its limitation
(long, variable-length texts, where perplexity is a weaker score).
Options: the ID class (one of world, sports, business, sci; default world) and `tiny`.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _mlkd_common import paper_config, parse  # noqa: E402

CLASSES = ("world", "sports", "business", "sci")


def get_config(options=""):
  opts = parse(options, "mlkd/agnews", valid=CLASSES + ("tiny",))
  classes = [c for c in CLASSES if c in opts]
  if len(classes) > 1:
    raise ValueError(f"mlkd/agnews takes one ID class of {list(CLASSES)}, got {classes}")
  return paper_config("agnews", tiny="tiny" in opts, id_group=classes[0] if classes else "world")
