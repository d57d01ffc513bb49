"""GPT-2 (Radford et al. 2019) against a float64 NumPy forward on a hand-written HF checkpoint; HF
save / load, causality, the pure `lm_apply`, the registry sizes and the tokenizer loader."""
import functools
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import save_file

import diffjax as dj
from diffjax.models.gpt2 import lm_apply, load_hf_gpt2, load_hf_tokenizer, save_hf_gpt2

CFG = dict(vocab_size=97, n_positions=16, n_embd=32, n_layer=2, n_head=4, layer_norm_epsilon=1e-5)


def _hf_tensors(cfg, seed=0):
  """A random `GPT2LMHeadModel` state dict (numpy float32), with HF's names, shapes and buffers."""
  rng = np.random.default_rng(seed)
  d, v, p = cfg["n_embd"], cfg["vocab_size"], cfg["n_positions"]

  def normal(*shape, std=0.2):
    return (std * rng.standard_normal(shape)).astype(np.float32)

  t = {"transformer.wte.weight": normal(v, d, std=0.5), "transformer.wpe.weight": normal(p, d, std=0.5)}
  for i in range(cfg["n_layer"]):
    pre = f"transformer.h.{i}."
    for ln in ("ln_1", "ln_2"):
      t[pre + ln + ".weight"] = 1.0 + normal(d, std=0.1)
      t[pre + ln + ".bias"] = normal(d, std=0.1)
    t[pre + "attn.c_attn.weight"], t[pre + "attn.c_attn.bias"] = normal(d, 3 * d), normal(3 * d)
    t[pre + "attn.c_proj.weight"], t[pre + "attn.c_proj.bias"] = normal(d, d), normal(d)
    t[pre + "mlp.c_fc.weight"], t[pre + "mlp.c_fc.bias"] = normal(d, 4 * d), normal(4 * d)
    t[pre + "mlp.c_proj.weight"], t[pre + "mlp.c_proj.bias"] = normal(4 * d, d, std=0.1), normal(d)
    t[pre + "attn.bias"] = np.tril(np.ones((p, p), np.float32))[None, None]  # causal-mask buffers
    t[pre + "attn.masked_bias"] = np.asarray(-1e4, np.float32)
  t["transformer.ln_f.weight"], t["transformer.ln_f.bias"] = 1.0 + normal(d, std=0.1), normal(d, std=0.1)
  t["lm_head.weight"] = t["transformer.wte.weight"].copy()
  return t


def _write_checkpoint(directory, tensors, cfg=CFG):
  directory.mkdir(parents=True, exist_ok=True)
  config = {**cfg, "model_type": "gpt2", "activation_function": "gelu_new", "n_inner": None,
            "resid_pdrop": 0.1, "embd_pdrop": 0.1, "attn_pdrop": 0.1}
  (directory / "config.json").write_text(json.dumps(config))
  save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
  return directory


def _reference(tensors, cfg, ids):
  """Float64 NumPy GPT-2 forward of one sequence ids (T,): (logits (T, V), hidden states)."""
  w = {k.removeprefix("transformer."): v.astype(np.float64) for k, v in tensors.items()}
  n_t, d, n_h = len(ids), cfg["n_embd"], cfg["n_head"]
  hd = d // n_h

  def layer_norm(x, name):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu)**2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + cfg["layer_norm_epsilon"]) * w[name + ".weight"] + w[name + ".bias"]

  def gelu(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))

  x = w["wte.weight"][ids] + w["wpe.weight"][:n_t]
  hidden = [x]
  for i in range(cfg["n_layer"]):
    pre = f"h.{i}."
    qkv = layer_norm(x, pre + "ln_1") @ w[pre + "attn.c_attn.weight"] + w[pre + "attn.c_attn.bias"]
    q, k, v = (qkv[:, j * d:(j + 1) * d].reshape(n_t, n_h, hd).transpose(1, 0, 2) for j in range(3))
    s = q @ k.transpose(0, 2, 1) / math.sqrt(hd)
    s = np.where(np.tril(np.ones((n_t, n_t), bool)), s, -np.inf)
    prob = np.exp(s - s.max(-1, keepdims=True))
    prob /= prob.sum(-1, keepdims=True)
    attn = (prob @ v).transpose(1, 0, 2).reshape(n_t, d)
    x = x + attn @ w[pre + "attn.c_proj.weight"] + w[pre + "attn.c_proj.bias"]
    m = gelu(layer_norm(x, pre + "ln_2") @ w[pre + "mlp.c_fc.weight"] + w[pre + "mlp.c_fc.bias"])
    x = x + m @ w[pre + "mlp.c_proj.weight"] + w[pre + "mlp.c_proj.bias"]
    hidden.append(x)
  hidden[-1] = layer_norm(x, "ln_f")
  return hidden[-1] @ w["wte.weight"].T, hidden


