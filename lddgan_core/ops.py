"""Reference FIR resampling ops (StyleGAN2's upfirdn2d, as NCSN++ uses it) in plain PyTorch.

upfirdn2d(x, k, up, down, pad): insert (up-1) zeros between samples, pad (pad0, pad1) on both
axes, convolve with the 2-D filter k (a true convolution: k is flipped), keep every down-th sample.
All ops work on [B, C, H, W] and treat channels independently (depthwise).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def make_fir_kernel(taps, gain: float = 1.0) -> torch.Tensor:
    """Outer product of the 1-D taps, normalised to sum to `gain`.  [k, k] float32."""
    k = torch.as_tensor(taps, dtype=torch.float64)
    if k.ndim == 1:
        k = torch.outer(k, k)
    k = k / k.sum() * gain
    return k.to(torch.float32)


def upfirdn2d(x: torch.Tensor, k: torch.Tensor, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """Upsample by zero insertion, pad, FIR-filter, downsample.  x: [B, C, H, W]; k: [kh, kw]."""
    B, C, H, W = x.shape
    if up > 1:
        y = x.new_zeros(B, C, H, up, W, up)
        y[:, :, :, 0, :, 0] = x
        x = y.reshape(B, C, H * up, W * up)
    p0, p1 = pad
    x = F.pad(x, (max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)))
    if p0 < 0 or p1 < 0:
        x = x[:, :, max(-p0, 0): x.shape[2] - max(-p1, 0), max(-p0, 0): x.shape[3] - max(-p1, 0)]
    w = torch.flip(k, [0, 1]).to(dtype=x.dtype, device=x.device)
    w = w[None, None].expand(C, 1, *k.shape)
    x = F.conv2d(x, w, groups=C)
    if down > 1:
        x = x[:, :, ::down, ::down]
    return x


def fir_upsample2x(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """2x FIR upsampling; `k` is the normalised 2-D kernel (the gain of 4 is applied here)."""
    p = k.shape[0] - 2
    return upfirdn2d(x, k * 4, up=2, pad=((p + 1) // 2 + 1, p // 2))


def fir_downsample2x(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """2x FIR downsampling with the normalised 2-D kernel `k`."""
    p = k.shape[0] - 2
    return upfirdn2d(x, k, down=2, pad=((p + 1) // 2, p // 2))


def fir_conv_downsample2x(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, k: torch.Tensor) -> torch.Tensor:
    """FIR pre-filter then a stride-2 convolution with `weight` (StyleGAN2's conv_downsample_2d)."""
    p = (k.shape[0] - 2) + (weight.shape[-1] - 1)
    x = upfirdn2d(x, k, pad=((p + 1) // 2, p // 2))
    x = F.conv2d(x, weight, stride=2)
    if bias is not None:
        x = x + bias.reshape(1, -1, 1, 1)
    return x


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding [sin, cos] of integer steps t [B] -> [B, dim] (DDPM / NCSN++ form)."""
    if t.ndim != 1:
        raise ValueError(f"t must be 1-D [B], got shape {tuple(t.shape)}")
    half = dim // 2
    freqs = torch.exp(torch.arange(half, dtype=torch.float32, device=t.device) * -(math.log(max_period) / (half - 1)))
    args = t.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb
