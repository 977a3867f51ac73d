"""Issue 14, items 1-4: hostile model files and configs are refused before anything big is built, the restricted
unpickler is bounded, and non-finite weights / schedules / outputs are errors, never black images."""
import copy
import json
import os
import pickle
import zipfile

import pytest
import torch
from safetensors.torch import save_file

import lddgan_core as L
from lddgan_core.errors import CheckpointError, ConfigError, NonFiniteError
from lddgan_core.formats.lddgan_file import read_model_file

from hardening_util import result_of, run_limited

FIXTURE = os.path.join(os.path.dirname(L.__file__), "models", "lddgan_tiny_fixture.safetensors")


def _rewrite(tmp_path, edit_config=None, edit_tensors=None, name="m.safetensors"):
    """A copy of the fixture model with its config (metadata) and/or tensors edited."""
    meta, tensors = read_model_file(FIXTURE)
    cfg = copy.deepcopy(meta["config_dict"])
    if edit_config:
        edit_config(cfg)
    tensors = dict(tensors)
    if edit_tensors:
        edit_tensors(tensors)
    out = tmp_path / name
    save_file(tensors, str(out), metadata={"format": "lddgan", "format_version": "1", "config": json.dumps(cfg)})
    return out


# ---------------------------------------------------------------------------------------------- item 1
@pytest.mark.parametrize("section,field,value", [
    ("generator", "n_mlp", 1_000_000),
    ("generator", "num_res_blocks", 100_000),
    ("generator", "nf", 8192),
    ("diffusion", "num_timesteps", 100_000_000),
    ("autoencoder", "ch", 65536),
])
def test_huge_architecture_in_metadata_refused_fast_and_small(tmp_path, section, field, value):
    """A 3 MB file whose metadata asks for a gigantic model: one error naming the field, in bounded time and
    memory (the child has a 3 GiB address-space cap and 120 s; before the fix these took > 60 s and > 3 GB)."""
    p = _rewrite(tmp_path, lambda c: c[section].__setitem__(field, value))
    proc = run_limited(f"""
        import json, time, lddgan_core as L
        t = time.time()
        try:
            L.load({str(p)!r}); out = {{"ok": True}}
        except L.LDDGANError as e:
            out = {{"ok": False, "type": type(e).__name__, "msg": str(e)}}
        out["seconds"] = time.time() - t
        print(json.dumps(out))
    """)
    r = result_of(proc)
    assert r["ok"] is False and f"{section}.{field}" in r["msg"], r
    assert r["seconds"] < 30


@pytest.mark.parametrize("field,value", [("nf", 1024), ("n_mlp", 40), ("num_res_blocks", 20), ("nz", 4000)])
def test_config_within_limits_but_not_the_weights_named_before_building(tmp_path, field, value):
    """Sizes that pass the limits but contradict the weights: the error names the field, and the model is never
    built (nf=1024 would allocate gigabytes: the child may only use 1.5 GiB)."""
    p = _rewrite(tmp_path, lambda c: c["generator"].__setitem__(field, value))
    proc = run_limited(f"""
        import json, lddgan_core as L
        try:
            L.load({str(p)!r}); print(json.dumps({{"ok": True}}))
        except L.LDDGANError as e:
            print(json.dumps({{"ok": False, "msg": str(e)}}))
    """, mem_mb=2048)
    r = result_of(proc)
    assert r["ok"] is False and f"generator.{field} is {value} in the config" in r["msg"], r


def test_official_config_huge_nf_refused_before_allocating(official_tiny, tmp_path):
    """An official config with num_channels_dae 1024 (the weights have 12): refused from the shapes before the
    model is built (the child's memory cap would not hold that model)."""
    cfg = json.loads((official_tiny / "config.json").read_text())
    cfg["generator"]["num_channels_dae"] = 1024
    c = tmp_path / "config.json"
    c.write_text(json.dumps(cfg))
    proc = run_limited(f"""
        import json, lddgan_core as L
        try:
            L.load_official({str(c)!r}, {str(official_tiny / 'netG.pth')!r}, {str(official_tiny / 'autoencoder.ckpt')!r})
            print(json.dumps({{"ok": True}}))
        except L.LDDGANError as e:
            print(json.dumps({{"ok": False, "msg": str(e)}}))
    """, mem_mb=2048)
    r = result_of(proc)
    assert r["ok"] is False and "shape mismatches" in r["msg"] and "all_modules.0.weight" in r["msg"], r


