"""The reference model of the preference experiments on class-conditional 8x8 digits (DDPM, U-Net).

  python -m diffjax.main --config=configs/preference/digits_base.py --workdir=/tmp/diffjax_preference_base_digits

DDPM with T = 1000 linear betas (`vp_discrete`), the class-conditional `unet_cond_tiny`
(eps-prediction, DDPM step label as time input), label dropout 0.1 for classifier-free guidance,
Adam 1e-3, batch 128. The default trains for 400 steps with EMA 0.99, deliberately short: its
class accuracy (the digit classifier agrees with the prompted label) is 0.65, which leaves the
preference methods room to improve (measured with the 20-step DDIM, eta 1, on 1000 samples; the
raw weights reach 0.85). `full` trains 3000 steps with EMA 0.995 (accuracy 0.998: nothing left to
gain); `tiny` trains 60 steps (tests).
"""
from diffjax.configuration import d, get_default_config


def get_config(options=""):
  if options not in ("", "tiny", "full"):
    raise ValueError(f"unknown option {options!r} for preference/digits_base; valid: '', 'tiny' or 'full'")
  tiny, full = options == "tiny", options == "full"
  config = get_default_config()
  config.seed = 0
  config.data = d(name="digits", batch_size=32 if tiny else 128, options=d(split="train"))
  config.process = d(name="vp_discrete", options=d(schedule="linear", num_steps=1000))
  config.model.name = "unet_cond_tiny"
  config.model.options = d(num_classes=10)
  config.model.parametrization = "eps"
  config.model.time_input = "ddpm_label"
  config.model.label_dropout = 0.1
  config.loss = d(name="eps", options=d())
  config.optim.optimizer = "adam"
  config.optim.lr = 1e-3
  config.optim.warmup_steps = 20 if tiny else (200 if full else 100)
  config.optim.grad_clip = 1.0
  config.training.num_steps = 60 if tiny else (3000 if full else 400)
  config.training.log_every = 20 if tiny else 100
  config.training.ckpt_every = config.training.num_steps
  config.training.ema_decay = 0.9 if tiny else (0.995 if full else 0.99)
  config.training.tensorboard = False
  config.sampling = d(sampler="ddim", options=d(eta=1.0), grid="time_uniform", grid_options=d(), num_steps=20,
                      t_start=1.0, t_end=0.001, use_ema=True, batch_size=500, guidance_scale=1.0)
  config.eval.n_samples = 100 if tiny else 1000
  config.eval.plot_samples = not tiny
  return config
