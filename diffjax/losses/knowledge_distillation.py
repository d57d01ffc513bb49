"""Language-model losses of MLKD: multi-level knowledge distillation for text OOD detection.

Wu, Jiang, Yin, Karlsson, Lin, "Multi-Level Knowledge Distillation for Out-of-Distribution
Detection in Text", ACL 2023 (official code: microsoft/KC, ``papers/MLKD_OOD/models/kd_clm.py``).
A student LM (random init) learns the in-distribution text from a fine-tuned teacher with

  L = L_pred + L_inter                                           (kd_clm.py, lambda = 1/2 up to scale)
  L_pred  = mean over active tokens of KL( softmax(z_T / tau) || softmax(z_S / tau) )     (blog eq. 1)
  L_inter = mean over active tokens of sum_{l in student layers} sum_{k <= K} beta_{l,k} d_{l,(k)}
  d_{l,j} = mean_h ( (W h^T_j + b) - h^S_l )^2,   d_{l,(1)} <= d_{l,(2)} <= ... sorted over j     (eq. 2-3)

with one learned linear map (W, b) shared by all teacher layers (``loop_type=linear_tea_mse``) and
K = 2: each student layer, at each token, is pulled towards its two closest mapped teacher layers.
The official defaults compare student ``hidden_states[3..9]`` with teacher ``hidden_states[1..12]``
of GPT-2 small (index 0 is the embedding output, the last one is after ``ln_f``). Its 14 weights
beta start at 1 and, as the official code attaches them (a tensor moved to the device is no longer
a registered parameter), stay at 1; ``layer_weights`` may be trained here on purpose.

The OOD score is the student's per-example perplexity (``sequence_nll``); the distillation terms
per example (``kd_scores``) are the loss-based score the official code also defines
(``evaluate_KD_CLM_Loss``).

All functions are pure: logits (B, T, V), hidden states sequences of (B, T, D), masks (B, T) of
0/1. The tiny ``+ 1e-10`` the official code adds to logits before the softmax cancels in the
softmax and is omitted.
"""
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp


def _float(x):
  """x in at least float32 (bfloat16 logits are upcast; float64 stays float64)."""
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _mask(attention_mask, shape):
  if attention_mask is None:
    return jnp.ones(shape, jnp.int32)
  if attention_mask.shape != shape:
    raise ValueError(f"attention_mask must have shape {shape} (batch, tokens), got {attention_mask.shape}")
  return attention_mask


def _masked_mean(values, mask):
  mask = mask.astype(values.dtype)
  return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def causal_lm_loss(logits, input_ids, attention_mask=None, *, include_padding=True):
  """Next-token cross-entropy, mean over predicted positions (Hugging Face ``labels=input_ids``).

  The official code trains with ``labels = input_ids`` and the pad token equal to EOS, so the
  padded positions of a right-padded batch enter the loss too (``include_padding=True``, the
  reproduced behaviour). ``include_padding=False`` counts only the positions `sequence_nll` scores:
  position i predicts token i+1 where ``attention_mask[i] = 1``.
  """
  nll = _token_nll(logits, input_ids)
  if include_padding:
    return jnp.mean(nll)
  mask = _mask(attention_mask, input_ids.shape)[:, :-1]
  return _masked_mean(nll, mask)


def _token_nll(logits, input_ids):
  """-log p(x_{i+1} | x_<=i) for i = 0 .. T-2: (B, T-1)."""
  if logits.ndim != 3 or logits.shape[:2] != input_ids.shape:
    raise ValueError(f"logits must be (batch, tokens, vocab) matching input_ids {input_ids.shape}, got {logits.shape}")
  logp = jax.nn.log_softmax(_float(logits[:, :-1]), axis=-1)
  return -jnp.take_along_axis(logp, input_ids[:, 1:, None], axis=-1)[..., 0]


def sequence_nll(logits, input_ids, attention_mask=None):
  """Per-example mean next-token NLL, the log of MLKD's OOD score (perplexity = exp of it).

  As ``evaluate_KD_CLM``: position i (predicting token i+1) counts where ``attention_mask[i] = 1``,
  so for a right-padded sequence the last text token's prediction of the first pad (= EOS) token
  is scored, and a sequence filling all T positions is scored on its first T-1 predictions.
  Returns (B,).
  """
  nll = _token_nll(logits, input_ids)
  mask = _mask(attention_mask, input_ids.shape)[:, :-1].astype(nll.dtype)
  return jnp.sum(nll * mask, axis=1) / jnp.maximum(jnp.sum(mask, axis=1), 1.0)


