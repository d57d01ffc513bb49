"""GPT-2 (Radford et al. 2019, "Language Models are Unsupervised Multitask Learners") in Flax NNX, the
Hugging Face `GPT2LMHeadModel` architecture, loadable from (and savable to) HF checkpoints.

  h_0 = Dropout(wte[ids] + wpe[0..T-1])
  for each block: h += Attn(LN_1(h)); h += MLP(LN_2(h))        (pre-LN, sec. 2.3 of the paper)
  logits = LN_f(h) @ wte^T                                      (tied input / output embedding)

Attention is causal, scale 1/sqrt(head_dim), with HF's fused `c_attn` projection ([q | k | v], heads
contiguous); the MLP is 4 n_embd wide with `gelu_new` (the tanh approximation). HF's `Conv1D`
stores its weight as (in, out) and computes x @ W + b, exactly `nnx.Linear`'s kernel, so
checkpoints load without transposes. Init as HF's `_init_weights`: N(0, 0.02^2) weights and
embeddings, zero biases, LayerNorm ones / zeros, and the residual projections (`attn.c_proj`,
`mlp.c_proj`) N(0, (0.02 / sqrt(2 n_layer))^2) (the paper's 1/sqrt(N) residual scaling).

MLKD (Wu et al., ACL 2023, "Multi-Level Knowledge Distillation for Out-of-Distribution Detection in
Text") distils a GPT-2 teacher into a student through its intermediate layers: those are the
`hidden_states` returned with `output_hidden_states=True`, indexed as HF's.
"""
import json
import math
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from diffjax.models.registry import register, train_with_dropout_key

_normal02 = nnx.initializers.normal(0.02)
_zeros = nnx.initializers.zeros


def _linear(din, dout, param_dtype, rngs, std=0.02):
  """HF `Conv1D(dout, din)`: x @ W + b with W (din, dout) ~ N(0, std^2), b = 0."""
  return nnx.Linear(din, dout, kernel_init=nnx.initializers.normal(std), bias_init=_zeros,
                    param_dtype=param_dtype, rngs=rngs)


def _layer_norm(dim, epsilon, param_dtype, rngs):
  # Exact two-pass (biased) variance, as torch.nn.LayerNorm.
  return nnx.LayerNorm(dim, epsilon=epsilon, use_fast_variance=False, param_dtype=param_dtype, rngs=rngs)


