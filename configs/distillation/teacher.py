"""The EDM teachers of the distillation experiments: 2-D mixtures and 8x8 digits (as 64-vectors).

  python -m diffjax.main --config=configs/distillation/teacher.py:grid --workdir=/tmp/diffjax_distill_teacher_grid

As the distillation notes' protocol (sec. 9.2): EDM preconditioning and loss (ln sigma ~ N(-1.2,
1.2^2)), an EDM-preconditioned residual MLP (3 blocks of width 256; 4 for digits),
Adam 1e-3 with clipping, EMA 0.999, 20k steps (15k for digits), and EDM's Heun sampler with 18 Karras steps (35 NFE).
sigma_data is the data's per-coordinate standard deviation: 1.418 for the ring of radius 2 and for
the 5x5 grid of spacing 1 (both with mode std 0.1), 0.75 for the digits in [-1, 1].

Options: `ring` (8 Gaussians), `grid` (25 Gaussians) or `digits`; `,cond` (digits only) makes the
teacher class-conditional (10 labels, label dropout 0.1); `,tiny` trains for a few hundred steps
(tests).
"""
from diffjax.configuration import d, get_default_config

TASKS = {"ring": ("ring8", 1.418), "grid": ("grid25", 1.418), "digits": ("digits", 0.75)}


def parse(options):
  parts = [p for p in options.split(",") if p]
  tasks = [p for p in parts if p in TASKS]
  rest = [p for p in parts if p not in TASKS and p not in ("tiny", "cond")]
  if len(tasks) != 1 or rest or ("cond" in parts and tasks != ["digits"]):
    raise ValueError(f"options {options!r} for distillation/teacher: give one task of {sorted(TASKS)}, "
                     "optionally followed by ',cond' (digits only) and ',tiny'")
  return tasks[0], "tiny" in parts, "cond" in parts


def get_config(options="grid"):
  task, tiny, cond = parse(options)
  name, sigma_data = TASKS[task]
  digits = task == "digits"
  config = get_default_config()
  config.seed = 0
  config.data = d(name=name, batch_size=(256 if digits else 1024) if not tiny else 128,
                  options=d(split="train", flatten=True) if digits else d())
  config.process = d(name="edm", options=d())
  config.model.name = "mlp"
  config.model.options = d(width=256, num_blocks=4 if digits else 3, embedding="fourier")
  if tiny:
    config.model.options = d(width=64, num_blocks=2, embedding="fourier")
  if cond:
    config.model.options.num_classes = 10
    config.model.label_dropout = 0.1
  config.model.parametrization = "edm"
  config.model.precond = "edm"
  config.model.sigma_data = sigma_data
  config.loss = d(name="edm", options=d(p_mean=-1.2, p_std=1.2))
  config.optim.optimizer = "adam"
  config.optim.lr = 1e-3
  config.optim.warmup_steps = 200
  config.optim.grad_clip = 1.0
  config.training.num_steps = 300 if tiny else (15_000 if digits else 20_000)
  config.training.log_every = 100 if tiny else 1000
  config.training.ckpt_every = config.training.num_steps
  config.training.ema_decay = 0.99 if tiny else 0.999
  config.training.tensorboard = False
  config.sampling = d(sampler="heun", options=d(), grid="karras", grid_options=d(), num_steps=18, t_start=None,
                      t_end=None, use_ema=True, batch_size=10_000, guidance_scale=1.0)
  config.eval = d(n_samples=1000 if tiny else 10_000, plot_samples=not tiny)
  return config
