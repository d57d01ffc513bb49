"""Text OOD data (diffjax.data.text): the offline benchmark on real package corpora, the paper
dataset loaders on small files in the documented layouts, and BPE tokenization / encoding."""
import codecs
import json
import os
import pickle
import random

import numpy as np
import pytest

from diffjax.data import ArrayDataset
from diffjax.data import text as T


# Sizes measured with seed 0 (test_fraction 0.25): lower bounds that the corpora must reach.
MIN_SIZES = {"news": (1900, 640), "dialogue": (720, 240), "newsgroups": (1200, 400)}


@pytest.fixture(scope="module")
def benchmarks():
  return {c: T.offline_benchmark(c, seed=0) for c in T.OFFLINE_CHOICES}


# --- package corpora --------------------------------------------------------------------------

def test_corpus_parsing_on_the_real_files():
  news = T.load_lee_news()
  assert len(news) >= 290 and sum(map(len, news)) >= 2500  # 300 articles
  assert len(T.load_lee_news("lee.cor")) == 50  # latin-1 file
  movies = T.load_movie_reviews()
  assert len(movies) >= 190 and all(not d[0].startswith("__label__") for d in movies)
  posts, groups = T.load_mini_newsgroups()
  assert len(posts) >= 190 and set(groups) == {"alt.atheism", "sci.space"}
  flat = [s for p in posts for s in p]
  assert len(flat) >= 1500
  assert not any(s.startswith(">") or s.startswith("From:") or "Message-ID:" in s for s in flat)
  chat = T.load_chatterbot()
  assert len(chat) >= 20 and {"ai", "trivia", "greetings"} <= set(chat)
  utts = {u for convs in chat.values() for c in convs for u in c}
  assert len(utts) >= 1800 and all(isinstance(u, str) and u for u in utts)
  for sents in news[:20] + posts[:20]:
    assert all(T.MIN_WORDS <= len(s.split()) <= T.MAX_WORDS for s in sents)


def test_sentence_splitter():
  text = ('Mr. Smith met Dr. Jones on Monday. George W. Bush said "It is over." Then he left the '
          'room quickly! Is it true? The U.S. Senate voted 51 to 49 on Monday. Too short. ')
  assert T.split_sentences(text) == ["Mr. Smith met Dr. Jones on Monday.", 'George W. Bush said "It is over."',
                                     "Then he left the room quickly!", "The U.S. Senate voted 51 to 49 on Monday."]
  post = ("From: a@b.c\nSubject: x\n\nIn article <1@x> b@y writes:\n> quoted line here is long\n"
          "The body has real words. It spans\ntwo lines here.\n-- \nSignature Name, Some Place\n")
  assert T.clean_newsgroup_post(post) == "The body has real words. It spans two lines here."


# --- offline benchmark ------------------------------------------------------------------------

def test_offline_sizes_and_disjointness(benchmarks):
  for choice, s in benchmarks.items():
    min_train, min_test = MIN_SIZES[choice]
    assert s.name == f"offline:{choice}"
    assert len(s.train) >= min_train and len(s.test_id) >= min_test, (choice, s.sizes())
    assert abs(len(s.test_ood) - len(s.test_id)) <= 1 and len(s.ood_sources) == len(s.test_ood)
    assert len(s.pretrain) >= 2000
    sets = {k: set(getattr(s, k)) for k in ("train", "test_id", "test_ood", "pretrain")}
    assert all(len(v) == len(getattr(s, k)) for k, v in sets.items())  # no duplicates
    keys = list(sets)
    for i, a in enumerate(keys):
      for b in keys[i + 1:]:
        assert not sets[a] & sets[b], (choice, a, b)
    counts = s.sizes()
    per_source = [v for k, v in counts.items() if k.startswith("ood/")]
    assert len(per_source) == 3 and min(per_source) >= 80


