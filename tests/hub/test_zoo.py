"""The weights manifest (shipped content, schema validation) and zoo.ensure: download over a real local HTTP
server, conversion on arrival of the official_tiny fixture files, recorded hashes, offline / by-hand installs."""
import copy
import dataclasses
import hashlib
import io
import json
import os
import shutil
import zipfile

import pytest
import torch

import lddgan_core as L
from lddgan_core.hub import zoo
from lddgan_core.formats.official import parse_official_config
from hub_util import FileServer, fixture_manifest, refused_url

from conftest import REPO
README_NETG = ("https://www.dropbox.com/scl/fi/w6d95umfj6rz18c6427n3/netG_950.pth?rlkey=z821eqci0sl2k7gi63wl2zdwv"
               "&st=pnzrfyz3&dl=0")
README_AE = ("https://www.dropbox.com/scl/fi/p6p4dk4znbomvpwlwvlii/16x16x4_551.ckpt?rlkey=qfocqn8ko1g215iqgrose0vbz"
             "&st=6luvy40c&dl=0")


def sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture
def served(official_tiny, tmp_path):
    """(server, manifest path, dest) with the fixture's netG.pth and autoencoder.ckpt on a local server."""
    with FileServer() as srv:
        g = srv.add("/g/netG.pth", (official_tiny / "netG.pth").read_bytes())
        a = srv.add("/a/ae.ckpt", (official_tiny / "autoencoder.ckpt").read_bytes())
        path = tmp_path / "team_manifest.json"
        path.write_text(json.dumps(fixture_manifest(official_tiny, [g], [a])))
        yield srv, path, tmp_path / "models"


# ---------------------------------------------------------------------------------------------------------
# The shipped manifest
def test_shipped_manifest_is_valid_and_faithful():
    m = zoo.load_manifest()
    assert m.path == os.path.join(REPO, "weights_manifest.json")
    assert {e.id: e.kind for e in m.entries.values()} == {
        "cifar10": "official_generator", "cifar10-autoencoder": "official_autoencoder",
        "ldm-vq-f4": "official_autoencoder", "ldm-kl-f8": "official_autoencoder"}
    g, a = m["cifar10"], m["cifar10-autoencoder"]
    assert g.autoencoder == a.id and g.target == "lddgan_cifar10.safetensors"
    # direct-download form of the README's links: the same Dropbox link with dl=1
    assert g.urls == (README_NETG.replace("dl=0", "dl=1"),) and a.urls == (README_AE.replace("dl=0", "dl=1"),)
    assert m["ldm-vq-f4"].urls == ("https://ommer-lab.com/files/latent-diffusion/vq-f4.zip",)
    assert m["ldm-kl-f8"].urls == ("https://ommer-lab.com/files/latent-diffusion/kl-f8.zip",)
    assert all(e.archive == {"format": "zip", "member": "model.ckpt"} for e in (m["ldm-vq-f4"], m["ldm-kl-f8"]))
    assert all(e.sha256 is None and e.size is None for e in m.entries.values())  # none is published
    assert all(e.license for e in m.entries.values())
    # the README's CelebA-HQ / LSUN links are the CIFAR-10 files: recorded as unavailable, not as entries
    un = {r["id"]: r for r in m.unavailable}
    assert set(un) == {"celeba_256", "lsun_church"}
    for r in un.values():
        assert r["readme_links"] == [README_NETG, README_AE] and r["links_point_to"] == ["cifar10", "cifar10-autoencoder"]
        assert "issues/7" in r["reason"]
    assert (un["celeba_256"]["autoencoder"], un["lsun_church"]["autoencoder"]) == ("ldm-vq-f4", "ldm-kl-f8")
    with pytest.raises(zoo.ZooError, match="cannot be downloaded: not published"):
        m["lsun_church"]
    with pytest.raises(zoo.ZooError, match="unknown model id 'nope'"):
        m["nope"]


# (generator params, keys, autoencoder params, T, scale_factor, image px) of the official configurations,
# as LDDGAN_FACTS.md reports them from the official code; LSUN/CelebA z-mapping sizes as their checkpoints have them
OFFICIAL = {"cifar10": (33.3, 272, 14.6, 4, 105.0, 32, {}),
            "celeba_256": (48.4, 382, 55.3, 2, 6.0, 256, {"n_mlp": 3}),
            "lsun_church": (61.9, 480, 83.7, 4, 60.0, 256, {"nz": 50, "z_emb_dim": 256, "n_mlp": 3})}


