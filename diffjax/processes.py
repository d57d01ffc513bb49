"""Forward noise processes x_t = alpha(t) x_0 + sigma(t) eps, eps ~ N(0, I).

Every process is a frozen dataclass (hashable, so it can be a static argument of `jax.jit`)
holding only Python floats. Methods take `t` as a scalar or an array of shape (B,) and work in
float32 or float64.

Each process is also the linear SDE (Song et al., 2021, "Score-Based Generative Modeling through
Stochastic Differential Equations", eq. 5)

    dx = f(t) x dt + g(t) dw,   f(t) = d log alpha / dt,   g(t)^2 = d sigma^2/dt - 2 f(t) sigma^2,

whose marginals are the ones above (Kingma et al., 2021, "Variational Diffusion Models", app. A).
`drift` and `diffusion` are closed forms per process; the tests check them against autodiff of
`alpha` and `sigma`.

Processes:
  VP            variance preserving, linear or cosine log-SNR schedule (score_sde VPSDE;
                Nichol & Dhariwal 2021 cosine).
  VPDiscrete    DDPM beta tables seen as a piecewise-linear log alpha in t (DPM-Solver's
                `NoiseScheduleVP('discrete')`, t_n = (n + 1) / N).
  SubVP         score_sde's sub-VP SDE: sigma = 1 - alpha^2.
  VE            variance exploding, geometric sigma (score_sde VESDE, NCSN).
  EDM           Karras et al. 2022: alpha = 1, sigma = t.
  RectifiedFlow alpha = 1 - t, sigma = t (Liu et al. 2022; Lipman et al. 2022 with sigma_min = 0).
  PFGMpp        PFGM++ (Xu et al. 2023): EDM's sigma with the heavy-tailed kernel of N + D
                dimensions, r = sigma sqrt(D); D = inf is EDM.

Noise enters through `sample_noise`: x_t = alpha x0 + sigma n with n ~ N(0, I) for the Gaussian
processes and n the PFGM++ perturbation at sigma = 1 for `PFGMpp`.
"""
import dataclasses
import math

import jax
import jax.numpy as jnp

from diffjax import utils


