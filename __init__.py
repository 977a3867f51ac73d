"""ComfyUI entry point of the ComfyUI-LDDGAN node pack.

ComfyUI imports this file as a package from custom_nodes/. The library itself lives in lddgan_core/
(no ComfyUI imports); the nodes live in nodes/. Until the nodes land, the pack registers no nodes.
"""
try:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
except ImportError:  # imported outside a package (e.g. by a test runner walking the repo root)
    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = {}, {}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
