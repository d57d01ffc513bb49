"""SIM on unconditional CIFAR-10 from the EDM teacher (Luo et al. 2024: one-step FID 2.06 unconditional).

  python -m diffjax.distill.main --config=configs/sim/cifar10.py --workdir=/ckpt/sim_cifar10

SIM's repository is inference-only and the paper's training hyperparameters could not be read
here: everything but the method is Diff-Instruct's (same first author): batch 128, lr 1e-5 for
both networks, 1:1 updates, LogNormal(-1.2, 1.2) sigmas, generator at sigma 1. The distance is
pseudo-Huber with c = 0.00054 sqrt(3072) (iCT's constant, in x0 units) — an assumption.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "distillation"))
from _distill_paper import paper_config  # noqa: E402


def get_config(options=""):
  if options != "":
    raise ValueError(f"unknown option {options!r} for sim/cifar10; it takes none")
  return paper_config("sim", "cifar10_ddpmpp", "/ckpt/edm_cifar10", batch_size=128, lr=1e-5, num_steps=200_000,
                      generator_sigma=1.0, generator_every=1, distance="pseudo_huber", c=0.00054 * 3072**0.5)
