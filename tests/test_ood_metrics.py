"""OOD metrics against scikit-learn (and MLKD's official FAR95 rule), to 1e-12."""
import numpy as np
import pytest
from sklearn import metrics as skm

from diffjax.metrics import ood


def _official_far(id_scores, ood_scores, recall=0.95):
  """MLKD's utils/ood_metrics.compute_far(definition='FPR'), as written there, in float64."""
  pos = np.sort(np.asarray(ood_scores, np.float64))
  threshold = pos[int(len(pos) * (1 - recall))]
  return np.sum(np.asarray(id_scores) > threshold) / len(id_scores)


def _sklearn_far(id_scores, ood_scores, recall=0.95):
  """FAR95 from sklearn's ROC curve: FPR at the official threshold (continuous scores)."""
  y = np.r_[np.zeros(len(id_scores)), np.ones(len(ood_scores))]
  s = np.r_[id_scores, ood_scores]
  fpr, _, thresholds = skm.roc_curve(y, s, drop_intermediate=False)
  threshold = np.sort(ood_scores)[int(len(ood_scores) * (1 - recall))]
  # sklearn counts score >= threshold; the official rule counts ID strictly above it: the next
  # larger threshold's FPR (no ID score equals an OOD score with continuous scores)
  above = thresholds > threshold
  return fpr[above][-1] if above.any() else 0.0


def _data(seed, n_id, n_ood, *, ties=False):
  rng = np.random.default_rng(seed)
  id_scores, ood_scores = rng.normal(0, 1, n_id), rng.normal(1.0, 1.5, n_ood)
  if ties:
    id_scores, ood_scores = np.round(id_scores, 1), np.round(ood_scores, 1)
  return id_scores, ood_scores


@pytest.mark.parametrize("seed,n_id,n_ood,ties", [(0, 200, 150, False), (1, 37, 400, False), (2, 300, 300, True),
                                                  (3, 5, 3, True)])
def test_auroc_and_aupr_equal_sklearn(seed, n_id, n_ood, ties):
  id_scores, ood_scores = _data(seed, n_id, n_ood, ties=ties)
  y = np.r_[np.zeros(n_id), np.ones(n_ood)]
  s = np.r_[id_scores, ood_scores]
  assert ood.auroc(id_scores, ood_scores) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
  p, r, _ = skm.precision_recall_curve(y, s)
  assert ood.aupr_out(id_scores, ood_scores) == pytest.approx(skm.auc(r, p), abs=1e-12)
  assert ood.aupr_out(id_scores, ood_scores, method="average_precision") == pytest.approx(
      skm.average_precision_score(y, s), abs=1e-12)
  p_in, r_in, _ = skm.precision_recall_curve(1 - y, -s)
  assert ood.aupr_in(id_scores, ood_scores) == pytest.approx(skm.auc(r_in, p_in), abs=1e-12)
  assert ood.aupr_in(id_scores, ood_scores, method="average_precision") == pytest.approx(
      skm.average_precision_score(1 - y, -s), abs=1e-12)


@pytest.mark.parametrize("seed,n_id,n_ood", [(0, 200, 150), (4, 1000, 61), (5, 50, 999)])
def test_far95_equals_official_rule_and_sklearn_roc(seed, n_id, n_ood):
  id_scores, ood_scores = _data(seed, n_id, n_ood)
  far = ood.far_at_recall(id_scores, ood_scores)
  assert far == pytest.approx(_official_far(id_scores, ood_scores), abs=1e-12)
  assert far == pytest.approx(_sklearn_far(id_scores, ood_scores), abs=1e-12)


def test_perfect_separation_and_reversed_scores():
  id_scores, ood_scores = np.linspace(0, 1, 50), np.linspace(2, 3, 40)
  m = ood.ood_metrics(id_scores, ood_scores)
  assert m == {"auroc": 100.0, "aupr_out": 100.0, "aupr_in": 100.0, "far95": 0.0}
  assert ood.auroc(ood_scores, id_scores) == 0.0
  assert ood.far_at_recall(ood_scores, id_scores) == 1.0
  # identical score distributions: chance AUROC
  assert ood.auroc(np.zeros(10), np.zeros(7)) == 0.5


def test_bad_input_is_named():
  with pytest.raises(ValueError, match="ood_scores is empty"):
    ood.auroc([1.0, 2.0], [])
  with pytest.raises(ValueError, match="id_scores has 1 non-finite"):
    ood.auroc([1.0, np.inf], [2.0])
  with pytest.raises(ValueError, match="recall must be in"):
    ood.far_at_recall([1.0], [2.0], recall=1.5)
  with pytest.raises(ValueError, match="method must be one of"):
    ood.aupr_out([1.0], [2.0], method="roc")
