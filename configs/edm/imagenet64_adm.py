"""EDM, ADM on class-conditional ImageNet 64x64 (Karras et al. 2022; `NVlabs/edm` README
`--cond=1 --arch=adm --duration=2500 --batch=4096 --lr=2e-4 --dropout=0.10 --augment=0`): the
teacher of DMD2's ImageNet-64 distillation (`edm-imagenet-64x64-cond-adm.pkl`).

  python -m diffjax.main --config=configs/edm/imagenet64_adm.py --workdir=/ckpt/edm_imagenet64

EDM preconditioning (sigma_data 0.5), ln sigma ~ N(-1.2, 1.2^2), Adam 2e-4 with EDM's 10 Mimg
linear warm-up, batch 4096, 2500 Mimg (610,352 steps), dropout 0.1, no augmentation. Sampling as
the README's ImageNet command: Heun, 256 steps, S_churn 40, S_min 0.05, S_max 50, S_noise 1.003.
The data set is tfds `imagenet2012` at 64x64 (prepare it once with tfds).

Assumed, stated: the README command does not set `--ema`, so train.py's default half-life of
0.5 Mimg is used (per-step decay 0.5^(4096/500,000)); EDM's fp16 and loss scaling are not used
(float32); the EMA ramp-up is a constant decay here.
"""
from diffjax.configuration import d, get_default_config


def get_config(options=""):
  if options != "":
    raise ValueError(f"unknown option {options!r} for edm/imagenet64_adm; it takes none")
  config = get_default_config()
  config.seed = 0
  config.data = d(name="tfds:imagenet2012", batch_size=4096, options=d(split="train", image_size=64))
  config.process = d(name="edm", options=d())
  config.model.name = "adm_imagenet64"
  config.model.options = d(num_classes=1000)
  config.model.parametrization = "edm"
  config.model.precond = "edm"
  config.model.sigma_data = 0.5
  config.loss = d(name="edm", options=d(p_mean=-1.2, p_std=1.2, reduce="sum"))
  config.optim.optimizer = "adam"
  config.optim.lr = 2e-4
  config.optim.warmup_steps = 10_000_000 // 4096
  config.training.num_steps = 2_500_000_000 // 4096
  config.training.ema_decay = 0.5 ** (4096 / 500_000)
  config.training.log_every = 100
  config.training.ckpt_every = 10_000
  config.sampling.sampler = "heun"
  config.sampling.options = d(s_churn=40.0, s_tmin=0.05, s_tmax=50.0, s_noise=1.003)
  config.sampling.grid = "karras"
  config.sampling.num_steps = 256
  config.sampling.batch_size = 500
  config.eval.n_samples = 50_000
  return config
