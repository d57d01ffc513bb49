"""Preference fine-tuning objectives as train-step losses `loss_fn(params, batch, key) -> (loss, aux)`.

`params` is `{"policy", "reference"}` (`reference.with_frozen_reference`); the network is a
denoiser `denoiser(params, x, t, cond) -> x0_hat` of any process and parametrization
(`experiment.make_denoiser`), turned into the eps-prediction the papers' losses are written in:
eps_hat = (x_t - alpha_t x0_hat) / sigma_t.

Batches (host numpy dicts; `cond` is optional everywhere):

  diffusion_dpo / sft / kto  {"x_w", "x_l", "cond"}        (kto: {"x", "desirable", "cond"})
  rank_dpo                   {"x": (B, k, ...), "phi": (B, k), "cond"}
  d3po                       {"x_t", "x_next": (B, 2, ...), "t", "t_next": (B,), "preference": (B,), "cond"}
  spo                        {"x_t", "x_w", "x_l", "t", "t_next", "cond"}
  ddo                        {"x_real", "x_fake", "cond"}

Noise levels: for `VPDiscrete` processes t is a DDPM step (n + 1) / N with n ~ U{0..N-1} (as the
official Diffusion-DPO's `timesteps ~ U{0..999}`), otherwise t ~ U[t_min, t_max].
"""
import jax
import jax.numpy as jnp

from diffjax import processes as processes_lib
from diffjax import utils
from diffjax.finetune.reference import split_policy_reference
from diffjax.losses import preference as pref
from diffjax.samplers import transition_logprob as tlp


def sample_times(key, n, process, t_min=1e-3):
  """n noise levels: DDPM steps for VPDiscrete, else uniform on [t_min, process.t_max]."""
  if isinstance(process, processes_lib.VPDiscrete):
    steps = jax.random.randint(key, (n,), 0, process.num_steps)
    return (steps + 1.0) / process.num_steps
  return jax.random.uniform(key, (n,), minval=max(t_min, getattr(process, "t_min", 0.0)),
                            maxval=getattr(process, "t_max", 1.0))


def eps_prediction(denoiser, params, x_t, t, cond, process):
  """eps_hat of `denoiser` at (x_t, t): (x_t - alpha x0_hat) / sigma."""
  x0 = denoiser(params, x_t, t, cond)
  a = utils.expand_to(process.alpha(t), x_t)
  s = utils.expand_to(process.sigma(t), x_t)
  return (x_t - a * x0) / s


def _noised(key, x0, t, process, noise=None):
  noise = jax.random.normal(key, x0.shape, x0.dtype) if noise is None else noise
  return (utils.expand_to(process.alpha(t), x0) * x0 + utils.expand_to(process.sigma(t), x0) * noise,
          noise)


def _eps_pair(denoiser, policy, ref, x0, t, noise, cond, process):
  """eps-predictions of policy and (stop-gradient) reference at the shared (t, noise)."""
  x_t, _ = _noised(None, x0, t, process, noise)
  eps_p = eps_prediction(denoiser, policy, x_t, t, cond, process)
  eps_r = jax.lax.stop_gradient(eps_prediction(denoiser, ref, x_t, t, cond, process))
  return eps_p, eps_r


def _errors(denoiser, policy, ref, x0, t, noise, cond, process):
  """Per-sample eps-MSE (mean over data dims) of policy and reference at shared (t, noise)."""
  eps_p, eps_r = _eps_pair(denoiser, policy, ref, x0, t, noise, cond, process)
  return pref.per_sample_error(eps_p, noise), pref.per_sample_error(eps_r, noise)


def _stacked_pair(denoiser, policy, ref, x_a, x_b, cond, key, process):
  """eps-predictions on the 2B stacked images [x_a; x_b], x_a[i] and x_b[i] sharing t and noise.

  One policy call and one reference call, as the official Diffusion-DPO `train.py`. Returns
  (eps_policy, eps_ref, noise), each (2B, ...).
  """
  b = x_a.shape[0]
  k_t, k_n = jax.random.split(key)
  t = sample_times(k_t, b, process)
  noise = jax.random.normal(k_n, x_a.shape, x_a.dtype)
  noise2 = jnp.concatenate([noise, noise])
  eps_p, eps_r = _eps_pair(denoiser, policy, ref, jnp.concatenate([x_a, x_b]), jnp.concatenate([t, t]), noise2,
                           _repeat(cond, 2), process)
  return eps_p, eps_r, noise2


