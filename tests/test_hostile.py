"""The explorer under hostile input (issue #32): a standing attack suite.

One real server (``python -m tinygrad_explain serve --port 0``) in a subprocess on
127.0.0.1, so that its peak memory (``VmHWM``) and thread count (``Threads``) can be
read from /proc/<pid>/status, and its whole log checked at the end.  Every class of
the issue is thrown at it: decompression-bomb uploads (a peak-memory bound),
half-sent requests (a thread bound, and the page still answers), foreign Host and
Origin (403), format confusion (415), malformed JSON and malformed HTTP (4xx with a
one-line JSON message, never a 500) -- and the log must hold no traceback.
All traffic goes to 127.0.0.1; every loop is bounded in count and time.
"""
from __future__ import annotations

import io
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import pytest
from PIL import Image

from tinygrad_explain.apps import explorer

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc/<pid>/status")


# ---------------------------------------------------------------------------
# the server, and raw HTTP to it
# ---------------------------------------------------------------------------
class Server:
    def __init__(self, tmp):
        self.log_path = tmp / "server.log"
        self.log = open(self.log_path, "w")
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen([sys.executable, "-m", "tinygrad_explain", "serve", "--port", "0"],
                                     stdout=subprocess.PIPE, stderr=self.log, text=True, env=env)
        line = self.proc.stdout.readline()
        assert line.startswith("explorer: serving on http://127.0.0.1:"), line + self.log_path.read_text()
        self.port = int(re.search(r":(\d+)/", line).group(1))
        self.host = f"127.0.0.1:{self.port}"
        self.token = self.get("/api/info")[2]["token"]

    def status(self, key) -> int:
        """A number from /proc/<pid>/status (VmHWM, VmRSS in kB; Threads)."""
        text = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(rf"^{key}:\s+(\d+)", text, re.M).group(1))

    def raw(self, data: bytes, timeout=60.0):
        """Send ``data`` on a fresh connection; (status, headers, body) of the answer."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            s.sendall(data)
            chunks = []
            while True:
                b = s.recv(1 << 16)
                if not b:
                    break
                chunks.append(b)
        reply = b"".join(chunks)
        head, _, body = reply.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
        return status, head.decode("latin-1"), body

    def request(self, method, path, body=b"", headers=None, token=True):
        h = {"Host": self.host}
        if method == "POST":
            h["Content-Length"] = str(len(body))
            if token:
                h["X-Explorer-Token"] = self.token
        h.update(headers or {})
        head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items()) + "\r\n"
        status, head, out = self.raw(head.encode("latin-1") + body)
        return status, head, (json.loads(out) if "application/json" in head else out)

    def get(self, path, headers=None):
        return self.request("GET", path, headers=headers)

    def post(self, path, body, headers=None, token=True):
        return self.request("POST", path, body, headers, token)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("hostile"))
    yield srv
    srv.stop()


def assert_one_line_error(status, head, body, codes=range(400, 500)):
    assert status in codes, (status, head, body)
    assert isinstance(body, dict) and set(body) == {"error"}, body
    assert "\n" not in body["error"] and "Traceback" not in body["error"] and len(body["error"]) < 400, body


# ---------------------------------------------------------------------------
# bombs
# ---------------------------------------------------------------------------
def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width, height, bit_depth=16, colour=0):
    """A real, complete PNG of zeros (16-bit grey by default), compressed in streaming
    blocks: 10000x10000 at 16 bits is 200 MB of pixels in ~200 KB."""
    per_px = {0: 1, 2: 3, 4: 2, 6: 4}[colour] * bit_depth // 8
    row = b"\x00" * (1 + width * per_px)
    z = zlib.compressobj(9)
    parts = [z.compress(row * 64) for _ in range(height // 64)] + [z.compress(row * (height % 64)), z.flush()]
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, colour,
                                                                   0, 0, 0))
            + png_chunk(b"IDAT", b"".join(parts)) + png_chunk(b"IEND", b""))


def encoded(img: Image.Image, fmt, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_bomb_uploads_stay_within_the_memory_budget(server):
    """The worst uploads: each refused from its header or decoded within the budget
    (16 M pixels, at most 4 bytes each in Pillow); two at once are decoded one after
    the other.  The server's peak RSS may grow by at most 400 MB over the whole run
    (before the budget: 3 GB for the 16-bit PNG, 3.4-3.7 GB for the float and int32
    TIFFs, 5.1 GB for two at once)."""
    ok = encoded(Image.new("RGB", (300, 200), (90, 120, 200)), "PNG")
    status, _, res = server.post("/api/upload", ok)
    assert status == 200, res
    status, _, res = server.post("/api/explain", json.dumps({"image": res["image"], "method": "saliency"}).encode())
    assert status == 200, res
    before = server.status("VmHWM")
    side = 4000                              # 16 M pixels: the largest raster the budget allows
    cases = [
        ("16-bit PNG 10000x10000", png_bomb(10000, 10000), 400, "pixels"),
        ("RGBA PNG 8000x8000", png_bomb(8000, 8000, 8, 6), 400, "pixels"),
        ("float TIFF 4000x4000", encoded(Image.new("F", (side, side), 0.5), "TIFF", compression="tiff_adobe_deflate"),
         200, None),
        ("int32 TIFF 4000x4000", encoded(Image.new("I", (side, side), 70000), "TIFF",
                                         compression="tiff_adobe_deflate"), 200, None),
        ("16-bit PNG 4000x4000", png_bomb(side, side), 200, None),
        ("RGBA PNG 4000x4000", png_bomb(side, side, 8, 6), 200, None),
        ("GIF 4000x4000", encoded(Image.new("P", (side, side), 3), "GIF"), 200, None),
        ("JPEG 6000x4000 (decoded at 1/2)", encoded(Image.new("RGB", (6000, 4000), (200, 10, 10)), "JPEG"), 200,
         None),
    ]
    for name, data, code, want in cases:
        assert len(data) < explorer.MAX_UPLOAD_BYTES, name
        status, head, res = server.post("/api/upload", data, {"Content-Type": "application/octet-stream"})
        if code == 200:
            assert status == 200 and res["image"].startswith("upload:"), (name, status, res)
        else:
            assert_one_line_error(status, head, res, (code,))
            assert want in res["error"], (name, res)
    # two bombs at once: the decoding queue takes them one after the other
    results = []
    bomb = encoded(Image.new("F", (side, side), 0.25), "TIFF", compression="tiff_adobe_deflate")
    threads = [threading.Thread(target=lambda: results.append(server.post("/api/upload", bomb)[0]))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(results) == [200, 200], results
    grown_mb = (server.status("VmHWM") - before) / 1024
    print(f"explorer peak RSS growth over the bombs: {grown_mb:.0f} MB")
    assert grown_mb < 400, f"the bombs raised the server's peak memory by {grown_mb:.0f} MB"


def test_a_full_queue_answers_503(server):
    """More uploads at once than the decoding queue holds (1 working + QUEUE_WAITING):
    the headers of all arrive first, so exactly that many get a place and the others a
    503 at once (their bodies read and dropped, never held); none is a 500."""
    big = encoded(Image.new("F", (4000, 4000), 0.5), "TIFF", compression="tiff_adobe_deflate")
    places = 1 + explorer.QUEUE_WAITING
    n = places + 4
    head = (f"POST /api/upload HTTP/1.1\r\nHost: {server.host}\r\nX-Explorer-Token: {server.token}\r\n"
            f"Content-Length: {len(big)}\r\n\r\n").encode()
    socks = [socket.create_connection(("127.0.0.1", server.port), timeout=120) for _ in range(n)]
    try:
        for s in socks:
            s.sendall(head)
        time.sleep(1.0)                          # every request's headers are in: places taken
        statuses = []
        for s in socks:
            s.sendall(big)
        for s in socks:
            reply = b""
            while True:
                b = s.recv(1 << 16)
                if not b:
                    break
                reply += b
            statuses.append(int(reply.split(b" ", 2)[1]))
    finally:
        for s in socks:
            s.close()
    assert sorted(statuses) == [200] * places + [503] * (n - places), statuses


# ---------------------------------------------------------------------------
# half-sent requests
# ---------------------------------------------------------------------------
def test_half_open_connections_are_bounded(server):
    """300 connections that send half a request and wait: the server's threads stay
    within MAX_CONNECTIONS (plus its own few), and a normal request is still answered
    at once (it takes the place of the oldest half-sent one)."""
    base = server.status("Threads")
    socks = []
    try:
        deadline = time.monotonic() + 30
        for _ in range(300):
            s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            s.sendall(f"POST /api/explain HTTP/1.1\r\nHost: {server.host}\r\nContent-Le".encode())
            socks.append(s)
            assert time.monotonic() < deadline
        time.sleep(0.5)
        peak = server.status("Threads")
        t0 = time.monotonic()
        status, _, info = server.get("/api/info")
        answered = time.monotonic() - t0
        most = server.status("Threads")
        print(f"server threads: {base} before, {peak} and {most} with 300 half-open connections; "
              f"a normal request answered in {answered:.2f} s")
        assert status == 200 and info["classes"], info
        assert max(peak, most) <= base + explorer.MAX_CONNECTIONS + 2, (base, peak, most)
        assert answered < 5
    finally:
        for s in socks:
            s.close()


def test_a_slow_request_is_cut_off(server):
    """Headers trickling in for longer than HEADER_TIMEOUT: the connection is closed."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=explorer.HEADER_TIMEOUT + 20) as s:
        s.sendall(b"GET / HTTP/1.1\r\n")
        t0 = time.monotonic()
        got = b""
        while time.monotonic() - t0 < explorer.HEADER_TIMEOUT + 15:
            try:
                s.sendall(b"X: y\r\n")
            except OSError:
                break
            try:
                s.settimeout(1.0)
                b = s.recv(4096)
                if not b:
                    break
                got += b
            except socket.timeout:
                continue
            except OSError:
                break
        waited = time.monotonic() - t0
    assert waited < explorer.HEADER_TIMEOUT + 5, waited
    assert b" 500 " not in got


