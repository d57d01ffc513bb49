"""The official MLKD recipe (Wu et al., ACL 2023; microsoft/KC `papers/MLKD_OOD`, `main_ood.py` and
`scripts/<dataset>/run_{clm,kd_clm}.sh`), shared by the paper-dataset configs.

  teacher   GPT-2 small (`model.pretrained_dir`: a Hugging Face gpt2 directory with config.json,
            model.safetensors and the tokenizer files) fine-tuned on the ID text, LM loss, 5 epochs
            (the official loop also stops after an epoch whose mean loss rose; not reproduced).
  student   the same architecture from a random init, 5 epochs of prediction-layer KL (T = 1) plus
            intermediate-layer distillation: student hidden_states[3..9] against teacher [1..12]
            through one learned linear map, the K = 2 closest teacher layers, weights 1.
  both      AdamW lr 5e-5, weight decay 0, constant schedule, batch 8, max_length 128, dropout 0.1.
  score     student perplexity; seeds 171, 354, 550, 667, 985 (`seed`).

Options shared by all paper configs: `tiny` (a 2-layer GPT-2 and 2 epochs: a smoke test of the data
path, not the recipe), and `seed=<int>` via --config.seed on the command line.
"""
from diffjax.configuration import d, parse_options
from diffjax.mlkd import default_mlkd_config

SEEDS = (171, 354, 550, 667, 985)


def parse(options, name, valid=("tiny",)):
  """Comma-separated options; errors name the config and the valid ones."""
  return parse_options(options, name, valid)


def middle_layers(n_layer):
  """The official student layers 3..9 of 12, scaled: hidden states [n/4, 3n/4] (1-based blocks)."""
  return list(range(round(n_layer / 4), round(3 * n_layer / 4) + 1))


def paper_config(source, *, tiny=False, id_group="", epochs=5, teacher_epochs=5, temperature=1.0, lm_weight=0.0,
                 learn_layer_weights=False):
  config = default_mlkd_config()
  config.seed = SEEDS[0]
  config.data.source = source
  config.data.id_group = id_group
  config.data.tokenizer_dir = ""  # set to the GPT-2 directory (usually = model.pretrained_dir)
  config.model.pretrained_dir = ""
  config.teacher.epochs = teacher_epochs
  config.student.epochs = epochs
  config.kd.temperature = temperature
  config.kd.lm_weight = lm_weight
  config.kd.learn_layer_weights = learn_layer_weights
  config.methods = ["mlkd", "from_scratch", "prediction_only", "intermediate_only"]
  if tiny:
    config.model.name = "gpt2_tiny"
    config.model.overrides = d(n_positions=64)
    config.data.max_length = 32
    config.data.bpe_vocab_size = 512
    config.teacher.epochs, config.student.epochs = 2, 2
    config.kd.student_layers, config.kd.teacher_layers = [1], [1, 2]
    config.methods = ["mlkd"]
  return config