def test_offline_news_is_document_disjoint(benchmarks):
  s = benchmarks["news"]
  train, test = set(s.train), set(s.test_id)
  docs = T.load_lee_news()
  assert len(T._merge_documents([docs])[0]) < len(docs)  # re-issued articles are merged
  n_test_docs = 0
  for doc in docs:  # every original article lies wholly in train or wholly in test_id
    assert all(x in train for x in doc) or all(x in test for x in doc)
    n_test_docs += doc[0] in test
  assert 50 <= n_test_docs <= 100
  assert set(s.ood_sources) == {"movie_reviews", "newsgroups", "chatterbot"}
  # the OOD test set is balanced: movie reviews give all they have, the others split the rest
  c = s.sizes()
  assert abs(c["ood/newsgroups"] - c["ood/chatterbot"]) <= 1 and c["ood/movie_reviews"] <= c["ood/newsgroups"]


def test_offline_deterministic_and_seed_dependent(benchmarks):
  again = T.offline_benchmark("news", seed=0)
  assert again == benchmarks["news"]
  other = T.offline_benchmark("news", seed=1)
  assert set(other.test_id) != set(again.test_id) and set(other.test_ood) != set(again.test_ood)
  assert len(set(other.train) | set(other.test_id)) == len(set(again.train) | set(again.test_id))


def test_offline_options_and_errors():
  s = T.offline_benchmark("dialogue", seed=3, test_fraction=0.5, max_ood_per_source=20)
  assert abs(len(s.test_id) - len(s.train)) < 60 and len(s.test_ood) == 60
  assert set(s.ood_sources) == {"chatterbot_held_out", "movie_reviews", "news"}
  with pytest.raises(ValueError, match="in_distribution.*news"):
    T.offline_benchmark("movies")
  with pytest.raises(ValueError, match="test_fraction"):
    T.offline_benchmark("news", test_fraction=1.0)
  with pytest.raises(ValueError, match="max_ood_per_source"):
    T.offline_benchmark("news", max_ood_per_source=0)


def test_quotas_even_with_capacities():
  assert T._quotas(9, [100, 100, 100]) == [3, 3, 3]
  assert T._quotas(10, [100, 100, 100]) == [4, 3, 3]
  assert T._quotas(12, [2, 100, 100]) == [2, 5, 5]
  assert T._quotas(12, [2, 3, 4]) == [2, 3, 4]


# --- paper datasets from local files ----------------------------------------------------------

def _write(path, lines):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n\n")  # trailing blank lines are skipped


TXT = {
    "clinc150": ("CLINIC150", "clinc150_train.txt", "clinc150_test.txt", "clinc150_oos_test.txt"),
    "rostd": ("ROSTD", "ROSTD_train.txt", "ROSTD_test.txt", "ROSTD_ood.txt"),
    "hc3": ("HC3", "hc3_train.txt", "hc3_test.txt", "hc3_ood.txt"),
    "sst2": ("SST", "sst_train.txt", "sst_test.txt", "sst_oos_test_171.txt"),
}


@pytest.mark.parametrize("name", sorted(TXT))
def test_txt_layout(tmp_path, name):
  sub, *files = TXT[name]
  for f, prefix in zip(files, ("tr", "te", "ood")):
    _write(str(tmp_path / sub / f), [f"{prefix} {name} {i}" for i in range(3)])
  s = T.load_ood_dataset(name, tmp_path, seed=171)
  assert s.name == name and s.pretrain == []
  assert s.train == [f"tr {name} {i}" for i in range(3)] and s.test_id == [f"te {name} {i}" for i in range(3)]
  assert s.test_ood == [f"ood {name} {i}" for i in range(3)] and len(s.ood_sources) == 3
  # files directly in data_dir work too
  assert T.load_ood_dataset(name, tmp_path / sub, seed=171) == s


