"""Preference data (diffjax.data.preference): RankDPO Algorithm 1, pairs/rankings, on-disk format,
trainer datasets with exact resume, and the Pick-a-Pic parquet loader."""
import importlib.util
import json
import os
import struct
import zlib

import jax
import numpy as np
import pytest

from diffjax import rewards as R
from diffjax.data import preference as pref
from diffjax.data import toy

HAVE_PIL = importlib.util.find_spec("PIL") is not None

# Hand-worked example: k = 4 images, n = 2 reward models, one tie per model.
#   model 0: [3, 1, 2, 2]    -> wins 3, 0, 1, 1   (images 2 and 3 tie: neither wins)
#   model 1: [.5, .9, .1, .9] -> wins 1, 2, 0, 2   (images 1 and 3 tie)
#   C = [4, 2, 1, 3], phi = C / (n (k - 1)) = C / 6
R_HAND = np.array([[3.0, 0.5], [1.0, 0.9], [2.0, 0.1], [2.0, 0.9]])


# --- Algorithm 1 --------------------------------------------------------------------------------

def test_win_counts_and_phi_hand_worked():
  np.testing.assert_array_equal(pref.win_counts(R_HAND), [4, 2, 1, 3])
  np.testing.assert_allclose(pref.aggregated_preference(R_HAND), np.array([4, 2, 1, 3]) / 6, rtol=1e-7)
  batched = np.stack([R_HAND, R_HAND[::-1]])
  np.testing.assert_array_equal(pref.win_counts(batched), [[4, 2, 1, 3], [3, 1, 2, 4]])


def test_phi_range_mean_half_without_ties_and_invariance():
  raw = np.random.default_rng(0).normal(size=(50, 5, 3))
  phi = pref.aggregated_preference(raw)
  assert phi.shape == (50, 5) and np.all((phi >= 0) & (phi <= 1))
  np.testing.assert_allclose(phi.mean(1), 0.5, atol=1e-7)
  # Only each model's ordering matters: a monotone transform of one model leaves phi unchanged.
  warped = raw.copy()
  warped[..., 1] = np.exp(3 * warped[..., 1])
  np.testing.assert_array_equal(pref.aggregated_preference(warped), phi)
  # Ties lower the mean: the tied comparison is won by neither image.
  assert pref.aggregated_preference(R_HAND).mean() < 0.5


def test_algorithm1_errors():
  with pytest.raises(ValueError, match="k >= 2"):
    pref.win_counts(np.zeros((3, 1, 2)))
  with pytest.raises(ValueError, match="non-finite"):
    pref.aggregated_preference(np.array([[0.0], [np.nan]]))


# --- pairs and rankings -------------------------------------------------------------------------

def _pair_set(p):
  return sorted(zip(p["prompt"].tolist(), p["winner"].tolist(), p["loser"].tolist()))


def test_pairs_from_phi():
  phi = pref.aggregated_preference(R_HAND)[None]  # [4, 2, 1, 3] / 6
  pairs = pref.to_pairs(phi)
  assert _pair_set(pairs) == [(0, 0, 1), (0, 0, 2), (0, 0, 3), (0, 1, 2), (0, 3, 1), (0, 3, 2)]
  assert np.all(pairs["margin"] > 0)
  scores = np.array([[0.5, 0.5, 0.0, 1.0], [0.2, 0.2, 0.2, 0.2], [0.1, 0.3, 0.3, 0.0]])
  all_pairs = pref.to_pairs(scores)
  assert (0, 0, 1) not in _pair_set(all_pairs) and (0, 1, 0) not in _pair_set(all_pairs)  # tie dropped
  assert len(all_pairs["prompt"]) == 5 + 0 + 5
  assert list(np.unique(all_pairs["prompt"])) == [0, 2]
  bw = pref.to_pairs(scores, mode="best_worst")
  assert _pair_set(bw) == [(0, 3, 2), (2, 1, 3)]  # the all-tied prompt 1 is dropped
  np.testing.assert_allclose(bw["margin"], [1.0, 0.3])
  assert len(pref.to_pairs(scores, tie_tolerance=0.25)["prompt"]) == 5 + 0 + 2  # prompt 2: 1>3, 2>3
  with pytest.raises(ValueError, match="'all', 'best_worst'"):
    pref.to_pairs(scores, mode="adjacent")


