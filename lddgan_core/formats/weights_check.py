"""A config checked against the weights that come with it, before the model is built: the shapes the config implies
come from the networks built on PyTorch's ``meta`` device (nothing is allocated), and a mismatch names the config
field that disagrees with the weights."""
from __future__ import annotations

import re

import torch

from ..errors import CheckpointError
from ..nets.autoencoder import Autoencoder
from ..nets.generator import Generator


def expected_shapes(cfg) -> dict[str, tuple]:
    """{'generator.<key>': shape, 'autoencoder.<key>': shape} of the model ``cfg`` describes, built on the meta
    device: nothing is allocated."""
    out = {}
    with torch.device("meta"):
        for prefix, module in (("generator.", Generator(cfg.generator)), ("autoencoder.", Autoencoder(cfg.autoencoder))):
            out.update({prefix + k: tuple(v.shape) for k, v in module.state_dict().items()})
    return out


def _count(shapes: dict, pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in shapes if (m := rx.fullmatch(k))})


def _diagnose(cfg, given: dict) -> list[str]:
    """Which config fields disagree with the weights (the fields the error should name)."""
    g, a = cfg.generator, cfg.autoencoder
    out = []

    def dim(key, i):
        s = given.get(key)
        return None if s is None or len(s) <= i else int(s[i])

    checks = [
        ("generator.nf", g.nf, dim("generator.conv_in.weight", 0)),
        ("generator.in_channels", g.in_channels, dim("generator.conv_in.weight", 1)),
        ("generator.nz", g.nz, dim("generator.z_mapping.fc.0.weight", 1)),
        ("generator.z_emb_dim", g.z_emb_dim, dim("generator.z_mapping.fc.0.weight", 0)),
        ("generator.n_mlp", g.n_mlp, _count(given, r"generator\.z_mapping\.fc\.(\d+)\.weight") - 1),
        ("generator.num_res_blocks", g.num_res_blocks,
         _count(given, rf"generator\.enc\.{g.image_size}x{g.image_size}_block(\d+)\.conv0\.weight")),
        ("generator.ch_mult (number of levels)", len(g.ch_mult), _count(given, r"generator\.dec\.(\d+)x\d+_block0\.conv0\.weight")),
        ("autoencoder.ch", a.ch, dim("autoencoder.encoder.conv_in.weight", 0)),
        ("autoencoder.in_channels", a.in_channels, dim("autoencoder.encoder.conv_in.weight", 1)),
        ("autoencoder.embed_dim", a.embed_dim, dim("autoencoder.post_quant_conv.weight", 1)),
        ("autoencoder.ch_mult (number of levels)", len(a.ch_mult), _count(given, r"autoencoder\.encoder\.down\.(\d+)\.block\.0\.conv1\.weight")),
        ("autoencoder.num_res_blocks", a.num_res_blocks, _count(given, r"autoencoder\.encoder\.down\.0\.block\.(\d+)\.conv1\.weight")),
    ]
    for name, want, got in checks:
        if got is not None and got > 0 and got != want:
            out.append(f"{name} is {want} in the config but {got} in the weights")
    return out


def check_weights_match(cfg, given: dict, where: str) -> None:
    """Raise CheckpointError when the {key: shape} of the weights ``given`` differ from what ``cfg`` implies;
    done before the model is built, so a config that asks for far more than the file holds allocates nothing."""
    want = expected_shapes(cfg)
    missing = sorted(set(want) - set(given))
    unexpected = sorted(set(given) - set(want))
    shapes = [f"{k}: file {tuple(given[k])} vs config {want[k]}" for k in sorted(set(want) & set(given))
              if tuple(given[k]) != want[k]]
    if not (missing or unexpected or shapes):
        return
    fields = _diagnose(cfg, given)
    head = (f"{where}: the config does not match the weights: " + "; ".join(fields)) if fields else \
        f"{where}: the weights do not match the config"
    raise CheckpointError(f"{head} (missing {len(missing)} tensors {missing[:5]}, unexpected {len(unexpected)} "
                          f"{unexpected[:5]}, shape mismatches {len(shapes)} {shapes[:5]})")
