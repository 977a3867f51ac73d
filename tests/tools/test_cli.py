"""CLI end to end: convert the official fixture, sample from it, inspect it, list and download zoo entries;
errors exit with status 2."""
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import lddgan_core as L
from lddgan_core.tools.cli import DEFAULT_MODEL, FIXTURE_MODEL, main
from conftest import REPO, fixtures_dir
FIX = fixtures_dir()  # ../shared/fixtures/official_tiny, or the repository's copy in tests/data
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


def test_info_json_of_default_model(capsys):
    # no model argument: the trained shapes model (lddgan_core.recipes shapes), stored in fp16
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["path"] == DEFAULT_MODEL and os.path.basename(DEFAULT_MODEL) == "lddgan_shapes32.safetensors"
    cfg = info["config"]
    assert cfg["format"] == "lddgan" and cfg["diffusion"]["num_timesteps"] == 4 and cfg["image_size"] == 32
    assert cfg["latent_shape"] == [4, 16, 16] and cfg["name"] == "lddgan-shapes32"
    assert info["dtypes"] == ["float16"] and os.path.getsize(DEFAULT_MODEL) <= 15e6
    assert cfg["provenance"]["source"] == "recipe shapes"


def test_info_json_of_fixture_model(capsys):
    assert main(["info", FIXTURE_MODEL, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    cfg = info["config"]
    assert cfg["format"] == "lddgan" and cfg["diffusion"]["num_timesteps"] == 4
    assert cfg["latent_shape"] == [4, 8, 8] and cfg["scale_factor"] == 3.0
    assert info["parameters"] == {"generator.": 122768, "autoencoder.": 671239}


@needs_fixture
def test_shipped_fixture_model_is_the_converted_fixture():
    m = L.load(FIXTURE_MODEL)
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
    code = ("import sys, lddgan_core, lddgan_core.tools.cli, lddgan_core.nets.discriminator; "
            "print(any(k == 'comfy' or k.startswith('comfy.') or k == 'folder_paths' for k in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stderr
    r = subprocess.run([sys.executable, "-m", "lddgan_core", "info"], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0 and "lddgan-shapes32" in r.stdout


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


# -- model zoo: lddgan list / lddgan download ----------------------------------------------------------------
@needs_fixture
def test_list_and_download(tmp_path, capsys, monkeypatch):
    from hub_util import FileServer, fixture_manifest

    with FileServer() as srv:
        g = srv.add("/g/netG.pth", (FIX / "netG.pth").read_bytes())
        a = srv.add("/a/ae.ckpt", (FIX / "autoencoder.ckpt").read_bytes())
        man = tmp_path / "team.json"
        man.write_text(json.dumps(fixture_manifest(FIX, [g], [a])))
        dest = tmp_path / "models"
        assert main(["list", "--manifest", str(man), "--dest", str(dest)]) == 0
        out = capsys.readouterr().out
        assert re.search(r"^  tiny\s+official_generator\s+download\b", out, re.M)
        assert main(["download", "tiny", "--manifest", str(man), "--dest", str(dest)]) == 0
        captured = capsys.readouterr()
        path = dest / "lddgan_tiny.safetensors"
        assert captured.out.strip() == f"{path}  (sha256 {hashlib.sha256(path.read_bytes()).hexdigest()})"
        assert f"downloading {g}" in captured.err and "100.0%" in captured.err and "converting" in captured.err
    ref = L.load_official(FIX / "config.json", FIX / "netG.pth", FIX / "autoencoder.ckpt")
    assert torch.equal(L.load(path).sample(seeds=[4]), ref.sample(seeds=[4]))
    assert main(["list", "--manifest", str(man), "--dest", str(dest), "--json"]) == 0
    listed = {e["id"]: e for e in json.loads(capsys.readouterr().out)["entries"]}
    assert listed["tiny"]["installed"] is True and listed["tiny"]["path"] == str(path)
    # an installed manifest id works wherever a model path does
    monkeypatch.setenv("LDDGAN_MANIFEST", str(man))
    monkeypatch.setenv("LDDGAN_MODELS_DIR", str(dest))
    assert main(["info", "tiny"]) == 0 and capsys.readouterr().out.startswith(f"{path}\n  name          tiny")
    os.unlink(path)  # the official files are kept: converted again without any download
    n = len(srv.requests)
    assert main(["info", "tiny"]) == 0 and path.is_file() and len(srv.requests) == n
    capsys.readouterr()
    os.unlink(path)
    shutil.rmtree(dest / "official")
    assert main(["info", "tiny"]) == 2 and "lddgan download tiny" in capsys.readouterr().err


def test_list_shipped_manifest(tmp_path, capsys):
    assert main(["list", "--dest", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for line in ("cifar10 ", "cifar10-autoencoder ", "ldm-vq-f4 ", "ldm-kl-f8 "):
        assert f"  {line}" in out
    assert re.search(r"^  celeba_256\s+unavailable", out, re.M) and "issues/7" in out


def test_download_errors_exit_2(tmp_path, capsys):
    from hub_util import refused_url

    assert main(["download", "nope", "--dest", str(tmp_path)]) == 2
    assert "unknown model id 'nope'" in capsys.readouterr().err
    assert main(["download", "lsun_church", "--dest", str(tmp_path)]) == 2
    assert "cannot be downloaded: not published" in capsys.readouterr().err
    man = tmp_path / "m.json"
    url = refused_url("/netG.pth")
    man.write_text(json.dumps({"manifest_version": 1, "entries": [
        {"id": "m", "name": "m", "kind": "model", "file_name": "m.safetensors", "urls": [url], "license": "x"}]}))
    assert main(["download", "m", "--manifest", str(man), "--dest", str(tmp_path / "d"), "--retries", "0"]) == 2
    err = capsys.readouterr().err
    assert "\nerror: " in err and url in err and f"save it as {tmp_path / 'd' / 'm.safetensors'}" in err


def test_progress_bar_without_terminal():
    from lddgan_core.tools.progress import ProgressBar

    s = io.StringIO()
    bar = ProgressBar("bytes", stream=s)
    for done in range(0, 2_000_001, 500_000):
        bar(done, 2_000_000)
    assert s.getvalue().count("\n") == 1  # not a terminal: one line per finished file
    assert "2.0 / 2.0 MB 100.0%" in s.getvalue() and "[" + "#" * 30 + "]" in s.getvalue()
    bar(3_500_000, None)  # unknown size: the line is written when the file ends
    assert s.getvalue().count("\n") == 1
    bar.close()
    assert s.getvalue().count("\n") == 2 and s.getvalue().splitlines()[-1].startswith("       3.5 MB")


def test_sample_fast_choices_agree(tmp_path, capsys):
    # --fast ref (reference path) and the default fast path write the same images (fp32 fast path <= 1e-4)
    grids = {}
    for mode in ("ref", "fast"):
        g = tmp_path / f"{mode}.png"
        assert main(["sample", "--batch", "2", "--seed", "3", "--fast", mode, "--grid", str(g)]) == 0
        grids[mode] = np.asarray(Image.open(g)).astype(int)
    assert np.abs(grids["ref"] - grids["fast"]).max() <= 1
    with pytest.raises(SystemExit):
        main(["sample", "--fast", "turbo"])


def test_sample_grid_zoom(tmp_path, capsys):
    assert main(["sample", "--model", FIXTURE_MODEL, "--batch", "2", "--grid", str(tmp_path / "a.png")]) == 0
    assert main(["sample", "--model", FIXTURE_MODEL, "--batch", "2", "--zoom", "3",
                 "--grid", str(tmp_path / "b.png")]) == 0
    a, b = (np.asarray(Image.open(tmp_path / f)) for f in ("a.png", "b.png"))
    assert b.shape == (3 * a.shape[0], 3 * a.shape[1], 3)
    assert np.array_equal(b[::3, ::3], a) and np.array_equal(b[1::3, 2::3], a)
    with pytest.raises(SystemExit, match="zoom"):
        main(["sample", "--zoom", "0"])
