"""Issue 14, items 5-7: downloads against hostile servers on 127.0.0.1. A hash is recorded only for a complete
file that proves valid; an overall deadline, the declared size and Cancel stop a download; a full or read-only
destination is a clean error; zip extraction is bounded."""
import http.server
import io
import json
import os
import socketserver
import sys
import threading
import time
import zipfile

import pytest

from lddgan_core.hub import download as D, zoo
from lddgan_core.formats.lddgan_file import read_model_file
from lddgan_core.hub.shipped import FIXTURE_MODEL

from hardening_util import REPO, result_of, run_limited

sys.path.insert(0, str(REPO))  # nodes/ from the checkout


class Server:
    """path -> dict(body=bytes, length=True|False, chunk=int, delay=float, endless=False)."""

    def __init__(self):
        self.routes = {}
        routes = self.routes

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *a):
                pass

            def do_GET(self):
                r = routes.get(self.path)
                if r is None:
                    self.send_error(404)
                    return
                body = r.get("body", b"")
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                if r.get("length", True) and not r.get("endless"):
                    self.send_header("Content-Length", str(r.get("claim", len(body))))
                self.end_headers()
                try:
                    if r.get("endless"):
                        block = bytes(r.get("chunk", 65536))
                        while True:
                            self.wfile.write(block)
                    step, delay = r.get("chunk", 1 << 20), r.get("delay", 0.0)
                    for i in range(0, len(body), step):
                        self.wfile.write(body[i:i + step])
                        self.wfile.flush()
                        if delay:
                            time.sleep(delay)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True

        self.httpd = S(("127.0.0.1", 0), H)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def add(self, path, **route):
        self.routes[path] = route
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *a):
        self.httpd.shutdown()
        self.httpd.server_close()


def model_manifest(url, size=None):
    return {"manifest_version": 1, "entries": [
        {"id": "m", "name": "model", "kind": "model", "file_name": "m.safetensors", "urls": [url], "size": size,
         "sha256": None, "license": "not stated"}]}