class CausalSelfAttention(nnx.Module):
  """HF `GPT2Attention`: fused qkv `c_attn`, causal softmax(q k^T / sqrt(head_dim)) (+ padding mask),
  attention-probability dropout, output projection `c_proj`, residual dropout."""

  def __init__(self, n_embd, n_head, *, dropout, n_layer, param_dtype, rngs):
    if n_embd % n_head:
      raise ValueError(f"n_embd {n_embd} must be divisible by n_head {n_head}")
    self.n_head = n_head
    self.c_attn = _linear(n_embd, 3 * n_embd, param_dtype, rngs)
    self.c_proj = _linear(n_embd, n_embd, param_dtype, rngs, std=0.02 / math.sqrt(2 * n_layer))
    self.attn_dropout = nnx.Dropout(dropout, rngs=rngs)
    self.resid_dropout = nnx.Dropout(dropout, rngs=rngs)

  def __call__(self, x, key_mask=None):
    """x (B, T, D); key_mask optional (B, T) bool, False for padding keys."""
    b, t, d = x.shape
    h = self.n_head
    q, k, v = jnp.split(self.c_attn(x), 3, axis=-1)
    q, k, v = (a.reshape(b, t, h, d // h) for a in (q, k, v))
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) / math.sqrt(d // h)
    neg = jnp.finfo(jnp.float32).min
    if key_mask is not None:
      scores = jnp.where(key_mask[:, None, None, :], scores, neg)
    # -inf above the diagonal: a query whose keys are all padding still attends only to the past.
    causal = jnp.tril(jnp.ones((t, t), bool))
    probs = jax.nn.softmax(jnp.where(causal, scores, -jnp.inf), axis=-1).astype(v.dtype)
    out = jnp.einsum("bhqk,bkhd->bqhd", self.attn_dropout(probs), v).reshape(b, t, d)
    return self.resid_dropout(self.c_proj(out))


class MLP(nnx.Module):
  """HF `GPT2MLP`: c_fc (D -> 4D), gelu_new (tanh approximation), c_proj (4D -> D), dropout."""

  def __init__(self, n_embd, *, dropout, n_layer, param_dtype, rngs):
    self.c_fc = _linear(n_embd, 4 * n_embd, param_dtype, rngs)
    self.c_proj = _linear(4 * n_embd, n_embd, param_dtype, rngs, std=0.02 / math.sqrt(2 * n_layer))
    self.dropout = nnx.Dropout(dropout, rngs=rngs)

  def __call__(self, x):
    return self.dropout(self.c_proj(jax.nn.gelu(self.c_fc(x), approximate=True)))


class Block(nnx.Module):
  """HF `GPT2Block`, pre-LN: h = x + attn(ln_1(x)); h + mlp(ln_2(h))."""

  def __init__(self, n_embd, n_head, *, layer_norm_epsilon, dropout, n_layer, param_dtype, rngs):
    self.ln_1 = _layer_norm(n_embd, layer_norm_epsilon, param_dtype, rngs)
    self.attn = CausalSelfAttention(n_embd, n_head, dropout=dropout, n_layer=n_layer, param_dtype=param_dtype,
                                    rngs=rngs)
    self.ln_2 = _layer_norm(n_embd, layer_norm_epsilon, param_dtype, rngs)
    self.mlp = MLP(n_embd, dropout=dropout, n_layer=n_layer, param_dtype=param_dtype, rngs=rngs)

  def __call__(self, x, key_mask=None):
    h = x + self.attn(self.ln_1(x), key_mask)
    return h + self.mlp(self.ln_2(h))


class GPT2(nnx.Module):
  """`GPT2(input_ids, attention_mask=None, *, output_hidden_states=False)`: HF `GPT2LMHeadModel`.

  Like every NNX module it is built in training mode (dropout on); `load_hf_gpt2` returns it in
  evaluation mode, as HF's `from_pretrained`. `lm_apply` gives pure eval / train functions.

  Args:
    vocab_size, n_positions, n_embd, n_layer, n_head, layer_norm_epsilon: HF `GPT2Config`'s
      (defaults: GPT-2 small, 124M parameters).
    dropout: the one rate of the embedding, attention-probability and residual dropouts (HF's
      `embd_pdrop` = `attn_pdrop` = `resid_pdrop` = 0.1 by default).
    param_dtype: dtype of the parameters (the computation follows it; logits are float32).
  """

  def __init__(self, *, vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12,
               layer_norm_epsilon=1e-5, dropout=0.1, param_dtype=jnp.float32, rngs):
    if n_embd % n_head:
      raise ValueError(f"n_embd {n_embd} must be divisible by n_head {n_head}")
    if not 0.0 <= dropout < 1.0:
      raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    self.vocab_size, self.n_positions, self.n_embd = vocab_size, n_positions, n_embd
    self.n_layer, self.n_head = n_layer, n_head
    self.layer_norm_epsilon, self.dropout = layer_norm_epsilon, dropout
    self.wte = nnx.Embed(vocab_size, n_embd, embedding_init=_normal02, param_dtype=param_dtype, rngs=rngs)
    self.wpe = nnx.Embed(n_positions, n_embd, embedding_init=_normal02, param_dtype=param_dtype, rngs=rngs)
    self.drop = nnx.Dropout(dropout, rngs=rngs)
    self.h = nnx.List([Block(n_embd, n_head, layer_norm_epsilon=layer_norm_epsilon, dropout=dropout,
                             n_layer=n_layer, param_dtype=param_dtype, rngs=rngs) for _ in range(n_layer)])
    self.ln_f = _layer_norm(n_embd, layer_norm_epsilon, param_dtype, rngs)

  def config(self):
    """The constructor options (what `save_hf_gpt2` writes to config.json)."""
    return dict(vocab_size=self.vocab_size, n_positions=self.n_positions, n_embd=self.n_embd,
                n_layer=self.n_layer, n_head=self.n_head, layer_norm_epsilon=self.layer_norm_epsilon,
                dropout=self.dropout)

  def _check_inputs(self, input_ids, attention_mask):
    input_ids = jnp.asarray(input_ids)
    if input_ids.ndim != 2:
      raise ValueError(f"input_ids must have shape (batch, seq_len), got {input_ids.shape}")
    if not jnp.issubdtype(input_ids.dtype, jnp.integer):
      raise ValueError(f"input_ids must be integer token ids, got dtype {input_ids.dtype}")
    t = input_ids.shape[1]
    if not 1 <= t <= self.n_positions:
      raise ValueError(f"input_ids seq_len must be in [1, n_positions={self.n_positions}], got {t}")
    if attention_mask is not None:
      attention_mask = jnp.asarray(attention_mask)
      if attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask must have the shape of input_ids {input_ids.shape}, "
                         f"got {attention_mask.shape}")
      attention_mask = attention_mask.astype(bool)
    return input_ids, attention_mask

  def __call__(self, input_ids, attention_mask=None, *, output_hidden_states=False):
    """Args:
      input_ids: (B, T) integer token ids, T <= n_positions.
      attention_mask: optional (B, T) of 1 (token) / 0 (padding) for right-padded batches: padding
        keys are masked out; positions are 0..T-1 as HF's with right padding.
      output_hidden_states: also return HF's `hidden_states`.

    Returns:
      logits (B, T, vocab_size) float32, or (logits, hidden_states): a tuple of n_layer + 1 arrays
      (B, T, n_embd): [0] the embedding output (after dropout), [i] block i's output, except the
      last entry, which is ln_f of the last block's output (HF applies ln_f before appending it).
    """
    input_ids, key_mask = self._check_inputs(input_ids, attention_mask)
    h = self.drop(self.wte(input_ids) + self.wpe(jnp.arange(input_ids.shape[1]))[None])
    hidden = [h]
    for block in self.h:
      h = block(h, key_mask)
      hidden.append(h)
    h = self.ln_f(h)
    hidden[-1] = h
    logits = self.wte.attend(h).astype(jnp.float32)
    return (logits, tuple(hidden)) if output_hidden_states else logits


def lm_apply(model):
  """Splits a GPT2 into a pure `apply_fn(params, input_ids, attention_mask=None, *, key=None,
  output_hidden_states=False)` and its `params` (an `nnx.State` of the `nnx.Param`s).

  key=None is evaluation mode (no dropout). With a key dropout is active and the i-th `nnx.Dropout`
  draws from `fold_in(key, i)`, as `registry.split_train_apply`: the function is pure (the same key
  gives the same masks), jit-able and differentiable in `params`. The model is left in eval mode.
  """
  model.eval()
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  def apply_fn(params, input_ids, attention_mask=None, *, key=None, output_hidden_states=False):
    module = nnx.merge(graphdef, params, rest)
    if key is not None:
      train_with_dropout_key(module, key)
    return module(input_ids, attention_mask, output_hidden_states=output_hidden_states)

  return apply_fn, params


# Hugging Face checkpoints (config.json + model.safetensors) ------------------------------------

_LEAF_TO_HF = {"kernel": "weight", "scale": "weight", "embedding": "weight", "bias": "bias"}
_IGNORED = re.compile(r"h\.\d+\.attn\.(bias|masked_bias)")  # HF's causal-mask buffers


def _hf_name(path):
  """('h', 0, 'attn', 'c_attn', 'kernel') -> 'h.0.attn.c_attn.weight'."""
  return ".".join(str(p) for p in path[:-1]) + "." + _LEAF_TO_HF[path[-1]]


def _flat_params(model):
  return [(_hf_name(path), path, var) for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param))]


