"""ComfyUI entry point of the ComfyUI-LDDGAN node pack.

ComfyUI imports this file as a package from custom_nodes/. The library lives in lddgan_core/ (no ComfyUI
imports); the nodes live in nodes/. Example workflows in example_workflows/ appear in ComfyUI's template
browser.
"""
if __package__:  # imported as a package, as ComfyUI does: an import error here must surface, not hide
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
else:  # executed as a plain file (e.g. a tool walking the repository): nothing to register
    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = {}, {}

# web/: a small frontend extension that refreshes the Model Loader's list after Save Model / Fine-Tune has run
WEB_DIRECTORY = "./web"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
