"""Model zoo: the weights manifest, its validation, and verified installs with conversion on arrival.

    m = zoo.load_manifest()                      # weights_manifest.json shipped with the pack (or a path / dict)
    zoo.entries(m)                               # all entries; zoo.missing_entries(m, folders): loadable, not present
    path = zoo.ensure("cifar10", "models/lddgan", allow_download=True, progress=lambda done, total: ...)
    model = lddgan_core.load(path)               # our one-file .safetensors, converted on arrival

Layout of a destination folder (``dest``):

    dest/lddgan_cifar10.safetensors   converted model (official_generator entries) or downloaded model (model entries)
    dest/official/netG_950.pth        official files as downloaded (or placed there by hand), kept
    dest/.lddgan_hashes.json          sha256 + size of every file installed here, recorded on arrival

Hashes: a manifest may publish ``sha256`` (then every download and every file found in place is checked
against it) or leave it null. For null hashes the first complete download records the file's sha256 in
``dest/.lddgan_hashes.json`` (written atomically; the shipped manifest is never rewritten), and every later
install of that file (a re-download, or a file found in place) must match it. The converted model's own
sha256 is recorded too and checked on every ``ensure`` / ``verify``; its metadata (provenance) carries the
sha256 of the two official files it came from, which must match the published or recorded ones.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import time
import warnings
import zipfile
from typing import Callable, Iterable

from ..atomic import atomic_write, atomic_write_text
from ..config import GeneratorConfig, ModelConfig
from ..errors import CheckpointError, ConfigError, LDDGANError
from ..formats.lddgan_file import read_model_config, validate_model_file
from ..formats.official import load_official, parse_autoencoder_args, parse_official_config
from .download import download_file, DownloadError, file_lock, Progress, sha256_file

MANIFEST_VERSION = 1
KINDS = ("model", "official_generator", "official_autoencoder")
STATE_FILE = ".lddgan_hashes.json"
SOURCES_DIR = "official"
DOWNLOAD_PREFIX = "[download] "
MANIFEST_NAME = "weights_manifest.json"
_PKG = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the lddgan_core package folder


class ZooError(LDDGANError):
    """A manifest is invalid, an entry is unknown or not installed, or an installed file does not verify."""


# ---------------------------------------------------------------------------------------------------------
# Manifest
@dataclasses.dataclass(frozen=True)
class Entry:
    """One downloadable item of the manifest (see README 'Model zoo' for the field meanings)."""

    id: str
    name: str
    kind: str  # "model" (our .safetensors) | "official_generator" (netG_*.pth) | "official_autoencoder" (LDM .ckpt)
    file_name: str  # the file as stored after arrival (official kinds: under dest/official/)
    urls: tuple  # direct-download URLs, tried in order
    size: int | None  # bytes of the download, null when not published
    sha256: str | None  # of the download, null when not published (then recorded on first download)
    license: str  # as the source states it, or "not stated"
    source: str = ""  # the page that publishes the file
    notes: str = ""
    autoencoder: str | None = None  # official_generator: id of the official_autoencoder entry it pairs with
    import_config: dict | None = None  # the manifest's "import": hyper-parameters for load_official
    output: str | None = None  # official_generator: name of the converted model in dest
    archive: dict | None = None  # {"format": "zip", "member": "model.ckpt"}: the download is an archive
    download_name: str | None = None  # with archive: the archive's file name under dest/official/
    raw: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)

    @property
    def loadable(self) -> bool:
        """True when ``ensure`` yields an LDDGAN model file (what a model loader lists)."""
        return self.kind in ("model", "official_generator")

    @property
    def target(self) -> str:
        """Path, relative to dest, of what ``ensure`` returns."""
        if self.kind == "model":
            return self.file_name
        if self.kind == "official_generator":
            return self.output or f"{self.id}.safetensors"
        return f"{SOURCES_DIR}/{self.file_name}"

    @property
    def source_path(self) -> str:
        """Path, relative to dest, of the file as it arrived (extracted when an archive)."""
        return self.file_name if self.kind == "model" else f"{SOURCES_DIR}/{self.file_name}"

    @property
    def download_path(self) -> str:
        """Path, relative to dest, that the download is written to (the archive itself for archives)."""
        return f"{SOURCES_DIR}/{self.download_name}" if self.archive else self.source_path


@dataclasses.dataclass(frozen=True)
class Manifest:
    entries: dict  # id -> Entry, in file order
    unavailable: tuple = ()  # records of files the sources do not (correctly) publish; never downloadable
    description: str = ""
    path: str | None = None

    def __getitem__(self, entry_id: str) -> Entry:
        if entry_id in self.entries:
            return self.entries[entry_id]
        for rec in self.unavailable:
            if rec.get("id") == entry_id:
                raise ZooError(f"{entry_id!r} ({rec.get('name')}) cannot be downloaded: {rec.get('reason')}")
        raise ZooError(f"unknown model id {entry_id!r} in {self.where}; known ids: {sorted(self.entries)}")

    @property
    def where(self) -> str:
        return f"manifest {self.path!r}" if self.path else "manifest"


def default_manifest_path() -> str:
    """$LDDGAN_MANIFEST, else the pack's weights_manifest.json (next to lddgan_core/, or inside it in an
    installed wheel)."""
    env = os.environ.get("LDDGAN_MANIFEST")
    if env:
        return env
    for cand in (os.path.join(os.path.dirname(_PKG), MANIFEST_NAME), os.path.join(_PKG, MANIFEST_NAME)):
        if os.path.isfile(cand):
            return cand
    return os.path.join(os.path.dirname(_PKG), MANIFEST_NAME)


def default_dest() -> str:
    """Where the CLI installs models: $LDDGAN_MODELS_DIR, else ~/.cache/lddgan/models."""
    return os.environ.get("LDDGAN_MODELS_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "lddgan", "models")


def load_manifest(source=None) -> Manifest:
    """A validated Manifest from a path, an already-parsed dict, or None (the default manifest)."""
    if isinstance(source, Manifest):
        return source
    path = None
    if isinstance(source, dict):
        d = source
    else:
        path = os.path.abspath(os.fspath(source if source is not None else default_manifest_path()))
        try:
            with open(path, "r", encoding="utf-8") as f:
                d = json.load(f)
        except FileNotFoundError:
            raise ZooError(f"manifest {path!r}: file not found (pass another manifest, or set $LDDGAN_MANIFEST)") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ZooError(f"manifest {path!r}: not valid JSON ({e})") from None
    where = f"manifest {path!r}" if path else "manifest"
    problems = validate_manifest(d)
    if problems:
        raise ZooError(f"{where} is invalid:\n  " + "\n  ".join(problems))
    entries = {}
    for r in d["entries"]:
        entries[r["id"]] = Entry(
            id=r["id"], name=r["name"], kind=r["kind"], file_name=r["file_name"], urls=tuple(r["urls"]),
            size=r.get("size"), sha256=(r.get("sha256") or None) and r["sha256"].lower(), license=r["license"],
            source=r.get("source", ""), notes=r.get("notes", ""), autoencoder=r.get("autoencoder"),
            import_config=r.get("import"), output=r.get("output"), archive=r.get("archive"),
            download_name=r.get("download_name"), raw=r)
    return Manifest(entries=entries, unavailable=tuple(d.get("unavailable", ())),
                    description=d.get("description", ""), path=path)


# -- validation (the manifest's schema, as code: every rule names the field and what it expects) ----------
_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_SHA = re.compile(r"^[0-9a-fA-F]{64}$")
_FILE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+-]{0,199}$")  # a bare file name: no folders, no leading dot
_URL = re.compile(r"^https?://[^\s/?#]+[^\s]*$")
_TOP = {"manifest_version": "1", "description": "text", "entries": "list of entries",
        "unavailable": "list of records", "$schema": "text"}
_ENTRY_REQUIRED = ("id", "name", "kind", "file_name", "urls", "license")
_ENTRY_OPTIONAL = ("size", "sha256", "source", "notes", "autoencoder", "import", "output", "archive", "download_name")
_UNAVAILABLE_KEYS = ("id", "name", "reason", "readme_links", "links_point_to", "autoencoder", "import", "notes",
                     "official_test_command")


def _is_text(v) -> bool:
    return isinstance(v, str) and bool(v.strip())


def validate_manifest(d) -> list[str]:
    """Every problem of a parsed manifest as 'field.path: what is wrong (what was expected)'; [] when valid."""
    if not isinstance(d, dict):
        return [f"(top level): expected a JSON object, got {type(d).__name__}"]
    p: list[str] = []
    for k in sorted(set(d) - set(_TOP)):
        p.append(f"{k}: unknown field (allowed: {sorted(_TOP)})")
    if d.get("manifest_version") != MANIFEST_VERSION or isinstance(d.get("manifest_version"), bool):
        p.append(f"manifest_version: expected {MANIFEST_VERSION}, got {d.get('manifest_version')!r}")
    if "description" in d and not isinstance(d["description"], str):
        p.append("description: expected text")
    entries = d.get("entries")
    if not isinstance(entries, list):
        return p + ["entries: expected a list of entries"]
    by_id = {r.get("id"): r for r in entries if isinstance(r, dict) and isinstance(r.get("id"), str)}
    seen_ids, seen_targets = set(), {}
    for i, r in enumerate(entries):
        p += _validate_entry(r, f"entries[{i}]", by_id, seen_ids, seen_targets)
    un = d.get("unavailable", [])
    if not isinstance(un, list):
        p.append("unavailable: expected a list of records")
        un = []
    for i, r in enumerate(un):
        p += _validate_unavailable(r, f"unavailable[{i}]", by_id, seen_ids)
    return p


def _check_file_name(v, at: str, suffix: str | None = None) -> list[str]:
    if not isinstance(v, str) or not _FILE.match(v) or v in (".", ".."):
        return [f"{at}: expected a bare file name (letters, digits, ._+-; no folders, not starting with a dot), got {v!r}"]
    if suffix and not v.lower().endswith(suffix):
        return [f"{at}: expected a name ending in {suffix}, got {v!r}"]
    return []


def _check_urls(v, at: str, allow_empty: bool = False) -> list[str]:
    if not isinstance(v, list) or (not v and not allow_empty):
        return [f"{at}: expected a{'' if allow_empty else ' non-empty'} list of http(s) URLs"]
    return [f"{at}[{j}]: expected an http(s) URL, got {u!r}" for j, u in enumerate(v)
            if not isinstance(u, str) or not _URL.match(u)]


def _check_import(imp, ae_imp, at: str, ae_at: str) -> list[str]:
    """Run the official-config parser on the merged hyper-parameters, so a manifest that validates imports."""

    if not isinstance(imp, dict) or not isinstance(imp.get("generator"), dict):
        return [f"{at}: expected an object with 'generator' (official argparse names), 'diffusion', "
                f"'scale_factor', 'image_size'"]
    bad = sorted(set(imp) - {"name", "generator", "diffusion", "scale_factor", "image_size", "official_commit"})
    if bad:
        return [f"{at}: unknown field(s) {bad}"]
    if not isinstance(ae_imp, dict):
        return []  # reported at the autoencoder entry
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            gk, ae, diff, sf, image_size, _ = parse_official_config({**imp, "autoencoder": ae_imp.get("autoencoder")})
            # the consistency checks of a full config; z-mapping sizes may be left to the checkpoint
            gen = GeneratorConfig(**{"nz": 1, "z_emb_dim": 1, "n_mlp": 1, **gk})
            ModelConfig(generator=gen, autoencoder=ae, diffusion=diff, scale_factor=sf, image_size=image_size)
        except (ConfigError, TypeError) as e:
            return [f"{at} (with {ae_at}): {e}"]
    return [f"{at}: {w.message}" for w in caught]


def _ae_import(by_id: dict, ae_id):
    """The 'import' of the official_autoencoder entry ``ae_id`` (None when there is no such entry)."""
    r = by_id.get(ae_id) if isinstance(ae_id, str) else None
    return r.get("import") if isinstance(r, dict) and r.get("kind") == "official_autoencoder" else None


def _validate_entry(r, at: str, by_id: dict, seen_ids: set, seen_targets: dict) -> list[str]:
    if not isinstance(r, dict):
        return [f"{at}: expected an object"]
    p = [f"{at}.{k}: unknown field (allowed: {sorted(_ENTRY_REQUIRED + _ENTRY_OPTIONAL)})"
         for k in sorted(set(r) - set(_ENTRY_REQUIRED) - set(_ENTRY_OPTIONAL))]
    p += [f"{at}.{k}: required field missing" for k in _ENTRY_REQUIRED if k not in r]
    eid = r.get("id")
    if "id" in r:
        if not isinstance(eid, str) or not _ID.match(eid):
            p.append(f"{at}.id: expected lower-case letters, digits and ._- (max 64), got {eid!r}")
        elif eid in seen_ids:
            p.append(f"{at}.id: duplicate id {eid!r}")
        seen_ids.add(eid)
    for k in ("name", "license"):
        if k in r and not _is_text(r[k]):
            p.append(f"{at}.{k}: expected non-empty text (license: as the source states it, or 'not stated')")
    for k in ("source", "notes"):
        if k in r and not isinstance(r[k], str):
            p.append(f"{at}.{k}: expected text")
    kind = r.get("kind")
    if "kind" in r and kind not in KINDS:
        p.append(f"{at}.kind: expected one of {list(KINDS)}, got {kind!r}")
    if "file_name" in r:
        p += _check_file_name(r["file_name"], f"{at}.file_name", ".safetensors" if kind == "model" else None)
    if "urls" in r:
        p += _check_urls(r["urls"], f"{at}.urls")
    size = r.get("size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        p.append(f"{at}.size: expected a byte count >= 0 or null, got {size!r}")
    sha = r.get("sha256")
    if sha is not None and (not isinstance(sha, str) or not _SHA.match(sha)):
        p.append(f"{at}.sha256: expected 64 hex digits or null, got {sha!r}")
    archive = r.get("archive")
    if archive is not None:
        if kind == "model":
            p.append(f"{at}.archive: not allowed for kind 'model'")
        if not isinstance(archive, dict) or archive.get("format") != "zip" or not _is_text(archive.get("member")) \
                or set(archive) - {"format", "member", "size"} or not (
                    archive.get("size") is None or (isinstance(archive["size"], int) and archive["size"] >= 0)):
            p.append(f"{at}.archive: expected {{\"format\": \"zip\", \"member\": \"<path in the zip>\"}}, got {archive!r}")
        p += _check_file_name(r.get("download_name"), f"{at}.download_name", ".zip")
    elif "download_name" in r:
        p.append(f"{at}.download_name: only used with 'archive'")
    if kind == "official_generator":
        ae = r.get("autoencoder")
        if not isinstance(ae, str) or by_id.get(ae, {}).get("kind") != "official_autoencoder":
            p.append(f"{at}.autoencoder: expected the id of an official_autoencoder entry, got {ae!r}")
        p += _check_import(r.get("import"), _ae_import(by_id, ae), f"{at}.import", f"entry {ae!r}")
        if "output" in r:
            p += _check_file_name(r["output"], f"{at}.output", ".safetensors")
    else:
        p += [f"{at}.{k}: only used by official_generator entries" for k in ("autoencoder", "output") if k in r]
    if kind == "official_autoencoder":
        imp = r.get("import")
        if not isinstance(imp, dict) or set(imp) != {"autoencoder"} or not isinstance(imp["autoencoder"], dict):
            p.append(f"{at}.import: expected {{\"autoencoder\": {{kind or target, embed_dim, n_embed, ddconfig}}}}")
        else:
            try:
                parse_autoencoder_args(imp["autoencoder"], f"{at}.import.autoencoder")
            except ConfigError as e:
                p.append(str(e))
    elif kind == "model" and "import" in r:
        p.append(f"{at}.import: not used by 'model' entries (the file carries its config)")
    if isinstance(eid, str) and kind in KINDS and not p:
        e = Entry(id=eid, name="", kind=kind, file_name=r["file_name"], urls=(), size=None, sha256=None, license="",
                  output=r.get("output"), archive=archive, download_name=r.get("download_name"))
        for rel in {e.target, e.source_path, e.download_path}:
            if rel in seen_targets and seen_targets[rel] != eid:
                p.append(f"{at}: writes {rel!r}, like entry {seen_targets[rel]!r}")
            seen_targets[rel] = eid
    return p


def _validate_unavailable(r, at: str, by_id: dict, seen_ids: set) -> list[str]:
    if not isinstance(r, dict):
        return [f"{at}: expected an object"]
    p = [f"{at}.{k}: unknown field (allowed: {list(_UNAVAILABLE_KEYS)})" for k in sorted(set(r) - set(_UNAVAILABLE_KEYS))]
    for k in ("id", "name", "reason"):
        if not _is_text(r.get(k)):
            p.append(f"{at}.{k}: required text missing")
    if isinstance(r.get("id"), str):
        if not _ID.match(r["id"]):
            p.append(f"{at}.id: expected lower-case letters, digits and ._-, got {r['id']!r}")
        elif r["id"] in seen_ids:
            p.append(f"{at}.id: duplicate id {r['id']!r}")
        seen_ids.add(r["id"])
    if "readme_links" in r:
        p += _check_urls(r["readme_links"], f"{at}.readme_links", allow_empty=True)
    pts = r.get("links_point_to", [])
    if not isinstance(pts, list) or any(not isinstance(x, str) or x not in by_id for x in pts):
        p.append(f"{at}.links_point_to: expected a list of entry ids, got {pts!r}")
    ae = r.get("autoencoder")
    if "autoencoder" in r and _ae_import(by_id, ae) is None:
        p.append(f"{at}.autoencoder: expected the id of an official_autoencoder entry, got {ae!r}")
    if "import" in r:
        p += _check_import(r["import"], _ae_import(by_id, ae), f"{at}.import", f"entry {ae!r}")
    if isinstance(r.get("official_test_command"), (list, dict)) or \
            ("notes" in r and not isinstance(r["notes"], str)):
        p.append(f"{at}: official_test_command and notes are text")
    return p


# ---------------------------------------------------------------------------------------------------------
# Queries
def entries(manifest=None, kinds: Iterable[str] | None = None) -> list[Entry]:
    """The manifest's entries in file order, optionally only those of the given kinds."""
    m = load_manifest(manifest)
    kinds = None if kinds is None else set(kinds)
    return [e for e in m.entries.values() if kinds is None or e.kind in kinds]


