"""Flax NNX networks `model(x, t, cond=None)` and a registry of named configurations.

  dj.models.create("mlp", rngs=nnx.Rngs(0), in_features=2)
  dj.models.create("unet_tiny", rngs=nnx.Rngs(0), in_channels=1)

Other architectures register themselves in their own modules with `register`.
"""
from diffjax.models import dico, dit, macs
from diffjax.models.dico import DICO_SIZES, DiCo
from diffjax.models.dit import DIT_SIZES, DiT, dit_kwargs
from diffjax.models.edm_unets import EDM_CIFAR10, DhariwalUNet, SongUNet
from diffjax.models.edm_unets import register_models as _register_edm_models
from diffjax.models.gpt2 import GPT2  # registers gpt2{,_medium,_large,_xl,_small,_tiny} (MLKD)
from diffjax.models.mlp import MLP
from diffjax.models.registry import (count_params, create, dropout_rate, list_models, register, split_apply,
                                     split_features, split_train_apply)
from diffjax.models.unet import UNet

register("mlp", MLP, width=256, num_blocks=3)
register("mlp_tiny", MLP, width=32, num_blocks=1)
register("unet_tiny", UNet, ch=16, ch_mult=(1, 2), num_res_blocks=1)
register("unet_digits", UNet, ch=32, ch_mult=(1, 2), num_res_blocks=2, attn_resolutions=(4,), resolution=8)
register("unet_small", UNet, ch=64, ch_mult=(1, 2, 2), num_res_blocks=2, attn_resolutions=(16,), resolution=32)
# DiT (Peebles & Xie 2023) and DiCo (Ai et al. 2025) on 32x32x4 SD-VAE latents (256x256 images),
# 1000 classes, learned sigma, as the papers; `*_tiny` for class-conditional 8x8 digits.
dit.register_all()
dico.register_all()
# EDM's DDPM++ / NCSN++ (CIFAR-10, with the 9 augment labels; `_cond`) and ADM (ImageNet-64), + tiny ones.
_register_edm_models()
register("unet_cond_tiny", UNet, ch=32, ch_mult=(1, 2), num_res_blocks=1, num_classes=10)

__all__ = ["DhariwalUNet", "DiCo", "DiT", "SongUNet", "MLP", "UNet", "macs", "count_params", "create", "list_models", "register", "split_apply", "split_features",
           "split_train_apply", "dropout_rate"]
