"""Diffusion: the schedule and posterior math as pure functions (``schedule``) and the T-step sampler
(``sampler``)."""
from .schedule import (betas_for, DiffusionCoefficients, EPS_T, geometric_variance, posterior_mean, posterior_sample,
                       PosteriorCoefficients, q_sample, q_sample_pairs, time_grid, vp_variance)