class Process:
  """Base class: a Gaussian forward process with closed-form alpha(t), sigma(t).

  Subclasses define `log_alpha`, `sigma`, `f`, `g2`, `t_from_log_snr`, `t_min`, `t_max` and
  `prior_std`. Everything else is derived here.
  """

  #: smallest time used for training and as the default end of sampling
  t_min: float
  #: the time of the prior
  t_max: float

  # --- schedule --------------------------------------------------------------------------
  def log_alpha(self, t):
    raise NotImplementedError

  def alpha(self, t):
    return jnp.exp(self.log_alpha(t))

  def sigma(self, t):
    raise NotImplementedError

  def log_snr(self, t):
    """Half log signal-to-noise ratio lambda(t) = log(alpha / sigma) (DPM-Solver's lambda)."""
    return self.log_alpha(t) - jnp.log(self.sigma(t))

  def t_from_log_snr(self, lam):
    """Inverse of `log_snr`."""
    raise NotImplementedError

  def edm_sigma(self, t):
    """The noise level of the scaled variable x_t / alpha(t): sigma(t) / alpha(t) = exp(-lambda)."""
    return self.sigma(t) / self.alpha(t)

  def t_from_edm_sigma(self, edm_sigma):
    """Inverse of `edm_sigma`."""
    return self.t_from_log_snr(-jnp.log(edm_sigma))

  # --- SDE ------------------------------------------------------------------------------
  def f(self, t):
    """Drift coefficient f(t) = d log alpha(t) / dt."""
    raise NotImplementedError

  def g2(self, t):
    """Squared diffusion g(t)^2 = d sigma^2 / dt - 2 f(t) sigma(t)^2."""
    raise NotImplementedError

  def drift(self, x, t):
    """Forward SDE drift f(t) x."""
    return utils.expand_to(self.f(t), x) * x

  def diffusion(self, t):
    """Forward SDE diffusion g(t)."""
    return jnp.sqrt(self.g2(t))

  def dalpha_dt(self, t):
    return self.f(t) * self.alpha(t)

  def dsigma_dt(self, t):
    """d sigma / dt from the SDE identity g^2 = 2 sigma sigma' - 2 f sigma^2."""
    sigma = self.sigma(t)
    return (self.g2(t) + 2.0 * self.f(t) * sigma**2) / (2.0 * sigma)

  def pf_ode_velocity(self, x, t, x0_hat):
    """Probability-flow ODE velocity written with the denoiser (Song et al. 2021, eq. 13).

    dx/dt = f x - g^2/2 * score with score = (alpha x0_hat - x) / sigma^2 simplifies to

        dx/dt = (sigma'/sigma) x + (alpha' - alpha sigma'/sigma) x0_hat,

    which stays finite where f or g blow up (rectified flow at t = 1). For EDM it is
    (x - x0_hat) / t, Karras et al. 2022 eq. 3 with D = x0_hat.
    """
    alpha, sigma = self.alpha(t), self.sigma(t)
    dalpha, dsigma = self.dalpha_dt(t), self.dsigma_dt(t)
    a = utils.expand_to(dsigma / sigma, x)
    b = utils.expand_to(dalpha - alpha * dsigma / sigma, x)
    return a * x + b * x0_hat

  def reverse_sde_drift(self, x, t, x0_hat):
    """Drift of the reverse-time SDE f x - g^2 score (Anderson 1982; Song et al. 2021 eq. 6)."""
    alpha, sigma = utils.expand_to(self.alpha(t), x), utils.expand_to(self.sigma(t), x)
    score = (alpha * x0_hat - x) / sigma**2
    return self.drift(x, t) - utils.expand_to(self.g2(t), x) * score

  # --- marginals and prior --------------------------------------------------------------
  def marginal(self, x0, t, noise):
    """x_t = alpha(t) x0 + sigma(t) noise."""
    return utils.expand_to(self.alpha(t), x0) * x0 + utils.expand_to(self.sigma(t), x0) * noise

  def sample_noise(self, key, shape, dtype=None):
    """The noise n of x_t = alpha x0 + sigma n: standard normal for the Gaussian processes."""
    return jax.random.normal(key, shape, dtype or jnp.zeros(()).dtype)

  def marginal_sample(self, key, x0, t):
    """Draws x_t ~ q(x_t | x_0) = N(alpha(t) x0, sigma(t)^2 I)."""
    return self.marginal(x0, t, self.sample_noise(key, x0.shape, x0.dtype))

  def kernel_logpdf(self, y, x0, t):
    """log q(x_t = y | x_0 = x0), per example: the Gaussian N(alpha(t) x0, sigma(t)^2 I)."""
    d = math.prod(y.shape[1:])
    alpha, sigma = self.alpha(t), self.sigma(t)
    diff2 = utils.sum_except_batch((y - utils.expand_to(alpha, x0) * x0)**2)
    return -0.5 * d * jnp.log(2 * jnp.pi * sigma**2) - 0.5 * diff2 / sigma**2

  @property
  def prior_std(self):
    raise NotImplementedError

  def prior_sample(self, key, shape, dtype=None):
    """Draws from the prior N(0, prior_std^2 I) that stands in for p_T."""
    return self.prior_std * self.sample_noise(key, shape, dtype)

  def prior_logp(self, x):
    """Log-density of the prior, summed over every axis but the batch axis."""
    d = math.prod(x.shape[1:])
    s = self.prior_std
    return -0.5 * d * math.log(2 * math.pi * s**2) - 0.5 * utils.sum_except_batch(x**2) / s**2


def _check_positive(name, value):
  if not value > 0:
    raise ValueError(f"{name} must be positive, got {value}")


def _check_order(cls_name, lo_name, lo, hi_name, hi, *, allow_equal=False):
  if not (lo <= hi if allow_equal else lo < hi):
    relation = "at most" if allow_equal else "smaller than"
    raise ValueError(f"{cls_name}: {lo_name} ({lo}) must be {relation} {hi_name} ({hi})")


def _zeros_like_t(t):
  return jnp.zeros_like(jnp.asarray(t, dtype=jnp.result_type(float)))


