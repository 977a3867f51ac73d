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

import copy
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


D_FAKES = ("model", "blur", "noise")


def _d_fake_x0(kind: str, G, x0, x_tp1, t, g) -> torch.Tensor:
    """The x_0 estimate a fake pair is built from: G's prediction (the model), or a perturbed real x_0 (controls
    with a known, visible difference: a 3x3 box blur, or noise 0.2 x the latents' std)."""
    if kind == "model":
        return G(x_tp1, t, torch.randn(x0.shape[0], G.cfg.nz, generator=g)).float()
    if kind == "blur":
        return F.avg_pool2d(x0, 3, 1, 1, count_include_pad=False)
    return x0 + 0.2 * float(x0.std()) * torch.randn(x0.shape, generator=g)


def d_separation(model, *, fake: str = "model", steps: int = 1500, batch: int = 16, lr: float = 1e-4,
                 r1_gamma: float = 0.02, lazy_reg: int = 15, n_train: int = 4000, n_test: int = 512,
                 eval_every: int = 500, seed: int = 0, disc_config: dict | None = None, log=None) -> list[dict]:
    """Can the training discriminator tell real pairs (x_t, x_{t+1}) from fake ones when the generator stands still?

    A fresh D (the fine-tune's: ``default_discriminator`` of the latent shape, or `disc_config`) is trained alone,
    with the trainer's D loss (softplus, lazy R1 on real x_t, Adam betas 0.5 / 0.9), on `n_train` shapes training
    images against fakes: "model" = posterior samples from the model's frozen G (what D faces at the start of a
    fine-tune), "blur" / "noise" = posterior samples from a blurred / noised real x_0 (controls: a difference the
    decoded images show plainly, latent_sensitivity). t is uniform over the T steps, as in training. Rows every
    `eval_every` steps (and at 0 and the end): held-out accuracy ((P(D(real) > 0) + P(D(fake) < 0)) / 2; 0.5 =
    chance), mean logits and the RMS distance of the fakes' x_0 estimate from the real x_0 per t, on `n_test`
    held-out images with fixed draws."""
    from ..data.shapes import TRAIN_SEED
    from ..diffusion.schedule import q_sample_pairs
    from ..nets.discriminator import build_discriminator
    from ..train.config import default_discriminator
    from ..train.losses import d_fake_loss, d_real_loss, r1_penalty

    if fake not in D_FAKES:
        raise InputError(f"fake: expected one of {list(D_FAKES)}, got {fake!r}")
    for name, v, lo in (("steps", steps, 0), ("batch", batch, 2), ("n_train", n_train, 2), ("n_test", n_test, 8),
                        ("eval_every", eval_every, 1), ("lazy_reg", lazy_reg, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise InputError(f"{name}: expected an integer >= {lo}, got {v!r}")
    model = _model(model)
    log = log or (lambda m: None)
    size, sf, T = model.config.image_size, model.scale_factor, model.num_timesteps
    with torch.inference_mode(False), torch.enable_grad():
        x_train = model.encode(to_model_range(make_shapes(n_train, TRAIN_SEED, size)[0])).clone() / sf
        x_test = model.encode(to_model_range(make_shapes(n_test, DATA_SEED, size)[0])).clone() / sf
        G = copy.deepcopy(model.generator).float().eval().requires_grad_(False)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            D = build_discriminator(disc_config or default_discriminator(tuple(x_train.shape[1:]))).train()
        opt = torch.optim.Adam(D.parameters(), lr=lr, betas=(0.5, 0.9))

        def pairs(x0, g):
            t = torch.randint(0, T, (x0.shape[0],), generator=g)
            x_t, x_tp1 = q_sample_pairs(model.coefficients, x0, t, torch.randn(x0.shape, generator=g),
                                        torch.randn(x0.shape, generator=g))
            with torch.no_grad():
                x0_fake = _d_fake_x0(fake, G, x0, x_tp1, t, g)
                x_fake = posterior_sample(model.posterior, x0_fake, x_tp1, t, torch.randn(x0.shape, generator=g))
            return t, x_t, x_tp1, x_fake, x0_fake

        *test, x0_fake = pairs(x_test, torch.Generator().manual_seed(seed + 1))
        tt = test[0]
        # how far the fakes' x_0 estimate is from the real x_0 (RMS per t, diffusion space): the size of the
        # difference D is asked to see (the controls' is fixed; the model's is its x_0 prediction error)
        x0_rms = {k: round(float((x0_fake[tt == k] - x_test[tt == k]).pow(2).mean().sqrt()), 4)
                  for k in range(T) if (tt == k).any()}
        g = torch.Generator().manual_seed(seed + 2)
        rows = []
        for s in range(steps + 1):
            if s % eval_every == 0 or s == steps:
                with torch.no_grad():
                    t, x_t, x_tp1, x_fake = test
                    lr_, lf_ = D(x_t, t, x_tp1).flatten(), D(x_fake, t, x_tp1).flatten()
                row = {"fake": fake, "step": s, "accuracy": round(float(((lr_ > 0).float().mean()
                                                                         + (lf_ < 0).float().mean()) / 2), 4)}
                for k in range(T):
                    sel = t == k
                    if sel.any():
                        row[f"t{k}"] = {"accuracy": round(float(((lr_[sel] > 0).float().mean()
                                                                 + (lf_[sel] < 0).float().mean()) / 2), 4),
                                        "real_logit": round(float(lr_[sel].mean()), 4),
                                        "fake_logit": round(float(lf_[sel].mean()), 4), "x0_rms": x0_rms[k]}
                rows.append(row)
                log(f"d-separation {fake} step {s}: accuracy {row['accuracy']:.3f} ("
                    + ", ".join(f"t{k} {row[f't{k}']['accuracy']:.3f}" for k in range(T) if f"t{k}" in row) + ")")
            if s == steps:
                break
            idx = torch.randint(0, n_train, (batch,), generator=g)
            t, x_t, x_tp1, x_fake, _ = pairs(x_train[idx], g)
            x_t.requires_grad_(True)
            real = D(x_t, t, x_tp1)
            loss = d_real_loss(real) + d_fake_loss(D(x_fake, t, x_tp1))
            if r1_gamma > 0 and s % lazy_reg == 0:
                loss = loss + r1_penalty(real, x_t, r1_gamma)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return rows
