"""LDDGAN VAE: the model's autoencoder as a ComfyUI core VAE, so core VAE Encode / Decode work on
LDDGAN latents.

ComfyUI's ``comfy.sd.VAE`` auto-detects an LDM KL state dict only for the Stable Diffusion layout
(ch 128, ch_mult [1,2,4,4] or [1,2,4], 2 res blocks, no attention, no tanh): that is LDDGAN's LSUN KL-f8
autoencoder, and it is handed over as-is. Other KL autoencoders (the CIFAR-10 f=2 one: attention, tanh
output) are built by ComfyUI's own LDM ``AutoencoderKL`` from an explicit config. Either way the result is
checked: ComfyUI must load every weight and decode a probe latent like the library does, otherwise the
node fails instead of handing out a VAE that distorts. VQ autoencoders are refused: ComfyUI has no LDM VQ
model with codebook quantization.
"""
from __future__ import annotations

import torch

from .lib import L
from .model_nodes import MODEL_TYPE

PROBE_TOLERANCE = {torch.float32: 2e-3, torch.float16: 3e-2, torch.bfloat16: 6e-2}  # max abs, images 0..1


def ldm_ddconfig(cfg) -> dict:
    """Our AutoencoderConfig -> the LDM ``ddconfig`` dict ComfyUI's Encoder / Decoder take."""
    return {"double_z": cfg.double_z, "z_channels": cfg.z_channels, "resolution": cfg.resolution,
            "in_channels": cfg.in_channels, "out_ch": cfg.out_ch, "ch": cfg.ch, "ch_mult": list(cfg.ch_mult),
            "num_res_blocks": cfg.num_res_blocks, "attn_resolutions": list(cfg.attn_resolutions), "dropout": 0.0,
            "tanh_out": cfg.tanh_out}


def auto_detected(cfg) -> bool:
    """True when comfy.sd.VAE(sd) alone rebuilds this autoencoder (its Stable Diffusion VAE defaults)."""
    return (cfg.kind == "kl" and cfg.ch == 128 and tuple(cfg.ch_mult) in ((1, 2, 4, 4), (1, 2, 4))
            and cfg.num_res_blocks == 2 and not cfg.attn_resolutions and not cfg.tanh_out
            and cfg.in_channels == 3 and cfg.out_ch == 3)


def check_supported(model) -> None:
    cfg = model.config.autoencoder
    if cfg.kind != "kl":
        raise L.InputError(
            f"model: its autoencoder is VQ (f={cfg.downsample_factor}, {cfg.n_embed} codes); ComfyUI's core VAE "
            f"has no LDM VQ model that quantizes to the codebook, so it would decode these latents wrongly. Use "
            f"LDDGAN Decode / LDDGAN Encode instead")


def to_comfy_vae(model):
    """A comfy.sd.VAE holding this model's (KL) autoencoder; raises InputError where that is not faithful."""
    check_supported(model)
    try:
        import comfy.sd
    except ImportError:
        raise L.InputError("LDDGAN VAE needs ComfyUI (comfy.sd); outside ComfyUI use LDDGAN Decode / Encode") from None
    cfg = model.config.autoencoder
    sd = {k: v.detach().to("cpu", copy=True) for k, v in model.autoencoder.state_dict().items()}
    f = cfg.downsample_factor
    if auto_detected(cfg):
        vae = comfy.sd.VAE(sd=sd)
    else:
        vae = comfy.sd.VAE(sd=sd, config={"params": {"ddconfig": ldm_ddconfig(cfg), "embed_dim": cfg.embed_dim}})
        # VAE() assumes SD's f=8 and 4 channels unless it detected the model itself; these attributes drive
        # VAE Encode's cropping and tiling.
        vae.downscale_ratio = vae.upscale_ratio = f
        vae.latent_channels = cfg.embed_dim
    _verify(vae, model, sd)
    return vae


def _verify(vae, model, sd) -> None:
    theirs = set(vae.first_stage_model.state_dict())
    missing, extra = sorted(set(sd) - theirs), sorted(theirs - set(sd))
    if missing or extra:
        raise L.InputError(f"model: ComfyUI's VAE does not match this autoencoder's layout (weights it lacks: "
                           f"{missing[:10]}, weights it expects: {extra[:10]}); use LDDGAN Decode / Encode")
    a = model.config.autoencoder
    if vae.downscale_ratio != a.downsample_factor or vae.latent_channels != a.embed_dim:
        raise L.InputError(f"model: ComfyUI detected factor {vae.downscale_ratio} / {vae.latent_channels} channels, "
                           f"expected {a.downsample_factor} / {a.embed_dim}; use LDDGAN Decode / Encode")
    C, h, w = model.latent_shape
    probe = torch.randn(1, C, max(2, h // 2), max(2, w // 2), generator=torch.Generator().manual_seed(0))
    ours = ((model.decode(probe).float().cpu() + 1) / 2).clamp(0, 1).movedim(1, -1)
    got = vae.decode(probe).float().cpu()
    err = (ours - got).abs().max().item() if got.shape == ours.shape else float("inf")
    tol = max(PROBE_TOLERANCE.get(vae.vae_dtype, 6e-2), PROBE_TOLERANCE.get(model.dtype, 6e-2))
    if not err <= tol:
        raise L.InputError(f"model: ComfyUI's VAE decodes a probe latent {err:.3g} away from LDDGAN Decode "
                           f"(tolerance {tol:g}); use LDDGAN Decode / Encode")


class LDDGANVAE:
    CATEGORY = "LDDGAN"
    FUNCTION = "get_vae"
    RETURN_TYPES = ("VAE",)
    RETURN_NAMES = ("vae",)
    OUTPUT_TOOLTIPS = ("The model's autoencoder as a core ComfyUI VAE (VAE Encode / VAE Decode, tiled variants, "
                       "previews) working on LDDGAN latents.",)
    DESCRIPTION = ("Hands the LDDGAN model's KL autoencoder to ComfyUI as a core VAE, after checking that ComfyUI "
                   "decodes exactly like the library. VQ autoencoders are refused with an error (ComfyUI cannot "
                   "quantize them).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": (MODEL_TYPE, {"tooltip": "The LDDGAN model from LDDGAN Model Loader."})}}

    def get_vae(self, model):
        return (to_comfy_vae(model),)
