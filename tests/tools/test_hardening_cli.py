"""Issue 14, items 14 and 16: `lddgan sample` in bounded memory for any --batch, and a read-only or full
destination ends in one line and exit status 2."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from lddgan_core.tools.cli import FIXTURE_MODEL, main

from hardening_util import REPO


def _cli(args, *, mem_mb=3072, fsize=None, timeout=120):
    pre = (f"import resource, signal, sys\nresource.setrlimit(resource.RLIMIT_AS, ({mem_mb << 20}, {mem_mb << 20}))\n")
    if fsize is not None:  # a 'full disk': writes past fsize bytes fail with EFBIG (the signal is ignored)
        pre += (f"signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
                f"resource.setrlimit(resource.RLIMIT_FSIZE, ({fsize}, {fsize}))\n")
    code = pre + f"from lddgan_core.tools.cli import main\nsys.exit(main({list(args)!r}))\n"
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=REPO)


# ---------------------------------------------------------------------------------------------- item 14
def test_sample_million_grid_refused_at_once(tmp_path, capsys):
    t = time.time()
    with pytest.raises(SystemExit, match="too many images for one grid.*--out DIR"):
        main(["sample", "--model", FIXTURE_MODEL, "--batch", "1000000", "--grid", str(tmp_path / "g.png")])
    assert time.time() - t < 30 and not (tmp_path / "g.png").exists()


def test_sample_million_streams_to_disk_in_bounded_memory(tmp_path):
    """--batch 1000000 --out DIR under a 3 GiB address-space cap: images keep arriving on disk and the process
    neither dies nor grows (before: an allocation traceback at once). Stopped after a while."""
    out = tmp_path / "png"
    proc = _cli(["sample", "--model", FIXTURE_MODEL, "--batch", "1000000", "--chunk", "32", "--out", str(out)])
    try:
        deadline, seen = time.time() + 90, 0
        while time.time() < deadline and proc.poll() is None:
            time.sleep(2)
            seen = len(os.listdir(out)) if out.is_dir() else 0
            if seen >= 200:
                break
        alive = proc.poll() is None
    finally:
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=30)
    assert alive, f"the sampler stopped early (rc {proc.returncode}): {err[-2000:]}"
    assert seen >= 64, f"only {seen} images written"
    assert "Traceback" not in err


def test_chunked_sampling_gives_the_same_images(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["sample", "--model", FIXTURE_MODEL, "--batch", "5", "--seed", "7", "--chunk", "2", "--out", str(a)]) == 0
    assert main(["sample", "--model", FIXTURE_MODEL, "--batch", "5", "--seed", "7", "--chunk", "5", "--out", str(b),
                 "--grid", str(tmp_path / "g.png")]) == 0
    names = sorted(os.listdir(a))
    assert names == sorted(os.listdir(b)) and len(names) == 5
    for n in names:
        x, y = np.asarray(Image.open(a / n)).astype(int), np.asarray(Image.open(b / n)).astype(int)
        assert np.abs(x - y).max() <= 1
    assert (tmp_path / "g.png").is_file()


# ---------------------------------------------------------------------------------------------- item 16
@pytest.mark.parametrize("where", ["out", "grid"])
def test_read_only_destination_one_line_exit_2(where):
    """/sys refuses new files even to root: a real read-only destination."""
    if os.access("/sys", os.W_OK) and os.path.exists("/sys/lddgan_probe"):
        pytest.skip("/sys is writable here")
    args = ["sample", "--model", FIXTURE_MODEL, "--batch", "2"]
    args += ["--out", "/sys/lddgan_out"] if where == "out" else ["--grid", "/sys/lddgan_grid.png"]
    proc = _cli(args)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: cannot write") and "/sys/lddgan" in lines[0], err


def test_full_destination_one_line_exit_2(tmp_path):
    """A destination where writes fail (RLIMIT_FSIZE: EFBIG, as a full disk gives ENOSPC): one line, exit 2, and
    no temporary file left behind."""
    out = tmp_path / "png"
    proc = _cli(["sample", "--model", FIXTURE_MODEL, "--batch", "2", "--out", str(out)], fsize=64)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: cannot write"), err
    assert not [f for f in os.listdir(out) if f.startswith(".tmp-")]
