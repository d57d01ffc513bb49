"""Post-training weight quantization (`dj.models.quantize`) against a NumPy transcription of the
official PFGM++ `quantize_tensor` / `dequantize_tensor` (generate_quant.py) and its selection rule."""
import numpy as np
import pytest
from flax import nnx

import diffjax as dj
from diffjax.models import quantize


def _official(x, num_bits):
  """generate_quant.py: min-max scale, int() zero point clamped to [0, qmax], clamp-then-round, dequantize."""
  qmin, qmax = 0.0, 2.0**num_bits - 1.0
  min_val, max_val = x.min(), x.max()
  scale = (max_val - min_val) / (qmax - qmin)
  initial_zero_point = qmin - min_val / scale
  zero_point = int(min(max(initial_zero_point, qmin), qmax))
  q_x = np.round(np.clip(zero_point + x / scale, qmin, qmax))
  return scale * (q_x - zero_point)


@pytest.mark.parametrize("bits", [5, 6, 7, 8, 9])
@pytest.mark.parametrize("shift", [0.0, 0.3, -2.0, 5.0])  # zero point inside, clamped low and high
def test_quantize_dequantize_matches_the_official_rule(x64, bits, shift):
  w = np.random.default_rng(bits).normal(size=(17, 9)) + shift
  out = np.asarray(quantize.quantize_dequantize(np.asarray(w), bits))
  np.testing.assert_allclose(out, _official(w, bits), rtol=0, atol=1e-12)
  assert len(np.unique(out)) <= 2**bits
  if shift == 0.0:  # zero point inside the range: the error is at most one step
    assert np.max(np.abs(out - w)) <= (w.max() - w.min()) / (2**bits - 1) * (1 + 1e-9)


def test_constant_tensor_is_left_alone(x64):
  w = np.full((4, 4), 0.25)
  np.testing.assert_array_equal(np.asarray(quantize.quantize_dequantize(w, 5)), w)


def test_selection_skips_norms_embeddings_and_biases():
  model = dj.models.create("mlp", rngs=nnx.Rngs(0), in_features=4, width=8, num_blocks=2, embedding="fourier",
                           layer_norm=True)
  _, params = dj.models.split_apply(model)
  names = quantize.quantized_paths(params)
  assert names == ["blocks/0/fc1/kernel", "blocks/0/fc2/kernel", "blocks/1/fc1/kernel", "blocks/1/fc2/kernel",
                   "fc_in/kernel", "fc_out/kernel"]
  q = quantize.quantize_params(params, 5)
  for name in names:
    keys = name.split("/")
    a, b = params, q
    for k in keys:
      k = int(k) if k.isdigit() else k
      a, b = a[k], b[k]
    assert not np.array_equal(np.asarray(a.value), np.asarray(b.value))
  np.testing.assert_array_equal(np.asarray(params["fc_in"]["bias"].value), np.asarray(q["fc_in"]["bias"].value))
  np.testing.assert_array_equal(np.asarray(params["embed"]["fc1"]["kernel"].value),
                                np.asarray(q["embed"]["fc1"]["kernel"].value))


def test_bad_bits_are_named():
  with pytest.raises(ValueError, match="bits must be a positive integer"):
    quantize.quantize_dequantize(np.ones(3), 0)