def _read_config(directory):
  path = os.path.join(directory, "config.json")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"no config.json in {directory!r}")
  with open(path) as f:
    config = json.load(f)
  if config.get("activation_function", "gelu_new") != "gelu_new":
    raise ValueError(f"config.json activation_function must be 'gelu_new', got {config['activation_function']!r}")
  n_inner = config.get("n_inner")
  if n_inner is not None and n_inner != 4 * config["n_embd"]:
    raise ValueError(f"config.json n_inner must be null or 4 * n_embd, got {n_inner}")
  for flag, want in (("scale_attn_weights", True), ("scale_attn_by_inverse_layer_idx", False),
                     ("reorder_and_upcast_attn", False), ("add_cross_attention", False)):
    if config.get(flag, want) != want:
      raise ValueError(f"config.json {flag}={config[flag]!r} is not supported (needs {want})")
  keys = ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "layer_norm_epsilon")
  missing = [k for k in keys if k not in config]
  if missing:
    raise ValueError(f"config.json in {directory!r} lacks {missing}")
  options = {k: config[k] for k in keys}
  options["dropout"] = config.get("resid_pdrop", 0.1)
  return options


def load_hf_gpt2(directory, *, dtype=jnp.float32, rngs=None):
  """A GPT2 (in eval mode) with the weights of a local HF checkpoint: `config.json` and
  `model.safetensors`, from `GPT2Model` or `GPT2LMHeadModel` (`transformer.` prefix).

  Dropout uses config.json's `resid_pdrop`. `lm_head.weight`, if present, must equal `wte.weight`
  (tied embeddings); the `h.{i}.attn.bias` / `masked_bias` buffers are ignored.

  Args:
    directory: the checkpoint directory.
    dtype: parameter dtype.
    rngs: `nnx.Rngs` of the dropout streams (default `nnx.Rngs(0)`).

  Raises:
    FileNotFoundError: no config.json / model.safetensors.
    ValueError: missing, unexpected or wrongly-shaped tensors (named), or an unsupported config.
  """
  from safetensors.numpy import load_file
  options = _read_config(directory)
  weights_path = os.path.join(directory, "model.safetensors")
  if not os.path.isfile(weights_path):
    raise FileNotFoundError(f"no model.safetensors in {directory!r}")
  tensors = {}
  for name, array in load_file(weights_path).items():
    short = name[len("transformer."):] if name.startswith("transformer.") else name
    if short in tensors:
      raise ValueError(f"tensor {short!r} appears twice in {weights_path!r} (with and without 'transformer.')")
    tensors[short] = array
  # Abstract init: no random weights are drawn for a model that is about to be overwritten. (With
  # flax 0.12.8 / jax 0.10 its trace time grows ~quadratically in depth: ~1.5 s gpt2, ~20 s gpt2_xl.)
  model = nnx.eval_shape(lambda: GPT2(**options, param_dtype=dtype, rngs=nnx.Rngs(0)))
  params = nnx.state(model, nnx.Param)
  expected = {}
  for name, path, var in _flat_params(model):
    if name not in tensors:
      raise ValueError(f"missing tensor {name!r} in {weights_path!r}")
    array = tensors.pop(name)
    if tuple(array.shape) != tuple(var.shape):
      raise ValueError(f"tensor {name!r} has shape {tuple(array.shape)}, expected {tuple(var.shape)}")
    expected[path] = jnp.asarray(array, dtype)
  lm_head = tensors.pop("lm_head.weight", None)
  wte = np.asarray(expected[("wte", "embedding")])
  if lm_head is not None and (lm_head.shape != wte.shape or not np.array_equal(lm_head.astype(wte.dtype), wte)):
    raise ValueError("tensor 'lm_head.weight' differs from 'wte.weight': only tied embeddings are supported")
  unexpected = sorted(n for n in tensors if not _IGNORED.fullmatch(n))
  if unexpected:
    raise ValueError(f"unexpected tensor(s) {unexpected} in {weights_path!r}")
  nnx.update(model, nnx.from_flat_state([(path, var.replace(expected[path]))
                                         for path, var in nnx.to_flat_state(params)]))
  rngs = nnx.Rngs(0) if rngs is None else rngs
  for _, layer in nnx.iter_graph(model):
    if isinstance(layer, nnx.Dropout):
      layer.rngs = rngs["dropout"].fork()
  model.eval()
  return model


