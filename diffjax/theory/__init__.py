"""Score-estimation theory: denoising score matching as kernel regression.

The tools behind Han, Razaviyayn & Xu, "Neural Network-Based Score Estimation in Diffusion
Models: Optimization and Generalization" (ICLR 2024, arXiv 2401.15604):

  `ntk`             empirical neural tangent kernels of any model (Jacobian contraction and
                    NTK-vector products), the two-layer ReLU kernel in closed form.
  `two_layer`       the paper's network: two-layer ReLU, output layer fixed, antisymmetric init.
  `kernel_gd`       kernel gradient descent in closed form and the linearised network.
  `score_regression` DSM as regression of X_0 on (t, X_t); the parametric score form.
  `early_stopping`  stopping rules: held-out validation and the empirical-kernel rule.
"""
from diffjax.theory.early_stopping import (empirical_kernel_complexity, kernel_stopping_step,
                                           best_step)
from diffjax.theory.kernel_gd import (kernel_gd_predictor, linearize, max_stable_lr,
                                      regression_loss)
from diffjax.theory.ntk import (kernel_matrix, ntk_by_jacobian, ntk_by_products,
                                ntk_vector_product, relu_ntk_infinite_width, two_layer_relu_ntk)
from diffjax.theory.score_regression import (RegressionData, label_noise_variance, ou_process,
                                             parametric_score, regression_data,
                                             score_error_weight)
from diffjax.theory.two_layer import (TwoLayerReLU, gd_checkpoints, init_two_layer_relu,
                                      score_features, train_by_gd)

__all__ = [
    "RegressionData", "TwoLayerReLU", "best_step", "empirical_kernel_complexity", "gd_checkpoints",
    "init_two_layer_relu", "kernel_gd_predictor", "kernel_matrix", "kernel_stopping_step",
    "label_noise_variance", "linearize", "max_stable_lr", "ntk_by_jacobian", "ntk_by_products",
    "ntk_vector_product", "ou_process", "parametric_score", "regression_data",
    "regression_loss", "relu_ntk_infinite_width", "score_error_weight", "score_features",
    "train_by_gd", "two_layer_relu_ntk",
]
