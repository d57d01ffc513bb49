"""The training state: step, parameters, optimizer state, EMA parameters and the base PRNG key."""
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax


def _copy(x):
  """A fresh buffer with the same value (EMA must not alias params when buffers are donated)."""
  return jnp.array(x, copy=True)


def as_raw_key(rng):
  """Returns ``rng`` as raw ``uint32`` key data (typed ``jax.random.key`` keys are unwrapped).

  Raw key data checkpoints as a plain array and replicates like any other leaf. The default
  PRNG implementation is assumed when it is used again.
  """
  rng = jnp.asarray(rng)
  if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):
    return jax.random.key_data(rng)
  return rng


@flax.struct.dataclass
class TrainState:
  """Everything a training run needs to continue exactly.

  Attributes:
    step: int32 scalar array, the number of train-step calls completed (see
      ``make_train_step`` for how non-finite steps count).
    params: any pytree of arrays (e.g. an ``nnx.State`` of a model's ``nnx.Param``).
    opt_state: the optax optimizer state for ``params``.
    ema_params: exponential moving average of ``params``; same structure.
    rng: base PRNG key (raw uint32 key data). Step ``s`` uses ``jax.random.fold_in(rng, s)``,
      so a resumed run draws exactly the keys an uninterrupted run would.
  """
  step: jax.Array
  params: Any
  opt_state: Any
  ema_params: Any
  rng: jax.Array

  @classmethod
  def create(cls, params, optimizer: optax.GradientTransformation, rng) -> "TrainState":
    """Builds the initial state: step 0, ``optimizer.init(params)``, EMA equal to ``params``.

    Args:
      params: the initial parameter pytree.
      optimizer: the optax transformation that ``make_train_step`` will use.
      rng: a PRNG key (``jax.random.key`` or ``jax.random.PRNGKey``).

    Returns:
      A ``TrainState`` at step 0.
    """
    return cls(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=optimizer.init(params),
        ema_params=jax.tree.map(_copy, params),
        rng=as_raw_key(rng))

  def step_key(self):
    """The PRNG key of the current step, ``fold_in(rng, step)``."""
    return jax.random.fold_in(self.rng, self.step)


NONFINITE_MODES = ("skip", "stop")
_tree_norm = getattr(getattr(optax, "tree", None), "norm", None) or optax.tree_utils.tree_l2_norm


def all_finite(tree) -> jax.Array:
  """True when every inexact (float/complex) leaf of ``tree`` is finite everywhere."""
  leaves = [x for x in jax.tree.leaves(tree)
            if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.inexact)]
  if not leaves:
    return jnp.array(True)
  return jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]).all()


def _select(pred, new, old):
  return jax.tree.map(lambda a, b: jnp.where(pred, a, b), new, old)


def _opt_count(state):
  """The optimizer's update count (its first ``count`` field), else ``state.step``."""
  found = optax.tree_utils.tree_get_all_with_path(state.opt_state, "count")
  return found[0][1] if found else state.step


def check_step_arguments(ema_decay, nonfinite, n_steps):
  """The checks every train-step factory makes; returns the EMA decay as a float."""
  if nonfinite not in NONFINITE_MODES:
    raise ValueError(f"training.nonfinite must be one of {list(NONFINITE_MODES)}, "
                     f"got {nonfinite!r}")
  if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
    raise ValueError(f"training.n_jitted_steps must be an integer >= 1, got {n_steps!r}")
  if not 0.0 <= float(ema_decay) <= 1.0:
    raise ValueError(f"training.ema_decay must be in [0, 1], got {ema_decay!r}")
  return float(ema_decay)


def scan_steps(one_step, n_steps):
  """``train_step(state, batch)`` from ``one_step(state, batch, stopped) -> (state, metrics, stopped)``.

  With ``n_steps > 1`` it runs ``n_steps`` steps in one ``lax.scan`` over the batch's leading axis,
  threading the ``stopped`` flag (``nonfinite='stop'`` freezes every step after a non-finite one);
  metrics come back with that leading axis.
  """
  def train_step(state, batch):
    if n_steps == 1:
      new_state, metrics, _ = one_step(state, batch, jnp.array(False))
      return new_state, metrics

    def body(carry, b):
      s, stopped = carry
      s, metrics, stopped = one_step(s, b, stopped)
      return (s, stopped), metrics

    (new_state, _), metrics = jax.lax.scan(body, (state, jnp.array(False)), batch)
    return new_state, metrics

  return train_step