def is_installed(entry: Entry, folders) -> bool:
    folders = [folders] if isinstance(folders, (str, os.PathLike)) else list(folders)
    return any(os.path.isfile(os.path.join(os.fspath(f), entry.target)) for f in folders)


def missing_entries(manifest=None, folders=()) -> list[Entry]:
    """Loadable entries (model / official_generator) whose model file is in none of ``folders``: what a
    loader offers as downloads."""
    return [e for e in entries(manifest) if e.loadable and not is_installed(e, folders)]


def download_choice(entry: Entry) -> str:
    """The label a loader lists for an entry that is not installed yet, e.g. '[download] lddgan_cifar10.safetensors'."""
    return DOWNLOAD_PREFIX + entry.target


def entry_for_choice(manifest, choice: str) -> Entry | None:
    """The entry behind a ``download_choice`` label, or None when ``choice`` is not one."""
    if not isinstance(choice, str) or not choice.startswith(DOWNLOAD_PREFIX):
        return None
    name = choice[len(DOWNLOAD_PREFIX):]
    return next((e for e in entries(manifest) if e.loadable and e.target == name), None)


def official_config(manifest, entry_id: str) -> dict:
    """The official-format config (schema of shared/fixtures/official_tiny/config.json) for an
    official_generator entry, or for an 'unavailable' record that carries hyper-parameters: what
    ``load_official`` / ``lddgan convert --config`` take."""
    m = load_manifest(manifest)
    rec = m.entries[entry_id].raw if entry_id in m.entries else next(
        (r for r in m.unavailable if r.get("id") == entry_id), None)
    if rec is None or "import" not in rec or rec.get("autoencoder") not in m.entries or \
            rec.get("kind", "official_generator") != "official_generator":
        raise ZooError(f"{entry_id!r}: no official generator hyper-parameters (with an autoencoder entry) in {m.where}")
    ae = m.entries[rec["autoencoder"]]
    cfg = {"name": rec["import"].get("name", entry_id), **json.loads(json.dumps(rec["import"]))}
    cfg["autoencoder"] = json.loads(json.dumps(ae.import_config["autoencoder"]))
    return cfg


