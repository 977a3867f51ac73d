"""Architectures: the three official configurations have the official sizes; the official key map
round-trips on several layouts; autoencoders for f = 2..16 and KL / VQ."""
import pytest
import torch

import lddgan_core as L
from lddgan_core.nets.autoencoder import Autoencoder
from lddgan_core.config import AutoencoderConfig, GeneratorConfig
from lddgan_core.nets.generator import Generator
from lddgan_core.formats.official import generator_key_map
from conftest import OFFICIAL_AE, OFFICIAL_G


@pytest.mark.parametrize("name", OFFICIAL_G)
def test_official_generator_sizes(name):
    kw, n_keys, m_params = OFFICIAL_G[name]
    with torch.device("meta"):
        g = Generator(GeneratorConfig(**kw))
    sd = g.state_dict()
    assert len(sd) == n_keys == len(generator_key_map(g.cfg))
    assert round(sum(v.numel() for v in sd.values()) / 1e6, 1) == m_params


@pytest.mark.parametrize("name", OFFICIAL_AE)
def test_official_autoencoder_sizes(name):
    kw, m_params = OFFICIAL_AE[name]
    with torch.device("meta"):
        ae = Autoencoder(AutoencoderConfig(**kw))
    assert round(sum(p.numel() for p in ae.parameters()) / 1e6, 1) == m_params


LAYOUTS = [  # (generator kwargs, T, autoencoder kwargs): tiny versions of varied layouts
    (dict(in_channels=4, image_size=8, nf=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), nz=5,
          z_emb_dim=8, n_mlp=1), 4, dict(kind="kl", embed_dim=4, z_channels=4, ch=32, ch_mult=(1, 2),
                                         num_res_blocks=1, attn_resolutions=(16,), resolution=16)),
    (dict(in_channels=3, image_size=16, nf=8, ch_mult=(1, 2, 2, 2), num_res_blocks=2, attn_resolutions=(4, 16),
          nz=6, z_emb_dim=12, n_mlp=3), 2, dict(kind="vq", embed_dim=3, z_channels=3, ch=32, ch_mult=(1, 2, 2),
                                                num_res_blocks=1, double_z=False, n_embed=16, resolution=64)),
    (dict(in_channels=4, image_size=8, nf=12, ch_mult=(1, 2, 1), num_res_blocks=3, attn_resolutions=(),
          nz=4, z_emb_dim=8, n_mlp=0, progressive_input="none", use_tanh=False), 1,
     dict(kind="kl", embed_dim=4, z_channels=8, ch=32, ch_mult=(1, 1, 2, 2), num_res_blocks=1, resolution=64)),
]


def _random_model(gkw, T, akw, seed=0):
    torch.manual_seed(seed)
    g, a = GeneratorConfig(**gkw), AutoencoderConfig(**akw)
    cfg = L.ModelConfig(generator=g, autoencoder=a, diffusion=L.DiffusionConfig(num_timesteps=T),
                        scale_factor=2.5, image_size=g.image_size * a.downsample_factor)
    m = L.LDDGAN(cfg).eval()
    with torch.no_grad():  # make every tensor matter (default inits zero some biases)
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m


def _to_official(m, T, tmp_path, ddp=True, lightning="top"):
    """Write our random model in the official formats (inverse of the key map) + official JSON config."""
    g, a = m.config.generator, m.config.autoencoder
    ours = m.generator.state_dict()
    netG = {("module." if ddp else "") + sk: (ours[dk].t().contiguous() if fn else ours[dk].clone())
            for sk, dk, fn in generator_key_map(g)}
    ae_sd = {k: v.clone() for k, v in m.autoencoder.state_dict().items()}
    if lightning == "top":
        ckpt = {"state_dict": {**ae_sd, "loss.logvar": torch.zeros(())}, "global_step": 0}
    else:  # LatentDiffusion checkpoint: autoencoder under first_stage_model.
        ckpt = {"state_dict": {**{f"first_stage_model.{k}": v for k, v in ae_sd.items()},
                               "model.diffusion_model.out.0.weight": torch.ones(3),
                               "model_ema.decay": torch.tensor(0.999), "betas": torch.ones(10)}}
    torch.save(netG, tmp_path / "netG.pth")
    torch.save(ckpt, tmp_path / "ae.ckpt")
    conf = {
        "generator": {"num_channels": g.in_channels, "num_channels_dae": g.nf, "ch_mult": list(g.ch_mult),
                      "num_res_blocks": g.num_res_blocks, "attn_resolutions": list(g.attn_resolutions),
                      "image_size": g.image_size, "z_emb_dim": g.z_emb_dim, "progressive_input": g.progressive_input,
                      "not_use_tanh": not g.use_tanh, "resblock_type": "biggan", "embedding_type": "positional"},
        "diffusion": {"num_timesteps": T, "beta_min": 0.1, "beta_max": 20.0, "use_geometric": False},
        "autoencoder": {"target": "ldm.models.autoencoder." + ("AutoencoderKL" if a.kind == "kl" else "VQModelInterface"),
                        "embed_dim": a.embed_dim, "n_embed": a.n_embed,
                        "ddconfig": {"double_z": a.double_z, "z_channels": a.z_channels, "resolution": a.resolution,
                                     "in_channels": 3, "out_ch": 3, "ch": a.ch, "ch_mult": list(a.ch_mult),
                                     "num_res_blocks": a.num_res_blocks, "attn_resolutions": list(a.attn_resolutions),
                                     "dropout": 0.0, "tanh_out": a.tanh_out}},
        "scale_factor": 2.5, "image_size": m.config.image_size,
    }  # nz and n_mlp omitted on purpose: inferred from z_transform
    return conf


