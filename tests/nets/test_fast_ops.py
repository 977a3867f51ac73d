"""Fast ops against their reference forms: FIR resampling as strided / transposed depthwise convs,
nearest-upsample + conv as one transposed conv, SDPA attention, in-place ResNet blocks (<= 1e-5 per op)."""
import pytest
import torch
import torch.nn.functional as F

from lddgan_core.nets import ops
from lddgan_core.nets.ops import NetImpl
from lddgan_core.nets.autoencoder import AttnBlock as AEAttn
from lddgan_core.nets.autoencoder import ResnetBlock, Upsample
from lddgan_core.nets.generator import AttnBlock as GAttn
from lddgan_core.nets.generator import PyramidDown, ResBlock

KERNELS = [(1, 3, 3, 1), (1, 1), (1, 2, 1), (1, 3, 3, 3, 3, 1)]
SHAPES = [(2, 3, 8, 8), (1, 5, 6, 10), (3, 2, 1, 1)]


@pytest.fixture(autouse=True)
def _seed_and_one_thread():
    torch.manual_seed(0)
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread does not stall on a busy machine
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("taps", KERNELS)
@pytest.mark.parametrize("shape", SHAPES)
def test_fir_upsample_conv_equals_upfirdn(taps, shape):
    k = ops.make_fir_kernel(taps)
    x = torch.randn(shape)
    ref, fast = ops.fir_upsample2x(x, k), ops.fir_upsample2x_conv(x, k)
    assert fast.shape == ref.shape == (shape[0], shape[1], 2 * shape[2], 2 * shape[3])
    assert (fast - ref).abs().max() <= 1e-5


@pytest.mark.parametrize("taps", KERNELS)
@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (1, 5, 6, 10), (2, 2, 2, 4)])
def test_fir_downsample_conv_equals_upfirdn(taps, shape):
    k = ops.make_fir_kernel(taps)
    x = torch.randn(shape)
    ref, fast = ops.fir_downsample2x(x, k), ops.fir_downsample2x_conv(x, k)
    assert fast.shape == ref.shape
    assert (fast - ref).abs().max() <= 1e-5


@pytest.mark.parametrize("cin", [4, 16])
def test_fir_conv_downsample_equals_reference(cin):
    k = ops.make_fir_kernel((1, 3, 3, 1))
    x, w, b = torch.randn(2, cin, 8, 12), torch.randn(6, cin, 3, 3) * 0.2, torch.randn(6)
    ref, fast = ops.fir_conv_downsample2x(x, w, b, k), ops.fir_conv_downsample2x_conv(x, w, b, k)
    assert fast.shape == ref.shape == (2, 6, 4, 6)
    assert (fast - ref).abs().max() <= 1e-5


def test_fast_fir_is_not_the_reference_code(monkeypatch):
    """The fast forms must not route through upfirdn2d for the official 4-tap kernel (else they are no faster)."""
    k = ops.make_fir_kernel((1, 3, 3, 1))
    monkeypatch.setattr(ops, "upfirdn2d", lambda *a, **kw: pytest.fail("upfirdn2d called"))
    x = torch.randn(1, 2, 4, 4)
    ops.fir_upsample2x_conv(x, k), ops.fir_downsample2x_conv(x, k)
    ops.fir_conv_downsample2x_conv(x, torch.randn(3, 2, 3, 3), None, k)


@pytest.mark.parametrize("shape", [(2, 8, 5, 7), (1, 16, 4, 4)])
def test_upsample_conv_equals_nearest_then_conv(shape):
    C = shape[1]
    x, w, b = torch.randn(shape), torch.randn(C + 1, C, 3, 3) / (3 * C ** 0.5), torch.randn(C + 1)
    ref = F.conv2d(F.interpolate(x, scale_factor=2.0, mode="nearest"), w, b, padding=1)
    fast = ops.upsample_conv2x(x, w, b)
    assert fast.shape == ref.shape
    assert (fast - ref).abs().max() <= 1e-5
    # the kernel has 4 taps per axis: MACs 16/4 = 4 per output vs 9
    assert ops.upsample_conv_weight(w).shape == (C, C + 1, 4, 4)


