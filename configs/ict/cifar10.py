"""Improved consistency training on CIFAR-10 (Song & Dhariwal 2024: one-step FID 2.51, two-step 2.24).

  python -m diffjax.distill.main --config=configs/ict/cifar10.py --workdir=/ckpt/ict_cifar10

Settings (the paper as the notes summarise it): no teacher network, the student from scratch with
the architecture of the teacher config, batch 1024, lr 1e-4, 400k iterations, evaluation
EMA 0.99993, pseudo-Huber over the whole sample with c = 0.00054 sqrt(3072) = 0.0299, the
discrete log-normal (-1.1, 2.0), weighting 1/(sigma_{i+1} - sigma_i), N doubling from 10 to
1280; two-step sampling at sigma 0.821 (pass it to `samplers.consistency_multistep`).

Not reproduced, stated: RAdam is replaced by Adam; the architecture is the teacher config's
DDPM++ with its own dropout, where iCT uses NCSN++ with dropout 0.3 and Fourier scale 0.02.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "distillation"))
from _distill_paper import paper_config  # noqa: E402


def get_config(options=""):
  if options != "":
    raise ValueError(f"unknown option {options!r} for ict/cifar10; it takes none")
  return paper_config("ict", "cifar10_ddpmpp", "/ckpt/edm_cifar10", batch_size=1024, lr=1e-4, num_steps=400_000,
                      ema_decay=0.99993, s0=10, s1=1280, distance="pseudo_huber", c=0.00054 * 3072**0.5,
                      weighting="ict", p_mean=-1.1, p_std=2.0)
