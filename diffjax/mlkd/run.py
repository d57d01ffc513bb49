"""An MLKD run from a config: text, tokenizer, teacher, students, OOD scores and metrics.

Wu et al., "Multi-Level Knowledge Distillation for Out-of-Distribution Detection in Text", ACL 2023.
The stages, each a resumable `training.train` run in its own directory of ``workdir``:

  tokenizer.json      GPT-2's tokenizer (``data.tokenizer_dir``) or a byte-level BPE trained on the
                      non-test text (the ID training text plus the teacher's pretraining text).
  teacher_pretrain/   only without a pretrained GPT-2 (``model.pretrained_dir`` empty and
                      ``teacher.pretrain_epochs > 0``): LM pretraining on the splits' ``pretrain``
                      text, standing in for GPT-2's web pretraining.
  teacher/            M_finetune: the (pre)trained LM fine-tuned on the ID training text, LM loss.
  student_<method>/   a student of the same architecture from a random init, on the ID text only:
                        mlkd               prediction-layer KL + intermediate-layer distillation
                        prediction_only    KL only (the "without L_(l)" ablation)
                        intermediate_only  intermediate-layer distillation only
                        from_scratch       LM loss only (M_fromScratch)

Each model is scored on the ID and OOD test text by per-example perplexity (``sequence_nll``; the
official and default score), and the distilled students also by the distillation discrepancies
(``eval.scores``: ``kl``, ``hidden``, ``kd_loss``). ``results.json`` holds one row per (model,
score) with AUROC, AUPR-OUT, AUPR-IN and FAR95 in percent.

Config (``configs/mlkd/*.py``; defaults in `default_mlkd_config`):

  seed        data order, dropout and initialisation.
  data        source ("offline" or a paper dataset of `text.DATASETS`), data_dir, id_group,
              in_distribution and split_seed (offline: the ID/OOD split is fixed across training
              seeds, as the paper's data sets; SST's OOD file follows ``seed`` as the official
              scripts), max_length, batch_size, tokenizer_dir, bpe_vocab_size, max_train_examples
              (0 = all).
  model       name and overrides of the registered GPT-2 (`dj.models.create`); pretrained_dir: a
              Hugging Face GPT-2 directory the teacher starts from.
  teacher     pretrain_epochs, epochs, optim.
  student     epochs, optim.
  methods     the student methods to train (`METHODS`).
  kd          temperature, student_layers, teacher_layers, top_k, lm_weight, learn_layer_weights.
  training    the train loop's fields; ``num_steps`` is set per stage from the epochs.
  eval        batch_size, scores.
"""
import dataclasses
import json
import logging
import math
import os

import jax
import ml_collections
import numpy as np
import optax
from flax import nnx
from tqdm.auto import tqdm

from diffjax import experiment, models, training, utils
from diffjax.configuration import d
from diffjax.data import datasets as datasets_lib
from diffjax.data import text as text_lib
from diffjax.losses import knowledge_distillation as kd
from diffjax.metrics import ood
from diffjax.models import gpt2

log = logging.getLogger(__name__)

METHODS = ("mlkd", "prediction_only", "intermediate_only", "from_scratch")
KD_SCORES = ("kl", "hidden", "kd_loss")
SCORES = ("perplexity",) + KD_SCORES
_WEIGHTS = {"mlkd": (1.0, 1.0), "prediction_only": (1.0, 0.0), "intermediate_only": (0.0, 1.0)}


