"""The pack in ComfyUI's real frontend, driven in headless Chromium as a creator would use it.

ComfyUI (../shared/comfyui or $COMFYUI_DIR, as in tests/nodes/test_nodes_comfyui.py) is started with the pack; Debian's
``chromium`` and ``chromium-driver`` are driven through Selenium. For every example: open it from the template
browser (Templates > Extensions > ComfyUI-LDDGAN, a card with its thumbnail), check that no node lies under the
sidebar or the top bar and that no two nodes overlap, press Run, wait for the run to finish (the app's own
execution events, and /history), check that every output image appears in the page, and that nothing overlaps
after the run either. After the fine-tune example the Model Loader must list the new model without a refresh by
hand (the pack's web/ extension does it) and none of its side files. Console errors that come from the pack (its templates, thumbnails, node
errors) fail the test; the frontend's own harmless 404s are ignored. Waits poll the app's state with deadlines;
the page load is retried once at most. Screenshots go to test-artifacts/browser/ (kept as CI artifacts).

Outside CI a missing browser, driver or selenium skips the test with the reason; in CI ($CI set) it fails.
"""
import json
import os
import pathlib
import shutil
import sys
import time

import pytest

from conftest import REPO

sys.path[:0] = [str(REPO / "tools")]
import build_workflows as B  # noqa: E402  tools/build_workflows.py
from comfy_server import ComfyServer, comfyui_dir, make_input_folder  # noqa: E402

COMFYUI_DIR = comfyui_dir()
if not COMFYUI_DIR:
    pytest.skip("no ComfyUI: COMFYUI_DIR is not set and ../shared/comfyui is absent, so the browser test is "
                "skipped", allow_module_level=True)

ARTIFACTS = REPO / "test-artifacts" / "browser"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
PACK = "ComfyUI-LDDGAN"
EXAMPLES = sorted((REPO / "example_workflows").glob("*.json"))
# 404s the frontend itself causes on a fresh user (no user.css, no saved workflows or subgraphs, no favicon)
FRONTEND_OWN = ("/user.css", "/favicon.ico", "userdata?dir=workflows", "userdata?dir=subgraphs",
                "comfy.templates.json")
OURS = ("lddgan", "workflow_templates", "/view?")  # console lines that point at the pack or its outputs


def _need(ok: bool, why: str):
    if not ok:
        if os.environ.get("CI"):
            pytest.fail(f"{why} (CI must install chromium, chromium-driver and selenium: see .ci/run)")
        pytest.skip(why)


