"""Diffusion distillation: a frozen EDM teacher, multi-network students (generator, fake score,
discriminator head) trained in one sharded step with two-time-scale update rules, and a
config-driven runner (`distill`). The losses are `diffjax.losses.distillation`'s."""
from diffjax.distill import evaluation, methods, step, teacher
from diffjax.distill.methods import METHODS, Method, build_method, generator_times
from diffjax.distill.run import default_distill_config, distill, validate_distill_config
from diffjax.distill.step import DistillState, Phase, every, except_every, make_distill_step
from diffjax.distill.teacher import Teacher

__all__ = ["METHODS", "DistillState", "Method", "Phase", "Teacher", "build_method", "default_distill_config",
           "distill", "evaluation", "every", "except_every", "generator_times", "make_distill_step", "methods",
           "step", "teacher", "validate_distill_config"]
