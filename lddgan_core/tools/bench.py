"""Benchmark: the reference path against the fast path(s) on the official architectures.

    python -m lddgan_core.bench                                 # CPU: batch 1 and 8; CUDA: batch 100
    python -m lddgan_core.bench --arch lsun256 --batch 1 --reps 3 --json bench.json

For each architecture (the three official ones at full size with random weights, built from the official
hyper-parameters, and the shipped default model), batch size and path ("ref", "fast" = float32 fast path,
"bf16" = fast path + bfloat16 autocast) it times sampling only, decoding only and end to end (sampling +
decoding), interleaving the paths rep by rep so that a busy machine slows them alike. Reported: ms per
batch (mean and median), images/s, the ratio to the reference path (median based), the max abs difference
of the outputs from the reference path's on the same seeds (and PSNR of the images), peak memory (CPU: the
peak RSS growth of a fresh subprocess running one end-to-end batch; CUDA: max_memory_allocated), and the
FLOPs (conv + matmul, counted by torch.utils.flop_counter) per image with the achieved TFLOP/s. On CUDA the
protocol is the paper's: warm-up, then the mean over repeated runs timed with CUDA events.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time

import torch

from ..atomic import atomic_write_text
from ..config import AutoencoderConfig, DiffusionConfig, GeneratorConfig, ModelConfig
from ..fast import FastOptions
from ..data.images import to_uint8
from ..hub.shipped import DEFAULT_MODEL
from ..model import LDDGAN, load_model
from ..train.config import AUTOENCODER_PRESETS, GENERATOR_PRESETS

# The official architectures: the train presets of the same names (the official run.sh test commands), at the
# latent / image sizes of each release. nz = 50 for LSUN: what the released training used (the test line's 100 is
# overridden by the checkpoint).
OFFICIAL = {
    "cifar10": dict(generator=dict(GENERATOR_PRESETS["cifar10"], in_channels=4, image_size=16),
                    autoencoder=dict(AUTOENCODER_PRESETS["kl-f2"], resolution=32),
                    T=4, scale_factor=105.0, image_size=32),
    "celeba256": dict(generator=dict(GENERATOR_PRESETS["celeba256"], in_channels=3, image_size=64),
                      autoencoder=dict(AUTOENCODER_PRESETS["vq-f4"], resolution=256),
                      T=2, scale_factor=6.0, image_size=256),
    "lsun256": dict(generator=dict(GENERATOR_PRESETS["lsun256"], in_channels=4, image_size=32),
                    autoencoder=dict(AUTOENCODER_PRESETS["kl-f8"], resolution=256),
                    T=4, scale_factor=60.0, image_size=256),
}
# FLOPs per image, T generator steps + one decode, as the README states them (G = 1e9).
EXPECTED_FLOPS = {"cifar10": 20.6e9, "celeba256": 780e9, "lsun256": 694e9}
# Dense bf16 tensor-core peaks (TFLOP/s) of GPUs we may meet, for the "fraction of peak" column.
BF16_PEAK_TFLOPS = {"H200": 989.0, "H100 PCIe": 756.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L40": 181.0,
                    "L4": 121.0, "A10": 125.0}


def bf16_peak_for(gpu_name: str) -> float | None:
    """The table's entry whose name appears in `gpu_name` as whole words, the longest first (so an "L40S" is
    not taken for an "L4"); None when unknown (give --peak-tflops)."""
    import re

    for k in sorted(BF16_PEAK_TFLOPS, key=len, reverse=True):
        if re.search(rf"(?<![A-Za-z0-9]){re.escape(k)}(?![A-Za-z0-9])", gpu_name):
            return BF16_PEAK_TFLOPS[k]
    return None
PATHS = {
    "ref": FastOptions.reference(),
    "fast": FastOptions(),  # float32 fast path (the default)
    "bf16": FastOptions(autocast="bf16"),  # generator fp32 for VQ models only ("auto")
    "bf16dec": FastOptions(autocast="bf16", generator_fp32=True),  # bf16 decoder, fp32 generator
    "bf16gen": FastOptions(autocast="bf16", generator_fp32=False),  # bf16 generator also for VQ models
    "fp16": FastOptions(autocast="fp16"),
    "compile": FastOptions(compile=True),  # float32 fast path + torch.compile (inductor; compiles in the warm-up)
    "max": FastOptions(autocast="bf16", compile=True, cuda_graphs=True),
}
PARTS = ("sample", "decode", "e2e")


def official_config(name: str) -> ModelConfig:
    a = OFFICIAL[name]
    return ModelConfig(generator=GeneratorConfig(**a["generator"]), autoencoder=AutoencoderConfig(**a["autoencoder"]),
                       diffusion=DiffusionConfig(num_timesteps=a["T"]), scale_factor=a["scale_factor"],
                       image_size=a["image_size"], name=f"{name} (random weights)")


def build(arch: str, device: str = "cpu", seed: int = 0):
    """A full-size official architecture with random weights (seeded), or the shipped default model."""
    if arch == "default":
        return load_model(DEFAULT_MODEL, device=device)

    torch.manual_seed(seed)
    return LDDGAN(official_config(arch)).to(device).eval()


# -- FLOPs ------------------------------------------------------------------------------------------------
def count_flops(config: ModelConfig, fast: bool | FastOptions = False, latent: int | None = None) -> dict[str, float]:
    """Conv + matmul FLOPs per image (multiply-add = 2), counted on the meta device (no compute):
    generator forward, decode, and T * generator + decode (at `latent` x `latent` latent pixels if given)."""
    from torch.utils.flop_counter import FlopCounterMode


    with torch.device("meta"):
        m = LDDGAN(config, fast=fast)
        C, h, w = config.latent_shape
        if latent:
            h = w = int(latent)
        x, t, z = torch.zeros(1, C, h, w), torch.zeros(1, dtype=torch.int64), torch.zeros(1, config.generator.nz)
    out = {}
    with torch.no_grad():
        with FlopCounterMode(display=False) as fc:
            m.generator(x, t, z)
        out["generator"] = float(fc.get_total_flops())
        with FlopCounterMode(display=False) as fc:
            m.autoencoder.decode(x)
        out["decode"] = float(fc.get_total_flops())
    out["total"] = config.diffusion.num_timesteps * out["generator"] + out["decode"]
    return out


# -- the machine's matrix peak (CPU) ------------------------------------------------------------------------
def cpu_gemm_tflops(dtype: torch.dtype = torch.float32, n: int = 2048, reps: int = 3) -> float | None:
    """Measured matrix-multiply throughput of this CPU (TFLOP/s, best of `reps` n x n x n products with the
    current thread count): the practical ceiling for convolution-bound inference. None if `dtype` fails."""
    try:
        a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
        torch.mm(a, b)  # warm-up (thread pool, packing buffers)
        best = min(_time_once(lambda: torch.mm(a, b), "cpu")[0] for _ in range(reps))
    except RuntimeError:
        return None
    return 2 * n ** 3 / best / 1e12


def roofline_lines(rows: list[dict], peak_fp32: float | None) -> list[str]:
    """For each CPU target the float32 fast path misses: how close the reference path already is to the
    measured fp32 matrix peak, and what fraction of it the target would need (work = reference FLOPs)."""
    out = []
    if not peak_fp32:
        return out
    for dev, arch, B, part, path, need in TARGETS:
        get = lambda p: next((r for r in rows if (r["arch"], r["batch"], r["part"], r["path"]) == (arch, B, part, p)
                              and "tflops" in r), None)  # noqa: E731
        ref, fast = get("ref"), get(path)
        if dev != "cpu" or ref is None or fast is None or fast.get("speedup_vs_ref", need) >= need:
            continue
        # medians, as the speed-ups use: work per batch / median time (work = the reference FLOP count)
        tf = lambda r: r["tflops"] * r["ms_mean"] / r["ms_median"]  # noqa: E731
        need_tf = tf(ref) * need
        out.append(f"roofline {arch} B={B} {part}: this CPU's fp32 matmul peak is {peak_fp32:.3f} TFLOP/s; "
                   f"reference path {tf(ref):.3f} ({tf(ref) / peak_fp32:.0%}), {path} path {tf(fast):.3f} "
                   f"({tf(fast) / peak_fp32:.0%}); {need}x in float32 needs {need_tf:.3f} TFLOP/s = "
                   f"{need_tf / peak_fp32:.0%} of the peak end to end, norms and activations included"
                   + (" (above the peak: only fewer FLOPs or lower precision can reach it)"
                      if need_tf > peak_fp32 else ""))
    return out


# -- where the time goes ---------------------------------------------------------------------------------
MATMUL_OPS = ("conv", "addmm", "aten::mm", "bmm", "scaled_dot_product")  # ops that do the counted FLOPs


def profile_e2e(arch: str, batch: int, path: str, device="cpu", top: int = 12, latent: int | None = None) -> dict:
    """torch.profiler over one end-to-end batch (after a warm-up): the share of time in convolutions and in
    all matrix ops (convs, matmuls, attention), their achieved TFLOP/s (the path's counted FLOPs over that
    time), and the top ops by self time."""
    from torch.profiler import ProfilerActivity, profile

    from torch.autograd import DeviceType

    m = build(arch, device).set_fast(PATHS[path])
    cuda = torch.device(device).type == "cuda"
    sync = (lambda: torch.cuda.synchronize(device)) if cuda else (lambda: None)  # noqa: E731
    size = (latent, latent) if latent else None
    run = lambda: m.decode(m.sample(batch_size=batch, seed=0, latent_size=size))  # noqa: E731
    for _ in range(2 if PATHS[path].compile else 1):
        run()
    sync()
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts) as prof:
        run()
        sync()
    # on CUDA an op's self device time already holds the kernels it launched, which are listed again as
    # device-side entries: keep the CPU-side ops only, so each kernel counts once, under its op
    events = [e for e in prof.key_averages() if not e.key.startswith("ProfilerStep")
              and (not cuda or e.device_type == DeviceType.CPU)]
    self_us = lambda e: e.self_device_time_total if cuda else e.self_cpu_time_total  # noqa: E731
    total = sum(self_us(e) for e in events)
    conv = sum(self_us(e) for e in events if "conv" in e.key)
    mat = sum(self_us(e) for e in events if any(k in e.key for k in MATMUL_OPS))
    flops = count_flops(m.config, PATHS[path], latent)["total"] * batch
    return {"arch": arch, "batch": batch, "path": path, "total_ms": total / 1e3, "conv_share": conv / total,
            "matmul_share": mat / total, "matmul_tflops": flops / (mat / 1e6) / 1e12 if mat else None,
            "top": [(e.key, self_us(e) / 1e3, e.count) for e in sorted(events, key=self_us, reverse=True)[:top]]}


def _fmt_profile(p: dict) -> str:
    lines = [f"# profile {p['arch']} B={p['batch']} {p['path']}: {p['total_ms']:.1f} ms of op self time; "
             f"convolutions {p['conv_share']:.0%}, all matrix ops {p['matmul_share']:.0%} at "
             + (f"{p['matmul_tflops']:.3f} TFLOP/s" if p["matmul_tflops"] else "n/a")]
    lines += [f"#   {ms:9.1f} ms  {n:5d} calls  {name}" for name, ms, n in p["top"]]
    return "\n".join(lines)


# -- timing -----------------------------------------------------------------------------------------------
def _time_once(fn, device) -> tuple[float, object]:
    """Seconds for one call (CUDA events on GPU), and the call's result."""
    if torch.device(device).type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = fn()
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end) / 1e3, out
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def batch_invariance(in_batch: torch.Tensor, alone: torch.Tensor) -> dict:
    """The same seed's image made inside a batch and alone: max abs difference, and the fraction of 8-bit
    values that differ (the project promises the same image whatever the batch size)."""

    return {"batch_invariance_max_diff": float((in_batch - alone).abs().max()),
            "batch_invariance_8bit_changed": float((to_uint8(in_batch) != to_uint8(alone)).mean())}


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of images in [-1, 1] (peak-to-peak 2), after clamping both."""
    mse = float(((a.clamp(-1, 1) - b.clamp(-1, 1)).double() ** 2).mean())
    return float("inf") if mse == 0 else 10 * math.log10(4.0 / mse)


def bench_arch(arch: str, batches, paths, device, reps: int, warmup: int, parts=PARTS, log=print,
               latent: int | None = None) -> list[dict]:
    """Rows of results for one architecture: one per (batch, path, part); `latent`: latent side (default: the
    model's own)."""
    size = (latent, latent) if latent else None
    base = build(arch, device)
    # one copy of the weights per path, so that no path pays for another's memory-format conversion
    models = {p: (copy.deepcopy(base) if i < len(paths) - 1 else base).set_fast(PATHS[p]) for i, p in enumerate(paths)}
    rows = []
    for B in batches:
        dec_in = models[paths[0]].sample(batch_size=B, seed=1, latent_size=size)  # the decode-only input
        calls = {
            "sample": lambda m: m.sample(batch_size=B, seed=0, latent_size=size),
            "decode": lambda m: m.decode(dec_in),
            "e2e": lambda m: m.decode(m.sample(batch_size=B, seed=0, latent_size=size)),
        }
        for part in parts:
            times = {p: [] for p in paths}
            outs = {}
            for p in paths:  # warm-up (also the output compared between paths); compiled paths may compile twice
                for _ in range(max(warmup, 2 if PATHS[p].compile else 1)):
                    _, outs[p] = _time_once(lambda: calls[part](models[p]), device)
            for _ in range(reps):
                for p in paths:  # interleaved: a busy machine slows every path alike
                    dt, _ = _time_once(lambda: calls[part](models[p]), device)
                    times[p].append(dt)
            for p in paths:
                ts = times[p]
                row = dict(arch=arch, batch=B, part=part, path=p, reps=len(ts), ms_mean=1e3 * statistics.mean(ts),
                           ms_median=1e3 * statistics.median(ts), ms_min=1e3 * min(ts),
                           images_per_s=B / statistics.mean(ts))
                if part == "e2e" and B > 1:  # does image 0 depend on the batch it was made in?
                    alone = models[p].decode(models[p].sample(seeds=[0], latent_size=size)).float()
                    row.update(batch_invariance(outs[p][:1].float(), alone))
                if "ref" in times:
                    row["speedup_vs_ref"] = statistics.median(times["ref"]) / statistics.median(ts)
                    d = (outs[p].float() - outs["ref"].float()).abs().max()
                    row["max_abs_diff_vs_ref"] = float(d)
                    if part != "sample":
                        row["psnr_vs_ref_db"] = psnr(outs[p].float(), outs["ref"].float())
                rows.append(row)
                log(_fmt_row(row))
    if torch.device(device).type == "cuda":
        for p in paths:  # peak memory of one end-to-end batch per path, at the largest batch
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
            models[p].decode(models[p].sample(batch_size=max(batches), seed=0, latent_size=size))
            peak = torch.cuda.max_memory_allocated(device) - before
            # CUDA graphs replay into pools allocated at capture, which a replay's max_memory_allocated does not
            # see: the memory PyTorch holds (pools included) is reported too
            for r in rows:
                if r["path"] == p and r["batch"] == max(batches):
                    r["peak_mem_mb_e2e"] = peak / 2 ** 20
                    r["reserved_mem_mb"] = torch.cuda.memory_reserved(device) / 2 ** 20
            log(f"# {arch} B={max(batches)} {p}: peak allocated growth {peak / 2 ** 20:.0f} MiB, reserved now "
                f"{torch.cuda.memory_reserved(device) / 2 ** 20:.0f} MiB")
    return rows


def peak_rss_e2e(arch: str, batch: int, path: str, threads: int | None = None,
                 latent: int | None = None) -> float | None:
    """Peak RSS growth (MiB) of one end-to-end batch, measured in a fresh CPU subprocess."""
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", "lddgan_core.bench", "--_peak", arch, str(batch), path]
    if threads:
        cmd += ["--threads", str(threads)]
    if latent:
        cmd += ["--latent-size", str(latent)]
    try:
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600, check=True).stdout
        return float(json.loads(out.strip().splitlines()[-1])["peak_mb"])
    except (subprocess.SubprocessError, ValueError, KeyError, IndexError):
        return None


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _peak_child(arch: str, batch: int, path: str, latent: int | None = None) -> None:
    m = build(arch, "cpu").set_fast(PATHS[path])
    m.decode(m.sample(batch_size=1, seed=0))  # first-call allocations (oneDNN primitives, caches) out of the way
    size = (latent, latent) if latent else None
    try:  # reset the high-water mark so model building does not count
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        base = _status_kb("VmRSS")
        m.decode(m.sample(batch_size=batch, seed=0, latent_size=size))
        peak = _status_kb("VmHWM")
    except OSError:  # no procfs (not Linux): the peak since start, model building included
        import resource

        base = 0
        m.decode(m.sample(batch_size=batch, seed=0, latent_size=size))
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux; an upper bound anyway
    print(json.dumps({"peak_mb": (peak - base) / 1024}))