def _close(got, want):
  want = np.asarray(want)
  np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  tensors = _hf_tensors(CFG)
  return _write_checkpoint(tmp_path_factory.mktemp("gpt2_hf"), tensors), tensors


def test_hf_checkpoint_matches_numpy_reference(checkpoint):
  directory, tensors = checkpoint
  model = load_hf_gpt2(str(directory))
  ids = np.random.default_rng(1).integers(0, CFG["vocab_size"], (2, 11))
  logits, hidden = model(jnp.asarray(ids), output_hidden_states=True)
  assert logits.shape == (2, 11, CFG["vocab_size"]) and logits.dtype == jnp.float32
  assert len(hidden) == CFG["n_layer"] + 1 and all(h.shape == (2, 11, CFG["n_embd"]) for h in hidden)
  for b in range(2):
    ref_logits, ref_hidden = _reference(tensors, CFG, ids[b])
    _close(logits[b], ref_logits)
    for got, want in zip(hidden, ref_hidden):
      _close(got[b], want)
  np.testing.assert_array_equal(model(jnp.asarray(ids)), logits)  # eval mode: no dropout


def test_right_padding_attention_mask(checkpoint):
  directory, tensors = checkpoint
  model = load_hf_gpt2(str(directory))
  rng = np.random.default_rng(2)
  long_ids, short_ids = rng.integers(0, CFG["vocab_size"], 9), rng.integers(0, CFG["vocab_size"], 5)
  ids = np.stack([long_ids, np.concatenate([short_ids, rng.integers(0, CFG["vocab_size"], 4)])])
  mask = np.array([[1] * 9, [1] * 5 + [0] * 4])
  logits, hidden = model(jnp.asarray(ids), jnp.asarray(mask), output_hidden_states=True)
  for b, seq in enumerate((long_ids, short_ids)):
    ref_logits, ref_hidden = _reference(tensors, CFG, seq)
    _close(logits[b, :len(seq)], ref_logits)
    for got, want in zip(hidden, ref_hidden):
      _close(got[b, :len(seq)], want)
  assert np.isfinite(np.asarray(logits)).all()


def test_save_load_round_trip_is_bitwise(tmp_path):
  model = dj.models.create("gpt2_tiny", rngs=nnx.Rngs(3))
  save_hf_gpt2(model, str(tmp_path))
  config = json.loads((tmp_path / "config.json").read_text())
  assert (config["n_layer"], config["n_embd"], config["n_head"], config["vocab_size"]) == (2, 64, 2, 512)
  loaded = load_hf_gpt2(str(tmp_path))
  assert loaded.config() == model.config()
  want, got = nnx.state(model, nnx.Param), nnx.state(loaded, nnx.Param)
  assert jax.tree.structure(want) == jax.tree.structure(got)
  for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
    assert a.dtype == b.dtype
    np.testing.assert_array_equal(a, b)
  # nothing abstract is left over from the shape-only init (dropout streams included)
  assert all(isinstance(x, jax.Array) for x in jax.tree.leaves(nnx.state(loaded)))
  model.eval()
  ids = jnp.arange(32).reshape(2, 16) * 37 % 512
  np.testing.assert_array_equal(model(ids), loaded(ids))


