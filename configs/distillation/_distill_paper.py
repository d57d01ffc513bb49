"""Shared scaffolding of the paper-scale distillation configs (configs/<method>/{cifar10,imagenet64}.py).

`paper_config(method, teacher, teacher_workdir, ...)` returns a `diffjax.distill` config whose teacher
is one of the library's EDM configs (configs/edm/*.py), trained by `python -m diffjax.main` into
``teacher_workdir`` (or trained there on first use). These runs are for TPU/GPU users; nothing
here runs on a CPU in reasonable time.
"""
import os

from diffjax.configuration import d
from diffjax.distill import default_distill_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def paper_config(method, teacher, teacher_workdir, *, batch_size, lr, num_steps, optimizer="adam",
                 weight_decay=0.0, warmup_steps=0, grad_clip=0.0, ema_decay=0.0, critic_lr=None,
                 **method_options):
  config = default_distill_config()
  name, options = (teacher.split(":") + [""])[:2]
  config.teacher = d(config_path=os.path.join(ROOT, "configs", "edm", f"{name}.py"), config_options=options,
                     workdir=teacher_workdir)
  config.method = method
  config.method_options = d(**method_options)
  config.data.batch_size = batch_size
  for optim, rate in ((config.optim, lr), (config.critic_optim, lr if critic_lr is None else critic_lr)):
    optim.optimizer = optimizer
    optim.lr = rate
    optim.weight_decay = weight_decay
    optim.warmup_steps = warmup_steps
    optim.grad_clip = grad_clip
  config.training.num_steps = num_steps
  config.training.log_every = 100
  config.training.ckpt_every = 5000
  config.training.ema_decay = ema_decay
  config.eval.n_samples = 50_000
  config.eval.step_counts = [1, 2]
  return config
