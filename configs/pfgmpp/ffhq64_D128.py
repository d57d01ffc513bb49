"""PFGM++ with D = 128 on FFHQ 64x64, DDPM++ (Xu et al. 2023, Table 2: FID 2.43 at 79 NFE; EDM's
D = inf is 2.53).

  python -m diffjax.main --config=configs/pfgmpp/ffhq64_D128.py --workdir=/ckpt/pfgmpp_ffhq64_D128 \
      --config.data.options.path=/data/ffhq64.npz

The official command: `--pfgmpp=1 --aug_dim=128 --arch=ddpmpp --batch=256 --cres=1,2,2,2 --lr=2e-4
--dropout=0.05 --augment=0.15`, EDM's FFHQ-64 setting (`ddpmpp_ffhq64`, 61,805,571 parameters),
trained for EDM's 200 Mimg and sampled with 40 Heun steps (79 NFE).

Data: the 70k FFHQ images at 64x64 as one `.npz` with `x` (N, 64, 64, 3) in [-1, 1] (EDM's
`dataset_tool.py --source=ffhq/images1024x1024 --resolution=64x64`, then stacked and scaled
from uint8 by x / 127.5 - 1); tfds has no FFHQ builder. Options (comma-separated): `noaug`, `tiny`.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _pfgmpp_common import parse, pfgmpp_config  # noqa: E402

from diffjax.configuration import d  # noqa: E402


def get_config(options=""):
  opts = parse(options, "pfgmpp/ffhq64_D128", valid=("noaug", "tiny"))
  return pfgmpp_config(128, "ddpmpp", augment=0.0 if "noaug" in opts else 0.15, tiny="tiny" in opts,
                       data=d(name="npz", batch_size=256, options=d(path="/data/ffhq64.npz")), batch_size=256,
                       lr=2e-4, dropout=0.05, model_name="ddpmpp_ffhq64", model_options=d(),
                       num_sampling_steps=40)
