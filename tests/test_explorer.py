"""The explorer (python -m tinygrad_explain serve): its HTTP API on a real server on
localhost, and -- when Chromium and chromedriver are installed -- the page itself in
headless Chromium driven by Selenium.

The maps the server sends are compared with te.explain computed here for the same
input; bad uploads must give a message, never a crash; no file outside the static
folder may be served.
"""
import base64
import io
import json
import os
import shutil
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import _need as need
import numpy as np
import pytest
from PIL import Image

import tinygrad_explain as te
from tinygrad_explain import explain as X
from tinygrad_explain.apps import draw as D
from tinygrad_explain.apps import explorer
from tinygrad_explain.data import scenes

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def server(one_thread):
    ex = explorer.Explorer(threads=1, scenes=50)
    srv = explorer.make_server(ex, "127.0.0.1", 0, quiet=True)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    yield explorer.url_of(srv), ex
    srv.shutdown()
    srv.server_close()
    ex.close()


@pytest.fixture(scope="module")
def sample():
    return scenes.load_sample()


_TOKENS = {}


def token_of(url):
    """The server's per-process token (from /api/info, as the page gets it)."""
    root = url[:url.index("/", len("http://")) + 1]
    if root not in _TOKENS:
        with urllib.request.urlopen(root + "api/info", timeout=60) as r:
            _TOKENS[root] = json.loads(r.read())["token"]
    return _TOKENS[root]


def http(url, data=None, ctype="application/json"):
    """(status, parsed JSON or bytes) of a GET (data None) or POST (with the page's token)."""
    headers = {"Content-Type": ctype, "X-Explorer-Token": token_of(url)} if data is not None else {}
    req = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            status, body, kind = r.status, r.read(), r.headers.get("Content-Type", "")
    except urllib.error.HTTPError as e:
        status, body, kind = e.code, e.read(), e.headers.get("Content-Type", "")
    return status, (json.loads(body) if kind.startswith("application/json") else body)


def explain(url, **req):
    status, res = http(url + "api/explain", json.dumps(req).encode())
    return status, res


def values(res):
    v = res["values"]
    return np.frombuffer(base64.b64decode(v["float32_base64"]), "<f4").reshape(v["shape"])


def png(data_url):
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))))


