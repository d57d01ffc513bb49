"""MLKD as a ChatGPT-text detector on HC3 (Guo et al. 2023): ID = ChatGPT answers (Hello-SimpleAI/HC3
"all", shuffled with seed 42, half train and half test), OOD = the human answers.

  python -m diffjax.mlkd.main --config=configs/mlkd/hc3.py --workdir=/tmp/mlkd_hc3 \
      --config.data.data_dir=<dir with all.jsonl or hc3_{train,test,ood}.txt> \
      --config.model.pretrained_dir=<gpt2 dir> --config.data.tokenizer_dir=<gpt2 dir>

Paper: MLKD 99.80 / 99.95 / 0.61 (AUROC / AUPR / FAR95).
Options: `tiny`.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _mlkd_common import paper_config, parse  # noqa: E402


def get_config(options=""):
  opts = parse(options, "mlkd/hc3")
  return paper_config("hc3", tiny="tiny" in opts)
