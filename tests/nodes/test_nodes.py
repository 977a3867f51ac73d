"""The ComfyUI node classes, run without ComfyUI (CPU, no-op progress): same seed -> same image whatever
the batch, denoise 0 / 1 semantics, image-to-image against the library, chunking and out-of-memory retry,
saving, and clear errors for bad inputs."""
import importlib.util
import os
import sys

import pytest
import torch

from conftest import REPO

sys.path.insert(0, str(REPO))  # nodes/ is not pip-installed: import it from the checkout

import lddgan_core as L  # noqa: E402
import nodes as P  # noqa: E402
from nodes import chunks, convert, runtime, vae  # noqa: E402
from nodes.lib import default_model_path  # noqa: E402

# the shipped 16 px fixture model (random weights): fast, and its sizes are what these tests assert; the
# trained default model is tested in tests/hub/test_default_model.py
SHIPPED = "lddgan_tiny_fixture.safetensors"
assert os.path.isfile(os.path.join(os.path.dirname(default_model_path()), SHIPPED))
# Results of different batch sizes differ by float32 rounding only (conv kernels sum in another order);
# same-batch comparisons use 1e-6 or exact equality.
BATCH_ATOL = 5e-5


@pytest.fixture(scope="module")
def shipped():
    return P.LDDGANModelLoader().load(SHIPPED)[0]


def _sample(m, seed, batch, denoise=1.0, latent=None):
    return P.LDDGANSampler().sample(m, seed, batch, denoise, latent=latent)[0]


def _decode(m, lat):
    return P.LDDGANDecode().decode(m, lat)[0]


def _image(seed, B=2, H=16, W=16):
    return torch.rand(B, H, W, 3, generator=torch.Generator().manual_seed(seed))


# -- registration and metadata -------------------------------------------------------------------------------
def test_every_node_is_documented():
    assert set(P.NODE_CLASS_MAPPINGS) == set(P.NODE_DISPLAY_NAME_MAPPINGS) == {
        "LDDGANModelLoader", "LDDGANSampler", "LDDGANEncode", "LDDGANDecode", "LDDGANSaveModel", "LDDGANVAE",
        "LDDGANFineTune"}
    for name, cls in P.NODE_CLASS_MAPPINGS.items():
        assert cls.CATEGORY == "LDDGAN" and len(cls.DESCRIPTION) > 40, name
        assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES) and all(cls.OUTPUT_TOOLTIPS), name
        assert callable(getattr(cls(), cls.FUNCTION)), name
        for group in cls.INPUT_TYPES().values():
            for inp, spec in group.items():
                assert spec[1].get("tooltip"), f"{name}.{inp} has no tooltip"
    seed = P.LDDGANSampler.INPUT_TYPES()["required"]["seed"][1]
    assert seed["control_after_generate"] and seed["max"] == 2 ** 64 - 1