@pytest.mark.parametrize("name,sub,group", [("20ng", "20ng", "sci"), ("agnews", "ag", "world")])
def test_grouped_txt_layout(tmp_path, name, sub, group):
  for split in ("train", "test", "ood"):
    _write(str(tmp_path / sub / split / f"{group}.txt"), [f"{split} line {i}" for i in range(4)])
  s = T.load_ood_dataset(name, tmp_path, id_group=group)
  assert s.name == f"{name}:{group}" and s.train[0] == "train line 0" and len(s.test_ood) == 4
  other = "rec" if name == "20ng" else "sports"
  with pytest.raises(FileNotFoundError, match=os.path.join(sub, "{train,test,ood}", f"{other}.txt").replace("{", r"\{")):
    T.load_ood_dataset(name, tmp_path, id_group=other)


def test_argument_errors(tmp_path):
  with pytest.raises(ValueError, match="clinc150"):
    T.load_ood_dataset("imdb", tmp_path)
  with pytest.raises(ValueError, match="id_group.*comp"):
    T.load_ood_dataset("20ng", tmp_path)
  with pytest.raises(ValueError, match="id_group.*world"):
    T.load_ood_dataset("agnews", tmp_path, id_group="comp")
  with pytest.raises(ValueError, match="id_group must be None"):
    T.load_ood_dataset("clinc150", tmp_path, id_group="comp")


@pytest.mark.parametrize("name,expected", [
    ("clinc150", os.path.join("CLINIC150", "clinc150_")), ("rostd", os.path.join("ROSTD", "ROSTD_")),
    ("hc3", os.path.join("HC3", "all.jsonl")), ("sst2", os.path.join("SST", "sst_"))])
def test_missing_files_name_the_expected_path(tmp_path, name, expected):
  with pytest.raises(FileNotFoundError) as err:
    T.load_ood_dataset(name, tmp_path)
  msg = str(err.value)
  assert str(tmp_path / expected) in msg and "How to prepare" in msg


def test_sst_seed_picks_the_ood_file(tmp_path):
  for f in ("sst_train.txt", "sst_test.txt"):
    _write(str(tmp_path / "SST" / f), ["a b c"])
  _write(str(tmp_path / "SST" / "sst_oos_test_354.txt"), ["ood 354"])
  with pytest.raises(FileNotFoundError, match="sst_oos_test_354.txt"):  # lists what is there
    T.load_ood_dataset("sst2", tmp_path, seed=171)
  assert T.load_ood_dataset("sst2", tmp_path, seed=354).test_ood == ["ood 354"]


def _clinc_rows(split):
  rows = [{"text": f"{split} query {i} ", "intent": i % 5} for i in range(10)]
  return rows + [{"text": f"{split} oos {i}", "intent": T.CLINC_OOS_INTENT} for i in range(3)]


def test_clinc_from_hf_jsonl_and_oos_eval_json(tmp_path):
  for split in ("train", "validation", "test"):
    _write(str(tmp_path / "a" / "clinc_oos" / "plus" / f"{split}.jsonl"), [json.dumps(r) for r in _clinc_rows(split)])
  s = T.load_ood_dataset("clinc150", tmp_path / "a")
  assert s.train == [f"train query {i}" for i in range(10)] and s.test_id == [f"test query {i}" for i in range(10)]
  assert s.test_ood == [f"test oos {i}" for i in range(3)] and s.ood_sources == ["oos"] * 3
  full = {k: [[r["text"], "oos" if r["intent"] == 42 else "x"] for r in _clinc_rows(k.split("_")[-1])
              if (r["intent"] == 42) == k.startswith("oos")]
          for k in ("train", "test", "oos_train", "oos_test")}
  os.makedirs(tmp_path / "b")
  with open(tmp_path / "b" / "data_full.json", "w") as f:
    json.dump(full, f)
  assert T.load_ood_dataset("clinc150", tmp_path / "b") == s