# -- report -----------------------------------------------------------------------------------------------
def machine_info(device) -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
            "threads": torch.get_num_threads(), "device": str(device)}
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        info["cpu"] = platform.processor()
    info["cpu_count"] = os.cpu_count()
    if hasattr(os, "getloadavg"):
        info["loadavg_start"] = os.getloadavg()
    if torch.device(device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _fmt_row(r: dict) -> str:
    s = (f"{r['arch']:>10} B={r['batch']:<3} {r['part']:>6} {r['path']:>5}: {r['ms_mean']:10.1f} ms/batch "
         f"(median {r['ms_median']:.1f}) {r['images_per_s']:8.2f} img/s")
    if "speedup_vs_ref" in r:
        s += f"  x{r['speedup_vs_ref']:.2f} vs ref  max|d| {r['max_abs_diff_vs_ref']:.2e}"
        if "psnr_vs_ref_db" in r:
            s += f"  PSNR {r['psnr_vs_ref_db']:.1f} dB"
    if "batch_invariance_max_diff" in r:
        s += (f"  batch-vs-alone max|d| {r['batch_invariance_max_diff']:.1e} "
              f"({100 * r['batch_invariance_8bit_changed']:.2f}% of 8-bit values)")
    return s


def pct(r: dict) -> str:
    """% of the matrix peak: the GPU's bf16 peak (CUDA) or this CPU's measured fp32 matmul peak."""
    v = r.get("fraction_of_bf16_peak", r.get("fraction_of_fp32_matmul_peak"))
    return "" if v is None else f"{100 * v:.0f}%"


def table(rows: list[dict]) -> str:
    head = ("| arch | batch | part | path | ms/batch (mean) | median | img/s | vs ref | max abs diff | PSNR dB "
            "| GFLOP/img | TFLOP/s | % peak | peak MiB | batch vs alone: max diff, 8-bit changed |")
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    for r in rows:
        f = lambda k, fmt: (fmt.format(r[k]) if r.get(k) is not None else "")  # noqa: E731
        lines.append("| " + " | ".join([
            r["arch"], str(r["batch"]), r["part"], r["path"], f("ms_mean", "{:.1f}"), f("ms_median", "{:.1f}"),
            f("images_per_s", "{:.2f}"), f("speedup_vs_ref", "{:.2f}x"), f("max_abs_diff_vs_ref", "{:.1e}"),
            f("psnr_vs_ref_db", "{:.1f}"), f("gflop_per_image", "{:.1f}"), f("tflops", "{:.3f}"),
            pct(r), f("peak_mem_mb_e2e", "{:.0f}"),
            (f"{r['batch_invariance_max_diff']:.1e}, {100 * r['batch_invariance_8bit_changed']:.2f}%"
             if "batch_invariance_max_diff" in r else "")]) + " |")
    return "\n".join(lines)


TARGETS = [  # (device type, arch, batch, part, path, minimum speedup) from the issue
    ("cpu", "cifar10", 8, "e2e", "fast", 1.5), ("cpu", "lsun256", 1, "e2e", "fast", 1.3),
    ("cuda", "celeba256", 100, "e2e", "bf16", 2.5), ("cuda", "lsun256", 100, "e2e", "bf16", 2.5),
]


def target_lines(rows: list[dict], device) -> list[str]:
    dtype = torch.device(device).type
    out = []
    for dev, arch, B, part, path, need in TARGETS:
        if dev != dtype:
            continue
        for p in (path, "bf16") if path == "fast" else (path,):
            r = next((r for r in rows if (r["arch"], r["batch"], r["part"], r["path"]) == (arch, B, part, p)), None)
            if r is not None and "speedup_vs_ref" in r:
                ok = "met" if r["speedup_vs_ref"] >= need else "NOT met"
                extra = f", PSNR {r['psnr_vs_ref_db']:.1f} dB" if "psnr_vs_ref_db" in r else ""
                out.append(f"target {arch} B={B} {part} {p} >= {need}x: measured {r['speedup_vs_ref']:.2f}x "
                           f"({ok}; max abs diff {r['max_abs_diff_vs_ref']:.1e}{extra})")
    return out


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--train" in argv:  # training throughput: lddgan_core/tools/train_bench.py
        from . import train_bench

        return train_bench.main([a for a in argv if a != "--train"])
    if "--gpu-suite" in argv:  # the CUDA suite: lddgan_core/tools/gpu_suite.py
        from . import gpu_suite

        return gpu_suite.main([a for a in argv if a != "--gpu-suite"])
    ap = argparse.ArgumentParser(prog="python -m lddgan_core.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="cifar10,celeba256,lsun256,default",
                    help="comma list of cifar10, celeba256, lsun256, default (the shipped model)")
    ap.add_argument("--batch", default=None, help="comma list of batch sizes (default: CPU 1,8; CUDA 100)")
    ap.add_argument("--device", default="auto", help="cpu, cuda or auto")
    ap.add_argument("--paths", default=None,
                    help="comma list of ref, fast, bf16, bf16dec (generator fp32), bf16gen (generator bf16 also "
                         "for VQ), fp16, compile (fast + torch.compile), max (default: ref,fast,bf16)")
    ap.add_argument("--parts", default="sample,decode,e2e")
    ap.add_argument("--reps", type=int, default=None, help="timed repetitions per path (default: CPU 3, CUDA 10)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed runs first (default: CPU 1, CUDA 3)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    ap.add_argument("--memory-only", action="store_true", help="CPU: only the peak-memory measurement, no timing")
    ap.add_argument("--peak-tflops", type=float, default=None, help="the GPU's bf16 matrix peak, for the %% column")
    ap.add_argument("--latent-size", type=int, default=None,
                    help="square latent side to sample and decode at (default: the model's own; e.g. 128 with "
                         "lsun256 gives 1024 px images)")
    ap.add_argument("--profile", action="store_true",
                    help="instead of timing: torch.profiler over one end-to-end batch per path (time shares, "
                         "throughput of the matrix ops, top ops)")
    ap.add_argument("--json", default=None, help="write all results to this JSON file")
    ap.add_argument("--_peak", nargs=3, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    if a._peak:
        _peak_child(a._peak[0], int(a._peak[1]), a._peak[2], a.latent_size)
        return 0
    device = ("cuda" if torch.cuda.is_available() else "cpu") if a.device == "auto" else a.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda: CUDA is not available on this machine")
    cuda = device.startswith("cuda")
    if a.latent_size is not None and a.latent_size < 1:
        raise SystemExit(f"error: --latent-size must be a positive integer, got {a.latent_size}")
    archs = [s for s in a.arch.split(",") if s]
    bad = [s for s in archs if s not in OFFICIAL and s != "default"]
    if bad:
        raise SystemExit(f"error: unknown --arch {bad}; choose from {sorted(OFFICIAL) + ['default']}")
    batches = [int(b) for b in (a.batch or ("100" if cuda else "1,8")).split(",")]
    paths = (a.paths or "ref,fast,bf16").split(",")
    if any(p not in PATHS for p in paths):
        raise SystemExit(f"error: unknown --paths entry; choose from {sorted(PATHS)}")
    parts = tuple(a.parts.split(","))
    reps = a.reps if a.reps is not None else (10 if cuda else 3)
    warmup = a.warmup if a.warmup is not None else (3 if cuda else 1)

    if a.profile:
        profiles = []
        for arch in archs:
            for B in batches:
                for p in paths:
                    profiles.append(profile_e2e(arch, B, p, device, latent=a.latent_size))
                    print(_fmt_profile(profiles[-1]), flush=True)
        if a.json:

            atomic_write_text(a.json, json.dumps({"machine": machine_info(device), "profiles": profiles}, indent=1))
        return 0
    info = machine_info(device)
    print(f"# {info.get('gpu') or info['cpu']} | torch {info['torch']} | {info['threads']} threads | "
          f"device {device} | reps {reps}, warm-up {warmup}"
          + (f" | latent {a.latent_size}x{a.latent_size}" if a.latent_size else ""))
    load = info.get("loadavg_start", (0.0,))[0]
    if not cuda and load > 0.5 and (info["cpu_count"] or 1) - load < info["threads"]:
        # measured here: 2 threads on a 2-core machine with load 3 ran 2-10x slower than 1 thread
        print(f"# warning: load average {load:.1f} on {info['cpu_count']} cores: other processes hold the cores; "
              f"threads that wait for each other distort timings (--threads 1 gives stable ratios)")
    rows, flops = [], {}
    for arch in archs:
        cfg = build(arch, "cpu").config if arch == "default" else official_config(arch)
        fl_ref, fl_fast = count_flops(cfg, False, a.latent_size), count_flops(cfg, True, a.latent_size)
        flops[arch] = {"reference": fl_ref, "fast": fl_fast, "expected_total": EXPECTED_FLOPS.get(arch)}
        print(f"# {arch}: FLOPs/image (reference path) G {fl_ref['generator'] / 1e9:.2f} G, decode "
              f"{fl_ref['decode'] / 1e9:.2f} G, T*G+decode {fl_ref['total'] / 1e9:.1f} G"
              + (f" (expected: {EXPECTED_FLOPS[arch] / 1e9:g} G)" if arch in EXPECTED_FLOPS and not a.latent_size else "")
              + f"; fast path {fl_fast['total'] / 1e9:.1f} G")
        if a.memory_only:
            arch_rows = [dict(arch=arch, batch=B, part="e2e", path=p) for B in batches for p in paths]
        else:
            arch_rows = bench_arch(arch, batches, paths, device, reps, warmup, parts, latent=a.latent_size)
        for r in [r for r in arch_rows if "ms_mean" in r]:
            per = {"sample": cfg.diffusion.num_timesteps * fl_ref["generator"], "decode": fl_ref["decode"],
                   "e2e": fl_ref["total"]}[r["part"]]
            r["gflop_per_image"] = per / 1e9  # the reference count: the work the model defines
            r["tflops"] = per * r["batch"] / (r["ms_mean"] / 1e3) / 1e12
        if not cuda and not a.no_memory:
            for B in batches:
                for p in paths:
                    peak = peak_rss_e2e(arch, B, p, a.threads, a.latent_size)
                    for r in arch_rows:
                        if (r["batch"], r["path"]) == (B, p):
                            r["peak_mem_mb_e2e"] = peak
                    print(f"# {arch} B={B} {p}: peak RSS growth, one end-to-end batch: "
                          + (f"{peak:.0f} MiB" if peak is not None else "n/a"))
        rows += arch_rows
    if not cuda and not a.memory_only:
        peaks = {"fp32": cpu_gemm_tflops(torch.float32), "bf16": cpu_gemm_tflops(torch.bfloat16)}
        info["cpu_matmul_tflops"] = peaks
        print(f"# this CPU's measured matmul peak (2048^3, {info['threads']} threads): "
              + ", ".join(f"{k} " + (f"{v:.3f}" if v else "n/a") for k, v in peaks.items()) + " TFLOP/s")
        if peaks["fp32"]:
            for r in [r for r in rows if "tflops" in r]:  # median based, like the speed-ups
                r["fraction_of_fp32_matmul_peak"] = r["tflops"] * r["ms_mean"] / r["ms_median"] / peaks["fp32"]
    peak_tf = a.peak_tflops
    if cuda and peak_tf is None:
        peak_tf = bf16_peak_for(info.get("gpu", ""))
    if peak_tf:
        for r in [r for r in rows if "tflops" in r]:
            r["fraction_of_bf16_peak"] = r["tflops"] / peak_tf
    if hasattr(os, "getloadavg"):
        info["loadavg_end"] = os.getloadavg()
    print()
    print(table(rows))
    targets = target_lines(rows, device)
    print()
    if not cuda and not a.memory_only:
        targets += roofline_lines(rows, info["cpu_matmul_tflops"]["fp32"])
    for line in targets:
        print(line)
    if not cuda:
        print("(no GPU: the CUDA targets were not measured)")
    if a.json:

        doc = {"machine": info, "settings": {"reps": reps, "warmup": warmup, "batches": batches, "paths": paths,
                                            "parts": list(parts), "latent_size": a.latent_size},
               "flops_per_image": flops, "results": rows, "targets": targets}
        atomic_write_text(a.json, json.dumps(doc, indent=1))
        print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
