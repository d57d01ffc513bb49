"""RankDPO at paper scale (Karthik et al. 2024); shared settings in configs/preference/_paper.py.

  python -m diffjax.finetune.main --config=configs/rank_dpo/paper.py --workdir=/ckpt/rankdpo \
      --config.base.config_path=<your base config> --config.base.workdir=<its workdir> \
      --config.generation.path=<Syn-Pic-style ranked data set, k = 4>

The paper: Syn-Pic with k = 4 generators and n = 5 reward models aggregated by win counts
(Algorithm 1), batch 1024, 400 steps (8 A100, 16 h). No official code is public and the paper
gives neither beta nor the learning rate: this config uses Diffusion-DPO's launcher values
(beta 5000 with the same -beta/2 scaling, lr 2.048e-5, AdamW weight decay 1e-2, 500 warm-up
steps) as a stated assumption.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "preference"))
from _paper import paper_config  # noqa: E402


def get_config(options=""):
  if options not in ("",):
    raise ValueError(f"unknown option {options!r} for rank_dpo/paper; valid: ''")
  config = paper_config("rank_dpo", beta=5000.0, rank_source="target")
  config.optim.lr = 1e-8 * 2048
  config.optim.weight_decay = 1e-2
  config.optim.warmup_steps = 500
  config.data.batch_size = 1024
  config.training.num_steps = 400
  return config
