"""GAN losses: golden values, the R1 penalty against its closed form, finiteness on the real discriminator."""
import math

import pytest
import torch

from lddgan_core.nets.discriminator import build_discriminator
from lddgan_core.train import d_fake_loss, d_real_loss, g_adv_loss, r1_penalty, rec_loss


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def test_golden_values():
    z = torch.zeros(4, 1)
    assert d_real_loss(z).item() == pytest.approx(math.log(2), abs=1e-7)
    assert d_fake_loss(z).item() == pytest.approx(math.log(2), abs=1e-7)
    x = torch.tensor([[2.0], [-1.0]])
    assert d_real_loss(x).item() == pytest.approx((math.log1p(math.exp(-2)) + math.log1p(math.e)) / 2, abs=1e-6)
    assert d_fake_loss(x).item() == pytest.approx((math.log1p(math.exp(2)) + math.log1p(math.exp(-1))) / 2, abs=1e-6)
    assert g_adv_loss(x).item() == pytest.approx(d_real_loss(x).item())  # non-saturating = softplus(-D)
    assert rec_loss(torch.tensor([1.0, -1.0]), torch.tensor([0.5, 0.0])).item() == pytest.approx(0.75)


def test_r1_closed_form():
    # D(x) = sum(a * x) per sample: grad = a for every sample, so R1 = gamma / 2 * ||a||^2
    a = torch.randn(3, 4, 4, generator=torch.Generator().manual_seed(0))
    x = torch.randn(5, 3, 4, 4).requires_grad_(True)
    logits = (x * a).flatten(1).sum(1, keepdim=True)
    pen = r1_penalty(logits, x, r1_gamma=2.0)
    assert pen.item() == pytest.approx(a.pow(2).sum().item(), rel=1e-6)
    # quadratic D(x) = sum(x^2): grad = 2x, R1 = gamma/2 * mean_b 4||x_b||^2
    pen2 = r1_penalty(x.pow(2).flatten(1).sum(1), x, r1_gamma=0.5)
    assert pen2.item() == pytest.approx((0.25 * 4 * x.detach().pow(2).flatten(1).sum(1)).mean().item(), rel=1e-6)


def test_losses_finite_and_r1_reaches_discriminator_weights():
    torch.manual_seed(0)
    D = build_discriminator(dict(kind="small", in_channels=8, ngf=8, t_emb_dim=16))
    with torch.no_grad():  # final_conv starts at ~0 (official init): perturb so R1 is not vanishingly small
        for p in D.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x_t = torch.randn(4, 4, 8, 8).requires_grad_(True)
    x_tp1, t = torch.randn(4, 4, 8, 8), torch.tensor([0, 1, 2, 3])
    real = D(x_t, t, x_tp1)
    losses = [d_real_loss(real), d_fake_loss(D(x_tp1, t, x_tp1)), g_adv_loss(real), r1_penalty(real, x_t, 1.0)]
    assert all(torch.isfinite(v) for v in losses)
    assert losses[3].item() > 0
    losses[3].backward()
    grads = [p.grad for p in D.parameters() if p.grad is not None]
    assert grads and sum(g.abs().sum().item() for g in grads) > 0


def test_rec_loss_per_sample_weights():
    """weights: the mean of each sample's L1 times its factor; all-ones equals the official F.l1_loss."""
    pred = torch.tensor([[1.0, -1.0], [2.0, 0.0], [0.0, 0.0]])
    x0 = torch.tensor([[0.5, 0.0], [0.0, 0.0], [1.0, 3.0]])  # per-sample L1: 0.75, 1.0, 2.0
    assert rec_loss(pred, x0, torch.ones(3)).item() == pytest.approx(rec_loss(pred, x0).item())
    assert rec_loss(pred, x0, torch.tensor([1.0, 0.5, 0.0])).item() == pytest.approx((0.75 + 0.5) / 3)
