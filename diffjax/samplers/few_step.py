"""Few-step samplers for distilled students: one network call per entry of `ts`.

  consistency_multistep   consistency models' multistep sampling (Song et al. 2023, "Consistency
                          Models", Algorithm 1): denoise with f, re-noise to the next level, repeat
  renoise_multistep       DMD2's multi-step generator (Yin et al. 2024, sec. 4.5; `tianweiy/DMD2`
                          `main/sd_unified_model.py`): x0 = G(x_t, t), then forward-noise x0 to the
                          next t with fresh Gaussian noise; the same chain is DMD2's backward
                          simulation during training

Unlike the ODE/SDE samplers, `ts` lists the times at which the network is *called*, from noise
down, and the last call's output is the sample: NFE = len(ts), and a one-step student is
`ts = [t_max]`. `x` is the prior sample at ts[0]. Both run as one `lax.scan`; the noise of step
i is drawn from `fold_in(key, i)`.
"""
import jax
import jax.numpy as jnp

from diffjax import utils


def _check_call_times(ts, fn):
  ts = jnp.asarray(ts)
  if ts.ndim != 1 or ts.shape[0] < 1:
    raise ValueError(f"{fn}: ts must be a 1-D array of at least one time (the network's call times, noise to "
                     f"data), got shape {ts.shape}")
  return ts


def _chain(network, x, ts, key, renoise, fn):
  """x0 = network(x, ts[0]); for each next t: x = renoise(x0, t, key_i); x0 = network(x, t)."""
  ts = _check_call_times(ts, fn).astype(x.dtype)
  if ts.shape[0] > 1 and key is None:
    raise ValueError(f"{fn}: key is required when ts has more than one time (each step re-noises)")
  x0 = network(x, utils.batch_times(ts[0], x))

  def body(x0, inputs):
    i, t = inputs
    x_t = renoise(x0, t, jax.random.fold_in(key, i))
    return network(x_t, utils.batch_times(t, x_t)), None

  if ts.shape[0] > 1:
    x0, _ = jax.lax.scan(body, x0, (jnp.arange(1, ts.shape[0]), ts[1:]))
  return x0


def consistency_multistep(consistency_fn, x, ts, *, key=None, sigma_min=0.002):
  """Multistep consistency sampling (Song et al. 2023, Algorithm 1), for the EDM/VE process.

      x0 = f(x, T);  for tau in ts[1:]:  x = x0 + sqrt(tau^2 - sigma_min^2) z;  x0 = f(x, tau)

  The re-noising std is sqrt(tau^2 - sigma_min^2) because f maps to the boundary sigma_min, not
  to 0 (`consistency_models_cifar10` `jcm/sampling.py`, the paper's eps). With the exact
  consistency function every iterate has the data distribution convolved with N(0, sigma_min^2).

  Args:
    consistency_fn: `f(x, sigma) -> x` at sigma_min, sigma of shape (B,).
    x: the prior sample at ts[0] (= T * z for EDM), shape (B, ...).
    ts: noise levels of the calls, descending, ts[0] = T (e.g. `[80.0]`, or `[80.0, 0.821]` for
      iCT's two-step sampling); all >= sigma_min.
    key: PRNG key, required when len(ts) > 1.
    sigma_min: the consistency function's boundary noise level.
  """
  def renoise(x0, tau, k):
    std = jnp.sqrt(jnp.maximum(tau**2 - sigma_min**2, 0.0))
    return x0 + std * jax.random.normal(k, x0.shape, x0.dtype)

  return _chain(consistency_fn, x, ts, key, renoise, "consistency_multistep")


def renoise_multistep(generator, x, ts, *, process, key=None):
  """DMD2's multi-step generator chain: x0 = G(x_t, t), x_{t'} = alpha_{t'} x0 + sigma_{t'} eps.

  `sd_unified_model.py` with `denoising_step_list = [999, 749, 499, 249]`: the generator predicts
  x0 at each listed time and the next input is x0 forward-noised with *fresh* noise (not the
  predicted eps, unlike DDIM). Any process: alpha and sigma come from `process`.

  Args:
    generator: `G(x_t, t) -> x0`, t of shape (B,).
    x: the prior sample at ts[0], shape (B, ...).
    ts: the generator's times, descending.
    process: the noise process (alpha, sigma).
    key: PRNG key, required when len(ts) > 1.
  """
  def renoise(x0, t, k):
    return process.alpha(t) * x0 + process.sigma(t) * jax.random.normal(k, x0.shape, x0.dtype)

  return _chain(generator, x, ts, key, renoise, "renoise_multistep")
