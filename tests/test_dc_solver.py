"""DC-Solver: ratios 1 are UniPC; the ratio search lowers the error to a fine reference."""
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from diffjax import processes as P  # noqa: E402
from diffjax import timesteps  # noqa: E402
from diffjax.data import toy  # noqa: E402
from diffjax.samplers.dc_solver import (CPRParams, dc_solver, fit_cascade_polynomial, load_cpr_params,  # noqa: E402
                                        predict_dc_ratios, save_cpr_params, search_dc_ratios)
from diffjax.samplers.ddim import ddim  # noqa: E402
from diffjax.samplers.unipc import unipc  # noqa: E402

VP = P.VP()


def _setup():
  mixture = toy.GaussianMixture(jnp.array([0.3, 0.7]), jnp.array([[1.0, 0.5], [-1.0, -0.5]]), jnp.array([0.05, 0.2]))
  den = lambda x, t: mixture.denoiser(x, t, VP)
  x = jax.random.normal(jax.random.PRNGKey(0), (10, 2))
  ts = timesteps.log_snr_uniform(6, 1.0, 1e-3, VP)
  return den, x, ts


def test_unit_ratios_are_unipc(x64):
  den, x, ts = _setup()
  for order, variant in ((2, "bh2"), (3, "bh1")):
    np.testing.assert_allclose(dc_solver(den, x, ts, process=VP, dc_ratios=jnp.ones(6), order=order, variant=variant),
                               unipc(den, x, ts, process=VP, order=order, variant=variant), rtol=1e-12, atol=1e-13)


def test_ratio_search_reduces_error(x64):
  den, x, ts = _setup()
  ratios, losses = search_dc_ratios(den, x, ts, process=VP, num_iters=40)
  assert ratios.shape == (6,) and float(ratios[0]) == 1.0 and float(ratios[1]) == 1.0
  fine = jnp.linspace(0.0, 1.0, 6 * 40 + 1)
  fine = VP.t_from_log_snr(VP.log_snr(1.0) + fine * (VP.log_snr(1e-3) - VP.log_snr(1.0)))
  ref = ddim(den, x, fine, process=VP)
  err = lambda r: float(jnp.sqrt(jnp.mean((dc_solver(den, x, ts, process=VP, dc_ratios=r,
                                                     lower_order_final=False) - ref)**2)))
  assert err(ratios) < err(jnp.ones(6))


def _official_predict(coeffs, cfg, nfe, step):
  """A transcription of the official `cascade_polynomial_regression.predict` (DC-Solver scheduler)."""
  cfg, x, n = cfg / 12, step / nfe, nfe / 50
  c = np.asarray(coeffs).reshape(-1, 3, 3)
  c1 = c[..., 0] * n**2 + c[..., 1] * n + c[..., 2]
  c2 = c1[..., 0] * cfg**2 + c1[..., 1] * cfg + c1[..., 2]
  return sum(c2[i] * x**i for i in range(c2.shape[0]))


def _official_ratios(coeffs, cfg, nfe):
  """The official `cascade_polynomial_regression(test_CFG, test_NFE, ...)` list (steps < 3 give 1)."""
  return [1.0 if k < 3 else _official_predict(coeffs, cfg, nfe, k) for k in range(1, nfe + 1)]


def _curve(ratios, nfe, deg):
  """Independent oracle: numpy's least-squares polynomial in x = k / nfe through steps k >= 3."""
  k = np.arange(3, nfe + 1)
  return np.concatenate([[1.0, 1.0], np.polyval(np.polyfit(k / nfe, ratios[2:], deg), k / nfe)])