def _linear_log_alpha(t, beta_min, beta_max):
  """log alpha(t) = -t^2 (beta_max - beta_min) / 4 - t beta_min / 2 (score_sde's linear beta)."""
  t = jnp.asarray(t)
  return -0.25 * t**2 * (beta_max - beta_min) - 0.5 * t * beta_min


def _linear_t_from_log_alpha(log_alpha, beta_min, beta_max):
  """Inverse of `_linear_log_alpha` (the positive root of a quadratic, DPM-Solver's stable form)."""
  delta = beta_max - beta_min
  tmp = 2.0 * delta * (-2.0 * log_alpha)
  return tmp / (jnp.sqrt(beta_min**2 + tmp) + beta_min) / delta


# --------------------------------------------------------------------------------------------
# Variance preserving
# --------------------------------------------------------------------------------------------
VP_SCHEDULES = ("linear", "cosine")


@dataclasses.dataclass(frozen=True)
class VP(Process):
  """Variance-preserving process, alpha^2 + sigma^2 = 1.

  schedule="linear" (score_sde VPSDE, Ho et al. 2020 in continuous time):
    log alpha(t) = -t^2 (beta_max - beta_min) / 4 - t beta_min / 2,  beta(t) = beta_min + t (beta_max - beta_min).
    beta_min = beta_max = 2 is the Ornstein-Uhlenbeck process of the theory papers,
    alpha(t) = exp(-t), sigma(t)^2 = 1 - exp(-2t).
  schedule="cosine" (Nichol & Dhariwal 2021, eq. 17, continuous as in DPM-Solver):
    alpha(t) = cos((t + s) / (1 + s) * pi/2) / cos(s / (1 + s) * pi/2), s = cosine_s.
    t_max defaults to 0.9946 (DPM-Solver), where log-SNR is about -5.
  """
  schedule: str = "linear"
  beta_min: float = 0.1
  beta_max: float = 20.0
  cosine_s: float = 0.008
  t_min: float = 1e-5
  t_max: float = None  # 1 for linear, 0.9946 for cosine

  def __post_init__(self):
    if self.schedule not in VP_SCHEDULES:
      raise ValueError(f"VP: unknown schedule {self.schedule!r}; valid schedules: {VP_SCHEDULES}")
    _check_positive("VP: beta_min", self.beta_min)
    _check_order("VP", "beta_min", self.beta_min, "beta_max", self.beta_max, allow_equal=True)
    if self.t_max is None:
      object.__setattr__(self, "t_max", 1.0 if self.schedule == "linear" else 0.9946)

  def _theta(self, t):
    return (t + self.cosine_s) / (1.0 + self.cosine_s) * (math.pi / 2)

  def log_alpha(self, t):
    if self.schedule == "linear":
      return _linear_log_alpha(t, self.beta_min, self.beta_max)
    log_alpha0 = math.log(math.cos(self.cosine_s / (1.0 + self.cosine_s) * math.pi / 2))
    return jnp.log(jnp.cos(self._theta(t))) - log_alpha0

  def sigma(self, t):
    return jnp.sqrt(-jnp.expm1(2.0 * self.log_alpha(t)))

  def log_snr(self, t):
    log_alpha = self.log_alpha(t)
    return log_alpha - 0.5 * jnp.log(-jnp.expm1(2.0 * log_alpha))

  def beta(self, t):
    """Instantaneous rate beta(t) = -2 f(t)."""
    return -2.0 * self.f(t)

  def f(self, t):
    t = jnp.asarray(t)
    if self.schedule == "linear":
      return -0.5 * (self.beta_min + t * (self.beta_max - self.beta_min))
    return -jnp.tan(self._theta(t)) * (math.pi / 2) / (1.0 + self.cosine_s)

  def g2(self, t):
    return -2.0 * self.f(t)

  def t_from_log_snr(self, lam):
    lam = jnp.asarray(lam)
    neg_two_log_alpha = jnp.logaddexp(-2.0 * lam, 0.0)  # -2 log alpha = log(1 + e^{-2 lam})
    if self.schedule == "linear":
      return _linear_t_from_log_alpha(-0.5 * neg_two_log_alpha, self.beta_min, self.beta_max)
    log_alpha0 = math.log(math.cos(self.cosine_s / (1.0 + self.cosine_s) * math.pi / 2))
    theta = jnp.arccos(jnp.exp(-0.5 * neg_two_log_alpha + log_alpha0))
    return theta * 2.0 * (1.0 + self.cosine_s) / math.pi - self.cosine_s

  @property
  def prior_std(self):
    return 1.0


