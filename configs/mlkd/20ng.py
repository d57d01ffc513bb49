"""MLKD on 20 Newsgroups: one of six coarse groups ID, the other five OOD (DATE's protocol).

  python -m diffjax.mlkd.main --config=configs/mlkd/20ng.py:rec --workdir=/tmp/mlkd_20ng_rec \
      --config.data.data_dir=<dir> --config.model.pretrained_dir=<gpt2 dir> --config.data.tokenizer_dir=<gpt2 dir>

30 epochs for teacher and student (scripts/20ng/run_{clm,kd_clm}.sh), except `comp`, which
`main_ood.py` forces to 5; `rel` adds the student's LM loss (`use_mse_loss = "both"`) and trains the
layer weights (the official `kd_clm_v1.py` learns them as an nn.Linear(14, 1) with a bias; here a
weight vector). Paper AUROC (MLKD / M_finetune / M_fromScratch): comp 92.41 / 87.60 / 91.29,
rec 87.68 / 74.41 / 85.36, sci 69.83 / 63.15 / 67.80, misc 89.02 / 83.27 / 85.01,
pol 88.47 / 75.37 / 87.53, rel 87.51 / 75.75 / 86.48.
Options: the ID group (one of comp, rec, sci, misc, pol, rel; default comp) and `tiny`.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _mlkd_common import paper_config, parse  # noqa: E402

GROUPS = ("comp", "rec", "sci", "misc", "pol", "rel")


def get_config(options=""):
  opts = parse(options, "mlkd/20ng", valid=GROUPS + ("tiny",))
  groups = [g for g in GROUPS if g in opts]
  if len(groups) > 1:
    raise ValueError(f"mlkd/20ng takes one ID group of {list(GROUPS)}, got {groups}")
  group = groups[0] if groups else "comp"
  epochs = 5 if group == "comp" else 30
  rel = group == "rel"
  return paper_config("20ng", tiny="tiny" in opts, id_group=group, epochs=epochs, teacher_epochs=epochs,
                      lm_weight=1.0 if rel else 0.0, learn_layer_weights=rel)