@pytest.mark.parametrize("entry_id", sorted(OFFICIAL))
def test_manifest_hyperparameters_build_the_official_architectures(entry_id):
    from lddgan_core.nets.autoencoder import Autoencoder
    from lddgan_core.nets.generator import Generator

    gp, keys, ap, T, sf, px, inferred = OFFICIAL[entry_id]
    gk, ae, diff, scale, image_size, _ = parse_official_config(zoo.official_config(None, entry_id))
    assert not set(inferred) & set(gk)  # what the test command leaves out is read from the checkpoint
    with torch.device("meta"):  # sizes only, no memory
        g, a = Generator(L.GeneratorConfig(**{**gk, **inferred})), Autoencoder(ae)
    assert round(sum(p.numel() for p in g.parameters()) / 1e6, 1) == gp and len(g.state_dict()) == keys
    assert round(sum(p.numel() for p in a.parameters()) / 1e6, 1) == ap
    assert (diff.num_timesteps, scale, image_size) == (T, sf, px)


def test_cifar10_import_is_the_official_test_command():
    g = zoo.official_config(None, "cifar10")["generator"]
    want = {"num_channels": 4, "num_channels_dae": 128, "num_res_blocks": 2, "nz": 50, "z_emb_dim": 256, "n_mlp": 4,
            "ch_mult": [1, 2, 2], "image_size": 32, "current_resolution": 16, "attn_resolutions": [32]}
    assert {k: g[k] for k in want} == want


# ---------------------------------------------------------------------------------------------------------
# Schema
def _valid():
    return json.load(open(os.path.join(REPO, "weights_manifest.json")))


def _set(path, value):
    def f(d):
        *head, last = path
        for k in head:
            d = d[k]
        if value is KeyError:
            del d[last]
        else:
            d[last] = value
    return f


BAD = [
    (_set(["manifest_version"], 2), "manifest_version: expected 1, got 2"),
    (_set(["extra"], 1), "extra: unknown field"),
    (_set(["entries"], {}), "entries: expected a list"),
    (_set(["entries", 0, "id"], KeyError), "entries[0].id: required field missing"),
    (_set(["entries", 0, "id"], "Has Space"), "entries[0].id: expected lower-case"),
    (_set(["entries", 1, "id"], "cifar10"), "entries[1].id: duplicate id 'cifar10'"),
    (_set(["entries", 0, "kind"], "lora"), "entries[0].kind: expected one of"),
    (_set(["entries", 0, "sha256"], "abc"), "entries[0].sha256: expected 64 hex digits or null"),
    (_set(["entries", 0, "size"], -1), "entries[0].size: expected a byte count >= 0 or null"),
    (_set(["entries", 0, "urls"], ["ftp://x/y"]), "entries[0].urls[0]: expected an http(s) URL"),
    (_set(["entries", 0, "urls"], []), "entries[0].urls: expected a non-empty list"),
    (_set(["entries", 0, "file_name"], "../netG.pth"), "entries[0].file_name: expected a bare file name"),
    (_set(["entries", 0, "output"], "x.pth"), "entries[0].output: expected a name ending in .safetensors"),
    (_set(["entries", 0, "license"], ""), "entries[0].license: expected non-empty text"),
    (_set(["entries", 0, "autoencoder"], "ldm-missing"), "entries[0].autoencoder: expected the id of an official_autoencoder"),
    (_set(["entries", 0, "autoencoder"], "cifar10"), "entries[0].autoencoder: expected the id of an official_autoencoder"),
    (_set(["entries", 0, "import", "generator", "ch_mult"], KeyError), "lacks ['ch_mult']"),
    (_set(["entries", 0, "import", "generator", "resblock_type"], "ddpm"), "generator.resblock_type = 'ddpm' is not supported"),
    (_set(["entries", 0, "import", "scale"], 1), "entries[0].import: unknown field(s) ['scale']"),
    (_set(["entries", 0, "import", "image_size"], 64), "image_size 64 with autoencoder factor 2 gives latents of 32 px, but generator.image_size is 16"),
    (_set(["entries", 1, "import", "autoencoder", "ddconfig"], KeyError), "autoencoder.ddconfig (an object) is missing"),
    (_set(["entries", 2, "archive", "format"], "tar"), "entries[2].archive: expected"),
    (_set(["entries", 2, "download_name"], KeyError), "entries[2].download_name: expected a bare file name"),
    (_set(["entries", 3, "file_name"], "ldm_vq-f4.ckpt"), "entries[3]: writes 'official/ldm_vq-f4.ckpt', like entry 'ldm-vq-f4'"),
    (_set(["entries", 0, "colour"], "red"), "entries[0].colour: unknown field"),
    (_set(["unavailable", 0, "reason"], KeyError), "unavailable[0].reason: required text missing"),
    (_set(["unavailable", 0, "links_point_to"], ["nope"]), "unavailable[0].links_point_to: expected a list of entry ids"),
    (_set(["unavailable", 1, "id"], "cifar10"), "unavailable[1].id: duplicate id 'cifar10'"),
]


