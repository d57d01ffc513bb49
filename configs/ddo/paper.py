"""DDO at paper scale (Zheng et al. 2025); shared settings in configs/preference/_paper.py.

  python -m diffjax.finetune.main --config=configs/ddo/paper.py --workdir=/ckpt/ddo \
      --config.base.config_path=<your base config> --config.base.workdir=<its workdir>

The paper's EDM settings (its Appendix D loss as second-hand transcriptions give it; `NVlabs/DDO`
ships no diffusion trainer): alpha 1.0, beta 0.02 on the summed (not averaged) error difference,
self-play rounds whose best checkpoint becomes the next reference (CIFAR-10 unconditional: 12
rounds of 1.5 M images), 50k fake samples per round paired 1:1 with real data, dropout off. The
learning rate is not given in what we could read: 1e-4 here, a stated assumption.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "preference"))
from _paper import paper_config  # noqa: E402


def get_config(options=""):
  if options not in ("",):
    raise ValueError(f"unknown option {options!r} for ddo/paper; valid: ''")
  config = paper_config("ddo", alpha=1.0, beta=0.02)
  config.optim.optimizer = "adam"
  config.optim.lr = 1e-4
  config.rounds.num_rounds = 12
  config.rounds.prompts_per_round = 50_000
  config.data.batch_size = 512
  config.training.num_steps = 1_500_000 // 512
  config.ddo.selection_every = 500
  return config
