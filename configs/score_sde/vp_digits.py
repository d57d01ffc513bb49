"""Score SDE, VP (Song et al. 2021) on 8x8 scikit-learn digits with a small U-Net.

  python -m diffjax.main --config=configs/score_sde/vp_digits.py --workdir=/tmp/vp_digits
  python -m diffjax.main --config=configs/score_sde/vp_digits.py:tiny --workdir=/tmp/vp_digits_tiny

As score_sde's `vp/ddpm_*` configs: continuous VP SDE (beta_min 0.1, beta_max 20), eps-prediction
with the network fed 999 t, DSM with sigma^2 weighting (L_simple), reduce_mean, Adam 2e-4 with
warm-up, grad clip 1, EMA (0.999; 0.995 for tiny, score_sde's 0.9999 is for 1.3M steps), Euler–Maruyama sampling with noise removal.
`tiny` (~10 minutes on 2 CPU cores) trains the `unet_tiny` model for fewer steps and samples with
fewer steps.
"""
from diffjax.configuration import d, get_default_config


def get_config(options=""):
  tiny = options == "tiny"
  if options not in ("", "tiny"):
    raise ValueError(f"unknown option {options!r} for vp_digits; valid: '' or 'tiny'")
  config = get_default_config()
  config.seed = 0
  config.data = d(name="digits", batch_size=128, options=d(split="train"))

  config.process = d(name="vp", options=d(beta_min=0.1, beta_max=20.0))
  model = config.model
  model.name = "unet_tiny" if tiny else "unet_digits"
  model.parametrization = "eps"
  model.time_input = "t1000"

  config.loss = d(name="score_matching", options=d(weighting="sigma2", reduce="mean", t_eps=1e-5))

  optim = config.optim
  optim.optimizer = "adam"
  optim.lr = 2e-4 if not tiny else 1e-3
  optim.warmup_steps = 500 if not tiny else 100
  optim.grad_clip = 1.0

  training = config.training
  training.num_steps = 4000 if tiny else 30_000
  training.log_every = 50
  training.ckpt_every = 1000 if tiny else 5000
  training.sample_every = 1000 if tiny else 5000
  # The EMA must forget the initial weights within the run: 0.999^30k ~ 1e-13, 0.995^4k ~ 2e-9.
  training.ema_decay = 0.995 if tiny else 0.999

  sampling = config.sampling
  sampling.sampler = "euler_maruyama"
  sampling.options = d(noise_removal=True)
  sampling.grid = "time_uniform"
  sampling.num_steps = 200 if tiny else 1000
  sampling.t_end = 1e-3
  sampling.batch_size = 500
  config.eval.n_samples = 500 if tiny else 2000
  return config
