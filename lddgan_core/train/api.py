"""High-level training entry points: fine-tune an existing model, or build and train a new one.

    from lddgan_core.train import finetune
    res = finetune(model, images=batch, steps=300, save_path="out/mine.safetensors")
    res.model.sample(batch_size=4, seed=0)
"""
from __future__ import annotations

import contextlib
import json
import os
from typing import Callable

import torch

from ..config import AutoencoderConfig, DiffusionConfig, ModelConfig
from ..errors import FieldError, InputError
from ..model import LDDGAN
from . import dist as tdist
from .autoencoder import AETrainConfig, AutoencoderTrainer
from .config import autoencoder_config, generator_config, TrainConfig
from .data import Augment, from_tensor, load_images
from .files import RunPaths
from .latents import build_latents, estimate_scale_factor, LatentSet
from .loop import fit, FitResult
from .perceptual import PerceptualLoss
from .trainer import GANTrainer, load_discriminator, load_state, new_reference_model

FinetuneResult = FitResult


def shared_latents(world: tdist.World, device, make: Callable[[], LatentSet]) -> LatentSet:
    """Rank 0 builds (or loads) the latents; the other ranks receive them, so all train on the same data."""
    if not world.active:
        return make()
    lat = make() if world.is_main else None
    mean = tdist.broadcast_tensor(lat.mean if lat else None, world, device)
    has_std = tdist.broadcast_tensor(torch.tensor([int(lat is not None and lat.std is not None)]) if world.is_main
                                     else None, world, device)
    std = tdist.broadcast_tensor(lat.std if lat else None, world, device) if int(has_std[0]) else None
    import torch.distributed as dist

    fp = [lat.fingerprint if lat else None]
    dist.broadcast_object_list(fp, src=0)
    return LatentSet(mean, std, fp[0])


def _resume_or_keep(trainer, paths: RunPaths, resume: bool, world, log, kind: str = "gan") -> None:
    """Continue from paths.state, or (resume=False) move an existing state aside to <state>.prev.pt rather
    than overwrite it."""
    if not paths.state or not os.path.isfile(paths.state):
        return
    if resume:
        trainer.load_state_dict(load_state(paths.state, kind=kind), f"training state {paths.state!r}")
        if log:
            log(f"resuming {paths.state} at iteration {trainer.step}/{trainer.cfg.steps}")
        return
    tdist.barrier(world)
    if world.is_main:
        backup = paths.state[:-3] + ".prev.pt" if paths.state.endswith(".pt") else paths.state + ".prev"
        os.replace(paths.state, backup)
        if log:
            log(f"resume=False: the previous state was moved to {backup}")
    tdist.barrier(world)


def train_model(model: LDDGAN, data: LatentSet, cfg: TrainConfig, *, paths: RunPaths | None = None,
                resume: bool = True, discriminator=None, disc_config=None, device=None,
                world: tdist.World | None = None, progress=None, should_stop=None, log=None,
                provenance: dict | None = None, preview_every: int | None = None) -> FitResult:
    """Train `model`'s generator on `data` (a copy of the model; the input is untouched), continuing from
    paths.state when it exists and resume is True. discriminator: None (fresh), a file (discriminator
    .safetensors or a training state .pt) or a (config dict, state dict) pair."""
    world = world or tdist.World()
    device = torch.device(device) if device is not None else model.device
    d_state = None
    if discriminator is not None:
        disc_config, d_state = (load_discriminator(discriminator) if isinstance(discriminator, (str, os.PathLike))
                                else discriminator)
    with training_mode():
        trainer = GANTrainer(model, data, cfg, disc_config=disc_config, discriminator_state=d_state, device=device,
                             world=world)
        paths = paths or RunPaths()
        _resume_or_keep(trainer, paths, resume, world, log)
        return fit(trainer, paths, progress=progress, should_stop=should_stop, log=log, provenance=provenance,
                   preview_every=preview_every)


