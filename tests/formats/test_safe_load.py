"""Tests for lddgan_core.formats.safe_load: safe checkpoint reading, restricted fallback, clear errors."""
import argparse
import collections
import os
import pathlib
import pickle
import sys
import zipfile

import pytest
import torch
from safetensors.torch import save_file

from lddgan_core.errors import CheckpointError
from lddgan_core.formats.safe_load import Opaque, _restricted_load, read_safetensors, read_state_dict
from conftest import fixtures_dir

FIXTURES = fixtures_dir()  # ../shared/fixtures/official_tiny, or the repository's copy in tests/data


# ----------------------------------------------------------------- hostile payload classes
def _write_marker(path):
    pathlib.Path(path).write_text("code ran")
    return "pwned"


class Evil:
    """Unpickling this with the default unpickler writes ``self.marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (_write_marker, (self.marker,))


class EvilShell:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"echo pwned > '{self.marker}'",))


class EvilState:
    """Default pickling (NEWOBJ + BUILD); ``__setstate__`` writes the marker."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __setstate__(self, state):
        pathlib.Path(state["marker"]).write_text("setstate ran")
        self.__dict__.update(state)


def _sd(seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(4, 6, generator=g)
    return collections.OrderedDict(
        w=base, view=base[1:3], t=base.t(), half=torch.randn(3, generator=g).half(),
        bf=torch.randn(5, generator=g).bfloat16(), i64=torch.arange(7), flag=torch.tensor([True, False]),
        scalar=torch.tensor(2.5), empty=torch.zeros(0, 3))


def _bytes(t):
    return t.detach().flatten().contiguous().view(torch.uint8)


def _assert_same(a, b):
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert a[k].stride() == b[k].stride(), k
        assert torch.equal(_bytes(a[k]), _bytes(b[k])), k  # bit-exact
        assert a[k].device.type == "cpu"


def _lightning(tmp_path, extra):
    sd = _sd(1)
    obj = {"state_dict": sd, "global_step": 3, "epoch": 1,
           "callbacks": {"ModelCheckpoint{'monitor': 'val/rec_loss'}": {"best_model_path": "x"}},
           **extra}
    p = tmp_path / "model.ckpt"
    torch.save(obj, p)
    return p, sd


# ----------------------------------------------------------------- happy paths
def test_plain_state_dict_round_trip(tmp_path):
    sd = _sd()
    torch.save(sd, tmp_path / "m.pth")
    out = read_state_dict(tmp_path / "m.pth")
    assert isinstance(out, collections.OrderedDict)
    _assert_same(sd, out)


def test_restricted_loader_matches_torch_load_and_keeps_views(tmp_path):
    sd = _sd()
    torch.save(sd, tmp_path / "m.pt")
    out = _restricted_load(tmp_path / "m.pt", "checkpoint")
    _assert_same(sd, out)
    assert out["view"].untyped_storage().data_ptr() == out["w"].untyped_storage().data_ptr()
    assert out["view"].storage_offset() == 6


def test_lightning_with_evil_objects_runs_no_code(tmp_path):
    markers = [tmp_path / f"marker{i}" for i in range(3)]
    p, sd = _lightning(tmp_path, {
        "hyper_parameters": Evil(markers[0]), "shell": EvilShell(markers[1]),
        "state_obj": EvilState(markers[2])})
    with pytest.raises(pickle.UnpicklingError):
        torch.load(p, map_location="cpu", weights_only=True)
    out = read_state_dict(p, what="autoencoder")
    assert not any(m.exists() for m in markers)
    _assert_same(sd, out["state_dict"])
    assert out["global_step"] == 3 and out["epoch"] == 1
    hp = out["hyper_parameters"]
    assert isinstance(hp, Opaque) and hp.qualname.endswith("._write_marker")
    assert hp.args == (str(markers[0]),)
    assert isinstance(out["shell"], Opaque) and out["shell"].qualname in ("posix.system", "nt.system")
    st = out["state_obj"]
    assert isinstance(st, Opaque) and st.qualname.endswith(".EvilState")
    assert st.state == {"marker": str(markers[2])}


def test_evil_payload_really_runs_under_unsafe_load(tmp_path):
    """Control: the payloads used above are live, so their absence above means something."""
    marker = tmp_path / "marker"
    p, _ = _lightning(tmp_path, {"hyper_parameters": Evil(marker)})
    torch.load(p, weights_only=False)
    assert marker.exists()


def test_namespace_pathlib_numpy_and_parameter(tmp_path):
    np = pytest.importorskip("numpy")
    param = torch.nn.Parameter(torch.randn(3, 2))
    p, sd = _lightning(tmp_path, {
        "hparams": argparse.Namespace(lr=1e-4, ch=[1, 2]), "logdir": pathlib.PosixPath("/tmp/a"),
        "pure": pathlib.PurePosixPath("b/c"), "np_scalar": np.float32(1.5), "param": param,
        "a_set": {1, 2}, "raw": b"\x00\xff", "dev": torch.device("cpu"), "size": torch.Size([2, 3])})
    out = read_state_dict(p)
    _assert_same(sd, out["state_dict"])
    ns = out["hparams"]
    assert ns.qualname == "argparse.Namespace" and ns.state == {"lr": 1e-4, "ch": [1, 2]}
    assert out["logdir"].qualname == "pathlib.PosixPath"
    assert out["np_scalar"].qualname.startswith("numpy.")
    assert isinstance(out["param"], torch.nn.Parameter) and torch.equal(out["param"], param)
    assert out["a_set"] == {1, 2} and out["raw"] == b"\x00\xff"
    assert out["dev"] == torch.device("cpu") and out["size"] == torch.Size([2, 3])


def test_fallback_never_imports_named_module(tmp_path, monkeypatch):
    mod_dir = tmp_path / "mods"
    mod_dir.mkdir()
    (mod_dir / "lddgan_evil_mod.py").write_text(
        "import pathlib\n"
        f"pathlib.Path({str(tmp_path / 'imported')!r}).write_text('x')\n"
        "class Thing:\n    pass\n")
    monkeypatch.syspath_prepend(str(mod_dir))
    import lddgan_evil_mod  # noqa: E402
    torch.save({"w": torch.ones(2), "thing": lddgan_evil_mod.Thing()}, tmp_path / "c.ckpt")
    (tmp_path / "imported").unlink()
    del sys.modules["lddgan_evil_mod"]
    out = read_state_dict(tmp_path / "c.ckpt")
    assert out["thing"].qualname == "lddgan_evil_mod.Thing"
    assert "lddgan_evil_mod" not in sys.modules and not (tmp_path / "imported").exists()
    assert torch.equal(out["w"], torch.ones(2))


def test_big_endian_archive_is_byteswapped(tmp_path):
    t = torch.arange(6, dtype=torch.float32).reshape(2, 3) / 7
    torch.save({"t": t, "ns": argparse.Namespace(a=1)}, tmp_path / "le.pt")
    with zipfile.ZipFile(tmp_path / "le.pt") as src, zipfile.ZipFile(tmp_path / "be.pt", "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            if name.endswith("/byteorder"):
                data = b"big"
            elif "/data/" in name:
                data = torch.frombuffer(bytearray(data), dtype=torch.float32).numpy().byteswap().tobytes()
            dst.writestr(name, data)
    out = _restricted_load(tmp_path / "be.pt", "checkpoint")
    assert torch.equal(out["t"], t)


def test_safetensors_by_content_not_extension(tmp_path):
    sd = {"a": torch.randn(3, 4), "b": torch.arange(5)}
    save_file(sd, tmp_path / "weights.pth", metadata={"format": "pt", "x": "1"})
    tensors, meta = read_safetensors(tmp_path / "weights.pth")
    assert meta == {"format": "pt", "x": "1"}
    _assert_same(sd, tensors)
    _assert_same(sd, read_state_dict(tmp_path / "weights.pth"))
    torch.save(sd, tmp_path / "zip.safetensors")
    _assert_same(sd, read_state_dict(tmp_path / "zip.safetensors"))


@pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"fixtures not present at {FIXTURES}")
def test_official_fixtures_load():
    g = read_state_dict(FIXTURES / "netG.pth", what="generator")
    assert len(g) == 162 and all(k.startswith("module.") for k in g)
    assert all(isinstance(v, torch.Tensor) and v.dtype == torch.float32 for v in g.values())
    ae = read_state_dict(FIXTURES / "autoencoder.ckpt", what="autoencoder")
    assert ae["global_step"] == 0
    sd = ae["state_dict"]
    assert len(sd) == 158 and sum(k.startswith("loss.") for k in sd) == 4
    for path in (FIXTURES / "netG.pth", FIXTURES / "autoencoder.ckpt"):  # fallback agrees too
        a, b = read_state_dict(path), _restricted_load(path, "checkpoint")
        a, b = a.get("state_dict", a), b.get("state_dict", b)
        _assert_same(a, b)


# ----------------------------------------------------------------- errors
def _err(path, *needles, what="checkpoint"):
    with pytest.raises(CheckpointError) as ei:
        read_state_dict(path, what=what)
    msg = str(ei.value)
    assert str(path) in msg and what in msg, msg
    rest = msg.replace(str(path), "").lower()  # tmp_path holds the test name: ignore it
    for n in needles:
        assert n in rest, msg
    assert isinstance(ei.value, ValueError)
    return msg


def test_missing_file(tmp_path):
    _err(tmp_path / "nope.ckpt", "does not exist", what="generator")


def test_directory_instead_of_file(tmp_path):
    _err(tmp_path, "directory")


def test_empty_file(tmp_path):
    (tmp_path / "e.pth").write_bytes(b"")
    _err(tmp_path / "e.pth", "empty")


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.999])
def test_truncated_zip(tmp_path, keep):
    torch.save(_sd(), tmp_path / "full.pth")
    data = (tmp_path / "full.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: int(len(data) * keep)])
    _err(tmp_path / "cut.pth", "truncated")


@pytest.mark.parametrize("keep", [0.5, 0.99, 4 / 1000])
def test_truncated_safetensors(tmp_path, keep):
    save_file({"a": torch.randn(64, 64)}, tmp_path / "full.safetensors")
    data = (tmp_path / "full.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: max(9, int(len(data) * keep))])
    _err(tmp_path / "cut.safetensors", "truncated")


@pytest.mark.parametrize("content", [
    b"\x89PNG\r\n\x1a\n" + b"\x00" * 64,
    bytes(range(256)) * 4,
    b"model:\n  target: ldm.models.autoencoder.AutoencoderKL\n",
    b"x",
])
def test_not_a_checkpoint(tmp_path, content):
    (tmp_path / "f.ckpt").write_bytes(content)
    _err(tmp_path / "f.ckpt", "not a checkpoint")


def test_zip_that_is_not_torch(tmp_path):
    with zipfile.ZipFile(tmp_path / "a.pth", "w") as z:
        z.writestr("readme.txt", "hello")
    _err(tmp_path / "a.pth", "not a torch.save checkpoint")


def test_legacy_format_tensors_only_is_read(tmp_path):
    # pre-1.6 files holding only tensors (e.g. pytorch-fid's Inception weights) load through weights_only
    sd = _sd()
    torch.save(sd, tmp_path / "old.pth", _use_new_zipfile_serialization=False)
    got = read_state_dict(tmp_path / "old.pth")
    assert list(got) == list(sd) and all(torch.equal(got[k], sd[k]) for k in sd)


def test_legacy_format_with_objects_refused(tmp_path):
    torch.save({"w": torch.ones(2), "ns": argparse.Namespace(a=1)}, tmp_path / "old.pth",
               _use_new_zipfile_serialization=False)
    _err(tmp_path / "old.pth", "legacy", "not loaded", "re-save")


def test_corrupt_pickle_inside_zip(tmp_path):
    torch.save({"w": torch.ones(2), "ns": argparse.Namespace()}, tmp_path / "a.pt")
    with zipfile.ZipFile(tmp_path / "a.pt") as src, zipfile.ZipFile(tmp_path / "b.pt", "w") as dst:
        for name in src.namelist():
            dst.writestr(name, b"\x80\x02garbage" if name.endswith("data.pkl") else src.read(name))
    _err(tmp_path / "b.pt")