def png_bytes(img):
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def png_header(width, height):
    """A PNG that only claims its size (a decompression bomb's header): signature, IHDR, IEND."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IEND", b""))


def reference(ex, picture, method, target):
    """What te.explain gives for this picture, method and target (computed here, not by the server)."""
    m, x = ex.model, te.image.load(picture, ex.model)
    if method == "grabcut":
        mask, box = X.grabcut_mask(picture, X.saliency(m, x, target)[0])
        return mask.astype(np.float32), box
    maps = {"gradient": lambda: X.gradient(m, x, target),
            "saliency": lambda: X.saliency(m, x, target),
            "deconvnet": lambda: X.gradient(m, x, target, rule="deconvnet"),
            "guided": lambda: X.gradient(m, x, target, rule="guided"),
            "smoothgrad": lambda: X.smoothgrad(m, x, target),
            "grad-x-input": lambda: X.gradient_x_input(m, x, target),
            "gradcam": lambda: X.gradcam(m, x, target),
            "guided-gradcam": lambda: X.guided_gradcam(m, x, target),
            "occlusion": lambda: X.occlusion(m, x, target, patch=8, stride=8)}
    return maps[method]()[0], None


def assert_same_map(got, want):
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * float(np.abs(want).max()))


# ---------------------------------------------------------------------------
# the HTTP API
# ---------------------------------------------------------------------------
def test_info_and_static(server):
    url, ex = server
    status, info = http(url + "api/info")
    assert status == 200
    assert info["classes"] == list(ex.model.class_names)
    assert {m["id"] for m in info["methods"]} == {"gradient", "saliency", "deconvnet", "guided", "grabcut",
                                                  "smoothgrad", "grad-x-input", "gradcam", "guided-gradcam",
                                                  "occlusion"}
    assert len(info["scenes"]) == 50 and info["scenes"][3]["id"] == "scene:3"
    status, page = http(url)
    assert status == 200 and b"<script src=\"/app.js\">" in page
    # nothing outside the static folder, however the path is spelled
    for bad in ("../setup.cfg", "..%2fsetup.cfg", "%2e%2e/%2e%2e/setup.cfg", "static/../../README.md",
                "/etc/passwd", "explorer.py", "//etc/passwd"):
        status, body = http(url + bad)
        assert status == 404, bad


@pytest.mark.parametrize("method", list(explorer.METHODS))
def test_maps_match_te_explain(server, sample, method):
    url, ex = server
    i, target = 7, 4
    status, res = explain(url, image=f"scene:{i}", method=method, target={"class": target})
    assert status == 200, res
    want, box = reference(ex, sample["images"][i], method, target)
    assert_same_map(values(res), want)
    if method == "grabcut":
        assert res["box"] == [int(v) for v in box]
        assert res["truth_box"] == [int(v) for v in sample["boxes"][i]]
    else:       # the map picture is the CLI's picture of these values
        assert np.array_equal(png(res["map"]), D.method_picture(method, values(res), sample["images"][i]))
    assert res["target"]["value"] == target
    # prediction: the model's softmax for this scene
    _, p = X.predict(ex.model, te.image.load(sample["images"][i], ex.model))
    assert res["prediction"][0]["index"] == int(p[0].argmax())
    assert abs(res["prediction"][0]["p"] - p[0].max()) < 1e-6


@pytest.mark.parametrize("target", [("conv5", 3), ("conv3", 7, 2, 4), ("fc7", 11)])
def test_neuron_targets(server, sample, target):
    """A channel (its mean over positions) or one neuron: te.explain.gradient's targets."""
    url, ex = server
    i = 12
    spec = {"layer": target[0], "channel": target[1]}
    if len(target) == 4:
        spec.update(row=target[2], col=target[3])
    for method in ("guided", "saliency", "smoothgrad", "occlusion"):
        status, res = explain(url, image=f"scene:{i}", method=method, target=spec)
        assert status == 200, res
        assert res["target"]["value"] == list(target)
        assert_same_map(values(res), reference(ex, sample["images"][i], method, target)[0])
        rows = [r["name"] for r in res["layers"]]
        assert rows[-1] == target[0]                       # the layer view stops at the target's layer
    for method in ("gradcam", "guided-gradcam"):          # Grad-CAM needs a target above its layer (relu5)
        status, res = explain(url, image=f"scene:{i}", method=method, target=spec)
        if target[0] == "fc7":
            assert status == 200 and res["target"]["value"] == list(target)
            assert_same_map(values(res), reference(ex, sample["images"][i], method, target)[0])
        else:
            assert status == 400 and "Grad-CAM" in res["error"] and "not below" in res["error"], res


def test_layer_view(server, sample):
    """Per layer the norm of dS/d(output) as model(x, keep=...) gives it; at the input it is
    the norm of te.explain.gradient; ReLU rows count what the rule passed."""
    url, ex = server
    i, target = 11, 2
    for rule_method, rule in (("saliency", "backprop"), ("guided", "guided")):
        status, res = explain(url, image=f"scene:{i}", method=rule_method, target={"class": target})
        assert status == 200
        rows = {r["name"]: r for r in res["layers"]}
        assert list(rows)[0] == "input" and list(rows)[1:] == ex.model.layer_names
        x = te.image.load(sample["images"][i], ex.model)
        g = X.gradient(ex.model, x, target, rule=rule)
        assert rows["input"]["grad_norm"] == pytest.approx(float(np.linalg.norm(g)), rel=1e-5)
        g5 = X.gradient(ex.model, x, target, rule=rule, layer="conv5")
        assert rows["conv5"]["grad_norm"] == pytest.approx(float(np.linalg.norm(g5)), rel=1e-5)
        assert rows[ex.model.layer_names[-1]]["grad_norm"] == pytest.approx(1.0)
        r1 = rows["relu1"]
        h = ex.model(x, until="conv1").numpy()
        assert r1["active"] == pytest.approx(float((h > 0).mean()))
        assert 0 < r1["passed"] <= r1["arrived"] <= 1
        if rule == "backprop":
            assert r1["passed"] <= r1["active"]