@pytest.mark.parametrize("mutate,message", BAD, ids=[m for _, m in BAD])
def test_schema_rejects(mutate, message, tmp_path):
    d = _valid()
    mutate(d)
    assert any(message in p for p in zoo.validate_manifest(d)), zoo.validate_manifest(d)
    (tmp_path / "m.json").write_text(json.dumps(d))
    with pytest.raises(zoo.ZooError, match="is invalid") as ei:
        zoo.load_manifest(tmp_path / "m.json")
    assert message in str(ei.value) and str(tmp_path / "m.json") in str(ei.value)


def test_schema_accepts_the_shipped_manifest_and_reports_bad_json(tmp_path):
    assert zoo.validate_manifest(_valid()) == []
    (tmp_path / "m.json").write_text("{not json")
    with pytest.raises(zoo.ZooError, match="not valid JSON"):
        zoo.load_manifest(tmp_path / "m.json")
    with pytest.raises(zoo.ZooError, match="file not found"):
        zoo.load_manifest(tmp_path / "none.json")


# ---------------------------------------------------------------------------------------------------------
# ensure: download, convert on arrival, verify
def test_ensure_downloads_converts_and_samples(served, official_tiny, tiny_model):
    srv, manifest, dest = served
    seen, logs = [], []
    path = zoo.ensure("tiny", dest, manifest=manifest, allow_download=True,
                      progress=lambda d, t: seen.append((d, t)), log=logs.append)
    assert path == str(dest / "lddgan_tiny.safetensors")
    m = L.load(path)
    assert m.config.name == "tiny" and m.config == dataclasses.replace(tiny_model.config, name="tiny")
    for (k, a), (k2, b) in zip(m.state_dict().items(), tiny_model.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
    assert torch.equal(m.sample(seeds=[3, 9]), tiny_model.sample(seeds=[3, 9]))
    g_sha, a_sha = sha(official_tiny / "netG.pth"), sha(official_tiny / "autoencoder.ckpt")
    prov = m.config.provenance
    assert (prov["generator_sha256"], prov["autoencoder_sha256"], prov["zoo_entry"]) == (g_sha, a_sha, "tiny")
    state = zoo.read_state(dest)  # first complete downloads record their sha256 (the manifest has null)
    assert state["official/netG_7.pth"]["sha256"] == g_sha and state["official/netG_7.pth"]["how"] == "download"
    assert state["official/ae_3.ckpt"]["sha256"] == a_sha
    assert state["lddgan_tiny.safetensors"]["sha256"] == sha(path)
    sizes = {os.path.getsize(official_tiny / "netG.pth"), os.path.getsize(official_tiny / "autoencoder.ckpt")}
    assert {d for d, t in seen if d == t} == sizes  # progress ran to the end of both files
    assert sum("downloading" in x for x in logs) == 2 and any("converting" in x for x in logs)
    assert sorted(os.listdir(dest)) == [".lddgan_hashes.json", ".lddgan_hashes.lock", "lddgan_tiny.safetensors",
                                        "official"]
    assert sorted(os.listdir(dest / "official")) == ["ae_3.ckpt", "netG_7.pth"]
    # later calls: verified, no network, same file
    n = len(srv.requests)
    assert zoo.ensure("tiny", dest, manifest=manifest) == path and len(srv.requests) == n
    assert zoo.verify(path) is True and zoo.verify(dest / "official" / "netG_7.pth", dest) is True
    assert zoo.verify(official_tiny / "netG.pth") is False  # nothing recorded there


def test_download_switched_off_names_urls_and_paths(served):
    srv, manifest, dest = served
    with pytest.raises(zoo.ZooError, match="downloading is switched off") as ei:
        zoo.ensure("tiny", dest, manifest=manifest)
    msg = str(ei.value)
    for url, p in ((srv.url("/g/netG.pth"), dest / "official" / "netG_7.pth"),
                   (srv.url("/a/ae.ckpt"), dest / "official" / "ae_3.ckpt")):
        assert f"{url} -> {p}" in msg
    assert srv.requests == [] and not dest.exists()


def test_offline_error_then_installed_by_hand(official_tiny, tmp_path, tiny_model):
    path = tmp_path / "m.json"
    gen_url, ae_url = refused_url("/netG.pth"), refused_url("/ae.ckpt")
    path.write_text(json.dumps(fixture_manifest(official_tiny, [gen_url], [ae_url])))
    dest = tmp_path / "models"
    with pytest.raises(zoo.ZooError, match="offline, blocked, or the server is down") as ei:
        zoo.ensure("tiny", dest, manifest=path, allow_download=True, retries=0)
    assert gen_url in str(ei.value) and f"save it as {dest / 'official' / 'netG_7.pth'}" in str(ei.value)
    assert f"All files still needed for 'tiny': {gen_url} -> {dest / 'official' / 'netG_7.pth'}; " \
           f"{ae_url} -> {dest / 'official' / 'ae_3.ckpt'}" in str(ei.value)
    os.makedirs(dest / "official", exist_ok=True)
    shutil.copy(official_tiny / "netG.pth", dest / "official" / "netG_7.pth")
    shutil.copy(official_tiny / "autoencoder.ckpt", dest / "official" / "ae_3.ckpt")
    out = zoo.ensure("tiny", dest, manifest=path, allow_download=False)
    assert torch.equal(L.load(out).sample(seeds=[1]), tiny_model.sample(seeds=[1]))
    assert zoo.read_state(dest)["official/netG_7.pth"]["how"] == "found"


def test_interrupted_install_resumes(served, official_tiny):
    srv, manifest, dest = served
    srv.drop_after["/g/netG.pth"] = 200_000
    with pytest.raises(zoo.ZooError, match="interrupted after 200000 of"):
        zoo.ensure("tiny", dest, manifest=manifest, allow_download=True, retries=0)
    assert not (dest / "lddgan_tiny.safetensors").exists()
    path = zoo.ensure("tiny", dest, manifest=manifest, allow_download=True, retries=0)
    assert [h.get("Range") for p, h in srv.requests if p == "/g/netG.pth"] == [None, "bytes=200000-"]
    assert zoo.read_state(dest)["official/netG_7.pth"]["sha256"] == sha(official_tiny / "netG.pth")
    L.load(path)


def test_changed_converted_model_is_detected(served):
    srv, manifest, dest = served
    path = zoo.ensure("tiny", dest, manifest=manifest, allow_download=True)
    with open(path, "r+b") as f:  # flip the last byte: still a loadable file, but not the one installed
        f.seek(-1, 2)
        b = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([b[0] ^ 1]))
    L.load(path)
    with pytest.raises(zoo.ZooError, match="does not match the sha256 .* recorded in"):
        zoo.ensure("tiny", dest, manifest=manifest)
    with pytest.raises(zoo.ZooError, match="differs from the one recorded"):
        zoo.verify(path)


