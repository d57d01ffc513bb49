"""Training objectives as pure functions `loss(net, x0, key, **options) -> (scalar, aux)`."""
from diffjax.losses import score_matching
from diffjax.losses.score_matching import (edm_loss, eps_loss, flow_matching_loss, get_loss_fn,
                                           score_matching_loss, v_loss)
from diffjax.losses import repa
from diffjax.losses.repa import Projector, repa_alignment_loss, repa_loss
from diffjax.losses import vlb
from diffjax.losses.vlb import hybrid_loss, vb_terms_bpd
from diffjax.losses import preference
from diffjax.losses.preference import (d3po_loss, ddo_loss, diffusion_dpo, kto_loss, preference_loss, rank_dpo,
                                       sft_loss, spo_loss)
from diffjax.losses import distillation
from diffjax.losses.distillation import (consistency_loss, diff_instruct_generator_loss, dmd_loss, f_distill_loss,
                                         fake_score_loss, guidance_distillation_loss, progressive_distillation_loss,
                                         sim_generator_loss)
from diffjax.losses import knowledge_distillation
from diffjax.losses.knowledge_distillation import (causal_lm_loss, kd_scores, mlkd_loss, prediction_layer_loss,
                                                   sequence_nll)