def token_kl(student_logits, teacher_logits, *, temperature=1.0):
  """KL( softmax(teacher / tau) || softmax(student / tau) ) per token: (B, T).

  The official ``F.kl_div(log_softmax(s / tau), softmax(t / tau)).sum(-1)``; no tau^2 factor.
  """
  if student_logits.shape != teacher_logits.shape:
    raise ValueError(f"student_logits {student_logits.shape} and teacher_logits {teacher_logits.shape} must match")
  log_q = jax.nn.log_softmax(_float(student_logits) / temperature, axis=-1)
  log_p = jax.nn.log_softmax(_float(teacher_logits) / temperature, axis=-1)
  p = jnp.exp(log_p)
  return jnp.sum(jnp.where(p > 0, p * (log_p - log_q), 0.0), axis=-1)


def prediction_layer_loss(student_logits, teacher_logits, attention_mask=None, *, temperature=1.0):
  """L_pred: `token_kl` averaged over the active tokens of the batch."""
  kl = token_kl(student_logits, teacher_logits, temperature=temperature)
  return _masked_mean(kl, _mask(attention_mask, kl.shape))


class LayerMap(NamedTuple):
  """The learned linear map W h + b applied to teacher hidden states (``kd_linear_tea``)."""
  kernel: jax.Array  # (D_teacher, D_student)
  bias: jax.Array    # (D_student,)


def init_layer_map(key, teacher_dim, student_dim):
  """PyTorch ``nn.Linear`` default init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for kernel and bias."""
  bound = 1.0 / jnp.sqrt(teacher_dim)
  k1, k2 = jax.random.split(key)
  return LayerMap(kernel=jax.random.uniform(k1, (teacher_dim, student_dim), minval=-bound, maxval=bound),
                  bias=jax.random.uniform(k2, (student_dim,), minval=-bound, maxval=bound))


def layer_distances(student_hidden, teacher_hidden, layer_map):
  """d_{l,j} = mean over the hidden dimension of (W h^T_j + b - h^S_l)^2: (B, T, L_student, L_teacher).

  Args:
    student_hidden: (L_student, B, T, D_s), the student layers to distil (stacked).
    teacher_hidden: (L_teacher, B, T, D_t), the candidate teacher layers.
    layer_map: `LayerMap` from D_t to D_s.
  """
  mapped = teacher_hidden @ layer_map.kernel + layer_map.bias          # (Lt, B, T, Ds)
  diff = mapped[None] - student_hidden[:, None]                         # (Ls, Lt, B, T, Ds)
  return jnp.transpose(jnp.mean(jnp.square(diff), axis=-1), (2, 3, 0, 1))


def closest_teacher_layers(distances, top_k=2):
  """The K smallest distances per (token, student layer), ascending, and their teacher-layer indices.

  The official ``distances.sort(-1)[0][..., :2]``. Returns ``(values, indices)``, each
  (B, T, L_student, K); gradients flow through the selected values.
  """
  if not 1 <= top_k <= distances.shape[-1]:
    raise ValueError(f"top_k must be in [1, {distances.shape[-1]}] (the number of teacher layers), got {top_k}")
  neg, idx = jax.lax.top_k(-distances, top_k)
  return -neg, idx


def select_layers(hidden_states: Sequence[jax.Array], layers: Sequence[int], what: str):
  """Stacks ``hidden_states[l]`` for l in `layers`: (len(layers), B, T, D)."""
  n = len(hidden_states)
  bad = [l for l in layers if not 0 <= l < n]
  if bad or not layers:
    raise ValueError(f"{what} must be a non-empty list of hidden-state indices in [0, {n - 1}] "
                     f"(0 = embeddings, {n - 1} = after the final layer norm), got {list(layers)}")
  return jnp.stack([hidden_states[l] for l in layers])


def intermediate_layer_loss(student_hidden, teacher_hidden, attention_mask, layer_map, layer_weights, *,
                            top_k=2):
  """L_inter: sum over student layers and their K closest teacher layers of beta * d, token mean.

  Args:
    student_hidden, teacher_hidden: stacked layers as in `layer_distances`.
    attention_mask: (B, T) or None.
    layer_map: `LayerMap`.
    layer_weights: (L_student * K,) weights beta in the official flattening order (student layer
      major, then rank k), or None for all ones.
    top_k: K.
  """
  d = layer_distances(student_hidden, teacher_hidden, layer_map)
  nearest, _ = closest_teacher_layers(d, top_k)                         # (B, T, Ls, K)
  b, t = nearest.shape[:2]
  flat = nearest.reshape(b, t, -1)
  if layer_weights is not None:
    if layer_weights.shape != (flat.shape[-1],):
      raise ValueError(f"layer_weights must have shape ({flat.shape[-1]},) = (student layers * top_k,), "
                       f"got {layer_weights.shape}")
    flat = flat * layer_weights
  per_token = jnp.sum(flat, axis=-1)
  return _masked_mean(per_token, _mask(attention_mask, per_token.shape))


