"""Shared settings of the DiCo ImageNet 256x256 latent configs (Ai et al. 2025, "DiCo: Revitalizing
ConvNets for Scalable and Efficient Diffusion Modeling"; `shallowdream204/DiCo` train.py and logs).

DiCo trains exactly as DiT: 1000-step linear beta schedule, eps-prediction, AdamW lr 1e-4 constant,
no weight decay, global batch 256, EMA 0.9999, fp32, class dropout 0.1; SD-VAE (ft-ema) latents
x 0.18215 with latent-level horizontal flips (`configs/dit/README.md` prepares the file). The
README's 400K-step FIDs without guidance: S 49.97, B 27.20, L 13.66, XL 11.67; DiCo-XL at 3.75M
steps with cfg 1.4: FID 2.05. Like DiT, the network learns the variance and trains the hybrid loss
L_simple + L_vlb, sampling with 250 respaced ancestral steps using it (configs/dit/imagenet256_xl2.py).
"""
from diffjax.configuration import d, get_default_config


def dico_config(model_name, num_steps=400_000):
  config = get_default_config()
  config.seed = 0
  config.data = d(name="npz", batch_size=256, options=d(path=None, x_key="x", label_key="label", scale=1.0))
  config.process = d(name="vp_discrete", options=d(schedule="linear", num_steps=1000))
  config.model.name = model_name
  config.model.options = d(num_classes=1000, learn_sigma=True)
  config.model.parametrization = "eps"
  config.model.time_input = "ddpm_label"
  config.model.label_dropout = 0.1
  config.loss = d(name="hybrid", options=d())
  config.optim.optimizer = "adamw"
  config.optim.lr = 1e-4
  config.optim.weight_decay = 0.0
  config.training.num_steps = num_steps
  config.training.ema_decay = 0.9999
  config.training.log_every = 100
  config.training.ckpt_every = 50_000
  config.training.sample_every = 50_000
  config.sampling.sampler = "ddpm_learned_variance"
  config.sampling.options = d(clip_denoised=False)
  config.sampling.grid = "time_uniform"
  config.sampling.num_steps = 250
  config.sampling.t_start = 1.0
  config.sampling.t_end = 1e-3
  config.sampling.guidance_scale = 1.0
  config.sampling.batch_size = 64
  config.eval.n_samples = 50_000
  return config
