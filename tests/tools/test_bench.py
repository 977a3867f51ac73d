"""The benchmark: official architectures and their FLOP counts (the issue's figures), a smoke run of the
CLI on the shipped model, the peak-memory subprocess, and the target report."""
import json

import pytest
import torch

from lddgan_core.tools import bench
from lddgan_core.config import AutoencoderConfig, GeneratorConfig
from conftest import OFFICIAL_AE, OFFICIAL_G  # the sizes tested against the official state dicts

AE_OF = {"cifar10": "cifar10_kl_f2", "celeba256": "vq_f4", "lsun256": "kl_f8"}


@pytest.mark.parametrize("arch", bench.OFFICIAL)
def test_bench_architectures_are_the_official_ones(arch):
    cfg = bench.official_config(arch)
    assert cfg.generator == GeneratorConfig(**OFFICIAL_G[arch][0])
    assert cfg.autoencoder == AutoencoderConfig(**OFFICIAL_AE[AE_OF[arch]][0])
    assert (cfg.diffusion.num_timesteps, cfg.scale_factor, cfg.image_size) == {
        "cifar10": (4, 105.0, 32), "celeba256": (2, 6.0, 256), "lsun256": (4, 60.0, 256)}[arch]


@pytest.mark.parametrize("arch,g,d", [("cifar10", 3.33e9, 7.23e9), ("celeba256", 54.5e9, 671e9),
                                      ("lsun256", 18.0e9, 622e9)])
def test_flop_counts_match_the_issue(arch, g, d):
    """Conv + matmul FLOPs per image (LDDGAN_FACTS.md / the issue: 20.6 G, 780 G, 694 G)."""
    f = bench.count_flops(bench.official_config(arch))
    assert f["generator"] == pytest.approx(g, rel=5e-3) and f["decode"] == pytest.approx(d, rel=5e-3)
    assert f["total"] == pytest.approx(bench.EXPECTED_FLOPS[arch], rel=5e-3)
    fast = bench.count_flops(bench.official_config(arch), fast=True)
    # the fused upsample convs do 4/9 of the MACs: fewer decoder FLOPs, same generator work (+-1%)
    assert fast["decode"] < 0.95 * f["decode"]
    assert fast["generator"] == pytest.approx(f["generator"], rel=1e-2)


def test_bench_cli_smoke(tmp_path, capsys):
    out = tmp_path / "b.json"
    n = torch.get_num_threads()
    try:  # one thread: tiny ops on a busy 2-core machine otherwise wait on each other
        assert bench.main(["--arch", "default", "--batch", "2", "--reps", "1", "--warmup", "0", "--no-memory",
                           "--paths", "ref,fast,bf16", "--threads", "1", "--json", str(out)]) == 0
    finally:
        torch.set_num_threads(n)
    doc = json.loads(out.read_text())
    rows = doc["results"]
    assert {(r["path"], r["part"]) for r in rows} == {(p, q) for p in ("ref", "fast", "bf16")
                                                      for q in ("sample", "decode", "e2e")}
    for r in rows:
        assert r["ms_mean"] > 0 and r["images_per_s"] == pytest.approx(2 / (r["ms_mean"] / 1e3))
        assert r["speedup_vs_ref"] > 0 and r["gflop_per_image"] > 0
        if r["path"] == "ref":
            assert r["max_abs_diff_vs_ref"] == 0
        if r["path"] == "fast":  # float32 fast path: the issue's bound on images
            assert r["max_abs_diff_vs_ref"] <= 1e-4
        if r["path"] == "bf16" and r["part"] == "decode":
            assert 40 <= r["psnr_vs_ref_db"] < 150
        if r["part"] == "e2e":  # image 0 made in a batch of 2 and alone
            assert 0 <= r["batch_invariance_8bit_changed"] <= 1
            if r["path"] in ("ref", "fast"):  # float32: the same image (to rounding)
                assert r["batch_invariance_max_diff"] <= 1e-4 and r["batch_invariance_8bit_changed"] < 0.01
        else:
            assert "batch_invariance_max_diff" not in r
    assert doc["flops_per_image"]["default"]["reference"]["total"] > 0
    assert doc["machine"]["torch"] == torch.__version__ and doc["machine"]["threads"] == 1
    text = capsys.readouterr().out
    assert "| arch | batch | part | path |" in text and "no GPU" in text
    assert doc["machine"]["cpu_matmul_tflops"]["fp32"] > 0
    assert all(r["fraction_of_fp32_matmul_peak"] == pytest.approx(r["tflops"] / doc["machine"]["cpu_matmul_tflops"]
                                                                  ["fp32"]) for r in rows)


