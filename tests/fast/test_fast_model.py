"""The fast path of a whole model against the reference path on the same weights and inputs: each piece on
its own and all together (float32: <= 1e-4 on images, <= 1e-5 on latents), parity with the official
fixture on both paths, chunked decoding, half precision (PSNR against float32), and the CUDA pieces
(skipped without CUDA)."""
import dataclasses
import math

import pytest
import torch

import lddgan_core as L
import lddgan_core.model as model_mod
from lddgan_core.fast import compiled
from lddgan_core.fast import decode as fast_mod
from lddgan_core.nets import ops
from lddgan_core.errors import ConfigError, InputError
from lddgan_core.fast import FastOptions

REF = FastOptions.reference()
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def chunk_of(m, lat, opts, tile=None):
    """The planner's chunk size for `lat` under `opts` (budget and activation size as LDDGAN.decode uses them)."""
    elem = fast_mod.decode_elem_size(opts, lat.device, m.decoder_fp32_fallback)
    return fast_mod.decode_chunk_size(m.autoencoder.cfg, lat.shape, opts, elem, fast_mod.decode_budget(lat.device),
                                      tile=tile)


def tile_of(m, lat, opts):
    """The planner's tile size for `lat` under `opts`."""
    elem = fast_mod.decode_elem_size(opts, lat.device, m.decoder_fp32_fallback)
    return fast_mod.decode_tile_size(m.autoencoder.cfg, lat.shape, opts, elem, fast_mod.decode_budget(lat.device))


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: one thread is as fast and does not stall when other processes hold the cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def psnr(a, b):
    mse = float(((a.clamp(-1, 1) - b.clamp(-1, 1)).double() ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(4.0 / mse)


def outputs(m, B=3, seed=5):
    lat = m.sample(batch_size=B, seed=seed)
    return lat, m.decode(lat)


def _ref_and(m, opts):
    ref = outputs(m.set_fast(REF))
    out = outputs(m.set_fast(opts))
    return ref, out


def test_default_is_the_float32_fast_path(random_model):
    m = random_model()
    assert m.fast == FastOptions() and m.fast.autocast is None
    assert m.set_fast(False).fast == REF and m.set_fast(True).fast == FastOptions()
    assert m.set_fast("bf16").fast.autocast == "bf16"
    with pytest.raises(ConfigError, match="preset"):
        m.set_fast("turbo")
    with pytest.raises(ConfigError, match="autocast"):
        FastOptions(autocast="fp8")
    with pytest.raises(ConfigError, match="decode_chunk"):
        FastOptions(decode_chunk=0)


PIECES = {  # a piece alone on top of the reference, and the function that proves it ran
    "fir": ("fir_upsample2x_conv", "generator"),
    "sdpa": ("scaled_dot_product_attention", "generator"),
    "upsample_conv": ("upsample_conv2x", "decoder"),
    "inplace": (None, "decoder"),
    "channels_last": (None, "decoder"),
    "precompute": (None, "generator"),
    "inference_mode": (None, None),
    "decode_chunk": (None, "decoder"),
}


@pytest.mark.parametrize("piece", PIECES)
@pytest.mark.parametrize("kind", ["kl", "vq"])
def test_each_piece_matches_reference(random_model, piece, kind, monkeypatch):
    m = random_model(kind)
    value = 2 if piece == "decode_chunk" else True
    opts = dataclasses.replace(REF, **{piece: value})
    (lat_r, img_r), _ = _ref_and(m, REF)
    calls = []
    fn_name = PIECES[piece][0]
    if fn_name:  # count the fast function's calls, to prove the piece is active
        mod = torch.nn.functional if fn_name == "scaled_dot_product_attention" else ops
        target = getattr(mod, fn_name)
        wrapped = lambda *a, **kw: (calls.append(1), target(*a, **kw))[1]  # noqa: E731
        monkeypatch.setattr(mod, fn_name, wrapped)
        if mod is ops:
            import lddgan_core.nets.autoencoder as ae_mod
            import lddgan_core.nets.generator as g_mod
            for module in (ae_mod, g_mod):
                if hasattr(module, fn_name):
                    monkeypatch.setattr(module, fn_name, wrapped)
    lat, img = outputs(m.set_fast(opts))
    if fn_name:
        assert calls, f"{piece}: the fast function was never called"
    if kind == "vq" and piece in ("upsample_conv", "channels_last", "fir", "sdpa"):
        # a codebook choice may flip under float rounding; compare latents, and images decoded from them
        img_r = m.set_fast(REF).decode(lat)
        img = m.set_fast(opts).decode(lat)
    assert (lat - lat_r).abs().max() <= 1e-5 * max(1.0, float(lat_r.abs().max()))
    assert (img - img_r).abs().max() <= 1e-4
    assert not img.is_inference() and not lat.is_inference()
    assert img.is_contiguous() and img.dtype == torch.float32


def test_memory_format_follows_the_options(random_model):
    m = random_model()
    w = m.autoencoder.decoder.conv_in.weight
    assert w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
    assert m.generator.conv_in.weight.is_contiguous()  # CPU: generator stays NCHW (measured no gain)
    m.set_fast(False)
    assert m.autoencoder.decoder.conv_in.weight.is_contiguous()


def test_all_pieces_together_and_back_to_reference_bit_exact(random_model):
    fresh = random_model().set_fast(False)
    ref = outputs(fresh)
    m = random_model()  # same seed: same weights, built on the fast path
    lat, img = outputs(m)
    assert (lat - ref[0]).abs().max() <= 1e-5 * max(1.0, float(ref[0].abs().max()))
    assert (img - ref[1]).abs().max() <= 1e-4
    assert (img - ref[1]).abs().max() > 0  # the fast path is a different computation
    m.set_fast(False)
    lat2, img2 = outputs(m)
    assert torch.equal(lat2, ref[0]) and torch.equal(img2, ref[1])  # the reference path is untouched


def test_parity_with_official_fixture_on_both_paths(official_tiny):
    from lddgan_core.tools.parity import check_fixture

    n = torch.get_num_threads()
    torch.set_num_threads(2)  # the fixtures were produced with 2 threads
    try:
        for opts in (REF, FastOptions()):
            m = L.load_official(official_tiny / "config.json", official_tiny / "netG.pth",
                                official_tiny / "autoencoder.ckpt").set_fast(opts)
            checks, _ = check_fixture(str(official_tiny), model=m)
            bad = [(c.name, c.max_abs, c.tol) for c in checks if not c.ok]
            assert len(checks) > 10 and not bad, (opts, bad)
    finally:
        torch.set_num_threads(n)


def test_fast_path_is_batch_size_independent(tiny_model):
    m = tiny_model
    assert m.fast == FastOptions()
    batch = m.sample(batch_size=3, seed=20)
    for i in range(3):
        torch.testing.assert_close(batch[i], m.sample(seeds=[20 + i])[0], rtol=0, atol=3e-5)
    imgs = m.decode(batch)
    torch.testing.assert_close(imgs[1:2], m.decode(batch[1:2]), rtol=0, atol=1e-5)


def test_outputs_are_normal_tensors(random_model):
    m = random_model()
    lat, traj, x0s = m.sample(batch_size=2, seed=0, return_trajectory=True)
    img = m.decode(lat)
    enc = m.encode(img.clamp(-1, 1))
    for t in [lat, img, enc] + list(traj) + list(x0s):
        assert not t.is_inference()
    img.add_(1)  # in-place use outside inference mode must work


# -- chunked decoding -------------------------------------------------------------------------------------
def test_decode_chunks_agree(random_model, monkeypatch):
    m = random_model()
    lat = m.sample(batch_size=5, seed=1)
    whole = m.decode(lat, chunk_size=5)
    calls = []
    orig = m._decode_chunk
    monkeypatch.setattr(m, "_decode_chunk", lambda z: (calls.append(z.shape[0]), orig(z))[1])
    for n in (1, 2, 3):
        calls.clear()
        torch.testing.assert_close(m.decode(lat, chunk_size=n), whole, rtol=0, atol=1e-5)
        assert calls == [n] * (5 // n) + ([5 % n] if 5 % n else [])
    with pytest.raises(InputError, match="chunk_size"):
        m.decode(lat, chunk_size=0)


def test_auto_chunk_respects_the_memory_budget(random_model, monkeypatch):
    m = random_model()
    lat = m.sample(batch_size=6, seed=1)
    per = fast_mod.decode_bytes_per_image(m.config.autoencoder, *lat.shape[2:])
    assert per > 0
    monkeypatch.setattr(fast_mod, "CPU_DECODE_BUDGET", 2.5 * per)
    assert chunk_of(m, lat, m.fast) == 2
    monkeypatch.setattr(fast_mod, "CPU_DECODE_BUDGET", 0)
    assert chunk_of(m, lat, m.fast) == 1  # never below one image
    assert chunk_of(m, lat, m.fast.replace(decode_chunk=None)) == 6
    assert chunk_of(m, lat, m.fast.replace(decode_chunk=4)) == 4


# -- tiled decoding -----------------------------------------------------------------------------------------
@pytest.fixture
def shipped_model():
    """The shipped default model in float32 (a trained autoencoder: tiles and whole images are comparable)."""
    from lddgan_core.tools.cli import default_model_path

    return L.load(default_model_path(), dtype=torch.float32)


@pytest.mark.parametrize("n,tile,overlap", [(8, 8, 2), (20, 8, 2), (33, 16, 4), (9, 8, 7), (100, 24, 6)])
def test_tile_starts_cover_with_overlap(n, tile, overlap):
    starts = fast_mod.tile_starts(n, tile, overlap)
    assert starts[0] == 0 and starts[-1] == max(0, n - tile) and starts == sorted(set(starts))
    covered = torch.zeros(n, dtype=torch.bool)
    for a in starts:
        covered[a:a + tile] = True
    assert covered.all()
    assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:]))  # neighbours share >= overlap


