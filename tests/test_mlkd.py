"""The MLKD run (diffjax.mlkd): configs carry the official recipe, bad configs are named, and a tiny
end-to-end run through the Hugging Face teacher path trains, scores, writes results and resumes."""
import json
import os

import numpy as np
import pytest
from flax import nnx

import diffjax as dj
from diffjax.configuration import load_config_file
from diffjax.data import text as text_lib
from diffjax.mlkd import run as mlkd_run
from diffjax.models import gpt2

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs", "mlkd")


def _load(name, options=""):
  return load_config_file(os.path.join(CONFIGS, name), options)


def test_paper_configs_carry_the_official_hyperparameters(tmp_path):
  c = _load("clinc150.py")
  assert (c.model.name, c.data.batch_size, c.data.max_length) == ("gpt2", 8, 128)
  for optim in (c.teacher.optim, c.student.optim):
    assert (optim.optimizer, optim.lr, optim.weight_decay, optim.schedule) == ("adamw", 5e-5, 0.0, "constant")
  assert (c.teacher.epochs, c.student.epochs, c.kd.temperature, c.kd.top_k) == (5, 5, 1.0, 2)
  assert list(c.kd.student_layers) == list(range(3, 10)) and list(c.kd.teacher_layers) == list(range(1, 13))
  assert c.kd.lm_weight == 0.0 and not c.kd.learn_layer_weights and c.seed == 171
  assert _load("sst.py").kd.temperature == 0.5
  assert _load("rostd.py").kd.lm_weight == 1.0
  assert (_load("20ng.py", "rec").student.epochs, _load("20ng.py", "comp").student.epochs) == (30, 5)
  rel = _load("20ng.py", "rel")
  assert rel.kd.lm_weight == 1.0 and rel.kd.learn_layer_weights and rel.data.id_group == "rel"
  assert _load("agnews.py", "sports").data.id_group == "sports"
  for name in ("clinc150.py", "sst.py", "rostd.py", "20ng.py", "agnews.py", "hc3.py"):
    for options in ("", "tiny"):
      config = _load(name, options)
      config.data.data_dir = str(tmp_path)
      mlkd_run.validate_mlkd_config(config)
  for options in ("", "tiny", "dialogue", "newsgroups,tiny"):
    mlkd_run.validate_mlkd_config(_load("offline.py", options))
  with pytest.raises(ValueError, match="unknown or repeated option"):
    _load("clinc150.py", "small")
  with pytest.raises(ValueError, match="one ID group"):
    _load("20ng.py", "rec,sci")


@pytest.mark.parametrize("field,value,match", [
    ("methods", ["mlkd", "distil"], "methods must be a non-empty list of"),
    ("kd.student_layers", [1, 9], r"kd.student_layers must be a non-empty list of hidden-state indices in \[0, 2\]"),
    ("kd.top_k", 5, r"kd.top_k must be in \[1, len\(kd.teacher_layers\)=2\]"),
    ("eval.scores", ["energy"], "eval.scores must be a non-empty list of"),
    ("data.source", "imdb", "data.source must be one of"),
    ("data.batch_size", 0, "data.batch_size must be an integer >= 1"),
])
def test_bad_configs_name_the_field(field, value, match):
  config = _load("offline.py", "tiny")
  section, _, key = field.rpartition(".")
  (config[section] if section else config)[key] = value
  with pytest.raises(ValueError, match=match):
    mlkd_run.validate_mlkd_config(config)


def test_paper_dataset_needs_data_dir():
  with pytest.raises(ValueError, match="data.data_dir must name the directory holding the clinc150 files"):
    mlkd_run.validate_mlkd_config(_load("clinc150.py", "tiny"))


def _write_clinc_like(directory):
  """CLINC150's file layout filled with real offline text: news as ID, the rest as 'out of scope'."""
  splits = text_lib.offline_benchmark("news", seed=0)
  os.makedirs(directory)
  for name, lines in (("clinc150_train.txt", splits.train[:96]), ("clinc150_test.txt", splits.test_id[:40]),
                      ("clinc150_oos_test.txt", splits.test_ood[:40])):
    with open(os.path.join(directory, name), "w") as f:
      f.write("\n".join(lines) + "\n")
  return splits


def test_tiny_run_with_a_hugging_face_teacher_trains_scores_and_resumes(tmp_path):
  splits = _write_clinc_like(tmp_path / "data")
  # a "pretrained GPT-2": a tiny random model and a BPE saved in the Hugging Face formats
  tokenizer = text_lib.train_bpe_tokenizer(splits.pretrain[:400], vocab_size=300)
  pretrained = str(tmp_path / "gpt2")
  gpt2.save_hf_gpt2(dj.models.create("gpt2_tiny", rngs=nnx.Rngs(3), vocab_size=tokenizer.get_vocab_size(),
                                     n_positions=32), pretrained)
  tokenizer.save(os.path.join(pretrained, "tokenizer.json"))
  config = _load("clinc150.py", "tiny")
  config.data.update(data_dir=str(tmp_path / "data"), tokenizer_dir=pretrained, max_length=24)
  config.model.pretrained_dir = pretrained
  config.model.overrides.n_positions = 32
  config.teacher.epochs, config.student.epochs = 1, 1
  config.eval.scores = ["perplexity", "kd_loss"]
  config.training.log_every = 4
  workdir = str(tmp_path / "run")
  rows = mlkd_run.train_and_evaluate(config, workdir)
  assert [(r["model"], r["score"]) for r in rows] == [("teacher_finetuned", "perplexity"), ("mlkd", "perplexity"),
                                                      ("mlkd", "kd_loss")]
  for r in rows:
    assert all(0.0 <= r[m] <= 100.0 for m in ("auroc", "aupr_out", "aupr_in", "far95"))
  assert rows[0]["id_perplexity"] < tokenizer.get_vocab_size()   # fine-tuning fit the ID text somewhat
  with open(os.path.join(workdir, "results.json")) as f:
    assert json.load(f)["sizes"] == {"train": 96, "test_id": 40, "test_ood": 40, "pretrain": 0,
                                     "vocab_size": tokenizer.get_vocab_size()}
  scores = np.load(os.path.join(workdir, "scores_mlkd.npz"))
  assert scores["id_perplexity"].shape == (40,) and np.all(np.isfinite(scores["ood_kd_loss"]))
  # the distillation stage logged both of its loss terms
  losses = [json.loads(line) for line in open(os.path.join(workdir, "student_mlkd", "metrics.jsonl"))]
  assert losses and all(np.isfinite(m["kd/prediction"]) and np.isfinite(m["kd/intermediate"]) for m in losses)
  # a second call resumes every stage from its final checkpoint: the same numbers, no retraining
  again = mlkd_run.train_and_evaluate(config, workdir)
  assert again == rows
