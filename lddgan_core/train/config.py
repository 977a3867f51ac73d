"""Training configuration (frozen dataclasses) and architecture presets for new models.

Defaults follow the official LDDGAN run.sh for the 256 px sets (Adam betas 0.5/0.9, lr G 2e-4, lr D 1e-4,
lazy R1 every 10 steps, no LR decay, sigmoid Weighted Learning with gamma 6) unless a comment says otherwise.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from ..config import AutoencoderConfig, GeneratorConfig, _from_dict, _to_dict
from ..diffusion.sampler import MAX_SEED
from ..errors import ConfigError, FieldError
from .diffaug import parse_policy
from .schedules import LR_SCHEDULES, REC_SCHEDULES

PRECISIONS = ("auto", "fp32", "bf16")
REC_T_RULES = ("min_snr", "snr>=X")  # rec_t_weights given as a rule instead of numbers (X: a number >= 0)


def parse_rec_t_rule(spec) -> tuple[str, float] | None:
    """A rec_t_weights rule as (name, value): "min_snr" -> ("min_snr", 1.0) (factor min(1, SNR)); "snr>=0.02" ->
    ("snr>=", 0.02) (factor 1 where the SNR of x_{t+1} is at least 0.02, else 0). None for anything else."""
    if spec == "min_snr":
        return "min_snr", 1.0
    if isinstance(spec, str) and spec.startswith("snr>="):
        try:
            x = float(spec[5:])
        except ValueError:
            return None
        return ("snr>=", x) if math.isfinite(x) and x >= 0 else None
    return None


MAX_T_WEIGHTS = 64  # rec_t_weights entries (the number of diffusion steps is checked by the trainer)


def _pos_int(obj, *names):
    for n in names:
        v = getattr(obj, n)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise FieldError(type(obj).__name__, n, f"expected an integer >= 1, got {v!r}")


def _count(obj, *names):
    """Iteration counts where 0 means "never" (save_every, ...)."""
    for n in names:
        v = getattr(obj, n)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise FieldError(type(obj).__name__, n, f"expected an integer >= 0, got {v!r}")


def _nonneg(obj, *names):
    for n in names:
        v = getattr(obj, n)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
            raise FieldError(type(obj).__name__, n, f"expected a number >= 0, got {v!r}")


def _unit(obj, *names, closed: bool = False):
    """Fractions in [0, 1) ([0, 1] when closed)."""
    for n in names:
        v = getattr(obj, n)
        number = isinstance(v, (int, float)) and not isinstance(v, bool)
        if not number or not (0.0 <= v <= 1.0 if closed else 0.0 <= v < 1.0):
            raise FieldError(type(obj).__name__, n, f"expected a number in [0, {'1]' if closed else '1)'}, got {v!r}")


def _choice(obj, name: str, choices):
    v = getattr(obj, name)
    if v not in choices:
        raise FieldError(type(obj).__name__, name, f"expected one of {list(choices)}, got {v!r}")


class _DictMixin:
    """from_dict (unknown or missing fields are ConfigErrors) / to_dict, shared with lddgan_core.config."""

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        return _from_dict(cls, d, cls.__name__)

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


@dataclass(frozen=True)
class TrainConfig(_DictMixin):
    """One GAN training run (fine-tune or from scratch). An iteration = one D step + one G step."""

    steps: int = 1000  # total iterations; schedules see progress = step / (schedule_steps - 1)
    schedule_steps: int | None = None  # length of the Weighted Learning and LR schedules (None: steps). A resumed
    # run given a new `steps` keeps the length it started with: extending it continues the schedules smoothly
    batch_size: int = 8  # global batch per iteration (split evenly over torchrun processes)
    micro_batch: int | None = None  # samples per forward pass (gradient accumulation); None: the whole local batch
    lr_g: float = 2e-4  # Adam learning rate of G (official CIFAR-10: 1.6e-4)
    lr_d: float = 1e-4  # Adam learning rate of D (official CIFAR-10: 1.25e-4)
    beta1: float = 0.5  # Adam betas as in the official script
    beta2: float = 0.9
    lr_schedule: str = "constant"  # "constant" (official --no_lr_decay) or "cosine" (down to min_lr)
    min_lr: float = 1e-5  # cosine floor (official eta_min)
    rec_schedule: str = "sigmoid"  # weight of the L1 term: sigmoid (paper), constant, off, linear, cosine
    gamma: float = 6.0  # steepness of the sigmoid schedule
    rec_value: float = 1.0  # scale of the constant / linear / cosine schedules
    rec_t_weights: tuple[float, ...] | str | None = None  # per-step factors of the L1 term, one per t = 0 .. T-1
    # (None: 1 for every t, as the official code), or a rule over the SNR of x_{t+1} in the model's schedule, for
    # any T: "min_snr" (min(1, SNR)) or "snr>=X" (1 where SNR >= X, else 0). The L1 optimum at a high-noise step
    # is the average of every x0 the noisy state allows (a blur); small factors there leave it to the adversarial loss
    d_steps: int = 1  # D updates per iteration (official: 1). Extra D steps draw their own pairs, t and z; lazy R1
    # runs on the first. More D steps per G step keep a small-latent D ahead of G (README "Recipe probes")
    d_warmup: int = 0  # the first d_warmup iterations train D only (G and its EMA stay as they are; G's losses are
    # still logged): a fresh D learns the data from G's samples before G follows its gradients (fine-tuning)
    image_d_weight: float | str = 0.0  # > 0: a second discriminator, a PatchGAN on decoded images, judges G's x0
    # predictions (decoded by the frozen autoencoder) against decoded training latents; its non-saturating loss,
    # times this weight, joins G's loss. At the optimum G(x_{t+1}, z) samples q(x0 | x_{t+1}), whose marginal is the
    # data, so this term does not move the optimum; it shows G what the decoder makes of small latent errors,
    # which the latent-space D cannot see (README "Can the discriminator see what the generator gets wrong?").
    # 0: off (official). "auto": 1 for models whose images are at most IMAGE_D_AUTO_MAX_SIZE px (where decoding a
    # batch costs little next to G), else 0 (resolve_image_d_weight)
    image_d_ndf: int = 32  # width of that PatchGAN (two stride-2 layers; updated once per iteration at lr_d, R1
    # with r1_gamma at the lazy rate, the same augmentation ops as D, drawn at image size)
    r1_gamma: float = 1.0  # R1 weight (official: 0.02 CIFAR-10, 2 CelebA-HQ, 1 LSUN)
    lazy_reg: int = 10  # R1 every lazy_reg D steps (step % lazy_reg == 0)
    ema_decay: float = 0.999  # EMA of G's weights; 0 disables (the EMA is then G itself)
    ema_warmup: bool = False  # decay min(ema_decay, (1+step)/(10+step)): useful for short fine-tunes
    latent_mode: str = "sample"  # KL data: "sample" posterior.sample() (official) or "mean"
    precision: str = "auto"  # "fp32", "bf16" (autocast on CUDA or CPU) or "auto" (bf16 on CUDA, else fp32)
    fast: bool = False  # fused Adam and the fast FIR resampling in G and D (same math; float rounding differs)
    # differentiable augmentation of D's inputs (train/diffaug.py): "off" or a comma list of translation, cutout,
    # flip, color; applied with probability augment_p, adapted towards E[sign D(real)] = ada_target when > 0
    d_augment: str = "off"
    augment_p: float = 0.0
    ada_target: float = 0.0  # 0: p stays at augment_p (StyleGAN2-ADA uses 0.6)
    ada_kimg: float = 100.0  # thousands of images for p to move by 1
    ada_interval: int = 4  # iterations between updates of p
    seed: int = 0  # every random draw derives from (seed, step): runs and resumes are reproducible
    log_every: int = 10  # iterations between loss-log rows
    sample_every: int = 0  # iterations between sample grids (0: only at the end)
    save_every: int = 0  # iterations between checkpoints (0: only at the end or on interrupt)
    num_samples: int = 16  # images in a sample grid

    def __post_init__(self):
        # every problem is a FieldError naming the field: finetune_config turns it into an InputError naming the
        # input the value came from (the Fine-Tune node's widgets)
        _pos_int(self, "steps", "batch_size", "d_steps", "lazy_reg", "log_every", "num_samples", "ada_interval",
                 "image_d_ndf")
        if self.schedule_steps is not None:
            _pos_int(self, "schedule_steps")
        parse_policy(self.d_augment)
        _unit(self, "augment_p", closed=True)
        _unit(self, "ada_target")
        if not isinstance(self.ada_kimg, (int, float)) or not self.ada_kimg > 0:
            raise FieldError("TrainConfig", "ada_kimg", f"expected a number > 0, got {self.ada_kimg!r}")
        if self.micro_batch is not None:
            _pos_int(self, "micro_batch")
        _nonneg(self, "lr_g", "lr_d", "min_lr", "gamma", "rec_value", "r1_gamma")
        v = self.image_d_weight
        if v != "auto" and not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                                and v >= 0):
            raise FieldError("TrainConfig", "image_d_weight", f"expected a number >= 0 or 'auto', got {v!r}")
        _count(self, "sample_every", "save_every", "d_warmup")
        if self.rec_t_weights is not None and parse_rec_t_rule(self.rec_t_weights) is None:
            v = self.rec_t_weights
            ok = isinstance(v, tuple) and 1 <= len(v) <= MAX_T_WEIGHTS and all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x >= 0 for x in v)
            if not ok:
                raise FieldError("TrainConfig", "rec_t_weights", f"expected 1..{MAX_T_WEIGHTS} finite numbers >= 0 "
                                                                 f"(one per diffusion step) or one of {list(REC_T_RULES)}, got {v!r}")
        _unit(self, "ema_decay", "beta1", "beta2")
        _choice(self, "rec_schedule", REC_SCHEDULES)
        if self.rec_schedule == "sigmoid" and self.gamma <= 0:
            raise FieldError("TrainConfig", "gamma", f"expected a number > 0 for the sigmoid schedule, got "
                                                     f"{self.gamma!r}")
        _choice(self, "lr_schedule", LR_SCHEDULES)
        _choice(self, "latent_mode", ("sample", "mean"))
        _choice(self, "precision", PRECISIONS)
        _count(self, "seed")
        if self.seed > MAX_SEED:
            raise FieldError("TrainConfig", "seed", f"expected at most {MAX_SEED}, got {self.seed}")

    # fields that may change when a run is resumed (they do not change the optimisation)
    RESUMABLE_CHANGES = ("steps", "log_every", "sample_every", "save_every", "num_samples", "precision", "fast")


IMAGE_D_AUTO_MAX_SIZE = 64  # image_d_weight "auto": on up to this image size (official 256 px: one decode is 12x G)


def resolve_image_d_weight(value, image_size: int) -> float:
    """TrainConfig.image_d_weight for a model of `image_size` px: "auto" -> 1.0 up to IMAGE_D_AUTO_MAX_SIZE, else
    0.0 (at 256 px the official decoder costs 671 GFLOPs per image against G's 54.5: LDDGAN_FACTS); a number as is."""
    if value == "auto":
        return 1.0 if image_size <= IMAGE_D_AUTO_MAX_SIZE else 0.0
    return float(value)


# -- presets for new models -----------------------------------------------------------------------------
# Generator presets leave in_channels / image_size to the autoencoder and the image size.
GENERATOR_PRESETS: dict[str, dict[str, Any]] = {
    # seconds-per-step on a CPU; for tests and smoke runs
    "tiny": dict(nf=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), nz=16, z_emb_dim=32, n_mlp=1),
    # a few hours on one GPU for 32-64 px data
    "small": dict(nf=64, ch_mult=(1, 2, 2), num_res_blocks=2, attn_resolutions=(), nz=50, z_emb_dim=128, n_mlp=2),
    # the official configurations (the official run.sh test commands)
    "cifar10": dict(nf=128, ch_mult=(1, 2, 2), num_res_blocks=2, attn_resolutions=(32,), nz=50, z_emb_dim=256, n_mlp=4),
    "celeba256": dict(nf=128, ch_mult=(1, 2, 2, 2), num_res_blocks=2, attn_resolutions=(16,), nz=100, z_emb_dim=256,
                      n_mlp=3),
    "lsun256": dict(nf=128, ch_mult=(1, 2, 2, 2), num_res_blocks=3, attn_resolutions=(16,), nz=50, z_emb_dim=256,
                    n_mlp=3),
}