def save_hf_gpt2(model, directory):
  """Writes `config.json` and `model.safetensors` as HF's `GPT2LMHeadModel.save_pretrained`
  (`transformer.`-prefixed names, the tied `lm_head.weight` left out), loadable by `load_hf_gpt2`
  and by `transformers`. Parameters are stored in their dtype (bfloat16 as float32)."""
  from safetensors.numpy import save_file
  os.makedirs(directory, exist_ok=True)
  c = model.config()
  config = {
      "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "activation_function": "gelu_new",
      "vocab_size": c["vocab_size"], "n_positions": c["n_positions"], "n_ctx": c["n_positions"],
      "n_embd": c["n_embd"], "n_layer": c["n_layer"], "n_head": c["n_head"], "n_inner": None,
      "layer_norm_epsilon": c["layer_norm_epsilon"], "resid_pdrop": c["dropout"], "embd_pdrop": c["dropout"],
      "attn_pdrop": c["dropout"], "initializer_range": 0.02, "bos_token_id": c["vocab_size"] - 1,
      "eos_token_id": c["vocab_size"] - 1, "tie_word_embeddings": True,
  }
  with open(os.path.join(directory, "config.json"), "w") as f:
    json.dump(config, f, indent=2)
  tensors = {}
  for name, _, var in _flat_params(model):
    array = np.asarray(var[...])
    if array.dtype not in (np.float16, np.float32, np.float64):
      array = array.astype(np.float32)
    tensors["transformer." + name] = np.ascontiguousarray(array)
  save_file(tensors, os.path.join(directory, "model.safetensors"), metadata={"format": "pt"})