def test_bfloat16_load(checkpoint):
  directory, _ = checkpoint
  model32, model16 = load_hf_gpt2(str(directory)), load_hf_gpt2(str(directory), dtype=jnp.bfloat16)
  assert {x.dtype for x in jax.tree.leaves(nnx.state(model16, nnx.Param))} == {jnp.dtype(jnp.bfloat16)}
  ids = jnp.arange(8)[None]
  apply32, params32 = lm_apply(model32)
  apply16, params16 = lm_apply(model16)
  want, got = jax.jit(apply32)(params32, ids), jax.jit(apply16)(params16, ids)
  assert got.dtype == jnp.float32
  assert np.abs(np.asarray(got - want)).max() < 0.1 * np.abs(np.asarray(want)).max()


@pytest.mark.parametrize("edit, name", [
    ("shape", "h.1.mlp.c_fc.weight"), ("missing", "h.0.ln_2.bias"), ("unexpected", "h.0.attn.extra.weight"),
    ("lm_head", "lm_head.weight")])
def test_bad_checkpoints_name_the_tensor(tmp_path, edit, name):
  tensors = _hf_tensors(CFG)
  key = "transformer." + name
  if edit == "shape":
    tensors[key] = tensors[key][:, :-1]
  elif edit == "missing":
    del tensors[key]
  elif edit == "unexpected":
    tensors[key] = np.zeros(3, np.float32)
  else:
    tensors[name] = tensors[name] + 1.0
  _write_checkpoint(tmp_path, tensors)
  with pytest.raises(ValueError, match=name.replace(".", r"\.")):
    load_hf_gpt2(str(tmp_path))


def test_missing_files_and_bad_inputs(tmp_path):
  with pytest.raises(FileNotFoundError, match="config.json"):
    load_hf_gpt2(str(tmp_path))
  model = dj.models.create("gpt2_tiny", rngs=nnx.Rngs(0))
  model.eval()
  with pytest.raises(ValueError, match="n_positions"):
    model(jnp.zeros((1, 65), jnp.int32))
  with pytest.raises(ValueError, match="input_ids"):
    model(jnp.zeros((4,), jnp.int32))
  with pytest.raises(ValueError, match="attention_mask"):
    model(jnp.zeros((2, 4), jnp.int32), jnp.ones((2, 5)))


def test_causality():
  model = dj.models.create("gpt2_tiny", rngs=nnx.Rngs(4))
  model.eval()
  ids = jnp.asarray(np.random.default_rng(5).integers(0, 512, (2, 16)))
  t = 9
  changed = ids.at[:, t].set((ids[:, t] + 1) % 512)
  a, b = np.asarray(model(ids)), np.asarray(model(changed))
  np.testing.assert_allclose(a[:, :t], b[:, :t], rtol=0, atol=1e-6)
  assert np.abs(a[:, t:] - b[:, t:]).max(axis=-1).min() > 1e-4  # every later position sees it


