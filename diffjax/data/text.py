"""Text for language-model out-of-distribution (OOD) detection, as in MLKD.

Wu et al., "Multi-Level Knowledge Distillation for Out-of-Distribution Detection in Text"
(ACL 2023, official code: microsoft/KC, papers/MLKD_OOD) train a GPT-2 language model on
in-distribution (ID) text only and score test text by its perplexity: a teacher is GPT-2
(pretrained on web text) fine-tuned on the ID training set, the student a randomly initialised
GPT-2 trained on the same set. Every benchmark is therefore three lists of sentences: `train`
(ID), `test_id` (ID) and `test_ood` (OOD), held by `OODTextSplits`.

Two sources of such splits:

  * `offline_benchmark`: real English text shipped inside registry packages (gensim's test
    corpora and chatterbot-corpus), so that tests and small experiments run without network;
    it also returns `pretrain`, text disjoint from the test sets that stands in for GPT-2's
    web pretraining when no pretrained GPT-2 is at hand.
  * `load_ood_dataset`: the paper's six benchmarks from files the user has prepared (nothing is
    downloaded).

and the tokenization of the official code: `train_bpe_tokenizer` (GPT-2's byte-level BPE with the
"<|endoftext|>" token) and `encode_batch` (fixed-length ids and attention masks, padded with
the end-of-text id). For epochs over the encoded arrays use `diffjax.data.ArrayDataset`.

Preparing the paper datasets
----------------------------
`load_ood_dataset(name, data_dir)` reads the `OOD_dataset/` folder of the official code: text
files with one example per line (blank lines are skipped), `data_dir` being that folder (the
files may also sit directly in `data_dir`):

    OOD_dataset/
      CLINIC150/clinc150_train.txt  clinc150_test.txt  clinc150_oos_test.txt
      SST/sst_train.txt  sst_test.txt  sst_oos_test_{seed}.txt       (or sst_oos_test.txt)
      ROSTD/ROSTD_train.txt  ROSTD_test.txt  ROSTD_ood.txt
      20ng/{train,test,ood}/{group}.txt     group in comp, rec, sci, misc, pol, rel
      ag/{train,test,ood}/{group}.txt       group in world, sports, business, sci
      HC3/hc3_train.txt  hc3_test.txt  hc3_ood.txt

(the official code spells the CLINC150 folder "CLINIC150"; "CLINC150" is accepted too). The roles:
CLINC150 (Larson et al. 2019): ID = the 150 intents, OOD = the out-of-scope ("oos") test queries;
SST: ID = SST sentences, OOD = sentences of other corpora (one file per training seed in the
official code: 171, 354, 550, 667, 985); ROSTD (Gangal et al. 2020): ID = English task-oriented
dialogue, OOD = the ROSTD out-of-domain file; 20 Newsgroups: one of the six coarse groups is ID,
the other five OOD; AG News: one of the four classes is ID, the other three OOD; HC3 (Guo et al.
2023): ID = ChatGPT answers, OOD = human answers.

Alternatives, used when the text files are missing:

    clinc150  clinc_oos/plus/ (or clinc_oos/, plus/, data_dir itself) with Hugging Face files
              train.jsonl / test.jsonl or train[-*].parquet / test[-*].parquet with fields `text`
              and `intent` (oos = 42 in the `clinc_oos` label list); or the oos-eval file
              data_full.json / data_oos_plus.json (lists "train", "test", "oos_test" of
              [text, intent] pairs)
    20ng      scikit-learn's cache 20news-bydate*.pkz (written by `fetch_20newsgroups`) in
              data_dir; headers, quoted lines and signatures are stripped
    agnews    ag_news/ (or data_dir) with Hugging Face train/test .jsonl or .parquet files
              (fields `text`, `label`: 0 World, 1 Sports, 2 Business, 3 Sci/Tech); or a prepared
              TensorFlow Datasets `ag_news_subset` under data_dir (read with `tfds.data_source`;
              text = title + " " + description)
    hc3       HC3/all.jsonl (or data_dir/all.jsonl) of Hello-SimpleAI/HC3, fields `question`,
              `human_answers`, `chatgpt_answers`: split as the official `data_generator.py`
              (newlines removed, blank answers dropped, `random.seed(42)`, shuffle ChatGPT
              answers then human answers, first half of the ChatGPT answers = train, second
              half = test_id, all human answers = test_ood)

The grouped labelled sources give ID = the training examples of `id_group`, test_id = its test
examples and test_ood = the test examples of the other groups (`ood_sources` names their group).
"""
import dataclasses
import glob
import importlib.util
import io
import json
import os
import pickle
import random
import re
import zlib

import numpy as np

