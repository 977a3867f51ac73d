"""ComfyUI data <-> library tensors. The only place BHWC images and LATENT dicts are handled.

IMAGE  [B, H, W, 3] float 0..1  <->  library images [B, 3, H, W] in [-1, 1]
LATENT {"samples": [B, C, h, w], "batch_index"?: [int], "lddgan_latent_space"?: str}  in the autoencoder's own,
       unscaled space; LDDGAN nodes tag the latents they make with the identity of the autoencoder that defines
       that space (core latent nodes copy the dict, so the tag travels through them)
"""
from __future__ import annotations

import hashlib
import json

import torch
import torch.nn.functional as F

from .lib import L, check_latent, seeds_for_batch

FIT_MODES = ["error", "center crop", "crop and resize to model size"]


def image_multiple(model) -> int:
    """Pixel sizes must be multiples of this for the latent to fit the model: the autoencoder's factor f
    times the generator's 2^(levels-1)."""
    return model.config.autoencoder.downsample_factor * model.config.generator.size_multiple


def check_image_shape(image, name: str = "image") -> None:
    """An IMAGE [B, H, W, 3|4] with at least one image of at least one pixel."""
    if not torch.is_tensor(image) or image.ndim != 4 or image.shape[-1] not in (3, 4):
        raise L.InputError(f"{name}: expected an IMAGE tensor [B, H, W, 3] with values 0..1, got "
                           f"{tuple(image.shape) if torch.is_tensor(image) else type(image).__name__}")
    if image.shape[0] == 0:
        raise L.InputError(f"{name}: the batch is empty (0 images); connect at least one image")
    if image.shape[1] == 0 or image.shape[2] == 0:
        raise L.InputError(f"{name}: the image has zero size ({image.shape[2]}x{image.shape[1]} px)")


# IMAGE values are 0..1; resampling may overshoot a little (clamped), anything far outside is another convention
VALUE_SLACK = 0.5


def check_image_values(image, name: str = "image") -> None:
    """Refuse values far outside 0..1 (0..255 or -1..1 images) instead of clamping them into garbage; NaN / Inf
    too."""
    x = image[..., :3]
    if not bool(torch.isfinite(x).all()):
        raise L.InputError(f"{name}: holds NaN or infinite values")
    lo, hi = (float(v) for v in torch.aminmax(x.float()))
    if lo < -VALUE_SLACK or hi > 1 + VALUE_SLACK:
        hint = " (0..255 pixel values? divide by 255)" if hi > 1 + VALUE_SLACK and hi <= 255.5 and lo >= -0.5 else ""
        raise L.InputError(f"{name}: values range from {lo:g} to {hi:g}, but IMAGE values must be 0..1{hint}")


def fitted_size(image, model, fit: str) -> tuple[int, int]:
    """(H, W) in pixels that ``image_to_model`` will hand to the model, found without touching the pixels."""
    H, W = int(image.shape[1]), int(image.shape[2])
    if fit == "crop and resize to model size":
        return model.config.image_size, model.config.image_size
    if fit == "center crop":
        m = image_multiple(model)
        return H // m * m, W // m * m
    return H, W


def image_to_model(image, model, fit: str = "error", name: str = "image") -> torch.Tensor:
    """IMAGE [B, H, W, C>=3] 0..1 -> [B, 3, H', W'] in [-1, 1], fitted to the model as ``fit`` says."""
    check_image_shape(image, name)
    if fit not in FIT_MODES:
        raise L.InputError(f"fit: expected one of {FIT_MODES}, got {fit!r}")
    check_image_values(image, name)
    x = image[..., :3].float().movedim(-1, 1)  # alpha, if any, is dropped as core VAE Encode does
    H, W = x.shape[2:]
    m = image_multiple(model)
    if fit == "error":
        size = model.config.image_size
        if (H, W) != (size, size):
            raise L.InputError(
                f"{name}: {W}x{H} px does not fit this model: fit='error' takes only the model's own size, "
                f"{size}x{size} px. Choose fit='crop and resize to model size' (a centred square, resized), or "
                f"'center crop' (crops to the nearest size whose width and height are multiples of {m}, for "
                f"sizes the model was not trained at), or resize the image first")
    elif fit == "center crop":
        h2, w2 = H // m * m, W // m * m
        if h2 == 0 or w2 == 0:
            raise L.InputError(f"{name}: {W}x{H} px is smaller than the smallest size this model takes "
                               f"({m}x{m}); use fit='crop and resize to model size'")
        top, left = (H - h2) // 2, (W - w2) // 2
        x = x[:, :, top:top + h2, left:left + w2]
    else:  # crop to the model's (square) aspect first, so resizing never changes the aspect ratio
        s = min(H, W)
        top, left = (H - s) // 2, (W - s) // 2
        x = x[:, :, top:top + s, left:left + s]
        size = model.config.image_size
        if s != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return (x * 2.0 - 1.0).clamp(-1.0, 1.0).contiguous()


