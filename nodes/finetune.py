"""LDDGAN Fine-Tune (Weighted Learning): one call to lddgan_core.train.finetune, with ComfyUI's progress bar,
preview and Cancel, and the run's files beside the model in models/lddgan (so a later run resumes)."""
from __future__ import annotations

import logging
import os
from importlib import import_module

import numpy as np
import torch

from . import runtime
from .convert import image_to_model
from .lib import L, MAX_SEED, check_paths_fit
from .model_nodes import MODEL_TYPE, checked_filename

log = logging.getLogger("lddgan")

# How IMAGE batches of another size are fitted. Unlike LDDGAN Encode, training needs the model's exact size,
# so only the square-crop-and-resize of Encode's modes applies; never stretched.
FIT_MODES = ["crop and resize to model size", "error"]
REC_SCHEDULES = ["sigmoid", "constant", "linear", "cosine", "off"]  # the widget's choices, in this order
PREVIEWS = 20  # progress-bar previews per run
# the widgets' defaults: lddgan_core.train.FINETUNE_DEFAULTS (the CLI's too), kept here so that loading the pack
# does not import the trainer; tests/nodes check that they agree
FINETUNE_STEPS, FINETUNE_BATCH, FINETUNE_LR_G, FINETUNE_R1_GAMMA, FINETUNE_SCHEDULE = 1400, 8, 2e-4, 0.02, "constant"
# the TrainConfig fields the widgets set (the others come from FINETUNE_DEFAULTS, or from a resumed run)
WIDGET_FIELDS = ("steps", "batch_size", "lr_g", "lr_d", "rec_schedule", "gamma", "r1_gamma", "ema_decay", "seed",
                 "save_every")
FINETUNE_REC_VALUE = 4.0  # the constant / linear / cosine schedules' scale (no widget; named in the tooltip)


def _train():
    """lddgan_core.train, imported on first use (it is not needed to load the pack)."""
    return import_module(L.__name__ + ".train")


def _image(array: np.ndarray) -> torch.Tensor:
    """uint8 [H, W, 3] -> IMAGE [1, H, W, 3] 0..1 on the output device."""
    return torch.from_numpy(np.array(array, dtype=np.float32)).div_(255.0)[None].to(runtime.output_device())


def training_images(image, model, fit: str) -> torch.Tensor:
    """IMAGE [B, H, W, C] 0..1 -> [B, 3, S, S] in [-1, 1] at the model's size S, as ``fit`` (one of FIT_MODES)
    says."""
    size = model.config.image_size
    if fit == "error" and torch.is_tensor(image) and image.ndim == 4 and tuple(image.shape[1:3]) != (size, size):
        raise L.InputError(f"images: {image.shape[2]}x{image.shape[1]} px, but this model trains on {size}x{size} "
                           f"images; choose fit='crop and resize to model size' (a centred square crop, resized: "
                           f"never stretched) or resize them first")
    return image_to_model(image, model, "crop and resize to model size", "images")


def image_folder(folder) -> str | None:
    """The folder input: '' -> None; surrounding quotes (as pasted from a file manager) removed; a relative
    path is taken inside ComfyUI's input folder (outside ComfyUI: the working directory)."""
    if folder is None:
        return None
    f = str(folder).strip().strip('"').strip("'").strip()
    if not f:
        return None
    f = os.path.expanduser(f)
    base = runtime.input_dir()
    if not os.path.isabs(f) and base is not None:
        f = os.path.join(base, f)
    f = os.path.abspath(f)
    roots = runtime.training_roots()
    if roots is not None:  # in ComfyUI anyone who can queue a prompt sets this: never leave the allowed folders
        real = os.path.realpath(f)
        ok = [r for r in roots if os.path.commonpath([real, os.path.realpath(r)]) == os.path.realpath(r)]
        if not ok:
            raise L.InputError(f"folder: {folder!r} is not inside ComfyUI's input folder; give a folder of images "
                               f"inside it (e.g. 'my_images' for input/my_images), or list another folder under "
                               f"'{runtime.TRAINING_FOLDER}:' in extra_model_paths.yaml")
    return f


