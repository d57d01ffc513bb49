"""MLKD on ROSTD (Gangal et al. 2020): ID = English task-oriented dialogue, OOD = its OOD utterances.
The student also trains on its own LM loss (`--use_mse_loss both`, lm_weight = 1).
Paper: MLKD 99.14 / 98.33 / 3.79, M_finetune 98.67 / 97.47 / 6.27, M_fromScratch 99.10 / 98.25 / 3.88.

  python -m diffjax.mlkd.main --config=configs/mlkd/rostd.py --workdir=/tmp/mlkd_rostd \
      --config.data.data_dir=<dir> --config.model.pretrained_dir=<gpt2 dir> --config.data.tokenizer_dir=<gpt2 dir>

Data layout: diffjax/data/text.py, "Preparing the paper datasets". Recipe: _mlkd_common.py.
Options: `tiny`.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _mlkd_common import paper_config, parse  # noqa: E402


def get_config(options=""):
  opts = parse(options, "mlkd/rostd")
  return paper_config("rostd", lm_weight=1.0, tiny="tiny" in opts)
