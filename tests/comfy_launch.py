"""Starts ComfyUI's main.py (argv: main.py and its arguments; cwd: the ComfyUI checkout) after one repair that
CPU-only machines need: the only torchvision wheel on PyPI for torch 2.13 is a CUDA build whose C++ operators do
not load without CUDA, and importing it then fails on the missing ``torchvision::nms`` / ``qnms`` schemas. When
torchvision is first imported (ComfyUI does at start-up) and its operator library does not load, those two
schemas are defined (no kernels: nothing in this pack's tests calls them), so its pure-Python parts work. A
torchvision whose operators load is left alone. Nothing in the ComfyUI checkout is changed."""
import glob
import importlib.util
import os
import runpy
import sys

_KEEP = []  # torch.library.Library objects must stay alive for their definitions to last


class _TorchvisionSchemas:
    def find_spec(self, name, path=None, target=None):
        if name != "torchvision":
            return None
        sys.meta_path.remove(self)  # once; the normal finders then import it
        import torch

        spec = importlib.util.find_spec("torchvision")
        if spec is None or spec.origin is None:
            return None
        for so in glob.glob(os.path.join(os.path.dirname(spec.origin), "_C*.so")):
            try:
                torch.ops.load_library(so)
                return None  # a working build (CPU wheel, or CUDA present)
            except (OSError, RuntimeError):
                pass
        lib = torch.library.Library("torchvision", "DEF")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor")
        _KEEP.append(lib)
        print("comfy_launch: torchvision's C++ operators do not load here (a CUDA build without CUDA); "
              "defined the nms/qnms schemas so that it imports", file=sys.stderr)
        return None


if __name__ == "__main__":
    sys.meta_path.insert(0, _TorchvisionSchemas())
    sys.argv = sys.argv[1:]
    sys.path.insert(0, os.getcwd())
    runpy.run_path(sys.argv[0], run_name="__main__")