def model_to_image(x: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] in [-1, 1] -> IMAGE [B, H, W, 3] 0..1 (clamped)."""
    return ((x.float() + 1.0) / 2.0).clamp(0.0, 1.0).movedim(1, -1).contiguous()


LATENT_TAG = "lddgan_latent_space"  # extra LATENT key: latent_space_id() of the model whose autoencoder made it
_ID_ELEMENTS = 64  # leading elements of each autoencoder tensor that enter the identity
_ID_PROJECTIONS = 4
_ID_TOLERANCE = 0.02  # precision changes move a projection by < 0.005; other weights by ~1 (they are ~N(0, 1))


def latent_space_id(model) -> str:
    """The identity of the latent space a model's autoencoder defines: 'ae-<hash of its config>:p1,p2,p3,p4',
    where p_k are fixed random +-1 projections of the leading elements of every autoencoder tensor, normalised
    to unit variance. The same weights at another precision (fp32 / fp16 / bf16) move them by far less than
    _ID_TOLERANCE, other weights move them by about 1. Fine-tuning trains only the generator, so a fine-tuned
    model shares its base model's latent space. Computed once per model object."""
    cached = getattr(model, "_lddgan_latent_space_id", None)
    if cached is not None:
        return cached
    cfg = hashlib.sha256(json.dumps(model.config.to_dict()["autoencoder"], sort_keys=True).encode()).hexdigest()
    with torch.no_grad():
        v = torch.cat([t.detach().reshape(-1)[:_ID_ELEMENTS].to("cpu", torch.float64)
                       for _k, t in sorted(model.autoencoder.state_dict().items()) if t.is_floating_point()])
        signs = torch.randint(0, 2, (_ID_PROJECTIONS, v.numel()), generator=torch.Generator().manual_seed(0))
        p = (signs.double() * 2 - 1) @ v / v.norm().clamp_min(1e-30)
    ident = f"ae-{cfg[:10]}:" + ",".join(f"{x:.4f}" for x in p.tolist())
    model._lddgan_latent_space_id = ident
    return ident


def same_latent_space(tag: str, model) -> bool:
    """Whether a LATENT tag names this model's latent space (same autoencoder config, projections within
    tolerance)."""
    mine = latent_space_id(model)
    try:
        cfg, proj = str(tag).split(":")
        ours_cfg, ours_proj = mine.split(":")
        a, b = [float(x) for x in proj.split(",")], [float(x) for x in ours_proj.split(",")]
    except ValueError:
        return False
    return cfg == ours_cfg and len(a) == len(b) and all(abs(x - y) <= _ID_TOLERANCE for x, y in zip(a, b))


def tag_latent(latent: dict, model) -> dict:
    """A LATENT dict made by ``model``, tagged with its latent-space identity."""
    return {**latent, LATENT_TAG: latent_space_id(model)}


def latent_samples(latent, model, name: str = "latent", for_sampling: bool = False) -> torch.Tensor:
    """The [B, C, h, w] tensor of a LATENT dict, checked against the model (and its tag, when it has one)."""
    if not isinstance(latent, dict) or not torch.is_tensor(latent.get("samples")):
        raise L.InputError(f"{name}: expected a LATENT (a dict with a 'samples' tensor), got {type(latent).__name__}")
    tag = latent.get(LATENT_TAG)
    if tag is not None and not same_latent_space(tag, model):
        raise L.InputError(
            f"{name}: these latents were made by another LDDGAN model's autoencoder (latent space {tag}; this "
            f"model's, {model.config.name!r}, is {latent_space_id(model)}), so decoding or sampling them with "
            f"this model gives noise. Connect the same LDDGAN Model Loader that made them (latents from core "
            f"nodes or Load Latent carry no tag and are accepted)")
    s = latent["samples"]
    check_latent(s, model.latent_shape, name, multiple=model.config.generator.size_multiple if for_sampling else 1,
                 plain=True, hint=" (a latent made for another model or VAE? Use LDDGAN Encode / LDDGAN Sampler)")
    return s


def seeds_for(seed: int, batch: int, batch_index=None) -> list[int]:
    """Per-sample seeds: seed + batch_index[b] (seed + b without one), as ComfyUI core numbers samples,
    folded into torch's range by the library (``seeds_for_batch``, which checks batch_index's length)."""
    return seeds_for_batch(seed, batch, batch_index, "latent: batch_index")
