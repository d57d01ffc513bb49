"""MLKD on CLINC150 (Larson et al. 2019): ID = the 150 intents, OOD = the out-of-scope test queries.
Paper (5 seeds): MLKD 92.51 / 70.94 / 27.16, M_finetune 89.76 / 62.39 / 33.77, M_fromScratch
91.73 / 68.78 / 28.31 (AUROC / AUPR / FAR95).

  python -m diffjax.mlkd.main --config=configs/mlkd/clinc150.py --workdir=/tmp/mlkd_clinc150 \
      --config.data.data_dir=<dir> --config.model.pretrained_dir=<gpt2 dir> --config.data.tokenizer_dir=<gpt2 dir>

Data layout: diffjax/data/text.py, "Preparing the paper datasets". Recipe: _mlkd_common.py.
Options: `tiny`.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _mlkd_common import paper_config, parse  # noqa: E402


def get_config(options=""):
  opts = parse(options, "mlkd/clinc150")
  return paper_config("clinc150", tiny="tiny" in opts)
