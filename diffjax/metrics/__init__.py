"""Metrics: sample-based distribution distances and mode coverage."""
from diffjax.metrics.distances import energy_distance, mmd, mode_coverage, sliced_wasserstein
from diffjax.metrics import digits_classifier