def _interp_with_extrapolation(x, xp, fp):
  """Piecewise-linear interpolation that extrapolates with the end segments (DPM-Solver's interpolate_fn)."""
  x = jnp.asarray(x)
  idx = jnp.clip(jnp.searchsorted(xp, x, side="right") - 1, 0, xp.shape[0] - 2)
  x0, x1, f0, f1 = xp[idx], xp[idx + 1], fp[idx], fp[idx + 1]
  return f0 + (x - x0) * (f1 - f0) / (x1 - x0)


DDPM_BETA_SCHEDULES = ("linear", "scaled_linear", "cosine")


@dataclasses.dataclass(frozen=True, eq=False)
class VPDiscrete(Process):
  """VP process from a table of N DDPM betas (Ho et al. 2020), in continuous time.

  As DPM-Solver's `NoiseScheduleVP('discrete')`: step n (0-based) sits at t_n = (n + 1) / N with
  log alpha_n = log(alphas_cumprod[n]) / 2; log alpha(t) is piecewise linear in t (extrapolated
  linearly outside [1/N, 1]). The network's integer-time input for time t is `(t - 1/N) * N`
  (`model_time`).

  Build with `VPDiscrete(betas)` or `VPDiscrete.from_ddpm(schedule, num_steps)`.
  """
  betas: tuple = None

  def __post_init__(self):
    if self.betas is None or len(self.betas) < 2:
      raise ValueError("VPDiscrete: betas must be a sequence of at least 2 values in (0, 1)")
    betas = tuple(float(b) for b in self.betas)
    if not all(0.0 < b < 1.0 for b in betas):
      raise ValueError("VPDiscrete: every beta must lie in (0, 1)")
    object.__setattr__(self, "betas", betas)

  def __hash__(self):
    return hash(("VPDiscrete", self.betas))

  def __eq__(self, other):
    return isinstance(other, VPDiscrete) and self.betas == other.betas

  @classmethod
  def from_ddpm(cls, schedule="linear", num_steps=1000, beta_start=1e-4, beta_end=0.02, cosine_s=0.008,
                max_beta=0.999):
    """DDPM beta tables: 'linear' (Ho et al.), 'scaled_linear' (Stable Diffusion), 'cosine' (Nichol & Dhariwal)."""
    import numpy as np
    if schedule == "linear":
      betas = np.linspace(beta_start, beta_end, num_steps, dtype=np.float64)
    elif schedule == "scaled_linear":
      betas = np.linspace(beta_start**0.5, beta_end**0.5, num_steps, dtype=np.float64)**2
    elif schedule == "cosine":
      def abar(u):
        return math.cos((u + cosine_s) / (1 + cosine_s) * math.pi / 2)**2
      betas = np.array([min(1 - abar((i + 1) / num_steps) / abar(i / num_steps), max_beta)
                        for i in range(num_steps)])
    else:
      raise ValueError(f"VPDiscrete.from_ddpm: unknown schedule {schedule!r}; valid: {DDPM_BETA_SCHEDULES}")
    return cls(betas=tuple(betas.tolist()))

  @property
  def num_steps(self):
    return len(self.betas)

  @property
  def t_min(self):
    return 1.0 / self.num_steps

  @property
  def t_max(self):
    return 1.0

  def _tables(self):
    import numpy as np
    betas = np.asarray(self.betas, dtype=np.float64)
    log_alpha = 0.5 * np.cumsum(np.log1p(-betas))
    t_grid = np.arange(1, self.num_steps + 1, dtype=np.float64) / self.num_steps
    dtype = jnp.zeros(()).dtype
    return jnp.asarray(t_grid, dtype), jnp.asarray(log_alpha, dtype)

  @property
  def alphas_cumprod(self):
    _, log_alpha = self._tables()
    return jnp.exp(2 * log_alpha)

  def log_alpha(self, t):
    t_grid, log_alpha = self._tables()
    return _interp_with_extrapolation(t, t_grid, log_alpha)

  def sigma(self, t):
    return jnp.sqrt(-jnp.expm1(2.0 * self.log_alpha(t)))

  def log_snr(self, t):
    log_alpha = self.log_alpha(t)
    return log_alpha - 0.5 * jnp.log(-jnp.expm1(2.0 * log_alpha))

  def f(self, t):
    t_grid, log_alpha = self._tables()
    t = jnp.asarray(t)
    idx = jnp.clip(jnp.searchsorted(t_grid, t, side="right") - 1, 0, t_grid.shape[0] - 2)
    return (log_alpha[idx + 1] - log_alpha[idx]) / (t_grid[idx + 1] - t_grid[idx])

  def g2(self, t):
    return -2.0 * self.f(t)

  def t_from_log_snr(self, lam):
    t_grid, log_alpha = self._tables()
    target = -0.5 * jnp.logaddexp(0.0, -2.0 * jnp.asarray(lam))
    # log alpha decreases in t; interpolate on the reversed (increasing) table.
    return _interp_with_extrapolation(target, log_alpha[::-1], t_grid[::-1])

  def model_time(self, t):
    """Continuous t -> the DDPM integer-time label in [0, N - 1] (DPM-Solver's discrete mapping)."""
    return (jnp.asarray(t) - 1.0 / self.num_steps) * self.num_steps

  @property
  def prior_std(self):
    return 1.0