def test_bad_requests_answer_400_and_the_server_lives_on(server):
    url, _ = server
    for data, ctype, code, want in [
        (b"not an image at all", "application/octet-stream", 415, "not a PNG, JPEG"),
        (b"", "application/octet-stream", 400, "empty"),
        (png_bytes(np.zeros((4, 4, 3), np.uint8))[:45], "image/png", 400, "cannot read image"),   # truncated
    ]:
        status, res = http(url + "api/upload", data, ctype)
        assert status == code and want in res["error"], res
        assert "/tmp" not in res["error"] and "tge-explorer" not in res["error"]   # no server paths leak
    # te.image's limits apply to uploads: checked from the header, before decoding
    for data, want in [(png_header(20000, 20000), "pixels"),
                       (png_bytes(np.zeros((10, 1000, 3), np.uint8)), "elongated")]:
        status, res = http(url + "api/upload", data, "image/png")
        assert status == 400 and want in res["error"], res
    status, res = http(url + "api/upload", b"x" * (explorer.MAX_UPLOAD_BYTES + 1), "image/png")
    assert status == 413 and "limit" in res["error"]
    status, res = http(url + "api/explain", b"{nope", "application/json")
    assert status == 400 and "not JSON" in res["error"]
    for req, want in [({"image": "scene:0", "method": "bogus"}, "unknown method"),
                      ({"image": "scene:999"}, "no scene"),
                      ({"image": "/etc/passwd"}, "unknown image"),
                      ({"image": "upload:nothere"}, "no longer kept"),
                      ({"image": "scene:0", "target": {"class": 10}}, "out of range"),
                      ({"image": "scene:0", "target": {"class": "Handbag"}}, "unknown class"),
                      ({"image": "scene:0", "target": {"layer": "conv5", "channel": 999}}, "out of range"),
                      ({"image": "scene:0", "target": {"layer": "conv9", "channel": 0}}, "unknown layer")]:
        status, res = explain(url, **req)
        assert status == 400 and want in res["error"], (req, res)
    status, res = explain(url, image="scene:0")
    assert status == 200


def test_upload_then_explain(server, sample):
    url, ex = server
    big = np.asarray(Image.fromarray(sample["images"][5]).resize((150, 120)))     # any size: te.image.load's way
    status, res = http(url + "api/upload", png_bytes(big), "image/png")
    assert status == 200 and res["image"].startswith("upload:")
    status, out = explain(url, image=res["image"], method="saliency", target={"class": 1})
    assert status == 200
    assert_same_map(values(out), X.saliency(ex.model, te.image.load(big, ex.model), 1)[0])
    assert not hasattr(ex, "tmp")                       # decoded in memory: no temporary files at all


def test_serve_command_prints_the_address():
    """The real command: binds 127.0.0.1 by default and prints where."""
    import subprocess
    import sys
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    p = subprocess.Popen([sys.executable, "-m", "tinygrad_explain", "serve", "--port", "0", "--quiet"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = p.stdout.readline()
        assert line.startswith("explorer: serving on http://127.0.0.1:"), line + p.stderr.read()
        addr = line.split()[3]
        status, info = http(addr + "api/info")
        assert status == 200 and len(info["classes"]) == 10
    finally:
        p.terminate()
        try:
            assert p.wait(30) == 0                   # SIGTERM: a clean exit, status 0
        finally:
            if p.poll() is None:                     # never leave a server behind, even when failing
                p.kill()
                p.wait()


# ---------------------------------------------------------------------------
# the page in a real browser
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    missing = [n for n, p in (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER)) if p is None]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("selenium (pip install -e .[test])")
    if missing:
        why = (f"browser test needs {', '.join(missing)} "
               "(apt-get install -y chromium chromium-driver; pip install -e .[test])")
        need.missing(why)                          # in CI: a failure
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,1500",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        opts.add_argument(flag)
    drv = webdriver.Chrome(options=opts, service=Service(executable_path=CHROMEDRIVER))
    drv.set_page_load_timeout(60)
    yield drv
    drv.quit()


def wait_for(drv, condition, what, timeout=60):
    t0 = time.time()
    while time.time() - t0 < timeout:
        v = drv.execute_script(f"return {condition};")
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what} ({condition})")


def act(drv, action):
    """Run ``action`` (which makes the page ask the server) and wait for the answer; the page's result."""
    n = drv.execute_script("return window.explorer.completed;")
    action()
    wait_for(drv, f"window.explorer.completed > {n}", "the page's answer")
    return drv.execute_script("return window.explorer.last;")


