"""GAN losses of DDGAN / LDDGAN training (Xiao et al. 2022, Eq. 6-7; LDDGAN Eq. 9) as small functions.

D maximises log D(real) + log(1 - D(fake)); with logits that is softplus(-D(real)) + softplus(D(fake)).
G minimises the non-saturating softplus(-D(fake)). R1 (Mescheder et al. 2018): r1_gamma / 2 * E||grad_x D(x)||^2
on real inputs, applied lazily every `lazy_reg` D steps with the same weight (as the official DDGAN code).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def d_real_loss(logits_real: torch.Tensor) -> torch.Tensor:
    """softplus(-D(x_t, t, x_{t+1})) averaged over the batch. logits [B, 1] or [B]."""
    return F.softplus(-logits_real.float()).mean()


def d_fake_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """softplus(D(x_pos, t, x_{t+1})): pushes D's logits on generated pairs down."""
    return F.softplus(logits_fake.float()).mean()


def g_adv_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss softplus(-D(fake))."""
    return F.softplus(-logits_fake.float()).mean()


def r1_penalty(logits_real: torch.Tensor, x_real: torch.Tensor, r1_gamma: float) -> torch.Tensor:
    """r1_gamma / 2 * mean_b ||d sum(D) / d x_real[b]||^2, differentiable (create_graph) so that its
    gradient reaches D's weights. x_real must require grad and be an input of logits_real."""
    (grad,) = torch.autograd.grad(logits_real.float().sum(), x_real, create_graph=True)
    return 0.5 * float(r1_gamma) * grad.float().flatten(1).pow(2).sum(1).mean()


def rec_loss(x0_pred: torch.Tensor, x0: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean absolute error of G's x0 prediction against the clean latent (the official F.l1_loss). weights: one
    factor per sample (TrainConfig.rec_t_weights at the sample's t); the loss is then the mean of the weighted
    per-sample errors."""
    if weights is None:
        return F.l1_loss(x0_pred.float(), x0.float())
    per_sample = (x0_pred.float() - x0.float()).abs().flatten(1).mean(1)
    return (per_sample * weights.to(per_sample)).mean()
