"""Training objectives as pure functions `loss(net, x0, key, **options) -> (scalar, aux)`."""
from diffjax.losses import score_matching
from diffjax.losses.score_matching import (edm_loss, eps_loss, flow_matching_loss, get_loss_fn,
                                           score_matching_loss, v_loss)
from diffjax.losses import repa
from diffjax.losses.repa import Projector, repa_alignment_loss, repa_loss
