"""LDM first-stage autoencoders as LDDGAN uses them (Rombach et al. 2022): AutoencoderKL and VQ.

Parameter names follow the LDM layout (``encoder.down.0.block.1.conv1.weight``, ``decoder.up.0`` is the
highest resolution) because those names already read like the network and because ComfyUI's core VAE
loader understands them. Attention placement comes from the config (``resolution`` and
``attn_resolutions``), so inputs of other sizes run through the same layers.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import AutoencoderConfig
from ..errors import InputError
from ..limits import check_latent
from .ops import NetImpl, attention_ldm, residual, upsample_conv2x, upsample_conv_weight


def _norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, c, eps=1e-6)


class ResnetBlock(nn.Module):
    """GroupNorm, SiLU, 3x3 conv, twice, plus the (1x1-projected) input. ``impl.fused``: SiLU and the residual
    add reuse their input's memory when no gradient is recorded (fewer fresh full-resolution tensors)."""

    def __init__(self, in_ch: int, out_ch: int, dropout: float, impl: NetImpl = NetImpl()):
        super().__init__()
        self.impl = impl
        self.norm1 = _norm(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.norm2 = _norm(out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else None

    def forward(self, x):  # [B, Cin, H, W] -> [B, Cout, H, W]
        fused = self.impl.fused and not torch.is_grad_enabled() and not self.training
        h = self.conv1(F.silu(self.norm1(x), inplace=fused))
        h = self.conv2(self.dropout(F.silu(self.norm2(h), inplace=fused)))
        return residual(h, x if self.nin_shortcut is None else self.nin_shortcut(x), False, inplace=fused)


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with 1x1-conv projections; out = x + h.

    ``impl.sdpa``: F.scaled_dot_product_attention instead of softmax of bmm (``ops.attention_ldm``).
    """

    def __init__(self, c: int, impl: NetImpl = NetImpl()):
        super().__init__()
        self.impl = impl
        self.norm = _norm(c)
        self.q = nn.Conv2d(c, c, 1)
        self.k = nn.Conv2d(c, c, 1)
        self.v = nn.Conv2d(c, c, 1)
        self.proj_out = nn.Conv2d(c, c, 1)

    def forward(self, x):  # [B, C, H, W]
        B, C, H, W = x.shape
        h = self.norm(x)
        q = self.q(h).reshape(B, C, H * W).transpose(1, 2)  # [B, HW, C]
        k = self.k(h).reshape(B, C, H * W)  # [B, C, HW]
        v = self.v(h).reshape(B, C, H * W)
        h = attention_ldm(q, k, v, self.impl.sdpa).reshape(B, C, H, W)
        return x + self.proj_out(h)


class Downsample(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # asymmetric pad, then stride-2 conv


class Upsample(nn.Module):
    """Nearest 2x upsampling then a 3x3 conv. ``impl.upsample_conv`` (no grad): both as one stride-2 transposed
    conv with a 4x4 kernel derived from the 3x3 one (4/9 of the MACs, no upsampled copy; ``ops.upsample_conv2x``)."""

    def __init__(self, c: int, impl: NetImpl = NetImpl()):
        super().__init__()
        self.impl = impl
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self._fused = (None, None)  # (key of the weight it was derived from, fused kernel)

    def _apply(self, fn, *args, **kw):  # .to() / .half(): the cached kernel is derived, drop it
        self._fused = (None, None)
        return super()._apply(fn, *args, **kw)

    def fused_weight(self) -> torch.Tensor:
        w = self.conv.weight
        key = (w.data_ptr(), w._version, w.dtype, w.device)
        if self._fused[0] != key:
            fmt = torch.channels_last if w.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
            with torch.no_grad():  # stored in the weight's memory format: oneDNN copies it on every call otherwise
                self._fused = (key, upsample_conv_weight(w.detach()).contiguous(memory_format=fmt))
        return self._fused[1]

    def forward(self, x):  # [B, C, H, W] -> [B, C, 2H, 2W]
        if self.impl.upsample_conv and not torch.is_grad_enabled():
            return upsample_conv2x(x, self.conv.weight, self.conv.bias, self.fused_weight())
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Level(nn.Module):
    """One resolution level: ``block`` / ``attn`` ModuleLists and an optional resampler."""

    def __init__(self):
        super().__init__()
        self.block = nn.ModuleList()
        self.attn = nn.ModuleList()


class Encoder(nn.Module):
    def __init__(self, cfg: AutoencoderConfig, impl: NetImpl = NetImpl()):
        super().__init__()
        ch, mult = cfg.ch, (1,) + tuple(cfg.ch_mult)
        self.conv_in = nn.Conv2d(cfg.in_channels, ch, 3, padding=1)
        self.down = nn.ModuleList()
        res, c = cfg.resolution, ch
        for i in range(len(cfg.ch_mult)):
            lvl = _Level()
            for _ in range(cfg.num_res_blocks):
                lvl.block.append(ResnetBlock(c, ch * mult[i + 1], cfg.dropout, impl))
                c = ch * mult[i + 1]
                if res in cfg.attn_resolutions:
                    lvl.attn.append(AttnBlock(c, impl))
            if i != len(cfg.ch_mult) - 1:
                lvl.downsample = Downsample(c)
                res //= 2
            self.down.append(lvl)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(c, c, cfg.dropout, impl)
        self.mid.attn_1 = AttnBlock(c, impl)
        self.mid.block_2 = ResnetBlock(c, c, cfg.dropout, impl)
        self.norm_out = _norm(c)
        self.conv_out = nn.Conv2d(c, 2 * cfg.z_channels if cfg.double_z else cfg.z_channels, 3, padding=1)

    def forward(self, x):  # [B, 3, H, W] -> [B, (2x)z_channels, H/f, W/f]
        h = self.conv_in(x)
        for i, lvl in enumerate(self.down):
            for j, blk in enumerate(lvl.block):
                h = blk(h)
                if len(lvl.attn):
                    h = lvl.attn[j](h)
            if hasattr(lvl, "downsample"):
                h = lvl.downsample(h)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, cfg: AutoencoderConfig, impl: NetImpl = NetImpl()):
        super().__init__()
        ch, n = cfg.ch, len(cfg.ch_mult)
        self.tanh_out = cfg.tanh_out
        c = ch * cfg.ch_mult[-1]
        res = cfg.resolution // 2 ** (n - 1)
        self.conv_in = nn.Conv2d(cfg.z_channels, c, 3, padding=1)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(c, c, cfg.dropout, impl)
        self.mid.attn_1 = AttnBlock(c, impl)
        self.mid.block_2 = ResnetBlock(c, c, cfg.dropout, impl)
        levels = []
        for i in reversed(range(n)):
            lvl = _Level()
            for _ in range(cfg.num_res_blocks + 1):
                lvl.block.append(ResnetBlock(c, ch * cfg.ch_mult[i], cfg.dropout, impl))
                c = ch * cfg.ch_mult[i]
                if res in cfg.attn_resolutions:
                    lvl.attn.append(AttnBlock(c, impl))
            if i != 0:
                lvl.upsample = Upsample(c, impl)
                res *= 2
            levels.insert(0, lvl)
        self.up = nn.ModuleList(levels)  # up[0] is the highest resolution
        self.norm_out = _norm(c)
        self.conv_out = nn.Conv2d(c, cfg.out_ch, 3, padding=1)

    def forward(self, z):  # [B, z_channels, h, w] -> [B, 3, h*f, w*f]
        h = self.conv_in(z)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        for i in reversed(range(len(self.up))):
            lvl = self.up[i]
            for j, blk in enumerate(lvl.block):
                h = blk(h)
                if len(lvl.attn):
                    h = lvl.attn[j](h)
            if hasattr(lvl, "upsample"):
                h = lvl.upsample(h)
        h = self.conv_out(F.silu(self.norm_out(h)))
        return torch.tanh(h) if self.tanh_out else h


class VectorQuantizer(nn.Module):
    """Nearest-codebook-entry quantizer (VQGAN's VectorQuantizer2, inference part)."""

    def __init__(self, n_embed: int, embed_dim: int):
        super().__init__()
        self.embedding = nn.Embedding(n_embed, embed_dim)

    def indices(self, z):  # [B, D, h, w] -> [B, h, w] int64
        zf = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        e = self.embedding.weight
        d = (zf ** 2).sum(1, keepdim=True) + (e ** 2).sum(1) - 2 * zf @ e.t()
        return d.argmin(1).reshape(z.shape[0], z.shape[2], z.shape[3])

    def forward(self, z):  # [B, D, h, w] -> quantized [B, D, h, w]
        zq = self.embedding(self.indices(z)).permute(0, 3, 1, 2)
        return z + (zq - z)  # the straight-through form the LDM code evaluates


class Autoencoder(nn.Module):
    """KL: encode -> posterior mean (``moments`` gives mean and clamped logvar). VQ: encode -> the
    pre-quantization latent; decode quantizes to the nearest codebook entry first.

    ``impl`` chooses the form of its ops (``ops.NetImpl``; default: the reference); ``set_impl`` changes it."""

    def __init__(self, cfg: AutoencoderConfig, impl: NetImpl = NetImpl()):
        super().__init__()
        self.cfg = cfg
        self.impl = impl
        self.encoder = Encoder(cfg, impl)
        self.decoder = Decoder(cfg, impl)
        zc = 2 * cfg.z_channels if cfg.double_z else cfg.z_channels
        ed = 2 * cfg.embed_dim if cfg.kind == "kl" else cfg.embed_dim
        self.quant_conv = nn.Conv2d(zc, ed, 1)
        self.post_quant_conv = nn.Conv2d(cfg.embed_dim, cfg.z_channels, 1)
        if cfg.kind == "vq":
            self.quantize = VectorQuantizer(cfg.n_embed, cfg.embed_dim)

    def set_impl(self, impl: NetImpl) -> "Autoencoder":
        """Run with the op forms of ``impl`` from now on (every block of both halves); returns self."""
        self.impl = impl
        for half, levels in ((self.encoder, self.encoder.down), (self.decoder, self.decoder.up)):
            blocks = [half.mid.block_1, half.mid.attn_1, half.mid.block_2]
            for lvl in levels:
                blocks += list(lvl.block) + list(lvl.attn) + ([lvl.upsample] if hasattr(lvl, "upsample") else [])
            for block in blocks:
                block.impl = impl
        return self

    @property
    def dtype(self):
        return self.quant_conv.weight.dtype

    def check_images(self, x, name="images"):
        f = self.cfg.downsample_factor
        if not torch.is_tensor(x) or x.ndim != 4 or x.shape[1] != self.cfg.in_channels:
            raise InputError(f"{name}: expected a tensor [B, {self.cfg.in_channels}, H, W] in [-1, 1], got "
                             f"{tuple(x.shape) if torch.is_tensor(x) else type(x).__name__}")
        if x.shape[2] % f or x.shape[3] % f:
            raise InputError(f"{name}: height and width must be multiples of the autoencoder's downsampling "
                             f"factor {f}, got {tuple(x.shape[2:])}")
        if x.numel() and (x.min() < -1.5 or x.max() > 1.5):
            raise InputError(f"{name}: values must lie in [-1, 1], got min {x.min().item():.3g}, "
                             f"max {x.max().item():.3g} (images in 0..1 or 0..255 must be mapped to [-1, 1])")

    def moments(self, x):  # [B, 3, H, W] -> raw quant_conv output (KL: [mean, logvar] on dim 1)
        self.check_images(x)
        return self.quant_conv(self.encoder(x.to(self.dtype)))

    def encode_posterior(self, x):
        """KL only: (mean, logvar) of q(z | x), logvar clamped to [-30, 20]."""
        if self.cfg.kind != "kl":
            raise InputError("encode_posterior: a VQ autoencoder has no posterior; use encode()")
        mean, logvar = self.moments(x).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def encode(self, x):  # [B, 3, H, W] -> [B, embed_dim, H/f, W/f]
        if self.cfg.kind == "kl":
            return self.encode_posterior(x)[0]
        return self.moments(x)

    def decode(self, z):  # [B, embed_dim, h, w] -> [B, 3, h*f, w*f]
        check_latent(z, (self.cfg.embed_dim, None, None), "latents")
        z = z.to(self.dtype)
        if self.cfg.kind == "vq":
            # nearest-code search in the stored precision even under autocast: half-precision distances
            # can pick a different code
            half = z.device.type in ("cpu", "cuda") and torch.is_autocast_enabled(z.device.type)
            with torch.autocast(z.device.type, enabled=False) if half else contextlib.nullcontext():
                z = self.quantize(z)
        return self.decoder(self.post_quant_conv(z))
