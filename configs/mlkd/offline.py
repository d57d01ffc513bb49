"""MLKD on the offline real-text benchmark (`diffjax.data.text.offline_benchmark`), the run that fits
a 2-core CPU: experiments/mlkd.py.

  python -m diffjax.mlkd.main --config=configs/mlkd/offline.py --workdir=/tmp/mlkd_offline
  python experiments/mlkd.py --config=configs/mlkd/offline.py --seeds=3

ID = Lee et al.'s Australian news sentences (gensim's test corpus, 1942 train / 650 test); OOD = as
many sentences drawn evenly from movie reviews, 20 Newsgroups posts and chatterbot dialogue. No
pretrained GPT-2 installs offline, so the teacher is first pretrained on the benchmark's `pretrain`
text (other news, Wikipedia paragraphs and the untested parts of the OOD corpora: like GPT-2's web
text it has seen OOD-like text) and then fine-tuned on the ID text, as M_finetune. Tokenizer: a
byte-level BPE trained on the non-test text.

Scaled from the paper's recipe (_mlkd_common.py) to CPU size, everything else as there:
  model     GPT-2 with 4 layers, width 128, 4 heads (the student the same), dropout 0.1;
  kd        student hidden states 1..3 (the middle, as 3..9 of 12) against teacher 1..4, K = 2, T = 1;
  optim     AdamW lr 1e-3 (5e-5 is GPT-2 small's fine-tuning rate; a small model from scratch needs
            more), batch 16, max_length 64, constant schedule;
  epochs    teacher 10 pretraining + 5 fine-tuning, students 10.

Options: `tiny` (seconds: 2-layer width-32 models, 1 epoch each, 200 training sentences),
`in_distribution=<news|dialogue|newsgroups>` as a bare option name (`dialogue`, `newsgroups`).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _mlkd_common import parse  # noqa: E402

from diffjax.configuration import d  # noqa: E402
from diffjax.mlkd import default_mlkd_config  # noqa: E402


def get_config(options=""):
  opts = parse(options, "mlkd/offline", valid=("tiny", "dialogue", "newsgroups"))
  if {"dialogue", "newsgroups"} <= opts:
    raise ValueError("mlkd/offline takes at most one of the options 'dialogue', 'newsgroups'")
  config = default_mlkd_config()
  config.seed = 0
  config.data.update(source="offline", in_distribution=next((o for o in ("dialogue", "newsgroups") if o in opts),
                                                             "news"),
                     max_length=48, batch_size=16, bpe_vocab_size=2000)
  config.model = d(name="gpt2_small", overrides=d(n_layer=4, n_embd=64, n_head=4, n_positions=64),
                   pretrained_dir="")
  for optim in (config.teacher.optim, config.student.optim):
    optim.lr = 1e-3
  config.teacher.pretrain_epochs, config.teacher.epochs = 5, 5
  config.student.epochs = 5
  config.kd.student_layers, config.kd.teacher_layers = [1, 2, 3], [1, 2, 3, 4]
  config.methods = ["mlkd", "from_scratch", "prediction_only", "intermediate_only"]
  config.eval.scores = ["perplexity", "kd_loss"]
  config.eval.batch_size = 128
  config.training.update(log_every=50, ckpt_every=500, keep_checkpoints=1)
  if "tiny" in opts:
    config.data.update(max_length=32, batch_size=8, bpe_vocab_size=400, max_train_examples=200)
    config.model.overrides = d(n_layer=2, n_embd=32, n_head=2, n_positions=32)
    config.teacher.pretrain_epochs, config.teacher.epochs, config.student.epochs = 1, 1, 1
    config.kd.student_layers, config.kd.teacher_layers = [1], [1, 2]
    config.eval.batch_size = 64
    config.training.update(log_every=10, ckpt_every=0)
  return config