# ---------------------------------------------------------------------------------------------- item 2
@pytest.mark.parametrize("where,key,value,expect", [
    ("generator", "num_channels_dae", 1e9, r"generator\.nf = 1000000000 is above the limit"),
    ("generator", "num_channels_dae", 2.5, r"num_channels_dae must be a number \(an integer\), got 2\.5"),
    ("generator", "ch_mult", [1, 0], r"generator\.ch_mult entries must be integers >= 1"),
    ("generator", "ch_mult", [1, -2], r"generator\.ch_mult entries must be integers >= 1"),
    ("generator", "dropout", "x", r"dropout must be a number, got 'x'"),
    ("generator", "dropout", 1.5, r"generator\.dropout must be a finite number in \[0, 1\)"),
    ("generator", "attn_resolutions", "4", r"attn_resolutions must be a list of integers, got '4'"),
    ("diffusion", "num_timesteps", 1e8, r"diffusion\.num_timesteps = 100000000 is above the limit"),
    ("diffusion", "beta_max", float("nan"), r"beta_max must be a finite number"),
    ("top", "scale_factor", float("inf"), r"scale_factor must be a finite number"),
    ("ddconfig", "ch_mult", [0, 1], r"autoencoder\.ch_mult entries must be integers >= 1"),
    ("ddconfig", "dropout", "x", r"dropout must be a number, got 'x'"),
])
def test_official_config_bad_values_one_clear_error(official_tiny, tmp_path, where, key, value, expect):
    cfg = json.loads((official_tiny / "config.json").read_text())
    sect = {"top": cfg, "generator": cfg["generator"], "ddconfig": cfg["autoencoder"].get("ddconfig")
            or cfg["autoencoder"]["params"]["ddconfig"],
            "diffusion": cfg.setdefault("diffusion", {})}[where]
    sect[key] = value
    c = tmp_path / "config.json"
    c.write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match=expect):
        L.load_official(c, official_tiny / "netG.pth", official_tiny / "autoencoder.ckpt")


@pytest.mark.parametrize("section,field,value,expect", [
    ("generator", "dropout", "x", r"generator\.dropout must be a finite number"),
    ("generator", "attn_resolutions", "4", r"generator\.attn_resolutions must be a list of integers"),
    ("generator", "ch_mult", [0, 2], r"generator\.ch_mult entries must be integers >= 1"),
    ("autoencoder", "tanh_out", "yes", r"autoencoder\.tanh_out must be true or false"),
    ("top", "scale_factor", "x", r"scale_factor must be a number"),
    ("top", "image_size", 16.5, r"image_size must be an integer"),
])
def test_model_metadata_bad_values_one_clear_error(tmp_path, section, field, value, expect):
    p = _rewrite(tmp_path, lambda c: (c if section == "top" else c[section]).__setitem__(field, value))
    with pytest.raises(CheckpointError, match=expect):
        L.load(p)


# ---------------------------------------------------------------------------------------------- item 3
class _Storage:  # pickled as a persistent id ('storage', torch.FloatStorage, '0', 'cpu', numel)
    pass


class _Tensor:
    def __init__(self, storage):
        self.storage = storage

    def __reduce__(self):
        import collections
        return torch._utils._rebuild_tensor_v2, (self.storage, 0, (4,), (1,), False, collections.OrderedDict())


class _Foreign:  # not allow-listed: weights_only refuses the file, the restricted unpickler takes over
    pass