EOS_TOKEN = "<|endoftext|>"
MIN_WORDS = 4
MAX_WORDS = 80  # longer "sentences" are lists, tables or run-ons (newsgroup calendars, FAQs)
OFFLINE_CHOICES = ("news", "dialogue", "newsgroups")
# chatterbot topics held out of the "dialogue" ID set (knowledge questions rather than chat).
HELD_OUT_TOPICS = ("history", "literature", "science", "trivia")
DATASETS = ("clinc150", "sst2", "rostd", "20ng", "agnews", "hc3")
GROUPS = {
    "20ng": ("comp", "rec", "sci", "misc", "pol", "rel"),
    "agnews": ("world", "sports", "business", "sci"),
}
# The six coarse 20 Newsgroups groups of Ruff et al. 2019 (CVDD), used by DATE and MLKD.
NEWSGROUPS = {
    "comp": ("comp.graphics", "comp.os.ms-windows.misc", "comp.sys.ibm.pc.hardware",
             "comp.sys.mac.hardware", "comp.windows.x"),
    "rec": ("rec.autos", "rec.motorcycles", "rec.sport.baseball", "rec.sport.hockey"),
    "sci": ("sci.crypt", "sci.electronics", "sci.med", "sci.space"),
    "misc": ("misc.forsale",),
    "pol": ("talk.politics.misc", "talk.politics.guns", "talk.politics.mideast"),
    "rel": ("talk.religion.misc", "alt.atheism", "soc.religion.christian"),
}
AG_LABELS = ("world", "sports", "business", "sci")  # label ids 0..3 of ag_news / ag_news_subset
CLINC_OOS_INTENT = 42
HC3_SEED = 42


@dataclasses.dataclass(frozen=True)
class OODTextSplits:
  """ID training text, ID and OOD test text (one example per string).

  Fields: train, test_id, test_ood (lists of str); ood_sources (list of str aligned with
  test_ood: which corpus or group each OOD example came from); pretrain (text disjoint from the
  test sets for pretraining a teacher LM, possibly empty); name.
  """
  name: str
  train: list
  test_id: list
  test_ood: list
  ood_sources: list = dataclasses.field(default_factory=list)
  pretrain: list = dataclasses.field(default_factory=list)

  def sizes(self):
    """{"train", "test_id", "test_ood", "pretrain": counts, "ood/<source>": count per source}."""
    out = {k: len(getattr(self, k)) for k in ("train", "test_id", "test_ood", "pretrain")}
    for s in self.ood_sources:
      out["ood/" + s] = out.get("ood/" + s, 0) + 1
    return out


# --- text utilities ------------------------------------------------------------------------------

_ABBREVIATIONS = frozenset(
    "mr mrs ms dr st mt jr sr prof gen col lt sgt capt gov sen rep inc co corp ltd vs no jan feb "
    "mar apr jun jul aug sep sept oct nov dec".split())
_INITIALS = re.compile(r"(?:[A-Za-z]\.)*[A-Z]|(?:[A-Za-z]\.)+[A-Za-z]")  # W, U.S, p.m
_SENTENCE_END = re.compile(r"[.!?]+[\"')\]]*\s+(?=[\"'(\[]?[A-Z])")


def split_sentences(text, min_words=MIN_WORDS, max_words=MAX_WORDS):
  """Sentences of `text`: cut after [.!?] (and closing quotes) followed by a space and a capital.

  No cut after common abbreviations (Mr., Dr., Inc., ...), initials or dotted acronyms (George W.
  Bush, U.S. Senate); whitespace is collapsed and sentences with fewer than `min_words` or more than
  `max_words` words are dropped.
  """
  text = " ".join(text.split())
  out, start = [], 0
  for m in _SENTENCE_END.finditer(text):
    words = text[start:m.start() + 1].split()
    last = words[-1].rstrip(".!?").lstrip("\"'(") if words else ""
    if text[m.start()] == "." and (last.lower() in _ABBREVIATIONS or _INITIALS.fullmatch(last)):
      continue
    out.append(text[start:m.end()].strip())
    start = m.end()
  out.append(text[start:].strip())
  return [s for s in out if min_words <= len(s.split()) <= max_words]


def _read_text(path):
  with open(path, "rb") as f:
    raw = f.read()
  try:
    return raw.decode("utf-8")
  except UnicodeDecodeError:
    return raw.decode("latin-1")


def read_lines(path):
  """Non-blank lines of a text file, stripped (utf-8, else latin-1)."""
  return [line.strip() for line in _read_text(path).splitlines() if line.strip()]


class _Bunch(dict):
  """Stand-in for scikit-learn's Bunch when unpickling (no scikit-learn import needed)."""

  def __getattr__(self, key):
    try:
      return self[key]
    except KeyError as e:
      raise AttributeError(key) from e


class _BunchUnpickler(pickle.Unpickler):
  """Maps any `sklearn...Bunch` (sklearn.datasets.base in old pickles) to `_Bunch`."""

  def find_class(self, module, name):
    if module.startswith("sklearn") and name == "Bunch":
      return _Bunch
    return super().find_class(module, name)