def default_mlkd_config():
  """The official recipe (GPT-2 small, AdamW 5e-5 constant, batch 8, length 128, 5 epochs, K = 2)."""
  config = ml_collections.ConfigDict()
  config.seed = 171
  config.data = d(source="clinc150", data_dir="", id_group="", in_distribution="news", split_seed=0, max_length=128,
                  batch_size=8, tokenizer_dir="", bpe_vocab_size=8000, max_train_examples=0)
  config.model = d(name="gpt2", overrides=d(), pretrained_dir="")
  adamw = training.default_optim_config()
  adamw.optimizer, adamw.lr, adamw.weight_decay = "adamw", 5e-5, 0.0
  config.teacher = d(pretrain_epochs=0, epochs=5, optim=ml_collections.ConfigDict(adamw.to_dict()))
  config.student = d(epochs=5, optim=ml_collections.ConfigDict(adamw.to_dict()))
  config.methods = ["mlkd", "from_scratch"]
  config.kd = d(temperature=1.0, student_layers=list(range(3, 10)), teacher_layers=list(range(1, 13)), top_k=2,
                lm_weight=0.0, learn_layer_weights=False)
  config.training = training.default_training_config()
  config.training.update(log_every=100, ckpt_every=1000, ema_decay=0.0, tensorboard=False)
  config.eval = d(batch_size=32, scores=["perplexity"])
  return config


def _positive_int(value, field, *, zero_ok=False):
  if isinstance(value, bool) or not isinstance(value, int) or value < (0 if zero_ok else 1):
    raise ValueError(f"{field} must be an integer >= {0 if zero_ok else 1}, got {value!r}")


def validate_mlkd_config(config):
  """Checks names, sizes and layer indices before anything is built; errors name the field."""
  sources = ("offline",) + text_lib.DATASETS
  if config.data.source not in sources:
    raise ValueError(f"data.source must be one of {list(sources)}, got {config.data.source!r}")
  if config.data.source != "offline" and not config.data.data_dir:
    raise ValueError(f"data.data_dir must name the directory holding the {config.data.source} files "
                     "(see diffjax/data/text.py, 'Preparing the paper datasets')")
  for field in ("max_length", "batch_size", "bpe_vocab_size"):
    _positive_int(config.data[field], f"data.{field}")
  _positive_int(config.data.max_train_examples, "data.max_train_examples", zero_ok=True)
  _positive_int(config.teacher.pretrain_epochs, "teacher.pretrain_epochs", zero_ok=True)
  _positive_int(config.teacher.epochs, "teacher.epochs", zero_ok=True)
  _positive_int(config.student.epochs, "student.epochs")
  unknown = [m for m in config.methods if m not in METHODS]
  if unknown or not config.methods:
    raise ValueError(f"methods must be a non-empty list of {list(METHODS)}, got {list(config.methods)}")
  bad = [s for s in config.eval.scores if s not in SCORES]
  if bad or not config.eval.scores:
    raise ValueError(f"eval.scores must be a non-empty list of {list(SCORES)}, got {list(config.eval.scores)}")
  _positive_int(config.eval.batch_size, "eval.batch_size")
  if not config.kd.temperature > 0:
    raise ValueError(f"kd.temperature must be > 0, got {config.kd.temperature!r}")
  training.validate_optim_config(config.teacher.optim)
  training.validate_optim_config(config.student.optim)
  n_hidden = _num_layers(config) + 1
  for field in ("student_layers", "teacher_layers"):
    layers = list(config.kd[field])
    if not layers or any(isinstance(l, bool) or not isinstance(l, int) or not 0 <= l < n_hidden for l in layers):
      raise ValueError(f"kd.{field} must be a non-empty list of hidden-state indices in [0, {n_hidden - 1}] "
                       f"(0 = embeddings, {n_hidden - 1} = after ln_f), got {layers}")
  if not 1 <= config.kd.top_k <= len(config.kd.teacher_layers):
    raise ValueError(f"kd.top_k must be in [1, len(kd.teacher_layers)={len(config.kd.teacher_layers)}], "
                     f"got {config.kd.top_k!r}")


def _num_layers(config):
  if config.model.pretrained_dir:
    with open(os.path.join(config.model.pretrained_dir, "config.json")) as f:
      return int(json.load(f)["n_layer"])
  abstract = nnx.eval_shape(lambda: _create(config, vocab_size=2))
  return abstract.n_layer


