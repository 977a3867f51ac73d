"""The one place the nodes import the library from.

Inside ComfyUI the pack is a package (custom_nodes/<pack>/) whose directory is not on sys.path, so the
library is reached relative to it; when ``nodes`` is imported as a top-level package (the unit tests,
run from the repository root) or the library is pip-installed, the absolute import is used.
"""
try:
    from .. import lddgan_core as L
except ImportError:  # "attempted relative import beyond top-level package": nodes/ is not inside the pack
    import lddgan_core as L

from importlib import import_module

_cli = import_module(L.__name__ + ".cli")
_sampling = import_module(L.__name__ + ".sampling")
_io = import_module(L.__name__ + ".io")
_fast = import_module(L.__name__ + ".fast")

default_model_path = _cli.default_model_path
start_step_for = _sampling.start_step_for
parse_dtype = _io.parse_dtype
save_model = _io.save_model
decode_bytes_per_image = _fast.decode_bytes_per_image
is_temp_name = _io.is_temp_name
check_paths_fit = _io.check_paths_fit

__all__ = ["L", "default_model_path", "start_step_for", "parse_dtype", "save_model", "decode_bytes_per_image",
           "is_temp_name", "check_paths_fit"]