@dataclasses.dataclass(frozen=True)
class SubVP(Process):
  """score_sde's sub-VP SDE: alpha as in linear VP, sigma(t) = 1 - alpha(t)^2.

  g(t)^2 = beta(t) (1 - exp(-2 beta_min t - (beta_max - beta_min) t^2)) = beta(t)(1 - alpha^4)
  (Song et al. 2021, eq. 11 and app. B).
  """
  beta_min: float = 0.1
  beta_max: float = 20.0
  t_min: float = 1e-5
  t_max: float = 1.0

  def __post_init__(self):
    _check_positive("SubVP: beta_min", self.beta_min)
    _check_order("SubVP", "beta_min", self.beta_min, "beta_max", self.beta_max)

  def log_alpha(self, t):
    return _linear_log_alpha(t, self.beta_min, self.beta_max)

  def sigma(self, t):
    return -jnp.expm1(2.0 * self.log_alpha(t))

  def f(self, t):
    return -0.5 * (self.beta_min + jnp.asarray(t) * (self.beta_max - self.beta_min))

  def g2(self, t):
    return -2.0 * self.f(t) * -jnp.expm1(4.0 * self.log_alpha(t))

  def t_from_log_snr(self, lam):
    # alpha / (1 - alpha^2) = e^lam  =>  alpha = 2 e^lam / (1 + sqrt(1 + 4 e^{2 lam})).
    lam = jnp.asarray(lam)
    log_alpha = jnp.log(2.0) + lam - jnp.log1p(jnp.sqrt(1.0 + 4.0 * jnp.exp(2.0 * lam)))
    return _linear_t_from_log_alpha(log_alpha, self.beta_min, self.beta_max)

  @property
  def prior_std(self):
    return 1.0


