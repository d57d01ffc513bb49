"""Shared settings of the small-scale distillation configs (configs/<method>/toy.py:<task>).

`toy_config(method, task, tiny, **method_options)` returns a `diffjax.distill` config: the task's
EDM teacher (configs/distillation/teacher.py, trained on first use in `teacher.workdir`), AdamW
with DMD2's clipping (10) and a short warm-up, batch 256, and run lengths that take a few CPU
minutes (`tiny`: seconds, for tests). Each method's toy.py sets its learning rate and length.
"""
import os

from diffjax.configuration import d
from diffjax.distill import default_distill_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TASKS = ("ring", "grid", "digits")


def parse(options, name):
  """`options` of a configs/<method>/toy.py: the task (`grid` default, `ring` or `digits`), optionally
  `,tiny`. Returns (task, tiny)."""
  parts = [p for p in options.split(",") if p] or ["grid"]
  task = [p for p in parts if p in TASKS]
  rest = [p for p in parts if p not in TASKS and p != "tiny"]
  if rest or len(task) > 1 or parts.count("tiny") > 1:
    raise ValueError(f"unknown options {options!r} for {name}; valid: a task in {list(TASKS)}, optionally "
                     "with ',tiny' (e.g. 'digits,tiny'); no task means 'grid'")
  return (task[0] if task else "grid"), "tiny" in parts


def toy_config(method, task, tiny=False, *, lr, num_steps, ema_decay=0.0, **method_options):
  if task not in TASKS:
    raise ValueError(f"task={task!r} is not valid; valid choices: {list(TASKS)}")
  config = default_distill_config()
  config.teacher = d(config_path=os.path.join(ROOT, "configs", "distillation", "teacher.py"),
                     config_options=task + (",tiny" if tiny else ""),
                     workdir=f"/tmp/diffjax_distill_teacher_{task}" + ("_tiny" if tiny else ""))
  config.method = method
  config.method_options = d(**method_options)
  config.data.batch_size = 64 if tiny else 256
  for optim in (config.optim, config.critic_optim):
    optim.optimizer = "adamw"
    optim.weight_decay = 0.01
    optim.lr = lr
    optim.warmup_steps = 0 if tiny else 100
    optim.grad_clip = 10.0
  config.training.num_steps = 8 if tiny else num_steps
  config.training.log_every = 4 if tiny else 500
  config.training.ckpt_every = 0 if tiny else 2000
  config.training.ema_decay = ema_decay
  config.training.n_jitted_steps = 1 if tiny else 10  # ten steps per compiled call (one lax.scan)
  config.eval.n_samples = 256 if tiny else (2000 if task == "digits" else 10_000)
  return config
