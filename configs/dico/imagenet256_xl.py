"""DiCo-XL on ImageNet 256x256 SD-VAE latents; settings in configs/dico/_base.py.

  python -m diffjax.main --config=configs/dico/imagenet256_xl.py --workdir=/ckpt/dico_xl \
      --config.data.options.path=/data/imagenet256_sdvae_latents.npz
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _base import dico_config  # noqa: E402


def get_config(options=""):
  if options not in ("",):
    raise ValueError(f"unknown option {options!r} for dico/imagenet256_xl; valid: ''")
  config = dico_config("dico_xl", num_steps=3_750_000)
  config.sampling.guidance_scale = 1.4  # the FID-2.05 setting
  return config
