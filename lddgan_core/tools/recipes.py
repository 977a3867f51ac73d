"""Recipes: the exact runs that produce the models the project ships.

`shapes` trains the default model (lddgan_core/models/lddgan_shapes32.safetensors) from nothing, on the CPU:
procedural shapes data (lddgan_core.data.shapes, seed 0) -> a KL f=2 autoencoder -> an LDDGAN (T=4) with the
paper's Weighted Learning -> the model saved in fp16 (fp32 would not fit the 15 MB budget).

    python -m lddgan_core.recipes shapes --out runs/shapes          # ~2 h on 2 CPU cores, resumable
    python -m lddgan_core.recipes shapes --out runs/smoke --quick   # minutes: the same pipeline, tiny budget

Each stage writes a run folder under --out and is resumed when the command runs again. Every number that
defines the shipped model is a default of ShapesRecipe (SHAPES_RECIPE, below); the command line builds one recipe
from those defaults and its flags, and <out>/recipe.json and the model's provenance record it (to_dict()).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass

from ..atomic import atomic_write, atomic_write_text
from ..data.shapes import make_shapes, to_model_range, TRAIN_SEED
from ..errors import InputError
from ..eval import evaluate_model
from ..train.api import new_model, train_autoencoder, train_model, training_mode
from ..train.autoencoder import AETrainConfig, load_autoencoder
from ..train.config import autoencoder_config, default_discriminator, TrainConfig
from ..train.files import RunPaths
from ..train.latents import build_latents
from .progress import ProgressBar
from .train_cli import StopFlag

# The shipped default model: every number that defines it is a default here (SHAPES_RECIPE); the run's record
# (recipe.json, and the model's provenance) is ShapesRecipe.to_dict().
SHAPES_AUTOENCODER = dict(kind="kl", embed_dim=4, z_channels=4, ch=32, ch_mult=(1, 2), num_res_blocks=1)
SHAPES_GENERATOR = dict(nf=32, ch_mult=(1, 2, 2), num_res_blocks=2, attn_resolutions=(), nz=50, z_emb_dim=128, n_mlp=2)
# three D updates per iteration at twice the official lr_d keep D ahead of G on these small latents (with one, D's
# real and generated logits stay within 0.1 and G regresses to the mean: README "Recipe probes"); fast: fused Adam
# and the strided-conv FIR, the same math
SHAPES_GAN = TrainConfig(steps=7000, batch_size=32, lr_g=2e-4, lr_d=2.5e-4, d_steps=3, fast=True, r1_gamma=0.02,
                         lazy_reg=15, ema_decay=0.999, ema_warmup=True, rec_schedule="sigmoid", gamma=6.0, seed=0,
                         log_every=50, save_every=250, sample_every=500)


def _arch(d: dict | None) -> dict | None:
    """An architecture dict with lists as tuples (JSON gives lists; the configs hold tuples), so records compare."""
    return None if d is None else {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


def _check_recipe(recipe, where: str, *positive: str) -> None:
    """The checks both recipes share: positive integers, the latent scale, `gan` a TrainConfig."""
    for n in positive:
        v = getattr(recipe, n)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise InputError(f"{where}: {n} must be a positive integer, got {v!r}")
    sf = recipe.scale_factor
    if sf is not None and (isinstance(sf, bool) or not isinstance(sf, (int, float)) or not sf > 0):
        raise InputError(f"{where}: scale_factor must be a positive number or None, got {sf!r}")
    if not isinstance(recipe.gan, TrainConfig):
        raise InputError(f"{where}: gan must be a TrainConfig, got {type(recipe.gan).__name__}")
    object.__setattr__(recipe, "generator", _arch(recipe.generator))


def _with_arguments(recipe, flags: dict[str, str], args: dict):
    """`recipe` with `args` applied: keys are command-line names (the keys of `flags`, e.g. gan_steps, mapped to
    a field or to "gan.<TrainConfig field>") or the recipe's own field names."""
    top, gan = {}, {}
    for k, v in args.items():
        target = flags.get(k, k)
        if target.startswith("gan."):
            gan[target[4:]] = v
        elif target in {f.name for f in dataclasses.fields(recipe)}:
            top[target] = v
        else:
            raise InputError(f"{type(recipe).__name__}: unknown argument {k!r}; known: "
                             f"{sorted(set(flags) | {f.name for f in dataclasses.fields(recipe)})}")
    if gan:
        top["gan"] = dataclasses.replace(top.get("gan", recipe.gan), **gan)
    return dataclasses.replace(recipe, **top)


def _recipe_dict(recipe) -> dict:
    """The JSON record of a recipe: its fields, tuples as lists, `gan` as TrainConfig.to_dict()."""
    d = {f.name: getattr(recipe, f.name) for f in dataclasses.fields(recipe)}
    d = {k: {a: list(b) if isinstance(b, tuple) else b for a, b in v.items()} if isinstance(v, dict) else v
         for k, v in d.items()}
    d["gan"] = recipe.gan.to_dict()
    return d


