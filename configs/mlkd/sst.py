"""MLKD on SST-2: ID = SST sentences, OOD = sentences of other corpora resampled per seed
(`sst_oos_test_{seed}.txt`). Temperature 0.5 (scripts/SST/run_kd_clm.sh).
Paper: MLKD 97.97 / 97.81 / 9.50, M_finetune 92.67 / 91.93 / 33.67, M_fromScratch 96.60 / 96.42 / 17.98.

  python -m diffjax.mlkd.main --config=configs/mlkd/sst.py --workdir=/tmp/mlkd_sst \
      --config.data.data_dir=<dir> --config.model.pretrained_dir=<gpt2 dir> --config.data.tokenizer_dir=<gpt2 dir>

Data layout: diffjax/data/text.py, "Preparing the paper datasets". Recipe: _mlkd_common.py.
Options: `tiny`.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _mlkd_common import paper_config, parse  # noqa: E402


def get_config(options=""):
  opts = parse(options, "mlkd/sst")
  return paper_config("sst2", temperature=0.5, tiny="tiny" in opts)