# What a fine-tune changes from TrainConfig's defaults (short runs on few images, from a trained model); the CLI and
# the node use these. D's inputs are augmented (translation and cutout leave colours alone, which creators' styles
# and the shapes modes depend on) with StyleGAN2-ADA's adaptive probability; 1400 iterations at batch 8.
# The few-image fine-tune recipe, measured on the v3 default model (README "Few-image fine-tuning check": 50 images of
# one mode): lr_g 2e-4, R1 0.02 every 15 iterations (the default-model recipe's), and the L1 term kept on at weight 4
# for the whole run (constant schedule). With so few images the adversarial term alone drifts: the paper's sigmoid
# decay to 0 scored in-mode 0.946 / FID 6.3 and no L1 at all 0.61 / 30.7, against 0.979 / 3.3 here (1000
# iterations). Quality still rises with iterations (1000 -> 1600: red circle FID 2.85 -> 1.62, precision 0.038 ->
# 0.096); 1400 is what fits in 10 minutes on two CPU threads (1600 took 608 s there).
# The L1 term stays on at every step (rec_t_weights None). Tried (fifteenth session): L1 only at the low-noise steps
# (rec_t_weights "snr>=0.05"): recall rose in modes 0 / 6 / 13 (0.38 -> 0.45, 0.50 -> 0.63, 0.41 -> 0.52) and red
# circle gained everywhere, but yellow cross lost (FID 5.5 -> 11.4, precision 0.15 -> 0.08, in mode 0.97 -> 0.92;
# more broken crosses by eye): not adopted (README "Few-image fine-tuning check").
# image_d_weight 1 (eighteenth session): a PatchGAN on decoded x0 predictions beside the latent D. Modes 6 / 13:
# FID 2.7 -> 0.75, 5.5 -> 1.3; precision 0.37 -> 0.45, 0.15 -> 0.32; recall 0.50 -> 0.70, 0.41 -> 0.55; red circle
# level (FID 1.7 -> 2.3, precision 0.07 -> 0.04); weight 3 no better. The latent D's loss sits at chance in a
# fine-tune, the image D's below it (1.25-1.29): it sees what the decoder makes of G's errors. "auto": on for
# images up to 64 px only (shapes, emoji, CIFAR-10-size models); at 256 px one decode costs 12x G's forward.
FINETUNE_DEFAULTS = dict(steps=1400, batch_size=8, lr_g=2e-4, r1_gamma=0.02, lazy_reg=15, rec_schedule="constant",
                         rec_value=4.0, ema_warmup=True, log_every=1, d_augment="translation,cutout", ada_target=0.6,
                         ada_kimg=2.0, image_d_weight="auto")


def finetune_config(**fields) -> TrainConfig:
    """The TrainConfig of a fine-tune: TrainConfig's defaults, then FINETUNE_DEFAULTS, then `fields` (TrainConfig
    field names; ``schedule`` is accepted for rec_schedule). The fields are a caller's inputs (the Fine-Tune
    node's widgets, finetune's keywords): a value TrainConfig cannot take is an InputError naming the input as it
    was given, e.g. "steps: expected an integer >= 1, got 0"."""
    shown = {}
    if "schedule" in fields:
        fields["rec_schedule"], shown["rec_schedule"] = fields.pop("schedule"), "schedule"
    try:
        return TrainConfig.from_dict({**FINETUNE_DEFAULTS, **fields})
    except FieldError as e:
        if e.field not in fields:
            raise
        raise InputError(f"{shown.get(e.field, e.field)}: {e.reason}") from None


def keep_saved_settings(cfg: TrainConfig, defaults: TrainConfig, state_path: str | None,
                        given=()) -> tuple[TrainConfig, dict]:
    """For a run about to resume from `state_path` (a train_state.pt; nothing happens if there is none): every
    field of `cfg` that the caller did not set (not in `given`, and still equal to `defaults`) takes the saved
    run's value, so a run started under older defaults (e.g. the fine-tune recipe before FINETUNE_DEFAULTS
    changed) continues with its own settings instead of being refused as changed. Fields the caller did set are
    left for the resume check to compare. Returns (config, {field: (default, saved)} of what was taken)."""
    if not state_path or not os.path.isfile(state_path):
        return cfg, {}
    saved = TrainConfig.from_dict(json.loads(load_state(state_path)["train_config"])).to_dict()
    now, base, taken = cfg.to_dict(), defaults.to_dict(), {}
    for field, value in now.items():
        if (field in given or field in TrainConfig.RESUMABLE_CHANGES or field == "schedule_steps"
                or value != base.get(field) or saved.get(field, value) == value):
            continue
        taken[field] = (value, saved[field])
    if not taken:
        return cfg, {}
    return TrainConfig.from_dict({**now, **{k: v for k, (_, v) in taken.items()}}), taken


