"""Helpers for the hub tests and the Model Loader's download tests: a local HTTP file server, a URL that
refuses connections, and a weights manifest whose entries are the official_tiny fixture files."""
import hashlib
import http.server
import json
import socket
import threading
import time


class FileServer:
    """Serves in-memory files over HTTP on 127.0.0.1, honouring ``Range: bytes=N-`` / ``N-M`` with 206 (and
    ``If-Range``). Test knobs: ``drop_after[path] = K`` sends K body bytes of the next response, then closes
    the connection (one-shot); ``status[path]`` forces an error code; ``ignore_range`` answers ranges with
    200; ``stall[path]`` sleeps that long after the headers. ``requests`` logs (path, headers)."""

    def __init__(self):
        self.files, self.requests, self.drop_after, self.status, self.stall = {}, [], {}, {}, {}
        self.ignore_range = False
        srv = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                path = self.path
                srv.requests.append((path, dict(self.headers)))
                if path in srv.status:
                    self.send_error(srv.status[path])
                    return
                if path not in srv.files:
                    self.send_error(404)
                    return
                data, ctype, etag = srv.files[path]
                start, end, code = 0, len(data) - 1, 200
                rng = self.headers.get("Range")
                if_range = self.headers.get("If-Range")
                if rng and not srv.ignore_range and (if_range is None or if_range == etag):
                    a, _, b = rng.removeprefix("bytes=").partition("-")
                    start, end = int(a), (int(b) if b else len(data) - 1)
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    code = 206
                body = data[start:end + 1]
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("ETag", etag)
                self.send_header("Accept-Ranges", "bytes")
                if code == 206:
                    self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
                self.end_headers()
                if path in srv.stall:
                    time.sleep(srv.stall[path])
                k = srv.drop_after.pop(path, None)
                try:
                    self.wfile.write(body if k is None else body[:k])
                    self.wfile.flush()
                except OSError:
                    pass
                if k is not None:  # simulate a dropped connection
                    self.close_connection = True
                    try:
                        self.connection.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass  # clients that time out on purpose make the handler's writes fail

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def add(self, path: str, data: bytes, ctype: str = "application/octet-stream"):
        self.files[path] = (data, ctype, '"' + hashlib.sha256(data).hexdigest()[:16] + '"')
        return self.url(path)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def refused_url(path: str = "/x.bin") -> str:
    """A URL on a local port that nothing listens on (connection refused)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}{path}"


def fixture_manifest(official_tiny, gen_urls, ae_urls, **gen_overrides) -> dict:
    """A manifest whose generator / autoencoder entries are the official_tiny fixture files."""
    cfg = json.loads((official_tiny / "config.json").read_text())
    gen = {"id": "tiny", "name": "official_tiny fixture", "kind": "official_generator", "file_name": "netG_7.pth",
           "urls": gen_urls, "size": None, "sha256": None, "license": "not stated", "autoencoder": "tiny-ae",
           "output": "lddgan_tiny.safetensors",
           "import": {"name": "tiny", "generator": cfg["generator"], "diffusion": cfg["diffusion"],
                      "scale_factor": cfg["scale_factor"], "image_size": cfg["image_size"]}}
    gen.update(gen_overrides)
    ae = {"id": "tiny-ae", "name": "official_tiny autoencoder", "kind": "official_autoencoder",
          "file_name": "ae_3.ckpt", "urls": ae_urls, "license": "not stated",
          "import": {"autoencoder": cfg["autoencoder"]}}
    return {"manifest_version": 1, "entries": [gen, ae]}