def test_recorded_hash_is_enforced_on_later_installs(served, official_tiny):
    srv, manifest, dest = served
    zoo.ensure("tiny", dest, manifest=manifest, allow_download=True)
    os.unlink(dest / "lddgan_tiny.safetensors")
    os.unlink(dest / "official" / "netG_7.pth")
    other = bytearray((official_tiny / "netG.pth").read_bytes())
    other[-100] ^= 0xFF  # the upstream file changed
    srv.add("/g/netG.pth", bytes(other))
    with pytest.raises(zoo.ZooError, match="sha256 mismatch: expected " + sha(official_tiny / "netG.pth")):
        zoo.ensure("tiny", dest, manifest=manifest, allow_download=True, retries=0)
    assert not (dest / "official" / "netG_7.pth").exists() and not (dest / "lddgan_tiny.safetensors").exists()
    # a hand-placed file is held to the same record
    (dest / "official" / "netG_7.pth").write_bytes(bytes(other))
    with pytest.raises(zoo.ZooError, match="does not match the sha256"):
        zoo.ensure("tiny", dest, manifest=manifest)


def test_published_hash_mismatch_installs_nothing(official_tiny, tmp_path):
    with FileServer() as srv:
        g = srv.add("/g/netG.pth", (official_tiny / "netG.pth").read_bytes())
        a = srv.add("/a/ae.ckpt", (official_tiny / "autoencoder.ckpt").read_bytes())
        d = fixture_manifest(official_tiny, [g], [a], sha256="ab" * 32)
        with pytest.raises(zoo.ZooError, match=f"sha256 mismatch: expected {'ab' * 32}"):
            zoo.ensure("tiny", tmp_path, manifest=d, allow_download=True)
        assert os.listdir(tmp_path) == ["official"] and os.listdir(tmp_path / "official") == []
        # the right published hash (and size) passes
        d = fixture_manifest(official_tiny, [g], [a], sha256=sha(official_tiny / "netG.pth"),
                             size=os.path.getsize(official_tiny / "netG.pth"))
        assert os.path.isfile(zoo.ensure("tiny", tmp_path, manifest=d, allow_download=True))