def _recipe_from_dict(cls, d: dict):
    """Inverse of _recipe_dict; unknown keys are InputErrors, missing ones take the defaults."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise InputError(f"{cls.__name__}: unknown field(s) {unknown}; known: {sorted(names)}")
    d = dict(d)
    if "gan" in d:
        d["gan"] = TrainConfig.from_dict(d["gan"])
    return cls(**d)


def _add_flags(parser: argparse.ArgumentParser, recipe, flags: dict[str, str]) -> None:
    """One --flag per entry of `flags`, typed and documented by the recipe's value (booleans: --x / --no-x); each
    defaults to None (not given), so that only the flags given override the recipe (_with_arguments)."""
    for name, target in flags.items():
        v = getattr(recipe.gan, target[4:]) if target.startswith("gan.") else getattr(recipe, target)
        if isinstance(v, bool):
            parser.add_argument("--" + name.replace("_", "-"), action=argparse.BooleanOptionalAction, default=None,
                                help=f"default {v}")
            continue
        parser.add_argument("--" + name.replace("_", "-"), type=float if v is None else type(v), default=None,
                            help=f"default {v}")


@dataclass(frozen=True)
class ShapesRecipe:
    """The default-model recipe: shapes data -> a KL autoencoder -> an LDDGAN trained with `gan`."""

    images: int = 20000  # training images (procedural shapes, dataset seed TRAIN_SEED)
    ae_steps: int = 3000  # autoencoder iterations
    ae_batch: int = 32  # autoencoder batch
    ae_lr: float = 4e-4  # autoencoder Adam learning rate
    autoencoder: dict = dataclasses.field(default_factory=lambda: _arch(SHAPES_AUTOENCODER))  # AutoencoderConfig
    # fields but resolution (32)
    generator: dict = dataclasses.field(default_factory=lambda: _arch(SHAPES_GENERATOR))  # GeneratorConfig fields
    # but in_channels / image_size (from the autoencoder) and use_tanh
    use_tanh: bool = False  # tanh on the generator's output (off: at scale 6.25 it clipped 4.5% of the latents)
    disc: dict | None = None  # the discriminator's DiscriminatorConfig fields; None: default_discriminator(latent
    # shape, ngf=disc_ngf), DDGAN's small D for these 16x16 latents
    disc_ngf: int = 32  # width of the default discriminator (64 costs 2.4x per iteration for no gain: probe F)
    timesteps: int = 4  # diffusion steps T
    scale_factor: float | None = None  # a fixed latent scale; None: latent_std decides, or when that is None too,
    # estimated from the latents ("auto", which leaves them small next to the diffusion noise)
    latent_std: float | None = 1.1  # when scale_factor is None: the latents' std in diffusion space (v2's fixed 2.5
    # gave its f=4 latents 1.1: README "Recipe probes"; v3's f=2 latents get 2.62)
    dtype: str = "fp16"  # precision of the saved model (fp32 would not fit the 15 MB budget)
    gan: TrainConfig = SHAPES_GAN  # the LDDGAN stage; gan.seed also seeds the autoencoder and the new generator

    def __post_init__(self):
        _check_recipe(self, "shapes recipe", "images", "ae_steps", "ae_batch", "timesteps", "disc_ngf")
        if self.dtype not in ("fp32", "fp16", "bf16"):
            raise InputError(f"shapes recipe: dtype must be fp32, fp16 or bf16, got {self.dtype!r}")
        if self.latent_std is not None and not (isinstance(self.latent_std, (int, float))
                                                and not isinstance(self.latent_std, bool) and self.latent_std > 0):
            raise InputError(f"shapes recipe: latent_std must be a positive number or None, got {self.latent_std!r}")
        if "use_tanh" in self.generator:
            raise InputError("shapes recipe: set use_tanh as the recipe's field, not in generator")
        object.__setattr__(self, "autoencoder", _arch(self.autoencoder))
        object.__setattr__(self, "disc", _arch(self.disc))

    def generator_fields(self) -> dict:
        """The generator's GeneratorConfig fields (but in_channels / image_size)."""
        return {**self.generator, "use_tanh": self.use_tanh}

    def latent_scale(self, lat) -> float | str:
        """new_model's scale_factor: the recipe's; else the one giving the latents a std of latent_std in diffusion
        space; else "auto" (estimated from the latents)."""
        if self.scale_factor is not None:
            return float(self.scale_factor)
        if self.latent_std is not None:
            return float(f"{latent_spread(lat) / self.latent_std:.3g}")
        return "auto"

    def discriminator(self, latent_shape) -> dict:
        """The discriminator's config dict for latents of `latent_shape` [C, H, W]."""
        return dict(self.disc) if self.disc is not None else default_discriminator(latent_shape, ngf=self.disc_ngf)

    def with_arguments(self, **args) -> "ShapesRecipe":
        """This recipe with command-line arguments applied (SHAPES_FLAGS names, e.g. gan_steps=60)."""
        return _with_arguments(self, SHAPES_FLAGS, args)

    def to_dict(self) -> dict:
        return _recipe_dict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ShapesRecipe":
        return _recipe_from_dict(cls, d)

    @classmethod
    def from_record(cls, d: dict) -> "ShapesRecipe":
        """A recorded recipe: to_dict()'s form, or the flat command-line form that recipes wrote before this
        class (the shipped model's provenance: SHAPES_FLAGS names, scale_factor absent when estimated)."""
        if "gan" in d:
            return cls.from_dict(d)
        return cls(scale_factor=None).with_arguments(**d)


SHAPES_RECIPE = ShapesRecipe()
# command-line names (`python -m lddgan_core.recipes shapes --gan-steps N`) -> recipe field or "gan.<field>"
SHAPES_FLAGS = dict(images="images", ae_steps="ae_steps", ae_batch="ae_batch", ae_lr="ae_lr", gan_steps="gan.steps",
                    gan_batch="gan.batch_size", lr_g="gan.lr_g", lr_d="gan.lr_d", d_steps="gan.d_steps", fast="gan.fast",
                    r1_gamma="gan.r1_gamma", lazy_reg="gan.lazy_reg", ema_decay="gan.ema_decay", gamma="gan.gamma", timesteps="timesteps",
                    schedule="gan.rec_schedule", seed="gan.seed", scale_factor="scale_factor", disc_ngf="disc_ngf",
                    use_tanh="use_tanh", latent_std="latent_std")
SHAPES_QUICK = dict(images=512, ae_steps=60, gan_steps=60, ae_batch=16, gan_batch=16)  # --quick: minutes


def _train_stages(out: str, recipe, x, size: int, name: str, source: dict, *, augment=None, log=None,
                  progress=None, should_stop=None) -> str:
    """The stages every model recipe shares: a KL autoencoder on `x` (uint8-free: [N, 3, size, size] in [-1, 1]),
    the training latents (augmented copies when `augment` is a data.Augment), then the LDDGAN; returns the path of
    the saved model (<out>/model_<dtype>.safetensors). A finished autoencoder (<out>/autoencoder/autoencoder
    .safetensors) is reused and the GAN run resumes from its last checkpoint. `source` goes into the model's
    provenance next to the recipe record."""
    t0 = time.perf_counter()
    seed = recipe.gan.seed
    record = recipe.to_dict()
    ae_paths = RunPaths.in_dir(os.path.join(out, "autoencoder"), "autoencoder")
    if not os.path.isfile(ae_paths.model):
        cfg = AETrainConfig(steps=recipe.ae_steps, batch_size=recipe.ae_batch, lr=recipe.ae_lr, kl_weight=1e-6,
                            seed=seed, log_every=50, save_every=500, sample_every=1000)
        res = train_autoencoder(autoencoder_config(recipe.autoencoder, size), size, images=x, cfg=cfg, paths=ae_paths,
                                progress=progress, should_stop=should_stop, log=log)
        if res.interrupted:
            raise KeyboardInterrupt("stopped during the autoencoder stage (state saved; run again to resume)")
        log(f"autoencoder: {time.perf_counter() - t0:.0f} s")
    ae, ae_size = load_autoencoder(ae_paths.model)
    log(f"autoencoder ready: {ae_paths.model}")

    gan_paths = RunPaths.in_dir(os.path.join(out, "lddgan"), "gan")
    with training_mode():
        lat = build_latents(ae, ae_size, images=x, augment=augment, seed=seed, cache_dir=gan_paths.cache_dir, log=log)
    scale = recipe.latent_scale(lat)
    model = new_model((ae, ae_size), recipe.generator_fields(), lat, num_timesteps=recipe.timesteps, name=name,
                      seed=seed, scale_factor=scale)
    log(f"latents: {len(lat)} x {list(model.latent_shape)}, scale factor {model.config.scale_factor:.4g}")
    prov = {"recipe": json.dumps(record, sort_keys=True), "images": int(x.shape[0]), "steps": recipe.gan.steps,
            **source}
    res = train_model(model, lat, recipe.gan, paths=gan_paths, disc_config=recipe.discriminator(model.latent_shape),
                      progress=progress, should_stop=should_stop, log=log, provenance=prov)
    if res.interrupted:
        raise KeyboardInterrupt("stopped during the LDDGAN stage (state saved; run again to resume)")
    path = os.path.join(out, f"model_{recipe.dtype}.safetensors")
    res.model.save(path, dtype=recipe.dtype)
    log(f"model: {path} ({os.path.getsize(path) / 1e6:.2f} MB); this run {time.perf_counter() - t0:.0f} s")
    return path