def test_bench_rejects_unknown_arch():
    with pytest.raises(SystemExit, match="unknown --arch"):
        bench.main(["--arch", "imagenet"])


def test_peak_memory_only_run(tmp_path):
    out = tmp_path / "m.json"
    n = torch.get_num_threads()
    try:
        bench.main(["--arch", "default", "--batch", "2", "--paths", "ref,fast", "--memory-only", "--threads", "1",
                    "--json", str(out)])
    finally:
        torch.set_num_threads(n)
    rows = json.loads(out.read_text())["results"]
    assert [(r["path"], r["batch"]) for r in rows] == [("ref", 2), ("fast", 2)]
    for r in rows:  # measured in a fresh subprocess: MiB for two 16 px images
        assert r["peak_mem_mb_e2e"] is not None and 0 <= r["peak_mem_mb_e2e"] < 500
        assert "ms_mean" not in r


def test_target_report():
    rows = [dict(arch="cifar10", batch=8, part="e2e", path="fast", speedup_vs_ref=1.6, max_abs_diff_vs_ref=1e-6),
            dict(arch="cifar10", batch=8, part="e2e", path="bf16", speedup_vs_ref=1.4, max_abs_diff_vs_ref=1e-2,
                 psnr_vs_ref_db=50.0),
            dict(arch="lsun256", batch=1, part="e2e", path="fast", speedup_vs_ref=1.2, max_abs_diff_vs_ref=1e-5)]
    lines = bench.target_lines(rows, "cpu")
    assert len(lines) == 3
    assert "1.60x (met" in lines[0] and "1.40x (NOT met" in lines[1] and "PSNR 50.0" in lines[1]
    assert "lsun256" in lines[2] and "NOT met" in lines[2]
    assert bench.target_lines(rows, "cuda") == []


def test_roofline_report():
    # reference: 0.2 TFLOP/s on the median; fast only 1.2x. 1.5x needs 0.3 TFLOP/s = 75% of a 0.4 peak
    rows = [dict(arch="cifar10", batch=8, part="e2e", path="ref", tflops=0.2, ms_mean=100.0, ms_median=100.0),
            dict(arch="cifar10", batch=8, part="e2e", path="fast", tflops=0.24, ms_mean=83.3, ms_median=83.3,
                 speedup_vs_ref=1.2)]
    (line,) = bench.roofline_lines(rows, 0.4)
    assert "peak is 0.400" in line and "reference path 0.200 (50%)" in line and "fast path 0.240 (60%)" in line
    assert "needs 0.300 TFLOP/s = 75%" in line
    rows[0]["ms_median"] = 50.0  # medians decide: the reference did its work at 0.4 TFLOP/s -> 1.5x needs 150%
    assert "needs 0.600 TFLOP/s = 150%" in bench.roofline_lines(rows, 0.4)[0]
    rows[1]["speedup_vs_ref"] = 1.6  # target met: nothing to explain
    assert bench.roofline_lines(rows, 0.4) == [] and bench.roofline_lines(rows, None) == []