def edm_ema_schedule(batch_size: int, halflife_images: float, rampup_ratio: float | None = None):
  """EMA decay per step as EDM's training loop (Karras et al. 2022, app. F.1; NVlabs/edm
  `training_loop.py`): a half-life in images, optionally ramped up with the images seen so far,

      beta(k) = 0.5 ** (B / max(min(H, rampup_ratio * k B), 1e-8)),

  where k B is the number of images seen before step k. With the ramp-up the first step copies
  the parameters (beta = 0) and the half-life grows linearly until it reaches H.

  Returns:
    ``schedule(step) -> decay`` (a jnp scalar), for ``make_train_step(ema_schedule=...)``.
  """
  if not halflife_images > 0:
    raise ValueError(f"training.ema_halflife_images must be > 0, got {halflife_images!r}")
  if rampup_ratio is not None and not rampup_ratio > 0:
    raise ValueError(f"training.ema_rampup_ratio must be None or > 0, got {rampup_ratio!r}")

  def schedule(step):
    halflife = jnp.asarray(float(halflife_images), jnp.float32)
    if rampup_ratio is not None:
      seen = jnp.asarray(step, jnp.float32) * batch_size
      halflife = jnp.minimum(halflife, seen * rampup_ratio)
    return 0.5 ** (batch_size / jnp.maximum(halflife, 1e-8))

  return schedule


def make_train_step(loss_fn, optimizer: optax.GradientTransformation, *, ema_decay: float,
                    nonfinite: str = "skip", n_steps: int = 1, lr_schedule=None, ema_schedule=None):
  """Builds a pure training step ``train_step(state, batch) -> (state, metrics)``.

  One step: ``key = fold_in(state.rng, state.step)``; ``(loss, aux), grads =
  value_and_grad(loss_fn)(params, batch, key)``; the optimizer update; then
  ``ema = ema_decay * ema + (1 - ema_decay) * new_params``.

  Non-finite handling. A step is *finite* when the loss, the global gradient norm and every
  updated parameter are finite. A non-finite step never touches ``params``, ``opt_state`` or
  ``ema_params`` (they keep their previous values exactly) and reports ``finite=False``.
    * ``nonfinite='skip'``: ``step`` still advances, i.e. the offending batch is consumed and
      dropped and the next step uses a fresh key; training continues (the host loop logs it).
    * ``nonfinite='stop'``: ``step`` does not advance and, inside an ``n_steps`` scan, every
      later step is frozen too, so the returned state is the last finite state, with ``step``
      pointing at the offending step. The host loop raises after logging.

  Args:
    loss_fn: pure ``loss_fn(params, batch, key) -> (scalar loss, aux dict of scalars)``.
    optimizer: an optax transformation (``make_optimizer``).
    ema_decay: EMA decay in [0, 1]; 0 makes the EMA equal to the parameters.
    nonfinite: 'skip' or 'stop' (see above).
    n_steps: steps per call. With ``n_steps > 1`` the step runs ``n_steps`` times in one
      ``lax.scan`` (score_sde's ``n_jitted_steps``): every batch leaf has a leading axis of size
      ``n_steps`` and every metric comes back with that leading axis.
    lr_schedule: optional optax schedule; when given, ``metrics['lr']`` is the learning rate of
      the optimizer count this step used (``make_lr_schedule``).
    ema_schedule: optional ``schedule(step) -> decay`` (``edm_ema_schedule``) used instead of
      the constant ``ema_decay``; its decay is reported as ``metrics['ema_decay']``.

  Returns:
    ``train_step(state, batch) -> (state, metrics)`` with metrics ``loss``, ``grad_norm``,
    ``finite`` (bool) and the entries of ``aux``. The function has attributes ``n_steps``,
    ``nonfinite`` and ``ema_decay`` so the train loop can check them against its config.
  """
  decay = check_step_arguments(ema_decay, nonfinite, n_steps)
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def one_step(state: TrainState, batch, stopped):
    key = jax.random.fold_in(state.rng, state.step)
    (loss, aux), grads = grad_fn(state.params, batch, key)
    grad_norm = _tree_norm(grads)
    updates, new_opt_state = optimizer.update(grads, state.opt_state, state.params)
    new_params = optax.apply_updates(state.params, updates)
    beta = decay if ema_schedule is None else ema_schedule(state.step)
    new_ema = jax.tree.map(
        lambda e, p: (beta * e + (1.0 - beta) * p).astype(e.dtype), state.ema_params,
        new_params)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & all_finite(new_params)
    apply = finite & jnp.logical_not(stopped)
    if nonfinite == "skip":
      new_step = state.step + 1
    else:
      new_step = state.step + apply.astype(state.step.dtype)
    new_state = state.replace(
        step=new_step,
        params=_select(apply, new_params, state.params),
        opt_state=_select(apply, new_opt_state, state.opt_state),
        ema_params=_select(apply, new_ema, state.ema_params))
    metrics = dict(aux)
    metrics.update(loss=loss, grad_norm=grad_norm, finite=finite)
    if lr_schedule is not None:
      metrics["lr"] = jnp.asarray(lr_schedule(_opt_count(state)), jnp.float32)
    if ema_schedule is not None:
      metrics["ema_decay"] = jnp.asarray(beta, jnp.float32)
    if nonfinite == "stop":
      stopped = stopped | jnp.logical_not(finite)
    return new_state, metrics, stopped

  train_step = scan_steps(one_step, n_steps)
  train_step.n_steps = n_steps
  train_step.nonfinite = nonfinite
  train_step.ema_decay = decay
  return train_step