# ---------------------------------------------------------------------------------------------- item 5
def test_truncated_download_of_unknown_size_is_not_recorded(tmp_path):
    """No size in the manifest, no Content-Length, the connection closes early: the file is incomplete; it is
    refused and removed, no hash is recorded, and the correct file installs afterwards (before: every later
    correct download was refused as a sha256 mismatch)."""
    good = open(FIXTURE_MODEL, "rb").read()
    with Server() as srv:
        url = srv.add("/m.safetensors", body=good[: len(good) // 2], length=False)
        with pytest.raises(zoo.ZooError, match="not an LDDGAN model and was removed"):
            zoo.ensure("m", tmp_path, manifest=model_manifest(url), allow_download=True)
        assert "m.safetensors" not in zoo.read_state(tmp_path)
        srv.routes["/m.safetensors"] = dict(body=good, length=False)
        path = zoo.ensure("m", tmp_path, manifest=model_manifest(url), allow_download=True)
    assert open(path, "rb").read() == good
    assert "m.safetensors" not in zoo.read_state(tmp_path)  # size never declared: still not recorded


def test_complete_but_invalid_download_is_not_recorded(tmp_path):
    """Declared size met, but the file is not a valid model (NaN weights): removed, nothing recorded; a later
    correct file of another size installs and is recorded."""
    from safetensors.torch import save_file

    meta, tensors = read_model_file(FIXTURE_MODEL)
    tensors = dict(tensors)
    tensors["generator.conv_out.bias"] = tensors["generator.conv_out.bias"] * float("nan")
    bad_path = tmp_path / "bad.safetensors"
    save_file(tensors, str(bad_path), metadata={k: v for k, v in meta.items() if k != "config_dict"})
    bad, good = bad_path.read_bytes(), open(FIXTURE_MODEL, "rb").read()
    dest = tmp_path / "dest"
    with Server() as srv:
        url = srv.add("/m.safetensors", body=bad)
        with pytest.raises(zoo.ZooError, match="NaN or infinite"):
            zoo.ensure("m", dest, manifest=model_manifest(url), allow_download=True)
        assert not (dest / "m.safetensors").exists() and "m.safetensors" not in zoo.read_state(dest)
        srv.routes["/m.safetensors"] = dict(body=good)
        path = zoo.ensure("m", dest, manifest=model_manifest(url), allow_download=True)
    rec = zoo.read_state(dest)["m.safetensors"]
    assert rec["sha256"] == D.sha256_file(path) and rec["size"] == len(good)


def test_official_files_recorded_only_after_conversion(official_tiny, tmp_path):
    """A generator download that does not convert (truncated, no Content-Length) records nothing and is removed;
    the correct one then installs and both official files are recorded."""
    cfg = json.loads((official_tiny / "config.json").read_text())
    g, a = (official_tiny / "netG.pth").read_bytes(), (official_tiny / "autoencoder.ckpt").read_bytes()
    with Server() as srv:
        gu = srv.add("/g.pth", body=g[: len(g) - 100], length=False)
        au = srv.add("/a.ckpt", body=a)
        d = {"manifest_version": 1, "entries": [
            {"id": "tiny", "name": "t", "kind": "official_generator", "file_name": "netG_7.pth", "urls": [gu],
             "size": None, "sha256": None, "license": "not stated", "autoencoder": "tiny-ae",
             "output": "lddgan_tiny.safetensors",
             "import": {"name": "tiny", "generator": cfg["generator"], "diffusion": cfg["diffusion"],
                        "scale_factor": cfg["scale_factor"], "image_size": cfg["image_size"]}},
            {"id": "tiny-ae", "name": "a", "kind": "official_autoencoder", "file_name": "ae_3.ckpt", "urls": [au],
             "license": "not stated", "import": {"autoencoder": cfg["autoencoder"]}}]}
        with pytest.raises(zoo.ZooError, match="do not convert into a valid model"):
            zoo.ensure("tiny", tmp_path, manifest=d, allow_download=True)
        assert zoo.read_state(tmp_path) == {}
        assert not (tmp_path / "official" / "netG_7.pth").exists()
        srv.routes["/g.pth"] = dict(body=g, length=False)
        path = zoo.ensure("tiny", tmp_path, manifest=d, allow_download=True)
    state = zoo.read_state(tmp_path)
    assert os.path.isfile(path) and "lddgan_tiny.safetensors" in state
    assert state["official/ae_3.ckpt"]["sha256"] == D.sha256_file(official_tiny / "autoencoder.ckpt")
    assert "official/netG_7.pth" not in state  # its size was never declared


# ---------------------------------------------------------------------------------------------- item 6
def _download_in_child(url, path, **kw):
    return run_limited(f"""
        import json, time
        from lddgan_core.hub import download as D
        t = time.time()
        try:
            D.download_file({url!r}, {str(path)!r}, retries=0, **{kw!r})
            out = {{"ok": True}}
        except D.DownloadError as e:
            out = {{"ok": False, "type": type(e).__name__, "msg": str(e)}}
        out["s"] = time.time() - t
        print(json.dumps(out))
    """, mem_mb=2048, timeout=90)


def test_slow_server_hits_the_overall_deadline(tmp_path):
    """1 byte every 0.1 s (each read well within the per-read timeout): the overall deadline ends it."""
    with Server() as srv:
        url = srv.add("/slow", body=bytes(100000), chunk=1, delay=0.1)
        r = result_of(_download_in_child(url, tmp_path / "f.bin", timeout=5.0, deadline=3.0))
    assert r["ok"] is False and "overall time limit" in r["msg"] and r["s"] < 20, r
    assert D.default_deadline(None) >= 600 and D.default_deadline(10 ** 10) > D.default_deadline(10 ** 6)


def test_endless_body_stops_at_the_declared_size(tmp_path):
    """An endless body (no Content-Length) for a manifest size of 100 KB: stopped at once, nothing kept."""
    with Server() as srv:
        url = srv.add("/endless", endless=True)
        r = result_of(_download_in_child(url, tmp_path / "f.bin", size=100000))
        assert r["ok"] is False and "more than the announced 100000 bytes" in r["msg"], r
        assert not (tmp_path / "f.bin").exists() and not (tmp_path / "f.bin.part").exists()
        # undeclared size: stopped at max_bytes
        r = result_of(_download_in_child(url, tmp_path / "g.bin", max_bytes=300000))
    assert r["ok"] is False and "limit of 300000" in r["msg"], r
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".part")]