# Autoencoder presets leave `resolution` to the image size.
AUTOENCODER_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(kind="kl", embed_dim=4, z_channels=4, ch=32, ch_mult=(1, 2), num_res_blocks=1),
    "tiny-vq": dict(kind="vq", embed_dim=3, z_channels=3, ch=32, ch_mult=(1, 2), num_res_blocks=1, double_z=False,
                    n_embed=64),
    # the official CIFAR-10 autoencoder: KL f=2, 4 channels, attention at 16 px, dropout 0.2, tanh output
    "kl-f2": dict(kind="kl", embed_dim=4, z_channels=4, ch=128, ch_mult=(1, 2), num_res_blocks=2,
                  attn_resolutions=(16,), dropout=0.2, tanh_out=True),
    "kl-f4": dict(kind="kl", embed_dim=3, z_channels=3, ch=128, ch_mult=(1, 2, 4), num_res_blocks=2),
    "kl-f8": dict(kind="kl", embed_dim=4, z_channels=4, ch=128, ch_mult=(1, 2, 4, 4), num_res_blocks=2),
    "vq-f4": dict(kind="vq", embed_dim=3, z_channels=3, ch=128, ch_mult=(1, 2, 4), num_res_blocks=2, double_z=False,
                  n_embed=8192),
}


