"""EDM, DDPM++ on CIFAR-10 32x32 (Karras et al. 2022; `NVlabs/edm` train.py `--arch=ddpmpp
--precond=edm`, FID 1.97 unconditional / 1.79 conditional at 35 NFE).

  python -m diffjax.main --config=configs/edm/cifar10_ddpmpp.py --workdir=/ckpt/edm_cifar10
  python -m diffjax.main --config=configs/edm/cifar10_ddpmpp.py:cond --workdir=/ckpt/edm_cifar10_cond
  python -m diffjax.main --config=configs/edm/cifar10_ddpmpp.py:tiny --workdir=/tmp/edm_tiny

The recipe is `configs/edm/_edm_common.py`: batch 512, Adam lr 1e-3 ramped over 10 Mimg, 200 Mimg
(390,625 steps), dropout 0.13, EMA half-life 0.5 Mimg with ramp-up 0.05, augmentation p = 0.12
with its 9 labels, Heun with 18 steps (35 NFE). The data set is tfds `cifar10`, read with
`tfds.data_source` + grain (prepare it once with tfds).

Options (comma-separated): `cond` (10 classes), `noaug` (no augmentation and no augment labels:
EDM's ablation, FID ~2.1 rather than 1.97 in its Table 2 discussion), `tiny` (8x8 digits, the
`ddpmpp_tiny` network, 300 steps: a CPU test of the same recipe).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _edm_common import edm_config, parse  # noqa: E402


def get_config(options=""):
  opts = parse(options, "edm/cifar10_ddpmpp")
  return edm_config("ddpmpp", cond="cond" in opts, augment=0.0 if "noaug" in opts else 0.12, tiny="tiny" in opts)
