"""Sanity limits for architecture sizes, checks for non-finite weights, schedules and outputs, and the checks of a
caller's inputs (latent shapes, integer and choice arguments) that every layer and the nodes share.

A model file or official config is untrusted input: its numbers decide how much memory building the model
takes. Every size is checked against the limits below when a config is made (``lddgan_core.config``); the
weights' shapes are then compared with the shapes the config implies (``formats.weights_check``) before the
real model is built. Each problem is one ConfigError / CheckpointError naming the field. Non-finite weights,
schedules and outputs are NonFiniteError / ConfigError.
"""
from __future__ import annotations

import math

from .errors import ConfigError, InputError, NonFiniteError

# Far above every published LDDGAN / DDGAN / LDM model, far below what would exhaust a machine.
LIMITS = {
    "generator": {"in_channels": 256, "image_size": 1024, "nf": 2048, "num_res_blocks": 32, "nz": 8192,
                  "z_emb_dim": 8192, "n_mlp": 64, "ch_mult": 64, "levels": 10, "fir_taps": 16},
    "autoencoder": {"embed_dim": 256, "z_channels": 256, "ch": 1024, "num_res_blocks": 32, "resolution": 16384,
                    "in_channels": 64, "out_ch": 64, "n_embed": 1 << 22, "ch_mult": 64, "levels": 5},
    "diffusion": {"num_timesteps": 1000},
}


