"""Preference data: synthetic ranked lists (RankDPO's Syn-Pic recipe) and Pick-a-Pic pairs.

Syn-Pic (Karthik et al., "Scalable Ranked Preference Optimization for Text-to-Image Generation",
arXiv 2410.18013, §3.2 and Algorithm 1) builds ranked preferences without human labels:

  1. for every prompt c, generate k images with several generators (there: SDXL, SD3-Medium,
     PixArt-Sigma, Stable Cascade; here: any callables `gen(key, cond) -> samples`, e.g. different
     checkpoints, samplers or guidance scales) -- `generate_candidates`;
  2. score each image with n reward models, R[i, l] = reward_l(x_i, c) -- `score_candidates`;
  3. count, for each image i, the (reward model l, other image j) comparisons it wins,
     C_i = sum_l sum_{j != i} [R_il > R_jl] (strict: ties are won by neither) -- `win_counts`;
  4. the aggregated preference is phi_i = C_i / (n (k - 1)) in [0, 1] -- `aggregated_preference`;
     with no ties the k values of a prompt average exactly 1/2.

The ranking by phi feeds RankDPO's DCG-weighted loss (`RankedLists` batches) and the pairs
(i beats j when phi_i > phi_j) feed Diffusion-DPO (`PreferencePairs` batches).

On-disk format (`save_preference_dataset` / `load_preference_dataset`), a directory holding

  arrays.npz      samples (P, k, ...), cond (P,), rewards (P, k, n) raw scores,
                  phi (P, k) float, generator_id (P, k) int (index into generator_descriptions);
  metadata.json   {"format": "diffjax.preference", "format_version": 1, "reward_names": [n],
                   "generator_descriptions": [G], "phi_method", "normalization", "command",
                   "config", "created", "shapes": {field: [...]}, "dtypes": {field: str}}.

The directory is written to a temporary sibling and renamed into place, so a reader never sees a
partial data set and an interrupted write leaves nothing behind.

`load_pick_a_pic` reads pairwise human preferences in the layout of the Hugging Face data set
`yuvalkirstain/pickapic_v2` (parquet columns caption, jpg_0, jpg_1, label_0, label_1) the way
Diffusion-DPO's `train.py` does (Wallace et al. 2023, arXiv 2311.12908): ties (label_0 = 0.5) are
dropped and pairs with label_0 = 0 are flipped so that the winner comes first.
"""
import dataclasses
import datetime
import glob
import importlib.util
import io
import json
import os
import shutil
import sys
import tempfile

import jax
import numpy as np
from tqdm.auto import tqdm

from diffjax.data.datasets import ArrayDataset

FORMAT = "diffjax.preference"
FORMAT_VERSION = 1
ARRAY_FIELDS = ("samples", "cond", "rewards", "phi", "generator_id")
ARRAYS_FILE = "arrays.npz"
METADATA_FILE = "metadata.json"
PAIR_MODES = ("all", "best_worst")
RANK_TIES = ("first", "min")


# --- 1. candidates ------------------------------------------------------------------------------

def _named(objs, descriptions, what):
  """(callables, names) from a dict name -> fn, a sequence of fns, or a single fn."""
  if isinstance(objs, dict):
    names, fns = [str(k) for k in objs], list(objs.values())
  elif callable(objs):
    fns = [objs]
    names = [getattr(objs, "__name__", f"{what}_0")]
  else:
    fns = list(objs)
    names = [getattr(f, "__name__", f"{what}_{i}") for i, f in enumerate(fns)]
  if not fns:
    raise ValueError(f"{what}s must not be empty")
  for name, f in zip(names, fns):
    if not callable(f):
      raise ValueError(f"{what} {name!r} is not callable (got {type(f).__name__})")
  if descriptions is not None:
    descriptions = [str(d) for d in descriptions]
    if len(descriptions) != len(fns):
      raise ValueError(f"{what}_descriptions has {len(descriptions)} entries for {len(fns)} {what}s")
    names = descriptions
  return fns, names


