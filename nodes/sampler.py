"""LDDGAN Sampler: T-step sampling (text-free), image-to-image and variations -> LATENT."""
from __future__ import annotations

from . import chunks, runtime
from .preview import Previews
from .convert import latent_samples, seeds_for, tag_latent
from .lib import L, MAX_SEED, start_step_for
from .model_nodes import MODEL_TYPE

MAX_BATCH = 4096  # images per run; the work itself is chunked to memory and time, this bounds the output size


class LDDGANSampler:
    CATEGORY = "LDDGAN"
    FUNCTION = "sample"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("Latents in the model's autoencoder space: decode them with LDDGAN Decode (or core VAE "
                       "Decode with the LDDGAN VAE).",)
    DESCRIPTION = ("Samples with LDDGAN's few-step (T <= 4) GAN denoiser. Without a latent: new images from pure "
                   "noise. With a latent (from LDDGAN Encode or an earlier sampler): image-to-image / "
                   "variations; denoise sets how many of the T steps are re-run. Sample i uses seed + i (or "
                   "seed + batch_index[i]), so an image depends only on its seed, not on the batch size.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL_TYPE, {"tooltip": "The LDDGAN model from LDDGAN Model Loader."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": MAX_SEED, "control_after_generate": True,
                                 "tooltip": "Random seed. Sample i of the batch uses seed + i (seed + the latent's "
                                            "batch_index[i] when the latent carries one)."}),
                "batch_size": ("INT", {"default": 1, "min": 1, "max": MAX_BATCH,
                                       "tooltip": f"Number of images to sample, 1..{MAX_BATCH} (the most one run "
                                                  f"makes; a larger value is refused with an error, not reduced). "
                                                  f"Big batches run in chunks with a progress tick and a Cancel "
                                                  f"check about every second. Ignored when a latent is connected: "
                                                  f"its batch is used."}),
                "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                      "tooltip": "With a latent: 1 samples from pure noise (the latent only sets the "
                                                 "size), 0 returns the latent unchanged; in between the latent is "
                                                 "re-noised to step round(denoise * T) and the remaining steps run. "
                                                 "Without a latent it has no effect."}),
            },
            "optional": {
                "latent": ("LATENT", {"tooltip": "Optional start latent for image-to-image and variations (e.g. "
                                                 "LDDGAN Encode of a loaded image, repeated with Repeat Latent "
                                                 "Batch for several variations)."}),
            },
        }

    def sample(self, model, seed, batch_size, denoise, latent=None):
        T = model.num_timesteps
        if latent is None:
            if not 1 <= int(batch_size) <= MAX_BATCH:
                raise L.InputError(f"batch_size: {batch_size} is outside 1..{MAX_BATCH}: LDDGAN Sampler makes at most "
                                   f"{MAX_BATCH} images per run (it does not reduce a larger value silently). For "
                                   f"more, queue several runs with seeds {MAX_BATCH} apart (sample i uses seed + i)")
            init, B = None, int(batch_size)
            seeds, steps = seeds_for(seed, B), T
            h, w = model.latent_shape[1:]
            out = {}
        else:
            init = latent_samples(latent, model, "latent", for_sampling=True)
            if latent.get("noise_mask") is not None:
                raise L.InputError("latent: has a noise_mask (inpainting), which LDDGAN Sampler does not support; "
                                   "remove Set Latent Noise Mask")
            B, (h, w) = init.shape[0], init.shape[2:]
            seeds, steps = seeds_for(seed, B, latent.get("batch_index")), start_step_for(denoise, T)  # mapped once
            out = {k: v for k, v in latent.items() if k != "samples"}  # keeps batch_index, as core samplers do
            if steps == 0:  # nothing to run: the library returns the input (no device move needed)
                return (tag_latent({**out, "samples": model.sample(seeds=seeds, init_latent=init, start_step=0)
                                    .to(runtime.output_device())}, model),)

        pbar = runtime.progress_bar(B * steps)

        with chunks.on_device(model) as device:
            first = chunks.chunk_size(B, chunks.sample_bytes(model, h, w), runtime.free_memory(device))
            # chunks also sized to time: one sampling step of a chunk (one tick) takes about TARGET_SECONDS
            pace = chunks.Pace(chunks.sample_flops(model, h, w), device, ticks=steps)
            previews = Previews(model)  # the first sample's x0 prediction, about once a second at most

            def run(a, b):
                def step(info):  # one progress tick per sampling step; honours Cancel between steps
                    runtime.synchronize()  # on a GPU: tick when the step is done, not when it is queued
                    pbar.update_absolute(a * steps + (info["step"] + 1) * (b - a), B * steps, previews(info["x0"]))
                    runtime.check_interrupt()

                x = None if init is None else init[a:b].to(device)
                return model.sample(seeds=seeds[a:b], init_latent=x, start_step=steps, callback=step)

            samples = chunks.run_chunked(B, first, run, pace=pace)
        return (tag_latent({**out, "samples": samples}, model),)
