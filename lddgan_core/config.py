"""Frozen configuration dataclasses. Everything inference needs lives here and is stored in the
safetensors metadata of a saved model (see ``lddgan_core.formats.lddgan_file``)."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from . import limits
from .errors import ConfigError

FORMAT_NAME = "lddgan"
FORMAT_VERSION = 1


def _from_dict(cls, d: dict[str, Any], where: str):
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: expected a JSON object, got {type(d).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {unknown}; known fields are {sorted(names)}")
    required = [f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [n for n in required if n not in d]
    if missing:
        raise ConfigError(f"{where}: missing required field(s) {missing}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in d:
            continue
        v = d[f.name]
        if isinstance(v, list):
            v = tuple(v)
        kwargs[f.name] = v
    try:
        return cls(**kwargs)
    except TypeError as e:  # e.g. a value the constructor cannot take
        raise ConfigError(f"{where}: {e}") from None


def _to_dict(obj) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        out[f.name] = list(v) if isinstance(v, tuple) else v
    return out


@dataclass(frozen=True)
class GeneratorConfig:
    """NCSN++ generator with AdaGN z-conditioning (DDGAN / LDDGAN)."""

    in_channels: int  # latent channels fed to G (official --num_channels)
    image_size: int  # latent height = width (official --image_size == --current_resolution)
    nf: int = 128  # base width (official --num_channels_dae)
    ch_mult: tuple[int, ...] = (1, 2, 2, 2)  # width multiplier per resolution level
    num_res_blocks: int = 2  # residual blocks per level on the way down (up path has one more)
    attn_resolutions: tuple[int, ...] = (16,)  # feature widths that get self-attention
    dropout: float = 0.0
    nz: int = 100  # size of the random code z
    z_emb_dim: int = 256  # width of the z-mapping MLP
    n_mlp: int = 3  # hidden Linear layers of the z-mapping after the first one
    fir_kernel: tuple[int, ...] = (1, 3, 3, 1)  # separable FIR resampling filter
    skip_rescale: bool = True  # residual sums are divided by sqrt(2)
    progressive_input: str = "residual"  # input pyramid: "residual" or "none"
    use_tanh: bool = True  # tanh on the output (official --not_use_tanh inverted)
    centered: bool = True  # input already in [-1, 1] (False maps [0,1] -> [-1,1] first)

    def __post_init__(self):
        if self.progressive_input not in ("residual", "none"):
            raise ConfigError(f"generator.progressive_input must be 'residual' or 'none', got {self.progressive_input!r}")
        for name in ("in_channels", "image_size", "nf", "num_res_blocks", "nz", "z_emb_dim"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ConfigError(f"generator.{name} must be a positive integer, got {v!r}")
        if not isinstance(self.n_mlp, int) or self.n_mlp < 0:
            raise ConfigError(f"generator.n_mlp must be an integer >= 0, got {self.n_mlp!r}")
        if not self.ch_mult:
            raise ConfigError("generator.ch_mult must not be empty")
        limits.check_generator(self)  # types, impossible values and size limits, before any module is built
        if self.image_size % self.size_multiple:
            raise ConfigError(f"generator.image_size {self.image_size} is not divisible by 2^(len(ch_mult)-1)"
                              f" = {self.size_multiple}")
        if self.nf % 4 or any((self.nf * m) % 4 for m in self.ch_mult):
            raise ConfigError("generator widths nf*ch_mult must be multiples of 4 (GroupNorm uses C//4 groups)")

    @property
    def resolutions(self) -> list[int]:
        return [self.image_size // 2 ** i for i in range(len(self.ch_mult))]

    @property
    def size_multiple(self) -> int:
        """x_t's height and width must be multiples of this: 2^(levels-1), one halving per level."""
        return 2 ** (len(self.ch_mult) - 1)

    @classmethod
    def from_dict(cls, d):
        return _from_dict(cls, d, "generator config")

    def to_dict(self):
        return _to_dict(self)


@dataclass(frozen=True)
class AutoencoderConfig:
    """LDM first-stage autoencoder (AutoencoderKL or VQ with quantization at decode time)."""

    kind: str  # "kl" or "vq"
    embed_dim: int  # latent channels (after quant_conv)
    z_channels: int  # channels at the encoder output / decoder input
    ch: int = 128  # base width
    ch_mult: tuple[int, ...] = (1, 2, 4, 4)  # downsampling factor = 2^(len(ch_mult)-1)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = ()  # resolutions (relative to `resolution`) with attention
    dropout: float = 0.0
    resolution: int = 256  # the training resolution; only used to place attention layers
    in_channels: int = 3
    out_ch: int = 3
    double_z: bool = True  # KL: the encoder outputs mean and logvar
    tanh_out: bool = False  # tanh on the decoder output
    n_embed: int | None = None  # VQ: codebook size

    def __post_init__(self):
        if self.kind not in ("kl", "vq"):
            raise ConfigError(f"autoencoder.kind must be 'kl' or 'vq', got {self.kind!r}")
        if self.kind == "vq" and not (isinstance(self.n_embed, int) and self.n_embed > 0):
            raise ConfigError("autoencoder.n_embed (codebook size) is required for kind='vq'")
        limits.check_autoencoder(self)  # types, impossible values and size limits, before any module is built
        if self.kind == "kl" and not self.double_z:
            raise ConfigError("autoencoder kind='kl' needs double_z=True (mean and logvar)")
        f = self.downsample_factor
        if f < 1 or f > 16:
            raise ConfigError(f"autoencoder downsampling factor must be 1..16, got {f} (ch_mult={list(self.ch_mult)})")
        if self.ch % 32 or any((self.ch * m) % 32 for m in self.ch_mult):
            raise ConfigError("autoencoder widths ch*ch_mult must be multiples of 32 (GroupNorm(32, C))")

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    @classmethod
    def from_dict(cls, d):
        return _from_dict(cls, d, "autoencoder config")

    def to_dict(self):
        return _to_dict(self)