def _repeat(cond, k):
  return None if cond is None else jnp.concatenate([cond] * k, axis=0)


def diffusion_dpo_objective(denoiser, process, *, beta, loss_type="sigmoid", scaling="official",
                            label_smoothing=0.0):
  """Diffusion-DPO (Wallace et al. 2024, eq. 14; official `train.py`): winner and loser share t and noise.

  One policy call and one reference call on the 2B stacked images, as the official code.
  """

  def loss_fn(params, batch, key):
    policy, ref = split_policy_reference(params)
    b = batch["x_w"].shape[0]
    eps_p, eps_r, noise = _stacked_pair(denoiser, policy, ref, batch["x_w"], batch["x_l"], batch.get("cond"), key,
                                        process)
    err_p, err_r = pref.per_sample_error(eps_p, noise), pref.per_sample_error(eps_r, noise)
    return pref.diffusion_dpo(err_p[:b], err_p[b:], err_r[:b], err_r[b:], beta=beta, loss_type=loss_type,
                              scaling=scaling, label_smoothing=label_smoothing)

  return loss_fn


def sft_objective(denoiser, process):
  """Supervised fine-tuning on the winners only (Diffusion-DPO's `--sft`; no reference)."""

  def loss_fn(params, batch, key):
    policy, _ = split_policy_reference(params)
    x_w, cond = batch["x_w"], batch.get("cond")
    k_t, k_n = jax.random.split(key)
    t = sample_times(k_t, x_w.shape[0], process)
    x_t, noise = _noised(k_n, x_w, t, process)
    return pref.sft_loss(eps_prediction(denoiser, policy, x_t, t, cond, process), noise)

  return loss_fn


def kto_objective(denoiser, process, *, beta, desirable_weight=1.0, undesirable_weight=1.0):
  """Diffusion-KTO (Li et al. 2024; `train_kto_sd_v1.5.py`) on per-image binary labels."""

  def loss_fn(params, batch, key):
    policy, ref = split_policy_reference(params)
    x, cond = batch["x"], batch.get("cond")
    k_t, k_n = jax.random.split(key)
    t = sample_times(k_t, x.shape[0], process)
    noise = jax.random.normal(k_n, x.shape, x.dtype)
    err_p, err_r = _errors(denoiser, policy, ref, x, t, noise, cond, process)
    return pref.kto_loss(err_p, err_r, batch["desirable"], beta=beta, desirable_weight=desirable_weight,
                         undesirable_weight=undesirable_weight)

  return loss_fn


def rank_dpo_objective(denoiser, process, *, beta, rank_source="target", share_noise=True):
  """RankDPO (Karthik et al. 2024, eq. 7, Algorithm 2): one t per list of k images.

  `share_noise`: one noise draw for the k images of a list (as Diffusion-DPO shares it across the
  pair; the paper does not say), else one per image.
  """

  def loss_fn(params, batch, key):
    policy, ref = split_policy_reference(params)
    x, phi, cond = batch["x"], batch["phi"], batch.get("cond")
    b, k = x.shape[:2]
    k_t, k_n = jax.random.split(key)
    t = sample_times(k_t, b, process)
    if share_noise:
      noise = jnp.broadcast_to(jax.random.normal(k_n, (b, 1) + x.shape[2:], x.dtype), x.shape)
    else:
      noise = jax.random.normal(k_n, x.shape, x.dtype)
    flat = lambda a: jnp.swapaxes(a, 0, 1).reshape((b * k,) + a.shape[2:])  # list position major
    err_p, err_r = _errors(denoiser, policy, ref, flat(x), jnp.tile(t, k), flat(noise), _repeat(cond, k), process)
    unflat = lambda e: e.reshape(k, b).T
    return pref.rank_dpo(unflat(err_p), unflat(err_r), phi, beta=beta, rank_source=rank_source)

  return loss_fn