def generate_candidates(generators, prompts, k_per_generator, key, *, prompts_per_batch=None,
                        descriptions=None, progress=True):
  """Step 1 of Syn-Pic: k images per prompt from several generators (Algorithm 1, "generate").

  Args:
    generators: callables ``gen(key, cond) -> samples`` taking a PRNG key and a (B,) numpy array
      of conditions and returning (B, ...) samples; a dict name -> callable, a list, or one callable.
    prompts: (P,) conditions (class labels, toy mode ids, or strings).
    k_per_generator: images per prompt from each generator: an int or one int per generator.
      The k = sum(k_per_generator) images of a prompt are ordered generator by generator.
    key: PRNG key. Generator g, prompt batch b uses ``fold_in(fold_in(key, g), b)``, so the
      samples depend on `prompts_per_batch`.
    prompts_per_batch: prompts per generator call (each call gets ``prompts_per_batch *
      k_per_generator[g]`` conditions); default all prompts at once.
    descriptions: one string per generator for the metadata (default: dict keys / __name__).
    progress: show a tqdm bar over generator calls.

  Returns:
    dict with "samples" (P, k, ...), "cond" (P,), "generator_id" (P, k) int32 and
    "generator_descriptions" (list of G strings).
  """
  fns, names = _named(generators, descriptions, "generator")
  prompts = np.asarray(prompts)
  if prompts.ndim != 1 or len(prompts) == 0:
    raise ValueError(f"prompts must be a non-empty 1-D array of conditions, got shape {prompts.shape}")
  ks = [k_per_generator] * len(fns) if np.ndim(k_per_generator) == 0 else list(k_per_generator)
  if len(ks) != len(fns):
    raise ValueError(f"k_per_generator has {len(ks)} entries for {len(fns)} generators")
  for name, k in zip(names, ks):
    if isinstance(k, bool) or int(k) != k or k < 1:
      raise ValueError(f"k_per_generator for generator {name!r} must be an integer >= 1, got {k!r}")
  ks = [int(k) for k in ks]
  if sum(ks) < 2:
    raise ValueError(f"need k >= 2 images per prompt to rank them, got k_per_generator={ks}")
  num = len(prompts)
  chunk = num if prompts_per_batch is None else int(prompts_per_batch)
  if chunk < 1:
    raise ValueError(f"prompts_per_batch must be >= 1, got {prompts_per_batch}")
  starts = list(range(0, num, chunk))
  per_gen = []
  with tqdm(total=len(fns) * len(starts), desc="generate", unit="batch", disable=not progress) as bar:
    for g, (fn, name, k) in enumerate(zip(fns, names, ks)):
      key_g = jax.random.fold_in(key, g)
      pieces = []
      for b, start in enumerate(starts):
        cond = prompts[start:start + chunk]
        x = np.asarray(fn(jax.random.fold_in(key_g, b), np.repeat(cond, k)))
        if x.ndim < 1 or x.shape[0] != len(cond) * k:
          raise ValueError(f"generator {name!r} returned shape {x.shape} for {len(cond) * k} conditions; "
                           f"expected ({len(cond) * k}, ...)")
        pieces.append(x.reshape(len(cond), k, *x.shape[1:]))
        bar.update()
      per_gen.append(np.concatenate(pieces, 0))
  shapes = {name: x.shape[2:] for name, x in zip(names, per_gen)}
  if len(set(shapes.values())) != 1:
    raise ValueError(f"generators return samples of different shapes: {shapes}")
  generator_id = np.broadcast_to(np.repeat(np.arange(len(fns), dtype=np.int32), ks), (num, sum(ks)))
  return {"samples": np.concatenate(per_gen, 1), "cond": prompts,
          "generator_id": np.ascontiguousarray(generator_id), "generator_descriptions": names}


# --- 2. scores ----------------------------------------------------------------------------------

def reward_names(rewards):
  """The names `score_candidates` gives `rewards` (dict keys, else each function's __name__)."""
  return _named(rewards, None, "reward")[1]


def score_candidates(samples, cond, rewards, *, batch_size=1024, jit=True, progress=True):
  """Step 2 of Syn-Pic: the raw score of every image under every reward model.

  Args:
    samples: (P, k, ...) candidates.
    cond: (P,) conditions (repeated to the k images of each prompt), or None.
    rewards: reward functions ``reward(x, cond) -> (B,)`` (see `diffjax.rewards`); a dict
      name -> fn, a list, or one function.
    batch_size: images per reward call.
    jit: compile each reward (skipped for non-numeric conditions such as caption strings).
    progress: show a tqdm bar over reward calls.

  Returns:
    (P, k, n) float32 raw rewards R (no normalisation), n = number of reward models.
  """
  fns, names = _named(rewards, None, "reward")
  samples = np.asarray(samples)
  if samples.ndim < 2:
    raise ValueError(f"samples must have shape (P, k, ...), got {samples.shape}")
  num, k = samples.shape[:2]
  flat = samples.reshape(num * k, *samples.shape[2:])
  cond_flat = None
  if cond is not None:
    cond = np.asarray(cond)
    if cond.shape != (num,):
      raise ValueError(f"cond must have shape ({num},) (one condition per prompt), got {cond.shape}")
    cond_flat = np.repeat(cond, k)
  numeric = cond_flat is None or np.issubdtype(cond_flat.dtype, np.number)
  out = np.zeros((num * k, len(fns)), np.float32)
  starts = range(0, num * k, batch_size)
  with tqdm(total=len(fns) * len(starts), desc="score", unit="batch", disable=not progress) as bar:
    for l, (fn, name) in enumerate(zip(fns, names)):
      call = jax.jit(fn) if jit and numeric else fn
      for s in starts:
        c = None if cond_flat is None else cond_flat[s:s + batch_size]
        r = np.asarray(call(flat[s:s + batch_size], c))
        n_here = min(batch_size, num * k - s)
        if r.shape != (n_here,):
          raise ValueError(f"reward {name!r} returned shape {r.shape} for a batch of {n_here}; expected ({n_here},)")
        out[s:s + n_here, l] = r
        bar.update()
  return out.reshape(num, k, len(fns))


