"""Check an LDDGAN implementation against a fixture set produced by the official code.

A fixture set is a folder with ``config.json``, ``netG.pth``, ``autoencoder.ckpt`` and ``cases.safetensors``
(see shared/fixtures/official_tiny/README.md). Every tensor in ``cases`` whose name this module knows is
recomputed from the inputs stored beside it; the result is a table of max abs errors and tolerances.

    python -m lddgan_core.parity path/to/fixture_dir [more dirs...]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass

import torch

from ..diffusion.schedule import time_grid
from ..formats.official import load_official

# Tolerances (max abs error): latents / generator outputs / coefficients, and decoded images.
ATOL_LATENT, RTOL_LATENT, ATOL_IMAGE = 1e-5, 1e-5, 1e-4
_PREQUANT_NAMES = ("ae_prequant", "ae_pre_quant", "ae_h", "ae_latent", "ae_encoded", "ae_z")


@dataclass
class Check:
    name: str
    max_abs: float
    max_ref: float
    tol: float
    kind: str

    @property
    def ok(self) -> bool:
        return self.max_abs <= self.tol


def _tol(name: str, ref: torch.Tensor) -> tuple[float, str]:
    if "image" in name or "decoded" in name:
        return ATOL_IMAGE, "image"
    return ATOL_LATENT + RTOL_LATENT * float(ref.abs().max()) if ref.numel() else ATOL_LATENT, "latent"


def compute_cases(model, cases: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Our values for every known case name; returns (values, names we do not know)."""
    c, ae, out = cases, model.autoencoder, {}
    with torch.no_grad():
        if {"gen_x_t", "gen_t", "gen_z"} <= set(c):
            out["gen_x0"] = model.generator(c["gen_x_t"], c["gen_t"], c["gen_z"])
        if "ae_image" in c:
            img = c["ae_image"]
            # the modules are called directly: fixture images need not lie in [-1, 1] (no range check)
            moments = ae.quant_conv(ae.encoder(img))
            out["ae_moments"] = moments
            kl = ae.cfg.kind == "kl"
            enc = moments.chunk(2, dim=1)[0] if kl else moments
            for n in _PREQUANT_NAMES:
                out[n] = enc
            if kl:
                mean, logvar = moments.chunk(2, dim=1)
                logvar = logvar.clamp(-30.0, 20.0)
                out["ae_mean"], out["ae_logvar"] = mean, logvar
                if "ae_sample_noise" in c:
                    out["ae_sample"] = mean + torch.exp(0.5 * logvar) * c["ae_sample_noise"]
            # decode / quantize the STORED latent where the fixture gives one (a VQ codebook choice can
            # flip under 1e-6 noise, so quantizing our own encoding would compare different codes)
            stored = next((c[n] for n in ("ae_mean",) + _PREQUANT_NAMES if n in c), None)
            if stored is None and not kl and "ae_moments" in c:
                stored = c["ae_moments"]
            dec_in = enc if stored is None else stored
            if not kl:
                out["ae_quant"] = out["ae_quantized"] = out["ae_z_q"] = ae.quantize(dec_in)
                out["ae_indices"] = ae.quantize.indices(dec_in)
            out["ae_decoded"] = ae.decoder(ae.post_quant_conv(ae.quantize(dec_in) if not kl else dec_in))
        if {"sample_x_T", "sample_z", "sample_noise"} <= set(c):
            lat, traj, x0s = model.sample(x_T=c["sample_x_T"], step_z=c["sample_z"], step_noise=c["sample_noise"],
                                          return_trajectory=True)
            out["sample_x"] = torch.stack(traj)
            out["sample_x0_pred"] = torch.stack(x0s)
            out["sample_final"] = traj[-1]
            out["sample_latent_scaled"] = lat
            out["sample_image"] = model.decode(c["sample_latent_scaled"] if "sample_latent_scaled" in c else lat)
            if model.autoencoder.cfg.kind == "kl":  # VQ: a codebook flip under 1e-6 noise would be a false alarm
                out["sample_image@end_to_end"] = model.decode(lat)  # compared with sample_image
            T = model.num_timesteps
            out["sample_t"] = torch.arange(T - 1, -1, -1, dtype=torch.int64)
    out["coef_time_schedule"] = time_grid(model.num_timesteps)
    for n in ("a_s", "sigmas", "a_s_cum", "sigmas_cum"):
        out[f"coef_{n}"] = getattr(model.coefficients, n)
    for n in ("betas", "posterior_mean_coef1", "posterior_mean_coef2", "posterior_variance",
              "posterior_log_variance_clipped"):
        out[f"coef_{n}"] = getattr(model.posterior, n)
    inputs = {"gen_x_t", "gen_t", "gen_z", "ae_image", "ae_sample_noise", "sample_x_T", "sample_z", "sample_noise"}
    unknown = sorted(set(c) - set(out) - inputs)
    return {k: v for k, v in out.items() if k.split("@")[0] in c}, unknown


def check_fixture(folder: str, model=None, fast: bool = False) -> tuple[list[Check], list[str]]:
    """Load the fixture's official files with load_official and compare every known case tensor. The
    reference path is checked unless ``fast`` (the fast path is also checked against it in the tests)."""
    from safetensors.torch import load_file

    if model is None:
        model = load_official(os.path.join(folder, "config.json"), os.path.join(folder, "netG.pth"),
                              os.path.join(folder, "autoencoder.ckpt"))
        model.set_fast(bool(fast))
    cases = load_file(os.path.join(folder, "cases.safetensors"))
    ours, unknown = compute_cases(model, cases)
    checks = []
    for name, val in ours.items():
        ref = cases[name.split("@")[0]]
        if tuple(val.shape) != tuple(ref.shape) and val.numel() == ref.numel():
            val = val.reshape(ref.shape)  # e.g. VQ indices stored flat [B*h*w] by the official quantizer
        if tuple(val.shape) != tuple(ref.shape):
            checks.append(Check(name, float("inf"), float(ref.abs().max()), 0.0, "shape"))
            continue
        err = (val.double().cpu() - ref.double()).abs().max().item() if ref.numel() else 0.0
        tol, kind = _tol(name, ref.double())
        checks.append(Check(name, err, float(ref.double().abs().max()) if ref.numel() else 0.0, tol, kind))
    return checks, unknown


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lddgan_core.parity", description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (the fixtures were made with 2)")
    ap.add_argument("--fast", action="store_true", help="check the fast path instead of the reference path")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    failed, report = False, {}
    for folder in a.folders:
        checks, unknown = check_fixture(folder, fast=a.fast)
        failed |= not all(ch.ok for ch in checks)
        report[folder] = {"checks": [ch.__dict__ | {"ok": ch.ok} for ch in checks], "unknown_cases": unknown}
        if not a.json:
            print(f"== {folder}")
            for ch in checks:
                print(f"  {'ok  ' if ch.ok else 'FAIL'} {ch.name:38s} max|err| {ch.max_abs:.3e}  tol {ch.tol:.1e}"
                      f"  max|ref| {ch.max_ref:.3g}")
            if unknown:
                print(f"  not checked (unknown names): {unknown}")
    if a.json:
        print(json.dumps(report, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
