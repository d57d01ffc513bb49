"""Progressive distillation on CIFAR-10 from the EDM teacher, the EDM variant of the consistency-models
code (`openai/consistency_models_cifar10` `jcm/losses.py::get_progressive_distillation_loss_fn`):
4096 steps halved to 1, 50k steps per halving, Adam 5e-5, gradient clipping 1.

  python -m diffjax.distill.main --config=configs/progressive/cifar10.py --workdir=/ckpt/pd_cifar10

Not reproduced, stated: the per-stage linear annealing of the learning rate to 0 of the official
`config/cifar_distill.py` (VP, cosine log-SNR, 8192 steps) is not available (constant lr); the
loss uses the library's two-DDIM-step target (= two Euler steps for EDM) with Salimans & Ho's
"snr_trunc" weighting rather than jcm's `max(1/t^2, 1)` l2; batch 512 is assumed.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "distillation"))
from _distill_paper import paper_config  # noqa: E402


def get_config(options=""):
  if options != "":
    raise ValueError(f"unknown option {options!r} for progressive/cifar10; it takes none")
  return paper_config("progressive", "cifar10_ddpmpp", "/ckpt/edm_cifar10", batch_size=512, lr=5e-5, grad_clip=1.0,
                      num_steps=50_000, start_steps=4096, end_steps=1, weighting="snr_trunc")