def _wait(what: str, fn, timeout: float = 60, every: float = 0.2):
    """Poll fn() until it returns something truthy; its value. A deadline, never a bare sleep."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = fn()
        except Exception as e:  # noqa: BLE001  (a page mid-update: try again until the deadline)
            last = e
        else:
            if last:
                return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("browser_base")
    (base / "models" / "lddgan").mkdir(parents=True)
    make_input_folder(base, COMFYUI_DIR, B.example_png)
    srv = ComfyServer(COMFYUI_DIR, os.environ.get("COMFYUI_PYTHON") or sys.executable, str(base), str(REPO),
                      env={"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def page(server):
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _need(False, "selenium is not installed (pip install -e '.[test]')")
    _need(os.path.exists(CHROMIUM) and os.path.exists(DRIVER),
          f"no chromium / chromedriver ({CHROMIUM}, {DRIVER}): apt-get install chromium chromium-driver")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1600,1000"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    driver.set_page_load_timeout(120)
    app = Page(driver, server)
    try:
        app.open()
        yield app
    finally:
        app.save_console()
        driver.quit()


class Page:
    def __init__(self, driver, server):
        self.d, self.server, self.console = driver, server, []

    def js(self, script, *args):
        return self.d.execute_script(script, *args)

    def open(self):
        """Load the app; one retry of the page load at most."""
        for attempt in (1, 2):
            self.d.get(self.server.url + "/")
            try:
                _wait("the app (window.app with a graph and canvas)",
                      lambda: self.js("return !!(window.app && app.graph && app.canvas && app.api)"), timeout=90)
                break
            except AssertionError:
                if attempt == 2:
                    raise
        self.js("""window.__lddgan = {events: []};
                   for (const t of ['execution_start', 'execution_success', 'execution_error',
                                    'execution_interrupted', 'executed'])
                       app.api.addEventListener(t, e => window.__lddgan.events.push(
                           {type: t, prompt_id: e.detail && e.detail.prompt_id, node: e.detail && e.detail.node,
                            detail: t === 'execution_error' ? e.detail : null}));""")
        self.shot("00_loaded")

    def shot(self, name):
        self.d.save_screenshot(str(ARTIFACTS / f"{name}.png"))

    def logs(self):
        got = self.d.get_log("browser")
        self.console.extend(got)
        return got

    def save_console(self):
        try:
            self.logs()
        except Exception:  # noqa: BLE001  (the browser may be gone)
            pass
        (ARTIFACTS / "console.json").write_text(json.dumps(self.console, indent=1))

    def click_text(self, text, within="document"):
        """Click the innermost visible element whose text is exactly ``text``."""
        return self.js(f"""const root = {within};
            const els = Array.from(root.querySelectorAll('*')).filter(e => e.offsetParent !== null &&
                e.textContent.trim() === arguments[0]);
            const inner = els.filter(e => !els.some(o => o !== e && e.contains(o)));
            if (!inner.length) return false;
            inner[0].click(); return true;""", text)

    # -- the template browser -----------------------------------------------------------------------------------
    def dialog_open(self):
        return self.js("return !!document.querySelector('.workflow-template-selector-dialog')")

    def open_template(self, name):
        if not self.dialog_open():  # the first visit opens it by itself; afterwards: the Templates sidebar button
            self.js("document.querySelector('button.templates-tab-button').click()")
            _wait("the template browser", self.dialog_open)
        dialog = "document.querySelector('.workflow-template-selector-dialog')"
        from PIL import Image

        with Image.open(REPO / "example_workflows" / f"{name}.jpg") as thumb:
            size = thumb.size
        _wait(f"'{PACK}' under Extensions", lambda: self.click_text(PACK, dialog))
        _wait(f"the card '{name}' with its thumbnail", lambda: self.js(f"""
            const d = {dialog};
            const t = Array.from(d.querySelectorAll('h3, h2, span, div, p')).find(
                e => e.children.length === 0 && e.textContent.trim() === arguments[0] && e.offsetParent !== null);
            if (!t) return null;
            let c = t; while (c && !c.querySelector('img')) c = c.parentElement;
            const img = c && c.querySelector('img');
            return img && img.complete && img.naturalWidth === arguments[1] && img.naturalHeight === arguments[2];""",
            name, *size), timeout=30)  # the card shows our thumbnail (a placeholder may come first)
        self.shot(f"{name}_01_card")
        assert self.click_text(name, dialog)
        _wait("the dialog to close", lambda: not self.dialog_open())

    # -- the graph ---------------------------------------------------------------------------------------------
    def nodes(self):
        """Every node: id, type, title, image count, and the screen rectangle of all it draws: its box (title bar
        included) joined with the images it shows (imageRects, node-relative), which can reach past the box."""
        return self.js("""
            const c = app.canvas, ds = c.ds, r = c.canvas.getBoundingClientRect();
            return app.graph.nodes.map(n => {
                const b = n.getBounding();  // [x, y, w, h] in graph units, title bar included
                let x0 = b[0], y0 = b[1], x1 = b[0] + b[2], y1 = b[1] + b[3];
                for (const [ix, iy, iw, ih] of (n.imgs && n.imgs.length ? n.imageRects || [] : [])) {
                    x0 = Math.min(x0, n.pos[0] + ix); y0 = Math.min(y0, n.pos[1] + iy);
                    x1 = Math.max(x1, n.pos[0] + ix + iw); y1 = Math.max(y1, n.pos[1] + iy + ih);
                }
                return {id: n.id, type: n.type, title: n.title,
                        rect: [r.left + (x0 + ds.offset[0]) * ds.scale, r.top + (y0 + ds.offset[1]) * ds.scale,
                               (x1 - x0) * ds.scale, (y1 - y0) * ds.scale],
                        imgs: (n.imgs || []).filter(i => i.complete && i.naturalWidth > 0).length};
            });""")

    def chrome_rects(self):
        """Screen rectangles of the fixed UI over the canvas: the sidebar and the top bars."""
        return self.js("""
            const sel = ['.side-toolbar-container', '.p-breadcrumb', '.actionbar', '.comfyui-menu'];
            const out = {};
            for (const s of sel) {
                const e = document.querySelector(s);
                if (e && e.offsetParent !== null) { const b = e.getBoundingClientRect();
                    if (b.width > 0 && b.height > 0) out[s] = [b.left, b.top, b.width, b.height]; }
            }
            return out;""")

    def draw(self):
        self.js("app.canvas.setDirty(true, true); app.canvas.draw(true, true);")


def _overlap(a, b, margin=0.0):
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    return ax < bx + bw - margin and bx < ax + aw - margin and ay < by + bh - margin and by < ay + ah - margin


def _overlapping(nodes):
    return [(a["title"], [round(v) for v in a["rect"]], b["title"], [round(v) for v in b["rect"]])
            for i, a in enumerate(nodes) for b in nodes[:i] if _overlap(a["rect"], b["rect"])]


def _under_chrome(nodes, chrome):
    return [(n["title"], name) for n in nodes for name, r in chrome.items() if _overlap(n["rect"], r)]


def _image_nodes(example):
    return [n["id"] for n in example["nodes"] if n["type"] in ("SaveImage", "PreviewImage")]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_from_the_template_browser_runs(page, path):
    example = json.loads(path.read_text())
    name = path.stem
    page.open_template(name)
    want = sorted(n["type"] for n in example["nodes"])
    _wait(f"{name}'s nodes on the canvas", lambda: sorted(n["type"] for n in page.nodes()) == want)
    page.draw()
    nodes, chrome = page.nodes(), page.chrome_rects()
    page.shot(f"{name}_02_loaded")
    assert ".side-toolbar-container" in chrome, chrome
    assert not _under_chrome(nodes, chrome), f"{name}: nodes under the sidebar / top bar at load: " \
                                             f"{_under_chrome(nodes, chrome)} ({chrome})"
    assert not _overlapping(nodes), f"{name}: overlapping nodes at load: {_overlapping(nodes)}"
    width = page.js("return window.innerWidth")
    assert all(n["rect"][0] + n["rect"][2] <= width for n in nodes), f"{name}: nodes past the right edge: {nodes}"

    n_events = page.js("return window.__lddgan.events.length")
    page.js("document.querySelector('[data-testid=\"queue-button\"] button').click()")  # the Run button
    started = _wait("the run to start", lambda: next(
        (e for e in page.js("return window.__lddgan.events")[n_events:] if e["type"] == "execution_start"), None))
    pid = started["prompt_id"]
    entry = page.server.wait(pid, timeout=600)  # /history: success or error
    events = page.js("return window.__lddgan.events")[n_events:]
    errors = [e["detail"] for e in events if e["type"] == "execution_error"]
    assert entry["status"]["status_str"] == "success" and not errors, (name, errors, entry["status"])
    _wait("the app's execution_success event", lambda: any(
        e["type"] == "execution_success" and e["prompt_id"] == pid for e in page.js("return window.__lddgan.events")))

    # every image output shows in its node, with the images /history lists for it
    image_nodes = _image_nodes(example)
    expected = {str(i): len(entry["outputs"][str(i)]["images"]) for i in image_nodes}
    assert all(expected.values()), (name, expected)
    _wait(f"{name}'s output images in the page", lambda: all(
        n["imgs"] >= expected[str(n["id"])] for n in page.nodes() if str(n["id"]) in expected), timeout=60)
    page.draw()
    nodes = page.nodes()
    page.shot(f"{name}_03_after_run")
    assert not _overlapping(nodes), f"{name}: overlapping nodes after the run: {_overlapping(nodes)}"
    assert not _under_chrome(nodes, page.chrome_rects()), f"{name}: nodes under the sidebar after the run"

    if name == B.TITLES["lddgan_finetune"]:  # the new model is listed without pressing R, and no side files
        _check_loader_list_after_the_run(page)


def _loader_values(page):
    return page.js("""const n = app.graph.nodes.find(n => n.type === 'LDDGANModelLoader');
                      return n.widgets.find(w => w.name === 'model_name').options.values;""")


def _check_loader_list_after_the_run(page):
    """The pack's frontend extension (web/) refreshes the node definitions when Fine-Tune (or Save Model) has run:
    the Model Loader offers the new model with no key pressed, and none of the side files the run left."""
    models = pathlib.Path(page.server.base) / "models" / "lddgan"
    new = B.FINETUNE_NAME + ".safetensors"
    side = sorted(str(p.relative_to(models)) for p in models.rglob("*") if p.is_file() and p.name != new)
    assert any(s.endswith(".discriminator.safetensors") for s in side), side  # the run left side files
    values = _wait("the new model in the Model Loader's list", lambda: (lambda v: v if new in v else None)(
        _loader_values(page)), timeout=60)
    page.shot("model_loader_list_after_the_run")
    assert B.SHIPPED in values
    bad = [v for v in values if v.endswith(".discriminator.safetensors") or ".cache/" in v or ".tmp-" in v]
    assert not bad, bad
    assert page.js("return app.extensions.some(e => e.name === 'lddgan.refreshModelList')")  # it was ours


def test_console_has_no_errors_from_the_pack(page):
    """Runs after the examples (same page): every console error that points at the pack fails."""
    page.logs()
    severe = [e for e in page.console if e.get("level") == "SEVERE"]
    ours = [e["message"] for e in severe if any(k in e["message"].lower() for k in OURS)
            or (not any(k in e["message"] for k in FRONTEND_OWN) and "Uncaught" in e["message"])]
    assert not ours, ours
