"""The small-scale preference tasks: what is rewarded, how success is measured, what a prompt is.

  ring    the 8-Gaussian ring, unconditional; reward: get close to mode `target` (negative
          distance); the data are labelled by three reward models that disagree: that distance,
          the sparse target-mode indicator (flat inside the mode, many ties) and the data log-density
          of the whole mixture (realism: prefers any mode's centre over an off-ring point near the
          target); success: the sample lands in the target mode (within 3 std); mode shares reported
  digits  class-conditional 8x8 digits; reward: log-probability of the prompted class under a digit
          classifier trained by the library (and stroke mass as a second reward that disagrees);
          success: the classifier's argmax equals the prompt

A `Task` carries `rewards` (name -> reward(x, cond)) that label training data, the evaluation
`reward_fn` and `accuracy_fn`, the prompts (`prompts(n)`), and `mixture` for coverage.
"""
import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from diffjax import rewards as rewards_lib
from diffjax.data import toy


@dataclasses.dataclass
class Task:
  name: str
  rewards: dict
  reward_fn: Callable
  accuracy_fn: Callable
  num_classes: Any = None
  mixture: Any = None
  step_reward_fn: Callable = None

  def prompts(self, n, offset=0):
    """(n,) conditions: balanced class labels, or zeros for an unconditional task."""
    if self.num_classes is None:
      return np.zeros((n,), np.int32)
    return (np.arange(offset, offset + n) % self.num_classes).astype(np.int32)


def ring_task(target=0):
  ring = toy.ring8()
  means, stds = ring.means, ring.mode_stds
  distance = rewards_lib.negative_distance(means[target])
  hit = rewards_lib.target_mode_indicator(means, stds, target=target)
  return Task(
      name="ring",
      rewards={"negative_distance": distance, "target_mode_indicator": hit,
               "mixture_log_density": rewards_lib.mixture_log_density(ring)},
      reward_fn=distance, accuracy_fn=hit, mixture=ring, step_reward_fn=distance)


def digits_task(classifier=None, key=None):
  from diffjax.metrics import digits_classifier
  if classifier is None:
    classifier = digits_classifier.train_digits_classifier(jax.random.PRNGKey(1) if key is None else key)
  logp = rewards_lib.classifier_log_prob(classifier)
  logits_fn = rewards_lib.digits._logits_fn(classifier)

  def accuracy(x, cond):
    return (jnp.argmax(logits_fn(jnp.asarray(x, jnp.float32)), -1) == cond).astype(jnp.float32)

  return Task(name="digits", rewards={"classifier_log_prob": logp, "stroke_mass": rewards_lib.stroke_mass()},
              reward_fn=logp, accuracy_fn=accuracy, num_classes=10, step_reward_fn=logp)


TASKS = {"ring": ring_task, "digits": digits_task}


def get_task(name, **options):
  if name not in TASKS:
    raise ValueError(f"task={name!r} is not valid; valid choices: {sorted(TASKS)}")
  return TASKS[name](**options)
