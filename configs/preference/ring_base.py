"""The reference model of the preference experiments on the 8-Gaussian ring (DDPM, eps-MLP).

  python -m diffjax.main --config=configs/preference/ring_base.py --workdir=/tmp/diffjax_preference_base_ring

As the pilot of the preference notes (sec. 8.1): DDPM with T = 100 linear betas 1e-4 ... 0.2
(`vp_discrete`), an eps-predicting residual MLP (3 blocks of width 128, sinusoidal time of the
DDPM step label), Adam 1e-3, batch 512. `tiny` trains for fewer steps (tests).
"""
from diffjax.configuration import d, get_default_config


def get_config(options=""):
  if options not in ("", "tiny"):
    raise ValueError(f"unknown option {options!r} for preference/ring_base; valid: '' or 'tiny'")
  tiny = options == "tiny"
  config = get_default_config()
  config.seed = 0
  config.data = d(name="ring8", batch_size=512, options=d())
  config.process = d(name="vp_discrete", options=d(schedule="linear", num_steps=100, beta_start=1e-4, beta_end=0.2))
  config.model.name = "mlp"
  config.model.options = d(width=128, num_blocks=3)
  config.model.parametrization = "eps"
  config.model.time_input = "ddpm_label"
  config.loss = d(name="eps", options=d())
  config.optim.optimizer = "adam"
  config.optim.lr = 1e-3
  config.optim.warmup_steps = 100
  config.optim.grad_clip = 1.0
  config.training.num_steps = 300 if tiny else 10_000
  config.training.log_every = 100
  config.training.ckpt_every = config.training.num_steps
  config.training.ema_decay = 0.99 if tiny else 0.999
  config.training.tensorboard = False
  config.sampling = d(sampler="ddim", options=d(eta=1.0), grid="time_uniform", grid_options=d(), num_steps=20,
                      t_start=1.0, t_end=0.01, use_ema=True, batch_size=10_000, guidance_scale=1.0)
  config.eval.n_samples = 2000 if tiny else 10_000
  config.eval.plot_samples = not tiny
  return config
