"""Flax NNX networks `model(x, t, cond=None)` and a registry of named configurations.

  dj.models.create("mlp", rngs=nnx.Rngs(0), in_features=2)
  dj.models.create("unet_tiny", rngs=nnx.Rngs(0), in_channels=1)

Other architectures register themselves in their own modules with `register`.
"""
from diffjax.models.mlp import MLP
from diffjax.models.registry import count_params, create, list_models, register, split_apply
from diffjax.models.unet import UNet

register("mlp", MLP, width=256, num_blocks=3)
register("mlp_tiny", MLP, width=32, num_blocks=1)
register("unet_tiny", UNet, ch=16, ch_mult=(1, 2), num_res_blocks=1)
register("unet_digits", UNet, ch=32, ch_mult=(1, 2), num_res_blocks=2, attn_resolutions=(4,), resolution=8)
register("unet_small", UNet, ch=64, ch_mult=(1, 2, 2), num_res_blocks=2, attn_resolutions=(16,), resolution=32)

__all__ = ["MLP", "UNet", "count_params", "create", "list_models", "register", "split_apply"]
