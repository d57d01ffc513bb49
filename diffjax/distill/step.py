"""One compiled training step over several networks, each with its own optimizer and update rate.

Distillation trains a generator (or consistency / progressive student) next to a frozen teacher
and, for the score-distillation methods, an online "fake score" with an optional discriminator
head. Each trainable group of parameters is updated by a `Phase`: a loss of the whole parameter
dict, an optax optimizer, and a rule saying at which steps it runs. The phases of one step run in
order inside one jitted function, each seeing the parameters the earlier phases produced, so
DMD2's iteration (``tianweiy/DMD2`` ``main/edm/train_edm.py::train_one_step``: the generator
step, when due, then the guidance step, both on the same generated batch) is a single call.

Two-time-scale update rules (DMD2 paper, sec. 4.2; notes/distillation.md sec. 1.4):

  ``every(n)``         the phase runs when ``step % n == 0`` (DMD2's generator with
                       ``dfake_gen_update_ratio = n``; ``every(1)`` = every step).
  ``except_every(n)``  runs when ``step % n != 0`` (FastGen's critic, which skips the generator's
                       steps).

An inactive phase costs nothing: it sits behind ``lax.cond``.
"""
import dataclasses
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax

from diffjax.training.state import all_finite, as_raw_key, check_step_arguments, scan_steps

_tree_norm = getattr(getattr(optax, "tree", None), "norm", None) or optax.tree_utils.tree_l2_norm


def every(n: int) -> Callable:
  """The rule "run when ``step % n == 0``"."""
  n = _positive_int(n, "every(n)")
  rule = lambda step: step % n == 0
  rule.describe = f"every({n})"
  return rule


def except_every(n: int) -> Callable:
  """The rule "run when ``step % n != 0``" (n >= 2)."""
  n = _positive_int(n, "except_every(n)")
  if n < 2:
    raise ValueError(f"except_every(n) needs n >= 2 (n = 1 would never run), got {n}")
  rule = lambda step: step % n != 0
  rule.describe = f"except_every({n})"
  return rule


def _positive_int(n, what):
  if isinstance(n, bool) or not isinstance(n, int) or n < 1:
    raise ValueError(f"{what}: n must be an integer >= 1, got {n!r}")
  return n


@dataclasses.dataclass(frozen=True)
class Phase:
  """The update of one parameter group.

  Attributes:
    group: key of the parameter group it trains (``state.params[group]``).
    loss_fn: ``loss_fn(group_params, params, frozen, batch, key, step) -> (loss, aux)``;
      ``params`` is the whole dict (read other groups through it; they get no gradient),
      ``frozen`` the teacher's parameters, ``step`` the traced step number (curricula).
    optimizer: optax transformation of this group.
    when: ``when(step) -> bool`` (`every`, `except_every`).
  """
  group: str
  loss_fn: Callable
  optimizer: optax.GradientTransformation
  when: Callable = dataclasses.field(default_factory=lambda: every(1))


@flax.struct.dataclass
class DistillState:
  """Everything a distillation run needs to continue exactly.

  Attributes:
    step: int32 scalar, train-step calls completed.
    params: dict group name -> parameter pytree (the trainable networks).
    opt_state: dict group name -> that group's optimizer state.
    ema_params: EMA of ``params[student]`` (the network that is evaluated).
    frozen: the teacher's parameters (never updated; checkpointed with the rest).
    rng: base PRNG key data; step s uses ``fold_in(rng, s)``.
  """
  step: jax.Array
  params: Any
  opt_state: Any
  ema_params: Any
  frozen: Any
  rng: jax.Array

  @classmethod
  def create(cls, params: dict, phases, frozen, rng, *, student: str) -> "DistillState":
    """Step 0: every phase's ``optimizer.init`` on its group; EMA = a copy of ``params[student]``."""
    _check_phases(params, phases, student)
    return cls(step=jnp.zeros((), jnp.int32), params=params,
               opt_state={p.group: p.optimizer.init(params[p.group]) for p in phases},
               ema_params=jax.tree.map(lambda x: jnp.array(x, copy=True), params[student]),
               frozen=frozen, rng=as_raw_key(rng))


def _check_phases(params, phases, student):
  if not isinstance(params, dict):
    raise ValueError(f"params must be a dict of parameter groups, got {type(params).__name__}")
  groups = [p.group for p in phases]
  if not groups:
    raise ValueError("phases must not be empty")
  if len(set(groups)) != len(groups):
    raise ValueError(f"each group is trained by one phase; got phases for {groups}")
  missing = sorted(set(groups) - set(params))
  if missing:
    raise ValueError(f"phases train group(s) {missing} that params does not have (groups: {sorted(params)})")
  if student not in groups:
    raise ValueError(f"student={student!r} must be one of the trained groups {groups}")


PREPARE_KEY = 1_000_003  # fold_in index of the prepare function's key (phase i uses fold_in(key, i))


