"""The ops both networks are built from: each reference op (plain PyTorch, the form the parity tests pin
down), and next to it its fast form with the derivation of why both agree. A network picks between them by
the ``NetImpl`` it was built with (stylegan3's ``impl=``), never by a switch set from outside.

Reference FIR resampling is StyleGAN2's upfirdn2d, as NCSN++ uses it: upfirdn2d(x, k, up, down, pad) inserts
(up-1) zeros between samples, pads (pad0, pad1) on both axes, convolves with the 2-D filter k (a true
convolution: k is flipped) and keeps every down-th sample. All ops work on [B, C, H, W] and treat channels
independently (depthwise).
"""
from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F


@dataclasses.dataclass(frozen=True)
class NetImpl:
    """Which form of each op a network runs; given to ``Generator`` / ``Autoencoder`` when they are built (or to
    their ``set_impl``). The default is the reference everywhere. Every fast form equals its reference up to
    float rounding (tests/nets/test_fast_ops.py)."""

    fir_conv: bool = False  # generator: FIR up/down-sampling as strided / transposed depthwise convs
    sdpa: bool = False  # attention of both networks through F.scaled_dot_product_attention
    upsample_conv: bool = False  # decoder: nearest-2x + 3x3 conv as one 4x4 stride-2 transposed conv
    fused: bool = False  # ResNet blocks, no-grad eval only: fused AdaGN multiply-add, in-place activations / adds


def make_fir_kernel(taps, gain: float = 1.0) -> torch.Tensor:
    """Outer product of the 1-D taps, normalised to sum to `gain`.  [k, k] float32."""
    k = torch.as_tensor(taps, dtype=torch.float64, device="cpu")  # also when built on the meta device
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


def adagn_silu(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, groups: int,
               fused: bool = False) -> torch.Tensor:
    """SiLU(gamma * GroupNorm(x) + beta): AdaGN (no affine GroupNorm, modulated per sample) then SiLU.
    x [B, C, H, W]; gamma, beta [B, C, 1, 1].

    ``fused`` (no grad only): gamma * n + beta as one ``addcmul`` (one pass over n instead of two, the same
    products and sums, so the same rounding) and the SiLU in place on that fresh tensor."""
    n = F.group_norm(x, groups, eps=1e-6)
    if fused:
        return F.silu(torch.addcmul(beta, gamma, n), inplace=True)
    return F.silu(gamma * n + beta)


def add(h: torch.Tensor, y: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """h + y; ``inplace`` (no grad, h a temporary of the caller) writes into h instead of a new tensor."""
    return h.add_(y) if inplace else h + y


def residual(h: torch.Tensor, skip: torch.Tensor, rescale: bool, inplace: bool = False) -> torch.Tensor:
    """(skip + h) / sqrt(2) (``rescale``) or skip + h; ``inplace`` reuses h's memory (addition commutes, so the
    in-place h + skip rounds exactly as skip + h)."""
    if inplace:
        h = h.add_(skip)
        return h.div_(math.sqrt(2.0)) if rescale else h
    return (skip + h) / math.sqrt(2.0) if rescale else skip + h


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, sdpa: bool = False) -> torch.Tensor:
    """Single-head softmax(q k^T / sqrt(C)) v over all positions. q, k, v [B, N, C] -> [B, N, C].

    ``sdpa``: F.scaled_dot_product_attention, whose default scale 1/sqrt(head dim) is the C^-0.5 here; it
    never materialises the [B, N, N] weights (flash / memory-efficient kernels)."""
    if sdpa:
        return F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]
    w = torch.softmax(torch.bmm(q, k.transpose(1, 2)) * (q.shape[-1] ** -0.5), dim=-1)  # [B, N(q), N(k)]
    return torch.bmm(w, v)


def attention_ldm(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, sdpa: bool = False) -> torch.Tensor:
    """``attention`` in LDM's layout: q [B, N, C], k and v [B, C, N] -> [B, C, N] (the autoencoder's order of
    products, kept so that its reference path rounds as the official code does). ``sdpa`` as in ``attention``."""
    if sdpa:
        return F.scaled_dot_product_attention(q[:, None], k.transpose(1, 2)[:, None],
                                              v.transpose(1, 2)[:, None])[:, 0].transpose(1, 2)
    w = torch.softmax(torch.bmm(q, k) * (q.shape[-1] ** -0.5), dim=2)  # [B, N(q), N(k)]
    return torch.bmm(v, w.transpose(1, 2))