def load_bunch_pickle(path):
  """A zlib-compressed pickle of scikit-learn Bunches (gensim's mini_newsgroup, sklearn's
  20news-bydate*.pkz), decoded with encoding="latin1" as written by Python 2."""
  with open(path, "rb") as f:
    raw = zlib.decompress(f.read())
  return _BunchUnpickler(io.BytesIO(raw), encoding="latin1").load()


_QUOTE_LINE = re.compile(r"(writes in|writes:|wrote:|says:|said:|^In article|^Quoted from|^\||^\s*[A-Za-z]{0,3}>)")
_HEADER_LINE = re.compile(r"^\s*(From|To|Cc|Subject|Date|Message-ID|Organization|Newsgroups|Path|Lines|"
                          r"References|Sender|Reply-To|NNTP-Posting-Host|Distribution|Keywords|Summary|"
                          r"Article-I\.D\.|X-[\w-]+):", re.IGNORECASE)


def clean_newsgroup_post(post):
  """The body of a Usenet post on one line: headers (up to the first blank line), quoted lines
  (">", "AB>", "|", "... writes:"), header lines of forwarded posts ("From:", "Message-ID:", ...)
  and the signature (from the last "--" line) removed."""
  body = post.partition("\n\n")[2]
  lines = body.split("\n")
  for i in range(len(lines) - 1, -1, -1):
    if re.fullmatch(r"\s*-{2,}\s*", lines[i]):
      lines = lines[:i]
      break
  kept = [line for line in lines if not (_QUOTE_LINE.search(line) or _HEADER_LINE.match(line))]
  return " ".join(" ".join(kept).split())


# --- offline benchmark from package corpora ------------------------------------------------------

def _package_dir(package, *parts, pip_name=None):
  """A data folder inside an installed package, found without importing the package."""
  spec = importlib.util.find_spec(package)
  if spec is None or not spec.submodule_search_locations:
    raise ImportError(f"the offline text benchmark needs the package {package!r}: "
                      f"pip install {pip_name or package}")
  path = os.path.join(spec.submodule_search_locations[0], *parts)
  if not os.path.isdir(path):
    raise FileNotFoundError(f"expected the data folder {path} of package {package!r}; "
                            f"reinstall it: pip install --force-reinstall {pip_name or package}")
  return path


def gensim_data_dir():
  """gensim's test corpora folder (gensim/test/test_data)."""
  return _package_dir("gensim", "test", "test_data")


def chatterbot_data_dir():
  """chatterbot-corpus's English YAML folder (chatterbot_corpus/data/english)."""
  return _package_dir("chatterbot_corpus", "data", "english", pip_name="chatterbot-corpus")


def load_lee_news(filename="lee_background.cor"):
  """Lee et al.'s Australian news articles (gensim: lee_background.cor has 300, lee.cor 50), one
  list of sentences per article."""
  docs = [split_sentences(line) for line in read_lines(os.path.join(gensim_data_dir(), filename))]
  return [d for d in docs if d]


def load_movie_reviews():
  """Pang & Lee's movie review sentences (gensim: pang_lee_polarity.cor, 200 lowercased
  tokenized sentences), "__label__pos/neg" prefixes stripped; one document per sentence."""
  lines = read_lines(os.path.join(gensim_data_dir(), "pang_lee_polarity.cor"))
  texts = [re.sub(r"^__label__\S+\s*", "", line).strip() for line in lines]
  return [[t] for t in texts if len(t.split()) >= MIN_WORDS]


def load_mini_newsgroups():
  """gensim's mini 20 Newsgroups sample (200 posts of alt.atheism and sci.space): one list of
  sentences per post (bodies cleaned by `clean_newsgroup_post`), and the posts' group names."""
  bunch = load_bunch_pickle(os.path.join(gensim_data_dir(), "mini_newsgroup"))
  docs, groups = [], []
  for post, target in zip(bunch["data"], bunch["target"]):
    sents = split_sentences(clean_newsgroup_post(post))
    if sents:
      docs.append(sents)
      groups.append(bunch["target_names"][int(target)])
  return docs, groups


def load_wikipedia_paragraphs():
  """Wikipedia paragraphs shipped with gensim (para2para_text1/2.txt), one document each."""
  docs = []
  for name in ("para2para_text1.txt", "para2para_text2.txt"):
    docs += [split_sentences(p) for p in read_lines(os.path.join(gensim_data_dir(), name))]
  return [d for d in docs if d]


def load_chatterbot(data_dir=None):
  """chatterbot-corpus English conversations: {topic (file stem): list of conversations}, each
  conversation the list of its utterances (strings; non-string entries skipped)."""
  import yaml
  loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
  data_dir = chatterbot_data_dir() if data_dir is None else data_dir
  out = {}
  for path in sorted(glob.glob(os.path.join(data_dir, "*.yml"))):
    with open(path, encoding="utf-8") as f:
      content = yaml.load(f, Loader=loader) or {}
    convs = []
    for conv in content.get("conversations") or []:
      utts = [" ".join(u.split()) for u in conv if isinstance(u, str) and u.strip()]
      if utts:
        convs.append(utts)
    out[os.path.splitext(os.path.basename(path))[0]] = convs
  return out