def test_clinc_and_agnews_from_parquet(tmp_path):
  import pyarrow as pa
  import pyarrow.parquet as pq
  os.makedirs(tmp_path / "plus")
  for split in ("train", "test"):
    pq.write_table(pa.Table.from_pylist(_clinc_rows(split)), str(tmp_path / "plus" / f"{split}-00000-of-00001.parquet"))
  s = T.load_ood_dataset("clinc150", tmp_path)
  assert len(s.train) == 10 and s.test_ood == [f"test oos {i}" for i in range(3)]
  os.makedirs(tmp_path / "ag_news")
  for split in ("train", "test"):
    rows = [{"text": f"{split} {i}", "label": i % 4} for i in range(12)]
    pq.write_table(pa.Table.from_pylist(rows), str(tmp_path / "ag_news" / f"{split}.parquet"))
  s = T.load_ood_dataset("agnews", tmp_path, id_group="sports")
  assert s.train == ["train 1", "train 5", "train 9"] and s.test_id == ["test 1", "test 5", "test 9"]
  assert len(s.test_ood) == 9 and set(s.ood_sources) == {"world", "business", "sci"}


def test_agnews_from_tfds_mock(tmp_path):
  import tensorflow_datasets as tfds
  os.makedirs(tmp_path / "ag_news_subset")
  with tfds.testing.mock_data(num_examples=12):
    s = T.load_ood_dataset("agnews", tmp_path, id_group="business")
  assert len(s.test_id) + len(s.test_ood) == 12 and all(isinstance(t, str) for t in s.train + s.test_ood)
  assert "business" not in s.ood_sources


def test_20ng_from_sklearn_cache(tmp_path):
  def bunch(split):
    names = ["alt.atheism", "comp.graphics", "sci.space"]
    data = [f"From: x\nSubject: s\n\n{split} post about {n} one. Another line here.\n> quoted\n" for n in names * 2]
    return T._Bunch(data=data, target=np.array([0, 1, 2, 0, 1, 2]), target_names=names, filenames=[], DESCR="")
  cache = {"train": bunch("train"), "test": bunch("test")}
  with open(tmp_path / "20news-bydate_py3.pkz", "wb") as f:
    f.write(codecs.encode(pickle.dumps(cache), "zlib_codec"))
  s = T.load_ood_dataset("20ng", tmp_path, id_group="sci")
  assert s.train == ["train post about sci.space one. Another line here."] * 2
  assert len(s.test_id) == 2 and len(s.test_ood) == 4 and sorted(set(s.ood_sources)) == ["comp", "rel"]


def _hc3_rows():
  rng = np.random.default_rng(0)
  rows = []
  for q in range(7):
    rows.append({"question": f"q{q}",
                 "human_answers": [f"human {q}.{a}\nline" for a in range(int(rng.integers(1, 3)))],
                 "chatgpt_answers": [f"chatgpt {q}.{a}\r\nline" for a in range(int(rng.integers(0, 3)))] + ["  "]})
  return rows