def test_pack_imports_as_a_comfyui_package():
    """Load the repository root the way ComfyUI loads custom_nodes/<pack>: a package named after its path,
    whose directory is not on sys.path; the nodes must reach the library relatively."""
    name = "/tmp/custom_nodes/ComfyUI-LDDGAN-test"
    spec = importlib.util.spec_from_file_location(name, REPO / "__init__.py",
                                                  submodule_search_locations=[str(REPO)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    try:
        spec.loader.exec_module(mod)
        assert set(mod.NODE_CLASS_MAPPINGS) == set(P.NODE_CLASS_MAPPINGS)
        assert sys.modules[name + ".nodes.lib"].L.__name__ == name + ".lddgan_core"
    finally:
        for k in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            del sys.modules[k]


def test_pack_runs_when_its_folder_is_not_on_sys_path(tmp_path):
    """As in ComfyUI: a fresh interpreter, the pack loaded from custom_nodes/<dir> by file location, the
    nodes run under torch.inference_mode()."""
    script = (
        "import importlib.util, sys, torch\n"
        f"root = {str(REPO)!r}\n"
        "sys.path = [p for p in sys.path if p not in ('', root)]\n"
        "name = root + '_pack'\n"
        "spec = importlib.util.spec_from_file_location(name, root + '/__init__.py',\n"
        "                                              submodule_search_locations=[root])\n"
        "mod = importlib.util.module_from_spec(spec); sys.modules[name] = mod; spec.loader.exec_module(mod)\n"
        "N = mod.NODE_CLASS_MAPPINGS\n"
        "with torch.inference_mode():\n"
        f"    m, = N['LDDGANModelLoader']().load({SHIPPED!r})\n"
        "    lat, = N['LDDGANSampler']().sample(m, 0, 2, 1.0)\n"
        "    img, = N['LDDGANDecode']().decode(m, lat)\n"
        "print(tuple(img.shape), round(float(img.std()), 3))\n")
    import subprocess
    r = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    shape, std = r.stdout.split(")")[0] + ")", float(r.stdout.split(")")[1])
    assert shape == "(2, 16, 16, 3)" and std > 0.05


def test_nodes_work_under_inference_mode(tmp_path, monkeypatch):
    """ComfyUI runs every node under torch.inference_mode(); the loaded weights must still be ordinary
    tensors (trainable by a fine-tune node downstream)."""
    monkeypatch.setenv("LDDGAN_MODELS_DIR", str(tmp_path))
    with torch.inference_mode():
        m = P.LDDGANModelLoader().load(SHIPPED)[0]
        lat = _sample(m, 4, 2)
        img = _decode(m, lat)
        again = P.LDDGANEncode().encode(m, img)[0]
        out = _sample(m, 4, 1, 0.5, again)
        P.LDDGANSaveModel().save(m, "inf", False)
    assert not any(p.is_inference() for p in m.parameters())
    assert out["samples"].shape == (2, 4, 8, 8) and img.std() > 0.05
    with torch.inference_mode(False):
        reference = _sample(P.LDDGANModelLoader().load(SHIPPED)[0], 4, 2)["samples"]
    torch.testing.assert_close(lat["samples"], reference, rtol=0, atol=1e-6)


class _FakeFolderPaths:
    """Just enough of ComfyUI's folder_paths for register_model_folder / list_models / save_dir."""

    def __init__(self, models_dir, existing=None):
        self.models_dir = str(models_dir)
        self.folder_names_and_paths = dict(existing or {})

    def add_model_folder_path(self, name, path, is_default=False):
        paths = self.folder_names_and_paths.setdefault(name, ([], set()))[0]
        if path not in paths:
            paths.insert(0, path) if is_default else paths.append(path)

    def get_folder_paths(self, name):
        return self.folder_names_and_paths[name][0]

    def get_filename_list(self, name):
        paths, exts = self.folder_names_and_paths[name]
        return sorted({f for d in paths if os.path.isdir(d) for f in os.listdir(d)
                       if not exts or os.path.splitext(f)[1] in exts})

    def get_full_path(self, name, filename):
        return next((os.path.join(d, filename) for d in self.get_folder_paths(name)
                     if os.path.isfile(os.path.join(d, filename))), None)


@pytest.mark.parametrize("from_yaml", [False, True])
def test_model_folder_registration(tmp_path, monkeypatch, from_yaml, random_model):
    yaml_dir = str(tmp_path / "yaml_models")
    existing = {"lddgan": ([yaml_dir], set())} if from_yaml else {}  # extra_model_paths.yaml loads first
    fake = _FakeFolderPaths(tmp_path / "models", existing)
    monkeypatch.setitem(sys.modules, "folder_paths", fake)
    runtime.register_model_folder()
    runtime.register_model_folder()  # idempotent
    default = str(tmp_path / "models" / "lddgan")
    assert fake.get_folder_paths("lddgan") == [default] + ([yaml_dir] if from_yaml else []) + [runtime.SHIPPED_DIR]
    assert fake.folder_names_and_paths["lddgan"][1] == {".safetensors"}
    assert runtime.save_dir() == default
    os.makedirs(default)
    random_model("kl").save(os.path.join(default, "mine.safetensors"))
    open(os.path.join(default, "readme.txt"), "w").close()
    shipped = sorted(os.listdir(runtime.SHIPPED_DIR))
    assert runtime.list_models() == sorted(["mine.safetensors", *shipped])
    assert runtime.resolve_model(os.path.basename(default_model_path())) == default_model_path()


# -- loader -------------------------------------------------------------------------------------------------
def test_loader_lists_shipped_and_folder_models(tmp_path, monkeypatch, random_model):
    monkeypatch.setenv("LDDGAN_MODELS_DIR", str(tmp_path))
    random_model("kl").save(tmp_path / "sub" / "mine.safetensors")
    (tmp_path / "notes.txt").write_text("not a model")
    names = P.LDDGANModelLoader.INPUT_TYPES()["required"]["model_name"][0]
    # local models first; the shipped manifest adds its not-yet-installed entries as "[download] ..." choices
    local = [n for n in names if not n.startswith("[download] ")]
    # the trained default is the first (preselected) choice, then the others in name order
    assert local[0] == os.path.basename(default_model_path()) == "lddgan_shapes32.safetensors"
    assert local[1:] == sorted(["lddgan_emoji64.safetensors", SHIPPED, "sub/mine.safetensors"])
    assert "[download] lddgan_cifar10.safetensors" in names
    m = P.LDDGANModelLoader().load("sub/mine.safetensors")[0]
    assert m.config.name == "tiny_kl" and m.dtype == torch.float32
    assert P.LDDGANModelLoader.IS_CHANGED("sub/mine.safetensors") != P.LDDGANModelLoader.IS_CHANGED(SHIPPED)


@pytest.mark.parametrize("precision, dtype", [("auto", torch.float32), ("fp32", torch.float32),
                                              ("fp16", torch.float16), ("bf16", torch.bfloat16)])
def test_loader_precision(precision, dtype):
    m = P.LDDGANModelLoader().load(SHIPPED, precision)[0]
    assert m.dtype == dtype and m.autoencoder.dtype == dtype


@pytest.mark.parametrize("precision, bound", [("fp16", 2e-2), ("bf16", 1.5e-1)])
def test_half_precision_images_stay_close_to_fp32(shipped, precision, bound):
    """Half precision is a fast path: checked against the fp32 reference (images 0..1, max difference)."""
    half = P.LDDGANModelLoader().load(SHIPPED, precision)[0]
    ref = _decode(shipped, _sample(shipped, 0, 2))
    img = _decode(half, _sample(half, 0, 2))
    assert img.dtype == torch.float32 and 0 < (img - ref).abs().max() < bound


def test_loader_missing_model_names_the_folders():
    with pytest.raises(L.InputError, match=r"model_name: no LDDGAN model 'gone.safetensors' in the model folders"):
        P.LDDGANModelLoader().load("gone.safetensors")
    with pytest.raises(L.InputError, match="precision"):
        P.LDDGANModelLoader().load(SHIPPED, "fp8")


# -- sampler -------------------------------------------------------------------------------------------------
def test_same_seed_same_image_whatever_the_batch(shipped):
    big = _decode(shipped, _sample(shipped, 10, 4))
    for b in range(4):
        one = _decode(shipped, _sample(shipped, 10 + b, 1))
        torch.testing.assert_close(one[0], big[b], rtol=0, atol=BATCH_ATOL)
    assert (big[0] - big[1]).abs().max() > 0.05  # different seeds, different images
    assert big.std() > 0.05  # not constant


def test_sampler_matches_the_library(shipped):
    lat = _sample(shipped, 7, 3)
    assert set(lat) == {"samples", convert.LATENT_TAG} and lat["samples"].shape == (3, 4, 8, 8)
    torch.testing.assert_close(lat["samples"], shipped.sample(seeds=[7, 8, 9]), rtol=0, atol=1e-6)


def test_sampler_honours_batch_index(shipped):
    ref = _sample(shipped, 100, 8)["samples"]
    latent = {"samples": torch.zeros(2, 4, 8, 8), "batch_index": [3, 7]}
    out = _sample(shipped, 100, 1, 1.0, latent)
    assert out["batch_index"] == [3, 7]
    torch.testing.assert_close(out["samples"], ref[[3, 7]], rtol=0, atol=BATCH_ATOL)
    with pytest.raises(L.InputError, match="batch_index has 1 entries for a batch of 2"):
        _sample(shipped, 0, 1, 1.0, {"samples": torch.zeros(2, 4, 8, 8), "batch_index": [0]})


def test_denoise_zero_returns_the_input_and_one_ignores_it(shipped):
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    out = _sample(shipped, 3, 1, 0.0, {"samples": x, "batch_index": [5, 6]})
    assert torch.equal(out["samples"], x) and out["batch_index"] == [5, 6]
    assert out["samples"] is not x
    a = _sample(shipped, 3, 1, 1.0, {"samples": x})["samples"]
    b = _sample(shipped, 3, 1, 1.0, {"samples": -5 * x})["samples"]
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(a, _sample(shipped, 3, 2)["samples"], rtol=0, atol=1e-6)  # same batch


@pytest.mark.parametrize("denoise", [0.3, 0.5, 0.8])
def test_image_to_image_matches_the_library(shipped, denoise):
    x = P.LDDGANEncode().encode(shipped, _image(0))[0]
    out = _sample(shipped, 11, 1, denoise, x)["samples"]
    ref = shipped.sample(seeds=[11, 12], init_latent=x["samples"], denoise=denoise)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    assert (out - x["samples"]).abs().max() > 1e-3
    assert (out - _sample(shipped, 11, 2)["samples"]).abs().max() > 1e-3  # the input matters


def test_variations_from_repeated_latent_differ(shipped):
    x = P.LDDGANEncode().encode(shipped, _image(0, B=1))[0]["samples"]
    out = _sample(shipped, 0, 1, 0.5, {"samples": x.repeat(3, 1, 1, 1)})["samples"]
    assert (out[0] - out[1]).abs().max() > 1e-3 and (out[1] - out[2]).abs().max() > 1e-3


def test_sampler_runs_at_other_latent_sizes(shipped):
    x = torch.randn(1, 4, 12, 16, generator=torch.Generator().manual_seed(0))
    out = _sample(shipped, 0, 1, 0.5, {"samples": x})["samples"]
    assert out.shape == (1, 4, 12, 16) and torch.isfinite(out).all()


def test_sampler_bad_inputs(shipped):
    with pytest.raises(L.InputError, match=r"latent: expected latents \[B, 4, h, w\].*got \[1, 16, 8, 8\]"):
        _sample(shipped, 0, 1, 0.5, {"samples": torch.zeros(1, 16, 8, 8)})
    with pytest.raises(L.InputError, match="latent: latent size 7x8 does not fit the generator: .* multiples of 2"):
        _sample(shipped, 0, 1, 0.5, {"samples": torch.zeros(1, 4, 8, 7)})
    with pytest.raises(L.InputError, match="latent: expected a LATENT"):
        _sample(shipped, 0, 1, 0.5, torch.zeros(1, 4, 8, 8))
    with pytest.raises(L.InputError, match="noise_mask"):
        _sample(shipped, 0, 1, 0.5, {"samples": torch.zeros(1, 4, 8, 8), "noise_mask": torch.ones(1, 1, 8, 8)})
    with pytest.raises(L.InputError, match=r"denoise must be in \[0, 1\]"):
        _sample(shipped, 0, 1, 1.5, {"samples": torch.zeros(1, 4, 8, 8)})
    with pytest.raises(L.InputError, match="batch_size"):
        _sample(shipped, 0, 0)


def test_seeds_wrap_to_64_bits(shipped):
    assert convert.seeds_for(2 ** 64 - 1, 3) == [2 ** 64 - 1, 0, 1]
    top = _sample(shipped, 2 ** 64 - 1, 2)["samples"]
    torch.testing.assert_close(top[1], _sample(shipped, 0, 1)["samples"][0], rtol=0, atol=BATCH_ATOL)


def test_progress_ticks_every_step(shipped, monkeypatch):
    bars = []
    monkeypatch.setattr(runtime, "progress_bar", lambda total: bars.append(runtime._NullProgress(total)) or bars[-1])
    monkeypatch.setattr(runtime, "free_memory", lambda device: 2 * chunks.sample_bytes(shipped, 8, 8))  # 1 per chunk
    _sample(shipped, 0, 3)
    assert bars[0].total == 3 * 4 and bars[0].history == list(range(1, 13))
    _sample(shipped, 0, 1, 0.5, {"samples": torch.zeros(2, 4, 8, 8)})  # denoise 0.5 of T=4: 2 steps per sample
    assert bars[1].total == 4 and bars[1].history == [1, 2, 3, 4]


def test_interrupt_stops_sampling(shipped, monkeypatch):
    calls = []

    def check():
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("cancelled")
    monkeypatch.setattr(runtime, "check_interrupt", check)
    with pytest.raises(KeyboardInterrupt):
        _sample(shipped, 0, 2)
    assert len(calls) == 3


# -- chunking and out-of-memory ----------------------------------------------------------------------------------
def test_chunk_size_from_free_memory():
    assert chunks.chunk_size(10, 100, None) == 10
    assert chunks.chunk_size(10, 100, 1000) == 5  # half of the free memory
    assert chunks.chunk_size(10, 100, 10) == 1
    assert chunks.chunk_size(3, 100, 10 ** 9) == 3


def test_chunked_results_equal_one_batch(shipped, monkeypatch):
    whole = _sample(shipped, 5, 5)["samples"]
    img = _decode(shipped, {"samples": whole})
    lat = P.LDDGANEncode().encode(shipped, img)[0]["samples"]
    seen = []
    real = chunks.run_chunked
    monkeypatch.setattr(runtime, "free_memory", lambda device: 1)  # forces chunks of one sample
    monkeypatch.setattr(chunks, "run_chunked", lambda B, first, *a, **k: seen.append(first) or real(B, first, *a, **k))
    torch.testing.assert_close(_sample(shipped, 5, 5)["samples"], whole, rtol=0, atol=BATCH_ATOL)
    torch.testing.assert_close(_decode(shipped, {"samples": whole}), img, rtol=0, atol=BATCH_ATOL)
    torch.testing.assert_close(P.LDDGANEncode().encode(shipped, img)[0]["samples"], lat, rtol=0, atol=BATCH_ATOL)
    assert seen == [1, 1, 1]


def test_out_of_memory_retries_smaller(shipped, monkeypatch):
    ref = _sample(shipped, 0, 4)["samples"]
    sizes, real = [], type(shipped).sample

    def flaky(self, *a, seeds=None, **k):
        sizes.append(len(seeds))
        if len(seeds) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, *a, seeds=seeds, **k)
    monkeypatch.setattr(type(shipped), "sample", flaky)
    torch.testing.assert_close(_sample(shipped, 0, 4)["samples"], ref, rtol=0, atol=BATCH_ATOL)
    assert sizes == [4, 2, 1, 1, 1, 1]


def test_out_of_memory_at_one_sample_and_other_errors_are_raised():
    def oom(a, b):
        raise RuntimeError("HIP out of memory")
    with pytest.raises(RuntimeError, match="out of memory even for one sample"):
        chunks.run_chunked(3, 2, oom)

    def bug(a, b):
        raise ValueError("a real bug")
    with pytest.raises(ValueError, match="a real bug"):
        chunks.run_chunked(3, 2, bug)


def test_memory_estimates_grow_with_size(shipped):
    for fn in (chunks.decode_bytes, chunks.sample_bytes):
        assert 0 < fn(shipped, 8, 8) < fn(shipped, 16, 16) < fn(shipped, 32, 32)
    from lddgan_core.fast import decode_bytes_per_image  # one estimator: the library's, in float32
    assert chunks.decode_bytes(shipped, 8, 8) == decode_bytes_per_image(shipped.config.autoencoder, 8, 8, 4)


# -- encode / decode ------------------------------------------------------------------------------------------------
def test_decode_and_encode_match_the_library(shipped):
    z = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    img = _decode(shipped, {"samples": z})
    assert img.shape == (3, 16, 16, 3) and 0 <= img.min() and img.max() <= 1 and img.std() > 0.01
    ref = ((shipped.decode(z) + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1)
    torch.testing.assert_close(img, ref, rtol=0, atol=1e-6)
    x = _image(3, B=2)
    lat = P.LDDGANEncode().encode(shipped, x)[0]
    assert set(lat) == {"samples", convert.LATENT_TAG} and lat["samples"].shape == (2, 4, 8, 8)
    torch.testing.assert_close(lat["samples"], shipped.encode((x * 2 - 1).permute(0, 3, 1, 2).contiguous()),
                               rtol=0, atol=1e-6)
    rgba = torch.cat([x, torch.zeros(2, 16, 16, 1)], dim=-1)  # alpha dropped, as core VAE Encode does
    torch.testing.assert_close(P.LDDGANEncode().encode(shipped, rgba)[0]["samples"], lat["samples"], rtol=0, atol=0)


def test_decode_handles_other_latent_sizes(shipped):
    img = _decode(shipped, {"samples": torch.randn(1, 4, 6, 10)})
    assert img.shape == (1, 12, 20, 3)


def test_encode_fit_modes(shipped):
    x = _image(4, B=1, H=21, W=19)
    with pytest.raises(L.InputError, match=r"image: 19x21 px does not fit this model: fit='error' takes only "
                                           r"the model's own size, 16x16 px.*multiples of 4"):
        P.LDDGANEncode().encode(shipped, x, "error")
    crop = P.LDDGANEncode().encode(shipped, x, "center crop")[0]["samples"]
    assert crop.shape == (1, 4, 10, 8)  # 20x16 px: top 0, left 1
    ref = shipped.encode((x[:, 0:20, 1:17] * 2 - 1).permute(0, 3, 1, 2).contiguous())
    torch.testing.assert_close(crop, ref, rtol=0, atol=0)
    wide = _image(5, B=1, H=32, W=48)
    rs = P.LDDGANEncode().encode(shipped, wide, "crop and resize to model size")[0]["samples"]
    assert rs.shape == (1, 4, 8, 8)
    square = torch.nn.functional.interpolate(wide[:, :, 8:40].movedim(-1, 1), size=(16, 16), mode="bilinear",
                                             antialias=True).movedim(1, -1)
    torch.testing.assert_close(rs, P.LDDGANEncode().encode(shipped, square)[0]["samples"], rtol=0, atol=1e-5)
    with pytest.raises(L.InputError, match="smaller than the smallest size"):
        P.LDDGANEncode().encode(shipped, _image(0, B=1, H=3, W=3), "center crop")


def test_codec_bad_inputs(shipped):
    with pytest.raises(L.InputError, match=r"image: expected an IMAGE tensor \[B, H, W, 3\]"):
        P.LDDGANEncode().encode(shipped, torch.rand(1, 3, 16, 16))
    with pytest.raises(L.InputError, match="fit: expected one of"):
        P.LDDGANEncode().encode(shipped, _image(0), "stretch")
    with pytest.raises(L.InputError, match=r"latent: expected latents \[B, 4, h, w\]"):
        _decode(shipped, {"samples": torch.zeros(1, 3, 8, 8)})
    with pytest.raises(L.InputError, match=r"latent: expected latents"):
        _decode(shipped, {"samples": torch.zeros(1, 4, 2, 8, 8)})  # a video latent


# -- save ---------------------------------------------------------------------------------------------------
def test_save_model_round_trip_and_no_overwrite(tmp_path, monkeypatch, shipped, random_model):
    monkeypatch.setenv("LDDGAN_MODELS_DIR", str(tmp_path))
    res = P.LDDGANSaveModel().save(shipped, "copy", False)
    path = res["result"][0]
    assert path == str(tmp_path / "copy.safetensors") and res["ui"]["text"] == [path]
    again = P.LDDGANModelLoader().load("copy.safetensors")[0]
    torch.testing.assert_close(_sample(again, 1, 2)["samples"], _sample(shipped, 1, 2)["samples"], rtol=0, atol=0)
    before = open(path, "rb").read()
    other = random_model("kl")
    with pytest.raises(L.InputError, match="filename: .*copy.safetensors already exists; turn overwrite on"):
        P.LDDGANSaveModel().save(other, "copy.safetensors", False)
    assert open(path, "rb").read() == before
    P.LDDGANSaveModel().save(other, "copy", True, "fp16")
    reloaded = L.load(path, dtype=None)
    assert reloaded.dtype == torch.float16 and reloaded.config.name == "tiny_kl"
    assert sorted(os.listdir(tmp_path)) == ["copy.safetensors"]  # no temporary files left behind


@pytest.mark.parametrize("bad", ["", "../escape", "sub/dir", ".hidden", "a\\b"])
def test_save_model_refuses_paths(tmp_path, monkeypatch, shipped, bad):
    monkeypatch.setenv("LDDGAN_MODELS_DIR", str(tmp_path))
    with pytest.raises(L.InputError, match="filename: .* is not a plain file name"):
        P.LDDGANSaveModel().save(shipped, bad, False)
    assert os.listdir(tmp_path) == []


def test_save_needs_a_folder_outside_comfyui(monkeypatch, shipped):
    monkeypatch.delenv("LDDGAN_MODELS_DIR", raising=False)
    with pytest.raises(L.InputError, match="LDDGAN_MODELS_DIR"):
        P.LDDGANSaveModel().save(shipped, "x", False)


# -- VAE ------------------------------------------------------------------------------------------------------
def test_vae_refuses_vq_and_needs_comfyui(random_model, shipped):
    with pytest.raises(L.InputError, match="autoencoder is VQ .*LDDGAN Decode"):
        P.LDDGANVAE().get_vae(random_model("vq"))
    if not runtime.in_comfyui():
        with pytest.raises(L.InputError, match="needs ComfyUI"):
            P.LDDGANVAE().get_vae(shipped)


def test_vae_config_mapping(shipped):
    sd_vae = L.AutoencoderConfig(kind="kl", embed_dim=4, z_channels=4)  # LDM KL-f8 defaults = SD's VAE
    assert vae.auto_detected(sd_vae)
    assert not vae.auto_detected(shipped.config.autoencoder)  # f=2, attention, tanh: explicit config
    d = vae.ldm_ddconfig(shipped.config.autoencoder)
    assert d == {"double_z": True, "z_channels": 4, "resolution": 16, "in_channels": 3, "out_ch": 3, "ch": 32,
                 "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [16], "dropout": 0.0, "tanh_out": True}