class MLKDParams(NamedTuple):
  """Trainable distillation parameters beside the student: the teacher map and the weights beta."""
  layer_map: LayerMap
  layer_weights: jax.Array


def init_mlkd_params(key, *, teacher_dim, student_dim, num_student_layers, top_k=2):
  """``kd_linear_tea`` (PyTorch init) and beta = 1, as the official ``train_KD_CLM``."""
  return MLKDParams(layer_map=init_layer_map(key, teacher_dim, student_dim),
                    layer_weights=jnp.ones((num_student_layers * top_k,), jnp.float32))


def mlkd_loss(student_logits, student_hidden_states, teacher_logits, teacher_hidden_states, input_ids,
              attention_mask, kd_params: MLKDParams, *, student_layers, teacher_layers, temperature=1.0, top_k=2,
              prediction_weight=1.0, intermediate_weight=1.0, lm_weight=0.0):
  """The MLKD objective: ``w_pred L_pred + w_inter L_inter + w_lm L_LM``; returns ``(loss, aux)``.

  The official defaults are w_pred = w_inter = 1 and w_lm = 0 (``--use_mse_loss none``); ROSTD and
  20NG-rel add the student's own LM loss (``both``, w_lm = 1). w_inter = 0 is the prediction-only
  ablation, w_pred = 0 the intermediate-only one. The teacher's outputs are held fixed
  (``stop_gradient``).
  """
  teacher_logits = jax.lax.stop_gradient(teacher_logits)
  aux = {}
  loss = 0.0
  if prediction_weight:
    aux["kd/prediction"] = prediction_layer_loss(student_logits, teacher_logits, attention_mask,
                                                 temperature=temperature)
    loss = loss + prediction_weight * aux["kd/prediction"]
  if intermediate_weight:
    s = select_layers(student_hidden_states, student_layers, "student_layers")
    t = jax.lax.stop_gradient(select_layers(teacher_hidden_states, teacher_layers, "teacher_layers"))
    aux["kd/intermediate"] = intermediate_layer_loss(s, t, attention_mask, kd_params.layer_map,
                                                     kd_params.layer_weights, top_k=top_k)
    loss = loss + intermediate_weight * aux["kd/intermediate"]
  if lm_weight:
    aux["kd/lm"] = causal_lm_loss(student_logits, input_ids, attention_mask)
    loss = loss + lm_weight * aux["kd/lm"]
  return loss, aux


def kd_scores(student_logits, student_hidden_states, teacher_logits, teacher_hidden_states, attention_mask,
              kd_params: MLKDParams, *, student_layers, teacher_layers, temperature=1.0, top_k=2):
  """Per-example distillation discrepancies, the official loss-based OOD score: dict of (B,) arrays.

  ``kl``: token KL (teacher at temperature 1, student at tau, as ``evaluate_KD_CLM_Loss``), mean
  over active tokens; ``hidden``: the mean of each student layer's K closest distances, summed
  over student layers with beta (the first L_student weights, the only ones that fit the official
  code's shapes); ``kd_loss``: their sum.
  """
  mask = _mask(attention_mask, student_logits.shape[:2]).astype(_float(student_logits).dtype)
  log_q = jax.nn.log_softmax(_float(student_logits) / temperature, axis=-1)
  log_p = jax.nn.log_softmax(_float(teacher_logits), axis=-1)
  kl = jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)
  s = select_layers(student_hidden_states, student_layers, "student_layers")
  t = select_layers(teacher_hidden_states, teacher_layers, "teacher_layers")
  nearest, _ = closest_teacher_layers(layer_distances(s, t, kd_params.layer_map), top_k)
  hidden = jnp.sum(jnp.mean(nearest, axis=-1) * kd_params.layer_weights[:nearest.shape[2]], axis=-1)

  def per_example(x):
    return jnp.sum(x * mask, axis=1) / jnp.maximum(jnp.sum(mask, axis=1), 1.0)

  kl, hidden = per_example(kl), per_example(hidden)
  return {"kl": kl, "hidden": hidden, "kd_loss": kl + hidden}
