"""lddgan_core: a standalone PyTorch library for LDDGAN (Latent Denoising Diffusion GAN,
Trinh & Hamagami 2024). It never imports ComfyUI.

    import lddgan_core as L
    m = L.load_official(config, generator, autoencoder)   # official release files
    m.save(path); m = L.load(path)                          # our one-file .safetensors format
    lat = m.sample(batch_size=4, seed=0); img = m.decode(lat)
"""
from .config import AutoencoderConfig, DiffusionConfig, GeneratorConfig, ModelConfig
from .diffusion.schedule import (betas_for, DiffusionCoefficients, posterior_mean, posterior_sample,
                                 PosteriorCoefficients, q_sample, q_sample_pairs, time_grid)
from .errors import CheckpointError, ConfigError, InputError, LDDGANError
from .fast import FastOptions
from .formats.official import load_official
from .model import LDDGAN, load_model as load
from .version import __version__


def __getattr__(name):
    """``rec_weight`` (the Weighted Learning schedule) is loaded on first use, so that ``import lddgan_core``
    does not import the training package."""
    if name == "rec_weight":
        from .train.schedules import rec_weight
        return rec_weight
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "LDDGAN", "load", "load_official", "ModelConfig", "GeneratorConfig", "AutoencoderConfig", "DiffusionConfig",
    "DiffusionCoefficients", "PosteriorCoefficients", "time_grid", "betas_for", "q_sample", "q_sample_pairs",
    "posterior_mean", "posterior_sample", "LDDGANError", "CheckpointError", "ConfigError", "InputError",
    "rec_weight", "FastOptions",
]
