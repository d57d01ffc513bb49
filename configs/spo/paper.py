"""SPO at paper scale (Liang et al. 2025); shared settings in configs/preference/_paper.py.

  python -m diffjax.finetune.main --config=configs/spo/paper.py --workdir=/ckpt/spo \
      --config.base.config_path=<your base config> --config.base.workdir=<its workdir>

`RockeyCoss/SPO` configs (SD1.5): beta 10, clip eps 0.1, 20 DDIM steps with eta 1.0, K = 4
candidates per step from step 4 on, preference threshold 0.3 (0.4 for SDXL with K = 2), lr 6e-5
(1e-5 for SDXL), AdamW (weight decay 1e-4), grad clip 1.0, batch 10, 10 epochs over 4,000 prompts.
The step-aware preference model of the paper is a time-conditioned PickScore; diffjax scores
candidates by the task reward of the one-step x0 estimate.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "preference"))
from _paper import paper_config  # noqa: E402


def get_config(options=""):
  if options not in ("", "sdxl"):
    raise ValueError(f"unknown option {options!r} for spo/paper; valid: '', 'sdxl'")
  sdxl = options == "sdxl"
  config = paper_config("spo", beta=10.0, clip_eps=0.1, eta=1.0)
  config.spo.num_candidates = 2 if sdxl else 4
  config.spo.threshold = 0.4 if sdxl else 0.3
  config.spo.divert_start_step = 4
  config.optim.lr = 1e-5 if sdxl else 6e-5
  config.optim.weight_decay = 1e-4
  config.rounds.num_rounds = 10
  config.rounds.prompts_per_round = 4000
  config.data.batch_size = 4 if sdxl else 10
  config.training.num_steps = 1000
  return config
