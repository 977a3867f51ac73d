"""LDDGAN Model Loader and the weights manifest: missing entries are listed as downloads, fetched only when
allowed, then loaded like any other model (served from a real HTTP server on 127.0.0.1)."""
import json

import pytest
import torch

from nodes.model_nodes import LDDGANModelLoader
from hub_util import FileServer, fixture_manifest

CHOICE = "[download] lddgan_tiny.safetensors"


@pytest.fixture
def team(official_tiny, tmp_path, monkeypatch):
    """A team manifest whose model is the official_tiny fixture on a local server; models in tmp/models."""
    with FileServer() as srv:
        g = srv.add("/g/netG.pth", (official_tiny / "netG.pth").read_bytes())
        a = srv.add("/a/ae.ckpt", (official_tiny / "autoencoder.ckpt").read_bytes())
        path = tmp_path / "team.json"
        path.write_text(json.dumps(fixture_manifest(official_tiny, [g], [a])))
        models = tmp_path / "models"
        models.mkdir()
        monkeypatch.setenv("LDDGAN_MANIFEST", str(path))
        monkeypatch.setenv("LDDGAN_MODELS_DIR", str(models))
        yield srv, models


def _choices():
    return LDDGANModelLoader.INPUT_TYPES()["required"]["model_name"][0]


def test_missing_entry_listed_and_refused_without_permission(team):
    srv, models = team
    assert CHOICE in _choices() and "lddgan_tiny_fixture.safetensors" in _choices()
    assert LDDGANModelLoader.VALIDATE_INPUTS(CHOICE) is True
    with pytest.raises(ValueError, match=r"(?s)http://127\.0\.0\.1.*netG\.pth.*" + str(models)):
        LDDGANModelLoader().load(CHOICE, allow_download=False)
    assert not list(models.rglob("*.safetensors"))  # nothing fetched


def test_download_on_first_use_then_listed_as_local(team, tiny_model):
    srv, models = team
    (m,) = LDDGANModelLoader().load(CHOICE, allow_download=True)
    assert (models / "lddgan_tiny.safetensors").is_file()
    assert torch.allclose(m.sample(seeds=[4]), tiny_model.sample(seeds=[4]), atol=1e-6)
    # now a local model: no longer offered as a download, and a saved workflow naming the old choice still
    # validates and loads the installed file without touching the network
    assert "lddgan_tiny.safetensors" in _choices() and CHOICE not in _choices()
    assert LDDGANModelLoader.VALIDATE_INPUTS(CHOICE) is True
    n_requests = len(srv.requests)
    (m2,) = LDDGANModelLoader().load(CHOICE, allow_download=False)
    assert torch.equal(m2.sample(seeds=[4]), m.sample(seeds=[4]))
    assert len(srv.requests) == n_requests


def test_unknown_name_fails_validation(team):
    msg = LDDGANModelLoader.VALIDATE_INPUTS("[download] nope.safetensors")
    assert isinstance(msg, str) and "model_name" in msg and "nope" in msg
    assert isinstance(LDDGANModelLoader.VALIDATE_INPUTS("missing.safetensors"), str)


def test_broken_manifest_keeps_local_models(tmp_path, monkeypatch):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    monkeypatch.setenv("LDDGAN_MANIFEST", str(bad))
    assert _choices() == [c for c in _choices() if not c.startswith("[download]")]
    assert "lddgan_tiny_fixture.safetensors" in _choices()