def test_converted_model_must_come_from_the_named_files(served, official_tiny):
    srv, manifest, dest = served
    path = zoo.ensure("tiny", dest, manifest=manifest, allow_download=True)
    d = json.loads(manifest.read_text())
    d["entries"][0]["sha256"] = "cd" * 32  # the manifest now names another generator file
    with pytest.raises(zoo.ZooError, match="was converted from a generator file with sha256"):
        zoo.ensure("tiny", dest, manifest=d)
    assert os.path.isfile(path)  # nothing the user has is deleted


def test_mirrors_are_tried_in_order(official_tiny, tmp_path):
    with FileServer() as srv:
        g = srv.add("/g/netG.pth", (official_tiny / "netG.pth").read_bytes())
        a = srv.add("/a/ae.ckpt", (official_tiny / "autoencoder.ckpt").read_bytes())
        d = fixture_manifest(official_tiny, [srv.url("/gone/netG.pth"), g], [a])
        assert os.path.isfile(zoo.ensure("tiny", tmp_path, manifest=d, allow_download=True))
        assert [p for p, _ in srv.requests] == ["/gone/netG.pth", "/g/netG.pth", "/a/ae.ckpt"]
        assert zoo.read_state(tmp_path)["official/netG_7.pth"]["url"] == g


def test_zip_archive_is_extracted_on_arrival(official_tiny, tmp_path, tiny_model):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("README.txt", "first stage")
        z.write(official_tiny / "autoencoder.ckpt", "model.ckpt")
    with FileServer() as srv:
        g = srv.add("/g/netG.pth", (official_tiny / "netG.pth").read_bytes())
        a = srv.add("/files/vq.zip", buf.getvalue(), ctype="application/zip")
        d = fixture_manifest(official_tiny, [g], [a])
        d["entries"][1].update(archive={"format": "zip", "member": "model.ckpt"}, download_name="ae.zip")
        with pytest.raises(zoo.ZooError) as ei:
            zoo.ensure("tiny", tmp_path, manifest=d)
        assert (f"{a} -> {tmp_path / 'official' / 'ae.zip'} (or the model.ckpt inside it as "
                f"{tmp_path / 'official' / 'ae_3.ckpt'})") in str(ei.value)
        path = zoo.ensure("tiny", tmp_path, manifest=d, allow_download=True)
    assert sorted(os.listdir(tmp_path / "official")) == ["ae_3.ckpt", "netG_7.pth"]  # the zip is gone
    state = zoo.read_state(tmp_path)
    assert state["official/ae.zip"]["sha256"] == hashlib.sha256(buf.getvalue()).hexdigest()
    assert state["official/ae_3.ckpt"]["sha256"] == sha(official_tiny / "autoencoder.ckpt")
    assert state["official/ae_3.ckpt"]["archive_sha256"] == state["official/ae.zip"]["sha256"]
    assert torch.equal(L.load(path).sample(seeds=[2]), tiny_model.sample(seeds=[2]))