# -- fast forms (same maths, fewer passes over memory) ---------------------------------------------------
# Each function below equals its reference counterpart above up to float rounding; tests/nets/test_fast_ops.py
# checks every one against ``upfirdn2d`` / the plain layer sequence.

def _depthwise(k: torch.Tensor, C: int, like: torch.Tensor) -> torch.Tensor:
    """[kh, kw] -> depthwise weight [C, 1, kh, kw] in like's dtype / device."""
    return k.to(dtype=like.dtype, device=like.device)[None, None].expand(C, 1, *k.shape).contiguous()


def fir_upsample2x_conv(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """``fir_upsample2x`` as one transposed depthwise convolution (stride 2): no zero-filled 4x tensor.

    Zero insertion + pad (p0, p1) + a true convolution with k equals conv_transpose2d with the unflipped
    kernel, padding K-1-p0 and output_padding p1-p0+1 (both 1 and 0 for the 4-tap kernel). [B, C, H, W]
    -> [B, C, 2H, 2W].
    """
    K = k.shape[0]
    p = K - 2
    p0, p1 = (p + 1) // 2 + 1, p // 2
    pad, out_pad = K - 1 - p0, p1 - p0 + 1
    if pad < 0 or not 0 <= out_pad < 2:  # kernels the transposed form cannot express: reference path
        return fir_upsample2x(x, k)
    C = x.shape[1]
    return F.conv_transpose2d(x, _depthwise(k * 4, C, x), stride=2, padding=pad, output_padding=out_pad, groups=C)


def fir_downsample2x_conv(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """``fir_downsample2x`` as one stride-2 depthwise convolution (keeping every 2nd output of a stride-1
    filter is a stride-2 filter). [B, C, H, W] -> [B, C, H/2, W/2]."""
    p = k.shape[0] - 2
    p0, p1 = (p + 1) // 2, p // 2
    if p0 != p1:
        return fir_downsample2x(x, k)
    C = x.shape[1]
    return F.conv2d(x, _depthwise(torch.flip(k, [0, 1]), C, x), stride=2, padding=p0, groups=C)


def fir_conv_downsample2x_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                               k: torch.Tensor) -> torch.Tensor:
    """``fir_conv_downsample2x`` without upfirdn2d: the FIR blur as a padded depthwise conv, then the
    stride-2 conv. (Fusing both into one (kh+K-1)^2 kernel was measured slower: 4x the MACs of the conv.)
    [B, I, H, W] -> [B, O, H/2, W/2]."""
    p = (k.shape[0] - 2) + (weight.shape[-1] - 1)
    p0, p1 = (p + 1) // 2, p // 2
    if p0 != p1:
        return fir_conv_downsample2x(x, weight, bias, k)
    C = x.shape[1]
    x = F.conv2d(x, _depthwise(torch.flip(k, [0, 1]), C, x), padding=p0, groups=C)
    return F.conv2d(x, weight, bias, stride=2)


def upsample_conv_weight(weight: torch.Tensor) -> torch.Tensor:
    """Kernel of "nearest 2x upsampling then 3x3 conv (padding 1)" as a stride-2 transposed conv.

    Per axis, output 2i reads x[i-1] w0 + x[i] (w1 + w2) and output 2i+1 reads x[i] (w0 + w1) + x[i+1] w2;
    a 4-tap transposed kernel [w2, w1+w2, w0+w1, w0] with padding 1 produces exactly those sums, 4 taps per
    output per axis pair instead of 9. weight [O, I, 3, 3] -> [I, O, 4, 4] (conv_transpose2d layout).
    """
    w0, w1, w2 = weight.unbind(2)  # rows
    w = torch.stack([w2, w1 + w2, w0 + w1, w0], dim=2)  # [O, I, 4, 3]
    w0, w1, w2 = w.unbind(3)  # columns
    w = torch.stack([w2, w1 + w2, w0 + w1, w0], dim=3)  # [O, I, 4, 4]
    return w.transpose(0, 1)


def upsample_conv2x(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                    fused_weight: torch.Tensor | None = None) -> torch.Tensor:
    """conv2d(interpolate(x, 2, nearest), weight, bias, padding=1) for a 3x3 `weight`, computed as one
    transposed conv at 4/9 of the MACs. [B, I, H, W] -> [B, O, 2H, 2W]."""
    w = upsample_conv_weight(weight) if fused_weight is None else fused_weight
    return F.conv_transpose2d(x, w, bias, stride=2, padding=1)