def test_rankings_from_phi():
  order, rank = pref.to_rankings(pref.aggregated_preference(R_HAND)[None])
  np.testing.assert_array_equal(order, [[0, 3, 1, 2]])
  np.testing.assert_array_equal(rank, [[1, 3, 4, 2]])
  tied = np.array([[0.5, 0.5, 0.0, 1.0]])
  np.testing.assert_array_equal(pref.to_rankings(tied)[1], [[2, 3, 4, 1]])
  np.testing.assert_array_equal(pref.to_rankings(tied, ties="min")[1], [[2, 2, 4, 1]])


# --- generation and scoring ---------------------------------------------------------------------

RING = toy.ring8()


def _gen_on_mode(key, cond):
  return RING.means[np.asarray(cond)] + 0.1 * jax.random.normal(key, (len(cond), 2))


def _gen_ring(key, cond):
  return RING.sample(key, len(cond))


REWARDS = {"hit": R.target_mode_indicator(RING.means, RING.mode_stds, target=None),
           "dist": R.negative_distance(RING.means),
           "realism": R.mixture_log_density(RING)}


def test_generate_candidates_shapes_ids_and_determinism():
  key = jax.random.PRNGKey(0)
  out = pref.generate_candidates({"on_mode": _gen_on_mode, "ring": _gen_ring}, np.arange(6), [1, 3], key,
                                 prompts_per_batch=4, progress=False)
  assert out["samples"].shape == (6, 4, 2)
  np.testing.assert_array_equal(out["generator_id"], np.tile([0, 1, 1, 1], (6, 1)))
  assert out["generator_descriptions"] == ["on_mode", "ring"]
  np.testing.assert_array_equal(out["cond"], np.arange(6))
  # the "on_mode" candidate really was generated for its prompt
  np.testing.assert_array_less(np.linalg.norm(out["samples"][:, 0] - np.asarray(RING.means[:6]), axis=-1), 0.6)
  again = pref.generate_candidates({"on_mode": _gen_on_mode, "ring": _gen_ring}, np.arange(6), [1, 3], key,
                                   prompts_per_batch=4, progress=False)
  np.testing.assert_array_equal(out["samples"], again["samples"])
  with pytest.raises(ValueError, match="'bad'"):
    pref.generate_candidates({"bad": lambda k, c: np.zeros((1, 2))}, np.arange(3), 2, key, progress=False)


def test_score_candidates_matches_direct_calls():
  cand = pref.generate_candidates([_gen_on_mode, _gen_ring], np.arange(8), 2, jax.random.PRNGKey(1),
                                  progress=False)
  raw = pref.score_candidates(cand["samples"], cand["cond"], REWARDS, batch_size=5, progress=False)
  assert raw.shape == (8, 4, 3) and raw.dtype == np.float32
  flat, cond = cand["samples"].reshape(32, 2), np.repeat(cand["cond"], 4)
  for l, f in enumerate(REWARDS.values()):
    np.testing.assert_allclose(raw[..., l].reshape(-1), f(flat, cond), rtol=1e-5, atol=1e-5)
  assert raw[:, :2, 0].mean() > raw[:, 2:, 0].mean()  # on-mode generator hits its target more often


# --- on-disk format -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def data():
  return pref.build_preference_data({"on_mode": _gen_on_mode, "ring": _gen_ring}, np.arange(8).repeat(2), 2,
                                    REWARDS, jax.random.PRNGKey(2), config={"k": 4, "seed": 2}, progress=False)


def test_build_preference_data(data):
  assert data.samples.shape == (16, 4, 2) and data.rewards.shape == (16, 4, 3)
  np.testing.assert_array_equal(data.phi, pref.aggregated_preference(data.rewards))
  assert data.reward_names == ["hit", "dist", "realism"]
  assert data.metadata["phi_method"] == "win_counts" and data.metadata["config"] == {"k": 4, "seed": 2}


def test_save_load_round_trip_bitwise(tmp_path, data):
  path = pref.save_preference_dataset(tmp_path / "syn", data)
  assert sorted(os.listdir(path)) == ["arrays.npz", "metadata.json"]
  assert sorted(os.listdir(tmp_path)) == ["syn"]
  back = pref.load_preference_dataset(path)
  for f in pref.ARRAY_FIELDS:
    a, b = getattr(data, f), getattr(back, f)
    assert a.dtype == b.dtype and a.shape == b.shape, f
    assert a.tobytes() == b.tobytes(), f
  meta = back.metadata
  assert meta["format"] == "diffjax.preference" and meta["format_version"] == 1
  assert meta["generator_descriptions"] == ["on_mode", "ring"] and meta["reward_names"] == ["hit", "dist", "realism"]
  assert meta["shapes"]["samples"] == [16, 4, 2] and meta["dtypes"]["phi"] == "float32"
  assert {"command", "config", "created", "normalization"} <= set(meta)