# ---------------------------------------------------------------------------
# who may ask
# ---------------------------------------------------------------------------
def test_foreign_host_and_origin_are_refused(server):
    body = json.dumps({"image": "scene:0", "method": "gradient", "layers": False}).encode()
    for headers in [{"Host": "evil.example"}, {"Host": f"evil.example:{server.port}"},
                    {"Host": f"127.0.0.1.evil.example:{server.port}"}]:
        assert_one_line_error(*server.get("/api/info", headers), (403,))
        assert_one_line_error(*server.post("/api/explain", body, headers), (403,))
    for origin in ["http://evil.example", "null", f"http://evil.example:{server.port}",
                   f"https://127.0.0.1:{server.port}"]:
        h = {"Origin": origin, "Content-Type": "text/plain"}       # a "simple" cross-site request
        assert_one_line_error(*server.post("/api/explain", body, h), (403,))
    assert_one_line_error(*server.post("/api/explain", body, {"Sec-Fetch-Site": "cross-site"}), (403,))
    assert_one_line_error(*server.post("/api/explain", body, token=False), (403,))
    assert_one_line_error(*server.post("/api/explain", body, {"X-Explorer-Token": "guess"}), (403,))
    # this server's own names are served
    for host in (server.host, f"localhost:{server.port}"):
        status, _, res = server.post("/api/explain", body, {"Host": host, "Origin": f"http://{host}"})
        assert status == 200 and res["method"] == "gradient", res


