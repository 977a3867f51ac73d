"""`python -m lddgan_core.bench --train`: throughput of whole training iterations.

One iteration = the D step(s) (real and fake pairs, lazy R1 at its rate; the recipe takes 3), the G step and the EMA update, exactly
as `GANTrainer.train_step` runs them, on random latents of the model's latent shape (the data does not change
the cost). For each architecture, batch size, CPU thread count (or CUDA) and setting, it reports iterations/s
and images/s (median over timed blocks of `lazy_reg` iterations, so every block holds one R1 step), the ratio
to the fp32 setting of the same row, the conv + matmul FLOPs of an iteration (without R1) with the achieved
TFLOP/s, the CPU's measured fp32 / bf16 matrix-product peak per thread count, and the peak memory (CPU: peak RSS growth of a fresh process running two
iterations; CUDA: max_memory_allocated). Settings are timed block by block in turn inside one process, so a
busy machine slows them alike.

    python -m lddgan_core.bench --train                          # recipe + cifar10, batch 32 and 64, 1 and 2 threads
    python -m lddgan_core.bench --train --arch recipe --batch 32 --threads 1 --json train_bench.json

Architectures: "recipe" = the shipped default model's recipe (lddgan_core.tools.recipes: its generator and
discriminator, its D updates per iteration (d_steps) and EMA warm-up), "cifar10" = the official CIFAR-10 configuration (NCSN++ nf 128 on 16x16x4 latents, small D
with ngf 64, lazy R1 every 15). Settings (TrainConfig): "fp32" (the reference trainer), "fast" (fused Adam,
FIR resampling as strided convolutions; fp32), "bf16" (fast + bf16 autocast of G and D).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import torch

from ..atomic import atomic_write_text

SETTINGS = {
    "fp32": dict(precision="fp32", fast=False),
    "fast": dict(precision="fp32", fast=True),
    "bf16": dict(precision="bf16", fast=True),
}
ARCHS = ("recipe", "cifar10")


def arch_setup(arch: str, batch: int, device="cpu"):
    """(model, latents, TrainConfig kwargs, discriminator config) of a benchmark architecture."""
    from ..config import AutoencoderConfig, DiffusionConfig, GeneratorConfig, ModelConfig
    from ..model import LDDGAN
    from ..train.config import default_discriminator
    from ..train.latents import LatentSet
    from . import recipes

    torch.manual_seed(0)
    if arch == "recipe":
        r = recipes.SHAPES_RECIPE
        ae = AutoencoderConfig(resolution=32, **r.autoencoder)
        latent = 32 // ae.downsample_factor
        gen = GeneratorConfig(in_channels=ae.embed_dim, image_size=latent, **r.generator_fields())
        cfg = ModelConfig(generator=gen, autoencoder=ae, diffusion=DiffusionConfig(num_timesteps=r.timesteps),
                          scale_factor=r.scale_factor or 1.0, image_size=32, name="bench-recipe")
        disc = r.discriminator(cfg.latent_shape)
        train = dict(lr_g=r.gan.lr_g, lr_d=r.gan.lr_d, r1_gamma=r.gan.r1_gamma, lazy_reg=r.gan.lazy_reg,
                     ema_decay=r.gan.ema_decay, d_steps=r.gan.d_steps, ema_warmup=r.gan.ema_warmup)
    elif arch == "cifar10":
        from .bench import official_config

        cfg = official_config("cifar10")
        disc = default_discriminator(cfg.latent_shape, ngf=64)
        train = dict(lr_g=1.6e-4, lr_d=1.25e-4, r1_gamma=0.02, lazy_reg=15, ema_decay=0.9999)
    else:
        raise ValueError(f"unknown training benchmark architecture {arch!r}; choose from {list(ARCHS)}")
    model = LDDGAN(cfg, fast=False).eval()
    C, h, w = cfg.latent_shape
    g = torch.Generator().manual_seed(0)
    n = max(256, 2 * batch)
    data = LatentSet(torch.randn(n, C, h, w, generator=g), torch.full((n, C, h, w), 0.05), f"bench-{arch}")
    return model, data, dict(train, batch_size=batch, steps=10_000), disc


def make_trainer(arch: str, batch: int, setting: str, device="cpu"):
    from ..train.config import TrainConfig
    from ..train.trainer import GANTrainer

    model, data, train, disc = arch_setup(arch, batch, device)
    cfg = TrainConfig(**train, **SETTINGS[setting])
    return GANTrainer(model, data, cfg, disc_config=disc, device=device)


def iteration_flops(arch: str, batch: int) -> float:
    """Conv + matmul FLOPs of one training iteration without R1 (forward and backward; torch's flop counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    t = make_trainer(arch, batch, "fp32")
    t.train_step()  # step 0 has R1; step 1 does not
    with FlopCounterMode(display=False) as fc:
        t.train_step()
    return float(fc.get_total_flops())


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_row(arch: str, batch: int, settings, device, blocks: int, log=print) -> dict[str, list[float]]:
    """Seconds per iteration of each setting: `blocks` timed blocks of lazy_reg iterations each, in turn."""
    trainers = {s: make_trainer(arch, batch, s, device) for s in settings}
    lazy = next(iter(trainers.values())).cfg.lazy_reg
    for t in trainers.values():  # warm-up: one full block (allocator, oneDNN primitives, autocast caches)
        for _ in range(lazy):
            t.train_step()
    out = {s: [] for s in settings}
    for _ in range(blocks):
        for s, t in trainers.items():
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(lazy):
                t.train_step()
            _sync(device)
            out[s].append((time.perf_counter() - t0) / lazy)
    return out


def _peak_child(arch: str, batch: int, setting: str, threads: int) -> None:
    """In a fresh process: RSS before building, peak RSS after two iterations (kB), printed as JSON."""
    torch.set_num_threads(threads)
    base = _status_kb("VmRSS")
    t = make_trainer(arch, batch, setting)
    for _ in range(2):
        t.train_step()
    print(json.dumps({"peak_kb": _status_kb("VmHWM"), "base_kb": base}))


def _status_kb(field: str) -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def peak_memory_mb(arch: str, batch: int, setting: str, threads: int, device) -> float | None:
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        t = make_trainer(arch, batch, setting, device)
        for _ in range(2):
            t.train_step()
        return torch.cuda.max_memory_allocated() / 2**20
    if not os.path.exists("/proc/self/status"):
        return None
    r = subprocess.run([sys.executable, "-m", "lddgan_core.bench", "--train", "--_peak", arch, str(batch), setting,
                        str(threads)], capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        return None
    d = json.loads(r.stdout.strip().splitlines()[-1])
    return (d["peak_kb"] - d["base_kb"]) / 1024


def table(rows: list[dict]) -> str:
    head = "| arch | batch | device | threads | setting | it/s | images/s | vs fp32 | GFLOP/it | TFLOP/s | peak MiB |"
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        mem = "-" if r.get("peak_mib") is None else f"{r['peak_mib']:.0f}"
        lines.append(f"| {r['arch']} | {r['batch']} | {r['device']} | {r['threads'] or '-'} | {r['setting']} | "
                     f"{r['it_per_s']:.3f} | {r['images_per_s']:.1f} | {r['speedup']:.2f}x | {r['gflop_per_it']:.1f} | "
                     f"{r['tflops']:.3f} | {mem} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lddgan_core.bench --train", description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default=",".join(ARCHS), help=f"comma list of {', '.join(ARCHS)}")
    ap.add_argument("--batch", default="32,64", help="comma list of batch sizes")
    ap.add_argument("--threads", default="1,2", help="comma list of CPU thread counts")
    ap.add_argument("--device", default="auto", help="cpu, cuda or auto (CUDA rows are added when CUDA is present)")
    ap.add_argument("--settings", default=",".join(SETTINGS), help=f"comma list of {', '.join(SETTINGS)}")
    ap.add_argument("--blocks", type=int, default=3, help="timed blocks (of lazy_reg iterations) per setting")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    ap.add_argument("--json", default=None, help="write the rows and the machine to this JSON file")
    ap.add_argument("--_peak", nargs=4, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a._peak:
        _peak_child(a._peak[0], int(a._peak[1]), a._peak[2], int(a._peak[3]))
        return 0
    archs = [s for s in a.arch.split(",") if s]
    settings = [s for s in a.settings.split(",") if s]
    bad = [s for s in settings if s not in SETTINGS] + [s for s in archs if s not in ARCHS]
    if bad:
        print(f"error: unknown {bad}; settings: {list(SETTINGS)}, archs: {list(ARCHS)}", file=sys.stderr)
        return 2
    if "fp32" not in settings:
        settings.insert(0, "fp32")  # every faster setting is reported next to fp32
    batches = [int(b) for b in a.batch.split(",") if b]
    devices = []
    if a.device in ("auto", "cpu"):
        devices += [("cpu", int(n)) for n in a.threads.split(",") if n]
    if a.device in ("auto", "cuda") and torch.cuda.is_available():
        devices.append(("cuda", None))
    if a.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda, but CUDA is not available", file=sys.stderr)
        return 2
    from .bench import cpu_gemm_tflops

    rows, peaks = [], {}
    for arch in archs:
        for batch in batches:
            flops = iteration_flops(arch, batch)
            for device, threads in devices:
                if threads:
                    torch.set_num_threads(threads)
                    if threads not in peaks:  # the fp32 / bf16 matrix-product ceiling at this thread count
                        peaks[threads] = {"fp32": cpu_gemm_tflops(torch.float32),
                                          "bf16": cpu_gemm_tflops(torch.bfloat16)}
                        print(f"cpu matmul peak, {threads} thread(s): fp32 {peaks[threads]['fp32'] or 0:.3f}, bf16 "
                              f"{peaks[threads]['bf16'] or 0:.3f} TFLOP/s", file=sys.stderr, flush=True)
                times = time_row(arch, batch, settings, device, a.blocks)
                ref = statistics.median(times["fp32"])
                for s in settings:
                    med = statistics.median(times[s])
                    row = dict(arch=arch, batch=batch, device=device, threads=threads, setting=s,
                               s_per_it=times[s], it_per_s=1.0 / med, images_per_s=batch / med, speedup=ref / med,
                               gflop_per_it=flops / 1e9, tflops=flops / med / 1e12,
                               peak_mib=None if a.no_memory else peak_memory_mb(arch, batch, s, threads or 1, device))
                    rows.append(row)
                    print(f"{arch} b{batch} {device}{'' if threads is None else f' x{threads}'} {s}: "
                          f"{row['it_per_s']:.3f} it/s, {row['images_per_s']:.1f} img/s, {row['speedup']:.2f}x",
                          file=sys.stderr, flush=True)
    print(table(rows))
    if a.json:
        info = dict(python=platform.python_version(), torch=torch.__version__, machine=platform.machine(),
                    cpu_count=os.cpu_count(), cuda=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
        atomic_write_text(a.json, json.dumps({"machine": info, "cpu_matmul_peak_tflops": peaks, "rows": rows},
                                             indent=1))
    return 0