def test_page_in_chromium(server, browser, sample, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select
    url, ex = server
    drv = browser
    drv.get(url)
    wait_for(drv, "window.explorer && window.explorer.ready && window.explorer.completed > 0", "the first map")
    first = drv.execute_script("return window.explorer.last;")
    assert first["image"] == "scene:0" and first["method"] == "saliency"

    # pick a scene: saliency of its predicted class, as te.explain computes it
    i = 9
    res = act(drv, lambda: Select(drv.find_element(By.ID, "scene")).select_by_value(f"scene:{i}"))
    pred = res["prediction"][0]["index"]
    assert res["image"] == f"scene:{i}" and res["target"]["value"] == pred
    assert_same_map(values(res), reference(ex, sample["images"][i], "saliency", pred)[0])
    shown = drv.find_element(By.ID, "map").get_attribute("src")
    assert shown == res["map"]
    assert pred == int(X.predict(ex.model, te.image.load(sample["images"][i], ex.model))[1][0].argmax())
    assert ex.model.class_names[pred] in drv.find_element(By.ID, "prediction").text

    # switch the method: guided backprop; the map changes and matches
    res2 = act(drv, lambda: drv.find_element(By.CSS_SELECTOR, "input[name=method][value=guided]").click())
    assert res2["method"] == "guided" and res2["map"] != res["map"]
    assert_same_map(values(res2), reference(ex, sample["images"][i], "guided", pred)[0])

    # switch the class; the map changes and matches
    other = (pred + 3) % 10
    res3 = act(drv, lambda: Select(drv.find_element(By.ID, "class")).select_by_value(str(other)))
    assert res3["target"]["value"] == other and res3["map"] != res2["map"]
    assert_same_map(values(res3), reference(ex, sample["images"][i], "guided", other)[0])
    assert drv.find_element(By.ID, "map").get_attribute("src") == res3["map"]

    # a neuron target: channel 3 of conv5 (its mean), as te.explain.gradient takes it
    act(drv, lambda: drv.find_element(By.ID, "kind-neuron").click())
    act(drv, lambda: Select(drv.find_element(By.ID, "layer")).select_by_value("conv5"))
    resn = act(drv, lambda: drv.execute_script(
        "const c = document.getElementById('channel'); c.value = '3'; c.dispatchEvent(new Event('change'));"))
    assert resn["target"]["value"] == ["conv5", 3] and resn["map"] != res3["map"]
    assert_same_map(values(resn), reference(ex, sample["images"][i], "guided", ("conv5", 3))[0])
    act(drv, lambda: drv.find_element(By.ID, "kind-class").click())

    # GrabCut: the box on the page is te.explain's box
    res4 = act(drv, lambda: drv.find_element(By.CSS_SELECTOR, "input[name=method][value=grabcut]").click())
    _, box = reference(ex, sample["images"][i], "grabcut", other)
    assert res4["box"] == [int(v) for v in box]
    assert "GrabCut box" in drv.find_element(By.ID, "map-info").text
    # the layer table is filled
    rows = drv.find_elements(By.CSS_SELECTOR, "#flow .layer")
    assert len(rows) == len(ex.model.layer_names) + 1

    # a bad file: a message on the page, the previous map stays, the server still answers
    bad = tmp_path / "holiday.png"
    bad.write_bytes(b"this is not a PNG")
    upload = drv.find_element(By.ID, "upload")
    act(drv, lambda: upload.send_keys(str(bad)))
    err = drv.find_element(By.ID, "error")
    assert err.is_displayed() and "holiday.png" in err.text and "not a PNG, JPEG" in err.text
    assert drv.find_element(By.ID, "map").get_attribute("src") == res4["map"]

    # a good upload clears the message
    good = tmp_path / "scene.png"
    good.write_bytes(png_bytes(sample["images"][21]))
    res5 = act(drv, lambda: upload.send_keys(str(good)))
    assert res5["image"].startswith("upload:") and not err.is_displayed()
    assert_same_map(values(res5), reference(ex, sample["images"][21], "grabcut", other)[0])

    # back to a scene, its predicted class and the saliency method, for the screenshot
    act(drv, lambda: drv.find_element(By.CSS_SELECTOR, "input[name=method][value=saliency]").click())
    act(drv, lambda: Select(drv.find_element(By.ID, "class")).select_by_value(""))
    act(drv, lambda: Select(drv.find_element(By.ID, "scene")).select_by_value("scene:3"))
    shot = tmp_path / "explorer.png"
    drv.save_screenshot(str(shot))
    im = np.asarray(Image.open(shot))
    assert im.shape[0] > 400 and im.std() > 10            # a page, not a blank
    dest = os.environ.get("TGE_EXPLORER_SCREENSHOT")      # e.g. docs/explorer.png (README's picture)
    if dest:
        shutil.copyfile(shot, dest)