def _official_hc3(rows):
  """Independent re-statement of scripts/HC3/data_generator.py (global random, seed 42)."""
  iid, ood = [], []
  for ii in rows:
    a = [i.replace("\r", "").replace("\n", "") for i in ii["chatgpt_answers"]]
    iid.extend([i for i in a if i.strip()])
    a = [i.replace("\r", "").replace("\n", "") for i in ii["human_answers"]]
    ood.extend([i for i in a if i.strip()])
  state = random.getstate()
  try:
    random.seed(42)
    random.shuffle(iid)
    random.shuffle(ood)
  finally:
    random.setstate(state)
  return iid[:len(iid) // 2], iid[len(iid) // 2:], ood


def test_hc3_jsonl_reproduces_the_official_split(tmp_path):
  rows = _hc3_rows()
  _write(str(tmp_path / "HC3" / "all.jsonl"), [json.dumps(r) for r in rows])
  s = T.load_ood_dataset("hc3", tmp_path)
  train, test, ood = _official_hc3(rows)
  assert (s.train, s.test_id, s.test_ood) == (train, test, ood)
  assert all("\n" not in t and "line" in t for t in s.train + s.test_ood)
  assert len(s.train) + len(s.test_id) == sum(len(r["chatgpt_answers"]) - 1 for r in rows)
  # the txt files the official script writes load to the same splits
  for f, lines in zip(("hc3_train.txt", "hc3_test.txt", "hc3_ood.txt"), (train, test, ood)):
    _write(str(tmp_path / "txt" / "HC3" / f), lines)
  assert T.load_ood_dataset("hc3", tmp_path / "txt") == s


# --- tokenization -----------------------------------------------------------------------------

TEXTS = ["the cat sat on the mat.", "the dog sat on the log!", "a cat and a dog met on a mat",
         "the quick brown fox jumps over the lazy dog"] * 5


def test_bpe_and_encode_batch():
  tok = T.train_bpe_tokenizer(TEXTS, vocab_size=300, min_frequency=2)
  eos = tok.token_to_id(T.EOS_TOKEN)
  assert eos == 0 and 257 <= tok.get_vocab_size() <= 300
  texts = ["the cat sat on the mat.", "dog", "the quick brown fox jumps over the lazy dog " * 3, ""]
  n_tokens = [len(tok.encode(t, add_special_tokens=False).ids) for t in texts]
  out = T.encode_batch(tok, texts, max_length=12)
  ids, mask = out["input_ids"], out["attention_mask"]
  assert ids.shape == mask.shape == (4, 12) and ids.dtype == mask.dtype == np.int32
  np.testing.assert_array_equal(mask.sum(1), [min(n + 1, 12) for n in n_tokens])
  for row, n in zip(range(4), n_tokens):
    m = int(mask[row].sum())
    assert np.all(mask[row, :m] == 1) and np.all(mask[row, m:] == 0)  # right padding
    assert np.all(ids[row, m:] == eos)
    if n < 12:
      assert ids[row, n] == eos and tok.decode(ids[row, :n].tolist()) == texts[row]
    else:  # truncated: no end-of-text
      assert ids[row, -1] != eos and ids[row].tolist() == tok.encode(texts[row]).ids[:12]
  no_eos = T.encode_batch(tok, texts, max_length=12, append_eos=False)
  np.testing.assert_array_equal(no_eos["attention_mask"].sum(1), np.minimum(n_tokens, 12))
  empty = T.encode_batch(tok, [], max_length=5)
  assert empty["input_ids"].shape == (0, 5)


def test_encode_batch_any_tokenizer_with_eos():
  from tokenizers import Tokenizer, models, pre_tokenizers
  tok = T.train_bpe_tokenizer(TEXTS, vocab_size=300)
  again = T.train_bpe_tokenizer(TEXTS, vocab_size=300)
  assert tok.to_str() == again.to_str()  # deterministic training
  loaded = Tokenizer.from_str(tok.to_str())  # e.g. a tokenizer.json from disk
  loaded.enable_padding(pad_id=0, pad_token=T.EOS_TOKEN, length=40)  # tokenizer padding is ignored
  a, b = T.encode_batch(tok, TEXTS[:4], max_length=16), T.encode_batch(loaded, TEXTS[:4], max_length=16)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])
  word = Tokenizer(models.WordLevel({"[UNK]": 0, "cat": 1}, unk_token="[UNK]"))
  word.pre_tokenizer = pre_tokenizers.Whitespace()
  with pytest.raises(ValueError, match="endoftext"):
    T.encode_batch(word, ["cat"], max_length=4)
  with pytest.raises(ValueError, match="max_length"):
    T.encode_batch(tok, ["cat"], max_length=0)
  with pytest.raises(ValueError, match="vocab_size"):
    T.train_bpe_tokenizer(TEXTS, vocab_size=100)


def test_encoded_arrays_feed_array_dataset():
  tok = T.train_bpe_tokenizer(TEXTS, vocab_size=300)
  arrays = T.encode_batch(tok, TEXTS, max_length=10)
  ds = ArrayDataset(arrays, batch_size=8, seed=0, process_index=0, process_count=1)
  batch = next(ds)
  assert batch["input_ids"].shape == (8, 10) and ds.example_shape == (10,)