def test_tiled_blend_is_exact_for_a_local_decoder():
    """A decoder without spatial context (nearest 4x upsampling of 3 channels): any tiling reproduces the
    whole-image decode, so the ramps' weights normalise exactly."""
    z = torch.randn(2, 4, 21, 30, generator=torch.Generator().manual_seed(0))
    local = lambda t: torch.nn.functional.interpolate(t[:, :3], scale_factor=4)  # noqa: E731
    whole = local(z)
    for tile, overlap in ((8, 2), (12, 3), (16, None), (29, 4)):
        out = fast_mod.decode_tiled(local, z, tile, 4, overlap)
        assert out.shape == whole.shape
        torch.testing.assert_close(out, whole, rtol=0, atol=1e-6)


def test_tiled_decode_approximates_the_whole_image(shipped_model):
    """The shipped model at 4x its latent size (128 px images): tiles of the whole latent give the whole decode
    bit for bit; smaller tiles approach it as they grow (the decoder's attention sees one tile at a time)."""
    from lddgan_core.tools.bench import psnr

    m = shipped_model
    lat = m.sample(batch_size=2, seed=0, latent_size=(32, 32))
    whole = m.decode(lat)
    assert torch.equal(m.decode(lat, tile_size=32), whole)
    p16, p24 = psnr(m.decode(lat, tile_size=16), whole), psnr(m.decode(lat, tile_size=24), whole)
    print(f"tiled decode PSNR vs whole: tile 16 {p16:.1f} dB, tile 24 {p24:.1f} dB")
    assert 18 < p16 < p24 < 60  # measured 22.3 and 31.6 dB
    with pytest.raises(InputError, match="tile_size"):
        m.decode(lat, tile_size=4)