def finetune(model: LDDGAN, images: torch.Tensor | None = None, folder: str | None = None,
             config: TrainConfig | None = None, *, augment=False, save_path: str | None = None, resume: bool = True,
             progress: Callable | None = None, should_stop: Callable[[], bool] | None = None, discriminator=None,
             disc_config=None, device=None, preview_every: int | None = None, skip_bad: bool = False,
             log: Callable[[str], None] | None = None, **train_fields) -> FinetuneResult:
    """Fine-tune `model` (any LDDGAN, official conversions included) on images: adversarial loss plus the L1
    reconstruction term (FINETUNE_DEFAULTS: constant weight 4; schedule="sigmoid" for the paper's Weighted Learning).

    images: [B, 3, H, W] in [-1, 1] (resized / center-cropped to the model's size) and/or folder (recursive).
    config: the run's TrainConfig (steps, batch_size, lr_g, lr_d, rec_schedule, gamma, r1_gamma, ema_decay, seed,
    save_every, ...); without one, ``finetune_config(**train_fields)`` (e.g. ``steps=300, schedule="sigmoid"``).
    The autoencoder stays frozen; G is trained with a fresh discriminator (or `discriminator`: a file or a
    (config, state dict) pair), EMA with warm-up. Returns a FinetuneResult: model (a NEW LDDGAN with the EMA
    generator; the input is untouched), losses, loss_curve and sample_grid (uint8 HxWx3), checkpoint_path.

    save_path (model .safetensors): writes it plus <stem>.train.pt (resume point), <stem>.discriminator.
    safetensors, <stem>.losses.csv, <stem>.loss_curve.png and <stem>.cache/ (latents); with resume=True an
    existing <stem>.train.pt is continued. config.save_every: checkpoint interval (0: end / interrupt only).
    progress(step, total, logs, preview) after each iteration (preview: EMA samples [n,3,H,W] in [-1,1] every
    preview_every iterations, else None); should_stop() polled before each iteration. On should_stop the
    last state is saved and the result has interrupted=True; if progress raises, the state is saved and the
    exception propagates. Runs under torch.inference_mode(False) and enable_grad (ComfyUI calls nodes in
    inference mode)."""
    if not isinstance(model, LDDGAN):
        raise InputError(f"finetune: model must be an LDDGAN, got {type(model).__name__}")
    if config is not None and train_fields:
        raise InputError(f"finetune: give a TrainConfig or its fields as keywords, not both ({sorted(train_fields)})")
    cfg = config if config is not None else finetune_config(**train_fields)
    paths = RunPaths.beside(os.fspath(save_path)) if save_path else RunPaths()
    if paths.model and not paths.model.endswith(".safetensors"):
        raise InputError(f"finetune save_path must end with .safetensors, got {save_path!r}")
    if config is None and resume and paths.state:  # a resumed run keeps the saved values of the fields not given
        given = {"rec_schedule" if k == "schedule" else k for k in train_fields}
        cfg, taken = keep_saved_settings(cfg, finetune_config(), paths.state, given=given)
        if taken and log:
            log("resuming with the saved run's " + ", ".join(f"{k} {v!r}" for k, (_, v) in sorted(taken.items())))
    device = torch.device(device) if device is not None else model.device
    with torch.inference_mode(False), torch.enable_grad():
        data = build_latents(model.autoencoder, model.config.image_size, images=images, folder=folder,
                             augment=Augment.coerce(augment), seed=cfg.seed, cache_dir=paths.cache_dir, device=device,
                             skip_bad=skip_bad, log=log)
        prov = {"source": "finetune", "base": dict(model.config.provenance), "base_name": model.config.name,
                "steps": cfg.steps, "images": len(data), "schedule": cfg.rec_schedule, "gamma": cfg.gamma,
                "seed": cfg.seed}
        return train_model(model, data, cfg, paths=paths, resume=resume, discriminator=discriminator,
                           disc_config=disc_config, device=device, progress=progress, should_stop=should_stop,
                           log=log, provenance=prov, preview_every=preview_every)


