"""Samplers with one signature: `f(denoiser, x, ts, *, process, key=None, **options) -> x`.

Each runs as one compiled loop (`lax.scan`; the adaptive `pf_ode` a diffrax `while_loop`) over
the times `ts` (noise to data).

  euler, heun             probability-flow ODE (EDM Algorithm 2 with churn)     ode.py
  euler_maruyama          reverse SDE                                            sde.py
  ddim                    DDIM, eta in [0, 1]                                    ddim.py
  dpm_solver              DPM-Solver / DPM-Solver++ (orders 1-3, multi/singlestep, SDE)   dpm_solver.py
  dpm_solver_v3           DPM-Solver-v3 with empirical model statistics (EMS)  dpm_solver_v3.py
  unipc                   UniPC bh1 / bh2, orders 1-3                            unipc.py
  pf_ode                  adaptive diffrax solve                                 pf_ode.py
  pc, reverse_diffusion,  Score SDE predictor-corrector (Langevin, ALD)          score_sde.py
  ancestral, langevin
  time_shift_ddim,        Time-Shift sampler (exposure bias), DDIM and          time_shift.py
  time_shift_dpm_solver   DPM-Solver paths
  dc_solver               DC-Solver (UniPC + dynamic compensation), ratio search dc_solver.py
  sample_with_adjoint     AdjointDPM gradients through sampling                  adjoint.py
  consistency_multistep,  few-step students (consistency models, DMD2's         few_step.py
  renoise_multistep       multi-step generator): ts are the network's call times
"""
from diffjax.samplers.adjoint import sample_with_adjoint
from diffjax.samplers.dc_solver import dc_solver, fit_cascade_polynomial, predict_dc_ratios, search_dc_ratios
from diffjax.samplers.ddim import ddim
from diffjax.samplers.dpm_solver import dpm_solver
from diffjax.samplers.dpm_solver_v3 import EMS, compute_ems, dpm_solver_v3, load_ems, save_ems
from diffjax.samplers.ode import euler, heun
from diffjax.samplers.pf_ode import pf_ode
from diffjax.samplers.registry import get_sampler, list_samplers, register, sample
from diffjax.samplers.score_sde import ancestral, langevin, pc, reverse_diffusion
from diffjax.samplers.sde import euler_maruyama
from diffjax.samplers.time_shift import time_shift_ddim, time_shift_dpm_solver
from diffjax.samplers.unipc import unipc

__all__ = ["euler", "heun", "euler_maruyama", "ddim", "dpm_solver", "dpm_solver_v3", "EMS", "compute_ems", "load_ems", "save_ems", "unipc", "pf_ode", "pc",
           "reverse_diffusion", "ancestral", "langevin", "time_shift_ddim", "time_shift_dpm_solver", "dc_solver",
           "search_dc_ratios", "fit_cascade_polynomial", "predict_dc_ratios",
           "sample_with_adjoint", "get_sampler", "list_samplers", "register", "sample"]
from diffjax.samplers import learned_variance, transition_logprob
from diffjax.samplers.learned_variance import ddpm_learned_variance
from diffjax.samplers.transition_logprob import ddim_step_with_logprob, path_kl, sample_trajectory

__all__ += ["learned_variance", "transition_logprob", "ddpm_learned_variance", "ddim_step_with_logprob", "path_kl",
            "sample_trajectory"]
from diffjax.samplers import few_step
from diffjax.samplers.few_step import consistency_multistep, renoise_multistep
