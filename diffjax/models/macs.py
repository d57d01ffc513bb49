"""Multiply-accumulate counts of a forward pass, read from its jaxpr (no FLOP is executed).

`count_macs(fn, *args)` traces `fn` with abstract inputs (`jax.make_jaxpr`, so `jax.ShapeDtypeStruct`
arguments work and nothing is allocated) and sums the MACs of every `dot_general` (batch x
contracting x free sizes) and `conv_general_dilated` (output size x kernel window x input
channels per group), including inside nested jaxprs (jit, scan bodies times their length, cond
branches at their maximum). This is the convention of the DiT and DiCo papers' "FLOPs" columns
(which count MACs); elementwise operations are not counted. `dico_torchprofile_macs` adds the
elementwise multiplies that `torchprofile` also counts in DiCo's published figures.
"""
import math

import jax
import numpy as np
from flax import nnx


def _dot_general_macs(eqn):
  lhs, rhs = (v.aval.shape for v in eqn.invars[:2])
  (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
  batch = math.prod(lhs[d] for d in lb)
  contract = math.prod(lhs[d] for d in lc)
  lhs_free = math.prod(s for d, s in enumerate(lhs) if d not in lc and d not in lb)
  rhs_free = math.prod(s for d, s in enumerate(rhs) if d not in rc and d not in rb)
  return batch * contract * lhs_free * rhs_free


def _conv_macs(eqn):
  out = eqn.outvars[0].aval.shape
  rhs = eqn.invars[1].aval.shape
  dn = eqn.params["dimension_numbers"]
  kernel_spatial = math.prod(rhs[d] for d in dn.rhs_spec[2:])
  in_per_group = rhs[dn.rhs_spec[1]]
  return math.prod(out) * kernel_spatial * in_per_group


def _jaxpr_macs(jaxpr):
  total = 0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "dot_general":
      total += _dot_general_macs(eqn)
    elif name == "conv_general_dilated":
      total += _conv_macs(eqn)
    elif name == "scan":
      total += eqn.params["length"] * _jaxpr_macs(eqn.params["jaxpr"].jaxpr)
    elif name == "cond":
      total += max(_jaxpr_macs(b.jaxpr) for b in eqn.params["branches"])
    else:
      for param in eqn.params.values():
        inner = getattr(param, "jaxpr", None)
        if inner is not None:
          total += _jaxpr_macs(inner if hasattr(inner, "eqns") else inner.jaxpr)
  return total


def count_macs(fn, *args, **kwargs):
  """MACs of `fn(*args, **kwargs)` (arrays or `jax.ShapeDtypeStruct`s)."""
  return _jaxpr_macs(jax.make_jaxpr(lambda *a: fn(*a, **kwargs))(*args).jaxpr)


def model_macs(model, x_shape, *, with_labels=True):
  """MACs of one forward of an NNX model `model(x, t, cond)` for a batch of shape `x_shape`."""
  graphdef, state = nnx.split(model)
  b = x_shape[0]
  x = jax.ShapeDtypeStruct(x_shape, np.float32)
  t = jax.ShapeDtypeStruct((b,), np.float32)
  y = jax.ShapeDtypeStruct((b,), np.int32) if with_labels else None

  def fwd(state, x, t, y=None):
    return nnx.merge(graphdef, state)(x, t, y)

  state_shapes = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), state)
  return count_macs(fwd, state_shapes, x, t, *([y] if y is not None else []))


def dico_torchprofile_macs(model, x_shape):
  """DiCo MACs in the convention of its published figures (torchprofile): conv/linear MACs plus one
  per output element of each elementwise multiply torchprofile sees: per block two modulate scales,
  the channel-attention product and two gates (5 H W h), and the final modulate (H W 2C)."""
  b, height, width, _ = x_shape
  extra = 0
  levels = [(model.enc1, 1), (model.enc2, 2), (model.latent, 4), (model.dec2, 2), (model.dec1, 1)]
  for blocks, down in levels:
    for blk in blocks:
      h = blk.conv1.out_features
      extra += 5 * (height // down) * (width // down) * h
  extra += height * width * model.final_norm.num_features
  return model_macs(model, x_shape) + b * extra