def test_cpu_matmul_peak_is_measured():
    tf = bench.cpu_gemm_tflops(torch.float32, n=256, reps=2)
    assert tf is not None and 1e-4 < tf < 100  # TFLOP/s of a real product on this CPU


def test_batch_invariance_figures():
    a = torch.zeros(1, 3, 2, 2)
    b = a.clone()
    b[0, 0, 0, 0] = 0.01  # 1.275 8-bit levels: one of 12 values changes
    r = bench.batch_invariance(a, b)
    assert r["batch_invariance_max_diff"] == pytest.approx(0.01) and r["batch_invariance_8bit_changed"] == pytest.approx(1 / 12)
    assert bench.batch_invariance(a, a) == {"batch_invariance_max_diff": 0.0, "batch_invariance_8bit_changed": 0.0}


def test_unknown_cpu_peak(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench, "cpu_gemm_tflops", lambda *a, **k: None)  # e.g. a dtype the CPU cannot multiply
    out = tmp_path / "b.json"
    n = torch.get_num_threads()
    cfg = bench.build("default").config
    side = 2 * cfg.latent_shape[-1]  # twice the shipped model's latent side (v3: 16 -> 32)
    try:
        assert bench.main(["--arch", "default", "--batch", "1", "--reps", "1", "--warmup", "0", "--no-memory",
                           "--parts", "e2e", "--paths", "ref", "--threads", "1", "--latent-size", str(side),
                           "--json", str(out)]) == 0
    finally:
        torch.set_num_threads(n)
    doc = json.loads(out.read_text())
    # at twice the shipped model's latent side: about 4x the FLOPs per image (the z / t MLPs do not grow; the
    # autoencoder's mid-block attention grows 16x: 4.15x for v3's 16 -> 32)
    ratio = doc["flops_per_image"]["default"]["reference"]["total"] / bench.count_flops(cfg)["total"]
    assert 3.9 < ratio < 4.4 and doc["settings"]["latent_size"] == side
    assert doc["machine"]["cpu_matmul_tflops"] == {"fp32": None, "bf16": None}
    assert "fraction_of_fp32_matmul_peak" not in doc["results"][0] and "fp32 n/a" in capsys.readouterr().out


def test_profile_run(tmp_path, capsys):
    out = tmp_path / "p.json"
    n = torch.get_num_threads()
    try:
        assert bench.main(["--arch", "default", "--batch", "2", "--paths", "ref,fast", "--threads", "1", "--profile",
                           "--json", str(out)]) == 0
    finally:
        torch.set_num_threads(n)
    profs = json.loads(out.read_text())["profiles"]
    assert [(p["path"], p["batch"]) for p in profs] == [("ref", 2), ("fast", 2)]
    for p in profs:
        assert 0 < p["conv_share"] <= p["matmul_share"] <= 1 and p["matmul_tflops"] > 0 and p["total_ms"] > 0
        names = [t[0] for t in p["top"]]
        assert any("conv" in k for k in names) and len(names) <= 12
    text = capsys.readouterr().out
    assert "# profile default B=2 ref:" in text and "convolutions" in text


def test_gpu_peak_lookup():
    assert bench.bf16_peak_for("NVIDIA H200") == 989.0 and bench.bf16_peak_for("NVIDIA H100 PCIe") == 756.0
    assert bench.bf16_peak_for("NVIDIA H100 80GB HBM3") == 989.0
    assert [bench.bf16_peak_for(f"NVIDIA {n}") for n in ("L40S", "L40", "L4")] == [362.0, 181.0, 121.0]
    assert bench.bf16_peak_for("NVIDIA A10G") is None and bench.bf16_peak_for("Tesla T4") is None  # not A10 / L4


def test_psnr():
    a = torch.zeros(1, 3, 4, 4)
    assert bench.psnr(a, a) == float("inf")
    assert bench.psnr(a, a + 0.02) == pytest.approx(10 * torch.log10(torch.tensor(4 / 0.02 ** 2)).item())
