"""NCSN++ generator with AdaGN z-conditioning (DDGAN, Xiao et al. 2022; LDDGAN, Trinh & Hamagami 2024).

G(x_{t+1}, t, z) -> x0 prediction in the (scaled) latent space. t is the integer step index, embedded
sinusoidally; z is mapped by PixelNorm + MLP and modulates every GroupNorm (AdaGN). Submodules live in
ModuleDicts keyed by resolution (``enc['16x16_block0']``) so state-dict keys read like the network;
``lddgan_core.formats.official`` maps the official ``all_modules.N`` layout onto these names.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import GeneratorConfig
from ..errors import InputError
from .ops import (NetImpl, adagn_silu, add, attention, fir_conv_downsample2x, fir_conv_downsample2x_conv,
                  fir_downsample2x, fir_downsample2x_conv, fir_upsample2x, fir_upsample2x_conv, make_fir_kernel,
                  residual, timestep_embedding)

_SQRT2 = math.sqrt(2.0)


def _groups(c: int) -> int:
    return min(c // 4, 32)


class PixelNorm(nn.Module):
    def forward(self, z):  # [B, nz]
        return z / torch.sqrt(torch.mean(z ** 2, dim=1, keepdim=True) + 1e-8)


class ZMapping(nn.Module):
    """z -> z_emb: PixelNorm, Linear(nz, D), SiLU, then n_mlp x (Linear(D, D), SiLU)."""

    def __init__(self, nz: int, dim: int, n_mlp: int):
        super().__init__()
        self.norm = PixelNorm()
        self.fc = nn.ModuleList([nn.Linear(nz, dim)] + [nn.Linear(dim, dim) for _ in range(n_mlp)])

    def forward(self, z):  # [B, nz] -> [B, D]
        h = self.norm(z)
        for fc in self.fc:
            h = F.silu(fc(h))
        return h


class AdaGN(nn.Module):
    """GroupNorm without affine, then gamma * h + beta with (gamma, beta) = Linear(z_emb)."""

    def __init__(self, channels: int, z_dim: int):
        super().__init__()
        self.num_groups = _groups(channels)
        self.style = nn.Linear(z_dim, 2 * channels)

    def forward(self, x, zemb):  # [B, C, H, W], [B, D]
        gamma, beta = self.style(zemb)[:, :, None, None].chunk(2, dim=1)
        return gamma * F.group_norm(x, self.num_groups, eps=1e-6) + beta

    def silu(self, x, zemb, fused: bool = False):  # SiLU(AdaGN(x)): ops.adagn_silu
        gamma, beta = self.style(zemb)[:, :, None, None].chunk(2, dim=1)
        return adagn_silu(x, gamma, beta, self.num_groups, fused)


class ResBlock(nn.Module):
    """BigGAN-style residual block with AdaGN, optional FIR up/down-sampling of both paths.

    ``impl.fir_conv``: FIR resampling as strided / transposed depthwise convs; ``impl.fused``: when no gradient
    is recorded (eval mode), fused AdaGN multiply-adds and in-place SiLU / bias / residual ops (``ops``).
    """

    def __init__(self, in_ch: int, out_ch: int, temb_dim: int, z_dim: int, fir_kernel, resample: str | None = None,
                 dropout: float = 0.0, skip_rescale: bool = True, impl: NetImpl = NetImpl()):
        super().__init__()
        self.impl = impl
        self.resample = resample
        self.skip_rescale = skip_rescale
        self.norm0 = AdaGN(in_ch, z_dim)
        self.conv0 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.temb_proj = nn.Linear(temb_dim, out_ch)
        self.norm1 = AdaGN(out_ch, z_dim)
        self.dropout = nn.Dropout(dropout)
        self.conv1 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if (in_ch != out_ch or resample) else None
        self.register_buffer("fir", make_fir_kernel(fir_kernel), persistent=False)

    def forward(self, x, temb, zemb):  # [B, Cin, H, W] -> [B, Cout, H', W']
        fused = self.impl.fused and not torch.is_grad_enabled() and not self.training
        h = self.norm0.silu(x, zemb, fused)
        if self.resample is not None:
            if self.resample == "up":
                up = fir_upsample2x_conv if self.impl.fir_conv else fir_upsample2x
                h, x = up(h, self.fir), up(x, self.fir)
            else:
                down = fir_downsample2x_conv if self.impl.fir_conv else fir_downsample2x
                h, x = down(h, self.fir), down(x, self.fir)
        h = add(self.conv0(h), self.temb_proj(F.silu(temb))[:, :, None, None], inplace=fused)
        h = self.conv1(self.dropout(self.norm1.silu(h, zemb, fused)))
        return residual(h, x if self.skip is None else self.skip(x), self.skip_rescale, inplace=fused)


class AttnBlock(nn.Module):
    """Single-head self-attention over all positions (NCSN++ AttnBlockpp), residual (x + h)/sqrt(2).

    ``impl.sdpa``: F.scaled_dot_product_attention instead of softmax of bmm (``ops.attention``).
    """

    def __init__(self, channels: int, skip_rescale: bool = True, impl: NetImpl = NetImpl()):
        super().__init__()
        self.impl = impl
        self.skip_rescale = skip_rescale
        self.norm = nn.GroupNorm(_groups(channels), channels, eps=1e-6)
        self.q = nn.Linear(channels, channels)
        self.k = nn.Linear(channels, channels)
        self.v = nn.Linear(channels, channels)
        self.proj = nn.Linear(channels, channels)

    def forward(self, x):  # [B, C, H, W]
        B, C, H, W = x.shape
        h = self.norm(x).flatten(2).transpose(1, 2)  # [B, HW, C]
        h = attention(self.q(h), self.k(h), self.v(h), self.impl.sdpa)  # [B, HW, C]
        h = self.proj(h).transpose(1, 2).reshape(B, C, H, W)
        return (x + h) / _SQRT2 if self.skip_rescale else x + h


class PyramidDown(nn.Module):
    """Input-pyramid step: FIR pre-filter then a stride-2 3x3 conv with bias (progressive_input='residual')."""

    def __init__(self, in_ch: int, out_ch: int, fir_kernel, impl: NetImpl = NetImpl()):
        super().__init__()
        self.impl = impl  # impl.fir_conv: the FIR blur as a depthwise conv instead of upfirdn2d
        self.weight = nn.Parameter(torch.zeros(out_ch, in_ch, 3, 3))
        self.bias = nn.Parameter(torch.zeros(out_ch))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self.register_buffer("fir", make_fir_kernel(fir_kernel), persistent=False)

    def forward(self, x):  # [B, Cin, H, W] -> [B, Cout, H/2, W/2]
        f = fir_conv_downsample2x_conv if self.impl.fir_conv else fir_conv_downsample2x
        return f(x, self.weight, self.bias, self.fir)


def _key(res: int, name: str) -> str:
    return f"{res}x{res}_{name}"


class Generator(nn.Module):
    """NCSN++ (DDGAN variant): x_t [B, C, H, W], t int64 [B], z [B, nz] -> x0 prediction [B, C, H, W].

    ``impl`` chooses the form of its ops (``ops.NetImpl``; default: the reference); ``set_impl`` changes it."""

    def __init__(self, cfg: GeneratorConfig, impl: NetImpl = NetImpl()):
        super().__init__()
        self.cfg = cfg
        self.impl = impl
        nf, temb_dim, zd = cfg.nf, cfg.nf * 4, cfg.z_emb_dim
        res = cfg.resolutions
        block = lambda i, o, r=None: ResBlock(i, o, temb_dim, zd, cfg.fir_kernel, r, cfg.dropout, cfg.skip_rescale,
                                              impl)
        attn = lambda c: AttnBlock(c, cfg.skip_rescale, impl)

        self.z_mapping = ZMapping(cfg.nz, zd, cfg.n_mlp)
        self.t_embed = nn.ModuleDict({"fc0": nn.Linear(nf, temb_dim), "fc1": nn.Linear(temb_dim, temb_dim)})
        self.conv_in = nn.Conv2d(cfg.in_channels, nf, 3, padding=1)

        # Down path: num_res_blocks blocks per level (+ attention at the configured widths), then a
        # down-sampling block and, with the residual input pyramid, a pyramid step.
        self.enc = nn.ModuleDict()
        skip_ch, ch, pyr_ch = [nf], nf, cfg.in_channels
        for lvl, r in enumerate(res):
            for b in range(cfg.num_res_blocks):
                out = nf * cfg.ch_mult[lvl]
                self.enc[_key(r, f"block{b}")] = block(ch, out)
                ch = out
                if r in cfg.attn_resolutions:
                    self.enc[_key(r, f"attn{b}")] = attn(ch)
                skip_ch.append(ch)
            if lvl != len(res) - 1:
                self.enc[_key(r, "down")] = block(ch, ch, "down")
                if cfg.progressive_input == "residual":
                    self.enc[_key(r // 2, "pyramid")] = PyramidDown(pyr_ch, ch, cfg.fir_kernel, impl)
                    pyr_ch = ch
                skip_ch.append(ch)

        self.mid = nn.ModuleDict({"block0": block(ch, ch), "attn": attn(ch), "block1": block(ch, ch)})

        # Up path: num_res_blocks + 1 blocks per level, each fed cat([h, skip]); one attention per level.
        self.dec = nn.ModuleDict()
        for lvl in reversed(range(len(res))):
            r = res[lvl]
            for b in range(cfg.num_res_blocks + 1):
                out = nf * cfg.ch_mult[lvl]
                self.dec[_key(r, f"block{b}")] = block(ch + skip_ch.pop(), out)
                ch = out
            if r in cfg.attn_resolutions:
                self.dec[_key(r, "attn")] = attn(ch)
            if lvl != 0:
                self.dec[_key(r, "up")] = block(ch, ch, "up")
        assert not skip_ch

        self.norm_out = nn.GroupNorm(_groups(ch), ch, eps=1e-6)
        self.conv_out = nn.Conv2d(ch, cfg.in_channels, 3, padding=1)

    def set_impl(self, impl: NetImpl) -> "Generator":
        """Run with the op forms of ``impl`` from now on (every block of this network); returns self."""
        self.impl = impl
        for blocks in (self.enc, self.mid, self.dec):
            for block in blocks.values():
                block.impl = impl
        return self

    def check_inputs(self, x_t, t, z):
        cfg = self.cfg
        if not torch.is_tensor(x_t) or x_t.ndim != 4 or x_t.shape[1] != cfg.in_channels:
            raise InputError(f"generator x_t: expected [B, {cfg.in_channels}, H, W], got "
                             f"{tuple(x_t.shape) if torch.is_tensor(x_t) else type(x_t).__name__}")
        m = cfg.size_multiple
        if x_t.shape[2] % m or x_t.shape[3] % m:
            raise InputError(f"generator x_t: height and width must be multiples of {m}, got {tuple(x_t.shape[2:])}")
        B = x_t.shape[0]
        if not torch.is_tensor(t) or t.shape != (B,) or t.dtype.is_floating_point:
            raise InputError(f"generator t: expected an integer step index tensor of shape [{B}], got "
                             f"{(tuple(t.shape), t.dtype) if torch.is_tensor(t) else type(t).__name__}")
        if not torch.is_tensor(z) or z.shape != (B, cfg.nz):
            raise InputError(f"generator z: expected [{B}, {cfg.nz}], got "
                             f"{tuple(z.shape) if torch.is_tensor(z) else type(z).__name__}")

    def forward(self, x_t, t, z, *, temb=None, zemb=None):
        """x_t [B, C, H, W], t int64 [B], z [B, nz] -> x0 [B, C, H, W]. temb / zemb may be passed
        precomputed (``embed_time`` / ``embed_z``) to skip that work across steps."""
        self.check_inputs(x_t, t, z)
        cfg = self.cfg
        dtype = self.conv_in.weight.dtype
        if temb is None:
            temb = self.embed_time(t)
        if zemb is None:
            zemb = self.embed_z(z)
        x = x_t.to(dtype)
        if not cfg.centered:
            x = 2 * x - 1.0
        res = cfg.resolutions

        pyramid = x
        hs = [self.conv_in(x)]
        for lvl, r in enumerate(res):
            for b in range(cfg.num_res_blocks):
                h = self.enc[_key(r, f"block{b}")](hs[-1], temb, zemb)
                if r in cfg.attn_resolutions:
                    h = self.enc[_key(r, f"attn{b}")](h)
                hs.append(h)
            if lvl != len(res) - 1:
                h = self.enc[_key(r, "down")](hs[-1], temb, zemb)
                if cfg.progressive_input == "residual":
                    pyramid = self.enc[_key(r // 2, "pyramid")](pyramid)
                    pyramid = (pyramid + h) / _SQRT2 if cfg.skip_rescale else pyramid + h
                    h = pyramid
                hs.append(h)

        h = hs[-1]
        h = self.mid["block0"](h, temb, zemb)
        h = self.mid["attn"](h)
        h = self.mid["block1"](h, temb, zemb)

        for lvl in reversed(range(len(res))):
            r = res[lvl]
            for b in range(cfg.num_res_blocks + 1):
                h = self.dec[_key(r, f"block{b}")](torch.cat([h, hs.pop()], dim=1), temb, zemb)
            if r in cfg.attn_resolutions:
                h = self.dec[_key(r, "attn")](h)
            if lvl != 0:
                h = self.dec[_key(r, "up")](h, temb, zemb)

        h = self.conv_out(F.silu(self.norm_out(h)))
        return torch.tanh(h) if cfg.use_tanh else h

    def embed_time(self, t):
        """t int64 [B] -> temb [B, 4nf]; depends on t only, so a sampler can compute it once per step index."""
        temb = timestep_embedding(t, self.cfg.nf).to(self.conv_in.weight.dtype)
        return self.t_embed["fc1"](F.silu(self.t_embed["fc0"](temb)))

    def embed_z(self, z):
        """z [B, nz] -> zemb [B, z_emb_dim]."""
        return self.z_mapping(z.to(self.conv_in.weight.dtype))
