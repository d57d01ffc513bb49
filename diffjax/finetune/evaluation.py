"""How far a fine-tuned policy moved, and what it gained: reward, accuracy, coverage, divergence.

`evaluate_policy` draws samples of the policy with the stochastic DDIM sampler the trajectory
methods train on and reports

  reward            mean of `reward_fn` over the samples
  accuracy          mean of `accuracy_fn` (e.g. target-mode hit, classifier agrees with the label)
  path_kl           the exact KL(p_policy(x_{0:T}) || p_ref(x_{0:T})) of the sampler, estimated on
                    policy trajectories (`transition_logprob.path_kl`); it bounds the KL of the
                    samples' marginals from above (chain rule / data processing)
  sample_mmd        MMD between policy samples and reference samples (same prompts): a sample-based
                    divergence that needs no model
  data_mmd          MMD between policy samples and held-out data (DDO's target)
  mode shares       per-mode shares and off-mode fraction (`metrics.mode_coverage`) on toy mixtures
"""
import jax
import jax.numpy as jnp
import numpy as np

from diffjax import metrics
from diffjax.finetune.generation import sample_images
from diffjax.finetune.reference import POLICY, REFERENCE
from diffjax.samplers import transition_logprob as tlp


def evaluate_policy(denoiser, params, key, cond, shape, *, process, ts, reward_fn, accuracy_fn=None,
                    mixture=None, eta=1.0, reference_samples=None, data_samples=None):
  """Metrics of `params[POLICY]` against `params[REFERENCE]` (module docstring).

  Args:
    denoiser: `denoiser(params, x, t, cond) -> x0_hat`.
    params: `{"policy", "reference"}`.
    key: PRNG key (the same key gives the same prior noise for policy and reference samples).
    cond: (n,) labels or None; shape: (n, ...) of the samples.
    reward_fn, accuracy_fn: `f(x, cond) -> (n,)`.
    mixture: a `GaussianMixture` for mode shares (optional).
    reference_samples: precomputed reference samples (else drawn with the same key).
    data_samples: held-out data; adds "data_mmd", the MMD of the policy samples to them.

  Returns:
    (metrics dict of floats, policy samples as numpy).
  """
  policy, ref = params[POLICY], params[REFERENCE]
  k_sample, k_kl = jax.random.split(key)
  x = sample_images(denoiser, policy, k_sample, cond, shape, process=process, ts=ts, eta=eta)
  if reference_samples is None:
    reference_samples = sample_images(denoiser, ref, k_sample, cond, shape, process=process, ts=ts, eta=eta)
  x_T = process.prior_sample(jax.random.fold_in(k_kl, 0), tuple(shape))
  kl = tlp.path_kl(lambda z, t: denoiser(policy, z, t, cond), lambda z, t: denoiser(ref, z, t, cond), x_T, ts,
                   process=process, eta=eta, key=jax.random.fold_in(k_kl, 1))
  flat = lambda a: jnp.reshape(jnp.asarray(a, jnp.float32), (a.shape[0], -1))
  out = {
      "reward": float(jnp.mean(reward_fn(x, cond))),
      "path_kl": float(jnp.mean(kl)),
      "path_kl_se": float(jnp.std(kl) / np.sqrt(kl.shape[0])),
      "sample_mmd": float(metrics.mmd(flat(x), flat(reference_samples))),
  }
  if data_samples is not None:
    out["data_mmd"] = float(metrics.mmd(flat(x), flat(jnp.asarray(data_samples))))
  if accuracy_fn is not None:
    out["accuracy"] = float(jnp.mean(accuracy_fn(x, cond)))
  if mixture is not None:
    cov = metrics.mode_coverage(jnp.asarray(x), mixture.means, mixture.mode_stds)
    out["mode_shares"] = [float(s) for s in cov["shares"]]
    out["off_mode"] = float(cov["off_mode"])
    out["modes_covered"] = int(np.sum(np.asarray(cov["shares"]) > 0.02))
  return out, np.asarray(x)
