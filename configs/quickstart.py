"""Quick start: EDM on the 8-Gaussian ring with the time-conditioned MLP.

  python -m diffjax.main --config=configs/quickstart.py --workdir=/tmp/diffjax_quickstart

Trains with the EDM loss and preconditioning (Karras et al. 2022), samples 10,000 points with the
EDM Heun sampler (18 steps on the Karras grid, NFE 35) from the EMA weights, and writes
`samples.png` and `metrics.json` (sliced Wasserstein distance to 10,000 fresh ring samples, the
same distance between two fresh sets of ring samples as the noise floor, and each mode's share).
"""
from diffjax.configuration import d, get_default_config


def get_config(options=""):
  del options
  config = get_default_config()
  config.seed = 0
  config.data = d(name="ring8", batch_size=512, options=d())

  config.process = d(name="edm", options=d(sigma_min=0.002, sigma_max=80.0))
  model = config.model
  model.name = "mlp"
  model.parametrization = "edm"
  model.precond = "edm"
  model.sigma_data = 0.5

  config.loss = d(name="edm", options=d(p_mean=-1.2, p_std=1.2))

  optim = config.optim
  optim.optimizer = "adam"
  optim.lr = 2e-3
  optim.warmup_steps = 200
  optim.schedule = "cosine"
  optim.decay_steps = 4000
  optim.grad_clip = 1.0

  training = config.training
  training.num_steps = 4000
  training.log_every = 100
  training.ckpt_every = 2000
  training.sample_every = 2000
  training.ema_decay = 0.999
  training.nonfinite = "stop"

  sampling = config.sampling
  sampling.sampler = "heun"
  sampling.grid = "karras"
  sampling.grid_options = d(rho=7.0)
  sampling.num_steps = 18
  sampling.batch_size = 10_000
  config.eval.n_samples = 10_000
  return config
