"""Preference-optimization losses against exact oracles (float64).

Identities (notes/preference.md §8.5): every sigmoid-family loss is log 2 per pair at policy =
reference (DDO: (1 + alpha) log 2, KTO: lambda / 2); the Diffusion-DPO gradient at policy =
reference is (beta/4)(d err_w - d err_l); diffusers(beta) == official(2 beta); RankDPO at k = 2 is
Diffusion-DPO times |2^phi1 - 2^phi2| |1/ln 2 - 1/ln 3|; the D3PO/SPO ratio clamp has exactly zero
gradient for ties and outside the band. Loss-type values are compared with numbers computed by
hand with `math`.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffjax.losses import preference as pl

LOG2 = math.log(2.0)


def _sig(z):
  return 1.0 / (1.0 + math.exp(-z))


def _logsig(z):
  return -math.log1p(math.exp(-z))


def _errs(key, b, shape=()):
  return jnp.abs(jax.random.normal(key, (b,) + shape)) + 0.1


# ----------------------------------------------------------------------------------------------
# building blocks
# ----------------------------------------------------------------------------------------------
def test_per_sample_error_is_mean_over_non_batch_dims(x64):
  k1, k2 = jax.random.split(jax.random.PRNGKey(0))
  pred, target = jax.random.normal(k1, (3, 4, 5, 2)), jax.random.normal(k2, (3, 4, 5, 2))
  expected = ((np.asarray(pred) - np.asarray(target))**2).mean(axis=(1, 2, 3))
  np.testing.assert_allclose(pl.per_sample_error(pred, target), expected, rtol=1e-14)
  with pytest.raises(ValueError, match="shape mismatch"):
    pl.per_sample_error(pred, target[:, :3])


def test_diffusion_logratio(x64):
  np.testing.assert_allclose(pl.diffusion_logratio(jnp.array([1.0, 2.0]), jnp.array([0.5, 3.0])),
                             [-0.25, 0.5], rtol=1e-15)
  np.testing.assert_allclose(pl.diffusion_logratio(jnp.array([1.0]), jnp.array([0.5]), scale=1.0), [-0.5])


# ----------------------------------------------------------------------------------------------
# log 2 at policy = reference
# ----------------------------------------------------------------------------------------------
def test_sigmoid_family_is_log2_at_reference(x64):
  key = jax.random.PRNGKey(1)
  e_w, e_l = _errs(key, 5), _errs(jax.random.fold_in(key, 1), 5)
  for scaling in ("official", "diffusers"):
    for loss_type in ("sigmoid", "robust"):
      loss, aux = pl.diffusion_dpo(e_w, e_l, e_w, e_l, beta=5000.0, scaling=scaling, loss_type=loss_type,
                                   label_smoothing=0.1)
      np.testing.assert_allclose(loss, LOG2, rtol=1e-14)
      assert float(aux["implicit_acc"]) == 0.0  # strict > 0, as the official code
  zeros = jnp.zeros(5)
  np.testing.assert_allclose(pl.preference_loss(zeros, zeros, beta=0.1), np.full(5, LOG2), rtol=1e-14)
  # RankDPO: log 2 times the sum of pair weights of each list
  errs = _errs(key, 12).reshape(3, 4)
  phi = jnp.array([[1.0, 2 / 3, 1 / 3, 0.0], [0.5, 0.5, 0.25, 1.0], [0.9, 0.1, 0.4, 0.4]])
  for src in pl.RANK_SOURCES:
    loss, aux = pl.rank_dpo(errs, errs, phi, beta=1000.0, rank_source=src)
    np.testing.assert_allclose(loss, LOG2 * aux["pair_weight_sum"], rtol=1e-14)
    assert float(aux["pair_weight_sum"]) > 0
  # D3PO (strict preferences and ties) and SPO
  lp = jax.random.normal(key, (4,))
  loss, _ = pl.d3po_loss(lp, lp, lp + 1.0, lp + 1.0, jnp.array([1, -1, 0, 1]), beta=0.1)
  np.testing.assert_allclose(loss, LOG2, rtol=1e-14)
  loss, _ = pl.spo_loss(lp, lp, lp - 2.0, lp - 2.0, beta=10.0)
  np.testing.assert_allclose(loss, LOG2, rtol=1e-14)
  # DDO: (1 + alpha) log 2
  loss, aux = pl.ddo_loss(jnp.zeros(6), jnp.zeros(6), alpha=3.0, beta=0.02)
  np.testing.assert_allclose(loss, 4 * LOG2, rtol=1e-14)
  np.testing.assert_allclose(aux["d_real"], 0.5)


def test_kto_at_reference_is_half_the_weight(x64):
  err = _errs(jax.random.PRNGKey(2), 6)
  y = jnp.array([1, 1, 0, 1, 0, 0])
  loss, aux = pl.kto_loss(err, err, y, beta=1000.0, desirable_weight=2.0, undesirable_weight=0.5)
  np.testing.assert_allclose(loss, np.mean(np.where(np.asarray(y) == 1, 2.0, 0.5)) * 0.5, rtol=1e-14)
  assert float(aux["kl"]) == 0.0
  loss, _ = pl.kto_loss(err, err, jnp.ones(6, bool), beta=1.0)
  np.testing.assert_allclose(loss, 0.5, rtol=1e-14)


# ----------------------------------------------------------------------------------------------
# Diffusion-DPO gradient and scalings
# ----------------------------------------------------------------------------------------------
def _linear_policy_errors(w, x_w, x_l, tgt_w, tgt_l):
  """A tiny linear eps-"policy" pred = x @ w; errors are per-sample means over dims."""
  return pl.per_sample_error(x_w @ w, tgt_w), pl.per_sample_error(x_l @ w, tgt_l)


def test_diffusion_dpo_gradient_at_reference_is_beta_over_4(x64):
  keys = jax.random.split(jax.random.PRNGKey(3), 5)
  b, d = 6, 3
  w0 = jax.random.normal(keys[0], (d, d))
  x_w, x_l = jax.random.normal(keys[1], (b, d)), jax.random.normal(keys[2], (b, d))
  tgt_w, tgt_l = jax.random.normal(keys[3], (b, d)), jax.random.normal(keys[4], (b, d))
  ref_w, ref_l = _linear_policy_errors(w0, x_w, x_l, tgt_w, tgt_l)
  beta = 700.0

  def loss_fn(w, scaling="official", beta=beta):
    e_w, e_l = _linear_policy_errors(w, x_w, x_l, tgt_w, tgt_l)
    return pl.diffusion_dpo(e_w, e_l, ref_w, ref_l, beta=beta, scaling=scaling)[0]

  grad = jax.grad(loss_fn)(w0)
  d_err = jax.grad(lambda w: jnp.mean(jnp.subtract(*_linear_policy_errors(w, x_w, x_l, tgt_w, tgt_l))))(w0)
  np.testing.assert_allclose(grad, beta / 4 * d_err, rtol=1e-12, atol=1e-12)
  assert float(jnp.max(jnp.abs(d_err))) > 1e-2
  # diffusers' scaling has no 1/2: its gradient is beta/2 (d err_w - d err_l)
  np.testing.assert_allclose(jax.grad(loss_fn)(w0, "diffusers"), beta / 2 * d_err, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("loss_type", ["sigmoid", "hinge", "robust", "exo_pair", "apo_zero", "bco_pair"])
def test_diffusers_beta_equals_official_2beta(x64, loss_type):
  keys = jax.random.split(jax.random.PRNGKey(4), 4)
  errs = [_errs(k, 7) for k in keys]
  beta = 3.0
  a, aux_a = pl.diffusion_dpo(*errs, beta=beta, scaling="diffusers", loss_type=loss_type, label_smoothing=0.2)
  b, aux_b = pl.diffusion_dpo(*errs, beta=2 * beta, scaling="official", loss_type=loss_type, label_smoothing=0.2)
  np.testing.assert_allclose(a, b, rtol=1e-13)
  np.testing.assert_allclose(aux_a["reward_margin"], aux_b["reward_margin"], rtol=1e-13)
  assert abs(float(a) - float(pl.diffusion_dpo(*errs, beta=beta, scaling="official", loss_type=loss_type,
                                                label_smoothing=0.2)[0])) > 1e-6


def test_diffusion_dpo_official_formula_and_aux(x64):
  pw, plo, rw, rl = jnp.array([0.30, 0.5]), jnp.array([0.40, 0.2]), jnp.array([0.35, 0.45]), jnp.array([0.36, 0.25])
  beta = 10.0
  loss, aux = pl.diffusion_dpo(pw, plo, rw, rl, beta=beta)
  inside = [-0.5 * beta * ((0.30 - 0.35) - (0.40 - 0.36)), -0.5 * beta * ((0.5 - 0.45) - (0.2 - 0.25))]
  np.testing.assert_allclose(loss, np.mean([-_logsig(z) for z in inside]), rtol=1e-13)
  np.testing.assert_allclose(aux["implicit_acc"], 0.5)  # inside = +0.45, -0.5
  np.testing.assert_allclose(aux["reward_margin"], np.mean(inside), rtol=1e-13)
  np.testing.assert_allclose(aux["reward_w"], np.mean([-0.5 * beta * (0.30 - 0.35), -0.5 * beta * (0.5 - 0.45)]),
                             rtol=1e-13)


# ----------------------------------------------------------------------------------------------
# loss types against hand-computed numbers
# ----------------------------------------------------------------------------------------------
def test_loss_types_against_hand_computed_values(x64):
  c, r, beta, eps = 0.7, -0.4, 1.5, 0.1
  z = beta * (c - r)
  expected = {
      "sigmoid": -(1 - eps) * _logsig(z) - eps * _logsig(-z),
      "hinge": max(0.0, 1 - z),
      "ipo": (c - r - 1 / (2 * beta))**2,
      "robust": (-(1 - eps) * _logsig(z) + eps * _logsig(-z)) / (1 - 2 * eps),
      "exo_pair": _sig(z) * (_logsig(z) - math.log(1 - eps)) + _sig(-z) * (_logsig(-z) - math.log(eps)),
      "bco_pair": -_logsig(beta * c) - _logsig(-beta * r),
      "nca_pair": -_logsig(beta * c) - 0.5 * _logsig(-beta * c) - 0.5 * _logsig(-beta * r),
      "sppo_hard": (c - 0.5 / beta)**2 + (r + 0.5 / beta)**2,
      "apo_zero": 1 - _sig(beta * c) + _sig(beta * r),
      "apo_down": _sig(beta * c) + 1 - _sig(z),
  }
  assert set(expected) == set(pl.LOSS_TYPES)
  for loss_type, value in expected.items():
    out = pl.preference_loss(jnp.array([c]), jnp.array([r]), beta=beta, loss_type=loss_type, label_smoothing=eps)
    np.testing.assert_allclose(out, [value], rtol=1e-13, err_msg=loss_type)
  # hinge is active below the margin; exo_pair with eps = 0 uses TRL's 1e-3
  np.testing.assert_allclose(pl.preference_loss(jnp.array([0.1]), jnp.array([0.0]), beta=2.0, loss_type="hinge"), [0.8])
  e = 1e-3
  np.testing.assert_allclose(
      pl.preference_loss(jnp.array([c]), jnp.array([r]), beta=beta, loss_type="exo_pair"),
      [_sig(z) * (_logsig(z) - math.log(1 - e)) + _sig(-z) * (_logsig(-z) - math.log(e))], rtol=1e-13)


# ----------------------------------------------------------------------------------------------
# SFT and KTO
# ----------------------------------------------------------------------------------------------
def test_sft_loss_is_global_mse(x64):
  k1, k2 = jax.random.split(jax.random.PRNGKey(5))
  pred, tgt = jax.random.normal(k1, (3, 2, 4)), jax.random.normal(k2, (3, 2, 4))
  loss, aux = pl.sft_loss(pred, tgt)
  np.testing.assert_allclose(loss, np.mean((np.asarray(pred) - np.asarray(tgt))**2), rtol=1e-14)


def test_kto_values_and_stop_gradient_kl(x64):
  pol, ref = jnp.array([0.2, 0.5, 0.3, 0.1]), jnp.array([0.3, 0.4, 0.35, 0.1])
  y = jnp.array([1, 0, 1, 0])
  beta = 4.0
  g = np.asarray(ref - pol)  # [0.1, -0.1, 0.05, 0]
  kl = max(g.mean(), 0.0)
  expected = np.mean([1 - _sig((1 if yi else -1) * beta * (gi - kl)) for gi, yi in zip(g, [1, 0, 1, 0])])
  loss, aux = pl.kto_loss(pol, ref, y, beta=beta)
  np.testing.assert_allclose(loss, expected, rtol=1e-13)
  np.testing.assert_allclose(aux["kl"], kl, rtol=1e-13)
  # kl is clamped at 0 from below
  _, aux = pl.kto_loss(ref + 0.1, ref, y, beta=beta)
  assert float(aux["kl"]) == 0.0
  # the estimated kl carries no gradient: same gradient as with kl passed in as a constant
  grad_est = jax.grad(lambda p: pl.kto_loss(p, ref, y, beta=beta)[0])(pol)
  grad_fix = jax.grad(lambda p: pl.kto_loss(p, ref, y, beta=beta, kl=kl)[0])(pol)
  np.testing.assert_allclose(grad_est, grad_fix, rtol=1e-13)
  grad_through = jax.grad(lambda p: jnp.mean(1 - jax.nn.sigmoid(
      jnp.where(y == 1, 1.0, -1.0) * beta * ((ref - p) - jnp.maximum(jnp.mean(ref - p), 0.0)))))(pol)
  assert float(jnp.max(jnp.abs(grad_through - grad_est))) > 1e-4  # the check can see a differentiated kl


# ----------------------------------------------------------------------------------------------
# RankDPO
# ----------------------------------------------------------------------------------------------
K2_CONSTANT = 1 / math.log(2) - 1 / math.log(3)


@pytest.mark.parametrize("rank_source", ["target", "predicted"])
def test_rank_dpo_k2_is_gain_weighted_diffusion_dpo(x64, rank_source):
  keys = jax.random.split(jax.random.PRNGKey(6), 2)
  pol, ref = _errs(keys[0], 8).reshape(4, 2), _errs(keys[1], 8).reshape(4, 2)
  phi = jnp.array([[1.0, 0.0], [0.2, 0.7], [0.6, 0.5], [0.3, 0.9]])
  beta = 300.0
  loss, _ = pl.rank_dpo(pol, ref, phi, beta=beta, rank_source=rank_source)
  per_list = []
  for b in range(4):
    w, l = (0, 1) if phi[b, 0] > phi[b, 1] else (1, 0)
    dpo, _ = pl.diffusion_dpo(pol[b, w:w + 1], pol[b, l:l + 1], ref[b, w:w + 1], ref[b, l:l + 1], beta=beta)
    weight = abs(2**float(phi[b, 0]) - 2**float(phi[b, 1])) * K2_CONSTANT
    per_list.append(weight * float(dpo))
  np.testing.assert_allclose(loss, np.mean(per_list), rtol=1e-13)
  np.testing.assert_allclose(K2_CONSTANT, 0.532456, atol=1e-6)


def test_rank_dpo_predicted_vs_target_ranks(x64):
  phi = jnp.array([[0.9, 0.5, 0.1]])
  ref = jnp.full((1, 3), 1.0)
  beta = 2.0
  # predicted order reversed (s ascending = image 2 best): DCG weights differ
  pol_rev = ref + jnp.array([[0.3, 0.2, 0.1]])
  t_loss, _ = pl.rank_dpo(pol_rev, ref, phi, beta=beta, rank_source="target")
  p_loss, _ = pl.rank_dpo(pol_rev, ref, phi, beta=beta, rank_source="predicted")
  assert abs(float(t_loss) - float(p_loss)) > 1e-3
  # hand computation of both
  g = [2**0.9 - 1, 2**0.5 - 1, 2**0.1 - 1]
  s = [0.5 * 0.3, 0.5 * 0.2, 0.5 * 0.1]
  inv_d = lambda tau: 1 / math.log(1 + tau)

  def total(tau):
    return sum(abs(g[i] - g[j]) * abs(inv_d(tau[i]) - inv_d(tau[j])) * -_logsig(-beta * (s[i] - s[j]))
               for i in range(3) for j in range(3) if i < j)

  np.testing.assert_allclose(t_loss, total([1, 2, 3]), rtol=1e-13)
  np.testing.assert_allclose(p_loss, total([3, 2, 1]), rtol=1e-13)
  # the predicted order equal to the target: the two agree
  pol_ok = ref + jnp.array([[0.1, 0.2, 0.3]])
  np.testing.assert_allclose(pl.rank_dpo(pol_ok, ref, phi, beta=beta, rank_source="predicted")[0],
                             pl.rank_dpo(pol_ok, ref, phi, beta=beta, rank_source="target")[0], rtol=1e-14)


def test_rank_dpo_ties_get_zero_weight(x64):
  keys = jax.random.split(jax.random.PRNGKey(7), 2)
  pol, ref = _errs(keys[0], 8).reshape(2, 4), _errs(keys[1], 8).reshape(2, 4)
  phi = jnp.full((2, 4), 0.5)
  loss, aux = pl.rank_dpo(pol, ref, phi, beta=10.0)
  assert float(loss) == 0.0 and float(aux["pair_weight_sum"]) == 0.0
  np.testing.assert_array_equal(jax.grad(lambda p: pl.rank_dpo(p, ref, phi, beta=10.0)[0])(pol), np.zeros((2, 4)))
  # a tied pair inside a list contributes nothing: dropping one of the tied images' pair changes nothing
  phi3 = jnp.array([[0.8, 0.4, 0.4]])
  pol3, ref3 = pol[:1, :3], ref[:1, :3]
  s = 0.5 * (pol3 - ref3)[0]
  g = [2**0.8 - 1, 2**0.4 - 1, 2**0.4 - 1]
  inv_d = [1 / math.log(2), 1 / math.log(3), 1 / math.log(4)]
  expected = sum(abs(g[0] - g[j]) * abs(inv_d[0] - inv_d[j]) * -_logsig(-10.0 * float(s[0] - s[j])) for j in (1, 2))
  np.testing.assert_allclose(pl.rank_dpo(pol3, ref3, phi3, beta=10.0)[0], expected, rtol=1e-13)


# ----------------------------------------------------------------------------------------------
# clipped ratios, D3PO, SPO
# ----------------------------------------------------------------------------------------------
def test_clipped_logratio_values(x64):
  eps = 0.1
  out = pl.clipped_logratio(jnp.array([0.05, 0.5, -0.5, 0.0]), jnp.zeros(4), eps)
  np.testing.assert_allclose(out, [0.05, math.log(1.1), math.log(0.9), 0.0], rtol=1e-14, atol=1e-16)


def _d3po(lp0, lp1, pref, beta=2.0):
  ref = jnp.zeros_like(lp0)
  return pl.d3po_loss(lp0, ref, lp1, ref, pref, beta=beta, clip_eps=0.1)[0]


def test_d3po_gradients_zero_for_ties_and_outside_band(x64):
  grad = jax.grad(_d3po, argnums=(0, 1))
  inside0, inside1 = jnp.array([0.03, -0.02, 0.05]), jnp.array([-0.01, 0.04, 0.0])
  # ties: exactly zero gradient (and log 2)
  g0, g1 = grad(inside0, inside1, jnp.zeros(3))
  np.testing.assert_array_equal(g0, np.zeros(3))
  np.testing.assert_array_equal(g1, np.zeros(3))
  np.testing.assert_allclose(_d3po(inside0, inside1, jnp.zeros(3)), LOG2, rtol=1e-14)
  # outside the band [log 0.9, log 1.1] on both trajectories: zero gradient
  g0, g1 = grad(jnp.array([0.5, -0.3, 0.2]), jnp.array([-0.4, 0.25, -0.2]), jnp.array([1, -1, 1]))
  np.testing.assert_array_equal(g0, np.zeros(3))
  np.testing.assert_array_equal(g1, np.zeros(3))
  # inside: d/dlr0 of -log sig(beta (lr0 h0 - lr1 h0)) = -beta h0 (1 - sig(.)) r0 / r0 ... exact value
  pref = jnp.array([1, -1, 1])
  g0, g1 = grad(inside0, inside1, pref)
  beta = 2.0
  for b in range(3):
    h = float(pref[b])
    z = beta * (float(inside0[b]) - float(inside1[b])) * h
    np.testing.assert_allclose(g0[b], -beta * h * (1 - _sig(z)) / 3, rtol=1e-12)
    np.testing.assert_allclose(g1[b], beta * h * (1 - _sig(z)) / 3, rtol=1e-12)
  # the value is the official formula
  z = [beta * (0.03 - (-0.01)), beta * -(-0.02 - 0.04), beta * (0.05 - 0.0)]
  np.testing.assert_allclose(_d3po(inside0, inside1, pref), np.mean([-_logsig(v) for v in z]), rtol=1e-12)


def test_spo_gradients_and_mask(x64):
  ref = jnp.zeros(3)

  def f(lw, ll, mask=None):
    return pl.spo_loss(lw, ref, ll, ref, beta=10.0, clip_eps=0.1, mask=mask)[0]

  grad = jax.grad(f, argnums=(0, 1))
  gw, gl = grad(jnp.array([0.3, -0.2, 0.15]), jnp.array([-0.5, 0.2, 0.11]))
  np.testing.assert_array_equal(gw, np.zeros(3))
  np.testing.assert_array_equal(gl, np.zeros(3))
  lw, ll = jnp.array([0.02, -0.03, 0.01]), jnp.array([0.0, 0.05, -0.04])
  gw, gl = grad(lw, ll)
  expected = [-10.0 * (1 - _sig(10.0 * (float(a) - float(b)))) / 3 for a, b in zip(lw, ll)]
  np.testing.assert_allclose(gw, expected, rtol=1e-12)
  np.testing.assert_allclose(gl, -np.asarray(expected), rtol=1e-12)
  # dropped pairs (the SPO threshold) carry no gradient and leave the mean over kept pairs
  mask = jnp.array([True, False, True])
  gw, gl = grad(lw, ll, mask)
  assert float(gw[1]) == 0.0 and float(gl[1]) == 0.0 and float(jnp.abs(gw[0])) > 0
  np.testing.assert_allclose(f(lw, ll, mask), np.mean([-_logsig(10.0 * (float(lw[i]) - float(ll[i]))) for i in (0, 2)]),
                             rtol=1e-13)
  loss, aux = pl.spo_loss(lw, ref, ll, ref, beta=10.0, mask=jnp.zeros(3, bool))
  assert float(loss) == 0.0 and float(aux["num_kept"]) == 0.0


def test_spo_select_pair(x64):
  scores = jnp.array([[0.1, 2.0, -1.0, 0.5],      # w = 1, l = 2, margin tanh(1.5) = 0.905 > 0.3
                      [0.30, 0.20, 0.25, 0.22],   # w = 0, l = 1, tanh(0.05) = 0.05 < 0.3
                      [1.0, 1.0, 1.0, 1.0],       # all tied: w = 0, l = 3, never kept
                      [-2.0, 0.0, 0.0, 1.2]])     # w = 3, l = 0, tanh(1.6) > 0.3
  idx_w, idx_l, keep = pl.spo_select_pair(scores, 0.3)
  np.testing.assert_array_equal(idx_w, [1, 0, 0, 3])
  np.testing.assert_array_equal(idx_l, [2, 1, 3, 0])
  np.testing.assert_array_equal(keep, [True, False, False, True])
  # the threshold is on softmax([s_w, s_l])[0] - [1] = tanh((s_w - s_l)/2)
  margin = math.tanh(0.6 / 2)  # K = 2 candidates with s_w - s_l = 0.6
  two = jnp.array([[0.6, 0.0]])
  assert bool(pl.spo_select_pair(two, margin - 1e-9)[2][0]) and not bool(pl.spo_select_pair(two, margin + 1e-9)[2][0])


# ----------------------------------------------------------------------------------------------
# DDO
# ----------------------------------------------------------------------------------------------
def test_ddo_logratios_and_loss(x64):
  keys = jax.random.split(jax.random.PRNGKey(8), 3)
  x = jax.random.normal(keys[0], (3, 2, 2))
  d_p, d_r = x + 0.1 * jax.random.normal(keys[1], x.shape), x + 0.2 * jax.random.normal(keys[2], x.shape)
  sigma = jnp.array([0.1, 1.0, 5.0])
  w = (np.asarray(sigma)**2 + 0.25) / (np.asarray(sigma) * 0.5)**2
  sse = lambda a: ((np.asarray(a) - np.asarray(x))**2).sum(axis=(1, 2))
  r = pl.edm_ddo_logratio(d_p, d_r, x, sigma)
  np.testing.assert_allclose(r, -w * sse(d_p) + w * sse(d_r), rtol=1e-13)
  np.testing.assert_allclose(pl.eps_ddo_logratio(d_p, d_r, x), -(sse(d_p) - sse(d_r)), rtol=1e-13)
  np.testing.assert_allclose(pl.edm_ddo_logratio(d_r, d_r, x, sigma), np.zeros(3))
  rr, rf = jnp.array([0.5, -1.0]), jnp.array([2.0, 0.3])
  alpha, beta = 2.0, 0.7
  expected = np.mean([-_logsig(beta * a) - alpha * _logsig(-beta * b) for a, b in zip([0.5, -1.0], [2.0, 0.3])])
  np.testing.assert_allclose(pl.ddo_loss(rr, rf, alpha=alpha, beta=beta)[0], expected, rtol=1e-13)


# ----------------------------------------------------------------------------------------------
# argument errors
# ----------------------------------------------------------------------------------------------
def test_argument_errors(x64):
  e = jnp.ones(3)
  with pytest.raises(ValueError, match=r"loss_type 'dpo'.*valid choices.*sigmoid.*hinge.*ipo"):
    pl.preference_loss(e, e, beta=1.0, loss_type="dpo")
  with pytest.raises(ValueError, match="loss_type"):
    pl.diffusion_dpo(e, e, e, e, beta=1.0, loss_type="kto")
  with pytest.raises(ValueError, match=r"scaling 'paper'.*official.*diffusers"):
    pl.diffusion_dpo(e, e, e, e, beta=1.0, scaling="paper")
  for bad in (0.0, -1.0):
    with pytest.raises(ValueError, match="beta must be > 0"):
      pl.diffusion_dpo(e, e, e, e, beta=bad)
    with pytest.raises(ValueError, match="beta must be > 0"):
      pl.kto_loss(e, e, e, beta=bad)
    with pytest.raises(ValueError, match="beta must be > 0"):
      pl.d3po_loss(e, e, e, e, e, beta=bad)
    with pytest.raises(ValueError, match="beta must be > 0"):
      pl.ddo_loss(e, e, alpha=1.0, beta=bad)
    with pytest.raises(ValueError, match="beta must be > 0"):
      pl.rank_dpo(e[None], e[None], e[None], beta=bad)
  with pytest.raises(ValueError, match="shape mismatch.*ref_err_l"):
    pl.diffusion_dpo(e, e, e, jnp.ones(4), beta=1.0)
  with pytest.raises(ValueError, match="shape mismatch"):
    pl.rank_dpo(jnp.ones((2, 3)), jnp.ones((2, 3)), jnp.ones((2, 4)), beta=1.0)
  with pytest.raises(ValueError, match=r"rank_source 'model'.*target.*predicted"):
    pl.rank_dpo(jnp.ones((2, 3)), jnp.ones((2, 3)), jnp.ones((2, 3)), beta=1.0, rank_source="model")
  with pytest.raises(ValueError, match=r"policy_err must have shape \(B, k\)"):
    pl.rank_dpo(e, e, e, beta=1.0)
  for bad in (0.0, 1.0, -0.1, 1.5):
    with pytest.raises(ValueError, match=r"clip_eps must lie in the open interval \(0, 1\)"):
      pl.d3po_loss(e, e, e, e, e, beta=1.0, clip_eps=bad)
    with pytest.raises(ValueError, match="clip_eps"):
      pl.spo_loss(e, e, e, e, beta=1.0, clip_eps=bad)
    with pytest.raises(ValueError, match="clip_eps"):
      pl.clipped_logratio(e, e, bad)
  with pytest.raises(ValueError, match=r"preference must hold only \+1.*-1.*0"):
    pl.d3po_loss(e, e, e, e, jnp.array([1, 2, 0]), beta=1.0)
  with pytest.raises(ValueError, match="desirable must hold only 0/1"):
    pl.kto_loss(e, e, jnp.array([0, 1, 2]), beta=1.0)
  with pytest.raises(ValueError, match=r"label_smoothing must lie in \[0, 0.5\)"):
    pl.preference_loss(e, e, beta=1.0, loss_type="robust", label_smoothing=0.5)
  with pytest.raises(ValueError, match="alpha must be >= 0"):
    pl.ddo_loss(e, e, alpha=-1.0, beta=1.0)
  with pytest.raises(ValueError, match="shape mismatch"):
    pl.edm_ddo_logratio(jnp.ones((2, 3)), jnp.ones((2, 3)), jnp.ones((2, 4)), 1.0)
  with pytest.raises(ValueError, match="K >= 2"):
    pl.spo_select_pair(jnp.ones((3, 1)), 0.3)


def test_losses_jit_with_traced_beta(x64):
  """Value checks are skipped for traced arguments; jit gives the eager values."""
  e = _errs(jax.random.PRNGKey(9), 4)
  f = jax.jit(lambda beta: pl.diffusion_dpo(e, e * 1.1, e * 0.9, e, beta=beta)[0])
  np.testing.assert_allclose(f(3.0), pl.diffusion_dpo(e, e * 1.1, e * 0.9, e, beta=3.0)[0], rtol=1e-14)
  g = jax.jit(lambda lp, pref: pl.d3po_loss(lp, lp * 0, lp, lp * 0, pref, beta=1.0)[0])
  np.testing.assert_allclose(g(e * 0.01, jnp.array([1, -1, 0, 1])),
                             pl.d3po_loss(e * 0.01, e * 0, e * 0.01, e * 0, jnp.array([1, -1, 0, 1]), beta=1.0)[0])


def test_clipped_logratio_has_a_finite_zero_gradient_for_huge_ratios():
  """The ratio exp(400) overflows float32; the clipped log-ratio and its gradient stay exact."""
  from diffjax.losses.preference import clipped_logratio
  lp = jnp.array([400.0, -400.0, 0.05], jnp.float32)
  value, grad = jax.value_and_grad(lambda a: jnp.sum(clipped_logratio(a, jnp.zeros(3, jnp.float32), 0.1)))(lp)
  np.testing.assert_allclose(clipped_logratio(lp, jnp.zeros(3, jnp.float32), 0.1), [np.log(1.1), np.log(0.9), 0.05], rtol=1e-6)
  np.testing.assert_array_equal(grad, [0.0, 0.0, 1.0])