def test_auto_tiles_only_images_over_the_budget(shipped_model, monkeypatch):
    m = shipped_model
    lat = m.sample(batch_size=3, seed=0, latent_size=(24, 16))
    cfg = m.config.autoencoder
    assert tile_of(m, lat, m.fast) is None  # fits: whole images, exact
    whole = m.decode(lat)
    monkeypatch.setattr(fast_mod, "CPU_DECODE_BUDGET", fast_mod.decode_bytes_per_image(cfg, 16, 16))
    tile = tile_of(m, lat, m.fast)
    assert tile == 16 and fast_mod.decode_bytes_per_image(cfg, tile, tile) <= fast_mod.CPU_DECODE_BUDGET
    assert chunk_of(m, lat, m.fast, tile=tile) == 1  # one tile's worth per chunk
    calls = []
    real = fast_mod.decode_tiled
    monkeypatch.setattr(model_mod, "decode_tiled", lambda *a, **k: (calls.append(a[2]), real(*a, **k))[1])
    out = m.decode(lat)
    assert calls == [16] * 3 and out.shape == whole.shape and 0 < (out - whole).abs().max() < 1.5
    assert m.set_fast(m.fast.replace(decode_tile=None)).decode(lat).shape == whole.shape and calls == [16] * 3
    assert tile_of(m, lat, FastOptions.reference()) is None  # the reference never tiles
    with pytest.raises(ConfigError, match="decode_tile"):
        FastOptions(decode_tile=4)


def test_decode_sizes_fixed_per_shape_when_compiled(shipped_model, monkeypatch):
    """Compiled code (and CUDA graphs) are per shape: with them, chunk and tile sizes of a latent shape are
    chosen once, not re-sized from the free memory on every call."""
    m = shipped_model.set_fast(FastOptions(compile="eager"))
    lat = m.sample(batch_size=4, seed=0, latent_size=(24, 24))
    whole = m.decode(lat)
    monkeypatch.setattr(fast_mod, "CPU_DECODE_BUDGET", 1)  # the budget collapses after the first call
    assert torch.equal(m.decode(lat), whole)  # same plan: whole images, one chunk
    plans = [v for k, v in m._fast_cache.items() if k[0] == "decode_plan"]
    assert plans == [(None, 4)]
    m.set_fast(True)  # without compile: re-sized every call, so the collapsed budget now tiles
    with pytest.warns(RuntimeWarning, match=r"need about \d+\.\d MiB, over the 0\.0 MiB budget; .*smallest tiles"):
        assert tile_of(m, lat, m.fast) == fast_mod.MIN_TILE