# ---------------------------------------------------------------------------
# format confusion
# ---------------------------------------------------------------------------
EPS = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\n%%EndComments\n"
       b"newpath 0 0 moveto 64 64 lineto stroke\nshowpage\n%%EOF\n")


def test_format_confusion_is_refused(server):
    """Only PNG, JPEG, WebP, BMP, GIF and TIFF of sane depth are decoded: EPS (which
    Pillow would hand to Ghostscript) and the rest are 415, whatever the name says."""
    lab = encoded(Image.new("LAB", (8, 8)), "TIFF")
    cases = {"EPS": EPS, "EPS with a PNG signature after it": EPS + b"\x89PNG\r\n\x1a\n",
             "PDF": b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF",
             "SVG": b"<svg xmlns='http://www.w3.org/2000/svg' width='10' height='10'/>",
             "PSD": b"8BPS\x00\x01" + b"\x00" * 40,
             "ICO": encoded(Image.new("RGB", (16, 16)), "ICO"), "PCX": encoded(Image.new("RGB", (8, 8)), "PCX"),
             "TGA": encoded(Image.new("RGB", (8, 8)), "TGA"), "LAB TIFF": lab,
             "HTML": b"<html><script>alert(1)</script></html>"}
    for name, data in cases.items():
        status, head, res = server.post("/api/upload", data, {"Content-Type": "image/png"})
        assert_one_line_error(status, head, res, (415,))
    # an accepted format with a lying header is a 400, not a crash
    bmp = bytearray(encoded(Image.new("RGB", (8, 8)), "BMP"))
    bmp[18:26] = struct.pack("<ii", 100000, 100000)
    assert_one_line_error(*server.post("/api/upload", bytes(bmp)), (400,))
    for data in (png_bomb(64, 64)[:60], encoded(Image.new("RGB", (64, 64)), "JPEG")[:300],
                 encoded(Image.new("RGB", (64, 64)), "WEBP")[:40]):
        assert_one_line_error(*server.post("/api/upload", data), (400, 415))


