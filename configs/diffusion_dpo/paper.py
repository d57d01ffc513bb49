"""Diffusion-DPO at paper scale (Wallace et al. 2024); shared settings in configs/preference/_paper.py.

  python -m diffjax.finetune.main --config=configs/diffusion_dpo/paper.py --workdir=/ckpt/dpo \
      --config.base.config_path=<your base config> --config.base.workdir=<its workdir> \
      --config.generation.path=<preference data set>

The official launchers (`SalesforceAIResearch/DiffusionDPO` launchers/sd15.sh, sdxl.sh): beta_dpo
5000 with the -beta/2 scaling of train.py, lr 1e-8 with --scale_lr over an effective batch of 2048
pairs (16 GPUs x 1 x grad-acc 128) = 2.048e-5, AdamW (weight decay 1e-2), grad clip 1.0, constant
with 500 warm-up steps (SD1.5; 200 for SDXL), 2000 steps. The paper's main SD1.5 result uses
beta 2000 and SDXL uses Adafactor (not in diffjax: AdamW here); option `sd15_paper` sets beta 2000.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "preference"))
from _paper import paper_config  # noqa: E402


def get_config(options=""):
  if options not in ("", "sd15_paper", "sdxl"):
    raise ValueError(f"unknown option {options!r} for diffusion_dpo/paper; valid: '', 'sd15_paper', 'sdxl'")
  config = paper_config("diffusion_dpo", beta=2000.0 if options == "sd15_paper" else 5000.0, loss_type="sigmoid",
                        scaling="official")
  config.optim.lr = 1e-8 * 2048
  config.optim.weight_decay = 1e-2
  config.optim.warmup_steps = 200 if options == "sdxl" else 500
  config.data.batch_size = 2048
  config.training.num_steps = 2000
  return config