# --- 3./4. Algorithm 1: win counts and aggregated preference ------------------------------------

def _check_rewards(R, name="rewards"):
  R = np.asarray(R)
  if R.ndim < 2:
    raise ValueError(f"{name} must have shape (..., k, n) (images, reward models), got {R.shape}")
  if R.shape[-2] < 2:
    raise ValueError(f"{name} needs k >= 2 images per prompt, got shape {R.shape}")
  if np.issubdtype(R.dtype, np.floating) and not np.all(np.isfinite(R)):
    raise ValueError(f"{name} holds non-finite values (NaN/Inf); win counts would be undefined")
  return R


def win_counts(R):
  """C_i = sum_l sum_{j != i} [R_il > R_jl]: comparisons image i wins (RankDPO Algorithm 1).

  Args:
    R: (..., k, n) rewards of k images under n reward models (e.g. (P, k, n)).

  Returns:
    (..., k) int64 win counts in [0, n (k - 1)]. A tie (R_il == R_jl) is won by neither image.
  """
  R = _check_rewards(R)
  wins = R[..., :, None, :] > R[..., None, :, :]  # [..., i, j, l] = R_il > R_jl
  return wins.sum((-2, -1)).astype(np.int64)


def aggregated_preference(R):
  """phi_i = C_i / (n (k - 1)) in [0, 1] (RankDPO §3.2, Algorithm 1).

  phi_i is the fraction of (reward model, other image) comparisons image i wins; without ties the
  phi of a prompt's k images average 1/2.

  Args:
    R: (..., k, n) rewards.

  Returns:
    (..., k) float32.
  """
  R = _check_rewards(R)
  k, n = R.shape[-2:]
  return (win_counts(R) / (n * (k - 1))).astype(np.float32)


def to_pairs(scores, mode="all", tie_tolerance=0.0):
  """Winner/loser pairs from per-image scores (phi, or averaged normalised rewards).

  Args:
    scores: (P, k); higher is better.
    mode: "all" (every i < j of a prompt whose scores differ) or "best_worst" (one pair per prompt:
      the first highest-scoring image against the first lowest-scoring one).
    tie_tolerance: pairs with |score_i - score_j| <= tie_tolerance are ties and dropped.

  Returns:
    dict of (M,) arrays: "prompt", "winner", "loser" (int64 image indices within the prompt) and
    "margin" (score_winner - score_loser > tie_tolerance), sorted by prompt.
  """
  s = np.asarray(scores, np.float64)
  if s.ndim != 2 or s.shape[1] < 2:
    raise ValueError(f"scores must have shape (P, k) with k >= 2, got {s.shape}")
  if not np.all(np.isfinite(s)):
    raise ValueError("scores hold non-finite values (NaN/Inf)")
  if tie_tolerance < 0:
    raise ValueError(f"tie_tolerance must be >= 0, got {tie_tolerance}")
  if mode == "all":
    i, j = np.triu_indices(s.shape[1], 1)
    d = s[:, i] - s[:, j]
    prompt, m = np.nonzero(np.abs(d) > tie_tolerance)
    first = d[prompt, m] > 0
    winner = np.where(first, i[m], j[m])
    loser = np.where(first, j[m], i[m])
  elif mode == "best_worst":
    best, worst = np.argmax(s, 1), np.argmin(s, 1)
    prompt = np.nonzero(s[np.arange(len(s)), best] - s[np.arange(len(s)), worst] > tie_tolerance)[0]
    winner, loser = best[prompt], worst[prompt]
  else:
    raise ValueError(f"unknown pair mode {mode!r}; valid: {list(PAIR_MODES)}")
  prompt = prompt.astype(np.int64)
  winner, loser = winner.astype(np.int64), loser.astype(np.int64)
  return {"prompt": prompt, "winner": winner, "loser": loser,
          "margin": s[prompt, winner] - s[prompt, loser]}


def to_rankings(scores, ties="first"):
  """Orders and ranks of each prompt's images, best first.

  Args:
    scores: (P, k) (phi or averaged normalised rewards); higher is better.
    ties: "first" (tied images ranked by index, so ranks are a permutation 1..k) or "min"
      (competition ranking: tied images share the best of their ranks, e.g. 1, 2, 2, 4).

  Returns:
    (order, rank): order (P, k) image indices from best to worst (stable), rank (P, k) int64 with
    rank 1 = best (RankDPO's tau, used in the discount log(1 + tau)).
  """
  s = np.asarray(scores)
  if s.ndim != 2:
    raise ValueError(f"scores must have shape (P, k), got {s.shape}")
  if ties not in RANK_TIES:
    raise ValueError(f"unknown ties {ties!r}; valid: {list(RANK_TIES)}")
  order = np.argsort(-s, axis=1, kind="stable")
  if ties == "first":
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(1, s.shape[1] + 1)[None].repeat(len(s), 0), 1)
  else:
    rank = 1 + np.sum(s[:, None, :] > s[:, :, None], -1)
  return order.astype(np.int64), rank.astype(np.int64)