# ---------------------------------------------------------------------------------------------------------
# Recorded hashes (dest/.lddgan_hashes.json)
def _state_path(dest: str) -> str:
    return os.path.join(dest, STATE_FILE)


def read_state(dest) -> dict:
    """{relative path: record} of the files installed in ``dest`` ({} when none)."""
    path = _state_path(os.fspath(dest))
    try:
        with open(path, "r", encoding="utf-8") as f:
            d = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise ZooError(f"{path}: unreadable ({e}); fix or delete it (it only holds recorded hashes)") from None
    files = d.get("files") if isinstance(d, dict) else None
    if not isinstance(files, dict):
        raise ZooError(f"{path}: expected {{\"state_version\": 1, \"files\": {{...}}}}; fix or delete it")
    return files


def _record(dest: str, rel: str, **rec):

    rec = {k: v for k, v in rec.items() if v is not None}
    rec["recorded"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with file_lock(os.path.join(dest, ".lddgan_hashes.lock"), wait=30.0, remove=False):
        files = read_state(dest)
        files[rel] = rec

        atomic_write_text(_state_path(dest), json.dumps({"state_version": 1, "files": files}, indent=1,
                                                        sort_keys=True))


def _expected_sha(entry: Entry, dest: str, rel: str) -> tuple[str | None, str]:
    """(sha256 a file must have, where that requirement comes from)."""
    if entry.sha256 and rel == entry.download_path:
        return entry.sha256, "published in the manifest"
    rec = read_state(dest).get(rel)
    if rec and rec.get("sha256"):
        return rec["sha256"], f"recorded in {_state_path(dest)} on {rec.get('recorded', '?')}"
    return None, ""


def _check_or_record(entry: Entry, dest: str, rel: str, how: str, digest: str | None = None, **extra) -> str:
    """Check the file ``dest/rel`` against its published / recorded sha256, or record it. Returns the sha256."""
    path = os.path.join(dest, rel)
    digest = digest or sha256_file(path)
    want, origin = _expected_sha(entry, dest, rel)
    if want is not None and digest != want:
        raise ZooError(f"{path}: sha256 {digest} does not match the sha256 {want} {origin}. The file is corrupt, "
                       f"incomplete or not the one the manifest names: delete it and install again (if the file was "
                       f"legitimately replaced upstream, also remove its record from {_state_path(dest)}).")
    rec = read_state(dest).get(rel)
    if rec is None or rec.get("sha256") != digest:
        _record(dest, rel, sha256=digest, size=os.path.getsize(path), entry=entry.id, how=how, **extra)
    return digest


def verify(path, dest=None) -> bool:
    """Check an installed file against the sha256 recorded for it in its folder's .lddgan_hashes.json.
    True when it matches, False when nothing is recorded for it; ZooError when it differs."""
    path = os.path.abspath(os.fspath(path))
    dest = os.path.abspath(os.fspath(dest)) if dest is not None else os.path.dirname(path)
    rel = os.path.relpath(path, dest).replace(os.sep, "/")
    rec = read_state(dest).get(rel)
    if not rec or not rec.get("sha256"):
        return False
    digest = sha256_file(path)
    if digest != rec["sha256"]:
        raise ZooError(f"{path}: sha256 {digest} differs from the one recorded when it was installed "
                       f"({rec['sha256']}, {rec.get('recorded', '?')}): the file changed or is corrupt. Delete it "
                       f"and install it again.")
    return True


# ---------------------------------------------------------------------------------------------------------
# Install
def _plan(m: Manifest, e: Entry, dest: str) -> list[Entry]:
    """The entries whose files must arrive (download or by hand) before ``e`` can be installed."""
    if os.path.isfile(os.path.join(dest, e.target)):
        return []
    parts = [e] + ([m.entries[e.autoencoder]] if e.kind == "official_generator" else [])
    return [x for x in parts if not os.path.isfile(os.path.join(dest, x.source_path))
            and not (x.archive and os.path.isfile(os.path.join(dest, x.download_path)))]


def _hand_lines(missing: list[Entry], dest: str) -> str:
    return "; ".join(f"{x.urls[0]} -> {os.path.join(dest, x.download_path)}" + (
        f" (or the {x.archive['member']} inside it as {os.path.join(dest, x.source_path)})" if x.archive else "")
        for x in missing)


def _not_installed(e: Entry, missing: list[Entry], dest: str) -> ZooError:
    lines = _hand_lines(missing, dest)
    return ZooError(
        f"{e.id!r} ({e.name}) is not installed in {dest} and downloading is switched off. Switch downloading on "
        f"(allow_download=True, or `lddgan download {e.id} --dest {dest}`), or download by hand and save: {lines}; "
        f"then load again" + (f" (the files are converted to {os.path.join(dest, e.target)})."
                              if e.kind == "official_generator" else "."))


def _download(e: Entry, dest: str, progress, log, timeout, retries, pending: list | None = None,
              cancel=None) -> str:
    """Download ``e`` (trying its URLs in order) to dest/e.download_path, verified; returns the sha256. Its hash
    is not recorded here: a record for it is appended to ``pending`` (only when the download is complete: its
    size was declared and met), to be written once the file has proved valid (see ``ensure``)."""
    rel = e.download_path
    want, _ = _expected_sha(e, dest, rel)
    errors = []
    for url in e.urls:
        if log:
            log(f"downloading {url}\n  -> {os.path.join(dest, rel)}")
        info: dict = {}
        try:
            digest = download_file(url, os.path.join(dest, rel), size=e.size, sha256=want, progress=progress,
                                   timeout=timeout, retries=retries, cancel=cancel, info=info)
        except DownloadError as err:
            if cancel is not None and type(err).__name__ == "Cancelled":
                raise ZooError(str(err)) from None
            errors.append(str(err))
            continue
        if pending is not None and info.get("complete"):
            pending.append((e, rel, dict(sha256=digest, size=os.path.getsize(os.path.join(dest, rel)), entry=e.id,
                                         how="download", url=url), True))
        elif pending is not None:  # size unknown: never record (a truncated file would block good ones), but
            pending.append((e, rel, None, True))  # remove it if it proves invalid
        return digest
    raise ZooError(f"{e.id!r}: " + "\n".join(errors))


# Without a declared size for the archive member ("archive": {"size": N}), extraction may write at most this many
# times the archive's own size (checkpoints barely compress; a 'zip bomb' inflates a thousandfold).
MAX_INFLATE = 4


def _extract(e: Entry, dest: str, log, pending: list | None = None) -> None:
    """Copy the archive member to dest/e.source_path (atomically; at most its declared size, or MAX_INFLATE
    times the archive's), record it (or leave the record in ``pending``), then delete the archive."""

    arch = os.path.join(dest, e.download_path)
    member = e.archive["member"]
    limit = e.archive.get("size")
    if limit is None:
        limit = MAX_INFLATE * os.path.getsize(arch) + (1 << 20)
    try:
        with zipfile.ZipFile(arch) as z:
            infos = [i for i in z.infolist() if not i.filename.endswith("/")]
            names = [i.filename for i in infos]
            match = [n for n in names if n == member] or [n for n in names if n.rsplit("/", 1)[-1] == member]
            if len(match) != 1:
                raise ZooError(f"{arch}: expected one member named {member!r}, found {match or names[:20]}")
            declared = z.getinfo(match[0]).file_size
            if declared > limit:
                raise ZooError(f"{arch}: {match[0]} would inflate to {declared} bytes, more than the {limit} allowed "
                               f"({'declared in the manifest' if 'size' in e.archive else f'{MAX_INFLATE}x the archive'}"
                               f"); not extracted. Delete the archive: it is not the published file")
            if log:
                log(f"extracting {match[0]} -> {os.path.join(dest, e.source_path)}")

            def write(tmp):
                done = 0
                with z.open(match[0]) as src, open(tmp, "wb") as dst:
                    for block in iter(lambda: src.read(1 << 20), b""):
                        done += len(block)
                        if done > limit:  # the header lied: stop writing at the bound
                            raise ZooError(f"{arch}: {match[0]} inflates beyond {limit} bytes; not extracted. "
                                           f"Delete the archive: it is not the published file")
                        dst.write(block)
            atomic_write(os.path.join(dest, e.source_path), write)
    except (zipfile.BadZipFile, OSError) as err:
        raise ZooError(f"{arch}: not a readable zip archive ({err}); delete it and download again") from None
    rec = dict(sha256=sha256_file(os.path.join(dest, e.source_path)),
               size=os.path.getsize(os.path.join(dest, e.source_path)), entry=e.id, how="extracted",
               archive_sha256=read_state(dest).get(e.download_path, {}).get("sha256"))
    if pending is None:
        _record(dest, e.source_path, **rec)
    else:
        pending.append((e, e.source_path, rec, False))
    os.unlink(arch)


def _check_or_defer(e: Entry, dest: str, rel: str, pending: list) -> None:
    """A file found in place: checked against a published / recorded hash now; a new record waits in ``pending``
    until the file has proved valid."""
    path = os.path.join(dest, rel)
    digest = sha256_file(path)
    want, _ = _expected_sha(e, dest, rel)
    if want is not None:
        _check_or_record(e, dest, rel, how="found", digest=digest)
    else:
        pending.append((e, rel, dict(sha256=digest, size=os.path.getsize(path), entry=e.id, how="found"), False))


def _arrive(e: Entry, dest: str, allow_download: bool, progress, log, timeout, retries,
            pending: list | None = None, cancel=None) -> str:
    """Make dest/e.source_path present and verified (downloaded, found in place, or extracted). Returns its path.
    With ``pending`` (a list), new hash records are appended there instead of written (see ``ensure``)."""
    pend = [] if pending is None else pending
    src = os.path.join(dest, e.source_path)
    if os.path.isfile(src):
        _check_or_defer(e, dest, e.source_path, pend)
    else:
        if not (e.archive and os.path.isfile(os.path.join(dest, e.download_path))):
            if not allow_download:
                raise _not_installed(e, [e], dest)
            _download(e, dest, progress, log, timeout, retries, pend, cancel)
        else:
            _check_or_defer(e, dest, e.download_path, pend)
        if e.archive:
            _commit(dest, [p for p in pend if p[1] == e.download_path])  # the archive's hash, for its record
            pend[:] = [p for p in pend if p[1] != e.download_path]
            _extract(e, dest, log, pend)
    if pending is None:
        _commit(dest, pend)
    return src


def _commit(dest: str, pending: list) -> None:
    """Write the hash records of files that proved valid."""
    for _e, rel, rec, _downloaded in pending:
        if rec is not None:
            _record(dest, rel, **rec)


def _reject(dest: str, pending: list) -> None:
    """Files that did not prove valid: the downloaded ones are removed (a later download starts clean), and no
    hash is recorded for any of them."""
    for _e, rel, _rec, downloaded in pending:
        if downloaded or _rec is not None and _rec.get("how") == "extracted":
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(dest, rel))