def test_sizes_follow_a_decoder_fallen_back_to_float32(random_model):
    m = random_model().set_fast("bf16")
    lat = m.sample(batch_size=2, seed=0)
    # CPU bf16 autocast: half-size activations
    assert fast_mod.decode_elem_size(m.fast, lat.device, m.decoder_fp32_fallback) == 2
    m.decoder_fp32_fallback = True
    assert fast_mod.decode_elem_size(m.fast, lat.device, m.decoder_fp32_fallback) == 4
    assert fast_mod.decode_elem_size(FastOptions(), lat.device, m.decoder_fp32_fallback) == 4


def test_decode_estimate_grows_with_image_and_codebook():
    from lddgan_core.tools.bench import OFFICIAL

    kl = L.AutoencoderConfig(**OFFICIAL["lsun256"]["autoencoder"])
    vq = L.AutoencoderConfig(**OFFICIAL["celeba256"]["autoencoder"])
    # KL-f8 at 256 px: 4 maps of 256 channels x 256^2 float32 = 256 MiB
    assert fast_mod.decode_bytes_per_image(kl, 32, 32) == 4 * 256 * 256 * 256 * 4
    assert fast_mod.decode_bytes_per_image(kl, 64, 64) == 4 * fast_mod.decode_bytes_per_image(kl, 32, 32)
    # VQ-f4: the 4096 x 8192 distance matrices dominate
    assert fast_mod.decode_bytes_per_image(vq, 64, 64) == 3.5 * 64 * 64 * 8192 * 4


# -- half precision ----------------------------------------------------------------------------------------
def test_bf16_autocast_psnr_against_float32(tiny_model):
    m = tiny_model
    lat = m.sample(batch_size=4, seed=3)
    img = m.decode(lat)
    try:
        m.set_fast("bf16")
        dec = m.decode(lat)
        lat_h = m.sample(batch_size=4, seed=3)
        m.set_fast(FastOptions(autocast="bf16", generator_fp32=True))
        lat_g = m.sample(batch_size=4, seed=3)
    finally:
        m.set_fast(True)
    assert dec.dtype == torch.float32 and torch.isfinite(dec).all()
    assert 40 <= psnr(dec, img) < 100  # half precision is used, and close (measured 45 dB)
    assert torch.equal(lat_g, lat)  # generator_fp32 keeps sampling in float32
    assert 0 < (lat_h - lat).abs().max() < 1.0  # bf16 generator: different, not broken (measured 0.25)


def test_decoder_fp32_switch_and_nan_fallback(tiny_model, monkeypatch):
    m = tiny_model
    lat = m.sample(batch_size=2, seed=4)
    img = m.decode(lat)
    try:
        m.set_fast(FastOptions(autocast="bf16", decoder_fp32=True))
        assert torch.equal(m.decode(lat), img)  # the decoder stays float32
        m.set_fast(FastOptions(autocast="bf16", decoder_fp32="auto"))
        real = m.autoencoder.decode
        seen = []

        def nan_in_half(z):  # a decoder that overflows in half precision
            out = real(z)
            seen.append(torch.is_autocast_enabled("cpu"))
            return out * float("nan") if torch.is_autocast_enabled("cpu") else out

        monkeypatch.setattr(m.autoencoder, "decode", nan_in_half)
        m._fast_cache.clear()
        with pytest.warns(RuntimeWarning, match="non-finite"):
            out = m.decode(lat)
        assert torch.equal(out, img) and seen == [True, False]
        seen.clear()
        assert torch.equal(m.decode(lat), img) and seen == [False]  # remembered: float32 from now on
    finally:
        monkeypatch.undo()
        m.set_fast(True)


def test_vq_quantizes_in_float32_under_autocast(random_model, monkeypatch):
    m = random_model("vq")
    z = torch.randn(2, *m.latent_shape) * 3
    seen = []
    orig = m.autoencoder.quantize.forward

    def spy(x):
        seen.append((torch.is_autocast_enabled("cpu"), x.dtype))
        return orig(x)

    monkeypatch.setattr(m.autoencoder.quantize, "forward", spy)
    m.set_fast("bf16").decode(z)
    assert seen == [(False, torch.float32)]  # the code search never sees half precision