def _chat_docs(chat, topics):
  """Conversations of `topics` as documents of utterances with at least MIN_WORDS words."""
  docs = [[u for u in conv if len(u.split()) >= MIN_WORDS] for t in topics for conv in chat[t]]
  return [d for d in docs if d]


def _offline_corpora(in_distribution):
  """(id_docs, {ood source: docs}, {extra pretraining corpus: docs}) for one choice."""
  chat = load_chatterbot()
  news, movies = load_lee_news(), load_movie_reviews()
  newsgroups = load_mini_newsgroups()[0]
  extra = {"news_lee_cor": load_lee_news("lee.cor"), "wikipedia": load_wikipedia_paragraphs()}
  if in_distribution == "news":
    return news, {"movie_reviews": movies, "newsgroups": newsgroups,
                  "chatterbot": _chat_docs(chat, sorted(chat))}, extra
  if in_distribution == "dialogue":
    id_topics = sorted(t for t in chat if t not in HELD_OUT_TOPICS)
    held_out = sorted(t for t in chat if t in HELD_OUT_TOPICS)
    extra["newsgroups"] = newsgroups
    return _chat_docs(chat, id_topics), {"chatterbot_held_out": _chat_docs(chat, held_out),
                                         "movie_reviews": movies, "news": news}, extra
  return newsgroups, {"news": news, "movie_reviews": movies,
                      "chatterbot": _chat_docs(chat, sorted(chat))}, extra


def _merge_documents(doc_lists):
  """Documents that share a sentence merged into one, each sentence kept once.

  Over all lists together: the documents connected through repeated sentences (Lee's corpus
  has re-issued versions of some articles, chatterbot repeats questions across conversations)
  become one document -- its sentences in first-seen order -- placed in the list of its first
  member. Splitting by these documents keeps every near-duplicate on one side of a split.
  """
  docs = [(k, doc) for k, lst in enumerate(doc_lists) for doc in lst]
  parent = list(range(len(docs)))

  def find(i):
    while parent[i] != i:
      parent[i] = parent[parent[i]]
      i = parent[i]
    return i

  first = {}
  for i, (_, doc) in enumerate(docs):
    for sent in doc:
      j = first.setdefault(sent, i)
      ri, rj = find(i), find(j)
      if ri != rj:
        parent[max(ri, rj)] = min(ri, rj)  # the root is the component's first document
  merged, seen = {}, set()
  for i, (_, doc) in enumerate(docs):
    out = merged.setdefault(find(i), [])
    for sent in doc:
      if sent not in seen:
        seen.add(sent)
        out.append(sent)
  result = [[] for _ in doc_lists]
  for root, sents in merged.items():  # roots in increasing order: the original document order
    if sents:
      result[docs[root][0]].append(sents)
  return result


