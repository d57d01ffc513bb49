"""Consistency distillation on CIFAR-10 from the EDM teacher (Song et al. 2023, one-step FID 3.55 with
LPIPS; `openai/consistency_models_cifar10` `configs/cifar10_ve_cd.py`, `launch.sh`).

  python -m diffjax.distill.main --config=configs/cd/cifar10.py --workdir=/ckpt/cd_cifar10

Official settings: N = 18, Heun teacher step, target = stop-gradient online network (mu = 0),
student initialised from the teacher, batch 512, lr 4e-4 for l2 (2e-4 for l1), warm-up 1e7/512
steps as the notes record, 800k iterations, no clipping, dropout 0, evaluation EMA 0.9999.

Not reproduced, stated: LPIPS (the paper's best distance) is not available, so the distance is
l2; RAdam is replaced by Adam; the teacher is the library's EDM DDPM++ config
(configs/edm/cifar10_ddpmpp.py) rather than the checkpoint the paper distils.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "distillation"))
from _distill_paper import paper_config  # noqa: E402


def get_config(options=""):
  if options != "":
    raise ValueError(f"unknown option {options!r} for cd/cifar10; it takes none")
  return paper_config("cd", "cifar10_ddpmpp", "/ckpt/edm_cifar10", batch_size=512, lr=4e-4,
                      warmup_steps=10_000_000 // 512, num_steps=800_000, ema_decay=0.9999, num_scales=18,
                      solver="heun", distance="l2", weighting="uniform")