# -- compile / CUDA graphs / CUDA ---------------------------------------------------------------------------
def test_compile_switch_wraps_and_matches(random_model):
    m = random_model()
    ref = outputs(m)
    m.set_fast(FastOptions(compile="eager"))  # dynamo tracing without code generation: fast, exact
    got = outputs(m)
    assert all(type(f).__name__ != "Generator" for f in m._fast_cache.values())
    assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1])


def test_cuda_graphed_falls_back_off_gpu():
    calls = []
    g = compiled.CUDAGraphed(lambda x, y=None: (calls.append(1), x * 2)[1])
    out = g(torch.ones(2))
    assert torch.equal(out, torch.full((2,), 2.0)) and calls == [1] and g.graphs == {}


@pytest.fixture
def strict_fp32():
    """CUDA parity in true float32: PyTorch runs cuDNN convolutions in TF32 by default (about 1e-3 error), which
    would hide real differences between the paths. Restored afterwards."""
    prev = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = prev


@cuda
def test_cuda_fast_path_matches_reference(random_model, strict_fp32):
    m = random_model().cuda().set_fast(False)
    ref = outputs(m)
    prev = torch.backends.cudnn.benchmark
    got = outputs(m.set_fast(True))
    assert torch.backends.cudnn.benchmark == prev  # restored after each call
    assert m.generator.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert (got[1] - ref[1]).abs().max() <= 1e-4


@cuda
@pytest.mark.parametrize("half", ["bf16", "fp16"])
def test_cuda_half_precision_psnr(random_model, half):
    m = random_model().cuda()
    lat = m.sample(batch_size=4, seed=3)
    img = m.decode(lat)
    m.set_fast(FastOptions(autocast=half, decoder_fp32=False))
    assert psnr(m.decode(lat), img) >= 40


@cuda
def test_cuda_graphs_match_eager(random_model, strict_fp32):
    m = random_model().cuda()
    ref = outputs(m)
    m.set_fast(FastOptions(cuda_graphs=True))
    got1, got2 = outputs(m), outputs(m)  # capture, then replay
    for a, b in ((got1, ref), (got2, ref)):
        assert (a[0] - b[0]).abs().max() <= 1e-5 * max(1.0, float(b[0].abs().max()))
        assert (a[1] - b[1]).abs().max() <= 1e-4
    assert any(isinstance(f, compiled.CUDAGraphed) and f.graphs for f in m._fast_cache.values())


@cuda
def test_cuda_decode_peak_is_bounded_by_chunks(random_model):
    m = random_model().cuda().set_fast(FastOptions(cudnn_benchmark=False))  # no algorithm search in the window
    lat = m.sample(batch_size=16, seed=0, latent_size=(32, 32))
    for n in (16, 2):  # warm-up: workspaces and kernels of both shapes
        m.decode(lat, chunk_size=n)
    peaks = {}
    for n in (16, 2):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        m.decode(lat, chunk_size=n)
        peaks[n] = torch.cuda.max_memory_allocated() - base
    assert peaks[2] < peaks[16]


def test_copies_and_device_moves_keep_the_fast_path(random_model):
    import copy

    m = random_model()
    ref = outputs(m)
    m.set_fast(FastOptions(compile="eager"))
    outputs(m)  # fills the callable cache
    c = copy.deepcopy(m)
    assert len(c._fast_cache) == 0 and c.fast == m.fast
    got = outputs(c)
    assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1])
    c.set_fast(True).to(torch.float64).to(torch.float32)  # _apply: memory format re-applied, cache dropped
    assert c.autoencoder.decoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert all(u._fused == (None, None) for u in c.modules() if type(u).__name__ == "Upsample")
    got = outputs(c)
    assert (got[1] - ref[1]).abs().max() <= 1e-5


def test_generator_stays_float32_for_vq_models_under_auto(random_model):
    m = random_model("vq")
    lat = m.sample(batch_size=2, seed=7)
    assert torch.equal(m.set_fast("bf16").sample(batch_size=2, seed=7), lat)  # "auto": VQ -> fp32 generator
    half = m.set_fast(FastOptions(autocast="bf16", generator_fp32=False)).sample(batch_size=2, seed=7)
    assert (half - lat).abs().max() > 0  # forced: the generator does run in bf16
    kl = random_model("kl")
    assert not torch.equal(kl.set_fast("bf16").sample(batch_size=2, seed=7),
                           kl.set_fast(True).sample(batch_size=2, seed=7))  # KL: bf16 generator
    with pytest.raises(ConfigError, match="generator_fp32"):
        FastOptions(generator_fp32="yes")
