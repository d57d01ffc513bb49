"""DMD2 (Yin et al. 2024) on the small distillation tasks; shared settings in configs/distillation/_distill_common.py.

  python -m diffjax.distill.main --config=configs/dmd2/toy.py:grid --workdir=/tmp/dmd2_grid
  python -m diffjax.distill.main --config=configs/dmd2/toy.py:digits --workdir=/tmp/dmd2_digits \
      --config.method_options.num_steps=4

Options: the task (`grid` default, `ring`, `digits`), optionally `,tiny`. As the notes' pilot
(sec. 9.4): no GAN, the generator updated every 5th step (the critic every step), lr 5e-4 for
both; the multi-step generator (method_options.num_steps) uses backward simulation. Set
gen_cls_loss_weight / cls_loss_weight (DMD2 ImageNet: 3e-3 / 1e-2) for the GAN head.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "distillation"))
from _distill_common import parse, toy_config  # noqa: E402


def get_config(options="grid"):
  task, tiny = parse(options, "dmd2/toy")
  return toy_config("dmd2", task, tiny, lr=5e-4, num_steps=5000, generator_every=5)
