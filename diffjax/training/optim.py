"""Optimizers from a config: Adam/AdamW, linear warm-up, constant or cosine schedule, clipping.

Config fields (``config.optim``; defaults in ``default_optim_config()``):

  optimizer     'adam' | 'adamw'. 'adam' needs ``weight_decay == 0`` (decoupled decay is 'adamw').
  lr            peak learning rate, > 0.
  beta1, beta2  Adam moment decays, in [0, 1).
  eps           Adam epsilon, > 0.
  weight_decay  decoupled weight decay of 'adamw', >= 0.
  warmup_steps  linear warm-up from 0 to ``lr`` over this many optimizer steps, >= 0. As in
                score_sde, the first update (count 0) uses learning rate 0 when warm-up is on.
  schedule      'constant' | 'cosine'. 'cosine' decays from ``lr`` to ``min_lr`` (default 0) by
                optimizer step ``decay_steps``, counted from step 0 and including the warm-up
                (optax's ``warmup_cosine_decay_schedule`` convention).
  decay_steps   see ``schedule``; must exceed ``warmup_steps`` for 'cosine'.
  grad_clip     clip gradients to this global norm before the optimizer; 0 disables.
  min_lr        (optional) final learning rate of the cosine schedule, >= 0.
"""
import ml_collections
import optax

OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("constant", "cosine")


def default_optim_config() -> ml_collections.ConfigDict:
  """The default ``config.optim``: Adam 2e-4, no warm-up, constant, no clipping."""
  return ml_collections.ConfigDict(dict(
      optimizer="adam",
      lr=2e-4,
      beta1=0.9,
      beta2=0.999,
      eps=1e-8,
      weight_decay=0.0,
      warmup_steps=0,
      schedule="constant",
      decay_steps=0,
      grad_clip=0.0,
      min_lr=0.0,
  ))


def _get(cfg, name):
  if name in cfg:
    return cfg[name]
  return default_optim_config()[name]


def _number(cfg, name, *, lo=None, hi=None, lo_open=False, hi_open=False, integer=False):
  """Reads ``cfg.<name>`` and checks it is a number in the given range."""
  value = _get(cfg, name)
  kind = "an integer" if integer else "a number"
  if isinstance(value, bool) or not isinstance(value, (int, float)) or (
      integer and not float(value).is_integer()):
    raise ValueError(f"optim.{name} must be {kind}, got {value!r}")
  bad = ((lo is not None and (value <= lo if lo_open else value < lo)) or
         (hi is not None and (value >= hi if hi_open else value > hi)))
  if bad:
    left = "(" if lo_open else "["
    right = ")" if hi_open else "]"
    rng = f"{left}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{right}"
    raise ValueError(f"optim.{name} must be in {rng}, got {value!r}")
  return int(value) if integer else float(value)


def _choice(cfg, name, allowed):
  value = _get(cfg, name)
  if value not in allowed:
    raise ValueError(f"optim.{name} must be one of {list(allowed)}, got {value!r}")
  return value


def validate_optim_config(cfg) -> dict:
  """Checks every field of ``config.optim`` and returns them as a plain dict.

  Raises:
    ValueError: naming ``optim.<field>`` and the allowed values.
  """
  known = set(default_optim_config().keys())
  unknown = sorted(set(cfg.keys()) - known)
  if unknown:
    raise ValueError(f"optim has unknown field(s) {unknown}; allowed fields are {sorted(known)}")
  c = dict(
      optimizer=_choice(cfg, "optimizer", OPTIMIZERS),
      lr=_number(cfg, "lr", lo=0.0, lo_open=True),
      beta1=_number(cfg, "beta1", lo=0.0, hi=1.0, hi_open=True),
      beta2=_number(cfg, "beta2", lo=0.0, hi=1.0, hi_open=True),
      eps=_number(cfg, "eps", lo=0.0, lo_open=True),
      weight_decay=_number(cfg, "weight_decay", lo=0.0),
      warmup_steps=_number(cfg, "warmup_steps", lo=0, integer=True),
      schedule=_choice(cfg, "schedule", SCHEDULES),
      decay_steps=_number(cfg, "decay_steps", lo=0, integer=True),
      grad_clip=_number(cfg, "grad_clip", lo=0.0),
      min_lr=_number(cfg, "min_lr", lo=0.0),
  )
  if c["optimizer"] == "adam" and c["weight_decay"] != 0.0:
    raise ValueError(
        f"optim.weight_decay must be 0 with optim.optimizer='adam', got {c['weight_decay']!r}; "
        "use optim.optimizer='adamw' for decoupled weight decay")
  if c["schedule"] == "cosine" and c["decay_steps"] <= c["warmup_steps"]:
    raise ValueError(
        f"optim.decay_steps must be > optim.warmup_steps ({c['warmup_steps']}) with "
        f"optim.schedule='cosine', got {c['decay_steps']!r}")
  return c


def make_lr_schedule(optim_config) -> optax.Schedule:
  """The learning-rate schedule of ``optim_config`` as a function of the optimizer count."""
  c = validate_optim_config(optim_config)
  lr, warmup = c["lr"], c["warmup_steps"]
  if c["schedule"] == "cosine":
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=lr, warmup_steps=warmup, decay_steps=c["decay_steps"],
        end_value=c["min_lr"])
  if warmup == 0:
    return optax.constant_schedule(lr)
  return optax.join_schedules(
      [optax.linear_schedule(0.0, lr, warmup), optax.constant_schedule(lr)], [warmup])


def make_optimizer(optim_config) -> optax.GradientTransformation:
  """Builds the optax optimizer described by ``optim_config`` (see the module docstring).

  Args:
    optim_config: a ConfigDict (or mapping) with the ``config.optim`` fields.

  Returns:
    ``optax.chain(clip_by_global_norm(grad_clip) if grad_clip > 0, adam/adamw(schedule))``.

  Raises:
    ValueError: an invalid field, named as ``optim.<field>`` with its allowed values.
  """
  c = validate_optim_config(optim_config)
  schedule = make_lr_schedule(optim_config)
  if c["optimizer"] == "adamw":
    opt = optax.adamw(schedule, b1=c["beta1"], b2=c["beta2"], eps=c["eps"],
                      weight_decay=c["weight_decay"])
  else:
    opt = optax.adam(schedule, b1=c["beta1"], b2=c["beta2"], eps=c["eps"])
  if c["grad_clip"] > 0:
    return optax.chain(optax.clip_by_global_norm(c["grad_clip"]), opt)
  return opt
