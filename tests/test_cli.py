"""CLI end to end: convert the official fixture, sample from it, inspect it; errors exit with status 2."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import lddgan_core as L
from lddgan_core.cli import DEFAULT_MODEL, main

REPO = Path(__file__).resolve().parents[1]
FIX = Path(os.environ.get("LDDGAN_FIXTURES_DIR", REPO.parent / "shared" / "fixtures" / "official_tiny"))
needs_fixture = pytest.mark.skipif(not (FIX / "netG.pth").is_file(), reason=f"no fixture at {FIX}")


def _convert(tmp_path, *extra):
    out = tmp_path / "m.safetensors"
    rc = main(["convert", "--config", str(FIX / "config.json"), "--generator", str(FIX / "netG.pth"),
               "--autoencoder", str(FIX / "autoencoder.ckpt"), "-o", str(out), *extra])
    assert rc == 0
    return out


@needs_fixture
def test_convert_then_sample(tmp_path, capsys):
    out = _convert(tmp_path)
    m = L.load(out)
    ref = L.load_official(FIX / "config.json", FIX / "netG.pth", FIX / "autoencoder.ckpt")
    assert m.config == ref.config
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), ref.state_dict().values()))
    assert main(["sample", "--model", str(out), "--batch", "3", "--seed", "5", "--out", str(tmp_path / "png"),
                 "--grid", str(tmp_path / "grid.png")]) == 0
    files = sorted(os.listdir(tmp_path / "png"))
    assert files == ["lddgan_000005.png", "lddgan_000006.png", "lddgan_000007.png"]
    # the PNG of seed 6 is the decoded seed-6 sample
    img = np.asarray(Image.open(tmp_path / "png" / files[1]))
    want = ((ref.decode(ref.sample(seeds=[6]))[0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    assert img.shape == (16, 16, 3) and np.abs(img.astype(int) - want.astype(int)).max() <= 1
    grid = Image.open(tmp_path / "grid.png")
    assert grid.size == (2 + 2 * 18, 2 + 2 * 18)  # 3 images, 2 per row, 2-px padding


@needs_fixture
def test_convert_fp16_and_refuse_overwrite(tmp_path, capsys):
    out = _convert(tmp_path, "--dtype", "fp16")
    assert L.load(out, dtype=None).dtype == torch.float16
    with pytest.raises(SystemExit, match="exists"):
        _convert(tmp_path)


def test_info_json_of_shipped_model(capsys):
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["path"] == DEFAULT_MODEL
    cfg = info["config"]
    assert cfg["format"] == "lddgan" and cfg["diffusion"]["num_timesteps"] == 4
    assert cfg["latent_shape"] == [4, 8, 8] and cfg["scale_factor"] == 3.0
    assert info["parameters"] == {"generator.": 122768, "autoencoder.": 671239}


@needs_fixture
def test_shipped_model_is_the_converted_fixture():
    m = L.load(DEFAULT_MODEL)
    ref = L.load_official(FIX / "config.json", FIX / "netG.pth", FIX / "autoencoder.ckpt")
    for (k, a), (k2, b) in zip(m.state_dict().items(), ref.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k


def test_bad_files_exit_2(tmp_path, capsys):
    bad = tmp_path / "x.safetensors"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 100)
    assert main(["sample", "--model", str(bad), "--batch", "1", "--grid", str(tmp_path / "g.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "x.safetensors" in err
    assert not (tmp_path / "g.png").exists()
    assert main(["info", str(tmp_path / "missing.safetensors")]) == 2


def test_img2img_cli(tmp_path):
    Image.fromarray(np.full((20, 24, 3), 200, np.uint8)).save(tmp_path / "in.png")
    assert main(["sample", "--init", str(tmp_path / "in.png"), "--denoise", "0", "--batch", "2",
                 "--out", str(tmp_path / "o")]) == 0
    # denoise 0 returns the encoded input: decoding it twice gives two identical images
    a, b = (np.asarray(Image.open(tmp_path / "o" / f)) for f in sorted(os.listdir(tmp_path / "o")))
    assert np.array_equal(a, b)


def test_python_dash_m_and_no_comfy_import():
    code = ("import sys, lddgan_core, lddgan_core.cli, lddgan_core.discriminator; "
            "print(any(k == 'comfy' or k.startswith('comfy.') or k == 'folder_paths' for k in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stderr
    r = subprocess.run([sys.executable, "-m", "lddgan_core", "info"], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0 and "official_tiny" in r.stdout


def test_pack_imports_as_comfyui_custom_node():
    """ComfyUI imports custom_nodes/<folder>/__init__.py as a package named after the folder."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("ComfyUI_LDDGAN_under_test", REPO / "__init__.py",
                                                  submodule_search_locations=[str(REPO)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    try:
        spec.loader.exec_module(mod)
        assert isinstance(mod.NODE_CLASS_MAPPINGS, dict) and isinstance(mod.NODE_DISPLAY_NAME_MAPPINGS, dict)
        assert "ComfyUI_LDDGAN_under_test.nodes" in sys.modules  # the real nodes package was used
    finally:
        for k in [k for k in sys.modules if k.startswith("ComfyUI_LDDGAN_under_test")]:
            del sys.modules[k]