def _create(config, *, vocab_size, seed=0):
  overrides = {**config.model.overrides.to_dict(), "vocab_size": vocab_size}
  return models.create(config.model.name, rngs=nnx.Rngs(seed), **overrides)


# --------------------------------------------------------------------------------------------
# Data and tokenizer
# --------------------------------------------------------------------------------------------
def load_splits(config):
  """The `text.OODTextSplits` of ``config.data`` (train truncated to ``max_train_examples``)."""
  c = config.data
  if c.source == "offline":
    splits = text_lib.offline_benchmark(c.in_distribution, seed=c.split_seed)
  else:
    splits = text_lib.load_ood_dataset(c.source, c.data_dir, id_group=c.id_group or None, seed=config.seed)
  if c.max_train_examples:
    splits = dataclasses.replace(splits, train=list(splits.train)[:c.max_train_examples])
  return splits


def load_or_train_tokenizer(config, splits, workdir):
  """GPT-2's tokenizer from ``data.tokenizer_dir``, else a byte-level BPE on the non-test text
  (saved as ``workdir/tokenizer.json`` and reused on resume)."""
  from tokenizers import Tokenizer
  if config.data.tokenizer_dir:
    return gpt2.load_hf_tokenizer(config.data.tokenizer_dir)
  path = os.path.join(workdir, "tokenizer.json")
  if os.path.exists(path):
    return Tokenizer.from_file(path)
  tokenizer = text_lib.train_bpe_tokenizer(list(splits.train) + list(splits.pretrain),
                                           vocab_size=config.data.bpe_vocab_size)
  tmp = path + ".tmp"
  tokenizer.save(tmp)
  os.replace(tmp, path)
  return tokenizer


def encode(tokenizer, texts, config):
  """Right-padded ids with pad = EOS and the mask on the text only, as the official Hugging Face
  tokenization (GPT-2 adds no EOS); `kd.sequence_nll` then scores the first pad as the text's end."""
  return text_lib.encode_batch(tokenizer, list(texts), max_length=config.data.max_length, append_eos=False)


# --------------------------------------------------------------------------------------------
# Training stages
# --------------------------------------------------------------------------------------------
def _frozen_labels(params):
  return {k: jax.tree.map(lambda _: "frozen" if k == "teacher" else "train", v) for k, v in params.items()}


def _stage_config(config, optim, num_steps):
  stage = ml_collections.ConfigDict(config.to_dict())
  stage.optim = ml_collections.ConfigDict(optim.to_dict())
  stage.training.num_steps = int(num_steps)
  return stage