def _write_recipe(out: str, recipe) -> None:
    os.makedirs(out, exist_ok=True)
    atomic_write_text(os.path.join(out, "recipe.json"), json.dumps(recipe.to_dict(), indent=1))


def train_shapes(out: str, recipe: ShapesRecipe = SHAPES_RECIPE, *, log=None, progress=None,
                 should_stop=None) -> str:
    """Autoencoder + LDDGAN on shapes data; returns the path of the saved model (<out>/model_<dtype>.safetensors).
    The autoencoder is skipped when <out>/autoencoder/autoencoder.safetensors exists (finished run). The recipe
    is written to <out>/recipe.json and into the model's provenance."""
    log = log or (lambda m: print(m, file=sys.stderr, flush=True))
    _write_recipe(out, recipe)
    t0 = time.perf_counter()
    # always the training data seed: gan.seed drives initialisation and noise only (seeds 1-4 are evaluation and
    # classifier data)
    x, _ = make_shapes(recipe.images, TRAIN_SEED, 32)
    x = to_model_range(x)
    log(f"shapes data: {recipe.images} images (seed {TRAIN_SEED}) in {time.perf_counter() - t0:.1f} s")
    return _train_stages(out, recipe, x, 32, "lddgan-shapes32", {"source": "recipe shapes"}, log=log,
                         progress=progress, should_stop=should_stop)


# The emoji model (lddgan_core/models/lddgan_emoji64.safetensors): Noto Color Emoji at 64 px (lddgan_core.data
# .emoji, the training split), a KL f=4 autoencoder (4x16x16 latents: at 600 steps it kept eyes and mouths that
# f=8 blurred away, README "Autoencoder probes"), a generator sized for 16x16 (nf 32: 32/64/64 channels at
# 16/8/4), the shapes model's GAN settings, and what a dataset of 1,370 pictures needs: augmented copies of every
# picture in the latents (mirror, small shifts) and D's inputs augmented with an adaptive probability (StyleGAN2-ADA)
EMOJI_AUTOENCODER = dict(kind="kl", embed_dim=4, z_channels=4, ch=32, ch_mult=(1, 2, 2), num_res_blocks=1)
EMOJI_GENERATOR = dict(nf=32, ch_mult=(1, 2, 2), num_res_blocks=2, attn_resolutions=(), nz=50, z_emb_dim=128, n_mlp=2)
EMOJI_GAN = dataclasses.replace(SHAPES_GAN, steps=6500, ema_warmup=True, d_augment="translation,cutout",
                                ada_target=0.6, ada_kimg=20.0, sample_every=500)


@dataclass(frozen=True)
class EmojiRecipe:
    """The emoji-model recipe: emoji pictures -> a KL autoencoder -> an LDDGAN trained with `gan`."""

    size: int = 64  # image size (the dataset renders any size; 64 is the one the issue asks for)
    ae_steps: int = 1500  # autoencoder iterations
    ae_batch: int = 16  # autoencoder batch
    ae_lr: float = 4e-4  # autoencoder Adam learning rate
    autoencoder: dict = dataclasses.field(default_factory=lambda: _arch(EMOJI_AUTOENCODER))
    generator: dict = dataclasses.field(default_factory=lambda: _arch(EMOJI_GENERATOR))
    use_tanh: bool = False  # no tanh on G's output (as the shapes model)
    disc: dict | None = None  # None: default_discriminator(latent shape, ngf=disc_ngf)
    disc_ngf: int = 32
    timesteps: int = 4
    scale_factor: float | None = None  # None: latent_std decides (the autoencoder is new, its spread unknown)
    latent_std: float = 1.1  # the latents' std in diffusion space when scale_factor is None (shapes: 2.5 gave 1.1)
    copies: int = 4  # augmented versions of every training picture in the latents (the picture itself included)
    translate: float = 0.03  # their largest shift, a fraction of the side (2 px at 64)
    hflip: bool = True  # mirrored at random (emoji mirror well; text-like ones are few)
    dtype: str = "fp16"
    gan: TrainConfig = EMOJI_GAN

    def __post_init__(self):
        _check_recipe(self, "emoji recipe", "size", "ae_steps", "ae_batch", "timesteps", "disc_ngf", "copies")
        if self.dtype not in ("fp32", "fp16", "bf16"):
            raise InputError(f"emoji recipe: dtype must be fp32, fp16 or bf16, got {self.dtype!r}")
        if not (isinstance(self.latent_std, (int, float)) and self.latent_std > 0):
            raise InputError(f"emoji recipe: latent_std must be a positive number, got {self.latent_std!r}")
        object.__setattr__(self, "autoencoder", _arch(self.autoencoder))
        object.__setattr__(self, "disc", _arch(self.disc))

    generator_fields = ShapesRecipe.generator_fields
    discriminator = ShapesRecipe.discriminator
    latent_scale = ShapesRecipe.latent_scale  # latent_std is never None here: never "auto"

    def augment(self):
        from ..train.data import Augment

        return Augment(copies=self.copies, hflip=self.hflip, translate=self.translate, jitter=0.0) \
            if self.copies > 1 else None

    def with_arguments(self, **args) -> "EmojiRecipe":
        return _with_arguments(self, EMOJI_FLAGS, args)

    def to_dict(self) -> dict:
        return _recipe_dict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "EmojiRecipe":
        return _recipe_from_dict(cls, d)


def latent_spread(lat, max_values: int = 1 << 22, seed: int = 0) -> float:
    """The std of the training latents as the trainer draws them (KL: mean + std * eps)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    x = lat.mean.float()
    if lat.std is not None:
        x = x + lat.std.float() * torch.randn(x.shape, generator=g)
    v = x.flatten()
    if v.numel() > max_values:
        v = v[torch.randperm(v.numel(), generator=g)[:max_values]]
    return float(v.std())


EMOJI_RECIPE = EmojiRecipe()
EMOJI_FLAGS = dict(size="size", ae_steps="ae_steps", ae_batch="ae_batch", ae_lr="ae_lr", gan_steps="gan.steps",
                   gan_batch="gan.batch_size", lr_g="gan.lr_g", lr_d="gan.lr_d", d_steps="gan.d_steps",
                   r1_gamma="gan.r1_gamma", ema_decay="gan.ema_decay", gamma="gan.gamma", d_augment="gan.d_augment",
                   ada_target="gan.ada_target", seed="gan.seed", scale_factor="scale_factor",
                   latent_std="latent_std", copies="copies", disc_ngf="disc_ngf")
EMOJI_QUICK = dict(ae_steps=30, gan_steps=30, ae_batch=8, gan_batch=8, copies=1)  # --quick: minutes


def train_emoji(out: str, recipe: EmojiRecipe = EMOJI_RECIPE, *, limit: int | None = None, log=None,
                progress=None, should_stop=None) -> str:
    """Autoencoder + LDDGAN on the emoji training split; returns the saved model's path. `limit`: only the first
    `limit` training pictures (smoke tests). The data's source (font and emoji-test.txt versions and hashes) goes
    into the model's provenance."""
    from ..data import emoji

    log = log or (lambda m: print(m, file=sys.stderr, flush=True))
    _write_recipe(out, recipe)
    t0 = time.perf_counter()
    catalog = emoji.load_catalog()
    x, _ = emoji.make_emoji("train", recipe.size, catalog=catalog)
    if limit is not None:
        x = x[:limit]
    log(f"emoji data: {x.shape[0]} training pictures at {recipe.size} px in {time.perf_counter() - t0:.1f} s")
    src = {f"data_{k}": v for k, v in emoji.source_info().items()}
    return _train_stages(out, recipe, x.float() / 127.5 - 1.0, recipe.size, f"lddgan-emoji{recipe.size}",
                         {"source": "recipe emoji", **src}, augment=recipe.augment(), log=log, progress=progress,
                         should_stop=should_stop)