def load_hf_tokenizer(directory):
  """GPT-2's byte-level BPE as a `tokenizers.Tokenizer`: from `tokenizer.json` if present, else built
  from `vocab.json` + `merges.txt` (ByteLevel pre-tokenizer / decoder, no prefix space, and
  `<|endoftext|>` as a special token when in the vocabulary, as HF's `GPT2TokenizerFast`).

  Raises:
    FileNotFoundError: neither tokenizer.json nor both vocab.json and merges.txt in `directory`.
  """
  import tokenizers
  from tokenizers import decoders, models, pre_tokenizers, processors
  path = os.path.join(directory, "tokenizer.json")
  if os.path.isfile(path):
    return tokenizers.Tokenizer.from_file(path)
  vocab, merges = os.path.join(directory, "vocab.json"), os.path.join(directory, "merges.txt")
  if not (os.path.isfile(vocab) and os.path.isfile(merges)):
    raise FileNotFoundError(f"no GPT-2 tokenizer in {directory!r}: looked for tokenizer.json, or vocab.json "
                            "together with merges.txt")
  tokenizer = tokenizers.Tokenizer(models.BPE.from_file(vocab, merges))
  tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tokenizer.decoder = decoders.ByteLevel()
  tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
  if tokenizer.token_to_id("<|endoftext|>") is not None:
    tokenizer.add_special_tokens(["<|endoftext|>"])
  return tokenizer


# (n_layer, n_embd, n_head) of the released GPT-2s (Radford et al. 2019, Table 2).
GPT2_SIZES = {"gpt2": (12, 768, 12), "gpt2_medium": (24, 1024, 16), "gpt2_large": (36, 1280, 20),
              "gpt2_xl": (48, 1600, 25)}


def register_all():
  """Registers "gpt2" (124M), "gpt2_medium", "gpt2_large", "gpt2_xl", and the CPU-sized
  "gpt2_small" (4 x 256, 4 heads, 256 positions) and "gpt2_tiny" (2 x 64, 2 heads, vocab 512)."""
  for name, (n_layer, n_embd, n_head) in GPT2_SIZES.items():
    register(name, GPT2, n_layer=n_layer, n_embd=n_embd, n_head=n_head)
  register("gpt2_small", GPT2, n_layer=4, n_embd=256, n_head=4, n_positions=256)
  register("gpt2_tiny", GPT2, n_layer=2, n_embd=64, n_head=2, vocab_size=512, n_positions=64)


register_all()
