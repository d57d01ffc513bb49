"""Out-of-distribution detection metrics, OOD as the positive class (higher score = more OOD).

The definitions follow MLKD's official ``utils/ood_metrics.py`` (Wu et al., ACL 2023, microsoft/KC),
which the text-OOD literature (DATE, MDF) shares:

  auroc      area under the ROC curve (= P(score_ood > score_id) + 1/2 P(tie), Mann-Whitney).
  aupr_out   area under the precision-recall curve with OOD positive, by the trapezoid rule over
             the PR curve's points (sklearn's ``auc(recall, precision)``, as the official code);
             ``method="average_precision"`` gives the step-wise average precision instead.
  aupr_in    the same with ID positive (scores negated).
  far_at_recall  FAR95: the fraction of ID examples scored above the threshold at which 95% of the
             OOD examples are caught. The threshold is the official one, the sorted OOD score at
             index ``int(n_ood * (1 - recall))``, and ID scores must exceed it strictly.

All functions take host arrays, compute in float64 NumPy and return fractions in [0, 1]
(`ood_metrics` reports percentages, as papers do).
"""
import numpy as np
import scipy.stats

AUPR_METHODS = ("trapezoid", "average_precision")


def _scores(id_scores, ood_scores):
  id_scores = np.asarray(id_scores, np.float64).reshape(-1)
  ood_scores = np.asarray(ood_scores, np.float64).reshape(-1)
  for name, s in (("id_scores", id_scores), ("ood_scores", ood_scores)):
    if s.size == 0:
      raise ValueError(f"{name} is empty: OOD metrics need at least one ID and one OOD score")
    if not np.all(np.isfinite(s)):
      raise ValueError(f"{name} has {int(np.sum(~np.isfinite(s)))} non-finite value(s); clip or drop them "
                       "first (a perplexity that overflowed is best replaced by a large finite number)")
  return id_scores, ood_scores


def auroc(id_scores, ood_scores):
  """AUROC with OOD positive: the Mann-Whitney statistic U / (n_id n_ood), ties counting 1/2."""
  id_scores, ood_scores = _scores(id_scores, ood_scores)
  ranks = scipy.stats.rankdata(np.concatenate([id_scores, ood_scores]), method="average")
  n_id, n_ood = len(id_scores), len(ood_scores)
  u = ranks[n_id:].sum() - n_ood * (n_ood + 1) / 2
  return float(u / (n_id * n_ood))


def precision_recall_points(negatives, positives):
  """Precision and recall at every distinct threshold, by decreasing threshold, then (1, 0).

  The same points as sklearn's ``precision_recall_curve`` (reversed order there is by increasing
  recall): the curve stops at the first threshold reaching full recall and ends at precision 1,
  recall 0.
  """
  scores = np.concatenate([negatives, positives])
  labels = np.concatenate([np.zeros(len(negatives)), np.ones(len(positives))])
  order = np.argsort(-scores, kind="mergesort")
  scores, labels = scores[order], labels[order]
  last_of_run = np.r_[np.flatnonzero(scores[1:] != scores[:-1]), len(scores) - 1]
  tp = np.cumsum(labels)[last_of_run]
  fp = (last_of_run + 1) - tp
  precision = tp / (tp + fp)
  recall = tp / len(positives)
  full = int(np.searchsorted(tp, tp[-1]))  # first threshold with all positives found
  precision, recall = precision[:full + 1], recall[:full + 1]
  return np.r_[precision[::-1], 1.0], np.r_[recall[::-1], 0.0]


def _aupr(negatives, positives, method):
  if method not in AUPR_METHODS:
    raise ValueError(f"method must be one of {list(AUPR_METHODS)}, got {method!r}")
  precision, recall = precision_recall_points(negatives, positives)
  if method == "trapezoid":
    return float(abs(np.sum(np.diff(recall) * (precision[1:] + precision[:-1]) / 2)))
  # average precision: sum over thresholds of (R_k - R_{k-1}) P_k, recall increasing
  return float(np.sum(np.diff(recall[::-1]) * precision[::-1][1:]))


def aupr_out(id_scores, ood_scores, *, method="trapezoid"):
  """Area under the precision-recall curve with OOD positive (the official "AUPR-OUT")."""
  id_scores, ood_scores = _scores(id_scores, ood_scores)
  return _aupr(id_scores, ood_scores, method)


def aupr_in(id_scores, ood_scores, *, method="trapezoid"):
  """Area under the precision-recall curve with ID positive (scores negated: "AUPR-IN")."""
  id_scores, ood_scores = _scores(id_scores, ood_scores)
  return _aupr(-ood_scores, -id_scores, method)


def far_at_recall(id_scores, ood_scores, *, recall=0.95):
  """False alarm rate at an OOD recall: the fraction of ID scores above the official threshold.

  FAR95 (``recall=0.95``) of MLKD's ``compute_far(definition='FPR')``: threshold =
  ``sorted(ood_scores)[int(n_ood * (1 - recall))]``, FAR = mean(id_scores > threshold).
  """
  if not 0 < recall <= 1:
    raise ValueError(f"recall must be in (0, 1], got {recall!r}")
  id_scores, ood_scores = _scores(id_scores, ood_scores)
  threshold = np.sort(ood_scores)[int(len(ood_scores) * (1 - recall))]
  return float(np.mean(id_scores > threshold))


def ood_metrics(id_scores, ood_scores, *, recall=0.95):
  """The paper's table entries in percent: ``{"auroc", "aupr_out", "aupr_in", "far95"}``."""
  return {"auroc": 100 * auroc(id_scores, ood_scores),
          "aupr_out": 100 * aupr_out(id_scores, ood_scores),
          "aupr_in": 100 * aupr_in(id_scores, ood_scores),
          "far95": 100 * far_at_recall(id_scores, ood_scores, recall=recall)}
