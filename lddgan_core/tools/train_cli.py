"""`lddgan train-autoencoder`, `lddgan train`, `lddgan finetune` (registered by lddgan_core.cli).

Each writes a run folder (train_state.pt, model.safetensors or autoencoder.safetensors,
discriminator.safetensors, losses.csv, loss_curve.png, samples/step_*.png, cache/), resumes from it when
run again with the same arguments, and runs data-parallel when started with torchrun:

    torchrun --nproc_per_node 4 -m lddgan_core train --autoencoder ae.safetensors --data imgs/ --out run/
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time

from ..errors import ConfigError
from ..hub.shipped import resolve_model_path
from ..model import load_model
from ..train import dist as tdist
from ..train.api import FINETUNE_DEFAULTS, finetune_config, keep_saved_settings, new_model, shared_latents, train_autoencoder, train_model, training_mode
from ..train.autoencoder import AETrainConfig, load_autoencoder
from ..train.config import AUTOENCODER_PRESETS, GENERATOR_PRESETS, REC_T_RULES, TrainConfig, parse_rec_t_rule
from ..train.data import Augment
from ..train.files import RunPaths
from ..train.latents import build_latents
from .progress import ProgressBar


class StopFlag:
    """The first Ctrl-C asks the run to stop after the current iteration (state saved); a second one
    interrupts at once (the last periodic checkpoint stays the resume point)."""

    def __init__(self):
        self.stop = False
        self.prev = None

    def __enter__(self):
        try:
            self.prev = signal.signal(signal.SIGINT, self._handler)
        except ValueError:  # not the main thread
            self.prev = None
        return self

    def _handler(self, *_):
        if self.stop:
            raise KeyboardInterrupt
        self.stop = True
        print("\nstopping after this iteration (Ctrl-C again to abort at once)", file=sys.stderr, flush=True)

    def __call__(self) -> bool:
        return self.stop

    def __exit__(self, *exc):
        if self.prev is not None:
            signal.signal(signal.SIGINT, self.prev)
        return False


def _json_arg(value: str | None, what: str):
    """A JSON object given inline or as a file path."""

    if value is None:
        return None
    text = value
    if os.path.isfile(value):
        with open(value, encoding="utf-8") as f:
            text = f.read()
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{what}: not a JSON object or a JSON file ({e})") from None
    if not isinstance(d, dict):
        raise ConfigError(f"{what}: expected a JSON object, got {type(d).__name__}")
    return d


def _setup(a):
    """(world, device, log) for this process; only rank 0 logs."""
    import torch


    requested = a.device if a.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"error: --device {a.device}: CUDA is not available on this machine")
    world = tdist.init_from_env(requested)
    device = tdist.device_for(world, requested)
    quiet = getattr(a, "quiet", False) or not world.is_main
    log = (lambda msg: None) if quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    if world.active:
        log(f"data parallel: {world.size} processes ({'nccl' if device.type == 'cuda' else 'gloo'}), "
            f"batch {a.batch} = {world.size} x {a.batch // max(1, world.size)}")
    return world, device, log


def _paths(a, kind: str = "gan"):

    paths = RunPaths.in_dir(a.out, kind)
    if a.restart and os.path.isfile(paths.state):
        backup = paths.state[:-3] + time.strftime(".%Y%m%d-%H%M%S.pt")
        os.replace(paths.state, backup)  # keep the old run's state rather than overwrite it
        print(f"--restart: previous state kept as {backup}", file=sys.stderr)
    return paths


def _train_config(a):

    return TrainConfig(steps=a.steps, batch_size=a.batch, micro_batch=a.micro_batch, lr_g=a.lr_g, lr_d=a.lr_d,
                       lr_schedule=a.lr_schedule, rec_schedule=a.schedule, gamma=a.gamma, rec_value=a.rec_value,
                       rec_t_weights=a.rec_t_weights,
                       d_steps=a.d_steps, d_warmup=a.d_warmup, image_d_weight=a.image_d_weight,
                       image_d_ndf=a.image_d_ndf, r1_gamma=a.r1_gamma, lazy_reg=a.lazy_reg, ema_decay=a.ema_decay,
                       ema_warmup=a.ema_warmup,
                       latent_mode=a.latent, precision=a.precision, seed=a.seed, log_every=a.log_every,
                       sample_every=a.sample_every, save_every=a.save_every, num_samples=a.num_samples,
                       fast=a.fast, d_augment=a.d_augment, augment_p=a.augment_p, ada_target=a.ada_target,
                       ada_kimg=a.ada_kimg)


def _run_gan(a, model_fn, kind: str) -> int:
    """Shared by train / finetune: latents (rank 0, broadcast), model, trainer, fit."""

    world, device, log = _setup(a)
    cfg = _train_config(a)
    paths = _paths(a)
    # resuming: settings left at this command's defaults continue with the saved run's values (a run started
    # before the defaults changed goes on as it was); settings given on the command line are compared
    cfg, taken = keep_saved_settings(cfg, finetune_config() if kind == "finetune" else TrainConfig(), paths.state)
    if taken:
        log(f"resuming {paths.state} with its saved settings where this command gave the defaults: "
            + ", ".join(f"{k} {saved!r} (default now {d!r})" for k, (d, saved) in sorted(taken.items())))
    with training_mode():
        ae, size, make_model = model_fn(a, device, log)
        lat = shared_latents(world, device, lambda: build_latents(
            ae, size, folder=a.data, augment=Augment.coerce(a.augment), seed=a.seed, cache_dir=paths.cache_dir,
            device=device,
            skip_bad=a.skip_bad_images, log=log))
        model = make_model(lat)
        disc_cfg = _json_arg(a.disc_config, "--disc-config")
        if disc_cfg is not None:
            disc_cfg.setdefault("in_channels", 2 * model.latent_shape[0])
        if world.is_main:
            os.makedirs(a.out, exist_ok=True)
            with open(os.path.join(a.out, "train_config.json"), "w", encoding="utf-8") as f:
                json.dump({"command": kind, "train": cfg.to_dict(), "model": model.config.to_dict(),
                           "data": os.path.abspath(a.data), "images": len(lat)}, f, indent=1)
        log(f"{kind}: {len(lat)} training latents {list(lat.mean.shape[1:])}, scale_factor {model.scale_factor:g}, "
            f"{sum(p.numel() for p in model.generator.parameters()) / 1e6:.2f}M generator params, device {device}")
        bar = None if (a.quiet or not world.is_main) else ProgressBar("steps", every=a.log_every)
        prov = {"source": kind, "data": os.path.abspath(a.data), "images": len(lat), "steps": cfg.steps,
                "base": dict(model.config.provenance)}
        with StopFlag() as stop:
            res = train_model(model, lat, cfg, paths=paths, resume=not a.restart, discriminator=a.discriminator,
                              disc_config=disc_cfg, device=device, world=world, progress=bar,
                              should_stop=stop, log=log, provenance=prov,
                              preview_every=None)
    return _finish(res, cfg, world, log)


def _finish(res, cfg, world, log) -> int:
    """Exit status of a training command: 130 after a clean stop (state saved), else print the model path."""
    if res.interrupted:
        log(f"stopped at iteration {res.step}/{cfg.steps}; state saved in {res.checkpoint_path}. "
            f"Run the same command again to continue.")
        return 130
    if world.is_main:
        print(res.files.get("model", ""))
    return 0


def cmd_finetune(a) -> int:
    def model_fn(a, device, log):
        base = load_model(resolve_model_path(a.model), device="cpu")
        return base.autoencoder.to(device), base.config.image_size, lambda lat: base

    return _run_gan(a, model_fn, "finetune")


def cmd_train(a) -> int:
    def model_fn(a, device, log):

        ae, size = load_autoencoder(a.autoencoder, device=device)
        size = a.image_size or size
        gen = _json_arg(a.generator, "--generator") if not _is_preset(a.generator) else a.generator
        sf = "auto" if a.scale_factor == "auto" else float(a.scale_factor)

        def make(lat):
            return new_model((ae, size), gen, lat, num_timesteps=a.timesteps, scale_factor=sf, image_size=size,
                             name=a.name, seed=a.seed)
        return ae, size, make

    return _run_gan(a, model_fn, "train")


def _is_preset(v: str) -> bool:

    return v in GENERATOR_PRESETS


def cmd_train_autoencoder(a) -> int:

    world, device, log = _setup(a)

    spec = a.preset if a.preset in AUTOENCODER_PRESETS else _json_arg(a.preset, "--preset")
    cfg = AETrainConfig(steps=a.steps, batch_size=a.batch, micro_batch=a.micro_batch, lr=a.lr, lr_d=a.lr_d,
                        lr_schedule=a.lr_schedule, pixel_loss=a.pixel_loss, kl_weight=a.kl_weight,
                        codebook_beta=a.codebook_beta, perceptual_weight=a.perceptual_weight,
                        disc_weight=a.disc_weight, disc_start=a.disc_start, disc_layers=a.disc_layers, seed=a.seed,
                        log_every=a.log_every,
                        sample_every=a.sample_every, save_every=a.save_every, num_samples=a.num_samples)
    if cfg.perceptual_weight > 0 and not a.perceptual_weights:
        raise SystemExit("error: --perceptual-weight > 0 needs --perceptual-weights FILE (a local VGG-16 state "
                         "dict in torchvision's layout; nothing is downloaded)")
    paths = _paths(a, "autoencoder")
    bar = None if (a.quiet or not world.is_main) else ProgressBar("steps", every=a.log_every)
    with StopFlag() as stop:
        res = train_autoencoder(spec, a.image_size, folder=a.data, cfg=cfg, paths=paths, resume=not a.restart,
                                perceptual_weights=a.perceptual_weights, device=device, world=world, progress=bar,
                                should_stop=stop, log=log, skip_bad=a.skip_bad_images)
    return _finish(res, cfg, world, log)


# -- argument parsers ---------------------------------------------------------------------------------------
def _common(p: argparse.ArgumentParser, steps: int, batch: int):
    p.add_argument("--data", required=True, help="folder of training images (recursive; png, jpg, webp)")
    p.add_argument("--out", required=True, help="run folder (created; an existing run in it is resumed)")
    p.add_argument("--steps", type=int, default=steps, help="total iterations")
    p.add_argument("--batch", type=int, default=batch, help="global batch (split over torchrun processes)")
    p.add_argument("--micro-batch", type=int, default=None, help="samples per forward pass (gradient accumulation)")
    p.add_argument("--lr-schedule", choices=["constant", "cosine"], default="constant")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=10, help="iterations per loss-log row")
    p.add_argument("--sample-every", type=int, default=500, help="iterations between sample grids (0: end only)")
    p.add_argument("--save-every", type=int, default=500, help="iterations between checkpoints (0: end only)")
    p.add_argument("--num-samples", type=int, default=16, help="images per sample grid")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (torchrun: cuda:LOCAL_RANK)")
    p.add_argument("--restart", action="store_true",
                   help="ignore an existing run in --out (its state is kept as a backup)")
    p.add_argument("--skip-bad-images", action="store_true", help="leave out unreadable images instead of failing")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")


def _weight_or_auto(text: str) -> float | str:
    """argparse type of --image-d-weight: a number, or auto."""
    return "auto" if text == "auto" else float(text)


def _float_list(text: str) -> tuple[float, ...] | str:
    """argparse type of --rec-t-weights: comma-separated numbers, or a rule (min_snr, snr>=X)."""
    if parse_rec_t_rule(text) is not None:
        return text
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers such as 1,1,0.5,0 or one of "
                                         f"{list(REC_T_RULES)}, got {text!r}") from None


def _gan_args(p: argparse.ArgumentParser, defaults: TrainConfig):
    """The GAN-training flags; their defaults are `defaults`' fields (finetune: finetune_config(), so the CLI, the
    library and the Fine-Tune node share one recipe)."""
    c = defaults
    p.add_argument("--lr-g", type=float, default=c.lr_g)
    p.add_argument("--lr-d", type=float, default=c.lr_d)
    p.add_argument("--schedule", choices=["sigmoid", "constant", "off", "linear", "cosine"], default=c.rec_schedule,
                   help="weight of the L1 reconstruction term over training (sigmoid: the paper's)")
    p.add_argument("--gamma", type=float, default=c.gamma, help="steepness of the sigmoid schedule")
    p.add_argument("--rec-value", type=float, default=c.rec_value,
                   help="scale of the constant / linear / cosine schedules (start value of linear / cosine)")
    p.add_argument("--rec-t-weights", type=_float_list, default=c.rec_t_weights, metavar="W0,W1,..|RULE",
                   help="factors of the L1 term per diffusion step t = 0 .. T-1 (default: 1 for every t, as "
                        "official); e.g. 1,1,0,0 leaves the high-noise steps to the adversarial loss. Rules over the "
                        "SNR of x_{t+1}, for any T: min_snr (min(1, SNR)), snr>=X (1 where SNR >= X, else 0)")
    p.add_argument("--d-steps", type=int, default=c.d_steps, help="D updates per iteration (official 1)")
    p.add_argument("--d-warmup", type=int, default=c.d_warmup,
                   help="the first N iterations train D only (a fresh D learns the data before G follows it)")
    p.add_argument("--image-d-weight", type=_weight_or_auto, default=c.image_d_weight, metavar="W|auto",
                   help="> 0: also train a PatchGAN on decoded x0 predictions vs decoded training latents, with "
                        "this weight on its loss for G (0: off, official; auto: 1 for images up to 64 px, else 0)")
    p.add_argument("--image-d-ndf", type=int, default=c.image_d_ndf, help="width of that image discriminator")
    p.add_argument("--r1-gamma", type=float, default=c.r1_gamma, help="R1 weight (official 0.02 / 2 / 1)")
    p.add_argument("--lazy-reg", type=int, default=c.lazy_reg, help="R1 every N iterations")
    p.add_argument("--ema-decay", type=float, default=c.ema_decay)
    p.add_argument("--ema-warmup", action=argparse.BooleanOptionalAction, default=c.ema_warmup,
                   help="EMA decay min(decay, (1+step)/(10+step))")
    p.add_argument("--latent", choices=["sample", "mean"], default=c.latent_mode,
                   help="KL data: posterior samples (official) or means")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default=c.precision,
                   help="auto: bf16 autocast on CUDA, fp32 on the CPU; bf16: autocast on either")
    p.add_argument("--fast", action=argparse.BooleanOptionalAction, default=c.fast,
                   help="fused Adam and the strided-conv FIR in G and D (the same math; see bench --train)")
    p.add_argument("--d-augment", default=c.d_augment,
                   help="differentiable augmentation of D's inputs: off, or a comma list of translation, cutout, "
                        "flip, color")
    p.add_argument("--augment-p", type=float, default=c.augment_p, help="augmentation probability (start value)")
    p.add_argument("--ada-target", type=float, default=c.ada_target,
                   help="adapt the probability so that E[sign D(real)] stays at this value (0: fixed)")
    p.add_argument("--ada-kimg", type=float, default=c.ada_kimg, help="thousands of images for p to move by 1")
    p.add_argument("--augment", type=int, default=0, help="N > 1: encode N augmented copies per image (small datasets)")
    p.add_argument("--discriminator", default=None,
                   help="start D from this file (discriminator.safetensors or train_state.pt)")
    p.add_argument("--disc-config", default=None, help="discriminator config as JSON or a JSON file "
                                                       "(kind small|large, ngf, num_layers, t_emb_dim)")


def add_train_commands(sub) -> None:
    f = sub.add_parser("finetune", help="fine-tune a model on a folder of images (L1 weight 4 throughout by default; "
                                         "--schedule sigmoid: Weighted Learning)")
    f.add_argument("--model", default=None, help="our .safetensors model, a shipped model (shapes, emoji) or a manifest id (default: shapes, the default model)")
    _common(f, steps=FINETUNE_DEFAULTS["steps"], batch=FINETUNE_DEFAULTS["batch_size"])
    _gan_args(f, finetune_config())
    f.set_defaults(fn=cmd_finetune)

    t = sub.add_parser("train", help="train a new LDDGAN on a trained autoencoder")
    t.add_argument("--autoencoder", required=True,
                   help="autoencoder file (lddgan train-autoencoder) or an LDDGAN model")
    t.add_argument("--generator", default="small", help="generator preset (tiny, small, cifar10, celeba256, lsun256) "
                                                        "or GeneratorConfig fields as JSON / a JSON file")
    t.add_argument("--timesteps", type=int, default=4, help="T (the paper: 2..4)")
    t.add_argument("--scale-factor", default="auto", help="latent scale, or auto: estimated from the data")
    t.add_argument("--image-size", type=int, default=None, help="default: the autoencoder's")
    t.add_argument("--name", default="lddgan")
    _common(t, steps=100000, batch=32)
    _gan_args(t, TrainConfig())
    t.set_defaults(fn=cmd_train)

    a = sub.add_parser("train-autoencoder", help="train a KL or VQ autoencoder from scratch")
    a.add_argument("--preset", default="kl-f4", help="tiny, tiny-vq, kl-f2, kl-f4, kl-f8, vq-f4, or AutoencoderConfig "
                                                     "fields as JSON / a JSON file")
    a.add_argument("--image-size", type=int, required=True)
    a.add_argument("--lr", type=float, default=1e-4)
    a.add_argument("--lr-d", type=float, default=None)
    a.add_argument("--pixel-loss", choices=["l1", "l2"], default="l1")
    a.add_argument("--kl-weight", type=float, default=1e-6, help="0: the 'free' latent")
    a.add_argument("--codebook-beta", type=float, default=0.25)
    a.add_argument("--perceptual-weights", default=None, help="local VGG-16 weights (torchvision layout) for LPIPS")
    a.add_argument("--perceptual-weight", type=float, default=0.0)
    a.add_argument("--disc-weight", type=float, default=0.0, help="patch-GAN weight (LDM 0.5); 0: none")
    a.add_argument("--disc-start", type=int, default=0)
    a.add_argument("--disc-layers", type=int, default=3, help="PatchGAN depth (needs images >= 3 * 2^N px)")
    _common(a, steps=20000, batch=8)
    a.set_defaults(fn=cmd_train_autoencoder)
