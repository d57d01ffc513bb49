"""DiT-XL/2 on ImageNet 256x256 SD-VAE latents (Peebles & Xie 2023; `facebookresearch/DiT` train.py).

  python -m diffjax.main --config=configs/dit/imagenet256_xl2.py --workdir=/ckpt/dit_xl2 \
      --config.data.options.path=/data/imagenet256_sdvae_latents.npz

Paper settings: 1000-step linear beta schedule (1e-4 -> 0.02), eps-prediction, AdamW lr 1e-4
(constant, no weight decay, no warm-up), global batch 256, EMA 0.9999, class dropout 0.1 for
classifier-free guidance, 7M steps for the FID-2.27 model (cfg 1.5, 250 DDPM steps). Latents are
pre-extracted with `stabilityai/sd-vae-ft-ema` and multiplied by 0.18215; see
`configs/dit/README.md` for how to prepare the `.npz` (N, 32, 32, 4) + labels file.

As the paper: the network learns the variance (`learn_sigma`, 8 output channels) and trains the
hybrid loss L_simple + L_vlb of Improved DDPM (`loss.name='hybrid'`, the VLB term through a
stop-gradient mean, `diffjax.losses.vlb`), and samples with 250 respaced ancestral steps using the
learned variance (`ddpm_learned_variance`), classifier-free guidance on the eps channels.
"""
from diffjax.configuration import d, get_default_config


def get_config(options=""):
  if options not in ("",):
    raise ValueError(f"unknown option {options!r} for dit/imagenet256_xl2; valid: ''")
  config = get_default_config()
  config.seed = 0
  config.data = d(name="npz", batch_size=256, options=d(path=None, x_key="x", label_key="label", scale=1.0))
  config.process = d(name="vp_discrete", options=d(schedule="linear", num_steps=1000))
  config.model.name = "dit_xl_2"
  config.model.options = d(num_classes=1000, learn_sigma=True)
  config.model.parametrization = "eps"
  config.model.time_input = "ddpm_label"
  config.model.label_dropout = 0.1
  config.loss = d(name="hybrid", options=d())
  config.optim.optimizer = "adamw"
  config.optim.lr = 1e-4
  config.optim.weight_decay = 0.0
  config.training.num_steps = 7_000_000
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
  config.sampling.guidance_scale = 1.5
  config.sampling.batch_size = 64
  config.eval.n_samples = 50_000
  return config