# --------------------------------------------------------------------------------------------
# Variance exploding and EDM
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class VE(Process):
  """score_sde's VESDE / NCSN: alpha = 1, sigma(t) = sigma_min (sigma_max / sigma_min)^t.

  g(t)^2 = 2 sigma(t)^2 log(sigma_max / sigma_min); prior N(0, sigma_max^2 I).
  """
  sigma_min: float = 0.01
  sigma_max: float = 50.0
  t_min: float = 1e-5
  t_max: float = 1.0

  def __post_init__(self):
    _check_positive("VE: sigma_min", self.sigma_min)
    _check_order("VE", "sigma_min", self.sigma_min, "sigma_max", self.sigma_max)

  def log_alpha(self, t):
    return _zeros_like_t(t)

  def sigma(self, t):
    return self.sigma_min * (self.sigma_max / self.sigma_min)**jnp.asarray(t)

  def log_snr(self, t):
    return -(math.log(self.sigma_min) + jnp.asarray(t) * math.log(self.sigma_max / self.sigma_min))

  def f(self, t):
    return _zeros_like_t(t)

  def g2(self, t):
    return 2.0 * self.sigma(t)**2 * math.log(self.sigma_max / self.sigma_min)

  def t_from_log_snr(self, lam):
    return (-jnp.asarray(lam) - math.log(self.sigma_min)) / math.log(self.sigma_max / self.sigma_min)

  @property
  def prior_std(self):
    return self.sigma_max


@dataclasses.dataclass(frozen=True)
class EDM(Process):
  """Karras et al. 2022 (EDM): alpha = 1, sigma = t, so t is the noise level.

  f = 0 and g(t)^2 = 2 t (EDM eq. 6 with sigma(t) = t, s(t) = 1). The training range is
  [sigma_min, sigma_max] = [0.002, 80] and the prior is N(0, sigma_max^2 I).
  """
  sigma_min: float = 0.002
  sigma_max: float = 80.0

  def __post_init__(self):
    _check_positive("EDM: sigma_min", self.sigma_min)
    _check_order("EDM", "sigma_min", self.sigma_min, "sigma_max", self.sigma_max)

  @property
  def t_min(self):
    return self.sigma_min

  @property
  def t_max(self):
    return self.sigma_max

  def log_alpha(self, t):
    return _zeros_like_t(t)

  def sigma(self, t):
    return jnp.asarray(t, dtype=jnp.result_type(float))

  def log_snr(self, t):
    return -jnp.log(jnp.asarray(t))

  def f(self, t):
    return _zeros_like_t(t)

  def g2(self, t):
    return 2.0 * jnp.asarray(t)

  def dsigma_dt(self, t):
    return jnp.ones_like(jnp.asarray(t, dtype=jnp.result_type(float)))

  def t_from_log_snr(self, lam):
    return jnp.exp(-jnp.asarray(lam))

  def edm_sigma(self, t):
    return jnp.asarray(t, dtype=jnp.result_type(float))

  def t_from_edm_sigma(self, edm_sigma):
    return jnp.asarray(edm_sigma, dtype=jnp.result_type(float))

  @property
  def prior_std(self):
    return self.sigma_max


