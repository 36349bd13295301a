"""viewer.html: its data against the method's shading, and the page in a real headless
Chromium (software WebGL), driven over the DevTools protocol: the mesh is drawn, a mouse
drag orbits it, the light slider relights it, and nothing is fetched from the network."""

import base64
import fcntl
import io
import json
import math
import os
import re
import select
import shutil
import subprocess
import time

import numpy as np
import pytest
import torch
from PIL import Image

from gan2shape.export import grid_mesh
from gan2shape.export.mesh import MESH_MARGIN
from gan2shape.export.viewer import model_light, viewer_payload
from gan2shape.recon.reconstructor import ReconResult
from gan2shape.render.shading import lambertian_shading, normals_from_depth

S = 64


def synthetic_result(size=S) -> ReconResult:
    """A ReconResult of a bump (a spherical cap) on a plane, with a colour-gradient albedo."""
    r = torch.linspace(-1, 1, size)
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    depth = 1.0 - 0.03 * (1 - (xx ** 2 + yy ** 2) / 0.6).clamp(min=0).sqrt()
    albedo = torch.stack([xx, yy, -0.5 * (xx + yy)]) * 0.8
    normals = normals_from_depth(depth[None])[0]
    light = {"ambient": 0.3, "diffuse": 0.7, "direction": [0.3, -0.2, 0.93]}
    shading = lambertian_shading(normals[None], torch.tensor([light["direction"]]),
                                 torch.tensor([0.3]), torch.tensor([0.7]))[0]
    canonical = (albedo / 2 + 0.5) * shading * 2 - 1
    frames = canonical.expand(3, 3, size, size)
    return ReconResult(
        name="bump", image=canonical, depth=depth, view_depth=depth,
        view_mask=torch.ones(size, size), normals=normals, albedo=albedo, shading=shading,
        canonical=canonical, recon=canonical, view=torch.zeros(6), light=light, mask=None,
        sequences={k: frames for k in
                   ("rotation_mesh", "rotation_gan", "relight_mesh", "relight_gan")},
        metrics={})


def test_model_light_gives_the_methods_shading_on_the_mesh():
    """ambient + diffuse * <n_mesh, l_mesh> at the mesh's vertices equals the method's
    shading of the depth map at their pixels (a tilted plane, whose inverse depth is affine
    in the pixel coordinates: vertex normals and central differences are both exact)."""
    h, w = 12, 14
    rows, cols = torch.meshgrid(torch.arange(h).double(), torch.arange(w).double(),
                                indexing="ij")
    depth = 1 / (1.0 + 0.004 * cols - 0.003 * rows)
    light_cam = torch.tensor([[0.4, -0.3, 0.866]], dtype=torch.float64)
    shading = lambertian_shading(normals_from_depth(depth[None]), light_cam,
                                 torch.tensor([0.2]).double(), torch.tensor([0.8]).double())[0, 0]
    mesh = grid_mesh(depth, margin=MESH_MARGIN)
    mr, mc = MESH_MARGIN
    n_grid = (h - 2 * mr) * (w - 2 * mc)
    cos = mesh["normals"][:n_grid] @ np.array(model_light(light_cam[0]))
    expected = shading[mr:h - mr, mc:w - mc].reshape(-1).numpy()
    np.testing.assert_allclose(0.2 + 0.8 * np.maximum(cos, 0), expected, atol=2e-4)


def test_payload_round_trips_the_mesh():
    mesh = grid_mesh(1.0 + 0.01 * torch.rand(9, 11), margin=MESH_MARGIN)
    data = viewer_payload(mesh, {"ambient": 0.1, "diffuse": 0.9, "direction": [0, 0, 1]},
                          {"albedo": b"\x89PNG"})
    arrays = {k: base64.b64decode(data["mesh"][k]) for k in ("vertices", "uvs", "normals", "faces")}
    np.testing.assert_array_equal(np.frombuffer(arrays["vertices"], "<f4").reshape(-1, 3),
                                  mesh["vertices"])
    np.testing.assert_array_equal(np.frombuffer(arrays["uvs"], "<f4").reshape(-1, 2), mesh["uvs"])
    np.testing.assert_array_equal(np.frombuffer(arrays["faces"], "<u2").reshape(-1, 3),
                                  mesh["faces"])
    normals = np.frombuffer(arrays["normals"], "i1").reshape(-1, 3) / 127
    np.testing.assert_allclose(normals, mesh["normals"], atol=0.5 / 127 + 1e-6)
    assert data["mesh"]["index_type"] == "uint16"
    assert data["light"]["direction"] == [0.0, 0.0, 1.0]
    assert data["images"]["albedo"] == "data:image/png;base64," + base64.b64encode(
        b"\x89PNG").decode()