def test_cascade_polynomial_matches_the_official_formula(x64):
  coeffs = np.random.default_rng(0).normal(size=36)
  for params in (coeffs, CPRParams(coeffs.reshape(4, 3, 3))):
    for cfg, nfe in ((7.5, 10), (3.0, 6), (1.0, 25), (12.0, 2)):
      ratios = predict_dc_ratios(params, nfe, cfg)
      assert isinstance(ratios, jax.Array) and ratios.shape == (nfe,) and ratios.dtype == jnp.float64
      np.testing.assert_allclose(ratios, _official_ratios(coeffs, cfg, nfe), rtol=1e-13, atol=1e-13)
  # traced guidance scale, params as a pytree argument
  f = jax.jit(predict_dc_ratios, static_argnums=1)
  np.testing.assert_allclose(f(CPRParams(coeffs.reshape(4, 3, 3)), 9, 4.5), _official_ratios(coeffs, 4.5, 9),
                             rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("method", ["least_squares", "cascade"])
def test_fit_recovers_a_cascade_polynomial(x64, method):
  rng = np.random.default_rng(1)
  coeffs = rng.normal(size=(4, 3, 3))
  truth = CPRParams(coeffs)
  searched = {(w, n): np.asarray(_official_ratios(coeffs, w, n)) for w in (1.5, 4.0, 7.5, 10.0)
              for n in (8, 10, 15, 25)}
  fitted = fit_cascade_polynomial(searched, method=method)
  assert isinstance(fitted, CPRParams) and fitted.coeffs.shape == (4, 3, 3) and fitted.degrees == (3, 2, 2)
  np.testing.assert_allclose(fitted.coeffs, coeffs, rtol=0, atol=1e-8)  # condition number ~1e6
  for (w, n), ratios in searched.items():
    np.testing.assert_allclose(predict_dc_ratios(fitted, n, w), ratios, rtol=0, atol=1e-10)
  for w, n in ((6.0, 12), (7.5, 20), (3.0, 6), (12.0, 40)):  # unseen step counts and scales
    np.testing.assert_allclose(predict_dc_ratios(fitted, n, w), predict_dc_ratios(truth, n, w), rtol=0, atol=1e-10)
  # other degrees and normalisations
  coeffs = rng.normal(size=(3, 2, 4))
  truth = CPRParams(coeffs, guidance_norm=3.0, nfe_norm=20.0)
  searched = {(w, n): np.asarray(predict_dc_ratios(truth, n, w)) for w in (1.0, 2.0) for n in (6, 8, 10, 14)}
  fitted = fit_cascade_polynomial(searched, degrees=(2, 1, 3), method=method, guidance_norm=3.0, nfe_norm=20.0)
  np.testing.assert_allclose(fitted.coeffs, coeffs, rtol=0, atol=1e-8)
  np.testing.assert_allclose(predict_dc_ratios(fitted, 12, 1.5), predict_dc_ratios(truth, 12, 1.5), rtol=0, atol=1e-10)


def test_prediction_at_a_searched_setting_is_its_fitted_curve(x64):
  # arbitrary (not cascade-polynomial) ratios on a full 3 x 3 grid: both fits reduce to a cubic
  # least-squares fit in x per setting, so each searched setting gets back its own fitted curve
  rng = np.random.default_rng(2)
  searched = {(w, n): 1.0 + 0.2 * rng.normal(size=n) for w in (2.0, 5.0, 9.0) for n in (7, 10, 16)}
  for method in ("least_squares", "cascade"):
    fitted = fit_cascade_polynomial(searched, method=method)
    for (w, n), ratios in searched.items():
      np.testing.assert_allclose(predict_dc_ratios(fitted, n, w), _curve(ratios, n, 3), rtol=0, atol=1e-10)


def test_least_squares_fit_solves_the_normal_equations(x64):
  # more settings than coefficients and noisy ratios: the residual is orthogonal to every basis
  # function, each built from the official formula with a unit coefficient vector
  rng = np.random.default_rng(3)
  searched = {(w, n): 1.0 + 0.1 * rng.normal(size=n) for w in (1.5, 4.0, 7.5, 10.0) for n in (6, 8, 10, 15)}
  fitted = fit_cascade_polynomial(searched)
  basis = np.stack([np.concatenate([np.asarray(_official_ratios(e, w, n))[2:] for (w, n) in searched])
                    for e in np.eye(36)], axis=1)
  residual = np.concatenate([np.asarray(predict_dc_ratios(fitted, n, w) - r)[2:] for (w, n), r in searched.items()])
  assert np.abs(basis.T @ residual).max() < 1e-9 * np.linalg.norm(basis) * np.linalg.norm(residual)
  cascade = fit_cascade_polynomial(searched, method="cascade")
  loss = lambda p: sum(float(jnp.sum((predict_dc_ratios(p, n, w) - r)[2:]**2)) for (w, n), r in searched.items())
  assert loss(fitted) <= loss(cascade) * (1 + 1e-12)  # the joint fit minimises the total squared error


def test_cpr_params_save_load_and_official_file(x64, tmp_path):
  coeffs = np.random.default_rng(4).normal(size=(4, 3, 3))
  params = CPRParams(coeffs, guidance_norm=10.0, nfe_norm=40.0)
  save_cpr_params(tmp_path / "cpr.npz", params)
  loaded = load_cpr_params(str(tmp_path / "cpr.npz"))
  assert (loaded.guidance_norm, loaded.nfe_norm) == (10.0, 40.0)
  np.testing.assert_array_equal(loaded.coeffs, coeffs)
  np.save(tmp_path / "official.npy", coeffs.reshape(-1))  # the official layout: 36 float64
  official = load_cpr_params(str(tmp_path / "official.npy"))
  np.testing.assert_allclose(predict_dc_ratios(official, 10, 7.5), _official_ratios(coeffs, 7.5, 10), rtol=1e-13,
                             atol=1e-13)
  assert [leaf.shape for leaf in jax.tree_util.tree_leaves(params)] == [(4, 3, 3)]


def test_unit_cascade_polynomial_is_unipc(x64):
  coeffs = np.zeros((4, 3, 3))
  coeffs[0, -1, -1] = 1.0  # rho = 1 everywhere
  den, x, ts = _setup()
  ratios = predict_dc_ratios(CPRParams(coeffs), 6, 7.5)
  np.testing.assert_array_equal(ratios, np.ones(6))
  np.testing.assert_allclose(dc_solver(den, x, ts, process=VP, dc_ratios=ratios), unipc(den, x, ts, process=VP),
                             rtol=1e-12, atol=1e-13)


def test_cascade_polynomial_errors():
  ones = {(w, n): np.ones(n) for w in (1.0, 4.0, 7.5) for n in (8, 10, 12)}
  bad = [
      (dict(searched={}), "searched must be a non-empty dict"),
      (dict(searched=[np.ones(10)]), "searched must be a non-empty dict"),
      (dict(searched={7.5: np.ones(10)}), "searched keys must be"),
      (dict(searched={(7.5, 10.0): np.ones(10)}), "nfe of searched key"),
      (dict(searched={(7.5, 0): np.ones(0)}), "nfe of searched key"),
      (dict(searched={(float("nan"), 10): np.ones(10)}), "guidance_scale of searched key"),
      (dict(searched={(7.5, 10): np.ones(9)}), r"searched\[\(7.5, 10\)\] must have shape \(10,\)"),
      (dict(searched={(7.5, 10): np.full(10, np.inf)}), "non-finite"),
      (dict(searched={(7.5, 10): np.ones(10), (5.0, 10): np.ones(10)}),
       "searched settings do not determine the 36 coefficients of degrees"),
      (dict(searched=ones, degrees=(3, 2)), "degrees must be three non-negative ints"),
      (dict(searched=ones, degrees=(3, -1, 2)), "degrees must be three non-negative ints"),
      (dict(searched=ones, method="polyfit"), r"method must be one of \('least_squares', 'cascade'\)"),
      (dict(searched=ones, guidance_norm=0.0), "guidance_norm must be a positive finite number"),
      (dict(searched=ones, nfe_norm=float("inf")), "nfe_norm must be a positive finite number"),
      (dict(searched={**ones, (2.0, 14): np.ones(14)}, method="cascade"),
       "needs >= 3 guidance scales at every step count in searched; nfe 14 has"),
      (dict(searched={k: v for k, v in ones.items() if k[1] != 12}, method="cascade"), "needs >= 3 step counts"),
      (dict(searched={(w, n): np.ones(n) for w in (1.0, 4.0, 7.5) for n in (5, 8, 10)}, method="cascade"),
       "needs nfe >= 6 in searched, got nfe 5"),
  ]
  for kwargs, message in bad:
    with pytest.raises(ValueError, match=message):
      fit_cascade_polynomial(**kwargs)
  with pytest.raises(ValueError, match=r"params must be CPRParams or the official 36 coefficients"):
    predict_dc_ratios(np.ones(35), 10)
  with pytest.raises(ValueError, match=r"params.coeffs must have shape"):
    predict_dc_ratios(CPRParams(np.ones((4, 3))), 10)
  for nfe in (0, 10.0, True):
    with pytest.raises(ValueError, match="nfe must be a positive int"):
      predict_dc_ratios(np.ones(36), nfe)