@dataclasses.dataclass(frozen=True)
class PFGMpp(EDM):
  """PFGM++ (Xu, Liu, Tian, Tegmark, Jaakkola 2023, "PFGM++: Unlocking the Potential of
  Physics-Inspired Generative Models"; `Newbeeer/pfgmpp`).

  The N-dimensional data are embedded in N + D dimensions, and a sample at augmented radius r
  is perturbed by the kernel (paper eq. 4)

      p_r(y | x) ∝ 1 / (||y - x||^2 + r^2)^((N + D) / 2),

  which, with r = sigma sqrt(D) (the paper's "hyper-parameter alignment", sec. 4), is the
  multivariate Student-t of D degrees of freedom and scale sigma: y = x + sigma n with
  n = g / sqrt(chi2_D / D), g ~ N(0, I_N). Its radius R = ||y - x|| obeys R^2 / r^2 ~
  BetaPrime(N/2, D/2), so E R^2 = sigma^2 N D / (D - 2), and as D -> inf the kernel is EDM's
  N(x, sigma^2 I) (Theorem 2). Everything else is EDM's: t = sigma, the network is conditioned on
  sigma (not r), the loss, the preconditioning and the ODE dx/dsigma = (x - D(x, sigma)) / sigma
  carry over unchanged, and the prior is the kernel at sigma_max around 0.

  `D = inf` draws the Gaussian noise of `EDM` with the same keys (bitwise equal). N is the
  number of elements of one example (everything but the leading batch axis).

  The forward process is not a Gaussian SDE for finite D: `g2`, `diffusion` and
  `reverse_sde_drift` raise, so the SDE samplers refuse it. The deterministic samplers (Euler,
  Heun, DPM-Solver, ...) integrate the same ODE as for EDM; Heun's optional churn adds Gaussian
  noise, as the official `edm_sampler` does.

  Attributes:
    D: augmented dimension (> 2 for a finite E R^2; float("inf") is EDM).
    sigma_min, sigma_max: EDM's range; the prior is at r_max = sigma_max sqrt(D).
    beta_clip: None (default) or c in (0, 0.5): clip B = R^2/(R^2 + r^2) ~ Beta(N/2, D/2) to
      [c, 1 - c], as one revision of the official training loss does with c = 1e-3.
  """
  D: float = 128.0
  beta_clip: float | None = None

  def __post_init__(self):
    super().__post_init__()
    if not isinstance(self.D, (int, float)) or not self.D > 0:
      raise ValueError(f"PFGMpp: D must be a positive number or float('inf'), got {self.D!r}")
    if self.beta_clip is not None and not 0.0 < self.beta_clip < 0.5:
      raise ValueError(f"PFGMpp: beta_clip must be None or in (0, 0.5), got {self.beta_clip!r}")

  @property
  def is_gaussian(self):
    return math.isinf(self.D)

  def sample_noise(self, key, shape, dtype=None):
    """n with y = x + sigma n ~ p_r(y | x), r = sigma sqrt(D), drawn as the official code does.

    The official loss draws B ~ Beta(N/2, D/2) and sets ||n|| = sqrt(D) sqrt(B / (1 - B)) along a
    uniform direction g / ||g||. Here B / (1 - B) = G_N / G_D is the ratio of the two Gamma
    variables (shapes N/2 and D/2) that define the Beta law, taken in log space, which keeps
    full precision where B is near 0 or 1 (large N or large D).
    """
    dtype = dtype or jnp.zeros(()).dtype
    if self.is_gaussian:
      return jax.random.normal(key, shape, dtype)
    n_dim = math.prod(shape[1:])
    k_dir, k_n, k_d = jax.random.split(key, 3)
    g = jax.random.normal(k_dir, shape, dtype)
    log_gn = jax.random.loggamma(k_n, n_dim / 2.0, (shape[0],), dtype)
    log_gd = jax.random.loggamma(k_d, self.D / 2.0, (shape[0],), dtype)
    log_ratio = log_gn - log_gd  # log B/(1 - B)
    if self.beta_clip is not None:
      c = self.beta_clip
      log_ratio = jnp.clip(log_ratio, math.log(c / (1 - c)), math.log((1 - c) / c))
    radius = jnp.sqrt(self.D) * jnp.exp(0.5 * log_ratio)
    g_norm = jnp.sqrt(utils.sum_except_batch(g**2))
    return g * utils.expand_to(radius / g_norm, g)

  def r(self, sigma):
    """The augmented radius r = sigma sqrt(D) of noise level sigma."""
    return jnp.asarray(sigma) * math.sqrt(self.D)

  def kernel_logpdf(self, y, x0, sigma):
    """log p_r(y | x0) with r = sigma sqrt(D), normalised over y in R^N (per example).

    The Student-t density Gamma((N+D)/2) / (Gamma(D/2) pi^(N/2)) r^D (||y - x0||^2 + r^2)^(-(N+D)/2);
    for D = inf the Gaussian N(x0, sigma^2 I).
    """
    diff2 = utils.sum_except_batch((y - x0)**2)
    n_dim = math.prod(y.shape[1:])
    sigma = jnp.asarray(sigma, diff2.dtype)
    if self.is_gaussian:
      return -0.5 * n_dim * jnp.log(2 * jnp.pi * sigma**2) - 0.5 * diff2 / sigma**2
    return self._t_logpdf(diff2, n_dim, sigma)

  def _t_logpdf(self, diff2, n_dim, sigma):
    D = self.D
    r2 = D * sigma**2
    const = (jax.scipy.special.gammaln((n_dim + D) / 2) - jax.scipy.special.gammaln(D / 2)
             - 0.5 * n_dim * math.log(math.pi))
    # D/2 log r^2 - (N+D)/2 log(R^2 + r^2), written with log1p for large D
    return const - 0.5 * n_dim * jnp.log(r2) - 0.5 * (n_dim + D) * jnp.log1p(diff2 / r2)

  def radius_logpdf(self, radius, n_dim, sigma):
    """log density of R = ||y - x0|| under the kernel (R^2/r^2 ~ BetaPrime(N/2, D/2))."""
    radius = jnp.asarray(radius)
    log_area = (math.log(2.0) + 0.5 * n_dim * math.log(math.pi) - jax.scipy.special.gammaln(n_dim / 2)
                + (n_dim - 1) * jnp.log(radius))
    sigma = jnp.asarray(sigma, radius.dtype)
    if self.is_gaussian:
      return log_area - 0.5 * n_dim * jnp.log(2 * jnp.pi * sigma**2) - 0.5 * radius**2 / sigma**2
    return log_area + self._t_logpdf(radius**2, n_dim, sigma)

  def prior_logp(self, x):
    """log p_{r_max}(x | 0): the kernel at sigma_max around the origin (the official prior)."""
    return self.kernel_logpdf(x, jnp.zeros_like(x), self.sigma_max)

  def _no_sde(self, what):
    if not self.is_gaussian:
      raise ValueError(f"PFGMpp(D={self.D}) has no Gaussian forward SDE, so {what} is undefined; "
                       "sample with a deterministic ODE sampler (euler, heun, dpm_solver, ...)")

  def g2(self, t):
    self._no_sde("g(t)^2")
    return super().g2(t)

  def reverse_sde_drift(self, x, t, x0_hat):
    self._no_sde("the reverse SDE drift")
    return super().reverse_sde_drift(x, t, x0_hat)