@pytest.mark.parametrize("i", range(len(LAYOUTS)))
@pytest.mark.parametrize("ddp,lightning", [(True, "top"), (False, "first_stage")])
def test_official_key_map_round_trip(tmp_path, i, ddp, lightning):
    gkw, T, akw = LAYOUTS[i]
    m = _random_model(gkw, T, akw, seed=i)
    conf = _to_official(m, T, tmp_path, ddp, lightning)
    m2 = L.load_official(conf, tmp_path / "netG.pth", tmp_path / "ae.ckpt")
    assert m2.config.generator == m.config.generator and m2.config.autoencoder == m.config.autoencoder
    B, (C, h, w) = 2, m.latent_shape
    x, t, z = torch.randn(B, C, h, w), torch.tensor([T - 1, 0]), torch.randn(B, gkw["nz"])
    with torch.no_grad():
        assert torch.equal(m.generator(x, t, z), m2.generator(x, t, z))
    img = torch.rand(B, 3, m.config.image_size, m.config.image_size) * 2 - 1
    assert torch.equal(m.decode(m.encode(img)), m2.decode(m2.encode(img)))
    assert torch.equal(m.sample(batch_size=2, seed=3), m2.sample(batch_size=2, seed=3))
    # the map is a bijection: permuting one official tensor changes the output
    sd = torch.load(tmp_path / "netG.pth", weights_only=True)
    k = next(k for k in sd if k.endswith("Conv_0.weight"))
    sd[k] = sd[k].flip(0)
    m3 = L.load_official(conf, sd, tmp_path / "ae.ckpt")
    with torch.no_grad():
        assert not torch.allclose(m.generator(x, t, z), m3.generator(x, t, z))


@pytest.mark.parametrize("f", [2, 4, 8, 16])
@pytest.mark.parametrize("kind", ["kl", "vq"])
def test_autoencoder_factors(f, kind):
    n = {2: 2, 4: 3, 8: 4, 16: 5}[f]
    cfg = AutoencoderConfig(kind=kind, embed_dim=3, z_channels=3, ch=32, ch_mult=(1,) * n, num_res_blocks=1,
                            resolution=32, attn_resolutions=(32 // f,), double_z=kind == "kl",
                            n_embed=8 if kind == "vq" else None)
    ae = Autoencoder(cfg).eval()
    x = torch.rand(2, 3, 32, 48) * 2 - 1  # non-square works: the network is convolutional
    with torch.no_grad():
        z = ae.encode(x)
        assert z.shape == (2, 3, 32 // f, 48 // f)
        assert ae.decode(z).shape == (2, 3, 32, 48)
        if kind == "kl":
            mean, logvar = ae.encode_posterior(x)
            assert torch.equal(mean, z) and logvar.min() >= -30 and logvar.max() <= 20


def test_kl_logvar_is_clamped():
    cfg = AutoencoderConfig(kind="kl", embed_dim=2, z_channels=2, ch=32, ch_mult=(1, 2), num_res_blocks=1, resolution=8)
    ae = Autoencoder(cfg).eval()
    with torch.no_grad():
        ae.quant_conv.bias[2:] = 100.0  # logvar half: huge
        _, logvar = ae.encode_posterior(torch.zeros(1, 3, 8, 8))
        assert torch.all(logvar == 20.0)
        ae.quant_conv.bias[2:] = -100.0
        assert torch.all(ae.encode_posterior(torch.zeros(1, 3, 8, 8))[1] == -30.0)