def test_model_entries_and_autoencoder_entries(official_tiny, tmp_path):
    from lddgan_core.tools.cli import FIXTURE_MODEL

    with FileServer() as srv:
        good = srv.add("/m/tiny.safetensors", open(FIXTURE_MODEL, "rb").read())
        bad = srv.add("/m/cases.safetensors", (official_tiny / "cases.safetensors").read_bytes())
        d = fixture_manifest(official_tiny, [srv.url("/g")], [srv.add("/a/ae.ckpt", b"not used")])
        d["entries"] += [
            {"id": "team-model", "name": "a fine-tune", "kind": "model", "file_name": "team.safetensors",
             "urls": [good], "license": "CC-BY-4.0"},
            {"id": "not-a-model", "name": "x", "kind": "model", "file_name": "x.safetensors", "urls": [bad],
             "license": "not stated"}]
        p = zoo.ensure("team-model", tmp_path, manifest=d, allow_download=True)
        assert p == str(tmp_path / "team.safetensors") and sha(p) == sha(FIXTURE_MODEL)
        L.load(p)
        with pytest.raises(zoo.ZooError, match="not an LDDGAN model and was removed"):
            zoo.ensure("not-a-model", tmp_path, manifest=d, allow_download=True)
        assert not (tmp_path / "x.safetensors").exists()
        ae = zoo.ensure("tiny-ae", tmp_path, manifest=d, allow_download=True)
        assert ae == str(tmp_path / "official" / "ae_3.ckpt") and open(ae, "rb").read() == b"not used"


def test_missing_entries_and_download_choices(served):
    srv, manifest, dest = served
    other = dest.parent / "other_models"
    assert [e.id for e in zoo.missing_entries(manifest, [other, dest])] == ["tiny"]  # autoencoders are not loadable
    e = zoo.load_manifest(manifest)["tiny"]
    choice = zoo.download_choice(e)
    assert choice == "[download] lddgan_tiny.safetensors" and zoo.entry_for_choice(manifest, choice) == e
    assert zoo.entry_for_choice(manifest, "lddgan_tiny.safetensors") is None
    zoo.ensure("tiny", dest, manifest=manifest, allow_download=True)
    assert zoo.missing_entries(manifest, [other, dest]) == []
    assert [x.id for x in zoo.entries(manifest, kinds=["official_autoencoder"])] == ["tiny-ae"]


def test_shipped_manifest_lists_cifar10_as_a_download(tmp_path):
    missing = zoo.missing_entries(None, [tmp_path])
    assert [e.id for e in missing] == ["cifar10"]
    assert zoo.download_choice(missing[0]) == "[download] lddgan_cifar10.safetensors"
    (tmp_path / "lddgan_cifar10.safetensors").write_bytes(b"x")
    assert zoo.missing_entries(None, [tmp_path]) == []


def test_state_file_problems_are_clear(served):
    srv, manifest, dest = served
    dest.mkdir()
    (dest / ".lddgan_hashes.json").write_text("[1, 2]")
    with pytest.raises(zoo.ZooError, match="lddgan_hashes.json: expected"):
        zoo.ensure("tiny", dest, manifest=manifest, allow_download=True)


def test_manifest_dict_is_not_modified(official_tiny):
    d = fixture_manifest(official_tiny, ["http://127.0.0.1:9/g"], ["http://127.0.0.1:9/a"])
    before = copy.deepcopy(d)
    cfg = zoo.official_config(d, "tiny")
    cfg["generator"]["nz"] = 999
    assert d == before and zoo.official_config(d, "tiny")["generator"]["nz"] == 8
