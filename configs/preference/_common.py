"""Shared settings of the small-scale preference configs (configs/<method>/toy.py:<task>).

`toy_config(method, task, tiny, **method_options)` returns a `diffjax.finetune` config: the task's
base model (configs/preference/{ring,digits}_base.py, trained on first use in `base.workdir`),
the stochastic DDIM sampler (20 steps, eta 1) of the trajectory methods and of every evaluation,
Adam with a constant learning rate, and sizes that run in minutes on 2 CPU cores (`tiny`: seconds,
for tests).
"""
import os

from diffjax.configuration import d
from diffjax.finetune import default_finetune_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TASKS = ("ring", "digits")


def toy_config(method, task, tiny=False, **method_options):
  if task not in TASKS:
    raise ValueError(f"task={task!r} is not valid; valid choices: {list(TASKS)}")
  config = default_finetune_config()
  config.task = task
  config.method = method
  config.method_options = d(**method_options)
  config.base = d(config_path=os.path.join(ROOT, "configs", "preference", f"{task}_base.py"),
                  config_options="tiny" if tiny else "",
                  workdir=f"/tmp/diffjax_preference_base_{task}" + ("_tiny" if tiny else ""))
  config.sampling = d(num_steps=20 if not tiny else 8, eta=1.0)
  ring = task == "ring"
  config.generation.num_prompts = (2048 if ring else 500) if not tiny else 64
  if task == "digits":
    # Two generators of the same reference: plain conditional sampling and classifier-free guidance 2.
    config.generation.generators = [d(name="cfg1", eta=1.0, guidance=1.0), d(name="cfg2", eta=1.0, guidance=2.0)]
  config.rounds.prompts_per_round = (512 if ring else 100) if not tiny else 32
  config.data.batch_size = (256 if ring else 32) if not tiny else 16
  config.optim.lr = 1e-4 if ring else 5e-5
  config.training.num_steps = (1000 if ring else 300) if not tiny else 10
  config.training.log_every = 100 if not tiny else 5
  config.eval.n_samples = (4096 if ring else 500) if not tiny else 128
  return config


def parse(options, name):
  """`options` of a configs/<method>/toy.py: the task (`ring` or `digits`), optionally `,tiny`.

  Returns (task, tiny)."""
  parts = [p for p in options.split(",") if p] or ["ring"]
  task = [p for p in parts if p in TASKS]
  rest = [p for p in parts if p not in TASKS and p != "tiny"]
  if rest or len(task) > 1 or parts.count("tiny") > 1:
    raise ValueError(f"unknown options {options!r} for {name}; valid: a task in {list(TASKS)}, optionally "
                     "with ',tiny' (e.g. 'digits,tiny'); no task means 'ring'")
  return (task[0] if task else "ring"), "tiny" in parts
