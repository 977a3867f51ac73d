"""Responsive nodes (issue 15, items 4 and 7), with a fake clock and slow fake work instead of long runs:
chunks are sized to time as well as memory, so a progress tick and a Cancel check come about every
TARGET_SECONDS however big the batch and however slow the machine; a batch above the maximum is refused with
a clear error; the sampler sends previews of its current x0 prediction, decoded by the model's own
autoencoder, rate-limited to about one a second and a small share of the run."""
import sys

import numpy as np
import pytest
import torch

from conftest import REPO

sys.path.insert(0, str(REPO))  # nodes/ is not pip-installed: import it from the checkout

import lddgan_core as L  # noqa: E402
import nodes as P  # noqa: E402
from nodes import chunks, preview, runtime  # noqa: E402
from nodes.convert import model_to_image  # noqa: E402
from nodes.sampler import MAX_BATCH  # noqa: E402

SHIPPED = "lddgan_tiny_fixture.safetensors"  # 16 px, latent [4, 8, 8], T = 4


@pytest.fixture(scope="module")
def shipped():
    return P.LDDGANModelLoader().load(SHIPPED)[0]


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t

    def advance(self, seconds):
        self.t += seconds


@pytest.fixture
def clock(monkeypatch):
    c = FakeClock()
    monkeypatch.setattr(chunks, "clock", c)
    return c


class Bar:
    """ComfyUI's ProgressBar as the nodes use it; records every update with the fake time it came at."""

    def __init__(self, total, clock):
        self.total, self.clock, self.updates = total, clock, []

    def update_absolute(self, value, total=None, preview=None):
        self.updates.append((value, total, preview, self.clock()))


@pytest.fixture
def bars(monkeypatch, clock):
    made = []
    monkeypatch.setattr(runtime, "progress_bar", lambda total: made.append(Bar(total, clock)) or made[-1])
    return made


@pytest.fixture
def checks(monkeypatch, clock):
    """The fake time of every Cancel check."""
    seen = []
    monkeypatch.setattr(runtime, "check_interrupt", lambda: seen.append(clock()))
    return seen


def gaps(times):
    times = [0.0] + list(times)
    return [b - a for a, b in zip(times, times[1:])]


# -- (4) chunks sized to time ----------------------------------------------------------------------------------
@pytest.mark.parametrize("device, slower", [("cpu", 3.0), ("cpu", 0.01), ("cuda", 3.0), ("cuda", 0.001)])
def test_run_chunked_paces_chunks_to_time(clock, device, slower):
    """4096 samples whose real cost is ``slower`` x the estimate (plus 5 ms per chunk): the first tick within
    PROBE_SECONDS x slower, every later one within TARGET_SECONDS; fast devices still get few chunks."""
    flops = 1e7
    rate = chunks.ASSUMED_FLOPS.get(device, chunks.ASSUMED_FLOPS_ACCELERATOR)
    cost = slower * flops / rate  # real seconds per sample
    sizes, ticks = [], []

    def fn(a, b):
        sizes.append(b - a)
        clock.advance(0.005 + cost * (b - a))
        return torch.zeros(b - a, 1)

    out = chunks.run_chunked(4096, 4096, fn, on_done=lambda n: ticks.append(clock()),
                             pace=chunks.Pace(flops, torch.device(device)))
    assert out.shape == (4096, 1) and sum(sizes) == 4096
    g = gaps(ticks)
    assert g[0] <= max(chunks.PROBE_SECONDS * slower, 0.0) + 0.006
    assert max(g[1:], default=0) <= chunks.TARGET_SECONDS + 0.006, g
    assert max(g) <= 1.0
    # not thousands of tiny chunks: the measured rate grows them (x MAX_GROWTH at most per chunk) to the target
    assert len(sizes) <= 8 + clock() / chunks.TARGET_SECONDS, sizes


def test_memory_bound_stays_on_top_of_the_pace(clock):
    sizes = []

    def fn(a, b):
        sizes.append(b - a)
        return torch.zeros(b - a)  # takes no time: the pace would grow without end
    chunks.run_chunked(100, 7, fn, pace=chunks.Pace(1.0, torch.device("cpu")))
    assert max(sizes) == 7 and sum(sizes) == 100