# --- on-disk format -----------------------------------------------------------------------------

@dataclasses.dataclass
class PreferenceData:
  """A ranked preference data set in memory (the contents of one saved directory)."""
  samples: np.ndarray        # (P, k, ...)
  cond: np.ndarray           # (P,)
  rewards: np.ndarray        # (P, k, n) raw
  phi: np.ndarray            # (P, k)
  generator_id: np.ndarray   # (P, k)
  metadata: dict

  @property
  def num_prompts(self):
    return self.samples.shape[0]

  @property
  def k(self):
    return self.samples.shape[1]

  @property
  def reward_names(self):
    return list(self.metadata["reward_names"])

  @property
  def generator_descriptions(self):
    return list(self.metadata["generator_descriptions"])

  def arrays(self):
    return {f: getattr(self, f) for f in ARRAY_FIELDS}


def build_preference_data(generators, prompts, k_per_generator, rewards, key, *, prompts_per_batch=None,
                          score_batch_size=1024, descriptions=None, config=None, progress=True):
  """Algorithm 1 end to end: generate, score with every reward, aggregate to phi.

  Returns:
    `PreferenceData` ready for `save_preference_dataset`.
  """
  cand = generate_candidates(generators, prompts, k_per_generator, key, prompts_per_batch=prompts_per_batch,
                             descriptions=descriptions, progress=progress)
  R = score_candidates(cand["samples"], cand["cond"], rewards, batch_size=score_batch_size, progress=progress)
  phi = aggregated_preference(R)
  meta = _metadata(cand["samples"], cand["cond"], R, phi, cand["generator_id"],
                   reward_names=reward_names(rewards), generator_descriptions=cand["generator_descriptions"],
                   phi_method="win_counts", normalization=None, config=config, command=None)
  return PreferenceData(cand["samples"], cand["cond"], R, phi, cand["generator_id"], meta)


def _jsonable(obj):
  if hasattr(obj, "to_dict"):
    return obj.to_dict()
  if isinstance(obj, np.generic):
    return obj.item()
  if isinstance(obj, np.ndarray):
    return obj.tolist()
  return repr(obj)


def _metadata(samples, cond, rewards, phi, generator_id, *, reward_names, generator_descriptions, phi_method,
              normalization, config, command):
  arrays = dict(samples=samples, cond=cond, rewards=rewards, phi=phi, generator_id=generator_id)
  return {
      "format": FORMAT,
      "format_version": FORMAT_VERSION,
      "reward_names": [str(n) for n in reward_names],
      "generator_descriptions": [str(d) for d in generator_descriptions],
      "phi_method": phi_method,
      "normalization": normalization,
      "command": " ".join(sys.argv) if command is None else command,
      "config": json.loads(json.dumps(config.to_dict() if hasattr(config, "to_dict") else config,
                                      default=_jsonable)),
      "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
      "shapes": {f: list(np.shape(a)) for f, a in arrays.items()},
      "dtypes": {f: str(np.asarray(a).dtype) for f, a in arrays.items()},
  }


def _validate(arrays, meta, where):
  """Raises ValueError naming the first inconsistent field."""
  for f in ("reward_names", "generator_descriptions"):
    if not isinstance(meta.get(f), list):
      raise ValueError(f"{where}: metadata field {f!r} is missing or not a list")
  s = np.asarray(arrays["samples"])
  if s.ndim < 2 or s.shape[0] < 1 or s.shape[1] < 2:
    raise ValueError(f"{where}: field 'samples' must have shape (P, k, ...) with P >= 1 and k >= 2, got {s.shape}")
  num, k = s.shape[:2]
  n = len(meta["reward_names"])
  expected = {"cond": (num,), "rewards": (num, k, n), "phi": (num, k), "generator_id": (num, k)}
  for f, shape in expected.items():
    a = np.asarray(arrays[f])
    if a.shape != shape:
      hint = f" (n = {n} reward_names)" if f == "rewards" else ""
      raise ValueError(f"{where}: field {f!r} has shape {a.shape}, expected {shape}{hint}")
  if arrays["cond"].dtype == object:
    raise ValueError(f"{where}: field 'cond' must be numeric or a string array, not dtype object")
  if not np.issubdtype(arrays["rewards"].dtype, np.number) or not np.all(np.isfinite(arrays["rewards"])):
    raise ValueError(f"{where}: field 'rewards' must be finite numbers")
  phi = arrays["phi"]
  if not np.issubdtype(phi.dtype, np.floating) or not np.all((phi >= 0) & (phi <= 1)):
    raise ValueError(f"{where}: field 'phi' must be floats in [0, 1]")
  gid = arrays["generator_id"]
  num_gen = len(meta["generator_descriptions"])
  if not np.issubdtype(gid.dtype, np.integer) or gid.min() < 0 or gid.max() >= num_gen:
    raise ValueError(f"{where}: field 'generator_id' must be integers in [0, {num_gen}) "
                     f"(one per generator_descriptions entry)")
  recorded = meta.get("shapes")
  if recorded is not None:
    for f in ARRAY_FIELDS:
      if f in recorded and list(recorded[f]) != list(np.shape(arrays[f])):
        raise ValueError(f"{where}: field {f!r} has shape {tuple(np.shape(arrays[f]))} but metadata.json "
                         f"records {tuple(recorded[f])}")