def test_save_from_arrays_string_conditions(tmp_path):
  raw = np.random.default_rng(0).normal(size=(3, 4, 2)).astype(np.float32)
  cond = np.array(["a cat", "two dogs", "a red cube"])
  path = pref.save_preference_dataset(tmp_path / "s", samples=np.zeros((3, 4, 8, 8, 1), np.float16), cond=cond,
                                      rewards=raw, reward_names=["clf", "ink"], normalization=None)
  back = pref.load_preference_dataset(path)
  np.testing.assert_array_equal(back.cond, cond)
  np.testing.assert_array_equal(back.phi, pref.aggregated_preference(raw))
  assert back.samples.dtype == np.float16 and back.metadata["generator_descriptions"] == ["unknown"]
  with pytest.raises(FileExistsError, match="overwrite=True"):
    pref.save_preference_dataset(path, back)
  with pytest.raises(ValueError, match="'rewards'"):
    pref.save_preference_dataset(tmp_path / "t", samples=np.zeros((3, 4, 2)), cond=np.arange(3), rewards=raw,
                                 reward_names=["only_one"])


def _rewrite_npz(path, **changes):
  with np.load(os.path.join(path, "arrays.npz")) as f:
    arrays = {k: f[k] for k in f.files}
  for k, v in changes.items():
    if v is None:
      arrays.pop(k)
    else:
      arrays[k] = v
  np.savez(os.path.join(path, "arrays.npz"), **arrays)


def _rewrite_meta(path, **changes):
  p = os.path.join(path, "metadata.json")
  with open(p) as f:
    meta = json.load(f)
  meta.update(changes)
  with open(p, "w") as f:
    json.dump(meta, f)


def test_load_errors_name_the_field(tmp_path, data):
  def fresh(name):
    return pref.save_preference_dataset(tmp_path / name, data)

  p = fresh("missing_phi")
  _rewrite_npz(p, phi=None)
  with pytest.raises(ValueError, match="missing field 'phi'"):
    pref.load_preference_dataset(p)
  p = fresh("bad_rewards")
  _rewrite_npz(p, rewards=data.rewards[..., :2])
  with pytest.raises(ValueError, match="'rewards' has shape"):
    pref.load_preference_dataset(p)
  p = fresh("bad_gen")
  _rewrite_npz(p, generator_id=data.generator_id + 5)
  with pytest.raises(ValueError, match="'generator_id'"):
    pref.load_preference_dataset(p)
  p = fresh("bad_shapes")
  _rewrite_meta(p, shapes={**data.metadata["shapes"], "cond": [17]})
  with pytest.raises(ValueError, match="'cond'.*metadata.json records"):
    pref.load_preference_dataset(p)
  p = fresh("bad_version")
  _rewrite_meta(p, format_version=99)
  with pytest.raises(ValueError, match="'format_version'"):
    pref.load_preference_dataset(p)
  p = fresh("no_names")
  _rewrite_meta(p, reward_names=None)
  with pytest.raises(ValueError, match="'reward_names'"):
    pref.load_preference_dataset(p)
  p = fresh("no_meta")
  os.remove(os.path.join(p, "metadata.json"))
  with pytest.raises(FileNotFoundError, match="metadata.json"):
    pref.load_preference_dataset(p)
  with pytest.raises(FileNotFoundError, match="does not exist"):
    pref.load_preference_dataset(tmp_path / "nowhere")


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_interrupted_write_leaves_nothing(tmp_path, monkeypatch, data, exc):
  def boom(directory, meta):
    with open(os.path.join(directory, "metadata.json"), "w") as f:
      f.write('{"format": "diffj')  # half-written
    raise exc("interrupted")

  monkeypatch.setattr(pref, "_write_metadata", boom)
  with pytest.raises(exc):
    pref.save_preference_dataset(tmp_path / "syn", data)
  assert os.listdir(tmp_path) == []


def test_interrupted_overwrite_keeps_old_data(tmp_path, monkeypatch, data):
  path = pref.save_preference_dataset(tmp_path / "syn", data)
  before = open(os.path.join(path, "arrays.npz"), "rb").read()

  def boom(directory, arrays):
    raise OSError("disk full")

  monkeypatch.setattr(pref, "_write_arrays", boom)
  with pytest.raises(OSError, match="disk full"):
    pref.save_preference_dataset(path, data, overwrite=True)
  assert os.listdir(tmp_path) == ["syn"]
  assert open(os.path.join(path, "arrays.npz"), "rb").read() == before
  monkeypatch.undo()
  pref.save_preference_dataset(path, data, overwrite=True)
  assert os.listdir(tmp_path) == ["syn"]


