"""SIM, score implicit matching (Luo et al. 2024), on the small distillation tasks; shared settings in
configs/distillation/_distill_common.py.

  python -m diffjax.distill.main --config=configs/sim/toy.py:grid --workdir=/tmp/sim_grid

Options: the task (`grid` default, `ring`, `digits`), optionally `,tiny`. The pseudo-Huber distance
with c = 1 in x0 units, pi_t = the generator's detached distribution, Diff-Instruct's 1:1 loop and
sigma law. SIM's official code is inference-only: the loss is the surrogate of
`losses.distillation.sim_generator_loss`, whose weighting and c are unverified against the paper.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "distillation"))
from _distill_common import parse, toy_config  # noqa: E402


def get_config(options="grid"):
  task, tiny = parse(options, "sim/toy")
  return toy_config("sim", task, tiny, lr=1e-4, num_steps=3000, distance="pseudo_huber", c=1.0)