def _transition_logprobs(denoiser, policy, ref, x_t, x_next, t, t_next, cond, process, eta):
  den_p = lambda x, tt: denoiser(policy, x, tt, cond)
  den_r = lambda x, tt: denoiser(ref, x, tt, cond)
  mean_p, std = tlp.ddim_transition(den_p, x_t, t, t_next, process=process, eta=eta)
  mean_r, _ = tlp.ddim_transition(den_r, x_t, t, t_next, process=process, eta=eta)
  return (tlp.gaussian_logprob(x_next, mean_p, std),
          jax.lax.stop_gradient(tlp.gaussian_logprob(x_next, mean_r, std)))


def d3po_objective(denoiser, process, *, beta, clip_eps=0.1, eta=1.0):
  """D3PO (Yang et al. 2024, eq. 13-14; `yk7333/d3po`): the two trajectories' transitions at one step."""

  def loss_fn(params, batch, key):
    del key
    policy, ref = split_policy_reference(params)
    cond = batch.get("cond")
    t, t_next = batch["t"], batch["t_next"]
    lp = [_transition_logprobs(denoiser, policy, ref, batch["x_t"][:, i], batch["x_next"][:, i], t, t_next,
                               cond, process, eta) for i in (0, 1)]
    return pref.d3po_loss(lp[0][0], lp[0][1], lp[1][0], lp[1][1], batch["preference"], beta=beta,
                          clip_eps=clip_eps)

  return loss_fn


def spo_objective(denoiser, process, *, beta, clip_eps=0.1, eta=1.0):
  """SPO (Liang et al. 2025; `train_spo.py`): winner and loser candidates of the same x_t."""

  def loss_fn(params, batch, key):
    del key
    policy, ref = split_policy_reference(params)
    cond, x_t, t, t_next = batch.get("cond"), batch["x_t"], batch["t"], batch["t_next"]
    lp_w, lr_w = _transition_logprobs(denoiser, policy, ref, x_t, batch["x_w"], t, t_next, cond, process, eta)
    lp_l, lr_l = _transition_logprobs(denoiser, policy, ref, x_t, batch["x_l"], t, t_next, cond, process, eta)
    return pref.spo_loss(lp_w, lr_w, lp_l, lr_l, beta=beta, clip_eps=clip_eps)

  return loss_fn


def ddo_objective(denoiser, process, *, alpha, beta):
  """DDO (Zheng et al. 2025, Appendix D): real vs reference samples, one (t, noise) for all four calls.

  The log-ratio is the negative difference of eps-MSEs summed over data dims (w(t) = 1).
  """

  def loss_fn(params, batch, key):
    policy, ref = split_policy_reference(params)
    b = batch["x_real"].shape[0]
    eps_p, eps_r, noise = _stacked_pair(denoiser, policy, ref, batch["x_real"], batch["x_fake"], batch.get("cond"),
                                        key, process)
    logratio = pref.eps_ddo_logratio(eps_p, eps_r, noise)
    return pref.ddo_loss(logratio[:b], logratio[b:], alpha=alpha, beta=beta)

  return loss_fn


OBJECTIVES = {
    "diffusion_dpo": diffusion_dpo_objective,
    "sft": sft_objective,
    "kto": kto_objective,
    "rank_dpo": rank_dpo_objective,
    "d3po": d3po_objective,
    "spo": spo_objective,
    "ddo": ddo_objective,
}


def get_objective(name, denoiser, process, **options):
  """`OBJECTIVES[name](denoiser, process, **options)`, with errors naming the method and options."""
  if name not in OBJECTIVES:
    raise ValueError(f"preference method {name!r} is not valid; valid choices: {sorted(OBJECTIVES)}")
  import inspect
  valid = [p for p in inspect.signature(OBJECTIVES[name]).parameters if p not in ("denoiser", "process")]
  unknown = sorted(set(options) - set(valid))
  if unknown:
    raise ValueError(f"unknown option(s) {unknown} for preference method {name!r}; valid options: {valid}")
  return OBJECTIVES[name](denoiser, process, **options)