def test_sampler_ticks_and_checks_cancel_about_every_second_on_a_huge_batch(shipped, clock, bars, checks,
                                                                          monkeypatch):
    """The reported case: batch 4096 on a CPU 3x slower than assumed. Before, the first tick came after the
    whole first step of one 4096 chunk (17 s there); now every tick and every Cancel check comes within 1 s."""
    cost = 3.0 * chunks.sample_flops(shipped, 8, 8) / chunks.ASSUMED_FLOPS["cpu"]  # seconds per sample and step
    sizes = []

    def slow_sample(self, *, seeds, init_latent=None, start_step=None, callback=None, **_):
        n = len(seeds)
        sizes.append(n)
        x = torch.zeros(n, 4, 8, 8)
        for s in range(start_step):
            clock.advance(cost * n)
            callback({"step": s, "total": start_step, "t": start_step - 1 - s, "x": x, "x0": x})
        return x
    monkeypatch.setattr(type(shipped), "sample", slow_sample)
    monkeypatch.setattr(preview, "preview_image", lambda model, x0: None)  # previews: tested below
    out = P.LDDGANSampler().sample(shipped, 0, 4096, 1.0)[0]["samples"]
    assert out.shape[0] == 4096 and sum(sizes) == 4096 and len(sizes) > 1
    bar = bars[0]
    assert [u[0] for u in bar.updates][-1] == 4096 * 4
    tick_gaps = gaps([u[3] for u in bar.updates])
    assert max(tick_gaps) <= 1.0 and max(tick_gaps[4:]) <= chunks.TARGET_SECONDS + 1e-9, max(tick_gaps)
    assert max(gaps(checks)) <= 1.0  # Cancel is honoured within a second at any point
    assert clock() <= 4096 * 4 * cost + 1e-6  # chunking adds no (fake) time


@pytest.mark.parametrize("node", ["encode", "decode"])
def test_codec_ticks_about_every_second_on_a_huge_batch(shipped, clock, bars, checks, monkeypatch, node):
    B = 4096
    cost = 3.0 * chunks.decode_flops(shipped, 8, 8) / chunks.ASSUMED_FLOPS["cpu"]
    sizes = []
    if node == "decode":
        def slow(self, z, plan=None, **_):
            sizes.append(z.shape[0])
            clock.advance(cost * z.shape[0])
            return torch.zeros(z.shape[0], 3, 16, 16)
        monkeypatch.setattr(type(shipped), "decode", slow)
        out = P.LDDGANDecode().decode(shipped, {"samples": torch.zeros(B, 4, 8, 8)})[0]
        assert out.shape == (B, 16, 16, 3)
    else:
        def slow(self, x):
            sizes.append(x.shape[0])
            clock.advance(cost * x.shape[0])
            return torch.zeros(x.shape[0], 4, 8, 8)
        monkeypatch.setattr(type(shipped), "encode", slow)
        out = P.LDDGANEncode().encode(shipped, torch.zeros(B, 16, 16, 3))[0]["samples"]
        assert out.shape == (B, 4, 8, 8)
    assert sum(sizes) == B and len(sizes) > 1
    assert bars[0].updates[-1][0] == B
    assert max(gaps([u[3] for u in bars[0].updates])) <= 1.0
    assert max(gaps(checks)) <= 1.0


def test_paced_chunks_give_the_same_results(shipped, monkeypatch):
    """Chunk sizes never change a result: a pace that makes chunks of 1, 2, 4, ... equals one batch."""
    whole = P.LDDGANSampler().sample(shipped, 3, 7, 1.0)[0]["samples"]
    img = P.LDDGANDecode().decode(shipped, {"samples": whole})[0]
    monkeypatch.setattr(chunks, "PROBE_SECONDS", 0.0)  # first chunk: 1 sample
    monkeypatch.setattr(chunks, "TARGET_SECONDS", 1e-12)  # then as small as the growth cap allows
    torch.testing.assert_close(P.LDDGANSampler().sample(shipped, 3, 7, 1.0)[0]["samples"], whole, rtol=0, atol=5e-5)
    torch.testing.assert_close(P.LDDGANDecode().decode(shipped, {"samples": whole})[0], img, rtol=0, atol=5e-5)


# -- (4) the maximum batch -----------------------------------------------------------------------------------------
def test_batch_above_the_maximum_is_refused_with_a_clear_error(shipped):
    spec = P.LDDGANSampler.INPUT_TYPES()["required"]["batch_size"][1]
    assert spec["max"] == MAX_BATCH and str(MAX_BATCH) in spec["tooltip"]
    for bad in (MAX_BATCH + 1, 1_000_000, 0):
        with pytest.raises(L.InputError, match=rf"batch_size: {bad} is outside 1\.\.{MAX_BATCH}.*at most {MAX_BATCH}"):
            P.LDDGANSampler().sample(shipped, 0, bad, 1.0)


# -- (7) previews of the x0 prediction ----------------------------------------------------------------------------
def _slow_steps(monkeypatch, model, clock, seconds, seen):
    """Each sampling step takes ``seconds`` of fake time; the callback's x0 is kept in ``seen``."""
    real = type(model).sample

    def slow(self, *a, callback=None, **k):
        def cb(info):
            clock.advance(seconds)
            seen.append(info["x0"].clone())
            callback(info)
        return real(self, *a, callback=cb, **k)
    monkeypatch.setattr(type(model), "sample", slow)