def test_upsample_module_fast_path_and_weight_cache():
    up = Upsample(8).eval()
    x = torch.randn(2, 8, 4, 6)
    with torch.no_grad():
        ref = up(x)
        up.impl = NetImpl(upsample_conv=True)
        fast = up(x)
        assert (fast - ref).abs().max() <= 1e-5
        up.conv.weight.mul_(2)  # in-place change: the cached fused kernel must follow
        up.impl = NetImpl()
        ref2 = up(x)
        up.impl = NetImpl(upsample_conv=True)
        assert (up(x) - ref2).abs().max() <= 1e-5
        assert (ref2 - ref).abs().max() > 0.1
    # with gradients the module keeps the reference form (the cache holds no graph)
    y = up(x.requires_grad_())
    y.sum().backward()
    assert x.grad is not None


@pytest.mark.parametrize("cls,C,HW", [(GAttn, 16, (4, 4)), (AEAttn, 32, (3, 5))])
def test_sdpa_attention_equals_reference(cls, C, HW):
    blk = cls(C).eval()
    with torch.no_grad():
        for p in blk.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = torch.randn(2, C, *HW)
    with torch.no_grad():
        ref = blk(x)
        blk.impl = NetImpl(sdpa=True)
        fast = blk(x)
    assert (fast - ref).abs().max() <= 1e-5
    assert (ref - x).abs().max() > 0.1  # the attention does something


@pytest.mark.parametrize("resample", [None, "up", "down"])
def test_generator_blocks_fast_fir(resample):
    blk = ResBlock(8, 12, 16, 6, (1, 3, 3, 1), resample).eval()
    x, temb, zemb = torch.randn(2, 8, 8, 8), torch.randn(2, 16), torch.randn(2, 6)
    with torch.no_grad():
        ref = blk(x, temb, zemb)
        blk.impl = NetImpl(fir_conv=True)
        assert (blk(x, temb, zemb) - ref).abs().max() <= 1e-5
    pyr = PyramidDown(4, 8, (1, 3, 3, 1))
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        ref = pyr(x)
        pyr.impl = NetImpl(fir_conv=True)
        assert (pyr(x) - ref).abs().max() <= 1e-5


@pytest.mark.parametrize("cin,cout", [(32, 32), (32, 64)])
def test_inplace_resnet_block_is_exact(cin, cout):
    blk = ResnetBlock(cin, cout, 0.0).eval()
    x = torch.randn(2, cin, 6, 6)
    with torch.no_grad():
        ref = blk(x)
        blk.impl = NetImpl(fused=True)
        x0 = x.clone()
        out = blk(x)
    assert torch.equal(out, ref) and torch.equal(x, x0)  # same numbers; the input is not touched
    y = blk(x.requires_grad_())  # with gradients: the out-of-place form, so backward works
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("resample,cin,cout,rescale", [(None, 8, 8, True), (None, 8, 12, False), ("up", 8, 8, True),
                                                       ("down", 8, 12, True)])
def test_inplace_generator_block_matches_reference(resample, cin, cout, rescale):
    blk = ResBlock(cin, cout, 16, 6, (1, 3, 3, 1), resample, skip_rescale=rescale).eval()
    with torch.no_grad():
        for p in blk.parameters():  # non-trivial AdaGN styles and biases
            p.add_(0.2 * torch.randn_like(p))
    x, temb, zemb = torch.randn(2, cin, 8, 8), torch.randn(2, 16), torch.randn(2, 6)
    calls = []
    silu = blk.norm0.silu  # records the calls of the fused form
    blk.norm0.silu = lambda x, zemb, fused=False: (fused and calls.append(1), silu(x, zemb, fused))[1]
    with torch.no_grad():
        ref = blk(x, temb, zemb)
        blk.impl = NetImpl(fused=True)
        x0 = x.clone()
        out = blk(x, temb, zemb)
    assert calls == [1]  # the fused path ran
    # fused multiply-adds round differently: agreement to float32 rounding, not bit equality
    assert (out - ref).abs().max() <= 1e-5 * max(1.0, float(ref.abs().max())) and torch.equal(x, x0)
    assert (out - ref).abs().max() < (out - blk.eval()(x, temb, zemb * 0.5)).abs().max()  # zemb matters
    y = blk(x.requires_grad_(), temb, zemb)  # with gradients: the out-of-place form, so backward works
    y.sum().backward()
    assert calls == [1] and x.grad is not None and torch.isfinite(x.grad).all()
    blk.dropout.p = 0.5
    with torch.no_grad():  # training mode (dropout active) without gradients: the reference form too
        blk.train()(x, temb, zemb)
    assert calls == [1]
