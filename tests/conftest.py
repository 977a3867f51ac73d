"""Shared fixtures: the official-format fixture set, the model loaded from it, and tiny random models."""
import os
import pathlib

import pytest
import torch

import lddgan_core as L

TESTS = pathlib.Path(__file__).resolve().parent  # tests/: the shared helpers; tests mirror the library in subfolders
REPO = TESTS.parent


SHARED_FIXTURES = REPO.parent / "shared" / "fixtures"  # the project's fixture sets, beside the repository
OWN_FIXTURE = TESTS / "data" / "official_tiny"  # the repository's copy of official_tiny (README there)
FIXTURE_FILES = ("config.json", "netG.pth", "autoencoder.ckpt", "cases.safetensors")


# (generator kwargs, official state-dict key count, params in millions) from LDDGAN_FACTS.md
OFFICIAL_G = {
    "cifar10": (dict(in_channels=4, image_size=16, nf=128, ch_mult=(1, 2, 2), num_res_blocks=2, attn_resolutions=(32,),
                     nz=50, z_emb_dim=256, n_mlp=4), 272, 33.3),
    "celeba256": (dict(in_channels=3, image_size=64, nf=128, ch_mult=(1, 2, 2, 2), num_res_blocks=2,
                       attn_resolutions=(16,), nz=100, z_emb_dim=256, n_mlp=3), 382, 48.4),
    "lsun256": (dict(in_channels=4, image_size=32, nf=128, ch_mult=(1, 2, 2, 2), num_res_blocks=3,
                     attn_resolutions=(16,), nz=50, z_emb_dim=256, n_mlp=3), 480, 61.9),
}
OFFICIAL_AE = {
    "cifar10_kl_f2": (dict(kind="kl", embed_dim=4, z_channels=4, ch=128, ch_mult=(1, 2), num_res_blocks=2,
                           attn_resolutions=(16,), resolution=32, dropout=0.2, tanh_out=True), 14.6),
    "vq_f4": (dict(kind="vq", embed_dim=3, z_channels=3, ch=128, ch_mult=(1, 2, 4), num_res_blocks=2,
                   resolution=256, double_z=False, n_embed=8192), 55.3),
    "kl_f8": (dict(kind="kl", embed_dim=4, z_channels=4, ch=128, ch_mult=(1, 2, 4, 4), num_res_blocks=2,
                   resolution=256), 83.7),
}


def fixtures_dir() -> pathlib.Path:
    """$LDDGAN_FIXTURES_DIR, else ../shared/fixtures/official_tiny when present, else the repository's copy."""
    env = os.environ.get("LDDGAN_FIXTURES_DIR")
    if env:
        return pathlib.Path(env)
    shared = SHARED_FIXTURES / "official_tiny"
    return shared if all((shared / f).is_file() for f in FIXTURE_FILES) else OWN_FIXTURE


@pytest.fixture(scope="session")
def official_tiny() -> pathlib.Path:
    """Folder with config.json, netG.pth, autoencoder.ckpt, cases.safetensors (fails if a file is missing)."""
    d = fixtures_dir()
    missing = [f for f in FIXTURE_FILES if not (d / f).is_file()]
    assert not missing, f"official_tiny fixture files missing in {d}: {missing}"
    return d


@pytest.fixture(scope="session")
def tiny_model(official_tiny) -> L.LDDGAN:
    """The fixture's official files loaded with load_official (fp32, CPU, eval). Do not modify it."""
    return L.load_official(official_tiny / "config.json", official_tiny / "netG.pth",
                           official_tiny / "autoencoder.ckpt")


def tiny_config(kind: str = "kl", T: int = 4) -> L.ModelConfig:
    """A tiny architecture: latent 4x8x8 (KL) or 3x8x8 with a 16-entry codebook (VQ), images 16x16."""
    C = 4 if kind == "kl" else 3
    gen = L.GeneratorConfig(in_channels=C, image_size=8, nf=8, ch_mult=(1, 2), num_res_blocks=1,
                            attn_resolutions=(4,), nz=6, z_emb_dim=12, n_mlp=1)
    ae = L.AutoencoderConfig(kind=kind, embed_dim=C, z_channels=C, ch=32, ch_mult=(1, 2), num_res_blocks=1,
                             attn_resolutions=(), resolution=16, double_z=(kind == "kl"),
                             n_embed=16 if kind == "vq" else None)
    return L.ModelConfig(generator=gen, autoencoder=ae, diffusion=L.DiffusionConfig(num_timesteps=T),
                         scale_factor=2.0, image_size=16, name=f"tiny_{kind}",
                         provenance={"source": "random", "kind": kind})


@pytest.fixture
def random_model():
    """Factory: random_model(kind="kl"|"vq", seed=0, T=4) -> a tiny randomly initialised LDDGAN (eval)."""
    def make(kind: str = "kl", seed: int = 0, T: int = 4) -> L.LDDGAN:
        torch.manual_seed(seed)
        m = L.LDDGAN(tiny_config(kind, T))
        with torch.no_grad():  # so GroupNorm affines are not exactly 1 / 0 and every tensor matters
            for p in m.parameters():
                p.add_(0.05 * torch.randn_like(p))
        return m.eval()
    return make


@pytest.fixture
def one_thread():
    """One torch thread for tiny training runs: threads only add overhead there (and change rounding)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