def _int(section: str, name: str, v, low: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise ConfigError(f"{section}.{name} must be an integer >= {low}, got {v!r}")
    high = LIMITS[section].get(name)
    if high is not None and v > high:
        raise ConfigError(f"{section}.{name} = {v} is above the limit {high} (lddgan_core.limits.LIMITS): "
                          f"no LDDGAN model is that large; the config is corrupt or hostile")
    return v


def _int_list(section: str, name: str, v, low: int = 1, high: int | None = None, max_len: int | None = None):
    if not isinstance(v, (tuple, list)) or not all(isinstance(x, int) and not isinstance(x, bool) for x in v):
        raise ConfigError(f"{section}.{name} must be a list of integers, got {v!r}")
    if max_len is not None and len(v) > max_len:
        raise ConfigError(f"{section}.{name} has {len(v)} entries, above the limit {max_len}")
    bad = [x for x in v if x < low or (high is not None and x > high)]
    if bad:
        rng = f">= {low}" + (f" and <= {high}" if high is not None else "")
        raise ConfigError(f"{section}.{name} entries must be integers {rng}, got {list(v)}")


def _float(section: str, name: str, v, low: float, high: float, high_open: bool = False) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < low or v > high \
            or (high_open and v >= high):
        rng = f"[{low:g}, {high:g}{')' if high_open else ']'}"
        raise ConfigError(f"{section}.{name} must be a finite number in {rng}, got {v!r}")


def _bool(section: str, name: str, v) -> None:
    if not isinstance(v, bool):
        raise ConfigError(f"{section}.{name} must be true or false, got {v!r}")


def check_generator(c) -> None:
    s = "generator"
    for n in ("in_channels", "image_size", "nf", "num_res_blocks", "nz", "z_emb_dim"):
        _int(s, n, getattr(c, n))
    _int(s, "n_mlp", c.n_mlp, 0)
    _int_list(s, "ch_mult", c.ch_mult, 1, LIMITS[s]["ch_mult"], LIMITS[s]["levels"])
    _int_list(s, "attn_resolutions", c.attn_resolutions, 1)
    _int_list(s, "fir_kernel", c.fir_kernel, 0, None, LIMITS[s]["fir_taps"])
    if not c.fir_kernel or sum(c.fir_kernel) <= 0:
        raise ConfigError(f"generator.fir_kernel must have a positive sum, got {list(c.fir_kernel)}")
    _float(s, "dropout", c.dropout, 0.0, 1.0, high_open=True)
    for n in ("skip_rescale", "use_tanh", "centered"):
        _bool(s, n, getattr(c, n))


def check_autoencoder(c) -> None:
    s = "autoencoder"
    for n in ("embed_dim", "z_channels", "ch", "num_res_blocks", "resolution", "in_channels", "out_ch"):
        _int(s, n, getattr(c, n))
    if c.n_embed is not None:
        _int(s, "n_embed", c.n_embed)
    _int_list(s, "ch_mult", c.ch_mult, 1, LIMITS[s]["ch_mult"], LIMITS[s]["levels"])
    if not c.ch_mult:
        raise ConfigError("autoencoder.ch_mult must not be empty")
    _int_list(s, "attn_resolutions", c.attn_resolutions, 1)
    _float(s, "dropout", c.dropout, 0.0, 1.0, high_open=True)
    for n in ("double_z", "tanh_out"):
        _bool(s, n, getattr(c, n))


def check_diffusion(c) -> None:
    s = "diffusion"
    _int(s, "num_timesteps", c.num_timesteps)
    for n in ("beta_min", "beta_max"):
        _float(s, n, getattr(c, n), 0.0, 1e4)
    if c.beta_min <= 0 and c.schedule == "geometric":
        raise ConfigError(f"diffusion.beta_min must be > 0 for the geometric schedule, got {c.beta_min!r}")


def check_scale_factor(v) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 1e-6 <= v <= 1e6:
        raise ConfigError(f"scale_factor must be a finite positive number (1e-6 .. 1e6), got {v!r}")


# ----------------------------------------------------------------------------------------------------------
# A caller's inputs: each problem is an InputError that starts with the input's name
def check_latent(x, latent_shape, name: str, *, exact: bool = False, multiple: int = 1, plain: bool = False,
                 hint: str = "") -> None:
    """``x`` must be latents [B, C, h, w] with B >= 1 for a model whose own latent shape is ``latent_shape``
    (C, h, w): exactly that size when ``exact``, else any size whose height and width are multiples of
    ``multiple`` (the generator's 2^(levels-1); 1 where only the autoencoder sees them). h and w may be None
    where the model's own size is not known (the autoencoder alone). plain: worded for people wiring nodes
    rather than calling the API (latents "from this LDDGAN model's autoencoder", shapes as lists); ``hint`` is
    appended to that message."""
    import torch

    C, h, w = latent_shape
    if not (torch.is_tensor(x) and x.ndim == 4 and x.shape[1] == C and x.shape[0] >= 1
            and (not exact or tuple(x.shape[2:]) == (h, w))):
        dims = f"[B, {C}, {h}, {w}]" if exact else f"[B, {C}, h, w]"
        got = (list(x.shape) if plain else tuple(x.shape)) if torch.is_tensor(x) else type(x).__name__
        what = (f"latents {dims} from this LDDGAN model's autoencoder" if plain
                else f"a tensor {dims} in the autoencoder's latent space")
        raise InputError(f"{name}: expected {what}, got {got}{hint}")
    if x.shape[2] % multiple or x.shape[3] % multiple:
        raise InputError(f"{name}: latent size {x.shape[3]}x{x.shape[2]} does not fit the generator: width and height "
                         f"must be multiples of {multiple} (the model's own latent is {w}x{h})")


# ----------------------------------------------------------------------------------------------------------
# Non-finite values
def nonfinite_names(tensors: dict) -> list[str]:
    """Names of the floating-point tensors of ``tensors`` holding NaN or +-Inf."""
    import torch

    return sorted(k for k, v in tensors.items() if torch.is_tensor(v) and v.is_floating_point() and v.numel()
                  and not v.is_meta and not bool(torch.isfinite(v).all()))


def check_finite_weights(tensors: dict, where: str) -> None:
    bad = nonfinite_names(tensors)
    if bad:
        raise NonFiniteError(f"{where}: {len(bad)} weight tensor(s) hold NaN or infinite values, e.g. {bad[:5]}: the "
                             f"file is corrupt (or was saved from a diverged run); it would only give black images")


def check_finite_output(x, what: str, hint: str = "") -> None:
    """Raise NonFiniteError when the tensor ``x`` (an output: samples, decoded images) is not all finite."""
    import torch

    if torch.is_tensor(x) and x.is_floating_point() and x.numel() and not x.is_meta \
            and not bool(torch.isfinite(x).all()):
        n = int((~torch.isfinite(x)).sum())
        raise NonFiniteError(f"{what}: {n} of {x.numel()} values are NaN or infinite (the result would be black "
                             f"images){'; ' + hint if hint else ''}")


def check_finite_schedule(coefficients, posterior) -> None:
    import dataclasses

    import torch

    for obj in (coefficients, posterior):
        for f in dataclasses.fields(obj):
            v = getattr(obj, f.name)
            if torch.is_tensor(v) and not v.is_meta and not bool(torch.isfinite(v).all()):  # meta: a shape-only model
                raise ConfigError(f"diffusion: the schedule's {f.name} holds NaN or infinite values (beta_min / "
                                  f"beta_max / num_timesteps give a degenerate schedule)")