def _write_arrays(directory, arrays):
  with open(os.path.join(directory, ARRAYS_FILE), "wb") as f:
    np.savez(f, **arrays)
    f.flush()
    os.fsync(f.fileno())


def _write_metadata(directory, meta):
  with open(os.path.join(directory, METADATA_FILE), "w") as f:
    json.dump(meta, f, indent=2, sort_keys=True)
    f.flush()
    os.fsync(f.fileno())


def save_preference_dataset(path, data=None, *, samples=None, cond=None, rewards=None, phi=None,
                            generator_id=None, reward_names=None, generator_descriptions=None,
                            phi_method=None, normalization=None, config=None, command=None, overwrite=False):
  """Writes a preference data set directory atomically (temporary sibling directory + rename).

  Args:
    path: the directory to create.
    data: a `PreferenceData` (then its arrays and metadata are written; keyword arrays must be
      None), or None to pass the fields below.
    samples, cond, rewards: (P, k, ...), (P,), (P, k, n) raw rewards.
    phi: (P, k) preferences; default `aggregated_preference(rewards)` (Algorithm 1).
    generator_id: (P, k) ints; default all 0 with one generator "unknown".
    reward_names: n names (default reward_0, ...). generator_descriptions: one per generator id.
    phi_method: how phi was computed (default "win_counts" when phi is None, else "given").
    normalization: reward normalisation used to build phi, if any (e.g. "zscore"); None = none.
    config: JSON-able creation config (a ConfigDict is converted). command: default sys.argv.
    overwrite: replace an existing data set (the old one stays intact if the write fails).

  Returns:
    the absolute path.
  """
  if data is not None:
    given = [k for k, v in dict(samples=samples, cond=cond, rewards=rewards, phi=phi,
                                generator_id=generator_id).items() if v is not None]
    if given:
      raise ValueError(f"save_preference_dataset: pass either data or the arrays, not both (got {given})")
    arrays = {f: np.asarray(a) for f, a in data.arrays().items()}
    meta = dict(data.metadata)
    meta["shapes"] = {f: list(a.shape) for f, a in arrays.items()}
    meta["dtypes"] = {f: str(a.dtype) for f, a in arrays.items()}
  else:
    for f, v in dict(samples=samples, cond=cond, rewards=rewards).items():
      if v is None:
        raise ValueError(f"save_preference_dataset: field {f!r} is required")
    rewards = np.asarray(rewards)
    if rewards.ndim != 3:
      raise ValueError(f"save_preference_dataset: field 'rewards' must have shape (P, k, n), got {rewards.shape}")
    if phi is None:
      phi, phi_method = aggregated_preference(rewards), phi_method or "win_counts"
    if generator_id is None:
      generator_id = np.zeros(rewards.shape[:2], np.int32)
      generator_descriptions = generator_descriptions or ["unknown"]
    if reward_names is None:
      reward_names = [f"reward_{i}" for i in range(rewards.shape[-1])]
    if generator_descriptions is None:
      generator_descriptions = [f"generator_{i}" for i in range(int(np.max(generator_id)) + 1)]
    arrays = dict(samples=np.asarray(samples), cond=np.asarray(cond), rewards=rewards, phi=np.asarray(phi),
                  generator_id=np.asarray(generator_id))
    meta = _metadata(**arrays, reward_names=list(reward_names), generator_descriptions=list(generator_descriptions),
                     phi_method=phi_method or "given", normalization=normalization, config=config, command=command)
  path = os.path.abspath(os.fspath(path))
  _validate(arrays, meta, f"save_preference_dataset({path})")
  if os.path.exists(path):
    if not overwrite:
      raise FileExistsError(f"preference data set {path} exists; pass overwrite=True to replace it")
    if not os.path.isdir(path):
      raise FileExistsError(f"{path} exists and is not a directory")
  parent = os.path.dirname(path)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.tmp-", dir=parent)
  try:
    _write_arrays(tmp, arrays)
    _write_metadata(tmp, meta)
    if os.path.exists(path):
      trash = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.old-", dir=parent)
      os.rename(path, os.path.join(trash, "data"))
      try:
        os.rename(tmp, path)
      except BaseException:
        os.rename(os.path.join(trash, "data"), path)
        shutil.rmtree(trash, ignore_errors=True)
        raise
      shutil.rmtree(trash, ignore_errors=True)
    else:
      os.rename(tmp, path)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return path


