"""Ancestral DDPM sampling with a learned-range variance (Nichol & Dhariwal 2021, IDDPM).

The reference `GaussianDiffusion.p_sample_loop` of `openai/improved-diffusion` (as copied by
guided-diffusion and `facebookresearch/DiT`) for a network that outputs eps and the variance
interpolation v (ModelMeanType.EPSILON, ModelVarType.LEARNED_RANGE): from x_{K-1} = x, for
i = K-1, ..., 0,

    x_{i-1} = mu~_i(x_i, x0_hat) + [i > 0] exp(log Sigma_theta / 2) z,   z ~ N(0, I),

with x0_hat from eps (IDDPM eq. 9), mu~ the posterior mean (eq. 11) and log Sigma_theta the
learned range (eq. 15). No noise is added at the last step.

Respacing (IDDPM sec. 4, "Improving sampling speed"): `space_timesteps` picks K of the N
original steps as the reference does and the chain is rebuilt on them with betas
1 - abar_{n_i} / abar_{n_{i-1}} (`SpacedDiffusion`); the learned range, the posterior and the
noise use the respaced tables, and the network is called with the *original* integer step
n_i (`_WrappedModel`). DiT samples its 1000-step models with `num_steps=250`.

This is not a `denoiser(x, t)` sampler of `diffjax.samplers.base`: it needs the variance output,
so it takes the network itself, `model_fn(x, t_int[, cond]) -> (B, ..., 2C)`.
"""
import jax
import jax.numpy as jnp
import numpy as np

from diffjax.losses import vlb
from diffjax.processes import VPDiscrete


def space_timesteps(num_timesteps, section_counts):
  """The steps of an N-step chain kept by the reference's `space_timesteps`, sorted.

  The N steps are cut into len(section_counts) nearly equal sections (the first N % len ones one
  step longer) and section i keeps section_counts[i] steps with a fractional stride
  (size - 1) / (count - 1) accumulated in floating point and rounded with Python's `round`
  (half to even), as the reference. "ddimK" instead keeps range(0, N, s) for the smallest integer
  stride s giving exactly K steps (the DDIM paper's striding).

  Args:
    num_timesteps: N.
    section_counts: a list of counts, or a string "10,15,20" / "250" / "ddim25".

  Returns:
    A sorted tuple of kept steps in [0, N).
  """
  if isinstance(section_counts, str):
    if section_counts.startswith("ddim"):
      desired = int(section_counts[len("ddim"):])
      for stride in range(1, num_timesteps):
        if len(range(0, num_timesteps, stride)) == desired:
          return tuple(range(0, num_timesteps, stride))
      raise ValueError(f"space_timesteps: cannot create exactly {desired} steps of {num_timesteps} "
                       "with an integer stride")
    section_counts = [int(c) for c in section_counts.split(",")]
  section_counts = [int(c) for c in section_counts]
  if not section_counts:
    raise ValueError("space_timesteps: section_counts is empty")
  size_per, extra = divmod(num_timesteps, len(section_counts))
  start, steps = 0, []
  for i, count in enumerate(section_counts):
    size = size_per + (1 if i < extra else 0)
    if size < count:
      raise ValueError(f"space_timesteps: cannot divide a section of {size} steps into {count}")
    stride = 1 if count <= 1 else (size - 1) / (count - 1)
    cur = 0.0
    for _ in range(count):
      steps.append(start + round(cur))
      cur += stride
    start += size
  return tuple(sorted(set(steps)))


def sampling_tables(process, num_steps=None):
  """`DiscreteTables` of the chain the sampler runs: all N steps, or respaced.

  Args:
    process: a `VPDiscrete`.
    num_steps: None (the N steps of the process, its own betas), an int K (DiT's
      `create_diffusion(str(K))`, i.e. `space_timesteps(N, [K])`), or a reference respacing
      string ("250", "10,15,20", "ddim25") or list of section counts.
  """
  if not isinstance(process, VPDiscrete):
    raise ValueError(f"ddpm_learned_variance: process must be a diffjax.processes.VPDiscrete, "
                     f"got {type(process).__name__}")
  if num_steps is None:
    return vlb.DiscreteTables.from_process(process)
  if isinstance(num_steps, (int, np.integer)) and not isinstance(num_steps, bool):
    if not 2 <= num_steps <= process.num_steps:
      raise ValueError(f"ddpm_learned_variance: num_steps must be in [2, {process.num_steps}], got {num_steps}")
    num_steps = [int(num_steps)]
  elif not isinstance(num_steps, (str, list, tuple)):
    raise ValueError(f"ddpm_learned_variance: num_steps must be None, an int, a respacing string or a list "
                     f"of section counts, got {num_steps!r}")
  kept = space_timesteps(process.num_steps, num_steps)
  if len(kept) < 2:
    raise ValueError(f"ddpm_learned_variance: the respacing {num_steps!r} keeps {len(kept)} step; "
                     "the learned range needs at least 2")
  return vlb.DiscreteTables.from_process(process, use_timesteps=kept)


def ddpm_learned_variance(model_fn, x, *, process, key, clip_denoised=False, num_steps=None, cond=None):
  """Ancestral sampling with the learned-range variance (the reference's `p_sample_loop`).

  One `lax.scan` over the K steps (jit the call to compile the whole loop). The step keys are
  `fold_in(key, s)` for the s-th step taken (s = 0 at the noisiest step), as `base.scan_steps`.

  Args:
    model_fn: `model_fn(x, t[, cond])`, t the original integer steps (B,) int32 in [0, N), returning
      (B, ..., 2C): eps, then v in [-1, 1] (channels last; e.g. DiT with learn_sigma=True, or a
      classifier-free-guided wrapper of it).
    x: the initial noise x_{K-1} ~ N(0, I), shape (B, ..., C).
    process: a `VPDiscrete` process (the model's training chain).
    key: PRNG key of the per-step noise.
    clip_denoised: clip x0_hat to [-1, 1] (the reference's default is True for pixels; DiT samples
      latents with False).
    num_steps: None for all N steps, or a respacing (see `sampling_tables`), e.g. 250.
    cond: optional conditioning passed to model_fn.

  Returns:
    The sample x_0 (noise-free mean at the last step), shape of x.
  """
  if key is None:
    raise ValueError("ddpm_learned_variance: key is required (ancestral sampling is stochastic)")
  tables = sampling_tables(process, num_steps)
  k = tables.num_steps
  idx = jnp.arange(k - 1, -1, -1, dtype=jnp.int32)
  model_t = jnp.asarray(tables.timestep_map[::-1].copy(), jnp.int32)

  def body(x, inputs):
    i, n = inputs
    t_idx = jnp.full((x.shape[0],), i, jnp.int32)
    t_model = jnp.full((x.shape[0],), n, jnp.int32)
    out = model_fn(x, t_model) if cond is None else model_fn(x, t_model, cond)
    eps, v = vlb.split_learned_output(out, x, "ddpm_learned_variance")
    p = vlb.p_mean_variance(eps, v, x, t_idx, tables, clip_denoised=clip_denoised)
    z = jax.random.normal(jax.random.fold_in(key, k - 1 - i), x.shape, x.dtype)
    nonzero = (i != 0).astype(x.dtype)  # no noise at the last step
    return p["mean"] + nonzero * jnp.exp(0.5 * p["log_variance"]) * z, None

  x, _ = jax.lax.scan(body, x, (idx, model_t))
  return x
