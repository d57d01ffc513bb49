"""MLKD (Wu et al., ACL 2023): text OOD detection by a student LM distilled from a fine-tuned GPT-2.

  run     stages (tokenizer, teacher pretraining / fine-tuning, students), scores and metrics
  main    the command line: ``python -m diffjax.mlkd.main --config=configs/mlkd/offline.py --workdir=...``
"""
from diffjax.mlkd.run import (METHODS, SCORES, default_mlkd_config, train_and_evaluate,  # noqa: F401
                             validate_mlkd_config)
