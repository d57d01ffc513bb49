"""Score estimation by a GD-trained two-layer network (Han, Razaviyayn & Xu 2024) on a 2-D
Gaussian mixture with exact scores (experiments/score_estimation.py).

  python experiments/score_estimation.py --config=configs/score_estimation/gmm2d.py
  python experiments/score_estimation.py --config=configs/score_estimation/gmm2d.py:tiny --out=/tmp/se

Data: four Gaussians N(+-2 e_i, 0.5^2 I) in 2-D under the OU process alpha_t = e^{-t},
t ~ U[0.05, 1]; the regression target E[X_0 | X_t] is exact. Network: f_W(u) =
m^{-1/2} sum_r a_r relu(w_r . u), u = (x_t, t, 1), fixed random-sign a, antisymmetric init, full-batch
GD with step size 0.5 on (1/2n) sum ||f - x_0||^2, float64. Four studies:

  curve        one run (n = 256, m = 16384, 20k steps): the test error against GD step for the
               network, its kernel predictor (empirical NTK at init) and the infinite-width
               kernel predictor, with the stopping rules marked;
  width        the network-kernel gap against m (n = 256, 3 seeds);
  sample_size  early-stopped and final error against n (m = 2048, 5 seeds) and the log-log slope;
  time         the error against t of the early-stopped networks of `sample_size` (seed 0).

Options: `tiny` (a smoke-test scale, seconds).
"""
from diffjax.configuration import d


def get_config(options=""):
  parts = [p for p in options.split(",") if p]
  if any(p != "tiny" for p in parts):
    raise ValueError(f"options {options!r} for score_estimation/gmm2d: the only option is 'tiny'")
  tiny = "tiny" in parts
  config = d()
  config.data = d(
      means=((2.0, 0.0), (-2.0, 0.0), (0.0, 2.0), (0.0, -2.0)),
      std=0.5,  # per component and coordinate
      t0=0.05, T=1.0,  # t ~ U[t0, T]
      n_test=2048,  # shared by every run; t ~ U[t0, T]
      val_fraction=0.25,  # held-out set of size val_fraction * n for the validation rule
      time_grid=16, per_time=512,  # the `time` study's grid of t and points per t
  )
  config.model = d(antisymmetric=True, bias=True)
  config.training = d(lr=0.5, num_checkpoints=60)
  # The RWY rule at R = 1 (Raskutti et al.'s unit ball) and at the radius of this grid whose step
  # is closest to the `curve` run's oracle step, then used unchanged by the other studies.
  config.stopping = d(radius_grid=(1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0))
  config.curve = d(n=256, width=16384, max_steps=20_000, seed=0)
  config.width = d(n=256, widths=(256, 1024, 4096, 16384, 65536), max_steps=2000, seeds=3,
                   gap_steps=(200, 2000))  # the gap is reported at these steps
  config.sample_size = d(ns=(64, 128, 256, 512, 1024), width=2048, max_steps=10_000, seeds=5)
  if tiny:
    config.data.n_test, config.data.time_grid, config.data.per_time = 256, 4, 64
    config.training.num_checkpoints = 12
    config.curve = d(n=32, width=256, max_steps=300, seed=0)
    config.width = d(n=32, widths=(64, 256, 1024), max_steps=100, seeds=2, gap_steps=(20, 100))
    config.sample_size = d(ns=(32, 64, 128), width=256, max_steps=300, seeds=2)
  return config
