"""lddgan_core.hub.download against a real HTTP server on 127.0.0.1 (http.server in a thread): full download,
interruption and resume (Range / If-Range), verification failures that leave nothing behind, clear errors."""
import hashlib
import os
import random
import time

import pytest

from lddgan_core.hub.download import DownloadError, download_file, file_lock
from hub_util import FileServer, refused_url

DATA = random.Random(0).randbytes(300_000)
SHA = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def server():
    with FileServer() as s:
        yield s


def test_full_download(server, tmp_path):
    url = server.add("/w/netG.pth", DATA)
    seen = []
    got = download_file(url, tmp_path / "netG.pth", size=len(DATA), sha256=SHA.upper(),
                        progress=lambda d, t: seen.append((d, t)))
    assert got == SHA
    assert (tmp_path / "netG.pth").read_bytes() == DATA
    assert os.listdir(tmp_path) == ["netG.pth"]  # no .part / .part.json / .lock left
    assert seen[0] == (0, len(DATA)) and seen[-1] == (len(DATA), len(DATA))
    assert all(a[0] <= b[0] for a, b in zip(seen, seen[1:]))
    assert "Range" not in server.requests[0][1]


def test_interrupted_then_resumed(server, tmp_path):
    url = server.add("/w/netG.pth", DATA)
    server.drop_after["/w/netG.pth"] = 100_000
    target = tmp_path / "netG.pth"
    with pytest.raises(DownloadError, match=r"interrupted after 100000 of 300000 bytes") as ei:
        download_file(url, target, retries=0)
    assert "run again to resume" in str(ei.value) and str(target) in str(ei.value)
    assert not target.exists() and (tmp_path / "netG.pth.part").stat().st_size == 100_000
    seen = []
    assert download_file(url, target, sha256=SHA, progress=lambda d, t: seen.append(d), retries=0) == SHA
    assert target.read_bytes() == DATA
    hdr = server.requests[-1][1]
    assert hdr["Range"] == "bytes=100000-" and hdr["If-Range"] == server.files["/w/netG.pth"][2]
    assert seen[0] == 100_000 and seen[-1] == len(DATA)  # only the rest was transferred
    assert sorted(os.listdir(tmp_path)) == ["netG.pth"]


def test_interruption_resumes_within_one_call(server, tmp_path):
    url = server.add("/w/a.bin", DATA)
    server.drop_after["/w/a.bin"] = 123_457
    assert download_file(url, tmp_path / "a.bin", sha256=SHA, retries=1, retry_wait=0) == SHA
    assert [h.get("Range") for _, h in server.requests] == [None, "bytes=123457-"]
    assert (tmp_path / "a.bin").read_bytes() == DATA


def test_hash_mismatch_leaves_nothing(server, tmp_path):
    url = server.add("/w/a.bin", DATA)
    server.drop_after["/w/a.bin"] = 50_000  # the mismatch is found after a resume, too
    with pytest.raises(DownloadError, match=f"sha256 mismatch: expected {'0' * 64}, got {SHA}"):
        download_file(url, tmp_path / "a.bin", sha256="0" * 64, retries=1, retry_wait=0)
    assert os.listdir(tmp_path) == []


def test_size_mismatch_leaves_nothing(server, tmp_path):
    url = server.add("/w/a.bin", DATA)
    with pytest.raises(DownloadError, match="has 300000 bytes, the manifest expects 300001"):
        download_file(url, tmp_path / "a.bin", size=len(DATA) + 1)
    assert os.listdir(tmp_path) == []


def test_404_is_a_clear_error(server, tmp_path):
    url = server.url("/missing.pth")
    with pytest.raises(DownloadError, match="HTTP 404") as ei:
        download_file(url, tmp_path / "m.pth", retries=0)
    msg = str(ei.value)
    assert url in msg and f"save it as {tmp_path / 'm.pth'}" in msg and f"folder {tmp_path}" in msg
    assert os.listdir(tmp_path) == []
    assert len(server.requests) == 1  # a 404 is not retried


def test_refused_connection_is_a_clear_error(tmp_path):
    url = refused_url("/netG.pth")
    t0 = time.perf_counter()
    with pytest.raises(DownloadError, match="offline, blocked, or the server is down") as ei:
        download_file(url, tmp_path / "netG.pth", retries=0)
    assert url in str(ei.value) and str(tmp_path / "netG.pth") in str(ei.value)
    assert time.perf_counter() - t0 < 5 and os.listdir(tmp_path) == []


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    url = server.add("/w/a.bin", DATA)
    server.drop_after["/w/a.bin"] = 100_000
    with pytest.raises(DownloadError):
        download_file(url, tmp_path / "a.bin", retries=0)
    (tmp_path / "a.bin.part").write_bytes(b"\0" * 100_000)  # if these bytes were kept, the result would be wrong
    server.ignore_range = True
    assert download_file(url, tmp_path / "a.bin", retries=0) == SHA
    assert server.requests[-1][1]["Range"] == "bytes=100000-"  # it asked, got 200, and started over
    assert (tmp_path / "a.bin").read_bytes() == DATA


def test_file_changed_on_server_is_not_spliced(server, tmp_path):
    url = server.add("/w/a.bin", DATA)
    server.drop_after["/w/a.bin"] = 100_000
    with pytest.raises(DownloadError):
        download_file(url, tmp_path / "a.bin", retries=0)
    new = random.Random(1).randbytes(len(DATA))  # same length, new ETag: If-Range makes the server send it all
    server.add("/w/a.bin", new)
    assert download_file(url, tmp_path / "a.bin", retries=0) == hashlib.sha256(new).hexdigest()
    assert (tmp_path / "a.bin").read_bytes() == new


def test_complete_part_and_416(server, tmp_path):
    url = server.add("/w/a.bin", DATA)
    server.drop_after["/w/a.bin"] = len(DATA) - 1
    with pytest.raises(DownloadError):
        download_file(url, tmp_path / "a.bin", retries=0)
    with open(tmp_path / "a.bin.part", "ab") as f:  # the last byte arrived, but the rename did not happen
        f.write(DATA[-1:])
    assert download_file(url, tmp_path / "a.bin", sha256=SHA, retries=0) == SHA
    assert server.requests[-1][1]["Range"] == f"bytes={len(DATA)}-"  # answered 416 */300000: already complete


def test_web_page_instead_of_file(server, tmp_path):
    url = server.add("/share/netG.pth", b"<html>Sign in to download</html>", ctype="text/html; charset=utf-8")
    with pytest.raises(DownloadError, match=r"sent a web page \(text/html\)"):
        download_file(url, tmp_path / "netG.pth")
    assert os.listdir(tmp_path) == []


def test_stalled_server_times_out(server, tmp_path):
    url = server.add("/w/a.bin", DATA)
    server.stall["/w/a.bin"] = 3.0
    t0 = time.perf_counter()
    with pytest.raises(DownloadError, match=r"interrupted after 0 of 300000 bytes \(timed out\)"):
        download_file(url, tmp_path / "a.bin", timeout=0.3, retries=0)
    assert time.perf_counter() - t0 < 2.0


def test_only_http_and_one_writer(server, tmp_path):
    with pytest.raises(DownloadError, match="only http"):
        download_file("file:///etc/passwd", tmp_path / "p")
    url = server.add("/w/a.bin", DATA)
    with file_lock(str(tmp_path / "a.bin.lock")):
        with pytest.raises(DownloadError, match="being written by another process"):
            download_file(url, tmp_path / "a.bin")
    assert server.requests == []