def _preset_or_dict(spec, presets: dict, what: str) -> dict:
    if isinstance(spec, str):
        if spec not in presets:
            raise ConfigError(f"unknown {what} preset {spec!r}; presets are {sorted(presets)}")
        return dict(presets[spec])
    if isinstance(spec, dict):
        return dict(spec)
    raise ConfigError(f"{what}: expected a preset name or a dict, got {type(spec).__name__}")


def generator_config(spec, in_channels: int, latent_size: int) -> GeneratorConfig:
    """A GeneratorConfig from a preset name or a dict (official-style fields of GeneratorConfig)."""
    d = _preset_or_dict(spec, GENERATOR_PRESETS, "generator")
    d.setdefault("in_channels", in_channels)
    d.setdefault("image_size", latent_size)
    if d["in_channels"] != in_channels or d["image_size"] != latent_size:
        raise ConfigError(f"generator config: in_channels/image_size {d['in_channels']}/{d['image_size']} do not fit "
                          f"the autoencoder's latents ({in_channels} channels, {latent_size} px)")
    return GeneratorConfig.from_dict(d)


def autoencoder_config(spec, image_size: int) -> AutoencoderConfig:
    """An AutoencoderConfig from a preset name or a dict; `resolution` defaults to the image size."""
    d = _preset_or_dict(spec, AUTOENCODER_PRESETS, "autoencoder")
    d.setdefault("resolution", image_size)
    return AutoencoderConfig.from_dict(d)


def default_discriminator(latent_shape, ngf: int = 64) -> dict:
    """The official choice: the small D with 3 layers for latents up to 16 px (CIFAR-10), the large one with
    4 layers above (CelebA-HQ, LSUN)."""
    C, H, W = latent_shape
    side = min(H, W)
    if side <= 16:
        return dict(kind="small", in_channels=2 * C, ngf=ngf, num_layers=3)
    return dict(kind="large", in_channels=2 * C, ngf=ngf, num_layers=4)
