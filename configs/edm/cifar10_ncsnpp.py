"""EDM, NCSN++ on CIFAR-10 32x32 (Karras et al. 2022; `NVlabs/edm` train.py `--arch=ncsnpp
--precond=edm`, FID 1.98 unconditional in the PFGM++ paper's D = inf row).

  python -m diffjax.main --config=configs/edm/cifar10_ncsnpp.py --workdir=/ckpt/edm_cifar10_ncsnpp
  python -m diffjax.main --config=configs/edm/cifar10_ncsnpp.py:tiny --workdir=/tmp/edm_ncsnpp_tiny

As `cifar10_ddpmpp.py` with EDM's NCSN++ network (Fourier noise embedding of scale 16, residual
encoder, FIR [1, 3, 3, 1] resampling, 56,397,827 parameters); the recipe is
`configs/edm/_edm_common.py`. Options (comma-separated): `cond`, `noaug`, `tiny`.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _edm_common import edm_config, parse  # noqa: E402


def get_config(options=""):
  opts = parse(options, "edm/cifar10_ncsnpp")
  return edm_config("ncsnpp", cond="cond" in opts, augment=0.0 if "noaug" in opts else 0.12, tiny="tiny" in opts)