# ---------------------------------------------------------------------------
# malformed requests
# ---------------------------------------------------------------------------
MALFORMED_JSON = [
    b"{nope", b"[]", b"null", b'"scene:0"', b"\xff\xfe{}", b"[" * 30000, b'{"a":' * 12000,
    b'{"method": ["gradient"]}', b'{"method": {"x": 1}}', b'{"method": null}',
    b'{"image": ["scene:0"]}', b'{"image": "scene:' + b"9" * 5000 + b'"}', b'{"image": 3}',
    b'{"target": {"class": ' + b"9" * 5000 + b"}}", b'{"target": {"class": 1e400}}',
    b'{"target": {"class": Infinity}}', b'{"target": {"class": NaN}}', b'{"target": {"class": -Infinity}}',
    b'{"target": {"class": true}}', b'{"target": {"class": 2.5}}', b'{"target": {"class": [1]}}',
    b'{"target": {"layer": "conv1", "channel": 3.7}}', b'{"target": {"layer": "conv1", "channel": "3"}}',
    b'{"target": {"layer": "conv1", "channel": 0, "row": 1}}', b'{"target": {"layer": "conv1", "channel": 0, '
    b'"col": 1}}', b'{"target": {"layer": "conv1", "channel": 0, "row": 99999, "col": 0}}',
    b'{"target": {"layer": "conv1", "channel": -1}}', b'{"target": {"layer": ["conv1"], "channel": 0}}',
    b'{"target": {"layer": "conv1"}}', b'{"target": {"layer": "fc8", "channel": 0, "row": 0, "col": 0}}',
    b'{"target": [1, 2]}', b'{"target": "conv1"}', b'{"target": {"class": 1, "layer": "conv1"}}',
    b'{"layers": "false"}', b'{"layers": 0}', b'{"bogus": 1}', b'{"image": "scene:0", "image": {}}',
]


def test_malformed_json_is_a_one_line_400(server):
    """Every malformed explain request is a 400 with one line (before: 500 for a method
    given as a list, 5000-digit numbers, Infinity, row without col, deep nesting;
    channel 3.7 silently 3, "layers": "false" true)."""
    for body in MALFORMED_JSON:
        status, head, res = server.post("/api/explain", body)
        assert_one_line_error(status, head, res, (400,))
    status, _, res = server.post("/api/explain", b'{"image": "scene:1", "layers": false, '
                                                 b'"target": {"layer": "conv1", "channel": 3, "row": 2, "col": 5}}')
    assert status == 200 and res["target"]["value"] == ["conv1", 3, 2, 5] and res["layers"] == [], res


