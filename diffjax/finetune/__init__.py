"""Preference fine-tuning of diffusion models: a frozen reference, the objectives of Diffusion-DPO,
RankDPO, D3PO, SPO, DDO (+ SFT, KTO) as train-step losses, the data each needs, evaluation, and
a config-driven runner (`finetune`)."""
from diffjax.finetune import evaluation, generation, objectives, reference, tasks
from diffjax.finetune.objectives import OBJECTIVES, get_objective
from diffjax.finetune.reference import (POLICY, REFERENCE, frozen_reference_optimizer, split_policy_reference,
                                        with_frozen_reference)
from diffjax.finetune.run import default_finetune_config, finetune

__all__ = ["OBJECTIVES", "POLICY", "REFERENCE", "default_finetune_config", "evaluation", "finetune",
           "frozen_reference_optimizer", "generation", "get_objective", "objectives", "reference",
           "split_policy_reference", "tasks", "with_frozen_reference"]
