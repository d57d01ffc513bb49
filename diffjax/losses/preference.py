"""Preference-optimization losses for diffusion models, as pure functions (optax style).

Every loss is written as the official code computes it (reductions, constants, clamps), with the
paper and equation in its docstring. Conventions shared by all functions:

* ``err = per_sample_error(pred, target)`` is the per-sample **mean** over all non-batch dims of
  the squared error (the Stable Diffusion repos' ``.mean(dim=[1, 2, 3])``). DDO is the exception:
  its log-ratios (`edm_ddo_logratio`, `eps_ddo_logratio`) are weighted **sums** over dims.
* The diffusion "implicit log-ratio" is ``log p_theta / p_ref ~ -k (err_theta - err_ref)``
  (`diffusion_logratio`, default k = 1/2 as in the official Diffusion-DPO code). Positive means
  the policy denoises that sample better than the reference.
* Trajectory methods (D3PO, SPO) use Gaussian transition log-probabilities of the DDIM sampler
  (`diffjax.samplers.transition_logprob`), clipped through the probability *ratio*
  (`clipped_logratio`).
* ``beta`` is always the inverse temperature multiplying the log-ratio.
* Batch-reduced losses return ``(loss, aux)``: a scalar and a dict of stop-gradient scalar
  diagnostics. `preference_loss` returns the per-pair losses (unreduced, like optax losses).

Argument errors raise ``ValueError`` naming the argument and the valid choices. Checks on values
(``beta > 0``, ``clip_eps`` in (0, 1), preference labels) run when the value is concrete and are
skipped when it is traced under ``jit``.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np

from diffjax import utils
from diffjax.losses._checks import check_choice as _check_choice
from diffjax.losses._checks import check_same_shape as _check_same_shape
from diffjax.losses._checks import concrete_scalar as _concrete_scalar
from diffjax.losses._checks import stop_gradient_tree as _sg

LOSS_TYPES = ("sigmoid", "hinge", "ipo", "robust", "exo_pair", "bco_pair", "nca_pair", "sppo_hard",
              "apo_zero", "apo_down")
SCALINGS = {"official": 0.5, "diffusers": 1.0}
RANK_SOURCES = ("target", "predicted")
_EXO_DEFAULT_EPS = 1e-3


# ----------------------------------------------------------------------------------------------
# argument checks
# ----------------------------------------------------------------------------------------------

def _concrete_array(value):
  try:
    return np.asarray(value)
  except (TypeError, jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
    return None


def _check_beta(fn, beta, name="beta"):
  b = _concrete_scalar(beta)
  if b is not None and not b > 0:
    raise ValueError(f"{fn}: {name} must be > 0, got {beta}")


def _check_clip_eps(fn, clip_eps):
  e = _concrete_scalar(clip_eps)
  if e is not None and not 0.0 < e < 1.0:
    raise ValueError(f"{fn}: clip_eps must lie in the open interval (0, 1), got {clip_eps}")


def _check_ndim(fn, name, x, ndim, meaning):
  if jnp.ndim(x) != ndim:
    raise ValueError(f"{fn}: {name} must have shape {meaning}, got shape {jnp.shape(x)}")


# ----------------------------------------------------------------------------------------------
# building blocks
# ----------------------------------------------------------------------------------------------
def per_sample_error(pred, target):
  """Per-sample squared error averaged over every non-batch dim, shape (B,).

  ``(pred - target).pow(2).mean(dim=[1, 2, 3])`` of Diffusion-DPO's ``train.py``
  (SalesforceAIResearch/DiffusionDPO), Diffusion-KTO and the diffusers ports: a **mean**, not the
  squared norm of Wallace et al. 2024 eq. 14 (which makes beta_code not comparable with the
  paper's beta built from squared norms).
  """
  _check_same_shape("per_sample_error", pred=pred, target=target)
  if jnp.ndim(pred) < 1:
    raise ValueError(f"per_sample_error: pred must have a batch axis, got shape {jnp.shape(pred)}")
  diff = (jnp.asarray(pred) - jnp.asarray(target))**2
  return jnp.mean(diff.reshape(diff.shape[0], -1), axis=-1)


def diffusion_logratio(err_policy, err_ref, scale=0.5):
  """The diffusion implicit log-ratio ``log p_theta(x) / p_ref(x) ~ -scale * (err_policy - err_ref)``.

  Wallace et al. 2024 (Diffusion-DPO, arXiv 2311.12908) eq. 14 replaces the intractable
  log-likelihood ratio by (minus) the difference of denoising errors at a shared (t, eps), with
  the constant T and the weight omega(lambda_t) factored into beta. ``scale = 1/2`` reproduces the
  official ``train.py`` (``scale_term = -0.5 * beta_dpo``); ``scale = 1`` reproduces diffusers'
  ``train_diffusion_dpo.py`` (``logits = ref_diff - model_diff``, no 1/2).
  """
  _check_same_shape("diffusion_logratio", err_policy=err_policy, err_ref=err_ref)
  return -scale * (jnp.asarray(err_policy) - jnp.asarray(err_ref))


def preference_loss(logratio_w, logratio_l, *, beta, loss_type="sigmoid", label_smoothing=0.0):
  """Per-pair DPO-family losses on log-ratios, shape (B,) (unreduced), TRL's ``loss_type`` table.

  With ``c = logratio_w`` (chosen), ``r = logratio_l`` (rejected) and ``D = c - r``
  (huggingface/trl ``DPOTrainer``; eps = ``label_smoothing``):

  ============ ===================================================================================
  sigmoid      ``-(1-eps) log sig(beta D) - eps log sig(-beta D)``: DPO (Rafailov et al. 2023,
               eq. 7) with cDPO label smoothing (TRL <= 0.x; eps = 0 is plain DPO).
  hinge        ``relu(1 - beta D)`` (SLiC, Zhao et al. 2023).
  ipo          ``(D - 1/(2 beta))^2`` (Azar et al. 2023, eq. 17; beta plays tau). Written here
               **without** TRL's division of D by the completion length: a diffusion sample has no
               token length, so this is the sequence-level form (as diffusers' ipo branch).
  robust       ``[-(1-eps) log sig(beta D) + eps log sig(-beta D)] / (1 - 2 eps)`` (rDPO,
               Chowdhury et al. 2024); needs eps < 1/2.
  exo_pair     ``q_w (log q_w - log(1-eps)) + q_l (log q_l - log eps)``, ``q_w = sig(beta D)``,
               ``q_l = sig(-beta D)`` (EXO, Ji et al. 2024, eq. 16); eps = 0 is replaced by 1e-3
               as TRL did.
  bco_pair     ``-log sig(beta c) - log sig(-beta r)`` (BCO, Jung et al. 2024; the running-mean
               reward shift of older TRL versions is not included, as in current TRL).
  nca_pair     ``-log sig(beta c) - 1/2 log sig(-beta c) - 1/2 log sig(-beta r)`` (NCA, Chen et
               al. 2024).
  sppo_hard    ``(c - 1/(2 beta))^2 + (r + 1/(2 beta))^2`` (SPPO hard labels, Wu et al. 2024).
  apo_zero     ``1 - sig(beta c) + sig(beta r)`` (APO-zero, D'Oosterlinck et al. 2024, eq. 7).
  apo_down     ``sig(beta c) + 1 - sig(beta D)`` (APO-down, eq. 8).
  ============ ===================================================================================

  At ``c = r = 0`` (policy = reference): sigmoid and robust give ``log 2``, hinge 1,
  bco_pair ``2 log 2``, nca_pair ``2 log 2``, apo_zero and apo_down 1.

  Args:
    logratio_w: log p_theta/p_ref of the preferred samples, shape (B,).
    logratio_l: log p_theta/p_ref of the rejected samples, shape (B,).
    beta: inverse temperature, > 0.
    loss_type: one of `LOSS_TYPES`.
    label_smoothing: eps, used by sigmoid, robust and exo_pair; in [0, 1/2) (robust) or [0, 1).

  Returns:
    Per-pair losses, shape (B,).
  """
  fn = "preference_loss"
  _check_choice(fn, "loss_type", loss_type, LOSS_TYPES)
  _check_beta(fn, beta)
  _check_same_shape(fn, logratio_w=logratio_w, logratio_l=logratio_l)
  eps = _concrete_scalar(label_smoothing)
  if eps is None:
    if loss_type == "exo_pair":
      raise ValueError(f"{fn}: label_smoothing must be a concrete number for loss_type 'exo_pair'")
    eps = label_smoothing
  else:
    upper = 0.5 if loss_type == "robust" else 1.0
    if not 0.0 <= eps < upper:
      raise ValueError(f"{fn}: label_smoothing must lie in [0, {upper}) for loss_type {loss_type!r}, "
                       f"got {label_smoothing}")
  c, r = jnp.asarray(logratio_w), jnp.asarray(logratio_l)
  z = beta * (c - r)
  ls = jax.nn.log_sigmoid
  if loss_type == "sigmoid":
    return -(1.0 - eps) * ls(z) - eps * ls(-z)
  if loss_type == "hinge":
    return jax.nn.relu(1.0 - z)
  if loss_type == "ipo":
    return (c - r - 1.0 / (2.0 * beta))**2
  if loss_type == "robust":
    return (-(1.0 - eps) * ls(z) + eps * ls(-z)) / (1.0 - 2.0 * eps)
  if loss_type == "exo_pair":
    e = _EXO_DEFAULT_EPS if eps == 0 else eps
    return (jax.nn.sigmoid(z) * (ls(z) - math.log1p(-e))
            + jax.nn.sigmoid(-z) * (ls(-z) - math.log(e)))
  if loss_type == "bco_pair":
    return -ls(beta * c) - ls(-beta * r)
  if loss_type == "nca_pair":
    return -ls(beta * c) - 0.5 * ls(-beta * c) - 0.5 * ls(-beta * r)
  if loss_type == "sppo_hard":
    return (c - 0.5 / beta)**2 + (r + 0.5 / beta)**2
  if loss_type == "apo_zero":
    return 1.0 - jax.nn.sigmoid(beta * c) + jax.nn.sigmoid(beta * r)
  # apo_down
  return jax.nn.sigmoid(beta * c) + 1.0 - jax.nn.sigmoid(z)


# ----------------------------------------------------------------------------------------------
# Diffusion-DPO, SFT, Diffusion-KTO
# ----------------------------------------------------------------------------------------------
def diffusion_dpo(policy_err_w, policy_err_l, ref_err_w, ref_err_l, *, beta, loss_type="sigmoid",
                  scaling="official", label_smoothing=0.0):
  """Diffusion-DPO (Wallace et al., CVPR 2024, arXiv 2311.12908, eq. 14), batch mean.

  ``scaling="official"`` is SalesforceAIResearch/DiffusionDPO ``train.py``::

      inside_term = -0.5 * beta * ((err_w - ref_err_w) - (err_l - ref_err_l))
      loss = -logsigmoid(inside_term).mean();  implicit_acc = mean(inside_term > 0)

  i.e. `preference_loss` on ``diffusion_logratio(..., scale=1/2)``. ``scaling="diffusers"`` is
  diffusers' ``examples/research_projects/diffusion_dpo/train_diffusion_dpo.py`` (``logits =
  ref_diff - model_diff``, no 1/2), so diffusers(beta) == official(2 beta) for every loss whose
  value depends only on ``beta * logratio`` (sigmoid, hinge, robust, ...; not ipo/sppo_hard).
  At policy = reference the sigmoid loss is ``log 2`` and its gradient with respect to the
  policy errors is ``(beta/4) (d err_w - d err_l)`` (official scaling).

  The errors are per-sample means over dims (`per_sample_error`) of policy and frozen reference
  at the same (t, eps) for winner and loser (the official code shares t and noise in a pair).

  Args:
    policy_err_w, policy_err_l, ref_err_w, ref_err_l: per-pair errors, shape (B,).
    beta: ``beta_dpo`` (> 0; 5000 in the official launchers, 2500 in diffusers' SD1.5 default).
    loss_type: see `preference_loss`.
    scaling: "official" (k = 1/2) or "diffusers" (k = 1).
    label_smoothing: see `preference_loss`.

  Returns:
    ``(loss, aux)``; aux holds ``implicit_acc`` (fraction of pairs with ``beta (lr_w - lr_l) > 0``,
    strict as the official code; diffusers' script would count exact ties as 1/2),
    ``reward_w``, ``reward_l`` (batch means of ``beta * logratio``) and ``reward_margin``.
  """
  fn = "diffusion_dpo"
  _check_choice(fn, "scaling", scaling, tuple(SCALINGS))
  _check_same_shape(fn, policy_err_w=policy_err_w, policy_err_l=policy_err_l, ref_err_w=ref_err_w,
                    ref_err_l=ref_err_l)
  _check_ndim(fn, "policy_err_w", policy_err_w, 1, "(B,)")
  k = SCALINGS[scaling]
  lr_w = diffusion_logratio(policy_err_w, ref_err_w, k)
  lr_l = diffusion_logratio(policy_err_l, ref_err_l, k)
  losses = preference_loss(lr_w, lr_l, beta=beta, loss_type=loss_type, label_smoothing=label_smoothing)
  inside = beta * (lr_w - lr_l)
  aux = {"implicit_acc": jnp.mean((inside > 0).astype(losses.dtype)),
         "reward_w": jnp.mean(beta * lr_w), "reward_l": jnp.mean(beta * lr_l),
         "reward_margin": jnp.mean(inside)}
  return jnp.mean(losses), _sg(aux)


def sft_loss(policy_pred_w, target_w):
  """Supervised fine-tuning on the preferred samples only (Wallace et al. 2024, Sec. 5 baseline).

  The official ``train.py --sft``: ``F.mse_loss(model_pred, target, reduction="mean")`` over
  every element of the winners' batch (no reference model).

  Returns:
    ``(loss, aux)`` with ``aux = {"mse": loss}``.
  """
  _check_same_shape("sft_loss", policy_pred_w=policy_pred_w, target_w=target_w)
  loss = jnp.mean((jnp.asarray(policy_pred_w) - jnp.asarray(target_w))**2)
  return loss, _sg({"mse": loss})


def kto_loss(policy_err, ref_err, desirable, *, beta, desirable_weight=1.0, undesirable_weight=1.0,
             kl=None):
  """Diffusion-KTO (Li et al., "Aligning Diffusion Models by Optimizing Human Utility", NeurIPS
  2024, arXiv 2404.04465; the code's "eq 8") with the sigmoid halo, as jacklishufan/diffusion-kto
  ``train_kto_sd_v1.5.py``::

      g = (-err_policy) - (-err_ref)                  # "policy logp - ref logp", scale 1
      kl = clamp(mean(g), min=0).detach()              # default --bce_offset none
      h = sigmoid((2y - 1) * beta * (g - kl))
      loss = mean(lambda_y * (1 - h))

  At policy = reference (g = 0, kl = 0) every example contributes ``lambda_y / 2``.

  Args:
    policy_err, ref_err: per-image errors, shape (B,).
    desirable: (B,) bool or {0, 1} labels (1 = desirable).
    beta: ``beta_dpo`` (> 0; 1000 in the official defaults).
    desirable_weight, undesirable_weight: lambda_D, lambda_U.
    kl: the reference point; None estimates it as ``max(mean(g), 0)`` under stop_gradient (the
      official code's all-reduced batch mean); a given value is used as is (also stop-gradient).

  Returns:
    ``(loss, aux)`` with ``kl``, ``acc`` (fraction with ``(2y-1) beta (g - kl) > 0``),
    ``reward_desirable``/``reward_undesirable`` (mean g - kl over each group, 0 if empty).
  """
  fn = "kto_loss"
  _check_beta(fn, beta)
  _check_same_shape(fn, policy_err=policy_err, ref_err=ref_err, desirable=desirable)
  _check_ndim(fn, "policy_err", policy_err, 1, "(B,)")
  y = _concrete_array(desirable)
  if y is not None and not np.all((y == 0) | (y == 1)):
    raise ValueError(f"kto_loss: desirable must hold only 0/1 (or booleans), got {y}")
  g = jnp.asarray(ref_err) - jnp.asarray(policy_err)
  if kl is None:
    kl = jnp.maximum(jnp.mean(g), 0.0)
  kl = jax.lax.stop_gradient(jnp.asarray(kl, g.dtype))
  pos = jnp.asarray(desirable).astype(bool)
  sign = jnp.where(pos, 1.0, -1.0).astype(g.dtype)
  z = sign * beta * (g - kl)
  w = jnp.where(pos, desirable_weight, undesirable_weight).astype(g.dtype)
  loss = jnp.mean(w * (1.0 - jax.nn.sigmoid(z)))
  n_pos, n_neg = jnp.sum(pos), jnp.sum(~pos)
  aux = {"kl": kl, "acc": jnp.mean((z > 0).astype(g.dtype)),
         "reward_desirable": jnp.sum(jnp.where(pos, g - kl, 0.0)) / jnp.maximum(n_pos, 1),
         "reward_undesirable": jnp.sum(jnp.where(pos, 0.0, g - kl)) / jnp.maximum(n_neg, 1)}
  return loss, _sg(aux)


# ----------------------------------------------------------------------------------------------
# RankDPO
# ----------------------------------------------------------------------------------------------
def _ranks(values):
  """1-based ranks with rank 1 for the largest value; ties broken by position (stable sort)."""
  order = jnp.argsort(-values, axis=-1, stable=True)
  return jnp.argsort(order, axis=-1, stable=True) + 1


def rank_dpo(policy_err, ref_err, scores, *, beta, rank_source="target", scale=0.5):
  """RankDPO (Karthik et al., "Scalable Ranked Preference Optimization for Text-to-Image
  Generation", arXiv 2410.18013, eq. 5-7, Algorithm 2). No official code is public; this follows
  the paper.

  For each list of k images of one prompt (shared t per list):

      s_i = scale * (err_policy_i - err_ref_i)            # eq. 5 (lower = better), scale 1/2 as
                                                          # the official Diffusion-DPO code
      G_i = 2^{phi_i} - 1,  D(tau) = ln(1 + tau)          # tau = 1 for the best image
      Delta_ij = |G_i - G_j| * |1/D(tau_i) - 1/D(tau_j)|  # eq. 6
      L = -sum_{i, j: phi_i > phi_j} Delta_ij log sig(-beta (s_i - s_j))   # eq. 7

  and the loss is the mean over the B lists. With ``scale = 1/2`` and k = 2, the per-list loss is
  exactly ``|2^{phi_1} - 2^{phi_2}| * |1/ln 2 - 1/ln 3|`` times the official Diffusion-DPO
  loss of that pair (`diffusion_dpo(..., scaling="official")`), for either rank source
  (``1/ln 2 - 1/ln 3 = 0.532456...``). At policy = reference each list gives
  ``log 2 * sum_{phi_i > phi_j} Delta_ij``.

  Ties in phi get zero weight (``|G_i - G_j| = 0``). ``rank_source="target"`` takes tau from phi
  (Sec. 3.3 and Algorithm 2); ``"predicted"`` takes tau from sorting s ascending, i.e. the
  model's own ranking, as LambdaLoss and the caption of Fig. 2. Equal values are ranked by
  position (stable sort). The pairs i > j are always defined by phi; ranks carry no gradient.

  Args:
    policy_err, ref_err: per-image errors, shape (B, k), k >= 2.
    scores: phi, aggregated preference probabilities in [0, 1] (higher = better), shape (B, k).
    beta: inverse temperature (> 0).
    rank_source: "target" or "predicted".
    scale: the constant k of `diffusion_logratio` (1/2 official, 1 diffusers).

  Returns:
    ``(loss, aux)``; aux: ``pair_weight_sum`` (mean over lists of sum Delta_ij over ordered
    pairs), ``implicit_acc`` (fraction of pairs with phi_i > phi_j ordered correctly, s_i < s_j).
  """
  fn = "rank_dpo"
  _check_choice(fn, "rank_source", rank_source, RANK_SOURCES)
  _check_beta(fn, beta)
  _check_same_shape(fn, policy_err=policy_err, ref_err=ref_err, scores=scores)
  _check_ndim(fn, "policy_err", policy_err, 2, "(B, k)")
  if jnp.shape(policy_err)[1] < 2:
    raise ValueError(f"{fn}: lists need k >= 2 images, got shape {jnp.shape(policy_err)}")
  s = -diffusion_logratio(policy_err, ref_err, scale)  # scale * (err_policy - err_ref)
  phi = jnp.asarray(scores, s.dtype)
  if rank_source == "target":
    tau = _ranks(phi)
  else:
    tau = _ranks(-jax.lax.stop_gradient(s))
  gain = jnp.exp2(phi) - 1.0
  inv_disc = 1.0 / jnp.log1p(tau.astype(s.dtype))
  weight = jnp.abs(gain[:, :, None] - gain[:, None, :]) * jnp.abs(inv_disc[:, :, None] - inv_disc[:, None, :])
  better = phi[:, :, None] > phi[:, None, :]  # i ranked above j by the target
  weight = jnp.where(better, weight, 0.0)
  pair_loss = -jax.nn.log_sigmoid(-beta * (s[:, :, None] - s[:, None, :]))
  loss = jnp.mean(jnp.sum(weight * pair_loss, axis=(1, 2)))
  n_pairs = jnp.sum(better)
  correct = jnp.sum(better & (s[:, :, None] < s[:, None, :]))
  aux = {"pair_weight_sum": jnp.mean(jnp.sum(weight, axis=(1, 2))),
         "implicit_acc": correct / jnp.maximum(n_pairs, 1)}
  return loss, _sg(aux)


# ----------------------------------------------------------------------------------------------
# D3PO and SPO (trajectory / step-wise, clipped Gaussian transition ratios)
# ----------------------------------------------------------------------------------------------
def clipped_logratio(logp_policy, logp_ref, clip_eps):
  """``log clamp(exp(logp_policy - logp_ref), 1 - clip_eps, 1 + clip_eps)``, exactly as the code.

  yk7333/d3po (``scripts/train.py``, ``scripts/rm/train_d3po.py``) and RockeyCoss/SPO
  (``train_scripts/train_spo.py``) clamp the probability **ratio** (a PPO-style trust region as
  the clip of Schulman et al. 2017, eq. 7): inside the band the value is the raw
  log-ratio, outside it is ``log(1 -+ clip_eps)`` and the gradient is exactly zero.

  Computed as ``clip(logp_policy - logp_ref, log(1 - eps), log(1 + eps))``: the same values and the
  same (zero) gradient outside the band, but no overflow of the ratio. The code's ``exp`` then
  ``clamp`` gives a NaN gradient (0 * inf) once a log-ratio exceeds ~88 in float32, which
  happens on low-dimensional data where the per-dimension mean does not shrink it.
  """
  _check_clip_eps("clipped_logratio", clip_eps)
  _check_same_shape("clipped_logratio", logp_policy=logp_policy, logp_ref=logp_ref)
  logratio = jnp.asarray(logp_policy) - jnp.asarray(logp_ref)
  return jnp.clip(logratio, math.log1p(-clip_eps), math.log1p(clip_eps))


def d3po_loss(logp_policy_0, logp_ref_0, logp_policy_1, logp_ref_1, preference, *, beta, clip_eps=0.1):
  """D3PO (Yang et al., CVPR 2024, arXiv 2311.13231, eq. 13-14), as yk7333/d3po::

      ratio_k = clamp(exp(logp_theta^k - logp_ref^k), 1 - eps, 1 + eps)
      loss = -log(sigmoid(beta log(ratio_0) h0 + beta log(ratio_1) h1)).mean()

  with ``(h0, h1) = (preference, -preference)``: ``+1`` trajectory 0 wins, ``-1`` trajectory 1
  wins, ``0`` tie (the code's ``human_prefer`` rows [1, -1], [-1, 1], [0, 0]). A tie gives
  ``log 2`` with exactly zero gradient; so does any ratio outside the clip band. The log-probs
  are per-transition Gaussian log-densities of the stored ``x_{t-1}`` given ``x_t`` averaged
  over dims (`diffjax.samplers.transition_logprob.ddim_step_with_logprob`), both trajectories
  sharing prompt and x_T; every transition of the preferred trajectory counts as preferred.

  Args:
    logp_policy_0, logp_ref_0, logp_policy_1, logp_ref_1: shape (B,).
    preference: shape (B,), values in {+1, 0, -1}.
    beta: > 0 (0.1 in the official config).
    clip_eps: in (0, 1) (0.1 in the official config).

  Returns:
    ``(loss, aux)``; aux: ``ratio_0``, ``ratio_1`` (mean clamped ratios, as the code logs),
    ``clipfrac`` (fraction of the 2B ratios outside the band).
  """
  fn = "d3po_loss"
  _check_beta(fn, beta)
  _check_clip_eps(fn, clip_eps)
  _check_same_shape(fn, logp_policy_0=logp_policy_0, logp_ref_0=logp_ref_0, logp_policy_1=logp_policy_1,
                    logp_ref_1=logp_ref_1, preference=preference)
  _check_ndim(fn, "logp_policy_0", logp_policy_0, 1, "(B,)")
  p = _concrete_array(preference)
  if p is not None and not np.all(np.isin(p, (-1, 0, 1))):
    raise ValueError(f"{fn}: preference must hold only +1 (trajectory 0 wins), -1 (trajectory 1 wins) "
                     f"or 0 (tie), got {p}")
  lr0 = clipped_logratio(logp_policy_0, logp_ref_0, clip_eps)
  lr1 = clipped_logratio(logp_policy_1, logp_ref_1, clip_eps)
  h0 = jnp.asarray(preference, lr0.dtype)
  loss = jnp.mean(-jax.nn.log_sigmoid(beta * lr0 * h0 + beta * lr1 * (-h0)))
  aux = {"ratio_0": jnp.mean(jnp.exp(lr0)), "ratio_1": jnp.mean(jnp.exp(lr1)),
         "clipfrac": _clipfrac([(logp_policy_0, logp_ref_0), (logp_policy_1, logp_ref_1)], clip_eps)}
  return loss, _sg(aux)


def _clipfrac(pairs, clip_eps):
  outside = []
  for lp, lr in pairs:
    ratio = jnp.exp(jnp.asarray(lp) - jnp.asarray(lr))
    outside.append((ratio < 1.0 - clip_eps) | (ratio > 1.0 + clip_eps))
  return jnp.mean(jnp.concatenate(outside).astype(jnp.result_type(float)))


def spo_loss(logp_policy_w, logp_ref_w, logp_policy_l, logp_ref_l, *, beta, clip_eps=0.1, mask=None):
  """SPO step-wise preference loss (Liang et al., CVPR 2025, arXiv 2406.04314), as RockeyCoss/SPO
  ``train_scripts/train_spo.py``::

      ratio_w = clamp(exp(logp_theta_w - logp_ref_w), 1 - eps, 1 + eps)   # same for l
      loss = -log(sigmoid(beta log(ratio_w) - beta log(ratio_l))).mean()

  The winner and loser are two candidates ``x_{t-1}`` drawn from the **same** ``x_t``
  (`spo_select_pair`). The code drops the pairs that fail the threshold before the mean;
  ``mask`` (B,) does the same: the loss is the mean over kept pairs (0 with zero gradient if
  none is kept).

  Args:
    logp_policy_w, logp_ref_w, logp_policy_l, logp_ref_l: shape (B,).
    beta: > 0 (10.0 in the official config).
    clip_eps: in (0, 1) (0.1).
    mask: optional (B,) keep mask (bool or 0/1); None keeps every pair.

  Returns:
    ``(loss, aux)``; aux: ``ratio_w``, ``ratio_l`` (mean clamped ratios over kept pairs, as the
    code's ``train_ratio_win``/``lose``), ``clipfrac``, ``num_kept``.
  """
  fn = "spo_loss"
  _check_beta(fn, beta)
  _check_clip_eps(fn, clip_eps)
  _check_same_shape(fn, logp_policy_w=logp_policy_w, logp_ref_w=logp_ref_w, logp_policy_l=logp_policy_l,
                    logp_ref_l=logp_ref_l)
  _check_ndim(fn, "logp_policy_w", logp_policy_w, 1, "(B,)")
  lr_w = clipped_logratio(logp_policy_w, logp_ref_w, clip_eps)
  lr_l = clipped_logratio(logp_policy_l, logp_ref_l, clip_eps)
  losses = -jax.nn.log_sigmoid(beta * lr_w - beta * lr_l)
  if mask is None:
    m = jnp.ones_like(losses)
  else:
    _check_same_shape(fn, logp_policy_w=logp_policy_w, mask=mask)
    m = jnp.asarray(mask).astype(losses.dtype)
  n = jnp.sum(m)
  denom = jnp.maximum(n, 1.0)
  loss = jnp.sum(jnp.where(m > 0, losses, 0.0) * m) / denom
  aux = {"ratio_w": jnp.sum(jnp.exp(lr_w) * m) / denom, "ratio_l": jnp.sum(jnp.exp(lr_l) * m) / denom,
         "clipfrac": _clipfrac([(logp_policy_w, logp_ref_w), (logp_policy_l, logp_ref_l)], clip_eps),
         "num_kept": n}
  return loss, _sg(aux)


def spo_select_pair(scores, threshold):
  """SPO's winner/loser selection among K candidates of one step (RockeyCoss/SPO
  ``spo/preference_models/compare_funcs.py::preference_score_compare``)::

      sorted descending -> (w, l) = (first, last);  p = softmax([s_w, s_l])
      keep = p[0] - p[1] > threshold            # = tanh((s_w - s_l) / 2) > threshold

  (threshold 0.3 for SD1.5, 0.4 for SDXL in the official configs). The official function takes
  scores of shape (K, B); this one takes (B, K). Ties are broken by position (stable sort), so
  w != l whenever K >= 2; a list of equal scores has ``p = [1/2, 1/2]`` and is never kept for
  threshold >= 0.

  Args:
    scores: step-aware preference scores, shape (B, K), K >= 2 (higher = better).
    threshold: the margin of the softmax probabilities.

  Returns:
    ``(idx_w, idx_l, keep)``, each of shape (B,): indices of the highest and lowest scores and
    the bool keep mask.
  """
  _check_ndim("spo_select_pair", "scores", scores, 2, "(B, K)")
  if jnp.shape(scores)[1] < 2:
    raise ValueError(f"spo_select_pair: scores need K >= 2 candidates, got shape {jnp.shape(scores)}")
  scores = jnp.asarray(scores)
  order = jnp.argsort(-scores, axis=-1, stable=True)
  idx_w, idx_l = order[:, 0], order[:, -1]
  s_w = jnp.take_along_axis(scores, idx_w[:, None], axis=-1)[:, 0]
  s_l = jnp.take_along_axis(scores, idx_l[:, None], axis=-1)[:, 0]
  p = jax.nn.softmax(jnp.stack([s_w, s_l], axis=-1), axis=-1)
  return idx_w, idx_l, p[:, 0] - p[:, 1] > threshold


# ----------------------------------------------------------------------------------------------
# DDO
# ----------------------------------------------------------------------------------------------
def ddo_loss(logratio_real, logratio_fake, *, alpha, beta):
  """Direct Discriminative Optimization (Zheng et al., ICML 2025, arXiv 2503.01103; the objective
  L_{alpha, beta}(theta) of Sec. 3)::

      loss = mean(-logsigmoid(beta * r(x_real)) - alpha * logsigmoid(-beta * r(x_fake)))

  with ``r = log p_theta - log p_ref`` the (ELBO) log-ratio, implicitly a discriminator
  ``d_theta = sigmoid(beta r)`` between data and reference samples (the EDM snippet
  ``EDMLoss_DDO`` of the paper's App. D; NVlabs/DDO ships no training code). At policy =
  reference the loss is ``(1 + alpha) log 2``. Use `edm_ddo_logratio` / `eps_ddo_logratio` for
  r: summed (not averaged) over dims, so typical beta is small (0.01-0.1).

  Args:
    logratio_real: r on data samples, shape (B,).
    logratio_fake: r on reference samples, shape (B,) (paired 1:1 with real; shared sigma/noise).
    alpha: weight of the fake term, >= 0 (default 1.0 in the snippet).
    beta: > 0 (0.02 in the snippet).

  Returns:
    ``(loss, aux)``; aux: ``d_real``, ``d_fake`` (mean sigmoid(beta r), the implicit
    discriminator's outputs), ``logratio_real``, ``logratio_fake`` (means).
  """
  fn = "ddo_loss"
  _check_beta(fn, beta)
  a = _concrete_scalar(alpha)
  if a is not None and not a >= 0:
    raise ValueError(f"{fn}: alpha must be >= 0, got {alpha}")
  _check_same_shape(fn, logratio_real=logratio_real, logratio_fake=logratio_fake)
  r_real, r_fake = jnp.asarray(logratio_real), jnp.asarray(logratio_fake)
  loss = jnp.mean(-jax.nn.log_sigmoid(beta * r_real) - alpha * jax.nn.log_sigmoid(-beta * r_fake))
  aux = {"d_real": jnp.mean(jax.nn.sigmoid(beta * r_real)), "d_fake": jnp.mean(jax.nn.sigmoid(beta * r_fake)),
         "logratio_real": jnp.mean(r_real), "logratio_fake": jnp.mean(r_fake)}
  return loss, _sg(aux)


def edm_ddo_logratio(denoised_policy, denoised_ref, x, sigma, *, sigma_data=0.5):
  """DDO's EDM log-ratio (Zheng et al. 2025, App. D ``EDMLoss_DDO``), shape (B,)::

      weight = (sigma^2 + sigma_data^2) / (sigma * sigma_data)^2        # EDM's lambda(sigma)
      r = -sum_dims weight (D_theta - x)^2 + sum_dims weight (D_ref - x)^2

  a **sum** over dims (not a mean), evaluated at one sigma and one noise shared by policy and
  reference (and by the real and fake halves of a batch).

  Args:
    denoised_policy, denoised_ref: D_theta(x + n; sigma), D_ref(x + n; sigma), shape (B, ...).
    x: clean samples, shape (B, ...).
    sigma: EDM noise levels, scalar or (B,).
    sigma_data: 0.5 as EDM.
  """
  _check_same_shape("edm_ddo_logratio", denoised_policy=denoised_policy, denoised_ref=denoised_ref, x=x)
  x = jnp.asarray(x)
  sigma = jnp.asarray(sigma, x.dtype)
  weight = (sigma**2 + sigma_data**2) / (sigma * sigma_data)**2
  err_p = utils.sum_except_batch((jnp.asarray(denoised_policy) - x)**2)
  err_r = utils.sum_except_batch((jnp.asarray(denoised_ref) - x)**2)
  return -weight * err_p + weight * err_r


def eps_ddo_logratio(eps_policy, eps_ref, eps, weight=1.0):
  """DDO log-ratio for eps-prediction (VP) models, shape (B,)::

      r = -weight * (sum_dims (eps_theta - eps)^2 - sum_dims (eps_ref - eps)^2)

  the ELBO difference at a shared (t, eps) with w(t) = ``weight`` (1 by default, the form of the
  DDPM simple loss), summed over dims as DDO's EDM version.
  """
  _check_same_shape("eps_ddo_logratio", eps_policy=eps_policy, eps_ref=eps_ref, eps=eps)
  eps = jnp.asarray(eps)
  err_p = utils.sum_except_batch((jnp.asarray(eps_policy) - eps)**2)
  err_r = utils.sum_except_batch((jnp.asarray(eps_ref) - eps)**2)
  return -jnp.asarray(weight, eps.dtype) * (err_p - err_r)