def _pixels(model, z):
    return (model_to_image(model.decode(z))[0] * 255).round().to(torch.uint8).numpy().astype(int)


def _unscaled(pil):
    arr = np.asarray(pil).astype(int)
    k = max(1, preview.PREVIEW_MIN_SIDE // 16)
    assert arr.shape == (16 * k, 16 * k, 3)
    return arr[::k, ::k]


def test_sampler_sends_decoded_x0_previews_rate_limited(shipped, clock, bars, monkeypatch):
    x0s = []
    _slow_steps(monkeypatch, shipped, clock, 0.3, x0s)
    monkeypatch.setattr(runtime, "free_memory", lambda device: 2 * chunks.sample_bytes(shipped, 8, 8))  # 1 per chunk
    out = P.LDDGANSampler().sample(shipped, 11, 3, 1.0)[0]["samples"]
    ups = bars[0].updates
    assert len(ups) == len(x0s) == 12
    sent = [(i, u) for i, u in enumerate(ups) if u[2] is not None]
    assert [i for i, _ in sent] == [3, 7, 11]  # at 1.2 s, 2.4 s, 3.6 s of a 3.6 s run
    times = [u[3] for _, u in sent]
    assert min(gaps(times)) >= preview.PREVIEW_INTERVAL
    for i, (_, _, shown, _) in sent:
        fmt, pil, max_size = shown
        assert fmt == "JPEG" and max_size == preview.PREVIEW_MAX_SIZE and pil.mode == "RGB"
        # the model's own decode of the first sample (of the chunk) of the callback's x0 prediction
        assert np.abs(_unscaled(pil) - _pixels(shipped, x0s[i][:1] * shipped.scale_factor)).max() <= 1
    # the last step's preview is the final image of that chunk's first sample
    assert sent[-1][1][0] == 12
    assert np.abs(_unscaled(sent[-1][1][2][1]) - _pixels(shipped, out[2:3])).max() <= 1
    assert len({np.asarray(u[2][1]).tobytes() for _, u in sent}) == 3  # three different images


def test_fast_runs_send_no_previews(shipped, clock, bars):
    P.LDDGANSampler().sample(shipped, 0, 4, 1.0)  # the fake clock never moves: every step is instant
    assert bars[0].updates and all(u[2] is None for u in bars[0].updates)


def test_preview_cost_is_a_small_share_of_the_run(shipped, clock, bars, monkeypatch):
    """A preview that takes 0.2 s: the next waits 0.2 / PREVIEW_SHARE = 4 s, so previews stay ~5% of the run."""
    x0s = []
    _slow_steps(monkeypatch, shipped, clock, 0.3, x0s)
    real = preview.preview_image

    def slow_preview(model, x0):
        clock.advance(0.2)
        return real(model, x0)
    monkeypatch.setattr(preview, "preview_image", slow_preview)
    monkeypatch.setattr(runtime, "free_memory", lambda device: 2 * chunks.sample_bytes(shipped, 8, 8))  # 1 per chunk
    P.LDDGANSampler().sample(shipped, 0, 16, 1.0)  # 64 steps, 19.2 s of sampling
    times = [u[3] for u in bars[0].updates if u[2] is not None]
    assert 3 <= len(times) <= 6
    assert min(gaps(times)[1:]) >= 0.2 / preview.PREVIEW_SHARE
    spent = 0.2 * len(times)
    assert spent <= preview.PREVIEW_SHARE * clock() + 0.2  # the first one, before its cost was known


def test_a_failing_preview_never_fails_the_run(shipped, clock, bars, monkeypatch):
    x0s = []
    _slow_steps(monkeypatch, shipped, clock, 0.5, x0s)
    calls = []

    def broken(model, x0):
        calls.append(1)
        raise RuntimeError("out of memory")
    monkeypatch.setattr(preview, "preview_image", broken)
    ref = P.LDDGANSampler().sample(shipped, 0, 2, 1.0)[0]["samples"]
    assert len(calls) == 1 and all(u[2] is None for u in bars[0].updates)
    assert ref.shape == (2, 4, 8, 8)


def test_synchronize_waits_for_an_accelerator_only(monkeypatch):
    """Chunks and sampler ticks are timed after the device's queued work is done (a no-op on the CPU)."""
    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: calls.append(a))
    monkeypatch.setattr(runtime, "compute_device", lambda: torch.device("cpu"))
    runtime.synchronize()
    assert calls == []
    monkeypatch.setattr(runtime, "compute_device", lambda: torch.device("cuda"))
    runtime.synchronize()
    assert calls == [()]
