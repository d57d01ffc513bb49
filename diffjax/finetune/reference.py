"""A trainable policy next to a frozen reference, in one parameter tree.

Preference and distillation fine-tuning keep a copy of the pretrained network that never changes.
Here it lives in the train state's parameters as `{"policy": ..., "reference": ...}`, so it is
checkpointed, sharded and restored with everything else, and two mechanisms keep it frozen:

  * the objectives read it through `jax.lax.stop_gradient` (no gradient flows into it), and
  * `frozen_reference_optimizer` gives it `optax.set_to_zero()` updates and no optimizer state,
    so `optax.apply_updates` adds exactly 0: the reference stays bitwise equal to its initial value.
"""
import jax
import optax

POLICY, REFERENCE = "policy", "reference"


def with_frozen_reference(policy_params, reference_params=None):
  """`{"policy": policy_params, "reference": reference_params}`; the reference defaults to a copy."""
  if reference_params is None:
    reference_params = jax.tree.map(lambda x: x.copy(), policy_params)
  return {POLICY: policy_params, REFERENCE: reference_params}


def _labels(params):
  if not isinstance(params, dict) or set(params) != {POLICY, REFERENCE}:
    raise ValueError(f"params must be a dict with keys {[POLICY, REFERENCE]} (with_frozen_reference), "
                     f"got {type(params).__name__}" + (f" with keys {sorted(params)}" if isinstance(params, dict) else ""))
  return {POLICY: jax.tree.map(lambda _: "train", params[POLICY]),
          REFERENCE: jax.tree.map(lambda _: "frozen", params[REFERENCE])}


def frozen_reference_optimizer(optimizer):
  """`optimizer` on the policy, zero updates (and no state) on the reference."""
  return optax.multi_transform({"train": optimizer, "frozen": optax.set_to_zero()}, _labels)


def split_policy_reference(params):
  """(policy, reference) with the reference behind `stop_gradient`."""
  _labels(params)
  return params[POLICY], jax.lax.stop_gradient(params[REFERENCE])
