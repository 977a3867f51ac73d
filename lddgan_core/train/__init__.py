"""Training for LDDGAN: fine-tuning and training from scratch with Weighted Learning, data-parallel under
torchrun. Pure PyTorch; never imports ComfyUI.

    from lddgan_core import train as LT
    res = LT.finetune(model, images=x, steps=300, save_path="out/mine.safetensors")   # the node's entry point
    LT.rec_weight(0.5)                                                                 # 0.5 (sigmoid, gamma 6)

Modules: schedules (Weighted Learning and LR schedules), losses, config (TrainConfig, presets), data and
latents (images -> cached latents, scale-factor estimate), trainer (GANTrainer: D step, lazy R1, G step, EMA),
loop (fit: logs, grids, checkpoints, interrupt), dist (torch.distributed), autoencoder (KL / VQ training),
files (run layout, CSV log, discriminator files), api (finetune, new_model, train_model).
"""
from .api import (FINETUNE_DEFAULTS, finetune, finetune_config, FinetuneResult, keep_saved_settings, new_model,
                  shared_latents, train_autoencoder, train_model, training_mode)
from .autoencoder import AETrainConfig, AutoencoderTrainer, load_autoencoder, PatchDiscriminator, save_autoencoder
from .config import AUTOENCODER_PRESETS, default_discriminator, GENERATOR_PRESETS, TrainConfig
from .data import Augment, find_images
from .files import read_log, RunPaths, save_discriminator
from .latents import build_latents, estimate_scale_factor, LatentSet
from .loop import fit, FitResult
from .losses import d_fake_loss, d_real_loss, g_adv_loss, r1_penalty, rec_loss
from .schedules import lr_at, progress_of, rec_weight
from .trainer import GANTrainer, load_discriminator, load_state, save_state

__all__ = [
    "finetune", "finetune_config", "FINETUNE_DEFAULTS", "FinetuneResult", "keep_saved_settings", "new_model", "train_model", "shared_latents",
    "training_mode", "TrainConfig",
    "GENERATOR_PRESETS", "AUTOENCODER_PRESETS", "default_discriminator", "Augment", "find_images", "RunPaths",
    "load_discriminator", "save_discriminator", "read_log", "LatentSet", "build_latents", "estimate_scale_factor",
    "fit", "FitResult", "d_real_loss", "d_fake_loss", "g_adv_loss", "r1_penalty", "rec_loss", "rec_weight",
    "lr_at", "progress_of", "GANTrainer", "load_state", "save_state", "train_autoencoder", "AETrainConfig",
    "AutoencoderTrainer", "PatchDiscriminator", "load_autoencoder", "save_autoencoder",
]
