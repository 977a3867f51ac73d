"""A real ComfyUI server for the integration test: started headless on 127.0.0.1 (CPU) from a checkout
($COMFYUI_DIR, run by $COMFYUI_PYTHON or this interpreter) with a temporary base directory whose
custom_nodes/ links to this repository; plus a tiny HTTP client (urllib only)."""
from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import numpy as np

LAUNCHER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "comfy_launch.py")  # main.py + a torchvision fix


def comfyui_dir() -> str | None:
    """$COMFYUI_DIR, else the ComfyUI checkout at <repo>/../shared/comfyui when there is one (CI has it)."""
    env = os.environ.get("COMFYUI_DIR")
    if env:
        return env
    shared = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "comfyui")
    return os.path.realpath(shared) if os.path.isfile(os.path.join(shared, "main.py")) else None


def make_input_folder(base, comfyui_dir: str, make_example) -> None:
    """<base>/input holding ComfyUI's input/example.png, or one written by make_example(path) when the ComfyUI tree
    has none."""
    import pathlib
    import shutil

    (pathlib.Path(base) / "input").mkdir()
    example = pathlib.Path(comfyui_dir) / "input" / "example.png"
    dest = pathlib.Path(base) / "input" / "example.png"
    if example.is_file():
        shutil.copy(example, dest)
    else:
        make_example(dest)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    def __init__(self, comfy_dir: str, python: str, base: str, pack_dir: str, extra_args=(),
                 start_timeout: float = 240, env: dict | None = None):
        self.comfy_dir, self.python, self.base = comfy_dir, python, base
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        os.makedirs(os.path.join(base, "custom_nodes"), exist_ok=True)
        link = os.path.join(base, "custom_nodes", "ComfyUI-LDDGAN")
        if not os.path.lexists(link):
            os.symlink(pack_dir, link, target_is_directory=True)
        self.log_path = os.path.join(base, "comfyui.log")
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [python, LAUNCHER, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
             "--disable-auto-launch", "--disable-api-nodes", "--base-directory", base,
             "--database-url", "sqlite:///:memory:", *extra_args],
            cwd=comfy_dir, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, **(env or {})})
        deadline = time.time() + start_timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode} while starting:\n{self.log_tail()}")
            try:
                self.get_json("/object_info/LDDGANSampler", timeout=5)
                return
            except (urllib.error.URLError, ConnectionError, OSError, ValueError):
                time.sleep(1)
        self.stop()
        raise RuntimeError(f"ComfyUI did not answer within {start_timeout} s:\n{self.log_tail()}")

    def log_tail(self, n: int = 4000) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()[-n:]

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()

    # -- HTTP ------------------------------------------------------------------------------------------------
    def _request(self, path, data=None, timeout=30):
        req = urllib.request.Request(self.url + path, data=None if data is None else json.dumps(data).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()

    def get_json(self, path, timeout=30):
        return json.loads(self._request(path, timeout=timeout)[1])

    def queue(self, prompt: dict) -> tuple[int, dict]:
        """POST /prompt -> (HTTP status, body); 400 carries ComfyUI's validation errors (node_errors)."""
        try:
            status, body = self._request("/prompt", {"prompt": prompt, "client_id": uuid.uuid4().hex})
        except urllib.error.HTTPError as e:
            status, body = e.code, e.read()
        return status, json.loads(body)

    def submit(self, prompt: dict) -> str:
        """Queue a prompt that must pass validation; its prompt_id."""
        status, body = self.queue(prompt)
        if status != 200:
            raise AssertionError(f"prompt refused ({status}): {json.dumps(body)[:3000]}")
        return body["prompt_id"]

    def interrupt(self) -> None:
        """What the Cancel button does: POST /interrupt (the running prompt stops at its next check)."""
        self._request("/interrupt", {})

    def run(self, prompt: dict, timeout: float = 300) -> dict:
        """Queue a prompt and wait for its /history entry (success or error)."""
        return self.wait(self.submit(prompt), timeout)

    def wait(self, pid: str, timeout: float = 300) -> dict:
        """The /history entry of a queued prompt once it has finished (success, error or interrupted)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            hist = self.get_json(f"/history/{pid}")
            if pid in hist and hist[pid].get("status", {}).get("completed") is not None:
                entry = hist[pid]
                if entry["status"].get("status_str") in ("success", "error"):
                    return entry
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI died:\n{self.log_tail()}")
            time.sleep(0.25)
        raise TimeoutError(f"prompt {pid} did not finish in {timeout} s:\n{self.log_tail()}")

    def images(self, entry: dict, node_id: str | None = None) -> dict[str, np.ndarray]:
        """{output node id: uint8 [N, H, W, 3]} fetched through /view."""
        from PIL import Image

        out = {}
        for nid, o in entry["outputs"].items():
            if node_id is not None and nid != node_id or "images" not in o:
                continue
            arrs = []
            for im in o["images"]:
                q = urllib.parse.urlencode({k: im[k] for k in ("filename", "subfolder", "type")})
                arrs.append(np.asarray(Image.open(io.BytesIO(self._request(f"/view?{q}")[1])).convert("RGB")))
            out[nid] = np.stack(arrs)
        return out


def error_of(entry: dict) -> dict:
    """The execution_error message of a failed /history entry ({} if it succeeded)."""
    for kind, msg in entry["status"].get("messages", []):
        if kind == "execution_error":
            return msg
    return {}
