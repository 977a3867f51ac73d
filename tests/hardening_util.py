"""Helpers for the hardening tests: run code in a child process with a wall-clock timeout and a memory cap, so
a test of a hang or a memory bomb can neither hang nor eat the machine."""
import json
import os
import subprocess
import sys
import textwrap

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_PRELUDE = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, ({mem}, {mem}))
"""


def run_limited(code: str, *, mem_mb: int = 3072, timeout: float = 120, env: dict | None = None,
                args: list | None = None) -> subprocess.CompletedProcess:
    """Run ``code`` (Python) in a fresh interpreter under RLIMIT_AS=mem_mb and a timeout; returns the process.
    The library is imported from this checkout (PYTHONPATH)."""
    src = _PRELUDE.format(mem=mem_mb << 20) + textwrap.dedent(code)
    e = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    e.update(env or {})
    return subprocess.run([sys.executable, "-c", src] + list(args or []), capture_output=True, text=True,
                          timeout=timeout, env=e, cwd=REPO)


def result_of(proc: subprocess.CompletedProcess) -> dict:
    """The JSON object the child printed on its last stdout line (fails with the child's stderr otherwise)."""
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert lines, f"no output (rc {proc.returncode}); stderr:\n{proc.stderr[-3000:]}"
    return json.loads(lines[-1])