# --- trainer datasets ---------------------------------------------------------------------------

def _take(ds, n):
  return [next(ds) for _ in range(n)]


def _assert_same(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])


def test_preference_pairs_batches_and_exact_resume(tmp_path, data):
  path = pref.save_preference_dataset(tmp_path / "syn", data)
  ds = pref.PreferencePairs(path, batch_size=8, seed=3, include_scores=True)
  num_pairs = len(pref.to_pairs(data.phi)["prompt"])
  assert ds.num_examples == num_pairs and ds.example_shape == (2,)
  b = next(ds)
  assert b["x_w"].shape == (8, 2) and b["x_l"].shape == (8, 2) and b["cond"].shape == (8,)
  assert np.all(b["score_w"] > b["score_l"])
  m = num_pairs // 8 + 2  # crosses an epoch boundary
  _take(ds, m)
  state = json.loads(json.dumps(ds.get_state()))
  expect = _take(ds, 4)
  resumed = pref.PreferencePairs(path, batch_size=8, seed=3, include_scores=True)
  resumed.set_state(state)
  _assert_same(_take(resumed, 4), expect)
  other = pref.PreferencePairs(data, batch_size=8, seed=4)
  assert not np.array_equal(next(other)["x_w"], next(pref.PreferencePairs(data, batch_size=8, seed=3))["x_w"])
  best_worst = pref.PreferencePairs(data, batch_size=4, mode="best_worst")
  with pytest.raises(ValueError, match="cannot be resumed"):
    best_worst.set_state(state)


def test_preference_pairs_winner_is_preferred(data):
  ds = pref.PreferencePairs(data, batch_size=1, shuffle=False)
  pairs = ds.pairs
  for t in range(5):
    b = next(ds)
    p, w, l = pairs["prompt"][t], pairs["winner"][t], pairs["loser"][t]
    np.testing.assert_array_equal(b["x_w"][0], data.samples[p, w])
    np.testing.assert_array_equal(b["x_l"][0], data.samples[p, l])
    assert data.phi[p, w] > data.phi[p, l] and b["cond"][0] == data.cond[p]


def test_ranked_lists_batches_and_exact_resume(data):
  ds = pref.RankedLists(data, batch_size=4, seed=1, include_rewards=True)
  b = next(ds)
  assert b["x"].shape == (4, 4, 2) and b["phi"].shape == (4, 4) and b["cond"].shape == (4,)
  assert b["rewards"].shape == (4, 4, 3)
  _take(ds, 5)
  state = ds.get_state()
  expect = _take(ds, 6)
  resumed = pref.RankedLists(data, batch_size=4, seed=1, include_rewards=True)
  resumed.set_state(state)
  _assert_same(_take(resumed, 6), expect)
  avg = np.asarray(R.average_rewards(data.rewards, normalize="zscore"))
  ds2 = pref.RankedLists(data, batch_size=4, shuffle=False, scores=avg)
  np.testing.assert_allclose(next(ds2)["phi"], avg[:4])


# --- Pick-a-Pic ---------------------------------------------------------------------------------

def _png_minimal(rgb):
  """A minimal PNG encoder (8-bit RGB, no filtering) so the test does not need Pillow to write."""
  h, w, _ = rgb.shape
  raw = b"".join(b"\x00" + rgb[i].astype(np.uint8).tobytes() for i in range(h))

  def chunk(tag, body):
    return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF)

  return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) +
          chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def _png(rgb):
  if not HAVE_PIL:
    return _png_minimal(rgb)
  import io

  from PIL import Image
  buf = io.BytesIO()
  Image.fromarray(rgb.astype(np.uint8)).save(buf, format="PNG")
  return buf.getvalue()


def _solid(value, h=6, w=10):
  return np.full((h, w, 3), value, np.uint8)


# (caption, label_0, value of image 0, value of image 1); the preferred image is the brighter one
ROWS = [("a cat", 1.0, 255, 0), ("a dog", 0.0, 0, 255), ("a tie", 0.5, 100, 100),
        ("a cube", 1.0, 200, 50), ("a tree", 0.0, 30, 220)]


def _write_pickapic(path, rows=ROWS, label_1=True, drop=()):
  import pyarrow as pa
  import pyarrow.parquet as pq
  cols = {"caption": [r[0] for r in rows], "jpg_0": [_png(_solid(r[2])) for r in rows],
          "jpg_1": [_png(_solid(r[3])) for r in rows], "label_0": [r[1] for r in rows],
          "ranking_id": list(range(len(rows)))}
  if label_1:
    cols["label_1"] = [1.0 - r[1] for r in rows]
  for c in drop:
    cols.pop(c)
  pq.write_table(pa.table(cols), path)
  return path


