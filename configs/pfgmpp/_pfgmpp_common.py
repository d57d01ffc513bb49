"""PFGM++ configs: EDM's recipe (configs/edm/_edm_common.py) with the PFGM++ perturbation of
augmented dimension D (Xu et al. 2023; `Newbeeer/pfgmpp` train.py `--pfgmpp=1 --aug_dim=D`).

Only the process changes: the noise is the heavy-tailed kernel at r = sigma sqrt(D), the prior is
that kernel at sigma_max = 80, and the network, loss weighting, sigma law and the 35-NFE Heun
sampler are EDM's (the paper's hyper-parameter alignment, sec. 4).
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "edm"))
from _edm_common import edm_config, parse  # noqa: E402,F401

from diffjax.configuration import d  # noqa: E402


def pfgmpp_config(D, arch, **kwargs):
  config = edm_config(arch, **kwargs)
  config.process = d(name="pfgmpp", options=d(D=float(D)))
  return config
