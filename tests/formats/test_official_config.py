"""Official hyper-parameter JSON: the variants the official scripts and LDM configs produce are read
correctly, and values that cannot be right are refused with the field named."""
import copy
import json

import pytest

import lddgan_core as L
from lddgan_core.errors import ConfigError
from lddgan_core.formats.official import parse_official_config


@pytest.fixture
def base(official_tiny):
    return json.loads((official_tiny / "config.json").read_text())


def _parse(d):
    return parse_official_config(d)


def test_fixture_config_parses(base):
    gk, ae, diff, sf, size, name = _parse(base)
    assert (gk["in_channels"], gk["image_size"], gk["nf"], gk["ch_mult"], gk["attn_resolutions"]) == (4, 8, 12, (1, 2), (4,))
    assert (ae.kind, ae.embed_dim, ae.downsample_factor, ae.tanh_out) == ("kl", 4, 2, True)
    assert (diff.num_timesteps, diff.schedule, sf, size, name) == (4, "vp", 3.0, 16, "official_tiny")


@pytest.mark.parametrize("edit,check", [
    (lambda d: d["generator"].update(attn_resolutions=4), lambda r: r[0]["attn_resolutions"] == (4,)),
    (lambda d: d["generator"].update(resblock_type="BigGAN", embedding_type="Positional"), lambda r: True),
    (lambda d: d["generator"].update(centered="False", not_use_tanh="true"),
     lambda r: r[0]["centered"] is False and r[0]["use_tanh"] is False),
    (lambda d: d["generator"].update(image_size=16), lambda r: r[0]["image_size"] == 8),  # pixel size + latent_shape
    (lambda d: d["generator"].update(image_size=256, current_resolution=8), lambda r: r[0]["image_size"] == 8),
    (lambda d: (d["diffusion"].pop("num_timesteps"), d.update(num_timesteps=2)), lambda r: r[2].num_timesteps == 2),
    (lambda d: d["diffusion"].update(use_geometric=True), lambda r: r[2].schedule == "geometric"),
    (lambda d: d.update(autoencoder={"target": d["autoencoder"]["target"],
                                     "params": {k: v for k, v in d["autoencoder"].items() if k != "target"}}),
     lambda r: r[1].kind == "kl" and r[1].ch == 32),
    (lambda d: d["autoencoder"].pop("kind"), lambda r: r[1].kind == "kl"),  # from target ...AutoencoderKL
    (lambda d: d["generator"].update(dropout=None), lambda r: r[0]["dropout"] == 0.0),
])
def test_accepted_variants(base, edit, check):
    d = copy.deepcopy(base)
    edit(d)
    assert check(_parse(d))


@pytest.mark.parametrize("edit,match", [
    (lambda d: d["generator"].update(net_type="wavelet"), "net_type"),
    (lambda d: d["generator"].update(progressive="output_skip"), "progressive"),
    (lambda d: d["generator"].update(embedding_type="fourier"), "embedding_type"),
    (lambda d: d["generator"].update(centered="maybe"), "centered must be true or false"),
    (lambda d: d["generator"].update(ch_mult="12"), "ch_mult must be a list of integers"),
    (lambda d: d["generator"].update(num_res_blocks="two"), "num_res_blocks must be a number"),
    (lambda d: d["autoencoder"]["ddconfig"].update(use_linear_attn=True), "use_linear_attn"),
    (lambda d: d["autoencoder"].update(kind=None, target="foo.Bar"), "kind"),
    (lambda d: d.pop("scale_factor"), "scale_factor is missing"),
    (lambda d: d["diffusion"].pop("num_timesteps"), "num_timesteps is missing"),
])
def test_refused_variants(base, edit, match):
    d = copy.deepcopy(base)
    edit(d)
    with pytest.raises(ConfigError, match=match):
        _parse(d)


def test_variant_loads_and_matches(official_tiny, base):
    """A config written in the LDM/argparse style (pixel image_size, LDM params block, string bools)
    builds the same model as the fixture's own config."""
    d = copy.deepcopy(base)
    d["generator"].update(image_size=16, centered="true", resblock_type="BigGAN")
    d["autoencoder"] = {"target": "ldm.models.autoencoder.AutoencoderKL",
                        "params": {k: v for k, v in base["autoencoder"].items() if k not in ("target", "kind")}}
    a = L.load_official(d, official_tiny / "netG.pth", official_tiny / "autoencoder.ckpt")
    b = L.load_official(base, official_tiny / "netG.pth", official_tiny / "autoencoder.ckpt")
    assert a.config.generator == b.config.generator and a.config.autoencoder == b.config.autoencoder