def _bomb_zip(path, blob_bytes: int):
    """A torch.save-like zip whose one storage is blob_bytes of zeros stored deflated (a few hundred KB)."""
    import io

    buf = io.BytesIO()

    class P(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", torch.FloatStorage, "0", "cpu", blob_bytes // 4) if isinstance(obj, _Storage) else None

    P(buf, protocol=2).dump({"state_dict": {"w": _Tensor(_Storage())}, "extra": _Foreign()})
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data.pkl", buf.getvalue())
        z.writestr("archive/byteorder", "little")
        with z.open("archive/data/0", "w", force_zip64=True) as f:
            block = bytes(1 << 20)
            for _ in range(blob_bytes >> 20):
                f.write(block)
        z.writestr("archive/version", "3\n")


def test_zip_bomb_checkpoint_refused_before_inflating(tmp_path):
    p = tmp_path / "bomb.pth"
    _bomb_zip(p, 256 << 20)  # 256 MiB of zeros, deflated to well under 1 MB
    assert p.stat().st_size < 2 << 20
    proc = run_limited(f"""
        import json, time
        from lddgan_core.formats.safe_load import read_state_dict
        from lddgan_core.errors import CheckpointError
        t = time.time()
        try:
            read_state_dict({str(p)!r}); print(json.dumps({{"ok": True}}))
        except CheckpointError as e:
            print(json.dumps({{"ok": False, "msg": str(e), "s": time.time() - t}}))
    """, mem_mb=1500, timeout=120)
    r = result_of(proc)
    assert r["ok"] is False and "MiB of tensor data" in r["msg"] and "bomb" in r["msg"], r


def test_checkpoint_budget_from_config(tmp_path):
    """With an explicit byte budget (what load_official derives from the config), a file over it is refused."""
    from lddgan_core.formats.safe_load import read_state_dict

    p = tmp_path / "w.pth"
    torch.save({"w": torch.zeros(1 << 18)}, p)  # 1 MiB
    assert read_state_dict(p, max_bytes=4 << 20)["w"].numel() == 1 << 18
    with pytest.raises(CheckpointError, match="more than the 0.5 MiB"):
        read_state_dict(p, max_bytes=1 << 19)


def test_legacy_checkpoint_declaring_huge_storage_refused(tmp_path):
    """A pre-zip torch.save file whose pickle declares a 4 GiB storage but holds 16 bytes: refused from the
    declaration, nothing allocated (the child may use 1.5 GiB only)."""
    import re

    p = tmp_path / "legacy.pth"
    torch.save({"w": torch.zeros(4)}, p, _use_new_zipfile_serialization=False)
    data = p.read_bytes()
    # the storage's numel (4) is pickled as BININT1 4 after the location string 'cpu' (and its memo PUT)
    m = re.search(rb"X\x03\x00\x00\x00cpu(q.)?K\x04", data, re.S)
    assert m, "unexpected legacy layout"
    huge = data[:m.end() - 2] + b"J" + (1 << 30).to_bytes(4, "little") + data[m.end():]
    p2 = tmp_path / "legacy_huge.pth"
    p2.write_bytes(huge)
    proc = run_limited(f"""
        import json
        from lddgan_core.formats.safe_load import read_state_dict
        from lddgan_core.errors import CheckpointError
        try:
            read_state_dict({str(p2)!r}); print(json.dumps({{"ok": True}}))
        except CheckpointError as e:
            print(json.dumps({{"ok": False, "msg": str(e)}}))
    """, mem_mb=1500)
    r = result_of(proc)
    assert r["ok"] is False and "4096.0 MiB of tensor data" in r["msg"], r
    from lddgan_core.formats.safe_load import read_state_dict
    assert read_state_dict(p)["w"].shape == (4,)  # the honest file still loads


# ---------------------------------------------------------------------------------------------- item 4
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_weights_refused_at_load(tmp_path, bad):
    def edit(t):
        t["generator.conv_out.weight"] = t["generator.conv_out.weight"].clone()
        t["generator.conv_out.weight"].view(-1)[3] = bad
    p = _rewrite(tmp_path, edit_tensors=edit)
    with pytest.raises(NonFiniteError, match=r"NaN or infinite.*generator\.conv_out\.weight"):
        L.load(p)


def test_nonfinite_official_weights_refused(official_tiny, tmp_path):
    sd = torch.load(official_tiny / "netG.pth", weights_only=True)
    k = next(k for k, v in sd.items() if v.is_floating_point() and v.numel() > 1)
    sd[k] = sd[k].clone()
    sd[k].view(-1)[0] = float("nan")
    g = tmp_path / "netG.pth"
    torch.save(sd, g)
    with pytest.raises(NonFiniteError, match="NaN or infinite"):
        L.load_official(official_tiny / "config.json", g, official_tiny / "autoencoder.ckpt")


def test_degenerate_schedule_refused(tmp_path):
    p = _rewrite(tmp_path, lambda c: c["diffusion"].update(beta_min=1e4, beta_max=1e4))
    with pytest.raises(CheckpointError, match="schedule.*NaN or infinite"):
        L.load(p)


def test_nonfinite_sample_and_decode_are_errors():
    m = L.load(FIXTURE)
    with torch.no_grad():
        m.generator.conv_out.bias.fill_(float("nan"))  # weights that went bad after loading
    with pytest.raises(NonFiniteError, match="sample"):
        m.sample(2, seed=0)
    m = L.load(FIXTURE)
    z = torch.zeros(1, *m.latent_shape)
    z[0, 0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match="decode"):
        m.decode(z)
    with torch.no_grad():
        m.autoencoder.decoder.conv_out.weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match="decode"):
        m.decode(torch.ones(1, *m.latent_shape))


def test_nonfinite_output_cli_one_line_exit_2(tmp_path):

    def edit(t):
        t["autoencoder.decoder.conv_out.bias"] = torch.full_like(t["autoencoder.decoder.conv_out.bias"], float("nan"))
    p = _rewrite(tmp_path, edit_tensors=edit)
    proc = run_limited(f"""
        import sys
        from lddgan_core.tools.cli import main
        sys.exit(main(["sample", "--model", {str(p)!r}, "--batch", "2", "--grid", {str(tmp_path / 'g.png')!r}]))
    """)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.strip().startswith("error:"), proc.stderr
    assert "NaN or infinite" in proc.stderr and not (tmp_path / "g.png").exists()


def test_read_model_config_reads_the_header_only(tmp_path):
    from lddgan_core.formats.lddgan_file import read_model_config
    from lddgan_core.hub.shipped import EMOJI_MODEL

    cfg = read_model_config(EMOJI_MODEL)
    assert cfg["name"] == "lddgan-emoji64" and cfg["provenance"]["data_dataset"] == "emoji"
    bad = tmp_path / "notes.safetensors"
    bad.write_text("not a model")
    with pytest.raises(CheckpointError, match="notes.safetensors: not a readable LDDGAN model"):
        read_model_config(bad)
    listed = tmp_path / "list.safetensors"  # a safetensors file whose config is JSON but not an object
    save_file({"w": torch.zeros(1)}, str(listed), metadata={"config": "[1, 2]"})
    with pytest.raises(CheckpointError, match="not a JSON object"):
        read_model_config(listed)
