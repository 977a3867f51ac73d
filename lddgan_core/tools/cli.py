"""Command line: ``lddgan`` / ``python -m lddgan_core``.

    lddgan convert --config C.json --generator netG.pth --autoencoder ae.ckpt -o model.safetensors
    lddgan sample [--model M] [--seed 0] [--batch 8] [--device cpu] [--fast ref|fast|bf16] [--out DIR | --grid F.png]
    lddgan info [MODEL] [--json]
    lddgan parity FIXTURE_DIR...
    lddgan list [--manifest FILE] [--dest DIR] [--json]
    lddgan download ID [--manifest FILE] [--dest DIR]
    lddgan finetune --model M --data DIR --out RUN [--steps N --batch B ...]
    lddgan train --autoencoder AE --data DIR --out RUN [--generator small ...]
    lddgan train-autoencoder --data DIR --out RUN --image-size N [--preset kl-f4 ...]
    lddgan eval [--model M | --images DIR] [--n 5000] [--features shapes|inception] [--json FILE]

The training commands resume an existing run in --out and run data-parallel under torchrun.

MODEL may also be a manifest id (e.g. cifar10) of a model installed with ``lddgan download``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

from .. import load, load_official
from ..data.images import load_image, make_grid, save_png, to_uint8
from ..errors import LDDGANError
from ..formats.lddgan_file import read_model_file
from ..hub import zoo
from ..hub.shipped import DEFAULT_MODEL, default_model_path, FIXTURE_MODEL, resolve_model_path
from .common import resolve_device
from .eval_cli import add_eval_command
from .parity import main as parity_main
from .progress import ProgressBar
from .train_cli import add_train_commands


def cmd_convert(a) -> int:
    if os.path.exists(a.output) and not a.overwrite:
        raise SystemExit(f"error: {a.output!r} exists (pass --overwrite to replace it)")
    m = load_official(a.config, a.generator, a.autoencoder, name=a.name)
    m.save(a.output, dtype=a.dtype)
    print(f"wrote {a.output} ({os.path.getsize(a.output) / 1e6:.2f} MB, {a.dtype or 'fp32'}): "
          f"{m.config.name}, {m.config.image_size}px, T={m.num_timesteps}, latent {list(m.latent_shape)}")
    return 0


# `lddgan sample` works through the batch SAMPLE_CHUNK images at a time, writing each chunk's PNGs before the next,
# so memory stays bounded for any --batch; a grid is assembled only for at most MAX_GRID images / MAX_GRID_PIXELS.
SAMPLE_CHUNK = 64
MAX_GRID = 1024
MAX_GRID_PIXELS = 1 << 27


def cmd_sample(a) -> int:
    import numpy as np

    if a.batch < 1:
        raise SystemExit("error: --batch must be >= 1")
    if not 1 <= a.zoom <= 16:
        raise SystemExit("error: --zoom must be between 1 and 16")
    if a.chunk < 1:
        raise SystemExit("error: --chunk must be >= 1")
    if not (a.out or a.grid):
        a.grid = "samples.png"
    if a.grid and a.batch > MAX_GRID:
        raise SystemExit(f"error: --batch {a.batch} is too many images for one grid (at most {MAX_GRID}); write "
                         f"them as PNG files with --out DIR instead")
    device = resolve_device(a.device)
    m = load(resolve_model_path(a.model), device=device)
    m.set_fast(a.fast)
    S = m.config.image_size
    if a.grid and a.batch * S * S > MAX_GRID_PIXELS:
        raise SystemExit(f"error: a grid of {a.batch} images of {S}px is too large ({a.batch * S * S / 1e6:.0f} "
                         f"Mpx, limit {MAX_GRID_PIXELS / 1e6:.0f}); use fewer images or --out DIR")
    if a.out:
        os.makedirs(a.out, exist_ok=True)
    init = None
    if a.init:
        init = m.encode(load_image(a.init, S).to(device))
    t0 = time.perf_counter()
    written, tiles, n_files = [], [], 0
    for start in range(0, a.batch, a.chunk):
        n = min(a.chunk, a.batch - start)
        kw = {} if init is None else dict(init_latent=init.repeat(n, 1, 1, 1), denoise=a.denoise)
        lat = m.sample(n, a.seed + start, **kw)  # sample b of the chunk uses seed + start + b: as one big batch
        arr = to_uint8(m.decode(lat).clamp(-1, 1))
        del lat
        if a.out:
            for i in range(n):
                path = save_png(arr[i], os.path.join(a.out, f"{a.prefix}{a.seed + start + i:06d}.png"))
                n_files += 1
                if len(written) < 3:
                    written.append(path)
        if a.grid:
            tiles.append(arr)
    dt = time.perf_counter() - t0
    if a.grid:
        images = torch.from_numpy(np.concatenate(tiles)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        grid = make_grid(images, a.nrow)
        if a.zoom > 1:  # nearest-neighbour enlargement: small images stay crisp
            grid = grid.repeat(a.zoom, axis=0).repeat(a.zoom, axis=1)
        written.append(save_png(grid, a.grid))
        n_files += 1
    print(f"sampled {a.batch} image(s) of {S}px in {dt:.2f}s on {device} "
          f"(seeds {a.seed}..{a.seed + a.batch - 1}); wrote {', '.join(written) if n_files <= 3 else f'{n_files} files'}")
    return 0


def cmd_info(a) -> int:
    path = resolve_model_path(a.model)
    meta, tensors = read_model_file(path)
    cfg = meta["config_dict"]
    n = {p: sum(t.numel() for k, t in tensors.items() if k.startswith(p)) for p in ("generator.", "autoencoder.")}
    dtypes = sorted({str(t.dtype).replace("torch.", "") for t in tensors.values()})
    if a.json:
        print(json.dumps({"path": path, "config": cfg, "parameters": n, "dtypes": dtypes}, indent=1))
        return 0
    g, ae, d = cfg["generator"], cfg["autoencoder"], cfg["diffusion"]
    print(f"{path}\n  name          {cfg['name']}  (format {meta['format']} v{meta['format_version']}, {', '.join(dtypes)})")
    print(f"  image         {cfg['image_size']}px -> latent {cfg['latent_shape']}, scale_factor {cfg['scale_factor']}")
    print(f"  autoencoder   {ae['kind'].upper()} f={2 ** (len(ae['ch_mult']) - 1)}, ch {ae['ch']} x {ae['ch_mult']}, "
          f"{n['autoencoder.'] / 1e6:.2f}M params")
    print(f"  generator     NCSN++ nf {g['nf']} x {g['ch_mult']}, {g['num_res_blocks']} blocks, attn {g['attn_resolutions']}, "
          f"nz {g['nz']}, {n['generator.'] / 1e6:.2f}M params")
    print(f"  diffusion     T={d['num_timesteps']} {d['schedule']} beta [{d['beta_min']}, {d['beta_max']}]")
    if cfg.get("provenance"):
        print(f"  provenance    {cfg['provenance']}")
    return 0


def cmd_parity(a) -> int:
    return parity_main(a.folders + (["--json"] if a.json else []))


def cmd_list(a) -> int:
    m = zoo.load_manifest(a.manifest)
    dest = a.dest or zoo.default_dest()
    if a.json:
        out = {"manifest": m.path, "dest": os.path.abspath(dest),
               "entries": [{**e.raw, "installed": zoo.is_installed(e, dest), "path": os.path.join(os.path.abspath(dest), e.target)}
                           for e in m.entries.values()],
               "unavailable": list(m.unavailable)}
        print(json.dumps(out, indent=1))
        return 0
    print(f"{m.path}  (installed = present in {os.path.abspath(dest)})")
    for e in m.entries.values():
        size = f"{e.size / 1e6:.0f} MB" if e.size else "size ?"
        state = "installed" if zoo.is_installed(e, dest) else "download"
        print(f"  {e.id:22s} {e.kind:21s} {state:9s} {size:>8s}  {e.name}")
    for r in m.unavailable:
        print(f"  {r['id']:22s} {'unavailable':21s} {'-':9s} {'':>8s}  {r['name']}\n{'':>26s}{r['reason']}")
    return 0


def cmd_download(a) -> int:
    dest = a.dest or zoo.default_dest()
    bar = None if a.quiet else ProgressBar("bytes")
    log = None if a.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    m = zoo.load_manifest(a.manifest)
    try:
        path = zoo.ensure(a.id, dest, manifest=m, allow_download=True, progress=bar, log=log, timeout=a.timeout,
                          retries=a.retries)
    finally:
        if bar is not None:
            bar.close()
    rec = zoo.read_state(os.path.abspath(dest)).get(m[a.id].target, {})
    print(f"{path}" + (f"  (sha256 {rec['sha256']})" if rec.get("sha256") else ""))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lddgan", description="LDDGAN: convert official checkpoints, sample, inspect, "
                                                           "download published weights, train and fine-tune.")
    sub = p.add_subparsers(dest="cmd", required=True)

    c = sub.add_parser("convert", help="official files -> one .safetensors model")
    c.add_argument("--config", required=True, help="official hyper-parameters (JSON)")
    c.add_argument("--generator", required=True, help="official generator netG_*.pth")
    c.add_argument("--autoencoder", required=True, help="LDM autoencoder .ckpt (or a state dict)")
    c.add_argument("-o", "--output", required=True, help="output .safetensors")
    c.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], default=None, help="stored precision (default fp32)")
    c.add_argument("--name", default=None, help="model name stored in the file")
    c.add_argument("--overwrite", action="store_true")
    c.set_defaults(fn=cmd_convert)

    s = sub.add_parser("sample", help="sample images (PNG files and/or a grid)")
    s.add_argument("--model", default=None, help="our .safetensors model, a shipped model (shapes, emoji) or a manifest id (default: shapes, the default model)")
    s.add_argument("--seed", type=int, default=0, help="image i uses seed + i")
    s.add_argument("--batch", type=int, default=8)
    s.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 or auto")
    s.add_argument("--out", default=None, help="folder for one PNG per image")
    s.add_argument("--grid", default=None, help="PNG file for a grid of all images (default samples.png if no --out)")
    s.add_argument("--nrow", type=int, default=None, help="images per grid row")
    s.add_argument("--prefix", default="lddgan_", help="file name prefix with --out")
    s.add_argument("--zoom", type=int, default=1, help="enlarge the grid N times (nearest neighbour; PNG files keep "
                                                       "the model's size)")
    s.add_argument("--chunk", type=int, default=SAMPLE_CHUNK, help="images sampled and written at a time (memory "
                                                                  "stays bounded for any --batch)")
    s.add_argument("--init", default=None, help="image-to-image: start from this image")
    s.add_argument("--denoise", type=float, default=0.5, help="with --init: 0 keeps the image, 1 ignores it")
    s.add_argument("--fast", choices=["ref", "fast", "bf16", "fp16", "max"], default="fast",
                   help="inference path: fast (default; float32, checked against ref), ref (the reference path), "
                        "bf16 / fp16 (half precision; CUDA autocast, bf16 also on CPUs), max (bf16 + torch.compile "
                        "+ CUDA graphs)")
    s.set_defaults(fn=cmd_sample)

    i = sub.add_parser("info", help="print a model's config")
    i.add_argument("model", nargs="?", default=None)
    i.add_argument("--json", action="store_true")
    i.set_defaults(fn=cmd_info)

    q = sub.add_parser("parity", help="check against official fixture folders")
    q.add_argument("folders", nargs="+")
    q.add_argument("--json", action="store_true")
    q.set_defaults(fn=cmd_parity)

    man = "weights manifest (default: the pack's weights_manifest.json, or $LDDGAN_MANIFEST)"
    dst = "models folder (default: $LDDGAN_MODELS_DIR or ~/.cache/lddgan/models)"
    ls = sub.add_parser("list", help="models in the weights manifest, and which are installed")
    ls.add_argument("--manifest", default=None, help=man)
    ls.add_argument("--dest", default=None, help=dst)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(fn=cmd_list)

    d = sub.add_parser("download", help="download, verify and convert a manifest entry")
    d.add_argument("id", help="entry id (see `lddgan list`)")
    d.add_argument("--manifest", default=None, help=man)
    d.add_argument("--dest", default=None, help=dst)
    d.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the server (connect and each read)")
    d.add_argument("--retries", type=int, default=2, help="resume attempts after an interruption")
    d.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    d.set_defaults(fn=cmd_download)

    add_train_commands(sub)

    add_eval_command(sub)
    return p


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    try:
        return a.fn(a)
    except (LDDGANError, FileNotFoundError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a read-only or full destination, a quota, a name too long: one line, no traceback
        where = f" {e.filename}" if getattr(e, "filename", None) else ""
        print(f"error: cannot write{where}: {e.strerror or e} (a read-only, full or missing destination?)",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
