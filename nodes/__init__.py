"""ComfyUI nodes (thin wrappers over lddgan_core). The node classes arrive with the nodes issue;
until then the pack registers none."""
NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