def load_preference_dataset(path):
  """Reads and validates a directory written by `save_preference_dataset`.

  Raises:
    FileNotFoundError: the directory or one of its two files is missing.
    ValueError: a field is missing or inconsistent (the message names it).

  Returns:
    `PreferenceData`.
  """
  path = os.fspath(path)
  if not os.path.isdir(path):
    raise FileNotFoundError(f"preference data set directory {path} does not exist")
  meta_path, arr_path = os.path.join(path, METADATA_FILE), os.path.join(path, ARRAYS_FILE)
  for p in (meta_path, arr_path):
    if not os.path.isfile(p):
      raise FileNotFoundError(f"preference data set {path} is missing {os.path.basename(p)}")
  try:
    with open(meta_path) as f:
      meta = json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f"{meta_path} is not valid JSON: {e}") from None
  if not isinstance(meta, dict):
    raise ValueError(f"{meta_path} must hold a JSON object")
  if meta.get("format") != FORMAT:
    raise ValueError(f"{meta_path}: field 'format' is {meta.get('format')!r}, expected {FORMAT!r}")
  version = meta.get("format_version")
  if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
    raise ValueError(f"{meta_path}: field 'format_version' is {version!r}; this reader supports 1..{FORMAT_VERSION}")
  with np.load(arr_path, allow_pickle=False) as f:
    missing = [k for k in ARRAY_FIELDS if k not in f.files]
    if missing:
      raise ValueError(f"{arr_path} is missing field {missing[0]!r} (present: {sorted(f.files)})")
    arrays = {k: f[k] for k in ARRAY_FIELDS}
  _validate(arrays, meta, f"load_preference_dataset({path})")
  return PreferenceData(**arrays, metadata=meta)


# --- trainer datasets ---------------------------------------------------------------------------

def _as_data(data):
  if isinstance(data, (str, os.PathLike)):
    return load_preference_dataset(data)
  return data


class _IndexDataset:
  """Shuffled epochs over example indices, with `ArrayDataset`'s seeding, host slicing and state."""

  def __init__(self, num_examples, batch_size, seed, shuffle, process_index, process_count):
    if num_examples < 1:
      raise ValueError("the preference data set has no examples (all pairs tied?)")
    self.num_examples = int(num_examples)
    self._index = ArrayDataset({"x": np.arange(self.num_examples)}, batch_size, seed=seed, shuffle=shuffle,
                               process_index=process_index, process_count=process_count)
    self.batch_size = self._index.batch_size
    self.global_batch_size = self._index.global_batch_size

  def __iter__(self):
    return self

  def __next__(self):
    return self._gather(next(self._index)["x"])

  def get_state(self):
    return {**self._index.get_state(), "num_examples": self.num_examples}

  def set_state(self, state):
    if "num_examples" in state and int(state["num_examples"]) != self.num_examples:
      raise ValueError(f"dataset state is for {state['num_examples']} examples, this data set has "
                       f"{self.num_examples}; it cannot be resumed here")
    self._index.set_state(state)


class PreferencePairs(_IndexDataset):
  """Batches of pairs {"x_w": (B, ...), "x_l": (B, ...), "cond": (B,)} for Diffusion-DPO.

  Args:
    data: a `PreferenceData`, a saved directory, or a dict of pair arrays {"x_w", "x_l", "cond"}
      (e.g. `load_pick_a_pic(...)`).
    batch_size: global batch size (pairs).
    seed, shuffle: epochs are reshuffled with ``default_rng([seed, epoch])`` as in `ArrayDataset`.
    mode, tie_tolerance: `to_pairs` options for ranked data.
    scores: (P, k) scores to build pairs from (e.g. `average_rewards(data.rewards)`); default phi.
    include_scores: also yield "score_w", "score_l" (B,) (e.g. for RankDPO's k = 2 gain weights).
  """

  def __init__(self, data, batch_size, *, seed=0, shuffle=True, mode="all", scores=None, tie_tolerance=0.0,
               include_scores=False, process_index=None, process_count=None):
    data = _as_data(data)
    if isinstance(data, dict) and "x_w" in data:
      for f in ("x_w", "x_l", "cond"):
        if f not in data:
          raise ValueError(f"pair arrays are missing field {f!r}")
      self._x_w, self._x_l, self._cond = np.asarray(data["x_w"]), np.asarray(data["x_l"]), np.asarray(data["cond"])
      if not len(self._x_w) == len(self._x_l) == len(self._cond):
        raise ValueError(f"x_w, x_l and cond must have the same length, got {len(self._x_w)}, "
                         f"{len(self._x_l)}, {len(self._cond)}")
      if self._x_w.shape != self._x_l.shape:
        raise ValueError(f"x_w and x_l shapes differ: {self._x_w.shape} vs {self._x_l.shape}")
      if include_scores:
        raise ValueError("include_scores needs ranked data (a PreferenceData), not pair arrays")
      self.pairs, num = None, len(self._x_w)
      self.example_shape = tuple(self._x_w.shape[1:])
    else:
      self.data = data
      s = data.phi if scores is None else np.asarray(scores)
      if s.shape != data.phi.shape:
        raise ValueError(f"scores must have shape {data.phi.shape} (P, k), got {s.shape}")
      self._scores = s
      self.pairs = to_pairs(s, mode=mode, tie_tolerance=tie_tolerance)
      num = len(self.pairs["prompt"])
      self.example_shape = tuple(data.samples.shape[2:])
    self.include_scores = include_scores
    super().__init__(num, batch_size, seed, shuffle, process_index, process_count)

  def _gather(self, idx):
    if self.pairs is None:
      return {"x_w": self._x_w[idx], "x_l": self._x_l[idx], "cond": self._cond[idx]}
    p, w, l = self.pairs["prompt"][idx], self.pairs["winner"][idx], self.pairs["loser"][idx]
    out = {"x_w": self.data.samples[p, w], "x_l": self.data.samples[p, l], "cond": self.data.cond[p]}
    if self.include_scores:
      out["score_w"], out["score_l"] = self._scores[p, w], self._scores[p, l]
    return out