def _model_meta(path: str) -> dict:
    """The metadata of one of our model files, without reading its tensors."""
    try:
        return read_model_config(path)
    except CheckpointError as err:
        raise ZooError(f"{err}; delete it and install again") from None


def _check_converted(m: Manifest, e: Entry, dest: str) -> None:
    """A converted model must carry, in its provenance, the sha256 of the official files the manifest names."""
    out = os.path.join(dest, e.target)
    prov = _model_meta(out).get("provenance", {})
    for role, part in (("generator", e), ("autoencoder", m.entries[e.autoencoder])):
        want, origin = _expected_sha(part, dest, part.source_path)
        got = prov.get(f"{role}_sha256")
        if want is not None and got != want:
            raise ZooError(f"{out}: was converted from a {role} file with sha256 {got}, but {part.file_name} has "
                           f"sha256 {want} ({origin}). Delete {out} and install again.")


def _convert(m: Manifest, e: Entry, dest: str, gen_path: str, ae_path: str, log, pending: list | None = None) -> None:

    out = os.path.join(dest, e.target)
    if log:
        log(f"converting {os.path.basename(gen_path)} + {os.path.basename(ae_path)} -> {out}")
    model = load_official(official_config(m, e.id), gen_path, ae_path)
    zoo_prov = {"zoo_entry": e.id, "zoo_autoencoder": e.autoencoder, "zoo_manifest": os.path.basename(m.path or ""),
                "generator_url": e.urls[0], "autoencoder_url": m.entries[e.autoencoder].urls[0],
                "license": e.license}
    model.config = dataclasses.replace(model.config, provenance={**model.config.provenance, **zoo_prov})
    model.save(out)
    _commit(dest, pending or [])  # the official files proved valid: their hashes may now be recorded
    prov = model.config.provenance
    _record(dest, e.target, sha256=sha256_file(out), size=os.path.getsize(out), entry=e.id, how="converted",
            generator_sha256=prov.get("generator_sha256"), autoencoder_sha256=prov.get("autoencoder_sha256"))