class LDDGANFineTune:
    CATEGORY = "LDDGAN"
    FUNCTION = "finetune"
    OUTPUT_NODE = True  # it writes the model file even when nothing is connected to its outputs
    RETURN_TYPES = (MODEL_TYPE, "IMAGE", "IMAGE")
    RETURN_NAMES = ("model", "loss_curve", "sample_grid")
    OUTPUT_TOOLTIPS = (
        "The fine-tuned model (a new model with the EMA generator; the input model is untouched). It is also "
        "saved as models/lddgan/<save_name>.safetensors, so LDDGAN Model Loader lists it.",
        "Loss curve of the whole run (discriminator loss, generator adversarial loss, reconstruction loss and its "
        "Weighted Learning weight w) against the iteration.",
        "A grid of 16 samples from the fine-tuned model (fixed seeds: comparable across runs).",
    )
    DESCRIPTION = ("Fine-tunes an LDDGAN model on your images: adversarial loss plus a reconstruction (L1) loss, "
                   "kept at weight 4 by default (measured best for a few images); schedule sigmoid is LDDGAN's "
                   "Weighted Learning, which fades it out. The autoencoder stays frozen; the "
                   "generator trains against a fresh discriminator, with an EMA copy as the result. Shows a progress "
                   "bar with sample previews. Cancel stops cleanly and keeps the state; queueing again with the same "
                   "save_name resumes where it stopped (and a finished run is returned as it is). Files beside the "
                   "model: <save_name>.train.pt (resume point), .discriminator.safetensors, .losses.csv, "
                   ".loss_curve.png and the encoded-image cache <save_name>.cache/.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL_TYPE, {"tooltip": "The LDDGAN model to start from (LDDGAN Model Loader). It is not "
                                                  "changed: the result is a new model."}),
                "steps": ("INT", {"default": FINETUNE_STEPS, "min": 1, "max": 10_000_000,
                                  "tooltip": "Training iterations in all (one discriminator and one generator "
                                             "update each). Resuming with a larger value continues the run."}),
                "batch_size": ("INT", {"default": FINETUNE_BATCH, "min": 1, "max": 4096,
                                       "tooltip": "Images per iteration (drawn at random from the training set)."}),
                "lr_g": ("FLOAT", {"default": FINETUNE_LR_G, "min": 0.0, "max": 1.0, "step": 1e-6, "round": False,
                                   "tooltip": "Adam learning rate of the generator."}),
                "lr_d": ("FLOAT", {"default": 1e-4, "min": 0.0, "max": 1.0, "step": 1e-6, "round": False,
                                   "tooltip": "Adam learning rate of the discriminator."}),
                "schedule": (REC_SCHEDULES, {"default": FINETUNE_SCHEDULE,
                                             "tooltip": "Weighted Learning: how the weight w of the reconstruction "
                                                        "(L1) loss changes over the run. constant (the fine-tune "
                                                        f"default): always {FINETUNE_REC_VALUE:g}, which keeps "
                                                        "few-image runs on their images; sigmoid (the paper's, for "
                                                        "training from scratch): from ~1 down to ~0, steepness "
                                                        f"gamma; linear / cosine: {FINETUNE_REC_VALUE:g} down to 0; "
                                                        "off: adversarial loss only."}),
                "gamma": ("FLOAT", {"default": 6.0, "min": 0.01, "max": 100.0, "step": 0.1,
                                    "tooltip": "Steepness of the sigmoid schedule (the paper uses 6)."}),
                "r1_gamma": ("FLOAT", {"default": FINETUNE_R1_GAMMA, "min": 0.0, "max": 1000.0, "step": 0.01,
                                       "tooltip": "Weight of the R1 gradient penalty on the discriminator (official: "
                                                  "0.02 CIFAR-10, 2 CelebA-HQ, 1 LSUN)."}),
                "ema_decay": ("FLOAT", {"default": 0.999, "min": 0.0, "max": 0.99999, "step": 0.0001,
                                        "round": False,
                                        "tooltip": "Decay of the exponential moving average of the generator's "
                                                   "weights, which is the result (warmed up: short runs still "
                                                   "move). 0: the trained weights themselves."}),
                "augment": ("INT", {"default": 0, "min": 0, "max": 64,
                                    "tooltip": "For small image sets: each image is used in this many versions "
                                               "(the original plus random flips, small shifts and colour jitter), "
                                               "encoded once. 0 or 1: no augmentation."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": MAX_SEED, "control_after_generate": False,
                                 "tooltip": "Seed of every random draw of the run (initial discriminator, batches, "
                                            "noise, augmentation): same inputs and seed, same model. Keep it to "
                                            "resume a run."}),
                "save_name": ("STRING", {"default": "lddgan_finetune",
                                         "tooltip": "File name in models/lddgan ('.safetensors' is added). Queueing "
                                                    "again with the same name resumes that run (same images and "
                                                    "settings; only steps and save_every may change). A model file "
                                                    "of that name that no fine-tune run wrote is never replaced."}),
                "save_every": ("INT", {"default": 100, "min": 0, "max": 10_000_000,
                                       "tooltip": "Iterations between saved training states (resume points). 0: "
                                                  "only at the end and on Cancel."}),
            },
            "optional": {
                "images": ("IMAGE", {"tooltip": "Training images (e.g. Load Image). Images of another size than the "
                                                "model's are fitted as fit says. Give images, a folder, or both."}),
                "folder": ("STRING", {"default": "",
                                      "tooltip": "A folder of training images (png / jpg / webp, searched "
                                                 "recursively; each is center-cropped to a square and resized to "
                                                 "the model's size). Relative paths are inside ComfyUI's input "
                                                 "folder. Empty: none."}),
                "fit": (FIT_MODES, {"default": "crop and resize to model size",
                                    "tooltip": "For the images input when its size is not the model's: crop the "
                                               "centre square and resize it to the model's size (as LDDGAN Encode "
                                               "does; never stretched), or 'error' to refuse it."}),
            },
        }

    @classmethod
    def IS_CHANGED(cls, folder="", **_inputs):
        # ComfyUI caches outputs by input values: a folder whose files changed must train again.
        try:
            path = image_folder(folder)
            if path is None:
                return ""
            data = import_module(L.__name__ + ".train.data")
            return data.folder_fingerprint(path, data.find_images(path))
        except (OSError, ValueError):
            return ""  # the run itself reports the problem

    def finetune(self, model, steps, batch_size, lr_g, lr_d, schedule, gamma, r1_gamma, ema_decay, augment, seed,
                 save_name, save_every, images=None, folder="", fit="crop and resize to model size"):
        if not isinstance(model, L.LDDGAN):
            raise L.InputError(f"model: expected an LDDGAN_MODEL, got {type(model).__name__}")
        if fit not in FIT_MODES:
            raise L.InputError(f"fit: expected one of {FIT_MODES}, got {fit!r}")
        path, folder = self.save_path(save_name), image_folder(folder)
        x = None if images is None else training_images(images, model, fit)  # [B, 3, S, S] in [-1, 1]
        if x is None and folder is None:
            raise L.InputError("images / folder: no training images; connect an IMAGE batch (e.g. Load Image) to "
                               "images, or give a folder of images, or both")
        # the library checks every training value, naming the widget (steps, batch_size, schedule, seed, ...)
        cfg = _train().finetune_config(steps=steps, batch_size=batch_size, lr_g=float(lr_g), lr_d=float(lr_d),
                                       schedule=schedule, gamma=float(gamma), r1_gamma=float(r1_gamma),
                                       ema_decay=float(ema_decay), seed=seed, save_every=save_every)
        augment = _train().Augment.coerce(augment)
        # resuming save_name's run: the settings without a widget (lazy_reg, rec_value, ...) continue with the
        # saved run's values, so a run started before the defaults changed can go on; widgets are compared
        state = _train().RunPaths.beside(path).state
        cfg, taken = _train().keep_saved_settings(cfg, _train().finetune_config(), state, given=WIDGET_FIELDS)
        if taken:
            log.info("resuming %s with its saved %s", state,
                     ", ".join(f"{k} {saved!r}" for k, (_, saved) in sorted(taken.items())))

        from PIL import Image

        bar = runtime.progress_bar(cfg.steps)
        make_grid = import_module(L.__name__ + ".data.images").make_grid

        def progress(step, total, logs, preview):  # after every iteration; preview: [n, 3, S, S] in [-1, 1]
            shown = None if preview is None else ("JPEG", Image.fromarray(make_grid(preview)), 512)
            bar.update_absolute(step, total, shown)
            runtime.check_interrupt()  # Cancel: raises; finetune saves the state and re-raises

        device = runtime.compute_device()
        lock = import_module(L.__name__ + ".runlock").run_lock(self.lock_path(path), f"save_name {save_name!r}")
        with lock:  # held for the run's life: a second run of the same save_name is refused
            return self._run(model, x, folder, cfg, augment, save_name, path, state, device, progress)

    def _run(self, model, x, folder, cfg, augment, save_name, path, state, device, progress):
        runtime.make_room_for_training(device)
        try:
            res = _train().finetune(model, images=x, folder=folder, config=cfg, augment=augment, save_path=path,
                                    resume=True, progress=progress, should_stop=None,
                                    preview_every=max(1, cfg.steps // PREVIEWS), device=device, log=log.info)
        except L.CheckpointError as e:
            if not os.path.isfile(state):
                raise
            raise L.CheckpointError(f"save_name {save_name!r}: the earlier run saved in {state} cannot be resumed "
                                    f"with these inputs: {e}. Choose another save_name for a new run (or put "
                                    f"the earlier settings back to continue it).") from e
        finally:
            runtime.empty_cache()
        out = res.model.to(runtime.offload_device())
        return {"ui": {"text": [path]}, "result": (out, _image(res.loss_curve), _image(res.sample_grid))}

    @staticmethod
    def lock_path(path: str) -> str:
        """<save_name>.lock beside the model: held while a run writes its files."""
        return path[: -len(".safetensors")] + ".lock"

    @classmethod
    def save_path(cls, save_name) -> str:
        """models/lddgan/<save_name>.safetensors. A file there that no fine-tune run wrote (no .train.pt beside
        it), or a name that would hide a model of another model folder, is refused."""
        try:
            name = checked_filename(save_name)
        except L.InputError:
            raise L.InputError(f"save_name: {save_name!r} is not a plain file name (letters, digits, '.', '_', '-', "
                               f"spaces; no folders); e.g. 'my_finetune'") from None
        path = os.path.join(runtime.save_dir(), name)
        run = _train().RunPaths.beside(path)
        state = run.state  # the resume point: the library names the run's files
        # every file of the run, and the temporary names they are written under, must fit the file system: checked
        # now, not after training
        check_paths_fit([path, run.state, run.discriminator, run.log_csv, run.curve_png, cls.lock_path(path)],
                        "save_name")
        check_paths_fit([run.cache_dir], "save_name", extra_name_chars=len("/latents-0123456789abcdef.safetensors"))
        if os.path.exists(path) and not os.path.isfile(state):
            raise L.InputError(f"save_name: {path} already exists and is not a fine-tune run (no "
                               f"{os.path.basename(state)} beside it); choose another save_name: it is not replaced")
        if not os.path.exists(path) and name in runtime.list_models():
            raise L.InputError(f"save_name: {name!r} is the name of a model in another model folder "
                               f"({runtime.resolve_model(name)}); the new file would hide it from LDDGAN Model "
                               f"Loader. Choose another save_name")
        return path