# the Weighted Learning ablation (the paper's Table: adversarial only / + constant L1 / + Weighted Learning) at
# small scale: the default model's autoencoder and data, a smaller G and D, the same budget for every variant
ABLATION_VARIANTS = {
    "adv": dict(rec_schedule="off"),  # adversarial loss only
    "adv+rec": dict(rec_schedule="constant", rec_value=1.0),  # + L1 reconstruction, constant weight 1
    "adv+WL": dict(rec_schedule="sigmoid", gamma=6.0),  # + Weighted Learning (the paper's sigmoid decay)
}
ABLATION_GENERATOR = dict(nf=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), nz=50, z_emb_dim=128,
                          n_mlp=2, use_tanh=False)
# EMA warm-up: with a plain 0.999 decay, 0.999^1500 = 22% of the EMA would still be the random init
# the default model's GAN settings (no tanh, scale 2.5, three D steps at lr_d 2.5e-4, fast) with a smaller G at batch 16
ABLATION_GAN = TrainConfig(steps=1500, batch_size=16, lr_g=2e-4, lr_d=2.5e-4, d_steps=3, fast=True, r1_gamma=0.02,
                           lazy_reg=15, ema_decay=0.999, ema_warmup=True, seed=0, log_every=50, save_every=250,
                           sample_every=0)


@dataclass(frozen=True)
class AblationRecipe:
    """The ablation's runs: the default model's autoencoder and data, this G and D, one budget for every variant."""

    images: int = 20000  # training images (procedural shapes, dataset seed TRAIN_SEED)
    n_eval: int = 2000  # samples per evaluated model (against as many held-out images)
    generator: dict = dataclasses.field(default_factory=lambda: _arch(ABLATION_GENERATOR))  # GeneratorConfig fields
    disc_ngf: int = 32  # width of the default discriminator
    timesteps: int = 4  # diffusion steps T
    scale_factor: float | None = None  # latent scale of every model (the default model's); None: estimated
    gan: TrainConfig = ABLATION_GAN  # each variant replaces the reconstruction-weight fields, each run the seed

    def __post_init__(self):
        _check_recipe(self, "ablation", "images", "n_eval", "disc_ngf", "timesteps")

    def with_arguments(self, **args) -> "AblationRecipe":
        """This recipe with command-line arguments applied (ABLATION_FLAGS names, e.g. steps=300)."""
        return _with_arguments(self, ABLATION_FLAGS, args)

    def to_dict(self) -> dict:
        return _recipe_dict(self)


ABLATION_RECIPE = AblationRecipe()
ABLATION_FLAGS = dict(steps="gan.steps", batch="gan.batch_size", lr_g="gan.lr_g", lr_d="gan.lr_d",
                      d_steps="gan.d_steps", r1_gamma="gan.r1_gamma", lazy_reg="gan.lazy_reg", ema_decay="gan.ema_decay", disc_ngf="disc_ngf",
                      n_eval="n_eval", images="images", scale_factor="scale_factor")