def ensure(entry_id: str, dest, *, manifest=None, allow_download: bool = False, progress: Progress | None = None,
           log: Callable[[str], None] | None = None, timeout: float = 30.0, retries: int = 2,
           cancel: Callable[[], bool] | None = None) -> str:
    """Install manifest entry ``entry_id`` into folder ``dest`` if needed and return the path to use:

    * model / official_generator: our .safetensors, ready for ``lddgan_core.load`` (official files are
      downloaded, verified, and converted once; later calls verify the recorded sha256 and return at once);
    * official_autoencoder: the LDM checkpoint (extracted from its archive), for ``load_official``.

    Files already in place (e.g. put there by hand) are used after verification. With ``allow_download``
    False a missing file is a ZooError that gives the URL(s) and the exact path(s) to save them to.
    ``progress(done_bytes, total_bytes_or_None)`` is called during each download; ``log(text)`` gets one
    line per step; ``cancel()`` is polled during downloads (True, or an exception it raises, stops them). Hashes
    of new files are recorded only once the files have proved valid (converted into a model, or read as one).
    Raises ZooError (a ValueError) on any failure."""
    m = load_manifest(manifest)
    e = m[entry_id]
    dest = os.path.abspath(os.fspath(dest))
    target = os.path.join(dest, e.target)
    missing = _plan(m, e, dest)
    if missing and not allow_download:
        raise _not_installed(e, missing, dest)
    os.makedirs(dest, exist_ok=True)
    try:
        with file_lock(os.path.join(dest, f".{e.id}.install.lock"), what=f"{e.id!r} in {dest}"):
            if os.path.isfile(target):  # installed before: verify, no network
                _check_or_record(e, dest, e.target, how="found")
                if e.kind == "official_generator":
                    _check_converted(m, e, dest)
                return target
            pending: list = []
            if e.kind == "model":
                _arrive(e, dest, allow_download, progress, log, timeout, retries, pending, cancel)
                try:
                    validate_model_file(target)
                except LDDGANError as err:
                    os.unlink(target)
                    raise ZooError(f"{e.id!r}: the downloaded file is not an LDDGAN model and was removed: "
                                   f"{err}") from None
                _commit(dest, pending)
                return target
            if e.kind == "official_autoencoder":  # on its own (no model to convert): recorded when complete
                return _arrive(e, dest, allow_download, progress, log, timeout, retries, None, cancel)
            ae = m.entries[e.autoencoder]
            try:
                gen_path = _arrive(e, dest, allow_download, progress, log, timeout, retries, pending, cancel)
                ae_path = _arrive(ae, dest, allow_download, progress, log, timeout, retries, pending, cancel)
            except ZooError as err:
                _commit(dest, [p for p in pending if p[2] is not None and p[2].get("how") == "found"
                               and _expected_sha(p[0], dest, p[1])[0] is not None])
                still = _plan(m, e, dest)
                if len(still) < 2:
                    raise
                raise ZooError(f"{err}\nAll files still needed for {e.id!r}: {_hand_lines(still, dest)}") from None
            try:
                _convert(m, e, dest, gen_path, ae_path, log, pending)
            except LDDGANError as err:
                _reject(dest, pending)
                raise ZooError(f"{e.id!r}: the official files do not convert into a valid model, so nothing was "
                               f"recorded and the downloaded ones were removed (a later download starts clean): "
                               f"{err}") from None
            return target
    except DownloadError as err:  # the install lock is held by someone else
        raise ZooError(str(err)) from None