MALFORMED_HTTP = [
    b"\r\n\r\n", b"GARBAGE\r\n\r\n", b"GET\r\n\r\n", b"GET / HTTP/2.0\r\nHost: H\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: H\r\nno colon here\r\n\r\n", b"FOO / HTTP/1.1\r\nHost: H\r\n\r\n",
    b"DELETE /api/info HTTP/1.1\r\nHost: H\r\n\r\n", b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 200 + b"\r\n",
    b"GET /../../etc/passwd HTTP/1.1\r\nHost: H\r\n\r\n", b"GET /%2e%2e/setup.cfg HTTP/1.1\r\nHost: H\r\n\r\n",
    b"GET / HTTP/1.1\r\n\r\n", b"GET / HTTP/1.1\r\nHost: H\r\nHost: H\r\n\r\n",
    b"POST /api/explain HTTP/1.1\r\nHost: H\r\nX-Explorer-Token: T\r\n\r\n",
    b"POST /api/explain HTTP/1.1\r\nHost: H\r\nX-Explorer-Token: T\r\nContent-Length: -1\r\n\r\n",
    b"POST /api/explain HTTP/1.1\r\nHost: H\r\nX-Explorer-Token: T\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n",
    b"POST /api/explain HTTP/1.1\r\nHost: H\r\nX-Explorer-Token: T\r\nContent-Length: 2\r\nContent-Length: 3"
    b"\r\n\r\n{}",
    b"POST /api/explain HTTP/1.1\r\nHost: H\r\nX-Explorer-Token: T\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0"
    b"\r\n\r\n",
    b"POST /api/explain HTTP/1.1\r\nHost: H\r\nX-Explorer-Token: T\r\nContent-Length: 100000000\r\n\r\n{}",
    b"POST /api/nothing HTTP/1.1\r\nHost: H\r\nX-Explorer-Token: T\r\nContent-Length: 2\r\n\r\n{}",
]


def test_malformed_http_is_a_4xx(server):
    """Broken request lines, unknown methods, bad lengths, path tricks: a 4xx with a
    one-line JSON message (or the connection closed), never a 5xx."""
    for raw in MALFORMED_HTTP:
        raw = raw.replace(b"Host: H", f"Host: {server.host}".encode()).replace(b"Token: T",
                                                                              f"Token: {server.token}".encode())
        status, head, body = server.raw(raw)
        assert status == 0 or 400 <= status < 500, (raw[:80], status, head)
        if status and body:
            res = json.loads(body)
            assert set(res) == {"error"} and "\n" not in res["error"], res


# ---------------------------------------------------------------------------
# the command line, and the log
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("port", ["-1", "70000", "http"])
def test_serve_refuses_a_bad_port_in_one_line(port, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), TMPDIR=str(tmp_path))
    r = subprocess.run([sys.executable, "-m", "tinygrad_explain", "serve", "--port", port], capture_output=True,
                       text=True, env=env, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "error" in r.stderr.strip().splitlines()[-1] and "port" in r.stderr.strip().splitlines()[-1], r.stderr
    assert list(tmp_path.iterdir()) == []                 # no temporary folder left behind


def test_the_log_has_no_traceback_and_sigterm_stops_cleanly(server, tmp_path):
    """Last: the whole run's log is one line per event, and SIGTERM ends the server
    (status 0) without leaving anything behind."""
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(30) == 0
    server.log.flush()
    log = server.log_path.read_text()
    assert "Traceback" not in log and "Exception" not in log and "Warning" not in log, log[-3000:]
    assert all(len(line) < 600 for line in log.splitlines())
    assert " 500 " not in log and "internal error" not in log