def run_ablation(out: str, autoencoder: str, recipe: AblationRecipe = ABLATION_RECIPE, *, seeds=(0, 1, 2),
                 variants=None, log=None, progress_factory=None, should_stop=None) -> dict:
    """Train every (variant, seed) pair on the shapes data with the recipe's budget and evaluate each model
    (lddgan_core.eval, shapes features, n_eval samples vs held-out data). Each run lives in <out>/<variant>_s<seed>
    and is resumed / skipped when finished (its eval.json exists). Returns {"runs": [...], "summary": {...}}
    and writes <out>/ablation.json and <out>/ablation.md (mean +- std over seeds)."""
    log = log or (lambda m: print(m, file=sys.stderr, flush=True))
    variants = list(variants or ABLATION_VARIANTS)
    unknown = [v for v in variants if v not in ABLATION_VARIANTS]
    if unknown:
        raise InputError(f"ablation variants {unknown} are unknown; choose from {list(ABLATION_VARIANTS)}")
    steps, batch, n_eval, scale_factor = recipe.gan.steps, recipe.gan.batch_size, recipe.n_eval, recipe.scale_factor
    if not seeds or any(not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in seeds):
        raise InputError(f"ablation seeds must be integers >= 0, got {list(seeds)}")
    if len(seeds) < 3:
        log(f"note: {len(seeds)} seed(s); the mean +- std needs at least 3 to mean much")
    os.makedirs(out, exist_ok=True)
    ae, size = load_autoencoder(autoencoder)
    x, _ = make_shapes(recipe.images, TRAIN_SEED, 32)
    with training_mode():
        lat = build_latents(ae, size, images=to_model_range(x), seed=0, cache_dir=os.path.join(out, "cache"), log=log)
    disc = default_discriminator((ae.cfg.embed_dim, size // ae.cfg.downsample_factor,
                                  size // ae.cfg.downsample_factor), ngf=recipe.disc_ngf)
    runs = []
    for v in variants:
        for seed in seeds:
            d = os.path.join(out, f"{v}_s{seed}")
            ev_path = os.path.join(d, "eval.json")
            if os.path.isfile(ev_path):
                with open(ev_path, encoding="utf-8") as f:
                    row = json.load(f)
                have = (row.get("steps"), row.get("batch"), row.get("n_eval"), row.get("scale_factor_arg"))
                if have != (steps, batch, n_eval, scale_factor):
                    raise InputError(f"{ev_path}: a finished run with steps/batch/n_eval/scale factor {have}, but this "
                                     f"ablation asks for {(steps, batch, n_eval, scale_factor)}; use another --out")
                runs.append(row)
                continue
            model = new_model((ae, size), recipe.generator, lat, num_timesteps=recipe.timesteps,
                              name=f"ablation-{v}", seed=seed,
                              scale_factor="auto" if scale_factor is None else float(scale_factor))
            cfg = dataclasses.replace(recipe.gan, seed=seed, **ABLATION_VARIANTS[v])
            t0 = time.perf_counter()
            log(f"ablation {v} seed {seed}: {steps} iterations, batch {batch}")
            res = train_model(model, lat, cfg, paths=RunPaths.in_dir(d), disc_config=dict(disc),
                              progress=progress_factory() if progress_factory else None, should_stop=should_stop,
                              log=log)
            if res.interrupted:
                raise KeyboardInterrupt(f"stopped during ablation run {d} (state saved; run again to resume)")
            train_s = time.perf_counter() - t0
            ev = evaluate_model(res.model, n=n_eval, seed=0)
            row = {"variant": v, "seed": seed, "train_seconds": train_s, "steps": steps, "batch": batch, "n_eval": n_eval,
                   "scale_factor_arg": scale_factor, "scale_factor": model.config.scale_factor,
                   "metrics": ev["generated"], "ceiling": ev["ceiling"], "eval": {k: ev[k] for k in ev
                                                                                  if k not in ("generated", "ceiling")}}
            atomic_write_text(ev_path, json.dumps(row, indent=1))
            runs.append(row)
            log(f"  {v} seed {seed}: " + ", ".join(f"{k} {row['metrics'][k]:.4g}" for k in _ABLATION_KEYS
                                                      if k in row["metrics"]))
    summary = _summarize(runs)
    curves = {}
    for r in runs:
        csv_path = os.path.join(out, f"{r['variant']}_s{r['seed']}", "losses.csv")
        if os.path.isfile(csv_path):
            curves.setdefault(r["variant"], []).append(loss_windows(csv_path, steps))
    curves = {v: _mean_windows(ws) for v, ws in curves.items()}
    result = {"runs": runs, "summary": summary, "curves": curves, "settings": dict(seeds=list(seeds), steps=steps, batch=batch,
                                                                 generator=recipe.to_dict()["generator"], disc=disc,
                                                                 n_eval=n_eval, images=recipe.images,
                                                                 scale_factor=scale_factor, recipe=recipe.to_dict())}
    atomic_write_text(os.path.join(out, "ablation.json"), json.dumps(result, indent=1))
    atomic_write_text(os.path.join(out, "ablation.md"), ablation_table(summary, len(seeds)) + "\n" + curves_table(curves))
    ablation_picture(out, variants, list(seeds))
    return result


def ablation_picture(out: str, variants: list, seeds: list, gap: int = 8) -> str | None:
    """<out>/ablation_samples.png: each run's last sample grid (its samples/ folder), one row per variant (in the
    given order), one column per seed, on white with ``gap`` pixels between; None when no run has a grid."""
    import glob

    import numpy as np
    from PIL import Image

    cells = {}
    for v in variants:
        for s in seeds:
            grids = sorted(glob.glob(os.path.join(out, f"{v}_s{s}", "samples", "step_*.png")))
            if grids:
                with Image.open(grids[-1]) as im:
                    cells[v, s] = np.asarray(im.convert("RGB"))
    if not cells:
        return None
    h = max(c.shape[0] for c in cells.values())
    w = max(c.shape[1] for c in cells.values())
    canvas = np.full((len(variants) * (h + gap) - gap, len(seeds) * (w + gap) - gap, 3), 255, np.uint8)
    for (v, s), c in cells.items():
        y, x = variants.index(v) * (h + gap), seeds.index(s) * (w + gap)
        canvas[y:y + c.shape[0], x:x + c.shape[1]] = c
    path = os.path.join(out, "ablation_samples.png")
    atomic_write(path, lambda f: Image.fromarray(canvas).save(f, format="PNG"))
    return path


# what the loss curves say: the mean of each logged quantity over the first, middle and last sixth of a run
CURVE_KEYS = ("d_loss", "d_real", "d_fake", "g_adv", "rec", "w")


def _windows(steps: int) -> list[tuple[int, int]]:
    """(first, last) iteration of the run's first, middle and last sixth (1-based, inclusive)."""
    k = max(1, steps // 6)
    mid = (steps - k) // 2
    return [(1, k), (mid + 1, mid + k), (steps - k + 1, steps)]


def loss_windows(csv_path: str, steps: int) -> dict:
    """One run's losses.csv (the trainer's log: a row every log_every iterations) -> {key: [mean over each of
    _windows(steps)]}; NaN where a window holds no logged row."""
    import csv

    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r.get("step", "").strip().isdigit()]
    out = {}
    for key in CURVE_KEYS:
        vals = []
        for lo, hi in _windows(steps):
            xs = [float(r[key]) for r in rows if lo <= int(r["step"]) <= hi and r.get(key) not in (None, "")]
            vals.append(sum(xs) / len(xs) if xs else float("nan"))
        out[key] = vals
    out["windows"] = _windows(steps)
    return out


def _mean_windows(per_seed: list[dict]) -> dict:
    """The seeds' loss_windows averaged key by key."""
    out = {"windows": per_seed[0]["windows"], "n": len(per_seed)}
    for key in CURVE_KEYS:
        cols = list(zip(*(w[key] for w in per_seed)))
        out[key] = [sum(c) / len(c) for c in cols]
    return out


def curves_table(curves: dict) -> str:
    """Markdown: per variant and quantity, its mean over the run's first / middle / last sixth (seed mean).
    2 ln 2 = 1.386 is D's loss when it cannot tell real from generated pairs."""
    if not curves:
        return ""
    win = next(iter(curves.values()))["windows"]
    head = " | ".join(f"it {lo}-{hi}" for lo, hi in win)
    lines = [f"| variant | quantity | {head} |", "|---|---|" + "---|" * len(win)]
    for v, c in curves.items():
        for key in CURVE_KEYS:
            lines.append(f"| {v} | {key} | " + " | ".join(f"{x:.3f}" for x in c[key]) + " |")
    return "\n".join(lines) + "\n\n(loss-curve means over the first, middle and last sixth of each run; mean over seeds)\n"


_ABLATION_KEYS = ("fid", "precision", "recall", "density", "coverage", "modes_covered", "modes_covered_at_threshold",
                  "kl_gen_data")


def _summarize(runs: list[dict]) -> dict:
    import statistics

    out: dict = {}
    for r in runs:
        out.setdefault(r["variant"], {k: [] for k in _ABLATION_KEYS})
        for k in _ABLATION_KEYS:
            if k in r["metrics"]:
                out[r["variant"]][k].append(float(r["metrics"][k]))
    summary = {v: {k: {"mean": statistics.fmean(xs), "std": statistics.stdev(xs) if len(xs) > 1 else 0.0,
                       "n": len(xs)} for k, xs in d.items() if xs} for v, d in out.items()}
    ceiling = next((r["ceiling"] for r in runs if r.get("ceiling")), None)
    if ceiling:  # held-out real vs held-out real at the same n: the best any model can score
        summary["real vs real (ceiling)"] = {k: {"mean": float(ceiling[k]), "std": 0.0, "n": 1}
                                             for k in _ABLATION_KEYS if k in ceiling}
    return summary


def ablation_table(summary: dict, n_seeds: int) -> str:
    """Markdown: one row per variant, mean +- std (sample std over seeds) per metric."""
    keys = [k for k in _ABLATION_KEYS if any(k in s for s in summary.values())]
    lines = ["| variant | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for v, s in summary.items():
        lines.append(f"| {v} | " + " | ".join(
            "-" if k not in s else f"{s[k]['mean']:.3f}" + (f" +- {s[k]['std']:.3f}" if s[k]["n"] > 1 else "")
            for k in keys) + " |")
    return "\n".join(lines) + f"\n\n(mean +- std over {n_seeds} seeds)\n"


# recipe probes: short GAN-stage runs on the shipped default model's autoencoder, for choosing the recipe by
# measurement (README: "Recipe probes"). Overrides (JSON): "gen" (GeneratorConfig fields over SHAPES_GENERATOR),
# "scale" (latent scale), "T", "ngf" and "disc" (discriminator), "images", "eval_every", "n_eval", "from_shipped"
# (true: continue the shipped model's generator instead of a new one), and any TrainConfig field ("steps", "lr_d", "d_augment", ...).
PROBE_TRAIN = dict(steps=2000, batch_size=32, lr_g=2e-4, lr_d=1.25e-4, r1_gamma=0.02, lazy_reg=15, ema_decay=0.999,
                   ema_warmup=True, seed=0)


def run_probe(out: str, overrides: dict, log=None, progress=None) -> list[dict]:
    """Train the GAN stage with `overrides` and evaluate the EMA model (n_eval samples vs held-out shapes) every
    eval_every iterations; rows go to <out>/log.jsonl and are returned. Not resumable: a probe is minutes to an
    hour; the model of the last evaluation is <out>/model.safetensors (fp16). `progress(step, steps, logs)` is
    called after each iteration (the command line passes its ProgressBar)."""
    from ..hub.shipped import DEFAULT_MODEL
    from ..model import load_model
    from ..eval.diagnose import chain_check_start
    from ..train.trainer import GANTrainer

    log = log or (lambda m: print(m, file=sys.stderr, flush=True))
    ov = dict(overrides)
    os.makedirs(out, exist_ok=True)
    base = load_model(DEFAULT_MODEL)
    x, _ = make_shapes(int(ov.pop("images", SHAPES_RECIPE.images)), TRAIN_SEED, 32)
    with training_mode():
        lat = build_latents(base.autoencoder, 32, images=to_model_range(x), seed=0,
                            cache_dir=os.path.join(out, "cache"), log=log)
    if ov.pop("from_shipped", False):  # continue the shipped generator (its scale and T; a fresh D)
        if {"gen", "T", "scale"} & set(ov):
            raise InputError("probe: from_shipped keeps the shipped generator; gen, T and scale cannot be set")
        model = base
    else:
        gen = {**SHAPES_RECIPE.generator_fields(), **ov.pop("gen", {})}
        model = new_model(base, gen, lat, num_timesteps=int(ov.pop("T", SHAPES_RECIPE.timesteps)), seed=0,
                          scale_factor=ov.pop("scale", SHAPES_RECIPE.scale_factor or "auto"))
    disc = {**default_discriminator(model.latent_shape, ngf=int(ov.pop("ngf", SHAPES_RECIPE.disc_ngf))),
            **ov.pop("disc", {})}
    eval_every, n_eval = int(ov.pop("eval_every", 500)), int(ov.pop("n_eval", 1000))
    cfg = TrainConfig(**{**PROBE_TRAIN, **ov})
    tr = GANTrainer(model, lat, cfg, disc_config=disc)
    rows, acc, train_s = [], {}, 0.0
    with open(os.path.join(out, "log.jsonl"), "a", encoding="utf-8") as f:
        while tr.step < cfg.steps:
            t0 = time.perf_counter()
            logs = tr.train_step()
            train_s += time.perf_counter() - t0
            for k in ("d_loss", "g_adv", "rec"):
                acc.setdefault(k, []).append(logs[k])
            if progress is not None:
                progress(tr.step, cfg.steps, logs)
            if tr.step % eval_every and tr.step != cfg.steps:
                continue
            m = tr.export_model()
            g = evaluate_model(m, n=n_eval, seed=0)["generated"]
            one = chain_check_start(m, 1, n=n_eval)
            row = {"step": tr.step, "train_s": round(train_s), "w": round(logs["w"], 4),
                   **{k: round(sum(v[-200:]) / len(v[-200:]), 4) for k, v in acc.items()},
                   **{k: g[k] for k in ("fid", "precision", "recall", "density", "coverage",
                                        "modes_covered_at_threshold", "kl_gen_data", "unrecognised") if k in g},
                   "one_step": {k: one[k] for k in ("fid", "precision", "recall")},
                   "d_per_t": tr.d_margins()}
            rows.append(row)
            f.write(json.dumps(row) + "\n")
            f.flush()
            log(json.dumps(row))
            m.save(os.path.join(out, "model.safetensors"), dtype="fp16")
    return rows


def _fresh_check_dir(out: str) -> str:
    """<out>/data for a fine-tune check: refused when <out>/data or <out>/run already hold files (old pictures would
    join the training set and an old run would be resumed, so neither the time nor the scores would mean anything)."""
    for part in ("data", "run"):
        path = os.path.join(out, part)
        if os.path.isdir(path) and os.listdir(path):
            raise InputError(f"out: {path} is not empty (an earlier check?); choose a new --out")
    data = os.path.join(out, "data")
    os.makedirs(data, exist_ok=True)
    return data


def _timed_finetune(cmd: list, threads: int | None, log) -> float:
    """Run the user's `lddgan finetune` command (a child process; `threads` sets its OMP_NUM_THREADS), return its
    wall time in seconds; a failed command is a FinetuneFailed with its exit status."""
    import subprocess

    env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
    log("running: " + " ".join(cmd))
    t0 = time.perf_counter()
    rc = subprocess.run(cmd, env=env).returncode
    if rc != 0:
        raise FinetuneFailed(rc)
    return time.perf_counter() - t0


class FinetuneFailed(Exception):
    """`lddgan finetune` exited with a non-zero status (its own message is already on stderr)."""

    def __init__(self, returncode: int):
        super().__init__(f"lddgan finetune failed with exit status {returncode}")
        self.returncode = returncode


def run_finetune_mode(out: str, mode: int, *, n_images: int = 50, data_seed: int = 5, n_eval: int = 1000,
                      finetune_args=(), threads: int | None = None, log=None) -> dict:
    """The few-image fine-tuning check: n_images shapes of one mode (dataset `data_seed`) written as PNGs to
    <out>/data, then the user's command `lddgan finetune --data <out>/data --out <out>/run [finetune_args]` (its
    defaults: the shipped default model, D augmentation on), timed, then evaluate_mode on n_eval samples against
    n_eval held-out images of that mode. Writes and returns <out>/result.json."""
    from PIL import Image

    from ..data.shapes import mode_images, mode_name
    from ..eval.evaluate import evaluate_mode
    from ..model import load_model

    log = log or (lambda m: print(m, file=sys.stderr, flush=True))
    images = mode_images(mode, n_images, data_seed)
    data = _fresh_check_dir(out)
    for i, img in enumerate(images):
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(os.path.join(data, f"{i:03d}.png"))
    cmd = [sys.executable, "-m", "lddgan_core", "finetune", "--data", data, "--out", os.path.join(out, "run"), "-q",
           *finetune_args]
    seconds = _timed_finetune(cmd, threads, log)
    ev = evaluate_mode(load_model(os.path.join(out, "run", "model.safetensors")), mode, n=n_eval)
    row = {"mode": mode, "mode_name": mode_name(mode), "images": n_images, "finetune_args": list(finetune_args),
           "seconds": round(seconds, 1), **ev}
    atomic_write_text(os.path.join(out, "result.json"), json.dumps(row, indent=1))
    log(json.dumps(row))
    return row


def run_finetune_emoji(out: str, group: str, *, n_images: int = 50, n_eval: int = 500, finetune_args=(),
                       threads: int | None = None, log=None) -> dict:
    """The few-image fine-tuning check on the emoji model: the first n_images training emoji of one Unicode group
    (eval.emoji_eval.emoji_group_sets) written as PNGs to <out>/data, then the user's command `lddgan finetune
    --model emoji --data <out>/data --out <out>/run [finetune_args]` (its defaults), timed, then
    evaluate_emoji_group on n_eval samples of the shipped emoji model ("base") and of the fine-tuned one (same
    seeds). Writes <out>/result.json, <out>/samples.png (64 fine-tuned samples, seeds 0-63), <out>/base.png (the
    base model's, same seeds) and <out>/data.png (the fine-tune images); returns the result."""
    import torch
    from PIL import Image

    from ..data.images import make_grid, save_png
    from ..eval.emoji_eval import emoji_group_sets, evaluate_emoji_group, sample_images
    from ..hub.shipped import EMOJI_MODEL, resolve_model_path
    from ..model import load_model

    log = log or (lambda m: print(m, file=sys.stderr, flush=True))
    if isinstance(n_eval, bool) or not isinstance(n_eval, int) or n_eval < 64:
        raise InputError(f"n_eval: expected an integer >= 64, got {n_eval!r}")
    ft = emoji_group_sets(group, n_images)["finetune"]["images"]
    data = _fresh_check_dir(out)
    for i, img in enumerate(ft):
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(os.path.join(data, f"{i:03d}.png"))

    def grid(images, name):
        save_png(make_grid(images[:64].float() / 127.5 - 1, nrow=8), os.path.join(out, name))

    grid(ft, "data.png")
    cmd = [sys.executable, "-m", "lddgan_core", "finetune", "--model", EMOJI_MODEL, "--data", data,
           "--out", os.path.join(out, "run"), "-q", *finetune_args]
    seconds = _timed_finetune(cmd, threads, log)
    row = {"group": group, "images": n_images, "finetune_args": list(finetune_args), "seconds": round(seconds, 1)}
    for name, path in (("base", resolve_model_path(EMOJI_MODEL)), ("finetuned", os.path.join(out, "run",
                                                                                              "model.safetensors"))):
        with torch.no_grad():
            samples = sample_images(load_model(path), n_eval)
        grid(samples, "base.png" if name == "base" else "samples.png")
        row[name] = evaluate_emoji_group(samples, group, n_images)
    atomic_write_text(os.path.join(out, "result.json"), json.dumps(row, indent=1))
    log(json.dumps(row))
    return row


def _given(a: argparse.Namespace, flags) -> dict:
    """The flags given on the command line (not None), by their command-line names."""
    return {k: getattr(a, k) for k in flags if getattr(a, k) is not None}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m lddgan_core.recipes", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="recipe", required=True)
    s = sub.add_parser("shapes", help="the shipped default model (shapes data, 32 px)")
    s.add_argument("--out", required=True)
    s.add_argument("--quick", action="store_true", help="a tiny budget (smoke test of the pipeline)")
    _add_flags(s, SHAPES_RECIPE, SHAPES_FLAGS)
    s.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], default=None, help=f"default {SHAPES_RECIPE.dtype}")
    s.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    e = sub.add_parser("emoji", help="the emoji model (Noto Color Emoji, 64 px)")
    e.add_argument("--out", required=True)
    e.add_argument("--quick", action="store_true", help="a tiny budget on 64 pictures (smoke test of the pipeline)")
    _add_flags(e, EMOJI_RECIPE, EMOJI_FLAGS)
    e.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], default=None, help=f"default {EMOJI_RECIPE.dtype}")
    e.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    b = sub.add_parser("ablation", help="the Weighted Learning ablation (3 variants x seeds, evaluated)")
    b.add_argument("--out", required=True)
    b.add_argument("--autoencoder", required=True, help="e.g. <shapes run>/autoencoder/autoencoder.safetensors")
    b.add_argument("--seeds", default="0,1,2")
    b.add_argument("--variants", default=",".join(ABLATION_VARIANTS))
    _add_flags(b, ABLATION_RECIPE, ABLATION_FLAGS)  # --scale-factor: default estimated, as the shipped model's
    b.add_argument("--threads", type=int, default=None)
    q = sub.add_parser("probe", help="a short GAN-stage run with recipe overrides, evaluated every N iterations")
    q.add_argument("--out", required=True)
    q.add_argument("--set", default="{}", help='overrides as JSON, e.g. \'{"gen": {"use_tanh": false}, "scale": 2.5, '
                                              '"ngf": 32, "steps": 3000}\'')
    q.add_argument("--threads", type=int, default=None)
    fm = sub.add_parser("finetune-mode", help="fine-tune the default model on N images of one shapes mode with "
                                              "`lddgan finetune` and its defaults; evaluate against that mode")
    fm.add_argument("--out", required=True)
    fm.add_argument("--mode", type=int, required=True, help="0..15 (0 = red circle; mode = shape * 4 + colour)")
    fm.add_argument("--images", type=int, default=50)
    fm.add_argument("--n-eval", type=int, default=1000)
    fm.add_argument("--threads", type=int, default=None)
    fm.add_argument("finetune_args", nargs=argparse.REMAINDER, help="after --: extra `lddgan finetune` arguments")
    fe = sub.add_parser("finetune-emoji", help="fine-tune the emoji model on N emoji of one Unicode group with "
                                               "`lddgan finetune` and its defaults; evaluate in-group share, "
                                               "quality and copying against the group's unseen emoji")
    fe.add_argument("--out", required=True)
    fe.add_argument("--group", required=True, help='a Unicode emoji group, e.g. "Animals & Nature"')
    fe.add_argument("--images", type=int, default=50)
    fe.add_argument("--n-eval", type=int, default=500)
    fe.add_argument("--threads", type=int, default=None)
    fe.add_argument("finetune_args", nargs=argparse.REMAINDER, help="after --: extra `lddgan finetune` arguments")
    mc = sub.add_parser("mode-ceiling", help="a model's own samples of one shapes mode (classified from a pool) "
                                             "against held-out images of that mode: what selecting the mode "
                                             "without redrawing it scores (JSON line per mode)")
    mc.add_argument("--mode", required=True, help="comma list of modes 0..15")
    mc.add_argument("--model", default=None, help="model file (default: the shipped default model)")
    mc.add_argument("--pool", type=int, default=8000, help="samples drawn (seeds 0..pool-1)")
    mc.add_argument("--n-real", type=int, default=1000, help="held-out images of the mode")
    mc.add_argument("--references", action="store_true",
                    help="also score real images of the mode (dataset seed 5) and their autoencoder "
                         "reconstructions against the same held-out images: the upper bounds (source real / "
                         "autoencoder)")
    mc.add_argument("--threads", type=int, default=None)
    dg = sub.add_parser("diagnose", help="where a shapes model loses quality: the sampler started from real x_k "
                                         "(k = T..0), and the decoder on perturbed latents (JSON lines)")
    dg.add_argument("--model", default=None, help="model file (default: the shipped default model)")
    dg.add_argument("--n", type=int, default=1000, help="images per evaluation")
    dg.add_argument("--mode", type=int, default=None,
                    help="0..15: start from images of one shapes mode and score against 1,000 held-out images of "
                         "it (for a model fine-tuned on that mode)")
    dg.add_argument("--threads", type=int, default=None)
    ds = sub.add_parser("d-separation", help="can a fresh discriminator tell real pairs from the frozen model's "
                                              "(or from blurred / noised real latents)? held-out accuracy per t "
                                              "(JSON lines)")
    ds.add_argument("--model", default=None, help="model file (default: the shipped default model)")
    ds.add_argument("--fake", default="model", choices=["model", "blur", "noise"],
                    help="model: the frozen G's posterior samples; blur / noise: real x_0 with a 3x3 box blur / "
                         "noise 0.2 x std (controls)")
    ds.add_argument("--steps", type=int, default=1500)
    ds.add_argument("--batch", type=int, default=16)
    ds.add_argument("--lr", type=float, default=1e-4, help="D's Adam learning rate (the fine-tune's)")
    ds.add_argument("--ngf", type=int, default=64,
                    help="D's width (64: the fine-tune's default D; the shapes recipe trains with 32)")
    ds.add_argument("--eval-every", type=int, default=500)
    ds.add_argument("--threads", type=int, default=None)
    a = p.parse_args(argv)
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)

    if a.recipe == "d-separation":
        from ..eval.diagnose import d_separation
        from ..hub.shipped import DEFAULT_MODEL
        from ..model import load_model

        try:
            if a.ngf < 1:
                raise InputError(f"--ngf: expected an integer >= 1, got {a.ngf}")
            model = load_model(a.model or DEFAULT_MODEL)
            rows = d_separation(model, fake=a.fake, steps=a.steps, batch=a.batch, lr=a.lr, eval_every=a.eval_every,
                                disc_config=default_discriminator(model.latent_shape, ngf=a.ngf),
                                log=lambda m: print(m, file=sys.stderr, flush=True))
        except InputError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        for row in rows:
            print(json.dumps(row), flush=True)
        return 0
    if a.recipe == "diagnose":
        from ..eval.diagnose import chain_check, latent_sensitivity
        from ..hub.shipped import DEFAULT_MODEL
        from ..model import load_model

        if a.mode is not None and not 0 <= a.mode < 16:
            print(f"error: --mode: expected an integer 0..15, got {a.mode}", file=sys.stderr)
            return 2
        if a.n < 10:
            print(f"error: --n: expected at least 10 (the k-NN metrics need them), got {a.n}", file=sys.stderr)
            return 2
        model = load_model(a.model or DEFAULT_MODEL)
        for row in chain_check(model, a.n, mode=a.mode) + latent_sensitivity(model, a.n, mode=a.mode):
            print(json.dumps(row), flush=True)
        return 0
    if a.recipe == "mode-ceiling":
        from ..data.shapes import mode_name, NUM_MODES
        from ..eval.evaluate import Featurizer, mode_ceiling, mode_references
        from ..hub.shipped import DEFAULT_MODEL
        from ..model import load_model

        try:
            modes = [int(m) for m in a.mode.split(",")]
            if not modes or not all(0 <= m < NUM_MODES for m in modes):
                raise ValueError
        except ValueError:
            print(f"error: --mode: expected a comma list of integers 0..15, got {a.mode!r}", file=sys.stderr)
            return 2
        for what, n in (("--pool", a.pool), ("--n-real", a.n_real)):
            if n < 10:
                print(f"error: {what}: expected at least 10 (the k-NN metrics need them), got {n}", file=sys.stderr)
                return 2
        model = load_model(a.model or DEFAULT_MODEL)
        fz = Featurizer("shapes", device=model.device)
        for row in mode_ceiling(model, modes, pool=a.pool, n_real=a.n_real, featurizer=fz):
            print(json.dumps({"mode_name": mode_name(row["mode"]), "source": "samples", **row}), flush=True)
        if a.references:
            for row in mode_references(model, modes, n_real=a.n_real, featurizer=fz):
                print(json.dumps({"mode_name": mode_name(row["mode"]), **row}), flush=True)
        return 0
    if a.recipe in ("finetune-emoji", "finetune-mode"):
        extra = [x for x in a.finetune_args if x != "--"]
        try:
            if a.recipe == "finetune-emoji":
                run_finetune_emoji(a.out, a.group, n_images=a.images, n_eval=a.n_eval, finetune_args=extra,
                                   threads=a.threads)
            else:
                run_finetune_mode(a.out, a.mode, n_images=a.images, n_eval=a.n_eval, finetune_args=extra,
                                  threads=a.threads)
        except InputError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except FinetuneFailed as e:
            print(f"error: {e}", file=sys.stderr)
            return e.returncode
        return 0
    if a.recipe == "probe":
        try:
            overrides = json.loads(a.set)
        except ValueError as e:
            print(f"error: --set is not JSON: {e}", file=sys.stderr)
            return 2
        if not isinstance(overrides, dict):
            print("error: --set must be a JSON object", file=sys.stderr)
            return 2
        run_probe(a.out, overrides, progress=ProgressBar("steps", every=100))
        return 0
    if a.recipe == "ablation":
        with StopFlag() as stop:
            try:
                recipe = ABLATION_RECIPE.with_arguments(**_given(a, ABLATION_FLAGS))
                res = run_ablation(a.out, a.autoencoder, recipe, seeds=[int(s) for s in a.seeds.split(",")],
                                   variants=a.variants.split(","),
                                   progress_factory=lambda: ProgressBar("steps", every=250),
                                   should_stop=stop)
            except KeyboardInterrupt as e:
                print(str(e), file=sys.stderr)
                return 130
        print(ablation_table(res["summary"], len(a.seeds.split(","))))
        return 0
    if a.recipe == "emoji":
        recipe = EMOJI_RECIPE.with_arguments(**EMOJI_QUICK) if a.quick else EMOJI_RECIPE
        recipe = recipe.with_arguments(**_given(a, {**EMOJI_FLAGS, "dtype": "dtype"}))
        run = lambda stop: train_emoji(a.out, recipe, limit=64 if a.quick else None,  # noqa: E731
                                       progress=ProgressBar("steps", every=50), should_stop=stop)
    else:
        recipe = SHAPES_RECIPE.with_arguments(**SHAPES_QUICK) if a.quick else SHAPES_RECIPE
        recipe = recipe.with_arguments(**_given(a, {**SHAPES_FLAGS, "dtype": "dtype"}))
        run = lambda stop: train_shapes(a.out, recipe, progress=ProgressBar("steps", every=50),  # noqa: E731
                                        should_stop=stop)
    with StopFlag() as stop:
        try:
            path = run(stop)
        except KeyboardInterrupt as e:
            print(str(e), file=sys.stderr)
            return 130
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