def test_export_writes_a_small_self_contained_viewer(tmp_path):
    synthetic_result().export(tmp_path)
    page = (tmp_path / "viewer.html").read_text()
    assert (tmp_path / "viewer.html").stat().st_size < 1_000_000
    # nothing external: no src/href to anything but data: URIs, no URL schemes at all
    assert not re.search(r"https?:|//cdn|\bimport\b|fetch\(|XMLHttpRequest", page)
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:)""", page)
    assert page.count("data:image/png;base64,") == 3


# --- a minimal DevTools-protocol client over --remote-debugging-pipe ----------------------

def find_chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Chromium:
    """Headless Chromium speaking the DevTools protocol on fds 3 (commands) and 4 (replies),
    NUL-separated JSON messages; one page session."""

    def __init__(self, exe, profile, width=1000, height=800):
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        # move the child's ends above 4 so dup2 onto 3 and 4 cannot clobber them
        child_r = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 10)
        child_w = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 10)
        os.close(to_chrome_r)
        os.close(from_chrome_w)

        def pipes_on_3_and_4():
            os.dup2(child_r, 3)
            os.dup2(child_w, 4)

        args = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-extensions",
                "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
                "--allow-file-access-from-files", f"--window-size={width},{height}",
                f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"]
        self.proc = subprocess.Popen(args, preexec_fn=pipes_on_3_and_4, close_fds=False,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        os.close(child_r)
        os.close(child_w)
        self._buffer = b""
        self._next_id = 0
        self.events = []
        page = next(t for t in self.call("Target.getTargets")["targetInfos"]
                    if t["type"] == "page")
        self.session = self.call("Target.attachToTarget", targetId=page["targetId"],
                                 flatten=True)["sessionId"]
        self.page("Emulation.setDeviceMetricsOverride", width=width, height=height,
                  deviceScaleFactor=1, mobile=False)

    def _read_message(self, deadline):
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_chrome], [], [], left)[0]:
                raise TimeoutError("no reply from chromium")
            chunk = os.read(self._from_chrome, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method, session=False, timeout=20, **params):
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def page(self, method, **params):
        return self.call(method, session=True, **params)

    def evaluate(self, expression):
        result = self.page("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self) -> np.ndarray:
        png = base64.b64decode(self.page("Page.captureScreenshot", format="png")["data"])
        return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)

    def close(self):
        try:
            self.call("Browser.close", timeout=5)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_chrome)
        os.close(self._from_chrome)


@pytest.fixture
def chromium(tmp_path):
    exe = find_chromium()
    if exe is None:
        message = "chromium is not installed (apt-get install -y chromium)"
        if os.environ.get("GAN2SHAPE_REQUIRE_CHROMIUM"):
            pytest.fail(message)
        pytest.skip(message)
    browser = Chromium(exe, tmp_path / "profile")
    yield browser
    browser.close()


def _wait_frames(browser, at_least, timeout=10):
    """Wait until the viewer has drawn at_least frames, then one more animation frame."""
    deadline = time.monotonic() + timeout
    while (browser.evaluate("window.gan2shapeViewer ? window.gan2shapeViewer.frames : 0")
           < at_least):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the viewer drew fewer than {at_least} frames")
        time.sleep(0.05)
    browser.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    return browser.evaluate("window.gan2shapeViewer.frames")


def _rect(browser, selector):
    return browser.evaluate(
        f"(() => {{ const r = document.querySelector('{selector}').getBoundingClientRect();"
        " return [r.left, r.top, r.width, r.height]; })()")


def _crop(shot, rect):
    x, y, w, h = (int(round(v)) for v in rect)
    return shot[y:y + h, x:x + w]


def _drag(browser, x0, y0, x1, y1, steps=8):
    browser.page("Input.dispatchMouseEvent", type="mouseMoved", x=x0, y=y0)
    browser.page("Input.dispatchMouseEvent", type="mousePressed", x=x0, y=y0,
                 button="left", buttons=1, clickCount=1)
    for i in range(1, steps + 1):
        t = i / steps
        browser.page("Input.dispatchMouseEvent", type="mouseMoved", x=x0 + t * (x1 - x0),
                     y=y0 + t * (y1 - y0), button="left", buttons=1)
    browser.page("Input.dispatchMouseEvent", type="mouseReleased", x=x1, y=y1,
                 button="left", buttons=0, clickCount=1)


def test_viewer_draws_orbits_and_relights_in_chromium(chromium, tmp_path):
    result_dir = tmp_path / "bump"
    synthetic_result().export(result_dir)
    browser = chromium
    for domain in ("Page.enable", "Runtime.enable", "Network.enable"):
        browser.page(domain)
    browser.page("Page.navigate", url=(result_dir / "viewer.html").resolve().as_uri())
    frames = _wait_frames(browser, 1)
    assert browser.evaluate("document.getElementById('error').textContent") == ""

    canvas = _rect(browser, "canvas")
    first = _crop(browser.screenshot(), canvas)
    background = np.array([30, 34, 38])  # the canvas's clear colour
    mesh_pixels = np.abs(first - background).sum(-1) > 12
    assert mesh_pixels.mean() > 0.15, "the mesh covers too little of the canvas"
    colours = {tuple(c) for c in first[mesh_pixels].reshape(-1, 3)}
    assert len(colours) > 500, "the mesh is drawn without its texture or shading"
    # the images beside the canvas are shown at their size
    for name in ("depth", "normal", "albedo"):
        assert browser.evaluate(f"document.getElementById('image-{name}').naturalWidth") == S

    x, y, w, h = canvas
    _drag(browser, x + w / 2, y + h / 2, x + w / 2 + 120, y + h / 2 + 40)
    frames = _wait_frames(browser, frames + 1)
    assert browser.evaluate("window.gan2shapeViewer.yaw") == pytest.approx(1.2, abs=0.01)
    orbited = _crop(browser.screenshot(), canvas)
    assert (np.abs(orbited - first).sum(-1) > 30).mean() > 0.05, "the drag did not turn the mesh"

    # click near the light slider's left end: the light moves to the viewer's left
    sx, sy, sw, sh = _rect(browser, "#light-azimuth")
    before = browser.evaluate("window.gan2shapeViewer.light")
    browser.page("Input.dispatchMouseEvent", type="mousePressed", x=sx + 0.08 * sw,
                 y=sy + sh / 2, button="left", buttons=1, clickCount=1)
    browser.page("Input.dispatchMouseEvent", type="mouseReleased", x=sx + 0.08 * sw,
                 y=sy + sh / 2, button="left", buttons=0, clickCount=1)
    _wait_frames(browser, frames + 1)
    after = browser.evaluate("window.gan2shapeViewer.light")
    assert after[0] < -0.5 < before[0] and math.isclose(np.linalg.norm(after), 1, abs_tol=1e-6)
    relit = _crop(browser.screenshot(), canvas)
    changed = np.abs(relit - orbited).sum(-1) > 30
    assert changed.mean() > 0.05, "moving the light did not relight the mesh"
    # relighting changes colours, not the silhouette
    silhouette = lambda shot: np.abs(shot - background).sum(-1) > 3  # noqa: E731
    assert (silhouette(relit) != silhouette(orbited)).mean() < 0.02

    errors = [e for e in browser.events if e.get("method") == "Runtime.exceptionThrown"]
    assert not errors, errors
    urls = [e["params"]["request"]["url"] for e in browser.events
            if e.get("method") == "Network.requestWillBeSent"]
    assert urls and all(u.startswith(("file:", "data:")) for u in urls), urls