def _quotas(total, available):
  """Splits `total` as evenly as possible over sources with the given capacities (water filling:
  a source with too little gives all it has, the others share the rest within one)."""
  quotas = [0] * len(available)
  remaining = total
  order = sorted(range(len(available)), key=lambda i: available[i])
  for pos, i in enumerate(order):
    quotas[i] = min(available[i], -(-remaining // (len(order) - pos)))
    remaining -= quotas[i]
  return quotas


def offline_benchmark(in_distribution="news", *, seed=0, test_fraction=0.25, max_ood_per_source=None):
  """A real-text ID/OOD benchmark from corpora that registry packages ship (no download).

  Corpora: gensim's test data -- Lee et al.'s news (lee_background.cor: 300 Australian news
  articles; lee.cor: 50 more), Pang & Lee's movie review sentences (pang_lee_polarity.cor), a 200
  post sample of 20 Newsgroups (mini_newsgroup: alt.atheism, sci.space), two files of Wikipedia
  paragraphs (para2para_text1/2.txt) -- and chatterbot-corpus's English conversations (21
  topics). Articles and posts are split into sentences (`split_sentences`); every text has 4 to
  80 words and appears once over all splits, and documents sharing a sentence (re-issued
  articles, repeated chatterbot questions) are merged into one (`_merge_documents`). The gensim
  files are located with `importlib.util.find_spec`, without importing gensim.

  in_distribution:
    "news": ID = Lee background news sentences; OOD = movie reviews, newsgroup sentences,
      chatterbot utterances.
    "dialogue": ID = chatterbot utterances of all topics but `HELD_OUT_TOPICS`; OOD = the
      held-out topics' utterances, movie reviews, Lee background news sentences.
    "newsgroups": ID = mini 20 Newsgroups sentences; OOD = Lee background news, movie reviews,
      chatterbot utterances.

  ID documents (article, post or conversation) are shuffled with `seed` and whole documents go
  to test_id until it holds `test_fraction` of the ID sentences, so no test document has a
  sentence in train. test_ood has about len(test_id) examples drawn evenly from the OOD sources
  (a source with too few gives all it has and the rest is spread over the others; at most
  `max_ood_per_source` each), taken by whole shuffled documents (the last one possibly cut);
  `ood_sources` names each example's source and test_ood is shuffled.

  pretrain stands in for GPT-2's web pretraining: lee.cor news and the Wikipedia paragraphs
  (never tested), every non-ID corpus not tested (for "dialogue" all of the newsgroups) and the
  OOD-source documents that test_ood did not touch. It never contains ID text or a sentence of a
  document used in a test set. (head500.noblanks.cor is left out: it is stemmed, not prose.)

  Returns an `OODTextSplits` named "offline:<in_distribution>"; the same `seed` gives the same
  splits.
  """
  if in_distribution not in OFFLINE_CHOICES:
    raise ValueError(f"unknown in_distribution {in_distribution!r}; valid: {list(OFFLINE_CHOICES)}")
  if not 0.0 < test_fraction < 1.0:
    raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
  if max_ood_per_source is not None and (isinstance(max_ood_per_source, bool) or int(max_ood_per_source) != max_ood_per_source or max_ood_per_source < 1):
    raise ValueError(f"max_ood_per_source must be None or a positive integer, got {max_ood_per_source!r}")
  id_docs, ood, extra = _offline_corpora(in_distribution)
  ood_names, extra_names = list(ood), list(extra)
  deduped = _merge_documents([id_docs] + [ood[n] for n in ood_names] + [extra[n] for n in extra_names])
  id_docs = deduped[0]
  ood = dict(zip(ood_names, deduped[1:1 + len(ood_names)]))
  extra = dict(zip(extra_names, deduped[1 + len(ood_names):]))

  rng = np.random.default_rng(seed)
  n_test = int(round(test_fraction * sum(map(len, id_docs))))
  train, test_id = [], []
  for i in rng.permutation(len(id_docs)):
    (test_id if len(test_id) < n_test else train).extend(id_docs[i])

  cap = [sum(map(len, ood[n])) for n in ood_names]
  if max_ood_per_source is not None:
    cap = [min(c, int(max_ood_per_source)) for c in cap]
  quotas = _quotas(len(test_id), cap)
  test_ood, sources, pretrain = [], [], []
  for name, quota in zip(ood_names, quotas):
    docs = ood[name]
    taken = 0
    for i in rng.permutation(len(docs)):
      if taken < quota:
        part = docs[i][:quota - taken]
        test_ood.extend(part)
        sources.extend([name] * len(part))
        taken += len(part)
      else:
        pretrain.extend(docs[i])
  for name in extra_names:
    pretrain.extend(s for doc in extra[name] for s in doc)
  order = rng.permutation(len(test_ood))
  return OODTextSplits(name=f"offline:{in_distribution}", train=train, test_id=test_id,
                       test_ood=[test_ood[i] for i in order], ood_sources=[sources[i] for i in order],
                       pretrain=pretrain)


# --- the paper's datasets from local files --------------------------------------------------------

_TXT_LAYOUT = {
    "clinc150": (("CLINIC150", "CLINC150"), ("clinc150_train.txt", "clinc150_test.txt", "clinc150_oos_test.txt")),
    "rostd": (("ROSTD",), ("ROSTD_train.txt", "ROSTD_test.txt", "ROSTD_ood.txt")),
    "hc3": (("HC3",), ("hc3_train.txt", "hc3_test.txt", "hc3_ood.txt")),
    "20ng": (("20ng",), None),
    "agnews": (("ag",), None),
    "sst2": (("SST",), None),
}
_HINTS = {
    "clinc150": "export the clinc_oos 'plus' train/test queries (oos test queries to the oos file), one per line",
    "sst2": "use the OOD_dataset/SST files of the MLKD release (SST sentences; OOD sentences per seed)",
    "rostd": "export ROSTD's English train/test utterances and its OOD file, one per line",
    "20ng": "write one post per line per coarse group (or put scikit-learn's 20news-bydate*.pkz cache in data_dir)",
    "agnews": "write one article per line per class (or provide Hugging Face ag_news jsonl/parquet or tfds ag_news_subset)",
    "hc3": "run the official scripts/HC3/data_generator.py (or put Hello-SimpleAI/HC3 all.jsonl in data_dir)",
}


def _missing(name, expected):
  return FileNotFoundError(f"{name} data not found: expected {expected}. How to prepare: {_HINTS[name]} "
                           f"(see the 'Preparing the paper datasets' section of diffjax.data.text).")


def _candidate_dirs(data_dir, subdirs):
  return [os.path.join(data_dir, s) for s in subdirs] + [data_dir]


def _find_txt(data_dir, subdirs, files):
  """The folder (a subdir, else data_dir) holding all `files`, or None."""
  for d in _candidate_dirs(data_dir, subdirs):
    if all(os.path.isfile(os.path.join(d, f)) for f in files):
      return d
  return None


def read_records(path):
  """Rows (dicts) of a .jsonl, .json (a list of rows) or .parquet file."""
  if path.endswith(".parquet"):
    try:
      import pyarrow.parquet as pq
    except ImportError as e:
      raise ImportError(f"reading {path} needs pyarrow: pip install pyarrow (or export the data as .jsonl)") from e
    return pq.read_table(path).to_pylist()
  with open(path, encoding="utf-8") as f:
    if path.endswith(".jsonl"):
      return [json.loads(line) for line in f if line.strip()]
    return json.load(f)


def _split_files(folder, split):
  """Hugging Face style files of one split in `folder`: {split}.jsonl, or {split}.parquet and
  {split}-*.parquet shards, or {split}/*.parquet."""
  jsonl = os.path.join(folder, f"{split}.jsonl")
  if os.path.isfile(jsonl):
    return [jsonl]
  shards = sorted(glob.glob(os.path.join(folder, f"{split}.parquet")) + glob.glob(os.path.join(folder, f"{split}-*.parquet"))
                  + glob.glob(os.path.join(folder, split, "*.parquet")))
  return shards


def _hf_splits(data_dir, subdirs, splits=("train", "test")):
  """{split: rows} from the first candidate folder that has files for every split, else None."""
  for d in _candidate_dirs(data_dir, subdirs):
    files = {s: _split_files(d, s) for s in splits}
    if all(files.values()):
      return {s: [r for p in files[s] for r in read_records(p)] for s in splits}
  return None


def _load_clinc150(data_dir):
  d = _find_txt(data_dir, *_TXT_LAYOUT["clinc150"])
  if d is not None:
    train, test, ood = (read_lines(os.path.join(d, f)) for f in _TXT_LAYOUT["clinc150"][1])
    return train, test, ood, ["oos"] * len(ood)
  rows = _hf_splits(data_dir, (os.path.join("clinc_oos", "plus"), "clinc_oos", "plus"))
  if rows is not None:
    def is_oos(r):
      return r["intent"] in (CLINC_OOS_INTENT, "oos")
    train = [r["text"].strip() for r in rows["train"] if not is_oos(r)]
    test = [r["text"].strip() for r in rows["test"] if not is_oos(r)]
    ood = [r["text"].strip() for r in rows["test"] if is_oos(r)]
    return train, test, ood, ["oos"] * len(ood)
  for name in ("data_full.json", "data_oos_plus.json"):
    for d in _candidate_dirs(data_dir, ("clinc_oos", "CLINIC150", "CLINC150")):
      path = os.path.join(d, name)
      if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
          j = json.load(f)
        ood = [t.strip() for t, _ in j["oos_test"]]
        return ([t.strip() for t, _ in j["train"]], [t.strip() for t, _ in j["test"]], ood, ["oos"] * len(ood))
  raise _missing("clinc150", os.path.join(data_dir, "CLINIC150", "clinc150_{train,test,oos_test}.txt"))


def _load_sst2(data_dir, seed):
  for d in _candidate_dirs(data_dir, ("SST",)):
    if not all(os.path.isfile(os.path.join(d, f)) for f in ("sst_train.txt", "sst_test.txt")):
      continue
    for f in (f"sst_oos_test_{seed}.txt", "sst_oos_test.txt"):
      if os.path.isfile(os.path.join(d, f)):
        ood = read_lines(os.path.join(d, f))
        return read_lines(os.path.join(d, "sst_train.txt")), read_lines(os.path.join(d, "sst_test.txt")), ood, ["ood"] * len(ood)
    found = sorted(os.path.basename(p) for p in glob.glob(os.path.join(d, "sst_oos_test_*.txt")))
    raise FileNotFoundError(f"sst2 OOD file not found: expected {os.path.join(d, f'sst_oos_test_{seed}.txt')} "
                            f"(or sst_oos_test.txt); OOD files there: {found} -- pass seed=<the seed in the name>")
  raise _missing("sst2", os.path.join(data_dir, "SST", "sst_{train,test}.txt and sst_oos_test_{seed}.txt"))


def _load_rostd(data_dir):
  d = _find_txt(data_dir, *_TXT_LAYOUT["rostd"])
  if d is None:
    raise _missing("rostd", os.path.join(data_dir, "ROSTD", "ROSTD_{train,test,ood}.txt"))
  train, test, ood = (read_lines(os.path.join(d, f)) for f in _TXT_LAYOUT["rostd"][1])
  return train, test, ood, ["ood"] * len(ood)


def _grouped_txt(data_dir, subdir, group):
  """{train,test,ood}/{group}.txt under data_dir/subdir (or data_dir), or None."""
  files = [os.path.join(s, f"{group}.txt") for s in ("train", "test", "ood")]
  d = _find_txt(data_dir, (subdir,), files)
  if d is None:
    return None
  train, test, ood = (read_lines(os.path.join(d, f)) for f in files)
  return train, test, ood, ["ood"] * len(ood)


def _by_group(train_rows, test_rows, id_group):
  """ID/OOD lists from (text, group) pairs: ID = id_group, OOD = the other groups' test rows."""
  train = [t for t, g in train_rows if g == id_group]
  test = [t for t, g in test_rows if g == id_group]
  ood = [(t, g) for t, g in test_rows if g != id_group]
  return train, test, [t for t, _ in ood], [g for _, g in ood]


def _load_20ng(data_dir, id_group):
  out = _grouped_txt(data_dir, "20ng", id_group)
  if out is not None:
    return out
  caches = sorted(glob.glob(os.path.join(data_dir, "20news-bydate*.pkz")))
  if caches:
    cache = load_bunch_pickle(caches[0])
    coarse = {fine: g for g, fines in NEWSGROUPS.items() for fine in fines}

    def rows(bunch):
      pairs = []
      for post, target in zip(bunch["data"], bunch["target"]):
        text = clean_newsgroup_post(post)
        group = coarse.get(bunch["target_names"][int(target)])
        if text and group is not None:
          pairs.append((text, group))
      return pairs

    return _by_group(rows(cache["train"]), rows(cache["test"]), id_group)
  raise _missing("20ng", os.path.join(data_dir, "20ng", "{train,test,ood}", f"{id_group}.txt"))


def _load_agnews(data_dir, id_group):
  out = _grouped_txt(data_dir, "ag", id_group)
  if out is not None:
    return out
  rows = _hf_splits(data_dir, ("ag_news",))
  if rows is not None:
    def pairs(split):
      return [(r["text"].strip(), AG_LABELS[int(r["label"])]) for r in rows[split]]
    return _by_group(pairs("train"), pairs("test"), id_group)
  if os.path.isdir(os.path.join(data_dir, "ag_news_subset")):
    import tensorflow_datasets as tfds

    def pairs(split):
      out = []
      for ex in tfds.data_source("ag_news_subset", split=split, data_dir=data_dir):
        title, desc = (ex[k].decode("utf-8") if isinstance(ex[k], bytes) else str(ex[k]) for k in ("title", "description"))
        out.append((" ".join(f"{title} {desc}".split()), AG_LABELS[int(ex["label"])]))
      return out

    return _by_group(pairs("train"), pairs("test"), id_group)
  raise _missing("agnews", os.path.join(data_dir, "ag", "{train,test,ood}", f"{id_group}.txt"))


def hc3_split(rows, seed=HC3_SEED):
  """(train, test_id, test_ood) from HC3 rows exactly as the official scripts/HC3/data_generator.py.

  Over the rows in order, answers have "\\r" and "\\n" removed (not replaced) and blank ones
  dropped; ChatGPT answers are ID, human answers OOD. `random.seed(42)` then shuffles the ID list
  and, continuing the same stream, the OOD list; the first half (floor) of the shuffled ID list
  is train, the rest test_id, and all human answers are test_ood.
  """
  iid, ood = [], []
  for row in rows:
    for key, out in (("chatgpt_answers", iid), ("human_answers", ood)):
      answers = [a.replace("\r", "").replace("\n", "") for a in row[key]]
      out.extend(a for a in answers if a.strip())
  rng = random.Random(seed)
  rng.shuffle(iid)
  rng.shuffle(ood)
  half = len(iid) // 2
  return iid[:half], iid[half:], ood


def _load_hc3(data_dir):
  d = _find_txt(data_dir, *_TXT_LAYOUT["hc3"])
  if d is not None:
    train, test, ood = (read_lines(os.path.join(d, f)) for f in _TXT_LAYOUT["hc3"][1])
    return train, test, ood, ["human"] * len(ood)
  for d in _candidate_dirs(data_dir, ("HC3",)):
    path = os.path.join(d, "all.jsonl")
    if os.path.isfile(path):
      train, test, ood = hc3_split(read_records(path))
      return train, test, ood, ["human"] * len(ood)
  raise _missing("hc3", os.path.join(data_dir, "HC3", "hc3_{train,test,ood}.txt") + " or " + os.path.join(data_dir, "HC3", "all.jsonl"))


def load_ood_dataset(name, data_dir, *, id_group=None, seed=0):
  """One of the MLKD benchmarks from local files (see "Preparing the paper datasets" above).

  Args:
    name: "clinc150", "sst2", "rostd", "20ng", "agnews" or "hc3".
    data_dir: the official code's OOD_dataset folder (or a folder of the alternative files).
    id_group: the in-distribution group, required for "20ng" (comp, rec, sci, misc, pol, rel)
      and "agnews" (world, sports, business, sci); must be None otherwise.
    seed: picks SST's OOD file sst_oos_test_{seed}.txt (the official code has one per training
      seed: 171, 354, 550, 667, 985); other datasets have fixed splits (HC3 from raw rows always
      uses the official seed 42).

  Returns:
    `OODTextSplits` named name (or "name:id_group") with an empty `pretrain`.
  """
  if name not in DATASETS:
    raise ValueError(f"unknown OOD dataset name {name!r}; valid: {list(DATASETS)}")
  if name in GROUPS:
    if id_group not in GROUPS[name]:
      raise ValueError(f"id_group={id_group!r} is not a {name} group; valid: {list(GROUPS[name])}")
  elif id_group is not None:
    raise ValueError(f"id_group must be None for {name!r} (only {sorted(GROUPS)} have groups), got {id_group!r}")
  data_dir = os.fspath(data_dir)
  if name == "clinc150":
    train, test, ood, sources = _load_clinc150(data_dir)
  elif name == "sst2":
    train, test, ood, sources = _load_sst2(data_dir, seed)
  elif name == "rostd":
    train, test, ood, sources = _load_rostd(data_dir)
  elif name == "20ng":
    train, test, ood, sources = _load_20ng(data_dir, id_group)
  elif name == "agnews":
    train, test, ood, sources = _load_agnews(data_dir, id_group)
  else:
    train, test, ood, sources = _load_hc3(data_dir)
  full_name = name if id_group is None else f"{name}:{id_group}"
  return OODTextSplits(name=full_name, train=list(train), test_id=list(test), test_ood=list(ood),
                       ood_sources=list(sources), pretrain=[])


# --- tokenization -------------------------------------------------------------------------------

def train_bpe_tokenizer(texts, *, vocab_size=2000, min_frequency=2):
  """A GPT-2 style byte-level BPE `tokenizers.Tokenizer` trained on `texts`.

  The construction of `tokenizers.ByteLevelBPETokenizer` (Radford et al. 2019, GPT-2: byte-level
  pre-tokenization without a prefix space, the 256 byte symbols as initial alphabet) with the
  single special token "<|endoftext|>" (id 0), GPT-2's end-of-text token, which `encode_batch`
  also uses for padding.
  """
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
  if isinstance(vocab_size, bool) or int(vocab_size) != vocab_size or vocab_size < 257:
    raise ValueError(f"vocab_size must be an integer >= 257 (256 bytes + {EOS_TOKEN}), got {vocab_size!r}")
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  tok.post_processor = processors.ByteLevel(trim_offsets=False)
  trainer = trainers.BpeTrainer(vocab_size=int(vocab_size), min_frequency=min_frequency, show_progress=False,
                                special_tokens=[EOS_TOKEN], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator(list(texts), trainer=trainer)
  return tok


def encode_batch(tokenizer, texts, *, max_length, eos_token=EOS_TOKEN, append_eos=True):
  """Fixed-length token ids for a causal LM: {"input_ids", "attention_mask"}, (N, max_length) int32.

  Each text's tokens (no special tokens added) are truncated to `max_length`; if there is room
  the end-of-text id follows (`append_eos`), then the row is right-padded with the same id.
  attention_mask is 1 on the text tokens and the appended end-of-text, 0 on padding.

  The official MLKD code tokenizes with the Hugging Face GPT-2 tokenizer, padding="max_length",
  truncation at max_length=128 and pad_token = eos_token; GPT-2 adds no special token, so its
  mask covers the text only, and its perplexity averages the next-token losses at positions
  whose *input* mask is 1 -- the targets are the text's tokens 2..n and the first pad, i.e.
  an end-of-text. With the appended end-of-text here, scoring the targets input_ids[:, 1:] where
  attention_mask[:, 1:] == 1 gives exactly those terms (also for truncated texts).

  Works with any `tokenizers.Tokenizer` whose vocabulary has `eos_token` (e.g. GPT-2's
  tokenizer.json); padding configured on the tokenizer is ignored.
  """
  eos_id = tokenizer.token_to_id(eos_token)
  if eos_id is None:
    raise ValueError(f"eos_token {eos_token!r} is not in the tokenizer's vocabulary")
  if isinstance(max_length, bool) or int(max_length) != max_length or max_length < 1:
    raise ValueError(f"max_length must be a positive integer, got {max_length!r}")
  texts = list(texts)
  ids = np.full((len(texts), max_length), eos_id, np.int32)
  mask = np.zeros((len(texts), max_length), np.int32)
  for row, enc in enumerate(tokenizer.encode_batch(texts, add_special_tokens=False) if texts else []):
    toks = [t for t, m in zip(enc.ids, enc.attention_mask) if m][:max_length]
    if append_eos and len(toks) < max_length:
      toks.append(eos_id)
    ids[row, :len(toks)] = toks
    mask[row, :len(toks)] = 1
  return {"input_ids": ids, "attention_mask": mask}