def test_cancel_stops_a_download_and_keeps_the_part(tmp_path):
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 5

    with Server() as srv:
        url = srv.add("/slow", body=bytes(200000), chunk=100, delay=0.01)
        t = time.time()
        with pytest.raises(D.Cancelled, match="cancelled"):
            D.download_file(url, tmp_path / "f.bin", cancel=cancel, retries=0)
        assert time.time() - t < 20 and (tmp_path / "f.bin.part").exists() and not (tmp_path / "f.bin").exists()

        class Interrupted(Exception):  # ComfyUI's interrupt is an exception raised by the check
            pass

        def interrupt():
            raise Interrupted()
        with pytest.raises(Interrupted):
            D.download_file(url, tmp_path / "f.bin", cancel=interrupt, retries=0)


def test_node_download_passes_comfyui_interrupt(monkeypatch, tmp_path):
    """The Model Loader's download polls ComfyUI's interrupt check between blocks."""
    from nodes import runtime

    seen = {}

    def fake_ensure(entry_id, dest, **kw):
        seen.update(kw)
        return "x"
    monkeypatch.setattr(zoo, "ensure", fake_ensure)
    monkeypatch.setenv("LDDGAN_MODELS_DIR", str(tmp_path))
    monkeypatch.setattr(zoo, "is_installed", lambda e, d: False)
    called = []
    monkeypatch.setattr(runtime, "check_interrupt", lambda: called.append(1))
    runtime.install_download(type("E", (), {"id": "m"})(), allow_download=True)
    assert seen["cancel"]() is False and called


def test_full_destination_clean_error_and_part_removed(tmp_path):
    """Writes fail past 64 KB (RLIMIT_FSIZE gives EFBIG, as a full disk gives ENOSPC): a DownloadError that says
    so, no traceback, and no .part left filling the disk."""
    with Server() as srv:
        url = srv.add("/big", body=bytes(1 << 20))
        proc = run_limited(f"""
            import json, resource, signal
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))
            from lddgan_core.hub import download as D
            try:
                D.download_file({url!r}, {str(tmp_path / 'f.bin')!r}, retries=0); print(json.dumps({{"ok": True}}))
            except D.DownloadError as e:
                print(json.dumps({{"ok": False, "msg": str(e)}}))
        """, timeout=90)
    r = result_of(proc)
    assert r["ok"] is False and "could not save" in r["msg"] and "partial download was removed" in r["msg"], r
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".part")]


def test_read_only_destination_clean_error():
    with Server() as srv:
        url = srv.add("/f", body=b"abc")
        with pytest.raises(D.DownloadError, match="could not save .* to /sys/lddgan_dl/f.bin"):
            D.download_file(url, "/sys/lddgan_dl/f.bin", retries=0)


# ---------------------------------------------------------------------------------------------- item 7
def _zip_bomb(member="model.ckpt", mib=200) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        with z.open(member, "w", force_zip64=True) as f:
            zero = bytes(1 << 20)
            for _ in range(mib):
                f.write(zero)
    return buf.getvalue()


@pytest.mark.parametrize("declared", [None, 4096])
def test_zip_bomb_is_not_extracted(official_tiny, tmp_path, declared):
    bomb = _zip_bomb()
    assert len(bomb) < 1 << 20
    cfg = json.loads((official_tiny / "config.json").read_text())
    archive = {"format": "zip", "member": "model.ckpt", **({"size": declared} if declared else {})}
    with Server() as srv:
        url = srv.add("/ae.zip", body=bomb)
        d = {"manifest_version": 1, "entries": [
            {"id": "ae", "name": "a", "kind": "official_autoencoder", "file_name": "ae.ckpt", "urls": [url],
             "license": "not stated", "archive": archive, "download_name": "ae.zip",
             "import": {"autoencoder": cfg["autoencoder"]}}]}
        proc = run_limited(f"""
            import json
            from lddgan_core.hub import zoo
            try:
                zoo.ensure("ae", {str(tmp_path)!r}, manifest={d!r}, allow_download=True); print(json.dumps({{"ok": True}}))
            except zoo.ZooError as e:
                print(json.dumps({{"ok": False, "msg": str(e)}}))
        """, mem_mb=2048, timeout=120)
    r = result_of(proc)
    assert r["ok"] is False and "would inflate to 209715200 bytes" in r["msg"], r
    written = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(tmp_path) for f in fs)
    assert written < 4 << 20  # the archive itself, nothing inflated
    assert not (tmp_path / "official" / "ae.ckpt").exists()
