"""Where a shapes model loses quality: two checks that separate the autoencoder, the generator's steps and the
sampling chain (README "Recipe probes"; `python -m lddgan_core.recipes diagnose --model M`).

chain_check: start the sampler from *real* states x_k ~ q(x_k | x_0) of held-out images (k = T: pure noise, the
normal sampler; k = 1: one generator step, the t = 0 denoiser; k = 0: the autoencoder's reconstruction) and run
the model's remaining steps. The step where quality drops is the one to fix.

latent_sensitivity: decode held-out latents after perturbations a generator could make: independent noise
(relative to the latents' spread), a spatial 3x3 box blur (what a regression-to-the-mean x_0 prediction looks
like) and the average of two latents. A decoder that tolerates noise but turns blurred latents into blobs tells
that blobby samples come from averaged predictions, not from the autoencoder.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from ..data.shapes import HELDOUT_SEED, make_shapes, mode_images, NUM_MODES, to_model_range
from ..diffusion.schedule import posterior_sample, q_sample
from ..errors import InputError
from ..model import LDDGAN, load_model
from ..data.images import quantize
from .evaluate import compare, evaluate_images, Featurizer

KEYS = ("fid", "precision", "recall", "coverage", "unrecognised")
DATA_SEED = HELDOUT_SEED + 10  # images the checks start from: held out, and not the evaluation's reference set
MODE_REAL = 1000  # held-out images of the mode a mode check compares with (as evaluate_mode)


def _model(model) -> LDDGAN:
    return load_model(model) if isinstance(model, str) else model


@functools.lru_cache(maxsize=1)
def _featurizer() -> Featurizer:
    return Featurizer("shapes")


@functools.lru_cache(maxsize=4)
def _mode_reference(mode: int) -> dict:
    """Features of MODE_REAL held-out images of `mode` (rendering them walks 32,000 shapes: done once per mode)."""
    return _featurizer()(mode_images(mode, MODE_REAL, HELDOUT_SEED))


def _summary(images: torch.Tensor, mode: int | None = None) -> dict:
    if mode is None:
        g = evaluate_images(images.clamp(-1, 1))["generated"]
    else:  # against held-out images of the mode, like evaluate_mode
        g = compare(_featurizer()(quantize(images)), _mode_reference(mode))
    return {k: round(float(g[k]), 4) for k in KEYS}


def _latents(model: LDDGAN, n: int, mode: int | None = None) -> torch.Tensor:
    if isinstance(n, bool) or not isinstance(n, int) or n < 10:
        raise InputError(f"n: expected an integer >= 10, got {n!r}")
    size = model.config.image_size
    if mode is None:
        x, _ = make_shapes(n, DATA_SEED, size)
    elif isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode < NUM_MODES:
        raise InputError(f"mode: expected an integer 0..{NUM_MODES - 1} or None, got {mode!r}")
    else:
        x = mode_images(mode, n, DATA_SEED, size)
    return model.encode(to_model_range(x))


@torch.no_grad()
def chain_check(model, n: int = 1000, seed: int = 0, starts=None, mode: int | None = None) -> list[dict]:
    """Rows {start, steps, fid, ...}: samples from real x_k (k in `starts`, default T .. 0), evaluated against
    held-out data. With `mode` (0..15; for a model fine-tuned on one shapes mode) the real states come from
    images of that mode and the rows are scored against 1,000 held-out images of it (as evaluate_mode)."""
    model = _model(model)
    lat = _latents(model, n, mode)
    z0 = lat / model.scale_factor
    G, T, nz = model.generator.eval(), model.num_timesteps, model.config.generator.nz
    rows = []
    for k in (range(T, -1, -1) if starts is None else starts):
        if not 0 <= k <= T:
            raise InputError(f"starts: steps must lie in 0..{T}, got {k!r}")
        g = torch.Generator().manual_seed(seed * 1000 + k)
        if k == T:
            x = torch.randn(z0.shape, generator=g)
        elif k > 0:
            x = q_sample(model.coefficients, z0, torch.full((n,), k), torch.randn(z0.shape, generator=g))
        else:
            x = z0
        for t in range(k - 1, -1, -1):
            tt = torch.full((n,), t)
            pred = G(x, tt, torch.randn(n, nz, generator=g))
            x = posterior_sample(model.posterior, pred, x, tt, torch.randn(z0.shape, generator=g))
        # k = 0 decodes the latents themselves (not z0 * scale_factor, which differs by float rounding)
        rows.append({"start": f"x_{k}", "steps": k, **_summary(model.decode(lat if k == 0 else x * model.scale_factor),
                                                               mode)})
    return rows


def chain_check_start(model, k: int, n: int = 1000, seed: int = 0) -> dict:
    """chain_check's row for one start x_k (k = 1: the t = 0 denoiser alone)."""
    return chain_check(model, n, seed, starts=(k,))[0]


@torch.no_grad()
def latent_sensitivity(model, n: int = 1000, seed: int = 0, noise=(0.05, 0.1, 0.2), mode: int | None = None
                       ) -> list[dict]:
    """Rows {perturbation, fid, ...}: decoded held-out latents, clean and perturbed (`mode`: as chain_check)."""
    model = _model(model)
    z = _latents(model, n, mode)
    g = torch.Generator().manual_seed(seed)
    cases = [("clean", z)]
    cases += [(f"noise {r:g} x std", z + r * float(z.std()) * torch.randn(z.shape, generator=g)) for r in noise]
    cases.append(("3x3 box blur", F.avg_pool2d(z, 3, 1, 1, count_include_pad=False)))
    cases.append(("mean of two latents", 0.5 * (z + z[torch.randperm(n, generator=g)])))
    return [{"perturbation": name, **_summary(model.decode(zz), mode)} for name, zz in cases]
