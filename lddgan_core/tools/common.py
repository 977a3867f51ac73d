"""Helpers shared by the command-line modules (cli, train_cli, eval_cli)."""
from __future__ import annotations

import torch


def resolve_device(name: str) -> str:
    """--device: "auto" picks CUDA when available; asking for CUDA without it is an error."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"error: --device {name}: CUDA is not available on this machine")
    return name
