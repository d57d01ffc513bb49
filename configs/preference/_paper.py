"""Shared settings of the paper-scale preference configs (configs/<method>/paper.py).

These carry each paper's optimisation hyperparameters as its official code sets them (sources in
each config's docstring and in the preference notes). diffjax has no text encoder or Stable
Diffusion U-Net: at paper scale the base model is a diffjax run of the user's
(`--config.base.config_path=... --config.base.workdir=...`, e.g. a class-conditional latent DiT of
configs/dit/), the offline methods train on a preference data set in diffjax's on-disk format
(`--config.generation.path=...`, built with `diffjax.data.preference.build_preference_data` from
the user's generators and reward models), and `task` names the rewards of the online methods.
"""
from diffjax.configuration import d
from diffjax.finetune import default_finetune_config


def paper_config(method, **method_options):
  config = default_finetune_config()
  config.task = "digits"
  config.method = method
  config.method_options = d(**method_options)
  config.base = d(config_path="", config_options="", workdir="")  # the user's pretrained run
  config.optim.optimizer = "adamw"
  config.optim.grad_clip = 1.0
  config.optim.schedule = "constant"
  config.training.ckpt_every = 100
  config.training.keep_checkpoints = 2
  config.training.log_every = 10
  config.eval.n_samples = 1000
  return config