def _train_stage(config, workdir, params, loss_fn, optim, epochs, data, *, seed_offset, desc):
  """Trains ``params`` (a dict; a "teacher" entry stays frozen) for `epochs` over `data`."""
  batch = config.data.batch_size
  steps = epochs * (len(data["input_ids"]) // batch)
  if steps == 0:
    return params
  stage = _stage_config(config, optim, steps)
  c = training.validate_training_config(stage.training)
  experiment.check_same_config(experiment.stored_config(workdir), stage, workdir,
                               ignore=experiment.RESUME_MAY_CHANGE)
  optimizer = training.make_optimizer(stage.optim)
  if "teacher" in params:
    optimizer = optax.multi_transform({"train": optimizer, "frozen": optax.set_to_zero()}, _frozen_labels(params))
  step = training.make_train_step(loss_fn, optimizer, ema_decay=c["ema_decay"], nonfinite=c["nonfinite"],
                                  n_steps=c["n_jitted_steps"], lr_schedule=training.make_lr_schedule(stage.optim))
  state = training.TrainState.create(params, optimizer, jax.random.PRNGKey(config.seed + seed_offset))
  dataset = datasets_lib.ArrayDataset(data, batch, seed=config.seed + seed_offset)
  log.info("%s: %d steps (%d epochs of %d examples) in %s", desc, steps, epochs, len(data["input_ids"]), workdir)
  result = training.train(config=stage, workdir=workdir, state=state, train_step=step, dataset=dataset,
                          metadata={"config": stage.to_dict(), "stage": desc})
  if result.interrupted:
    raise KeyboardInterrupt(f"{desc} interrupted ({result.interrupted}); rerun the same command to resume")
  return jax.tree.map(np.asarray, result.state.params)


def lm_loss_fn(apply_fn):
  """The teacher's (and M_fromScratch's) loss: Hugging Face ``labels=input_ids`` cross-entropy."""
  def loss_fn(params, batch, key):
    logits = apply_fn(params["model"], batch["input_ids"], batch["attention_mask"], key=key)
    loss = kd.causal_lm_loss(logits, batch["input_ids"], batch["attention_mask"])
    return loss, {"lm": loss}
  return loss_fn


def mlkd_loss_fn(apply_fn, teacher_apply_fn, config, method):
  """The student's loss for a distillation `method`: teacher forward in eval mode, student in train mode."""
  w_pred, w_inter = _WEIGHTS[method]
  k = config.kd
  learn_weights = bool(k.learn_layer_weights)

  def loss_fn(params, batch, key):
    ids, mask = batch["input_ids"], batch["attention_mask"]
    t_logits, t_hidden = teacher_apply_fn(jax.lax.stop_gradient(params["teacher"]), ids, mask,
                                          output_hidden_states=True)
    s_logits, s_hidden = apply_fn(params["model"], ids, mask, key=key, output_hidden_states=True)
    kd_params = params["kd"]
    if not learn_weights:
      kd_params = kd_params._replace(layer_weights=jax.lax.stop_gradient(kd_params.layer_weights))
    return kd.mlkd_loss(s_logits, s_hidden, t_logits, t_hidden, ids, mask, kd_params,
                        student_layers=tuple(k.student_layers), teacher_layers=tuple(k.teacher_layers),
                        temperature=k.temperature, top_k=k.top_k, prediction_weight=w_pred,
                        intermediate_weight=w_inter, lm_weight=k.lm_weight)
  return loss_fn


def pretrain_lm(config, workdir):
  """A GPT-2 stand-in where none is installed: the tokenizer and an LM pretrained on the splits'
  ``pretrain`` text for ``teacher.pretrain_epochs``, saved as a Hugging Face directory
  ``workdir/pretrained`` (config.json, model.safetensors, tokenizer.json) that
  ``model.pretrained_dir`` and ``data.tokenizer_dir`` can point to. Returns that path."""
  validate_mlkd_config(config)
  out = os.path.join(workdir, "pretrained")
  os.makedirs(workdir, exist_ok=True)
  if os.path.exists(os.path.join(out, "model.safetensors")):
    return out
  splits = load_splits(config)
  if not splits.pretrain or not config.teacher.pretrain_epochs:
    raise ValueError("pretrain_lm needs pretraining text (the splits' `pretrain`) and teacher.pretrain_epochs > 0")
  tokenizer = load_or_train_tokenizer(config, splits, workdir)
  model = _create(config, vocab_size=tokenizer.get_vocab_size(), seed=config.seed + 1)
  apply_fn, params = gpt2.lm_apply(model)
  params = _train_stage(config, os.path.join(workdir, "pretrain"), {"model": params}, lm_loss_fn(apply_fn),
                        config.teacher.optim, config.teacher.pretrain_epochs,
                        encode(tokenizer, splits.pretrain, config), seed_offset=2, desc="LM pretraining")
  nnx.update(model, params["model"])
  tmp = out + ".tmp"
  gpt2.save_hf_gpt2(model, tmp)
  tokenizer.save(os.path.join(tmp, "tokenizer.json"))
  os.replace(tmp, out)
  return out


def train_teacher(config, workdir, tokenizer, splits):
  """M_finetune: GPT-2 from ``model.pretrained_dir`` (or pretrained here) fine-tuned on ID text."""
  vocab = tokenizer.get_vocab_size()
  if config.model.pretrained_dir:
    model = gpt2.load_hf_gpt2(config.model.pretrained_dir)
    if model.vocab_size < vocab:
      raise ValueError(f"model.pretrained_dir has vocab_size {model.vocab_size} < the tokenizer's {vocab}")
  else:
    model = _create(config, vocab_size=vocab, seed=config.seed + 1)
  apply_fn, params = gpt2.lm_apply(model)
  params = {"model": params}
  loss_fn = lm_loss_fn(apply_fn)
  if not config.model.pretrained_dir and config.teacher.pretrain_epochs and splits.pretrain:
    params = _train_stage(config, os.path.join(workdir, "teacher_pretrain"), params, loss_fn, config.teacher.optim,
                          config.teacher.pretrain_epochs, encode(tokenizer, splits.pretrain, config), seed_offset=2,
                          desc="teacher pretraining")
  params = _train_stage(config, os.path.join(workdir, "teacher"), params, loss_fn, config.teacher.optim,
                        config.teacher.epochs, encode(tokenizer, splits.train, config), seed_offset=3,
                        desc="teacher fine-tuning")
  return apply_fn, params["model"], model.n_embd


def train_student(config, workdir, method, tokenizer, splits, teacher_apply_fn, teacher_params, teacher_dim):
  """A random-init student of the same architecture trained on the ID text by `method`."""
  model = _create(config, vocab_size=tokenizer.get_vocab_size(), seed=config.seed + 10)
  apply_fn, params = gpt2.lm_apply(model)
  params = {"model": params}
  if method == "from_scratch":
    loss_fn = lm_loss_fn(apply_fn)
  else:
    params["kd"] = kd.init_mlkd_params(jax.random.PRNGKey(config.seed + 11), teacher_dim=teacher_dim,
                                       student_dim=model.n_embd,
                                       num_student_layers=len(config.kd.student_layers), top_k=config.kd.top_k)
    params["teacher"] = teacher_params
    loss_fn = mlkd_loss_fn(apply_fn, teacher_apply_fn, config, method)
  params = _train_stage(config, os.path.join(workdir, f"student_{method}"), params, loss_fn, config.student.optim,
                        config.student.epochs, encode(tokenizer, splits.train, config), seed_offset=20,
                        desc=f"student ({method})")
  return apply_fn, params["model"], params.get("kd")


# --------------------------------------------------------------------------------------------
# Scores and metrics
# --------------------------------------------------------------------------------------------
def score_texts(config, data, apply_fn, params, *, teacher=None, kd_params=None, scores=("perplexity",)):
  """Per-example OOD scores (higher = more OOD), dict name -> (N,) numpy array.

  ``perplexity`` is scored as its log (the mean token NLL), which orders examples the same way.
  The distillation scores need ``teacher = (apply_fn, params)`` and ``kd_params``.
  """
  k = config.kd
  need_kd = any(s in KD_SCORES for s in scores)
  teacher_apply, teacher_params = teacher if teacher is not None else (None, None)

  @jax.jit  # parameters are arguments, not constants baked into the compiled scorer
  def batch_scores(params, teacher_params, kd_params, ids, mask):
    if not need_kd:
      return {"perplexity": kd.sequence_nll(apply_fn(params, ids, mask), ids, mask)}
    s_logits, s_hidden = apply_fn(params, ids, mask, output_hidden_states=True)
    t_logits, t_hidden = teacher_apply(teacher_params, ids, mask, output_hidden_states=True)
    out = kd.kd_scores(s_logits, s_hidden, t_logits, t_hidden, mask, kd_params, student_layers=tuple(k.student_layers),
                       teacher_layers=tuple(k.teacher_layers), temperature=k.temperature, top_k=k.top_k)
    out["perplexity"] = kd.sequence_nll(s_logits, ids, mask)
    return out

  n, b = len(data["input_ids"]), config.eval.batch_size
  pieces = []
  for start in tqdm(range(0, n, b), desc="scoring", leave=False, disable=n <= b):
    ids, mask = data["input_ids"][start:start + b], data["attention_mask"][start:start + b]
    pad = b - len(ids)  # one compiled shape: pad the last batch, drop its rows after
    if pad:
      ids, mask = np.pad(ids, ((0, pad), (0, 0))), np.pad(mask, ((0, pad), (0, 0)), constant_values=1)
    out = jax.device_get(batch_scores(params, teacher_params, kd_params, ids, mask))
    pieces.append({s: np.asarray(out[s])[:b - pad] for s in scores})
  return {s: np.concatenate([p[s] for p in pieces]).astype(np.float64) for s in scores}


def evaluate(config, test_id, test_ood, apply_fn, params, *, name, workdir=None, **score_kwargs):
  """Rows ``{model, score, auroc, aupr_out, aupr_in, far95, ...}`` for each score; with `workdir`
  the per-example scores go to ``workdir/scores_<name>.npz`` (``id_<score>``, ``ood_<score>``)."""
  n_id = len(test_id["input_ids"])
  both = score_texts(config, {k: np.concatenate([test_id[k], test_ood[k]]) for k in test_id}, apply_fn, params,
                     **score_kwargs)  # one compiled scorer and one pass over ID then OOD
  id_scores = {s: v[:n_id] for s, v in both.items()}
  ood_scores = {s: v[n_id:] for s, v in both.items()}
  if workdir is not None:
    utils.save_npz_atomic(os.path.join(workdir, f"scores_{name}.npz"),
                          **{f"id_{k}": v for k, v in id_scores.items()},
                          **{f"ood_{k}": v for k, v in ood_scores.items()})
  rows = []
  for s in id_scores:
    row = {"model": name, "score": s, **ood.ood_metrics(id_scores[s], ood_scores[s])}
    if s == "perplexity":
      row["id_perplexity"] = float(math.exp(np.mean(id_scores[s])))
      row["ood_perplexity"] = float(math.exp(np.mean(ood_scores[s])))
    rows.append(row)
    log.info("%s", json.dumps(row))
  return rows


def train_and_evaluate(config, workdir):
  """Runs (resuming) every stage of the config and writes ``workdir/results.json``; returns its rows."""
  validate_mlkd_config(config)
  os.makedirs(workdir, exist_ok=True)
  splits = load_splits(config)
  tokenizer = load_or_train_tokenizer(config, splits, workdir)
  test_id, test_ood = encode(tokenizer, splits.test_id, config), encode(tokenizer, splits.test_ood, config)
  teacher_apply, teacher_params, teacher_dim = train_teacher(config, workdir, tokenizer, splits)
  rows = evaluate(config, test_id, test_ood, teacher_apply, teacher_params, name="teacher_finetuned",
                  workdir=workdir)
  for method in config.methods:
    apply_fn, params, kd_params = train_student(config, workdir, method, tokenizer, splits, teacher_apply,
                                                teacher_params, teacher_dim)
    scores = list(config.eval.scores) if kd_params is not None else ["perplexity"]
    rows += evaluate(config, test_id, test_ood, apply_fn, params, name=method, scores=scores, workdir=workdir,
                     teacher=(teacher_apply, teacher_params), kd_params=kd_params)
  sizes = {"train": len(splits.train), "test_id": len(splits.test_id), "test_ood": len(splits.test_ood),
           "pretrain": len(splits.pretrain), "vocab_size": tokenizer.get_vocab_size()}
  tmp = os.path.join(workdir, "results.json.tmp")
  with open(tmp, "w") as f:
    json.dump({"sizes": sizes, "rows": rows}, f, indent=2)
  os.replace(tmp, os.path.join(workdir, "results.json"))
  return rows
