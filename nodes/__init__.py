"""ComfyUI nodes of the LDDGAN pack (V1 node API), thin wrappers over lddgan_core.

Node classes are plain Python: ComfyUI modules are imported lazily inside functions (see runtime.py), so
they load and are unit-tested without ComfyUI.
"""
from . import runtime
from .codec import LDDGANDecode, LDDGANEncode
from .finetune import LDDGANFineTune
from .model_nodes import LDDGANModelLoader, LDDGANSaveModel
from .sampler import LDDGANSampler
from .vae import LDDGANVAE

runtime.register_model_folder()  # models/lddgan + the shipped models (no-op outside ComfyUI)

NODE_CLASS_MAPPINGS = {
    "LDDGANModelLoader": LDDGANModelLoader,
    "LDDGANSampler": LDDGANSampler,
    "LDDGANEncode": LDDGANEncode,
    "LDDGANDecode": LDDGANDecode,
    "LDDGANSaveModel": LDDGANSaveModel,
    "LDDGANVAE": LDDGANVAE,
    "LDDGANFineTune": LDDGANFineTune,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "LDDGANModelLoader": "LDDGAN Model Loader",
    "LDDGANSampler": "LDDGAN Sampler",
    "LDDGANEncode": "LDDGAN Encode",
    "LDDGANDecode": "LDDGAN Decode",
    "LDDGANSaveModel": "LDDGAN Save Model",
    "LDDGANVAE": "LDDGAN VAE",
    "LDDGANFineTune": "LDDGAN Fine-Tune (Weighted Learning)",
}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
