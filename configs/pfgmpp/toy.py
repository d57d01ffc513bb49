"""PFGM++ against EDM on small data, with matched hyper-parameters (experiments/pfgmpp.py).

  python -m diffjax.main --config=configs/pfgmpp/toy.py:digits,D=128 --workdir=/tmp/pfgmpp_digits_D128
  python -m diffjax.main --config=configs/pfgmpp/toy.py:grid,D=inf --workdir=/tmp/pfgmpp_grid_Dinf

Every D trains the same network with the same EDM recipe: EDM preconditioning and loss
(ln sigma ~ N(-1.2, 1.2^2)), a residual MLP (4 blocks of width 256 on digits as 64-vectors,
3 on the 2-D grid), Adam 1e-3 with 200 warm-up steps and clipping at 1, EMA 0.999, 15k steps on
digits and 10k on the grid (batch 256 / 512), Heun with 18 Karras steps (35 NFE) from the
PFGM++ prior. sigma_data is EDM's 0.5 on digits (pixels in [-1, 1]) and the data std 1.418 on the
grid. Only the process changes: `pfgmpp` with augmented dimension D, or `edm` for D = inf
(the two are the same code for D = inf).

Options: the task (`digits` or `grid`), `D=<number or inf>` (default 128), optionally `tiny`.
"""
from diffjax.configuration import d, get_default_config

TASKS = {"digits": ("digits", 0.5), "grid": ("grid25", 1.418)}


def parse(options):
  parts = [p for p in options.split(",") if p]
  task = [p for p in parts if p in TASKS]
  dims = [p[2:] for p in parts if p.startswith("D=")]
  rest = [p for p in parts if p not in TASKS and not p.startswith("D=") and p != "tiny"]
  if len(task) != 1 or len(dims) > 1 or rest:
    raise ValueError(f"options {options!r} for pfgmpp/toy: give one task of {sorted(TASKS)}, optionally "
                     "'D=<number or inf>' and 'tiny', comma-separated")
  try:
    D = float(dims[0]) if dims else 128.0
  except ValueError:
    raise ValueError(f"pfgmpp/toy: D={dims[0]!r} is not a number or 'inf'") from None
  return task[0], D, "tiny" in parts


def get_config(options="digits"):
  task, D, tiny = parse(options)
  name, sigma_data = TASKS[task]
  digits = task == "digits"
  config = get_default_config()
  config.seed = 0
  config.data = d(name=name, batch_size=(256 if digits else 512) if not tiny else 128,
                  options=d(split="train", flatten=True) if digits else d())
  config.process = d(name="edm", options=d()) if D == float("inf") else d(name="pfgmpp", options=d(D=D))
  config.model.name = "mlp"
  config.model.options = d(width=256, num_blocks=4 if digits else 3, embedding="fourier")
  if tiny:
    config.model.options = d(width=64, num_blocks=2, embedding="fourier")
  config.model.parametrization = "edm"
  config.model.precond = "edm"
  config.model.sigma_data = sigma_data
  config.loss = d(name="edm", options=d(p_mean=-1.2, p_std=1.2))
  config.optim.optimizer = "adam"
  config.optim.lr = 1e-3
  config.optim.warmup_steps = 200
  config.optim.grad_clip = 1.0
  config.training.num_steps = 300 if tiny else (15_000 if digits else 10_000)
  config.training.log_every = 100 if tiny else 1000
  config.training.ckpt_every = config.training.num_steps
  config.training.ema_decay = 0.99 if tiny else 0.999
  config.training.tensorboard = False
  config.sampling = d(sampler="heun", options=d(), grid="karras", grid_options=d(), num_steps=18, t_start=None,
                      t_end=None, use_ema=True, batch_size=10_000, guidance_scale=1.0)
  config.eval = d(n_samples=1000 if tiny else 10_000, plot_samples=not tiny)
  return config
