"""Post-training uniform weight quantization, as the PFGM++ robustness study applies it (Xu et al.
2023, sec. 5.2 / Fig. 5; `Newbeeer/pfgmpp` generate_quant.py `quantize_tensor`, `quant_weight`).

Per tensor, min-max affine quantization to b bits and back:

    scale = (max - min) / (2^b - 1),   zero_point = int(clip(-min / scale, 0, 2^b - 1)),
    q = round(clip(zero_point + w / scale, 0, 2^b - 1)),   w_hat = scale (q - zero_point).

The zero point is truncated to an integer (Python's `int`), as the official code does, so w_hat
is not exactly the nearest grid point of [min, max]; a constant tensor (scale 0) is left as is.
"""
import jax
import jax.numpy as jnp

#: path substrings the official rule skips: normalisation, the per-block embedding affines, the
#: noise-mapping network ("map") and EDM's 32x32 layers ("32"); "emb" adds the MLP's counterparts of
#: the last three (its noise embedding `embed` and per-block projections `emb`)
DEFAULT_EXCLUDE = ("norm", "affine", "map", "32", "emb")
#: leaf names of the weights that are quantized (torch "weight" = nnx "kernel")
WEIGHT_NAMES = ("kernel", "weight")


def quantize_dequantize(w, bits):
  """w -> w_hat: the official min-max quantization of one tensor to `bits` bits and back."""
  if not isinstance(bits, int) or isinstance(bits, bool) or bits < 1:
    raise ValueError(f"bits must be a positive integer, got {bits!r}")
  qmax = 2.0**bits - 1.0
  lo, hi = jnp.min(w), jnp.max(w)
  scale = (hi - lo) / qmax
  safe = jnp.where(scale > 0, scale, 1.0)
  zero_point = jnp.floor(jnp.clip(-lo / safe, 0.0, qmax))  # int() of a value in [0, qmax]
  q = jnp.round(jnp.clip(zero_point + w / safe, 0.0, qmax))
  return jnp.where(scale > 0, safe * (q - zero_point), w).astype(w.dtype)


def _path_name(path):
  keys = [str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path]
  return "/".join(keys[:-1] if keys and keys[-1] == "value" else keys)  # nnx.Param's .value


def quantized_paths(params, exclude=DEFAULT_EXCLUDE):
  """Names ('a/b/kernel') of the leaves `quantize_params` changes."""
  names = []
  for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]:
    name = _path_name(path)
    if name.split("/")[-1] in WEIGHT_NAMES and not any(e in name for e in exclude):
      names.append(name)
  return names


def quantize_params(params, bits, exclude=DEFAULT_EXCLUDE):
  """Every weight leaf (name `kernel`/`weight`, no `exclude` substring in its path) quantized to `bits`."""
  selected = set(quantized_paths(params, exclude))

  def one(path, leaf):
    return quantize_dequantize(leaf, bits) if _path_name(path) in selected else leaf

  return jax.tree_util.tree_map_with_path(one, params)
