"""lddgan_core: a standalone PyTorch library for LDDGAN (Latent Denoising Diffusion GAN,
Trinh & Hamagami 2024). It never imports ComfyUI.

    import lddgan_core as L
    m = L.load_official(config, generator, autoencoder)   # official release files
    m.save(path); m = L.load(path)                          # our one-file .safetensors format
    lat = m.sample(batch_size=4, seed=0); img = m.decode(lat)
"""
from .config import AutoencoderConfig, DiffusionConfig, GeneratorConfig, ModelConfig
from .diffusion import (DiffusionCoefficients, PosteriorCoefficients, betas_for, posterior_mean, posterior_sample,
                        q_sample, q_sample_pairs, time_grid)
from .fast import FastOptions
from .errors import CheckpointError, ConfigError, InputError, LDDGANError
from .io import load_model as load
from .model import LDDGAN
from .official import load_official
from .train.schedules import rec_weight

__version__ = "0.1.0"

__all__ = [
    "LDDGAN", "load", "load_official", "ModelConfig", "GeneratorConfig", "AutoencoderConfig", "DiffusionConfig",
    "DiffusionCoefficients", "PosteriorCoefficients", "time_grid", "betas_for", "q_sample", "q_sample_pairs",
    "posterior_mean", "posterior_sample", "LDDGANError", "CheckpointError", "ConfigError", "InputError",
    "rec_weight", "FastOptions",
]