@pytest.mark.skipif(not HAVE_PIL, reason="decoding needs Pillow")
def test_minimal_png_encoder_decodes():
  import io

  from PIL import Image
  rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3)).astype(np.uint8)
  np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(_png_minimal(rgb)))), rgb)


@pytest.mark.skipif(not HAVE_PIL, reason="decoding needs Pillow")
def test_load_pick_a_pic_drops_ties_and_flips(tmp_path):
  path = _write_pickapic(str(tmp_path / "train-00000.parquet"))
  out = pref.load_pick_a_pic(path, resolution=4, progress=False)
  np.testing.assert_array_equal(out["cond"], ["a cat", "a dog", "a cube", "a tree"])
  np.testing.assert_array_equal(out["flipped"], [False, True, False, True])
  np.testing.assert_array_equal(out["row"], [0, 1, 3, 4])
  assert out["x_w"].shape == (4, 4, 4, 3) and out["x_l"].shape == (4, 4, 4, 3)
  assert out["x_w"].dtype == np.float32
  win_value = np.array([255, 255, 200, 220]) / 127.5 - 1
  lose_value = np.array([0, 0, 50, 30]) / 127.5 - 1
  np.testing.assert_allclose(out["x_w"].mean((1, 2, 3)), win_value, atol=1e-6)
  np.testing.assert_allclose(out["x_l"].mean((1, 2, 3)), lose_value, atol=1e-6)
  assert out["stats"] == {"rows": 5, "ties": 1, "flipped": 2, "files": [path]}
  assert pref.load_pick_a_pic(path, resolution=(3, 5), progress=False)["x_w"].shape == (4, 3, 5, 3)
  assert pref.load_pick_a_pic(path, progress=False)["x_w"].shape == (4, 6, 10, 3)
  # a directory of shards, capped
  _write_pickapic(str(tmp_path / "train-00001.parquet"), rows=ROWS[:2])
  both = pref.load_pick_a_pic(str(tmp_path), resolution=4, max_pairs=5, progress=False)
  np.testing.assert_array_equal(both["cond"], ["a cat", "a dog", "a cube", "a tree", "a cat"])
  # the trainer's pair dataset takes the loaded arrays directly
  ds = pref.PreferencePairs(out, batch_size=2, seed=0)
  b = next(ds)
  assert b["x_w"].shape == (2, 4, 4, 3) and np.all(b["x_w"].mean((1, 2, 3)) > b["x_l"].mean((1, 2, 3)))


def test_load_pick_a_pic_without_decoding_and_without_pillow(tmp_path, monkeypatch):
  path = _write_pickapic(str(tmp_path / "p.parquet"))
  out = pref.load_pick_a_pic(path, decode=False)
  assert len(out["jpg_w"]) == 4 and out["jpg_w"][1] == _png(_solid(255))  # row 1 flipped
  assert out["jpg_l"][1] == _png(_solid(0))
  monkeypatch.setattr(pref, "pillow_available", lambda: False)
  with pytest.raises(ImportError, match="Pillow.*decode=False"):
    pref.load_pick_a_pic(path)
  assert len(pref.load_pick_a_pic(path, decode=False)["jpg_w"]) == 4


def test_load_pick_a_pic_errors_name_the_column(tmp_path):
  bad = _write_pickapic(str(tmp_path / "bad.parquet"), rows=[("x", 0.3, 0, 255)])
  with pytest.raises(ValueError, match="'label_0' row 0"):
    pref.load_pick_a_pic(bad, decode=False)
  no_img = _write_pickapic(str(tmp_path / "noimg.parquet"), drop=("jpg_1",))
  with pytest.raises(ValueError, match="missing column 'jpg_1'"):
    pref.load_pick_a_pic(no_img, decode=False)
  import pyarrow.parquet as pq
  t = pq.read_table(_write_pickapic(str(tmp_path / "l1.parquet")))
  t = t.set_column(t.schema.get_field_index("label_1"), "label_1", t.column("label_0"))
  pq.write_table(t, str(tmp_path / "l1.parquet"))
  with pytest.raises(ValueError, match="'label_1'"):
    pref.load_pick_a_pic(str(tmp_path / "l1.parquet"), decode=False)
  with pytest.raises(FileNotFoundError):
    pref.load_pick_a_pic(str(tmp_path / "none.parquet"))
