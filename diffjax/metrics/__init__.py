"""Metrics: sample-based distribution distances, mode coverage, Fréchet distance / KID / IS, OOD detection."""
from diffjax.metrics.distances import energy_distance, mmd, mode_coverage, sliced_wasserstein
from diffjax.metrics import digits_classifier
from diffjax.metrics import fid
from diffjax.metrics import inception
from diffjax.metrics import ood