@dataclass(frozen=True)
class DiffusionConfig:
    """Few-step diffusion schedule (DDGAN): T steps on the grid t_k = k/T (1-eps) + eps."""

    num_timesteps: int = 4  # T
    beta_min: float = 0.1
    beta_max: float = 20.0
    schedule: str = "vp"  # "vp" or "geometric"

    def __post_init__(self):
        if not isinstance(self.num_timesteps, int) or self.num_timesteps < 1:
            raise ConfigError(f"diffusion.num_timesteps must be a positive integer, got {self.num_timesteps!r}")
        if self.schedule not in ("vp", "geometric"):
            raise ConfigError(f"diffusion.schedule must be 'vp' or 'geometric', got {self.schedule!r}")
        limits.check_diffusion(self)

    @classmethod
    def from_dict(cls, d):
        return _from_dict(cls, d, "diffusion config")

    def to_dict(self):
        return _to_dict(self)


@dataclass(frozen=True)
class ModelConfig:
    """A complete LDDGAN: generator + autoencoder + schedule + latent scaling."""

    generator: GeneratorConfig
    autoencoder: AutoencoderConfig
    diffusion: DiffusionConfig
    scale_factor: float  # GAN space = autoencoder latent / scale_factor
    image_size: int  # pixel height = width the model was trained at
    name: str = "lddgan"
    provenance: dict = field(default_factory=dict, compare=False)  # where the weights came from

    def __post_init__(self):
        g, a = self.generator, self.autoencoder
        if g.in_channels != a.embed_dim:
            raise ConfigError(f"generator.in_channels ({g.in_channels}) must equal autoencoder.embed_dim ({a.embed_dim})")
        if self.image_size % a.downsample_factor or self.image_size // a.downsample_factor != g.image_size:
            raise ConfigError(
                f"image_size {self.image_size} with autoencoder factor {a.downsample_factor} gives latents of "
                f"{self.image_size / a.downsample_factor:g} px, but generator.image_size is {g.image_size}")
        if not (isinstance(self.scale_factor, (int, float)) and self.scale_factor > 0):
            raise ConfigError(f"scale_factor must be a positive number, got {self.scale_factor!r}")
        limits.check_scale_factor(self.scale_factor)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return (self.autoencoder.embed_dim, self.generator.image_size, self.generator.image_size)

    def to_dict(self) -> dict:
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "generator": self.generator.to_dict(),
            "autoencoder": self.autoencoder.to_dict(),
            "diffusion": self.diffusion.to_dict(),
            "scale_factor": float(self.scale_factor),
            "image_size": self.image_size,
            "latent_shape": list(self.latent_shape),
            "provenance": dict(self.provenance),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        if not isinstance(d, dict):
            raise ConfigError(f"model config: expected a JSON object, got {type(d).__name__}")
        d = dict(d)
        fmt = d.pop("format", FORMAT_NAME)
        if fmt != FORMAT_NAME:
            raise ConfigError(f"model config: format is {fmt!r}, expected {FORMAT_NAME!r}")
        ver = d.pop("format_version", FORMAT_VERSION)
        if not isinstance(ver, int) or ver > FORMAT_VERSION:
            raise ConfigError(f"model config: format_version {ver!r} is newer than this library supports "
                              f"({FORMAT_VERSION}); upgrade lddgan_core")
        latent_shape = d.pop("latent_shape", None)
        known = {"name", "generator", "autoencoder", "diffusion", "scale_factor", "image_size", "provenance"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"model config: unknown field(s) {unknown}")
        for k in ("generator", "autoencoder", "diffusion", "scale_factor", "image_size"):
            if k not in d:
                raise ConfigError(f"model config: missing field {k!r}")
        for k, typ in (("scale_factor", (int, float)), ("image_size", int)):
            if isinstance(d[k], bool) or not isinstance(d[k], typ):
                raise ConfigError(f"model config: {k} must be {'an integer' if typ is int else 'a number'}, "
                                  f"got {d[k]!r}")
        cfg = cls(
            generator=GeneratorConfig.from_dict(d["generator"]),
            autoencoder=AutoencoderConfig.from_dict(d["autoencoder"]),
            diffusion=DiffusionConfig.from_dict(d["diffusion"]),
            scale_factor=float(d["scale_factor"]),
            image_size=int(d["image_size"]),
            name=str(d.get("name", "lddgan")),
            provenance=dict(d.get("provenance") or {}),
        )
        if latent_shape is not None and tuple(latent_shape) != cfg.latent_shape:
            raise ConfigError(f"model config: latent_shape {list(latent_shape)} contradicts the architecture "
                              f"({list(cfg.latent_shape)})")
        return cfg

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)