class RankedLists(_IndexDataset):
  """Batches of ranked lists {"x": (B, k, ...), "phi": (B, k), "cond": (B,)} for RankDPO.

  Args:
    data: a `PreferenceData` or a saved directory.
    batch_size: global batch size (prompts).
    seed, shuffle: as in `ArrayDataset`.
    scores: (P, k) used as "phi" instead of the stored phi (e.g. averaged normalised rewards).
    include_rewards: also yield the raw "rewards" (B, k, n).
  """

  def __init__(self, data, batch_size, *, seed=0, shuffle=True, scores=None, include_rewards=False,
               process_index=None, process_count=None):
    self.data = _as_data(data)
    self._phi = self.data.phi if scores is None else np.asarray(scores, np.float32)
    if self._phi.shape != self.data.phi.shape:
      raise ValueError(f"scores must have shape {self.data.phi.shape} (P, k), got {self._phi.shape}")
    self.include_rewards = include_rewards
    self.k = self.data.k
    self.example_shape = tuple(self.data.samples.shape[2:])
    super().__init__(self.data.num_prompts, batch_size, seed, shuffle, process_index, process_count)

  def _gather(self, idx):
    out = {"x": self.data.samples[idx], "phi": self._phi[idx], "cond": self.data.cond[idx]}
    if self.include_rewards:
      out["rewards"] = self.data.rewards[idx]
    return out


# --- Pick-a-Pic ---------------------------------------------------------------------------------

def pillow_available():
  """Whether Pillow (needed to decode Pick-a-Pic images) is installed."""
  return importlib.util.find_spec("PIL") is not None


def _require_pillow(what):
  if not pillow_available():
    raise ImportError(f"{what} needs Pillow to decode images: `pip install pillow`, or call "
                      "load_pick_a_pic(..., decode=False) to get the encoded bytes and decode later")


def _image_bytes(v, column, row):
  if isinstance(v, dict):
    v = v.get("bytes")
  if not isinstance(v, (bytes, bytearray)):
    raise ValueError(f"column {column!r} row {row}: expected encoded image bytes, got {type(v).__name__}")
  return bytes(v)


def decode_images(encoded, resolution=None, progress=False):
  """Decodes encoded images (PNG/JPEG bytes) to (N, H, W, 3) float32 in [-1, 1].

  Args:
    encoded: sequence of bytes.
    resolution: None (keep sizes; all must agree), an int r (resize the shorter side to r with
      bicubic filtering and centre-crop r x r, as Diffusion-DPO's Resize + CenterCrop), or (H, W)
      (resize to exactly that size).
  """
  _require_pillow("decode_images")
  from PIL import Image
  if resolution is not None and np.ndim(resolution) == 0 and int(resolution) < 1:
    raise ValueError(f"resolution must be >= 1, got {resolution}")
  out = []
  for b in tqdm(encoded, desc="decode", unit="img", disable=not progress):
    img = Image.open(io.BytesIO(b)).convert("RGB")
    if resolution is not None:
      if np.ndim(resolution) == 0:
        r = int(resolution)
        w, h = img.size
        scale = r / min(w, h)
        nw, nh = max(r, round(w * scale)), max(r, round(h * scale))
        img = img.resize((nw, nh), Image.BICUBIC)
        left, top = (nw - r) // 2, (nh - r) // 2
        img = img.crop((left, top, left + r, top + r))
      else:
        h, w = (int(v) for v in resolution)
        img = img.resize((w, h), Image.BICUBIC)
    out.append(np.asarray(img, np.uint8))
  sizes = {a.shape for a in out}
  if len(sizes) > 1:
    raise ValueError(f"images have different sizes {sorted(sizes)}; pass a resolution to resize them")
  if not out:
    return np.zeros((0, 0, 0, 3), np.float32)
  return np.stack(out).astype(np.float32) / 127.5 - 1.0


