"""Shared fixtures: the official-format fixture set, the model loaded from it, and tiny random models."""
import os
import pathlib

import pytest
import torch

import lddgan_core as L

REPO = pathlib.Path(__file__).resolve().parent.parent


SHARED_FIXTURES = REPO.parent / "shared" / "fixtures"  # the project's fixture sets, beside the repository
OWN_FIXTURE = REPO / "tests" / "data" / "official_tiny"  # the repository's copy of official_tiny (README there)
FIXTURE_FILES = ("config.json", "netG.pth", "autoencoder.ckpt", "cases.safetensors")


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
