"""Few-step diffusion math (DDGAN, Xiao et al. 2022, Sec. 3-4) as pure functions.

Schedule: T steps on the time grid t_k = k/T * (1 - eps) + eps, k = 0..T, eps = 1e-3. The variance
of q(x_t | x_0) at t_k is the VP-SDE marginal 1 - exp(-t^2 (b_max - b_min)/2 - t b_min) or the
geometric b_min (b_max/b_min)^t; betas are the ratios 1 - abar_k / abar_{k-1}, with a leading 1e-8.
Betas are computed in float64 and cast to float32; the coefficients derived from them follow the official
float32 arithmetic exactly (see the comments), so sampling matches the official code bit for bit.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ..config import DiffusionConfig

EPS_T = 1e-3


def time_grid(num_timesteps: int, eps: float = EPS_T) -> torch.Tensor:
    """t_k = k/T (1 - eps) + eps for k = 0..T.  float64 [T+1]."""
    k = torch.arange(num_timesteps + 1, dtype=torch.float64) / num_timesteps
    return k * (1.0 - eps) + eps


def vp_variance(t: torch.Tensor, beta_min: float, beta_max: float) -> torch.Tensor:
    """Var[x_t | x_0] of the VP SDE: 1 - exp(-t^2/2 (b_max - b_min) - t b_min)."""
    log_mean = -0.25 * t ** 2 * (beta_max - beta_min) - 0.5 * t * beta_min
    return 1.0 - torch.exp(2.0 * log_mean)


def geometric_variance(t: torch.Tensor, beta_min: float, beta_max: float) -> torch.Tensor:
    """Geometric schedule: b_min (b_max / b_min)^t."""
    return beta_min * (beta_max / beta_min) ** t


def betas_for(cfg: DiffusionConfig) -> torch.Tensor:
    """Per-step betas [T+1] (float64): beta_0 = 1e-8, beta_k = 1 - abar_k / abar_{k-1}."""
    t = time_grid(cfg.num_timesteps)
    var = (vp_variance if cfg.schedule == "vp" else geometric_variance)(t, cfg.beta_min, cfg.beta_max)
    abar = 1.0 - var
    betas = 1.0 - abar[1:] / abar[:-1]
    return torch.cat([torch.tensor([1e-8], dtype=torch.float64), betas])


@dataclass(frozen=True)
class DiffusionCoefficients:
    """Forward process over the T+1 grid points (index 0 is the nearly clean point).

    q(x_k | x_0) = N(a_s_cum[k] x_0, sigmas_cum[k]^2 I);  q(x_{k+1} | x_k) = N(a_s[k+1] x_k, sigmas[k+1]^2 I).
    """

    a_s: torch.Tensor  # [T+1] sqrt(1 - beta_k)
    sigmas: torch.Tensor  # [T+1] sqrt(beta_k)
    a_s_cum: torch.Tensor  # [T+1] prod_{j<=k} a_s[j]
    sigmas_cum: torch.Tensor  # [T+1] sqrt(1 - a_s_cum^2)

    @classmethod
    def from_config(cls, cfg: DiffusionConfig) -> "DiffusionCoefficients":
        # Deliberately float32, as in the official code: there 1 - 1e-8 rounds to 1, so a_s[0] = 1 and
        # sigmas_cum[0] = 0 exactly (float64 would give 1e-4); training pairs at t = 0 start from clean x0.
        b = betas_for(cfg).to(torch.float32)
        a_s = torch.sqrt(1.0 - b)
        a_cum = torch.cumprod(a_s, 0)
        return cls(a_s, b.sqrt(), a_cum, torch.sqrt(1.0 - a_cum ** 2))


@dataclass(frozen=True)
class PosteriorCoefficients:
    """q(x_{t-1} | x_t, x_0) = N(coef1[t] x_0 + coef2[t] x_t, variance[t] I) for step index t = 0..T-1
    (index t moves from grid point t+1 to t; the leading 1e-8 beta is dropped)."""

    betas: torch.Tensor  # [T]
    posterior_mean_coef1: torch.Tensor  # [T] multiplies x_0
    posterior_mean_coef2: torch.Tensor  # [T] multiplies x_t
    posterior_variance: torch.Tensor  # [T]
    posterior_log_variance_clipped: torch.Tensor  # [T] log(max(variance, 1e-20))

    @classmethod
    def from_config(cls, cfg: DiffusionConfig) -> "PosteriorCoefficients":
        # float32 arithmetic on float32 betas, as in the official code, so the coefficients are
        # bit-identical to the ones the official sampler uses (float64 would move them by ~1e-7).
        b = betas_for(cfg)[1:].to(torch.float32)
        alphas = 1.0 - b
        abar = torch.cumprod(alphas, 0)
        abar_prev = torch.cat([torch.ones(1, dtype=torch.float32), abar[:-1]])
        var = b * (1.0 - abar_prev) / (1.0 - abar)
        c1 = b * torch.sqrt(abar_prev) / (1.0 - abar)
        c2 = (1.0 - abar_prev) * torch.sqrt(alphas) / (1.0 - abar)
        return cls(b, c1, c2, var, torch.log(var.clamp(min=1e-20)))

    def to(self, device) -> "PosteriorCoefficients":
        """The same coefficients on `device` (the values do not change)."""
        return PosteriorCoefficients(*(getattr(self, f.name).to(device) for f in dataclasses.fields(self)))


def _at(coef: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """coef[t] reshaped to broadcast against x [B, ...]."""
    return coef.to(x.device)[t.to(x.device)].reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)


def q_sample(coef: DiffusionCoefficients, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """x_t ~ q(x_t | x_0) at grid index t [B]: a_s_cum[t] x0 + sigmas_cum[t] noise."""
    return _at(coef.a_s_cum, t, x0) * x0 + _at(coef.sigmas_cum, t, x0) * noise


def q_sample_pairs(coef: DiffusionCoefficients, x0: torch.Tensor, t: torch.Tensor,
                   noise_t: torch.Tensor, noise_step: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Training pairs: x_t ~ q(x_t | x_0), then x_{t+1} = a_s[t+1] x_t + sigmas[t+1] noise_step."""
    x_t = q_sample(coef, x0, t, noise_t)
    return x_t, _at(coef.a_s, t + 1, x0) * x_t + _at(coef.sigmas, t + 1, x0) * noise_step


def posterior_mean(post: PosteriorCoefficients, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Mean of q(x_{t-1} | x_t, x_0): coef1[t] x0 + coef2[t] x_t."""
    return _at(post.posterior_mean_coef1, t, x_t) * x0 + _at(post.posterior_mean_coef2, t, x_t) * x_t


def posterior_sample(post: PosteriorCoefficients, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor,
                     noise: torch.Tensor) -> torch.Tensor:
    """x_{t-1} ~ q(x_{t-1} | x_t, x_0); no noise is added where t == 0."""
    mean = posterior_mean(post, x0, x_t, t)
    nonzero = (t != 0).to(x_t.dtype).to(x_t.device).reshape(-1, *([1] * (x_t.ndim - 1)))
    return mean + nonzero * torch.exp(0.5 * _at(post.posterior_log_variance_clipped, t, x_t)) * noise
