"""D3PO at paper scale (Yang et al. 2024); shared settings in configs/preference/_paper.py.

  python -m diffjax.finetune.main --config=configs/d3po/paper.py --workdir=/ckpt/d3po \
      --config.base.config_path=<your base config> --config.base.workdir=<its workdir>

`yk7333/d3po` config/base.py: beta 0.1, clip eps 0.1, DDIM 20 steps with eta 1.0, lr 3e-5, AdamW
(weight decay 1e-4), grad clip 1.0, 400 epochs of 80 sampled prompts (two trajectories each, same
x_T), training on all their transitions. The official train batch is 1 with gradient accumulation
over the 20 timesteps; here one batch is the 20 transitions of a trajectory pair's worth of steps
(batch 20) and each round passes once over its 1600 transitions (80 steps).
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "preference"))
from _paper import paper_config  # noqa: E402


def get_config(options=""):
  if options not in ("",):
    raise ValueError(f"unknown option {options!r} for d3po/paper; valid: ''")
  config = paper_config("d3po", beta=0.1, clip_eps=0.1, eta=1.0)
  config.sampling.num_steps, config.sampling.eta = 20, 1.0
  config.optim.lr = 3e-5
  config.optim.weight_decay = 1e-4
  config.rounds.num_rounds = 400
  config.rounds.prompts_per_round = 80
  config.data.batch_size = 20
  config.training.num_steps = 80
  return config
