"""Tests for lddgan_core.nets.discriminator (DDGAN time-conditioned discriminator), CPU only."""
import dataclasses
import math

import pytest
import torch
import torch.nn as nn

from lddgan_core.nets.discriminator import (Discriminator, DiscriminatorConfig, build_discriminator,
                                       minibatch_stddev)


def make(kind="small", in_channels=8, ngf=8, t_emb_dim=16, num_layers=3, randomize=False):
    torch.manual_seed(0)
    D = build_discriminator(DiscriminatorConfig(kind=kind, in_channels=in_channels, ngf=ngf,
                                                t_emb_dim=t_emb_dim, num_layers=num_layers))
    if randomize:  # the official init zeroes conv2/final_conv (scale 1e-10); use visible weights
        for p in D.parameters():
            nn.init.normal_(p, std=0.1)
    return D


def inputs(B=4, C=4, H=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, C, H, H, generator=g), torch.randint(0, 4, (B,), generator=g),
            torch.randn(B, C, H, H, generator=g))


@pytest.mark.parametrize("kind,layers,H", [("small", 3, 16), ("small", 4, 16), ("large", 4, 32), ("large", 4, 64)])
def test_output_shape(kind, layers, H):
    D = make(kind, num_layers=layers)
    x_t, t, x_tp1 = inputs(B=4, H=H)
    out = D(x_t, t, x_tp1)
    assert out.shape == (4, 1) and out.dtype == torch.float32 and torch.isfinite(out).all()


def expected_params(kind, nc, ngf, T, L):
    """Official constructor, counted by hand: TimestepEmbedding = 2 Linear(T, T); start_conv =
    1x1 conv nc->2ngf; DownConvBlock(ci, co) = conv3x3 ci->co + conv3x3 co->co + Linear(T, co)
    (all with bias) + 1x1 skip ci->co without bias; final_conv = 3x3 (8ngf+1)->8ngf; end_linear 8ngf->1."""
    def block(ci, co):
        return (9 * ci * co + co) + (9 * co * co + co) + (T * co + co) + ci * co
    w = [(2, 2), (2, 4), (4, 8)] if kind == "small" else [(2, 4), (4, 8), (8, 8)]
    w += [(8, 8)] * (L - 3)
    return (2 * (T * T + T) + (nc * 2 * ngf + 2 * ngf) + sum(block(a * ngf, b * ngf) for a, b in w)
            + (9 * (8 * ngf + 1) * 8 * ngf + 8 * ngf) + (8 * ngf + 1))


# Literals: counted once by instantiating the official score_sde classes (einops / CUDA op stubbed).
@pytest.mark.parametrize("kind,nc,layers,official", [("small", 8, 3, 7_628_545),  # CIFAR-10
                                                     ("large", 6, 4, 17_510_529),  # CelebA-HQ 256
                                                     ("large", 8, 4, 17_510_785)])  # LSUN church
def test_param_count_official_settings(kind, nc, layers, official):
    D = make(kind, in_channels=nc, ngf=64, t_emb_dim=256, num_layers=layers)
    n = sum(p.numel() for p in D.parameters())
    assert n == expected_params(kind, nc, 64, 256, layers) == official


def test_state_dict_keys_and_buffer():
    D = make("small", num_layers=3)
    keys = set(D.state_dict())
    want = {"t_embed.fc0.weight", "t_embed.fc0.bias", "t_embed.fc1.weight", "t_embed.fc1.bias",
            "start_conv.weight", "start_conv.bias", "final_conv.weight", "final_conv.bias",
            "end_linear.weight", "end_linear.bias"}
    for i in range(3):
        want |= {f"blocks.{i}.{m}.{p}" for m in ("conv1", "conv2", "dense_t") for p in ("weight", "bias")}
        want.add(f"blocks.{i}.skip.weight")
    assert keys == want
    assert not hasattr(D.blocks[0], "fir") and D.blocks[1].fir.shape == (4, 4)  # buffer, not saved
    assert abs(D.blocks[1].fir.sum().item() - 1) < 1e-6


def test_init_scheme():
    D = make("small", ngf=8)
    w = D.blocks[1].conv1.weight  # [32, 16, 3, 3]; official effective fan = fan_out = 32 * 9
    bound = math.sqrt(3.0 / (32 * 9))
    assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound
    assert D.blocks[1].conv2.weight.abs().max() < 1e-5 and D.final_conv.weight.abs().max() < 1e-5
    assert make("large").final_conv.weight.abs().max() > 1e-2  # large: final_conv init_scale 1
    assert all((m.bias == 0).all() for m in D.modules() if isinstance(m, (nn.Linear, nn.Conv2d)) and m.bias is not None)