def test_lm_apply_eval_train_and_grad():
  model = dj.models.create("gpt2_tiny", rngs=nnx.Rngs(6))
  apply_fn, params = lm_apply(model)
  assert isinstance(params, nnx.State)
  ids = jnp.asarray(np.random.default_rng(7).integers(0, 512, (2, 16)))
  mask = jnp.asarray([[1] * 16, [1] * 10 + [0] * 6])
  run = jax.jit(functools.partial(apply_fn, output_hidden_states=True))
  out, hidden = run(params, ids, mask)
  np.testing.assert_array_equal(out, run(params, ids, mask)[0])
  np.testing.assert_allclose(out, model(ids, mask), rtol=1e-5, atol=1e-5)  # the model is in eval mode
  assert len(hidden) == 3 and hidden[0].shape == (2, 16, 64)

  def loss(params, key):  # next-token cross-entropy on the real tokens, in training mode
    logits = apply_fn(params, ids[:, :-1], mask[:, :-1], key=key)
    nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), ids[:, 1:, None], axis=-1)[..., 0]
    return (nll * mask[:, 1:]).sum() / mask[:, 1:].sum(), logits

  # One compilation (dropout's RNG is slow to compile on CPU) for the train-mode checks and the grad.
  train_step = jax.jit(jax.value_and_grad(loss, has_aux=True))
  key = jax.random.PRNGKey(0)
  (_, train), grads = train_step(params, key)
  assert not np.allclose(train, out[:, :-1])  # dropout is on
  np.testing.assert_array_equal(train, train_step(params, key)[0][1])  # pure in the key
  assert not np.array_equal(train, train_step(params, jax.random.PRNGKey(1))[0][1])
  leaves = jax.tree.leaves(grads)
  assert jax.tree.structure(grads) == jax.tree.structure(params)
  assert all(np.isfinite(np.asarray(g)).all() for g in leaves)
  assert any(np.abs(np.asarray(g)).max() > 0 for g in leaves)


def test_registry_sizes():
  abstract = nnx.eval_shape(lambda: dj.models.create("gpt2", rngs=nnx.Rngs(0)))
  assert dj.models.count_params(abstract) == 124_439_808  # HF GPT-2 small, tied embeddings
  # The larger sizes through a one-block override (abstract init time grows quadratically with depth).
  per_block = 12 * 768**2 + 13 * 768
  for name, n_embd, n_head in (("gpt2_medium", 1024, 16), ("gpt2_large", 1280, 20), ("gpt2_xl", 1600, 25)):
    one = nnx.eval_shape(lambda: dj.models.create(name, n_layer=1, rngs=nnx.Rngs(0)))
    assert (one.n_embd, one.n_head, one.vocab_size, one.n_positions) == (n_embd, n_head, 50257, 1024)
  assert dj.models.count_params(abstract) == (50257 + 1024) * 768 + 12 * per_block + 2 * 768
  assert {"gpt2", "gpt2_medium", "gpt2_large", "gpt2_xl", "gpt2_small", "gpt2_tiny"} <= set(dj.models.list_models())
  tiny = nnx.eval_shape(lambda: dj.models.create("gpt2_tiny", rngs=nnx.Rngs(0), vocab_size=300, dropout=0.2))
  assert tiny.wte.embedding.shape == (300, 64) and tiny.n_positions == 64  # (it runs: the tests above)
  assert dj.models.dropout_rate(tiny) == pytest.approx(0.2)


def test_load_hf_tokenizer(tmp_path):
  from tokenizers import ByteLevelBPETokenizer
  corpus = ["The quick brown fox jumps over the lazy dog.", "Out-of-distribution text detection with GPT-2!",
            "Language models are unsupervised multitask learners.", "naïve café — ünïcödé 12345"] * 20
  trained = ByteLevelBPETokenizer()
  trained.train_from_iterator(corpus, vocab_size=300, special_tokens=["<|endoftext|>"])
  json_dir, bpe_dir = tmp_path / "json", tmp_path / "bpe"
  json_dir.mkdir()
  bpe_dir.mkdir()
  trained.save(str(json_dir / "tokenizer.json"))
  trained.save_model(str(bpe_dir))
  text = "The lazy fox detects café text, 42 times.<|endoftext|>"
  want = trained.encode(text).ids
  for directory in (json_dir, bpe_dir):
    tok = load_hf_tokenizer(str(directory))
    ids = tok.encode(text).ids
    assert ids == want
    assert tok.decode(ids, skip_special_tokens=False) == text
  with pytest.raises(FileNotFoundError, match="vocab.json"):
    load_hf_tokenizer(str(tmp_path))