# --------------------------------------------------------------------------------------------
# Flow matching
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class RectifiedFlow(Process):
  """Linear interpolant x_t = (1 - t) x0 + t eps (rectified flow / conditional OT flow matching).

  f(t) = -1 / (1 - t), g(t)^2 = 2 t / (1 - t); both blow up at t = 1 but the flow velocity
  (`pf_ode_velocity`, = eps - x0 along the interpolant) does not.
  """
  t_min: float = 0.0
  t_max: float = 1.0

  def log_alpha(self, t):
    return jnp.log1p(-jnp.asarray(t))

  def alpha(self, t):
    return 1.0 - jnp.asarray(t, dtype=jnp.result_type(float))

  def sigma(self, t):
    return jnp.asarray(t, dtype=jnp.result_type(float))

  def log_snr(self, t):
    t = jnp.asarray(t)
    return jnp.log1p(-t) - jnp.log(t)

  def f(self, t):
    return -1.0 / (1.0 - jnp.asarray(t))

  def g2(self, t):
    t = jnp.asarray(t)
    return 2.0 * t / (1.0 - t)

  def dalpha_dt(self, t):
    return -jnp.ones_like(jnp.asarray(t, dtype=jnp.result_type(float)))

  def dsigma_dt(self, t):
    return jnp.ones_like(jnp.asarray(t, dtype=jnp.result_type(float)))

  def t_from_log_snr(self, lam):
    return jax.nn.sigmoid(-jnp.asarray(lam))

  @property
  def prior_std(self):
    return 1.0


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------
_REGISTRY = {
    "vp": VP,
    "vp_cosine": lambda **kw: VP(schedule="cosine", **kw),
    "vp_discrete": lambda schedule="linear", num_steps=1000, **kw: VPDiscrete.from_ddpm(schedule, num_steps, **kw),
    "subvp": SubVP,
    "ve": VE,
    "edm": EDM,
    "pfgmpp": PFGMpp,
    "rectified_flow": RectifiedFlow,
}


def list_processes():
  return sorted(_REGISTRY)


def get_process(name, **kwargs):
  """Builds a process by name: one of `list_processes()`, with keyword overrides of its fields."""
  if name not in _REGISTRY:
    raise ValueError(f"unknown process {name!r}; valid processes: {list_processes()}")
  try:
    return _REGISTRY[name](**kwargs)
  except TypeError as e:
    raise ValueError(f"invalid options for process {name!r}: {e}") from None
