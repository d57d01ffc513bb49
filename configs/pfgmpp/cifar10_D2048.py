"""PFGM++ with D = 2048 on CIFAR-10, NCSN++ (Xu et al. 2023, Table 1: FID 1.91 unconditional, 1.74
class-conditional, at 35 NFE; EDM's D = inf is 1.98).

  python -m diffjax.main --config=configs/pfgmpp/cifar10_D2048.py --workdir=/ckpt/pfgmpp_cifar10_D2048

The official command is EDM's with `--pfgmpp=1 --aug_dim=2048 --arch=ncsnpp --batch=512`: all other
hyper-parameters are EDM's CIFAR-10 ones (configs/edm/_edm_common.py). Options (comma-separated):
`cond`, `noaug`, `tiny` (8x8 digits with `ncsnpp_tiny`, 300 steps).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _pfgmpp_common import parse, pfgmpp_config  # noqa: E402


def get_config(options=""):
  opts = parse(options, "pfgmpp/cifar10_D2048")
  return pfgmpp_config(2048, "ncsnpp", cond="cond" in opts, augment=0.0 if "noaug" in opts else 0.12,
                       tiny="tiny" in opts)
