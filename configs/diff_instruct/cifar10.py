"""Diff-Instruct on unconditional CIFAR-10 from the EDM teacher (Luo et al. 2023; `pkulwj1994/diff_instruct`
README: `--lr 1e-5 --glr 1e-5`, batch 128, `--init_sigma 1.0`; FID 4.53 as the ECT README lists it).

  python -m diffjax.distill.main --config=configs/diff_instruct/cifar10.py --workdir=/ckpt/di_cifar10

One fake-score step then one generator step per iteration; sigma ~ LogNormal(-1.2, 1.2) in both
losses; the generator is the teacher's network called at sigma = init_sigma = 1 on z.

Assumed, stated: the iteration count (200k) and Adam's defaults; the teacher is the library's EDM
DDPM++ config.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "distillation"))
from _distill_paper import paper_config  # noqa: E402


def get_config(options=""):
  if options != "":
    raise ValueError(f"unknown option {options!r} for diff_instruct/cifar10; it takes none")
  return paper_config("diff_instruct", "cifar10_ddpmpp", "/ckpt/edm_cifar10", batch_size=128, lr=1e-5,
                      num_steps=200_000, generator_sigma=1.0, generator_every=1)