def make_distill_step(phases, *, student: str, ema_decay: float, nonfinite: str = "stop", n_steps: int = 1,
                      prepare: Callable | None = None, data_sharding=None):
  """Builds ``train_step(state, batch) -> (state, metrics)`` for `diffjax.training.train`.

  One step, with ``key = fold_in(state.rng, state.step)``: first, if given, ``prepare(params,
  frozen, batch, key') -> dict`` runs on the parameters *before* any update and its outputs
  (stop-gradient) join the batch, so every phase sees the same generated samples (DMD2's critic
  trains on the samples of the generator turn of the same iteration). Then, for each phase in order, if
  ``phase.when(step)``, ``value_and_grad`` of its loss with respect to its group (key
  ``fold_in(key, i)`` for phase i) and its optimizer update. Then the student's EMA moves if the
  student's phase ran. A step is finite when every phase that ran has a finite loss, gradient
  norm and updated parameters; a non-finite step changes no parameter, optimizer state or EMA
  (``nonfinite='skip'`` advances ``step``, ``'stop'`` freezes the state, as `make_train_step`).

  Metrics: ``<group>/loss``, ``<group>/grad_norm``, ``<group>/active`` and ``<group>/<aux>`` for
  each phase (0 when the phase did not run; with ``n_steps > 1`` the train loop logs the phase's
  latest run in the same call instead), ``loss`` (sum over the phases that ran),
  ``grad_norm`` (norm over all their gradients) and ``finite``.

  Args:
    phases: sequence of `Phase`.
    student: the group whose EMA is kept.
    ema_decay: in [0, 1].
    nonfinite: "skip" or "stop".
    n_steps: steps per call (one ``lax.scan``; batch leaves get a leading axis of this size).
    prepare: optional, see above.
    data_sharding: optional sharding of a batch (``training.batch_sharding(mesh)``); the prepared
      arrays with the batch's leading size are constrained to it, so noise drawn inside the step
      (a data-free generator's z) is split over the devices like the data, not replicated.
  """
  phases = tuple(phases)
  decay = check_step_arguments(ema_decay, nonfinite, n_steps)
  if student not in [p.group for p in phases]:
    raise ValueError(f"student={student!r} must be one of the trained groups {[p.group for p in phases]}")

  def run_phase(phase, params, opt_state, frozen, batch, key, step):
    def loss_of_group(group_params):
      loss, aux = phase.loss_fn(group_params, {**params, phase.group: group_params}, frozen, batch, key, step)
      return loss, {k: v for k, v in aux.items() if jnp.ndim(v) == 0}  # scalars only, for the metrics

    grad_fn = jax.value_and_grad(loss_of_group, has_aux=True)
    group = params[phase.group]
    aux_shape = jax.eval_shape(lambda g: loss_of_group(g)[1], group)

    def update(_):
      (loss, aux), grads = grad_fn(group)
      updates, new_opt = phase.optimizer.update(grads, opt_state[phase.group], group)
      new_group = optax.apply_updates(group, updates)
      norm = _tree_norm(grads)
      finite = jnp.isfinite(loss) & jnp.isfinite(norm) & all_finite(new_group)
      return new_group, new_opt, jnp.asarray(loss, jnp.float32), jnp.asarray(norm, jnp.float32), finite, aux

    def skip(_):
      zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), aux_shape)
      zero = jnp.zeros((), jnp.float32)
      return group, opt_state[phase.group], zero, zero, jnp.array(True), zeros

    return update, skip

  def one_step(state: DistillState, batch, stopped):
    key = jax.random.fold_in(state.rng, state.step)
    params, opt_state = dict(state.params), dict(state.opt_state)
    if prepare is not None:
      extra = jax.lax.stop_gradient(prepare(params, state.frozen, batch, jax.random.fold_in(key, PREPARE_KEY)))
      if data_sharding is not None:
        size = jax.tree.leaves(batch)[0].shape[0]
        extra = jax.tree.map(
            lambda a: jax.lax.with_sharding_constraint(a, data_sharding) if a.ndim and a.shape[0] == size else a,
            extra)
      batch = {**batch, **extra}
    metrics, finite, total, sq_norm = {}, jnp.array(True), jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32)
    student_ran = jnp.array(False)
    for i, phase in enumerate(phases):
      active = jnp.asarray(phase.when(state.step), bool)
      update, skip = run_phase(phase, params, opt_state, state.frozen, batch, jax.random.fold_in(key, i), state.step)
      new_group, new_opt, loss, norm, ok, aux = jax.lax.cond(active, update, skip, None)
      params[phase.group], opt_state[phase.group] = new_group, new_opt
      loss, norm = jnp.asarray(loss, jnp.float32), jnp.asarray(norm, jnp.float32)
      finite = finite & ok
      total, sq_norm = total + loss, sq_norm + norm**2
      if phase.group == student:
        student_ran = active
      metrics.update({f"{phase.group}/loss": loss, f"{phase.group}/grad_norm": norm,
                      f"{phase.group}/active": active})
      metrics.update({f"{phase.group}/{k}": v for k, v in aux.items()})
    new_ema = jax.tree.map(lambda e, p: (decay * e + (1.0 - decay) * p).astype(e.dtype), state.ema_params,
                           params[student])
    new_ema = jax.tree.map(lambda n, e: jnp.where(student_ran, n, e), new_ema, state.ema_params)
    apply = finite & jnp.logical_not(stopped)
    select = lambda new, old: jax.tree.map(lambda a, b: jnp.where(apply, a, b), new, old)
    new_step = state.step + 1 if nonfinite == "skip" else state.step + apply.astype(state.step.dtype)
    new_state = state.replace(step=new_step, params=select(params, state.params),
                              opt_state=select(opt_state, state.opt_state),
                              ema_params=select(new_ema, state.ema_params))
    metrics.update(loss=total, grad_norm=jnp.sqrt(sq_norm), finite=finite)
    if nonfinite == "stop":
      stopped = stopped | jnp.logical_not(finite)
    return new_state, metrics, stopped

  train_step = scan_steps(one_step, n_steps)
  train_step.n_steps = n_steps
  train_step.nonfinite = nonfinite
  train_step.ema_decay = decay
  train_step.phases = phases
  return train_step