def _parquet_files(path):
  path = os.fspath(path)
  if os.path.isdir(path):
    files = sorted(glob.glob(os.path.join(path, "**", "*.parquet"), recursive=True))
    if not files:
      raise FileNotFoundError(f"no .parquet files under {path}")
    return files
  if not os.path.isfile(path):
    raise FileNotFoundError(f"Pick-a-Pic path {path} does not exist")
  return [path]


def load_pick_a_pic(path, *, resolution=None, decode=True, max_pairs=None, caption_column="caption",
                    image_columns=("jpg_0", "jpg_1"), label_column="label_0", progress=True):
  """Pairwise preferences in the `yuvalkirstain/pickapic_v2` parquet layout, winner first.

  As Diffusion-DPO's `train.py`: rows with label_0 = 0.5 (ties) are dropped and rows with
  label_0 = 0 (image 1 preferred) are flipped so that "x_w" is always the preferred image.

  Args:
    path: a .parquet file or a directory searched recursively for them (read in sorted order).
    resolution: see `decode_images`.
    decode: decode the images (needs Pillow); False returns the encoded bytes instead.
    max_pairs: keep at most this many (non-tied) pairs.
    caption_column, image_columns, label_column: column names (label_1, if present, must equal
      1 - label_0).
    progress: show progress bars while decoding.

  Returns:
    dict with "x_w", "x_l" ((N, H, W, 3) float32 in [-1, 1], or lists of bytes "jpg_w", "jpg_l"
    when decode=False), "cond" (N,) caption strings, "flipped" (N,) bool (label_0 was 0), "row"
    (N,) int64 index of the pair among all rows read, and "stats" {"rows", "ties", "flipped", "files"}.
  """
  if decode:
    _require_pillow("load_pick_a_pic(decode=True)")
  import pyarrow.parquet as pq
  files = _parquet_files(path)
  captions, win, lose, flipped, rows = [], [], [], [], []
  n_rows = n_ties = 0
  for fname in files:
    names = set(pq.read_schema(fname).names)
    needed = [caption_column, *image_columns, label_column]
    for c in needed:
      if c not in names:
        raise ValueError(f"{fname}: missing column {c!r} (columns: {sorted(names)})")
    has_label_1 = "label_1" in names and label_column == "label_0"
    table = pq.read_table(fname, columns=needed + (["label_1"] if has_label_1 else []))
    label_0 = np.asarray(table.column(label_column).to_numpy(zero_copy_only=False), np.float64)
    bad = ~np.isin(label_0, (0.0, 0.5, 1.0))
    if bad.any():
      i = int(np.nonzero(bad)[0][0])
      raise ValueError(f"{fname}: column {label_column!r} row {i} is {label_0[i]!r}; valid values: 0, 0.5, 1")
    if has_label_1:
      label_1 = np.asarray(table.column("label_1").to_numpy(zero_copy_only=False), np.float64)
      bad = label_0 + label_1 != 1
      if bad.any():
        i = int(np.nonzero(bad)[0][0])
        raise ValueError(f"{fname}: column 'label_1' row {i} is {label_1[i]!r} but label_0 is {label_0[i]!r} "
                         "(expected label_1 = 1 - label_0)")
    cap = table.column(caption_column).to_pylist()
    im0, im1 = table.column(image_columns[0]).to_pylist(), table.column(image_columns[1]).to_pylist()
    for i in range(len(label_0)):
      if max_pairs is not None and len(rows) >= max_pairs:
        break
      n_rows += 1
      if label_0[i] == 0.5:
        n_ties += 1
        continue
      a = _image_bytes(im0[i], image_columns[0], i)
      b = _image_bytes(im1[i], image_columns[1], i)
      flip = label_0[i] == 0.0
      win.append(b if flip else a)
      lose.append(a if flip else b)
      flipped.append(flip)
      captions.append("" if cap[i] is None else str(cap[i]))
      rows.append(n_rows - 1)
    if max_pairs is not None and len(rows) >= max_pairs:
      break
  out = {"cond": np.asarray(captions, dtype=np.str_), "flipped": np.asarray(flipped, bool),
         "row": np.asarray(rows, np.int64),
         "stats": {"rows": n_rows, "ties": n_ties, "flipped": int(np.sum(flipped)), "files": files}}
  if decode:
    out["x_w"] = decode_images(win, resolution, progress=progress)
    out["x_l"] = decode_images(lose, resolution, progress=progress)
  else:
    out["jpg_w"], out["jpg_l"] = win, lose
  return out
