"""Multiply-accumulate counts of a forward pass, read from its jaxpr (no FLOP is executed).

`count_macs(fn, *args)` traces `fn` with abstract inputs (`jax.make_jaxpr`, so `jax.ShapeDtypeStruct`
arguments work and nothing is allocated) and sums the MACs of every `dot_general`
(batch x contracting x lhs-free x rhs-free sizes) and `conv_general_dilated` (output size x kernel
window x input channels per group), including inside nested jaxprs: jit / custom_jvp / custom_vjp
calls, `scan` bodies times their length, `cond` branches at their maximum and `while` bodies once
(the trip count is not static).

This is the convention of the DiT paper's "Gflops" (Peebles & Xie 2023, Table 4: linear, conv and
the attention matmuls QK^T and AV, in MACs; DiT-XL/2 118.6 at 256x256), reproduced exactly here.
Elementwise operations, normalisations, softmax and embedding look-ups are not counted. DiCo's
README "FLOPs" (Ai et al. 2025) come from `torchprofile.profile_macs`, which also counts one MAC per
output element of each elementwise multiply; `dico_torchprofile_macs` adds those.
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


def _as_jaxpr(value):
  """The Jaxpr in a ClosedJaxpr or Jaxpr eqn parameter, else None."""
  if hasattr(value, "eqns"):
    return value
  inner = getattr(value, "jaxpr", None)
  return inner if hasattr(inner, "eqns") else None


def _jaxpr_macs(jaxpr):
  total = 0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "dot_general":
      total += _dot_general_macs(eqn)
    elif name == "conv_general_dilated":
      total += _conv_macs(eqn)
    elif name == "scan":
      total += eqn.params["length"] * _jaxpr_macs(_as_jaxpr(eqn.params["jaxpr"]))
    elif name == "cond":
      total += max(_jaxpr_macs(_as_jaxpr(b)) for b in eqn.params["branches"])
    elif name == "while":
      total += _jaxpr_macs(_as_jaxpr(eqn.params["body_jaxpr"]))
    else:  # pjit, closed_call, remat, custom_jvp_call (call_jaxpr), custom_vjp_call (fun_jaxpr / call_jaxpr)
      for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        inner = _as_jaxpr(eqn.params.get(key))
        if inner is not None:
          total += _jaxpr_macs(inner)
          break
  return total


def count_macs(fn, *args, **kwargs):
  """MACs of `fn(*args, **kwargs)`, args being arrays or `jax.ShapeDtypeStruct`s (nothing is run)."""
  return _jaxpr_macs(jax.make_jaxpr(lambda *a: fn(*a, **kwargs))(*args).jaxpr)


def model_macs(model, x_shape, *, with_labels=True):
  """MACs of one forward `model(x, t, cond)` of an NNX model (real or from `nnx.eval_shape`).

  Args:
    model: an NNX module called as `model(x, t, cond=None)`.
    x_shape: the NHWC (or (B, features)) input shape; use batch 1 for per-sample figures.
    with_labels: pass integer labels as cond (False: cond=None).

  Returns:
    An int, the total MACs of the batch.
  """
  graphdef, state = nnx.split(model)
  b = x_shape[0]
  x = jax.ShapeDtypeStruct(x_shape, np.float32)
  t = jax.ShapeDtypeStruct((b,), np.float32)
  y = jax.ShapeDtypeStruct((b,), np.int32) if with_labels else None

  def fwd(state, x, t, y=None):
    return nnx.merge(graphdef, state)(x, t, y)

  state_shapes = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), state)
  return count_macs(fwd, state_shapes, x, t, *([y] if y is not None else []))


def dico_elementwise_muls(model, x_shape):
  """The elementwise multiplies torchprofile counts in a DiCo forward (Ai et al. 2025, README FLOPs):
  per block of width h at H' x W' two modulate scales, the CCA product and two gates (5 H' W' h),
  and the final modulate (H W 2C), per sample, times the batch."""
  b, height, width, _ = x_shape
  extra = 0
  for blocks, down in model.levels():
    for blk in blocks:
      extra += 5 * (height // down) * (width // down) * blk.conv1.out_features
  extra += height * width * model.final_norm.num_features
  return b * extra


def dico_torchprofile_macs(model, x_shape):
  """DiCo MACs in the convention of its published figures: `model_macs` + `dico_elementwise_muls`."""
  return model_macs(model, x_shape) + dico_elementwise_muls(model, x_shape)
