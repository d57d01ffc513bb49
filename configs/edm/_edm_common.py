"""The EDM training recipe (Karras et al. 2022, Table 7 / app. F; NVlabs/edm `train.py`), shared by
configs/edm/cifar10_{ddpmpp,ncsnpp}.py and the PFGM++ configs (configs/pfgmpp/), which inherit it
unchanged (Xu et al. 2023, sec. 5: "we borrow all the hyper-parameters from EDM").

`edm_config` builds one run. The recipe, as train.py sets it:
  preconditioning and loss   EDM (sigma_data 0.5, ln sigma ~ N(-1.2, 1.2^2)), summed over pixels
                             and averaged over the batch (the loop's `loss.sum() / batch`).
  optimiser                  Adam (0.9, 0.999, eps 1e-8), lr ramped linearly from 0 over
                             `lr_rampup_kimg` = 10 Mimg, no clipping.
  EMA                        half-life 0.5 Mimg with ramp-up ratio 0.05 (`edm_ema_schedule`).
  augmentation               the ADA-style geometric pipe with probability `augment` (CIFAR-10 0.12,
                             FFHQ 0.15), its 9 labels fed to the network (non-leaky conditioning).
  sampling                   Heun, 18 Karras steps (rho 7, sigma 0.002 ... 80), 35 NFE (FFHQ 40 steps, 79).

`tiny` keeps the recipe and shrinks it to a CPU test: 8x8 digits, the `*_tiny` networks, a few
hundred steps, a short EMA half-life and warm-up.
"""
from diffjax.configuration import d, get_default_config, parse_options

OPTIONS = ("cond", "noaug", "tiny")
#: train.py's augment kwargs (`--augment=p` turns them on with probability p)
AUGMENT_OPTIONS = d(xflip=1e8, yflip=1, scale=1, rotate_frac=1, aniso=1, translate_frac=1)


def parse(options, name, valid=OPTIONS):
  """Comma-separated options, e.g. 'cond,noaug'; errors name the config and the valid ones."""
  return parse_options(options, name, valid)


def edm_config(arch, *, cond=False, augment=0.12, tiny=False, data=None, resolution=32, num_classes=10,
               batch_size=512, lr=1e-3, dropout=0.13, duration_mimg=200, lr_rampup_mimg=10,
               ema_halflife_mimg=0.5, ema_rampup_ratio=0.05, num_sampling_steps=18, model_name=None,
               model_options=None):
  """One EDM-recipe run config; `arch` is 'ddpmpp' or 'ncsnpp' (EDM's SongUNet variants)."""
  if arch not in ("ddpmpp", "ncsnpp"):
    raise ValueError(f"arch={arch!r}; valid: 'ddpmpp', 'ncsnpp'")
  config = get_default_config()
  config.seed = 0
  if tiny:
    batch_size, duration_img, lr = 64, 64 * 300, 1e-3
    lr_rampup_img, ema_halflife_img = 64 * 50, 64 * 20
    data = d(name="digits", batch_size=batch_size, options=d(split="train"))
    model_name, model_options = f"{arch}_tiny", d(in_channels=1)
  else:
    duration_img, lr_rampup_img = int(duration_mimg * 1e6), int(lr_rampup_mimg * 1e6)
    ema_halflife_img = int(ema_halflife_mimg * 1e6)
    data = data or d(name="tfds:cifar10", batch_size=batch_size, options=d(split="train"))
    model_name = model_name or f"{arch}_cifar10"
    model_options = model_options if model_options is not None else d()
    if dropout != 0.13:
      model_options.dropout = dropout
  config.data = data
  config.process = d(name="edm", options=d())
  config.model.name = model_name
  config.model.options = model_options
  if tiny and augment:
    config.model.options.augment_dim = 9
  if not augment and not tiny:
    config.model.options.augment_dim = 0  # train.py: augment_dim = 9 only with --augment > 0
  if cond:
    config.model.options.num_classes = num_classes
  config.model.parametrization = "edm"
  config.model.precond = "edm"
  config.model.sigma_data = 0.5
  config.augment = d(p=float(augment), options=AUGMENT_OPTIONS.copy_and_resolve_references())
  config.loss = d(name="edm", options=d(p_mean=-1.2, p_std=1.2, reduce="sum"))
  config.optim.optimizer = "adam"
  config.optim.lr = lr
  config.optim.warmup_steps = lr_rampup_img // batch_size
  config.optim.grad_clip = 0.0
  config.training.num_steps = duration_img // batch_size
  config.training.ema_halflife_images = ema_halflife_img
  config.training.ema_rampup_ratio = ema_rampup_ratio
  config.training.ema_decay = 0.5 ** (batch_size / ema_halflife_img)  # the decay once the ramp-up is over
  config.training.log_every = 50 if tiny else 100
  config.training.ckpt_every = config.training.num_steps if tiny else 10_000
  config.training.sample_every = 0 if tiny else 10_000
  config.training.tensorboard = not tiny
  config.sampling.sampler = "heun"
  config.sampling.options = d()
  config.sampling.grid = "karras"
  config.sampling.num_steps = num_sampling_steps
  config.sampling.batch_size = 256 if tiny else 500
  config.eval.n_samples = 256 if tiny else 50_000
  return config
