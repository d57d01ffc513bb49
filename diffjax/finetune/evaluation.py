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
from diffjax.samplers import transition_logprob as tlp


def make_policy_evaluator(denoiser, reference_params, key, cond, shape, *, process, ts, reward_fn, accuracy_fn=None,
                          mixture=None, eta=1.0, data_samples=None):
  """`evaluate(policy_params) -> (metrics, policy samples)`, the metrics of the module docstring.

  The reference's samples are drawn once, here; every evaluation uses the same `key`, so policy
  and reference samples share their prior noise and sampler noise (and checkpoints of a run are
  compared on the same draws). The sampling chain and the path KL are compiled once.

  Args:
    denoiser: `denoiser(params, x, t, cond) -> x0_hat`.
    reference_params: the parameters every divergence is measured from (the base model).
    key: the evaluation key.
    cond: (n,) labels or None; shape: (n, ...) of the samples.
    reward_fn, accuracy_fn: `f(x, cond) -> (n,)`.
    mixture: a `GaussianMixture` for mode shares (optional).
    data_samples: held-out data; adds "data_mmd", the MMD of the policy samples to them.
  """
  flat = lambda a: jnp.reshape(jnp.asarray(a, jnp.float32), (a.shape[0], -1))
  k_sample, k_kl = jax.random.split(key)

  @jax.jit
  def samples_and_scores(p):
    x = sample_images(denoiser, p, k_sample, cond, shape, process=process, ts=ts, eta=eta)
    acc = accuracy_fn(x, cond) if accuracy_fn is not None else jnp.zeros(x.shape[:1])
    return x, reward_fn(x, cond), acc

  @jax.jit
  def kl_fn(policy):
    x_T = process.prior_sample(jax.random.fold_in(k_kl, 0), tuple(shape))
    return tlp.path_kl(lambda z, t: denoiser(policy, z, t, cond), lambda z, t: denoiser(reference_params, z, t, cond),
                       x_T, ts, process=process, eta=eta, key=jax.random.fold_in(k_kl, 1))

  data = None if data_samples is None else flat(jnp.asarray(data_samples))
  x_ref = flat(samples_and_scores(reference_params)[0])

  def evaluate(policy_params):
    x, reward, acc = samples_and_scores(policy_params)
    kl = kl_fn(policy_params)
    out = {
        "reward": float(jnp.mean(reward)),
        "path_kl": float(jnp.mean(kl)),
        "path_kl_se": float(jnp.std(kl) / np.sqrt(kl.shape[0])),
        "sample_mmd": float(metrics.mmd(flat(x), x_ref)),
    }
    if data is not None:
      out["data_mmd"] = float(metrics.mmd(flat(x), data))
    if accuracy_fn is not None:
      out["accuracy"] = float(jnp.mean(acc))
    if mixture is not None:
      cov = metrics.mode_coverage(jnp.asarray(x), mixture.means, mixture.mode_stds)
      out["mode_shares"] = [float(v) for v in cov["shares"]]
      out["off_mode"] = float(cov["off_mode"])
      out["modes_covered"] = int(np.sum(np.asarray(cov["shares"]) > 0.02))
    return out, np.asarray(x)

  return evaluate


def evaluate_policy(denoiser, policy_params, reference_params, key, cond, shape, *, process, ts, reward_fn,
                    accuracy_fn=None, mixture=None, eta=1.0, data_samples=None):
  """One evaluation of `policy_params` against `reference_params` (`make_policy_evaluator`)."""
  return make_policy_evaluator(denoiser, reference_params, key, cond, shape, process=process, ts=ts,
                               reward_fn=reward_fn, accuracy_fn=accuracy_fn, mixture=mixture, eta=eta,
                               data_samples=data_samples)(policy_params)
