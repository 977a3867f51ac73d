"""LDDGAN Encode (IMAGE -> LATENT) and LDDGAN Decode (LATENT -> IMAGE) with the model's own autoencoder."""
from __future__ import annotations

from . import chunks, runtime
from .convert import (FIT_MODES, check_image_shape, fitted_size, image_to_model, latent_samples, model_to_image,
                      tag_latent)
from .lib import L
from .model_nodes import MODEL_TYPE


class LDDGANEncode:
    CATEGORY = "LDDGAN"
    FUNCTION = "encode"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("Latents in the autoencoder's own space (KL: the posterior mean; VQ: before "
                       "quantization), for LDDGAN Sampler (image-to-image) or LDDGAN Decode.",)
    DESCRIPTION = ("Encodes images with the LDDGAN model's autoencoder. Images of another size than the model's "
                   "are refused unless fit says how to crop / resize them (never stretched).")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL_TYPE, {"tooltip": "The LDDGAN model from LDDGAN Model Loader."}),
                "image": ("IMAGE", {"tooltip": "Images [B, H, W, 3], values 0..1 (an alpha channel is dropped)."}),
                "fit": (FIT_MODES, {"default": "error",
                                    "tooltip": "Images of a size other than the model's own (e.g. 32x32 px): "
                                               "'error' refuses them; 'center crop' crops to the nearest size "
                                               "the autoencoder and generator can take (a size the model was not "
                                               "trained at); 'crop and resize to model size' center-crops to a "
                                               "square and resizes to the model's size (aspect ratio kept)."}),
            },
        }

    def encode(self, model, image, fit="error"):
        check_image_shape(image, "image")
        if fit in FIT_MODES:  # refuse what cannot fit in memory before touching the pixels
            H, W = fitted_size(image, model, fit)
            need = chunks.encode_bytes(model, max(1, H), max(1, W))
            avail = runtime.available_memory(runtime.compute_device())
            if avail is not None and need > avail:
                raise L.InputError(
                    f"image: {W}x{H} px needs about {need / 2**30:.1f} GiB to encode (even one image at a time), "
                    f"but only {avail / 2**30:.1f} GiB is available on {runtime.compute_device()}; use a smaller "
                    f"image (e.g. fit='crop and resize to model size', or an upscale/downscale node first)")
        x = image_to_model(image, model, fit, "image")  # [B, 3, H, W] in [-1, 1]
        B, H, W = x.shape[0], x.shape[2], x.shape[3]
        pbar = runtime.progress_bar(B)
        with chunks.on_device(model) as device:
            first = chunks.chunk_size(B, chunks.encode_bytes(model, H, W), runtime.free_memory(device))
            lat = chunks.run_chunked(B, first, lambda a, b: model.encode(x[a:b].to(device)),
                                     on_done=lambda n: pbar.update_absolute(n, B),
                                     pace=chunks.Pace(chunks.encode_flops(model, H, W), device))
        return (tag_latent({"samples": lat}, model),)


class LDDGANDecode:
    CATEGORY = "LDDGAN"
    FUNCTION = "decode"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    OUTPUT_TOOLTIPS = ("Decoded images [B, H, W, 3], values 0..1.",)
    DESCRIPTION = ("Decodes LDDGAN latents to images with the model's own autoencoder (VQ models snap to the "
                   "codebook first), in chunks sized to free memory and to time (a progress tick and a Cancel check "
                   "about every second).")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL_TYPE, {"tooltip": "The LDDGAN model whose autoencoder made the latents."}),
                "latent": ("LATENT", {"tooltip": "Latents from LDDGAN Sampler or LDDGAN Encode ([B, C, h, w] in the "
                                                 "autoencoder's own, unscaled space)."}),
            },
        }

    def decode(self, model, latent):
        z = latent_samples(latent, model, "latent")
        B, h, w = z.shape[0], z.shape[2], z.shape[3]
        pbar = runtime.progress_bar(B)
        with chunks.on_device(model) as device:
            # the library's one planner, within the memory this node may use; the library runs the plan as given
            plan = model.plan_decode(z.shape, budget=chunks.budget(runtime.free_memory(device)))
            images = chunks.run_chunked(B, plan.chunk,
                                        lambda a, b: model_to_image(model.decode(z[a:b].to(device), plan=plan)),
                                        on_done=lambda n: pbar.update_absolute(n, B),
                                        pace=chunks.Pace(chunks.decode_flops(model, h, w), device))
        return (images,)