@pytest.mark.parametrize("kind", ["small", "large"])
def test_gradients_reach_inputs_for_r1(kind):
    D = make(kind, num_layers=3)
    x_t, t, x_tp1 = inputs(B=4, H=16)
    x_t.requires_grad_(True)
    out = D(x_t, t, x_tp1)
    (g,) = torch.autograd.grad(out.sum(), x_t, create_graph=True)  # R1 penalty needs create_graph
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    g.pow(2).sum().backward()  # double backward works
    assert D.start_conv.weight.grad is not None and D.start_conv.weight.grad.abs().sum() > 0


def test_output_depends_on_t():
    D = make("small", randomize=True)
    x_t, t, x_tp1 = inputs(B=4, H=16)
    with torch.no_grad():
        a, b, c = D(x_t, t, x_tp1), D(x_t, t + 1, x_tp1), D(x_t, t.clone(), x_tp1)
    assert torch.equal(a, c) and (a - b).abs().min() > 1e-4


def test_output_depends_on_input_order():
    D = make("large", randomize=True)
    x_t, t, x_tp1 = inputs(B=4, H=16)
    with torch.no_grad():
        assert not torch.allclose(D(x_t, t, x_tp1), D(x_tp1, t, x_t))


def reference_stddev(x, G):
    """Loop reference: sample b is grouped with {b' : b' = b mod (B/G)}; std over the group (biased),
    +1e-8 under the sqrt, averaged over C, H, W; appended as one channel."""
    B, C, H, W = x.shape
    M = B // G
    stats = []
    for b in range(B):
        grp = torch.stack([x[j] for j in range(B) if j % M == b % M])  # [G, C, H, W]
        mu = grp.mean(0)
        stats.append(torch.sqrt(((grp - mu) ** 2).mean(0) + 1e-8).mean())
    s = torch.stack(stats).view(B, 1, 1, 1).expand(B, 1, H, W)
    return torch.cat([x, s], 1)


@pytest.mark.parametrize("B,G", [(8, 4), (2, 2), (6, 3), (5, 1), (12, 4)])
def test_minibatch_stddev_matches_reference(B, G):
    x = torch.randn(B, 6, 3, 5, generator=torch.Generator().manual_seed(B), dtype=torch.float64)
    got = minibatch_stddev(x)
    assert got.shape == (B, 7, 3, 5)
    torch.testing.assert_close(got, reference_stddev(x, G))


@pytest.mark.parametrize("B", [1, 3, 5, 6])
def test_any_batch_size(B):
    D = make("small")
    assert D(*inputs(B=B, H=16)).shape == (B, 1)


@pytest.mark.parametrize("args,match", [
    (lambda x, t, y: (x, t, y[:, :, :8, :8]), "same shape"),
    (lambda x, t, y: (x[:, :3], t, y[:, :3]), r"x_t must be a \[B, 4, H, W\]"),
    (lambda x, t, y: (x, t, y[0]), r"x_tp1 must be a \[B, 4, H, W\]"),
    (lambda x, t, y: (x, t[:3], y), r"t must be a 1-D tensor of length B=4"),
    (lambda x, t, y: (x, t[:, None], y), r"t must be a 1-D"),
    (lambda x, t, y: (x, t > 0, y), "integer"),
    (lambda x, t, y: (x[..., :3, :3], t, y[..., :3, :3]), "too small"),
])
def test_bad_inputs(args, match):
    D = make("small", num_layers=3)  # 2 downsamplings: needs H, W >= 4
    with pytest.raises(ValueError, match=match):
        D(*args(*inputs(B=4, H=16)))
    D(*inputs(B=4, H=4))  # the smallest allowed size runs


def test_config_roundtrip_and_errors():
    cfg = DiscriminatorConfig(kind="large", in_channels=6, num_layers=4)
    d = cfg.to_dict()
    assert d["fir_kernel"] == [1, 3, 3, 1] and DiscriminatorConfig.from_dict(d) == cfg
    assert isinstance(build_discriminator(d), Discriminator)
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['nfg'\]"):
        DiscriminatorConfig.from_dict({"kind": "small", "in_channels": 8, "nfg": 64})
    with pytest.raises(ValueError, match="missing required"):
        DiscriminatorConfig.from_dict({"kind": "small"})
    for bad, match in [(dict(kind="tiny"), "kind"), (dict(in_channels=7), "even"),
                       (dict(num_layers=5), "num_layers"), (dict(ngf=0), "ngf")]:
        with pytest.raises(ValueError, match=match):
            DiscriminatorConfig(**{"kind": "small", "in_channels": 8, **bad})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.ngf = 32

