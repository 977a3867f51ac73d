"""Time-conditioned discriminator D(x_t, t, x_{t+1}) of DDGAN / LDDGAN.

Xiao, Kreis & Vahdat, "Tackling the Generative Learning Trilemma with Denoising Diffusion GANs"
(ICLR 2022), Sec. 3 and App. C: D scores a pair (x_{t-1}, x_t) of consecutive diffusion states
given the step t; LDDGAN applies the same network to autoencoder latents.  Two variants, with the
layer widths, op order, minibatch-stddev and initialisation of the official classes:

* ``kind="small"`` = official ``Discriminator_small`` (32-px class, CIFAR-10): the first block keeps
  the resolution, widths 2ngf -> 2ngf -> 4ngf -> 8ngf (-> 8ngf), ``final_conv`` init_scale 0.
* ``kind="large"`` = official ``Discriminator_large`` (256-px class, CelebA-HQ / LSUN): every block
  halves the resolution, widths 2ngf -> 4ngf -> 8ngf -> 8ngf (-> 8ngf ...), ``final_conv`` scale 1.

Only the official ``patch_size=1, use_local_loss=False`` path exists here.

state_dict keys (official name in brackets)::

    t_embed.fc0 / t_embed.fc1        [t_embed.main.0 / .main.2]   MLP on the sinusoidal embedding
    start_conv                       [start_conv]                 1x1 conv, in_channels -> 2ngf
    blocks.{i}.conv1 / .conv2        [conv{i+1}.conv1.0 / .conv2.0]
    blocks.{i}.dense_t               [conv{i+1}.dense_t1]         per-channel bias from t
    blocks.{i}.skip                  [conv{i+1}.skip.0]           1x1 conv, no bias
    final_conv, end_linear           [final_conv, end_linear]

The FIR kernel of the downsampling blocks is a non-persistent buffer (``blocks.{i}.fir``).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from ..errors import ConfigError, InputError
from .ops import NetImpl, fir_downsample2x, fir_downsample2x_conv, make_fir_kernel, timestep_embedding

_LAYERS = {"small": (3, 4), "large": (3, 4, 5, 6)}  # num_layers values with a distinct architecture


@dataclass(frozen=True)
class DiscriminatorConfig:
    """Hyper-parameters of the DDGAN discriminator (official train_ldgan.py argument in brackets)."""

    kind: str  # "small" (Discriminator_small) or "large" (Discriminator_large)  [--dataset]
    in_channels: int  # channels of cat(x_t, x_tp1) = 2 * latent channels  [nc=2*--num_channels]
    ngf: int = 64  # base width; blocks use multiples 2/4/8 of it  [--ngf]
    t_emb_dim: int = 256  # width of the sinusoidal step embedding and of its MLP  [--t_emb_dim]
    num_layers: int = 3  # DownConvBlocks: small 3|4, large 3..6  [--num_disc_layers]
    leaky_slope: float = 0.2  # negative slope of every LeakyReLU  [act=nn.LeakyReLU(0.2)]
    fir_kernel: tuple[int, ...] = (1, 3, 3, 1)  # separable FIR taps of the 2x downsampling

    def __post_init__(self):
        if self.kind not in _LAYERS:
            raise ConfigError(f"discriminator.kind must be 'small' or 'large', got {self.kind!r}")
        for name in ("in_channels", "ngf", "t_emb_dim"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"discriminator.{name} must be a positive integer, got {v!r}")
        if self.in_channels % 2:
            raise ConfigError(f"discriminator.in_channels must be even (2 * latent channels), got {self.in_channels}")
        if self.t_emb_dim < 4:
            raise ConfigError(f"discriminator.t_emb_dim must be >= 4, got {self.t_emb_dim}")
        if self.num_layers not in _LAYERS[self.kind]:
            raise ConfigError(f"discriminator.num_layers for kind={self.kind!r} must be one of "
                              f"{_LAYERS[self.kind]}, got {self.num_layers!r}")
        if not isinstance(self.leaky_slope, (int, float)) or self.leaky_slope < 0:
            raise ConfigError(f"discriminator.leaky_slope must be a number >= 0, got {self.leaky_slope!r}")
        object.__setattr__(self, "fir_kernel", tuple(self.fir_kernel))
        if len(self.fir_kernel) < 2 or any(not isinstance(v, (int, float)) for v in self.fir_kernel):
            raise ConfigError(f"discriminator.fir_kernel must be >= 2 numbers, got {self.fir_kernel!r}")

    @property
    def num_downsamples(self) -> int:
        """Number of 2x downsamplings (the small kind keeps the resolution in its first block)."""
        return self.num_layers - 1 if self.kind == "small" else self.num_layers

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DiscriminatorConfig":
        if not isinstance(d, dict):
            raise ConfigError(f"discriminator: expected a dict, got {type(d).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise ConfigError(f"discriminator: unknown field(s) {unknown}; known fields are {names}")
        missing = [n for n in ("kind", "in_channels") if n not in d]
        if missing:
            raise ConfigError(f"discriminator: missing required field(s) {missing}")
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()})

    def to_dict(self) -> dict[str, Any]:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in dataclasses.fields(self)}


def _variance_scaling_(w: torch.Tensor, scale: float) -> None:
    """Official ``variance_scaling_init_``: U(-b, b), b = sqrt(3 * gain / max(1, fan)), gain = scale or
    1e-10 for scale 0.  The official asks for mode 'fan_avg', but its ``_calculate_correct_fan`` returns
    fan_out for every mode other than 'fan_in'; we reproduce that effective behaviour (fan_out)."""
    fan_out = w.shape[0] * (w[0][0].numel() if w.ndim > 2 else 1)
    bound = math.sqrt(3.0 * (1e-10 if scale == 0 else scale) / max(1.0, fan_out))
    with torch.no_grad():
        w.uniform_(-bound, bound)


def _dense(cin: int, cout: int, init_scale: float = 1.0) -> nn.Linear:
    m = nn.Linear(cin, cout)
    _variance_scaling_(m.weight, init_scale)
    nn.init.zeros_(m.bias)
    return m


def _conv(cin: int, cout: int, k: int, init_scale: float = 1.0, bias: bool = True) -> nn.Conv2d:
    m = nn.Conv2d(cin, cout, k, padding=k // 2, bias=bias)
    _variance_scaling_(m.weight, init_scale)
    if bias:
        nn.init.zeros_(m.bias)
    return m


STDDEV_GROUP = 4  # the official minibatch-stddev group size


def stddev_group_size(batch: int, max_group: int = STDDEV_GROUP) -> int:
    """The minibatch-stddev group size G used for a batch of `batch` samples (see minibatch_stddev)."""
    return max(d for d in range(1, min(batch, max_group) + 1) if batch % d == 0)


def minibatch_stddev(x: torch.Tensor, max_group: int = STDDEV_GROUP, eps: float = 1e-8) -> torch.Tensor:
    """StyleGAN minibatch-stddev (one feature group): append the mean over (C, H, W) of the per-group
    std of x as an extra channel.  [B, C, H, W] -> [B, C+1, H, W].  Sample b is grouped with the samples
    b' = b mod (B/G), as in the official ``out.view(group, -1, ...)``.
    Deviation: the official uses G = min(B, 4) and fails if G does not divide B; we use the largest
    G <= min(B, max_group) dividing B, which equals the official G whenever the official runs."""
    B, C, H, W = x.shape
    g = stddev_group_size(B, max_group)
    y = x.view(g, B // g, C, H, W)
    std = torch.sqrt(y.var(0, unbiased=False) + eps).mean(dim=(1, 2, 3))  # [B/G]
    std = std.view(1, B // g, 1, 1, 1).expand(g, B // g, 1, H, W).reshape(B, 1, H, W)
    return torch.cat([x, std], dim=1)


class TimestepMLP(nn.Module):
    """Sinusoidal embedding of the integer step, then Linear-act-Linear (official TimestepEmbedding)."""

    def __init__(self, dim: int, act: nn.Module):
        super().__init__()
        self.dim = dim
        self.fc0, self.act, self.fc1 = _dense(dim, dim), act, _dense(dim, dim)

    def forward(self, t: torch.Tensor) -> torch.Tensor:  # [B] -> [B, dim]
        return self.fc1(self.act(self.fc0(timestep_embedding(t, self.dim))))


class DownBlock(nn.Module):
    """Official DownConvBlock: act-conv3x3 (+dense(t)) -act- [FIR down] -conv3x3 (init 0), plus a 1x1
    skip of the (downsampled) pre-activation input; the sum is divided by sqrt(2)."""

    def __init__(self, cin: int, cout: int, t_dim: int, act: nn.Module, downsample: bool, fir_taps,
                 impl: NetImpl = NetImpl()):
        super().__init__()
        self.act, self.downsample, self.impl = act, downsample, impl
        self.conv1 = _conv(cin, cout, 3)
        self.conv2 = _conv(cout, cout, 3, init_scale=0.0)
        self.dense_t = _dense(t_dim, cout)
        self.skip = _conv(cin, cout, 1, bias=False)
        if downsample:
            self.register_buffer("fir", make_fir_kernel(fir_taps), persistent=False)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        # x: [B, cin, H, W], temb: [B, t_dim] -> [B, cout, H', W'] (H' = H // 2 if downsample)
        h = self.conv1(self.act(x)) + self.dense_t(temb)[:, :, None, None]
        h = self.act(h)
        if self.downsample:
            down = fir_downsample2x_conv if self.impl.fir_conv else fir_downsample2x
            h, x = down(h, self.fir), down(x, self.fir)
        return (self.conv2(h) + self.skip(x)) / math.sqrt(2.0)


class Discriminator(nn.Module):
    """D(x_t, t, x_tp1) -> logits [B, 1] (DDGAN, Xiao et al. 2022).  In the trainer x_t is the
    (real or generated) less-noisy state x_{t-1} and x_tp1 the noisier one; they are concatenated on
    channels in that order, as in the official ``netD(x_t, t, x_tp1)``."""

    def __init__(self, cfg: DiscriminatorConfig, impl: NetImpl = NetImpl()):
        super().__init__()
        self.cfg, self.impl = cfg, impl
        ngf, td = cfg.ngf, cfg.t_emb_dim
        self.act = nn.LeakyReLU(cfg.leaky_slope)
        self.t_embed = TimestepMLP(td, self.act)
        self.start_conv = _conv(cfg.in_channels, 2 * ngf, 1)
        if cfg.kind == "small":
            widths = [(2, 2, False), (2, 4, True), (4, 8, True)]
        else:
            widths = [(2, 4, True), (4, 8, True), (8, 8, True)]
        widths += [(8, 8, True)] * (cfg.num_layers - 3)
        self.blocks = nn.ModuleList(
            DownBlock(a * ngf, b * ngf, td, self.act, down, cfg.fir_kernel, impl) for a, b, down in widths)
        self.final_conv = _conv(8 * ngf + 1, 8 * ngf, 3, init_scale=0.0 if cfg.kind == "small" else 1.0)
        self.end_linear = _dense(8 * ngf, 1)

    def _check_inputs(self, x_t, t, x_tp1) -> None:
        c = self.cfg.in_channels // 2
        for name, x in (("x_t", x_t), ("x_tp1", x_tp1)):
            if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != c:
                shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
                raise InputError(f"{name} must be a [B, {c}, H, W] tensor (in_channels/2 = {c}), got {shape}")
        if x_t.shape != x_tp1.shape:
            raise InputError(f"x_t and x_tp1 must have the same shape, got {tuple(x_t.shape)} and {tuple(x_tp1.shape)}")
        B, _, H, W = x_t.shape
        if not isinstance(t, torch.Tensor) or t.ndim != 1 or t.shape[0] != B:
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise InputError(f"t must be a 1-D tensor of length B={B} (shape [{B}]), got {shape}")
        if t.dtype == torch.bool or t.is_complex():
            raise InputError(f"t must hold integer diffusion steps, got dtype {t.dtype}")
        n = self.cfg.num_downsamples
        if min(H, W) < 2 ** n:
            raise InputError(f"x_t spatial size {H}x{W} is too small for {n} 2x downsamplings "
                             f"(kind={self.cfg.kind!r}, num_layers={self.cfg.num_layers}); need H, W >= {2 ** n}")

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, x_tp1: torch.Tensor) -> torch.Tensor:
        # x_t, x_tp1: [B, C, H, W] with C = in_channels / 2; t: [B] integer steps
        self._check_inputs(x_t, t, x_tp1)
        temb = self.act(self.t_embed(t))  # [B, t_emb_dim]
        h = self.start_conv(torch.cat([x_t, x_tp1], dim=1))  # [B, 2ngf, H, W]
        for blk in self.blocks:
            h = blk(h, temb)  # [B, 8ngf, H / 2^n, W / 2^n] after the last block
        h = minibatch_stddev(h)  # [B, 8ngf + 1, h, w]
        h = self.act(self.final_conv(h))  # [B, 8ngf, h, w]
        return self.end_linear(h.sum(dim=(2, 3)))  # [B, 1]


def build_discriminator(cfg: DiscriminatorConfig | dict, impl: NetImpl = NetImpl()) -> Discriminator:
    """Discriminator from a DiscriminatorConfig (or its dict form); `impl`: the op forms (only fir_conv applies)."""
    if isinstance(cfg, dict):
        cfg = DiscriminatorConfig.from_dict(cfg)
    if not isinstance(cfg, DiscriminatorConfig):
        raise ConfigError(f"build_discriminator expects a DiscriminatorConfig, got {type(cfg).__name__}")
    return Discriminator(cfg, impl)
