"""`python -m lddgan_core.bench --gpu-suite --out DIR`: everything worth measuring on a CUDA machine, in one command
that fits in about 8 minutes on one modern GPU.

Steps (each in its own process with its own deadline, so one that hangs or fails does not take the others with it;
their share of the budget is fixed below):
  1. tests      the CUDA tests of the suite (`pytest -k cuda`: they skip on machines without CUDA)
  2. inference  `bench` at batch 100 on the official architectures and the shipped model, paths ref / fast / bf16:
                ms per batch, images/s, TFLOP/s against the counted FLOPs, peak memory
  3. train      `bench --train` on CUDA: iterations/s of the recipe and CIFAR-10 configurations, fp32 / fast / bf16
  4. run        a short training run of the default-model recipe's GAN stage on CUDA (shapes data, encoded once):
                iterations/s over the run and the final losses
Writes DIR/<step>.json and DIR/<step>.log per step and DIR/summary.json (what ran, exit codes, seconds, and the
main figures). Without CUDA it stops with exit status 2 and says so (--allow-cpu runs the same steps with tiny
budgets on the CPU, to check the command itself).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch

from ..atomic import atomic_write_text

# (step, seconds allowed) on CUDA: 60 + 150 + 150 + 90 = 450 s, inside the 8 minutes with start-up to spare
BUDGET = {"tests": 60, "inference": 150, "train": 150, "run": 90}


def _commands(out: str, device: str, tiny: bool) -> dict[str, list[str]]:
    py = sys.executable
    j = lambda name: os.path.join(out, f"{name}.json")  # noqa: E731
    if tiny:  # --allow-cpu: the same commands at toy sizes
        infer = ["--arch", "default", "--batch", "2", "--paths", "ref,fast", "--reps", "1", "--warmup", "0",
                 "--no-memory"]
        train = ["--arch", "recipe", "--batch", "4", "--threads", "1", "--blocks", "1", "--no-memory",
                 "--settings", "fp32,fast"]
        run = ["--steps", "4", "--batch", "4", "--images", "64"]
    else:
        infer = ["--arch", "cifar10,celeba256,lsun256,default", "--batch", "100", "--paths", "ref,fast,bf16"]
        train = ["--arch", "recipe,cifar10", "--batch", "32,64"]
        run = ["--steps", "600", "--batch", "64", "--images", "20000"]
    return {
        "tests": [py, "-m", "pytest", "-q", "-k", "cuda", "tests"],
        "inference": [py, "-m", "lddgan_core.bench", "--device", device, *infer, "--json", j("inference")],
        "train": [py, "-m", "lddgan_core.bench", "--train", "--device", device, *train, "--json", j("train")],
        "run": [py, "-m", "lddgan_core.tools.gpu_suite", "--_run", "--device", device, *run, "--json", j("run")],
    }


def short_run(device: str, steps: int, batch: int, images: int, json_path: str | None) -> dict:
    """The default-model recipe's GAN stage for `steps` iterations on shapes data encoded by the shipped model's
    autoencoder; returns it/s (after the first iteration) and the last losses."""
    from ..data.shapes import TRAIN_SEED, make_shapes, to_model_range
    from ..hub.shipped import DEFAULT_MODEL
    from ..model import load_model
    from ..train.config import TrainConfig
    from ..train.latents import build_latents
    from ..train.trainer import GANTrainer
    from . import recipes

    base = load_model(DEFAULT_MODEL, device=device)
    x, _ = make_shapes(images, TRAIN_SEED, 32)
    lat = build_latents(base.autoencoder, 32, images=to_model_range(x), device=device)
    r = recipes.SHAPES_RECIPE
    cfg = TrainConfig(steps=steps, batch_size=batch, lr_g=r.gan.lr_g, lr_d=r.gan.lr_d, r1_gamma=r.gan.r1_gamma,
                      lazy_reg=r.gan.lazy_reg, ema_decay=r.gan.ema_decay, d_steps=r.gan.d_steps,
                      ema_warmup=r.gan.ema_warmup, fast=True)
    disc = r.discriminator(base.latent_shape)
    tr = GANTrainer(base, lat, cfg, disc_config=disc, device=device)
    logs = tr.train_step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    while tr.step < steps:
        logs = tr.train_step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    res = {"device": device, "steps": steps, "batch": batch, "seconds": dt,
           "it_per_s": (steps - 1) / dt if steps > 1 else None, "last": logs}
    if json_path:
        atomic_write_text(json_path, json.dumps(res, indent=1))
    return res


def run_suite(out: str, device: str, tiny: bool, log=print) -> dict:
    os.makedirs(out, exist_ok=True)
    summary = {"device": device, "torch": torch.__version__,
               "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None, "steps": {}}
    scale = 4 if tiny else 1  # tiny CPU runs get more time per unit of work, not less
    for name, cmd in _commands(out, device, tiny).items():
        t0 = time.perf_counter()
        with open(os.path.join(out, f"{name}.log"), "w", encoding="utf-8") as f:
            try:
                rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=BUDGET[name] * scale).returncode
            except subprocess.TimeoutExpired:
                rc = "timeout"
        dt = time.perf_counter() - t0
        jp = os.path.join(out, f"{name}.json")
        summary["steps"][name] = {"command": " ".join(cmd), "exit": rc, "seconds": round(dt, 1),
                                  "json": jp if os.path.isfile(jp) else None}
        log(f"gpu-suite {name}: exit {rc} in {dt:.0f} s")
    atomic_write_text(os.path.join(out, "summary.json"), json.dumps(summary, indent=1))
    return summary


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lddgan_core.bench --gpu-suite", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=False, help="folder for the JSON and log files")
    ap.add_argument("--allow-cpu", action="store_true", help="without CUDA: run every step at toy sizes on the CPU")
    ap.add_argument("--_run", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, default=600, help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=64, help=argparse.SUPPRESS)
    ap.add_argument("--images", type=int, default=20000, help=argparse.SUPPRESS)
    ap.add_argument("--json", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a._run:
        res = short_run(a.device, a.steps, a.batch, a.images, a.json)
        print(json.dumps({k: res[k] for k in ("device", "steps", "batch", "seconds", "it_per_s")}))
        return 0
    if not a.out:
        print("error: --gpu-suite needs --out DIR", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        if not a.allow_cpu:
            print("error: --gpu-suite needs a CUDA device and none is available (torch.cuda.is_available() is "
                  "False); --allow-cpu runs the steps at toy sizes on the CPU to check the command",
                  file=sys.stderr)
            return 2
        device, tiny = "cpu", True
    else:
        device, tiny = "cuda", False
    s = run_suite(a.out, device, tiny, log=lambda m: print(m, file=sys.stderr, flush=True))
    bad = [k for k, v in s["steps"].items() if v["exit"] != 0]
    print(json.dumps(s, indent=1))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
