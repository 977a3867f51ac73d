"""Schedule and posterior math: golden values, closed forms, and the identities they must satisfy."""
import math

import pytest
import torch

import lddgan_core as L
from lddgan_core.diffusion.schedule import geometric_variance, posterior_mean, vp_variance

VP4 = L.DiffusionConfig(num_timesteps=4, beta_min=0.1, beta_max=20.0)


def test_time_grid():
    t = L.time_grid(4)
    assert t.dtype == torch.float64
    assert torch.allclose(t, torch.tensor([0.001, 0.25075, 0.5005, 0.75025, 1.0], dtype=torch.float64), atol=0, rtol=1e-15)


def test_vp_betas_closed_form():
    b = L.betas_for(VP4)
    assert b[0] == 1e-8 and b.shape == (5,)
    t = L.time_grid(4)
    abar = torch.exp(-0.5 * t ** 2 * (20 - 0.1) - t * 0.1)
    assert torch.allclose(b[1:], 1 - abar[1:] / abar[:-1], rtol=1e-12)
    # golden value: beta_4 for T=4
    assert abs(b[4].item() - (1 - math.exp(-0.5 * (1 - 0.75025 ** 2) * 19.9 - 0.1 * (1 - 0.75025)))) < 1e-12


def test_geometric_schedule():
    cfg = L.DiffusionConfig(num_timesteps=2, beta_min=0.1, beta_max=20.0, schedule="geometric")
    t = L.time_grid(2)
    var = geometric_variance(t, 0.1, 20.0)
    assert torch.allclose(var, 0.1 * 200.0 ** t)
    b = L.betas_for(cfg)
    assert torch.allclose(b[1:], 1 - (1 - var[1:]) / (1 - var[:-1]))
    assert not torch.allclose(b, L.betas_for(L.DiffusionConfig(num_timesteps=2)))


@pytest.mark.parametrize("T", [1, 2, 4])
def test_forward_coefficients_consistent(T):
    c = L.DiffusionCoefficients.from_config(L.DiffusionConfig(num_timesteps=T))
    assert torch.allclose(c.a_s_cum, torch.cumprod(c.a_s, 0))
    assert torch.allclose(c.a_s ** 2 + c.sigmas ** 2, torch.ones(T + 1), atol=1e-6)
    assert torch.allclose(c.a_s_cum ** 2 + c.sigmas_cum ** 2, torch.ones(T + 1), atol=1e-6)
    assert c.sigmas_cum[0] == 0  # float32 rounding of the 1e-8 beta, as in the official code
    # q(x_T | x_0) is the VP marginal at t = 1
    assert abs(c.a_s_cum[-1].item() ** 2 - (1 - vp_variance(torch.tensor(1.0, dtype=torch.float64), 0.1, 20.0)).item()) < 1e-6


@pytest.mark.parametrize("T", [1, 2, 4])
def test_posterior_is_gaussian_conditioning(T):
    """coef1, coef2, variance equal the DDPM posterior formulas in float64 closed form."""
    p = L.PosteriorCoefficients.from_config(L.DiffusionConfig(num_timesteps=T))
    b = L.betas_for(L.DiffusionConfig(num_timesteps=T))[1:]
    abar = torch.cumprod(1 - b, 0)
    prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
    # (atol: the official betas are float32, so coefficients carry float32 rounding of 1 - beta)
    assert torch.allclose(p.posterior_mean_coef1.double(), b * prev.sqrt() / (1 - abar), atol=1e-6)
    assert torch.allclose(p.posterior_mean_coef2.double(), (1 - prev) * (1 - b).sqrt() / (1 - abar), atol=1e-6)
    assert p.posterior_variance[0] == 0 and p.posterior_log_variance_clipped[0] == pytest.approx(math.log(1e-20))
    # the posterior mean of x0 itself, diffused without noise, is consistent: E[x_{t-1}] = sqrt(abar_{t-1}) x0
    x0 = torch.randn(3, 2)
    for t in range(T):
        tt = torch.full((3,), t)
        x_t = abar[t].sqrt().float() * x0
        m = posterior_mean(p, x0, x_t, tt)
        assert torch.allclose(m, prev[t].sqrt().float() * x0, atol=1e-5)


def test_q_sample_pairs_and_posterior_sample():
    c = L.DiffusionCoefficients.from_config(VP4)
    p = L.PosteriorCoefficients.from_config(VP4)
    x0, n1, n2 = torch.randn(4, 3, 2, 2), torch.randn(4, 3, 2, 2), torch.randn(4, 3, 2, 2)
    t = torch.tensor([0, 1, 2, 3])
    x_t, x_tp1 = L.q_sample_pairs(c, x0, t, n1, n2)
    assert torch.allclose(x_t, c.a_s_cum[t].view(-1, 1, 1, 1) * x0 + c.sigmas_cum[t].view(-1, 1, 1, 1) * n1)
    assert torch.allclose(x_tp1, c.a_s[t + 1].view(-1, 1, 1, 1) * x_t + c.sigmas[t + 1].view(-1, 1, 1, 1) * n2)
    assert torch.equal(x_t[0], x0[0])  # t = 0 is clean (sigmas_cum[0] == 0, a_s_cum[0] == 1)
    noise = torch.randn_like(x0)
    s = L.posterior_sample(p, x0, x_tp1, t, noise)
    mean = posterior_mean(p, x0, x_tp1, t)
    assert torch.equal(s[0], mean[0])  # no noise at t = 0
    std = torch.exp(0.5 * p.posterior_log_variance_clipped[t]).view(-1, 1, 1, 1)
    assert torch.allclose(s[1:], (mean + std * noise)[1:])