def new_model(autoencoder_model, generator, latents: LatentSet | None = None, *, num_timesteps: int = 4,
              scale_factor: float | str = "auto", image_size: int | None = None, name: str = "lddgan",
              seed: int = 0, beta_min: float = 0.1, beta_max: float = 20.0, schedule: str = "vp") -> LDDGAN:
    """A new LDDGAN: the autoencoder (weights and config) of `autoencoder_model` (an LDDGAN, or a
    (Autoencoder module, image_size) pair from ``load_autoencoder``) and a fresh generator from `generator` (a
    preset name or a GeneratorConfig dict). scale_factor "auto" estimates it from `latents` (see
    estimate_scale_factor) and records it in the config."""

    if isinstance(autoencoder_model, LDDGAN):
        ae, size = autoencoder_model.autoencoder, autoencoder_model.config.image_size
    else:
        ae, size = autoencoder_model
    size = image_size or size
    f = ae.cfg.downsample_factor
    if size % f:
        raise InputError(f"image size {size} is not a multiple of the autoencoder's factor {f}")
    if scale_factor == "auto":
        if latents is None:
            raise InputError("new_model: scale_factor='auto' needs the training latents")
        scale_factor = estimate_scale_factor(latents, seed=seed)
    gcfg = generator_config(generator, ae.cfg.embed_dim, size // f)
    cfg = ModelConfig(generator=gcfg, autoencoder=ae.cfg,
                      diffusion=DiffusionConfig(num_timesteps=num_timesteps, beta_min=beta_min, beta_max=beta_max,
                                                schedule=schedule),
                      scale_factor=float(scale_factor), image_size=size, name=name,
                      provenance={"source": "train", "scale_factor": "estimated" if latents is not None else "given"})
    m = new_reference_model(cfg, seed, "cpu")
    with torch.no_grad():
        m.autoencoder.load_state_dict({k: v.detach().cpu().float() if v.is_floating_point() else v.detach().cpu()
                                       for k, v in ae.state_dict().items()})
    return m.eval()


@contextlib.contextmanager
def training_mode():
    """inference_mode(False) + enable_grad: what every training entry point runs under."""
    with torch.inference_mode(False), torch.enable_grad():
        yield




def train_autoencoder(autoencoder, image_size: int, images: torch.Tensor | None = None, folder: str | None = None,
                      cfg=None, *, paths: RunPaths | None = None, resume: bool = True,
                      perceptual_weights: str | None = None, device="cpu", world: tdist.World | None = None,
                      progress=None, should_stop=None, log=None, skip_bad: bool = False) -> FitResult:
    """Train a new autoencoder (a preset name, a dict or an AutoencoderConfig) on images [B, 3, H, W] in
    [-1, 1] and/or a folder, at image_size px. cfg: an AETrainConfig. perceptual_weights: a local VGG-16 file
    (needed when cfg.perceptual_weight > 0). Writes paths.model (the autoencoder file) and the run files;
    result.model is the trained Autoencoder."""
    import hashlib


    world = world or tdist.World()
    cfg = cfg or AETrainConfig()
    ae_cfg = autoencoder if isinstance(autoencoder, AutoencoderConfig) else autoencoder_config(autoencoder, image_size)
    if image_size % ae_cfg.downsample_factor:
        raise InputError(f"image size {image_size} is not a multiple of the autoencoder's factor "
                         f"{ae_cfg.downsample_factor}")
    if images is None and folder is None:
        raise InputError("train_autoencoder: give images and/or an image folder")
    with training_mode():
        xs, fps = [], []
        if world.is_main:
            if images is not None:
                x, fp = from_tensor(images, image_size)
                xs.append(x)
                fps.append(fp)
            if folder is not None:
                x, fp = load_images(folder, image_size, skip_bad=skip_bad, log=log)
                xs.append(x)
                fps.append(fp)
        data = torch.cat(xs) if xs else None
        fp = hashlib.sha256("|".join(fps).encode()).hexdigest() if xs else ""
        if world.active:
            import torch.distributed as dist

            data = tdist.broadcast_tensor(data, world, device)
            box = [fp]
            dist.broadcast_object_list(box, src=0)
            fp = box[0]
        perceptual = PerceptualLoss.from_file(perceptual_weights) if perceptual_weights else None
        trainer = AutoencoderTrainer(ae_cfg, data, cfg, image_size=image_size, perceptual=perceptual, device=device,
                                     world=world, data_fingerprint=fp)
        paths = paths or RunPaths()
        _resume_or_keep(trainer, paths, resume, world, log, kind="autoencoder")
        prov = {"source": "train-autoencoder", "steps": cfg.steps, "images": int(data.shape[0]),
                "kl_weight": cfg.kl_weight}
        return fit(trainer, paths, progress=progress, should_stop=should_stop, log=log, provenance=prov)
