"""The explorer: a local web page for backprop to the input, one click per explanation.

    python -m tinygrad_explain serve [--host 127.0.0.1] [--port 8000] [--weights FILE]

Pick a shipped scene (or upload an image), a target (a class, or a neuron:
layer, channel and optionally a position) and a method; the page shows the
prediction, the map beside the image, and the gradient flowing back layer by
layer (its norm after every layer, and which units each ReLU let through).

Server: the standard library's ``http.server.ThreadingHTTPServer`` -- nothing
to install, and the page needs only five small JSON/static routes (why no web
framework: docs/explorer.md).  The front end is plain HTML + JavaScript in
``explorer_static/`` (no build step).

Safety (docs/explorer.md has the whole list, tests/test_hostile.py the attacks):

* binds to 127.0.0.1 unless ``--host`` says otherwise, and answers only requests
  whose ``Host`` is this server's address (``localhost``, ``127.0.0.1``, ``[::1]``,
  the bound or the connected address, with the port) and whose ``Origin``, when
  sent, is the same -- so another web page the user visits cannot drive it
  (CSRF) or reach it under its own name (DNS rebinding); each POST also carries the
  per-process token that ``/api/info`` hands the page (``X-Explorer-Token``);
* serves only the files that are in ``explorer_static/`` when it starts (a fixed
  table of names: no path from a request ever reaches the file system);
* an upload is at most ``MAX_UPLOAD_BYTES``, is decoded in memory (no temporary
  files) by ``te.image.load`` under ``te.image.UPLOAD_LIMITS``: PNG, JPEG, WebP, BMP,
  GIF or TIFF only (415 otherwise), sane pixel modes, at most 16 M pixels from the
  header (a larger JPEG is decoded at 1/2..1/8 scale) -- a raster of at most 64 MiB;
* decoding and every computation on the model run on bounded worker queues
  (one worker each, ``QUEUE_WAITING`` waiting): a request beyond that is a 503,
  and an upload's body is then read and dropped, never held;
* connections: at most ``MAX_CONNECTIONS`` at once; the request line and headers
  must arrive within ``HEADER_TIMEOUT`` s and the body within ``BODY_TIMEOUT`` s; when
  all places are taken, a new connection takes the place of the oldest one still
  sending its headers (a slow-loris client cannot lock the page out);
* every bad request is a 4xx answer with a one-line JSON message (the page shows
  it) and one log line -- never a 500, a traceback or a crash.

``Explorer`` holds the model and does the work; the HTTP handler only parses
requests and writes JSON, so the tests and ``scripts/bench_explorer.py`` call
``Explorer.explain`` directly or over HTTP.
"""
from __future__ import annotations

import argparse
import base64
import collections
import concurrent.futures
import contextlib
import io
import json
import re
import secrets
import signal
import socket
import sys
import threading
import time
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
from PIL import Image

from ..explain.methods import get as get_method

STATIC_DIR = Path(__file__).resolve().parent / "explorer_static"
MAX_UPLOAD_BYTES = 8 * 1024 * 1024       # a photo; the embedded model sees 64x64 anyway
MAX_JSON_BYTES = 64 * 1024
DRAIN_BYTES = 64 * 1024 * 1024           # a larger body is not read: the connection is closed
MAX_UPLOADS_KEPT = 32                    # model-space arrays of recent uploads, oldest dropped
MAX_CONNECTIONS = 32                     # open connections served at once
HEADER_TIMEOUT = 10.0                    # seconds for the request line and headers (and each read)
BODY_TIMEOUT = 60.0                      # seconds for the whole body (8 MB at 140 KB/s)
QUEUE_WAITING = 3                        # jobs waiting per worker queue (decoding, the model); more: 503
TOKEN_HEADER = "X-Explorer-Token"
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".png": "image/png", ".svg": "image/svg+xml"}

def menu() -> dict[str, tuple[str, dict]]:
    """The page's menu, in the registry's order: method -> (label, the options it runs with), for
    every entry of te.explain.methods with ``explorer`` options (its label, the options spelled
    out); the function computing each map and the ReLU rule of its backward pass (shown in the
    layer view) are the registry's too (names as in the CLI)."""
    from ..explain.methods import METHODS, explorer_menu
    return {name: (METHODS[name].label + (" (" + ", ".join(f"{k} {v}" for k, v in opts.items()) + ")"
                                          if opts else ""), opts)
            for name, opts in explorer_menu().items()}


def __getattr__(name):
    """``METHODS``: :func:`menu` (read when asked, so a method registered later is offered too)."""
    if name == "METHODS":
        return menu()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class RequestError(ValueError):
    """A bad request: its message is shown on the page (HTTP ``status``, 400 unless said)."""

    def __init__(self, message, status=HTTPStatus.BAD_REQUEST):
        super().__init__(message)
        self.status = status


class Busy(RequestError):
    """Every worker and waiting place of a queue is taken (HTTP 503: try again)."""

    def __init__(self, message):
        super().__init__(message, HTTPStatus.SERVICE_UNAVAILABLE)


class WorkQueue:
    """A fixed pool of worker threads with a bounded number of waiting jobs.

    ``with q.place(): ... q.call(fn, *args)`` reserves a place first (raising
    :class:`Busy` when ``workers + waiting`` jobs are in already), so the caller can
    refuse before reading a large body; ``q.run(fn, *args)`` does both."""

    def __init__(self, name: str, workers: int = 1, waiting: int = QUEUE_WAITING, initializer=None, initargs=()):
        self.name, self.size = name, workers + waiting
        self.pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix=f"explorer-{name}",
                                                          initializer=initializer, initargs=initargs)
        self._places = threading.BoundedSemaphore(self.size)

    @contextlib.contextmanager
    def place(self):
        if not self._places.acquire(blocking=False):
            raise Busy(f"the server is busy ({self.name}: {self.size} jobs in hand); try again in a moment")
        try:
            yield
        finally:
            self._places.release()

    def call(self, fn, *args):
        return self.pool.submit(fn, *args).result()

    def run(self, fn, *args):
        with self.place():
            return self.call(fn, *args)

    def close(self):
        self.pool.shutdown(wait=True, cancel_futures=True)


def _strict_json(body: bytes):
    """JSON as the API takes it: numbers of at most 15 digits (no 5000-digit integers),
    no NaN/Infinity, nesting as deep as json's parser allows; any problem a RequestError."""
    def constant(name):
        raise RequestError(f"the request holds {name}, which is not a number this server takes")

    def integer(text):
        if len(text.lstrip("-")) > 15:
            raise RequestError(f"the number {text[:20]}... has {len(text)} digits; at most 15")
        return int(text)

    def real(text):
        v = float(text) if len(text) <= 40 else float("inf")
        if v != v or v in (float("inf"), float("-inf")):
            raise RequestError(f"the number {text[:20]} is not a finite number of at most 40 characters")
        return v
    try:
        return json.loads(body, parse_constant=constant, parse_int=integer, parse_float=real)
    except RequestError:
        raise
    except RecursionError:
        raise RequestError("the request is not JSON this server takes: nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as e:     # JSONDecodeError is a ValueError
        raise RequestError(f"the request is not JSON: {e}") from None


def _whole(v, what: str) -> int:
    """A JSON integer (not a bool, not 3.7, not "3"), or a RequestError naming ``what``."""
    if isinstance(v, bool) or not isinstance(v, int):
        raise RequestError(f"{what} must be a whole number, got {json.dumps(v)[:40]}")
    return v


def png_data_url(img: np.ndarray) -> str:
    """uint8 (H, W) or (H, W, 3) -> "data:image/png;base64,..."."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(img)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def array_payload(a: np.ndarray) -> dict:
    """A float array for the page (and the browser test): shape + little-endian float32, base64."""
    a = np.ascontiguousarray(a, dtype="<f4")
    return {"shape": list(a.shape), "float32_base64": base64.b64encode(a.tobytes()).decode("ascii")}


class Explorer:
    """The model, the shipped scenes and the recent uploads; every model call on one thread.

    ``explain(request)`` is the page's one computation: ``request`` is a dict
    ``{"image": "scene:12" | "upload:<id>", "method": ..., "target": {"class": c} |
    {"layer": name, "channel": c[, "row": i, "col": j]}}``; the answer is a dict of
    JSON-ready values (prediction, map as a PNG data URL, the map's raw values, the
    layer-by-layer view, timings in ms)."""

    def __init__(self, weights=None, threads: int = 1, scenes: int | None = None):
        from .. import load_model
        from ..core.device import set_num_threads
        from ..data import scenes as te_scenes
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
            raise ValueError(f"threads must be a whole number >= 0, got {threads!r}")
        self.model = load_model(weights)
        self.methods = menu()
        # one worker thread owns the model: requests are serialised, and Numba's
        # (thread-local) thread count is set once, in that thread (capped to the cores)
        self.queue = WorkQueue("model", initializer=set_num_threads, initargs=(threads,))
        self.decoder = WorkQueue("decoding")        # uploads are decoded one at a time: bounded memory
        self.uploads = collections.OrderedDict()
        self._uploads_lock = threading.Lock()
        self.scenes = None
        try:
            if tuple(self.model.input_shape) == (3, 64, 64):          # the shipped scenes fit this model
                data = te_scenes.load_sample()
                n = len(data["images"]) if scenes is None else min(scenes, len(data["images"]))
                self.scenes = {k: data[k][:n] for k in ("images", "labels", "boxes", "masks")}
            # compile / load every kernel now, so that the first click is as fast as the others
            x = np.zeros((1, *self.model.input_shape), np.float32)
            self.run(self._explain, x, np.zeros(self.model.input_shape[1:] + (3,), np.uint8), None, "guided",
                     None, True)
        except BaseException:
            self.close()
            raise

    @property
    def pool(self):
        """The model's worker pool (one thread)."""
        return self.queue.pool

    def close(self):
        self.queue.close()
        self.decoder.close()

    def run(self, fn, *args):
        """``fn(*args)`` on the model's worker thread; returns its result (or raises its error).
        :class:`Busy` when the model's queue is full."""
        return self.queue.run(fn, *args)

    # ----- what the page needs to build its menus -------------------------
    def info(self) -> dict:
        from ..explain import class_names
        names = class_names(self.model)
        layers = [{"name": n, "type": self.model.layers[n].type, "shape": list(self.model.shapes[n])}
                  for n in self.model.layer_names[:-1]]
        scenes = []
        if self.scenes is not None:
            scenes = [{"id": f"scene:{i}", "label": f"scene {i}: {names[int(c)]}"}
                      for i, c in enumerate(self.scenes["labels"])]
        return {"classes": names, "layers": layers, "scenes": scenes,
                "methods": [{"id": k, "label": v[0]} for k, v in self.methods.items()],
                "input_shape": list(self.model.input_shape), "max_upload_bytes": MAX_UPLOAD_BYTES,
                "model": Path(getattr(self.model, "path", "") or "model").name}

    # ----- images ----------------------------------------------------------
    def add_upload(self, data: bytes, placed: bool = False) -> str:
        """Decode an uploaded file with ``te.image.load`` under ``te.image.UPLOAD_LIMITS``
        (in memory, on the decoding queue; ``placed``: the caller holds a place in it
        already); keep its model-space array; return its id.  Bad files raise
        RequestError (415 for a format that is not accepted)."""
        if not data:
            raise RequestError("the upload is empty")
        if len(data) > MAX_UPLOAD_BYTES:
            raise RequestError(f"the upload is {len(data)} bytes; the limit is {MAX_UPLOAD_BYTES}",
                               HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
        x = (self.decoder.call if placed else self.decoder.run)(self._decode, data)
        uid = uuid.uuid4().hex[:12]
        with self._uploads_lock:
            self.uploads[uid] = x
            while len(self.uploads) > MAX_UPLOADS_KEPT:
                self.uploads.popitem(last=False)
        return f"upload:{uid}"

    def _decode(self, data: bytes) -> np.ndarray:
        from ..data import image as te_image
        try:
            return te_image.load(io.BytesIO(data), self.model, limits=te_image.UPLOAD_LIMITS)
        except te_image.UnsupportedImageError as e:
            raise RequestError(str(e), HTTPStatus.UNSUPPORTED_MEDIA_TYPE) from None
        except (ValueError, TypeError, OSError, MemoryError, Image.DecompressionBombError) as e:
            raise RequestError(str(e) or type(e).__name__) from None

    def image(self, ref: str):
        """"scene:i" / "upload:id" -> (model-space x (1, C, H, W), picture uint8 (H, W, 3), truth box or None)."""
        from ..data import image as te_image
        if not isinstance(ref, str) or len(ref) > 64:
            raise RequestError(f"image must be 'scene:<index>' or 'upload:<id>', got {json.dumps(ref)[:40]}")
        kind, _, key = ref.partition(":")
        if kind == "scene" and self.scenes is not None:
            if not re.fullmatch(r"[0-9]{1,9}", key) or int(key) >= len(self.scenes["images"]):
                raise RequestError(f"no scene {key!r}: scenes are 0..{len(self.scenes['images']) - 1}")
            i = int(key)
            pic = self.scenes["images"][i]
            return te_image.load(pic, self.model), pic, self.scenes["boxes"][i]
        if kind == "upload":
            with self._uploads_lock:
                x = self.uploads.get(key)
            if x is None:
                raise RequestError("that upload is no longer kept; upload the image again")
            return x, te_image.to_display(x, self.model), None
        raise RequestError(f"unknown image {ref!r}; expected 'scene:<index>' or 'upload:<id>'")

    # ----- targets -----------------------------------------------------------
    def target(self, spec):
        """The page's target -> what te.explain takes: a class index, or (layer, c[, i, j]).
        Types are checked, not coerced: a channel of 3.7 or "3" is refused, ``row``
        needs ``col``, and every index must lie inside the layer."""
        from ..explain import ExplainError, resolve_class, resolve_layer
        if not isinstance(spec, dict):
            raise RequestError("target must be {'class': c} or {'layer': name, 'channel': c[, 'row': i, 'col': j]}")
        try:
            if "class" in spec:
                if set(spec) != {"class"}:
                    raise RequestError(f"a class target takes only 'class', got {sorted(spec)}")
                c = spec["class"]
                if not isinstance(c, str):
                    c = _whole(c, "class")
                elif len(c) > 200:
                    raise RequestError("class name is longer than 200 characters")
                return resolve_class(self.model, c)
            extra = set(spec) - {"layer", "channel", "row", "col"}
            if extra:
                raise RequestError(f"unknown target field(s) {sorted(extra)}; expected layer, channel, row, col")
            name = spec.get("layer")
            if not isinstance(name, str) or len(name) > 200:
                raise RequestError(f"target layer must be a layer's name, got {json.dumps(name)[:40]}")
            layer = resolve_layer(self.model, name)
            shape = tuple(self.model.shapes[layer])
            unit = [_whole(spec.get("channel"), "channel")]
            if ("row" in spec) != ("col" in spec):
                raise RequestError("a position needs both 'row' and 'col'")
            if "row" in spec:
                if len(shape) != 3:
                    raise RequestError(f"layer {layer!r} has no positions (shape {list(shape)}); "
                                       "give a channel only")
                unit += [_whole(spec["row"], "row"), _whole(spec["col"], "col")]
            for v, n, what in zip(unit, shape, ("channel", "row", "col")):
                if not 0 <= v < n:
                    raise RequestError(f"{what} {v} is out of range for layer {layer!r} (0..{n - 1})")
        except ExplainError as e:
            raise RequestError(str(e)) from None
        return (layer, *unit)

    def describe_target(self, t) -> str:
        from ..explain import class_names
        if isinstance(t, tuple):
            if len(self.model.shapes[t[0]]) == 1:
                return f"{t[0]} neuron {t[1]}"
            return f"{t[0]} channel {t[1]}" + (f" at ({t[2]}, {t[3]})" if len(t) == 4 else " (mean over positions)")
        return f"class {class_names(self.model)[t]} (score before softmax)"

    # ----- the computation ----------------------------------------------------
    #: the fields of an explain request
    FIELDS = ("image", "method", "target", "layers")

    def explain(self, req: dict) -> dict:
        """Check the whole request (types, names, ranges) on the caller's thread, then
        compute on the model's: a bad request never reaches the model."""
        if not isinstance(req, dict):
            raise RequestError("the request must be a JSON object")
        extra = set(req) - set(self.FIELDS)
        if extra:
            raise RequestError(f"unknown field(s) {sorted(extra)[:5]}; expected {', '.join(self.FIELDS)}")
        method = req.get("method", "saliency")
        if not isinstance(method, str) or method not in self.methods:
            raise RequestError(f"unknown method {json.dumps(method)[:40]}; expected one of {', '.join(self.methods)}")
        ref = req.get("image", "scene:0")
        x, picture, truth = self.image(ref)
        want_layers = req.get("layers", True)
        if not isinstance(want_layers, bool):
            raise RequestError(f"layers must be true or false, got {json.dumps(want_layers)[:40]}")
        target = None if req.get("target") is None else self.target(req["target"])
        return dict(self.run(self._explain, x, picture, truth, method, target, want_layers), image=ref)

    def _explain(self, x, picture, truth, method, target, want_layers):
        from .. import explain as X
        from ..explain import class_names
        t0 = time.perf_counter()
        names = class_names(self.model)
        _, probs = X.predict(self.model, x)
        p = probs[0]
        top = np.argsort(-p, kind="stable")[:5]
        target = int(top[0]) if target is None else target
        t1 = time.perf_counter()
        try:
            values, img, extra = self._map(x, picture, truth, method, target)
        except X.ExplainError as e:
            raise RequestError(f"{self.methods[method][0]}: {e}") from None
        t2 = time.perf_counter()
        layers = self.layer_flow(x, target, get_method(method).rule) if want_layers else []
        t3 = time.perf_counter()
        return {
            "prediction": [{"index": int(k), "name": names[k], "p": float(p[k])} for k in top],
            "target": {"value": list(target) if isinstance(target, tuple) else target,
                       "text": self.describe_target(target)},
            "method": method, "picture": png_data_url(picture), "map": png_data_url(img),
            "values": array_payload(values), **extra, "layers": layers,
            "ms": {"predict": 1e3 * (t1 - t0), "map": 1e3 * (t2 - t1), "layers": 1e3 * (t3 - t2),
                   "total": 1e3 * (t3 - t0)},
        }

    def _map(self, x, picture, truth, method, target):
        """(the array te.explain returned for this image, its picture, extra JSON fields)."""
        from .. import explain as X
        from . import draw as D
        values = get_method(method).fn(self.model, x, target, **self.methods[method][1])[0]
        if get_method(method).picture != "mask":
            return values, D.method_picture(method, values, picture), {}
        mask, box = X.grabcut_mask(picture, values)
        extra = {"box": [int(v) for v in box], "mask_area": int(mask.sum()),
                 "mask": png_data_url((mask * 255).astype(np.uint8))}
        if truth is not None:
            extra["truth_box"] = [int(v) for v in truth]
            extra["box_iou"] = float(X.metrics.box_iou(box, truth))
        return mask.astype(np.float32), D.overlay(picture, mask, box, truth), extra

    def layer_flow(self, x, target, rule: str) -> list:
        """``te.explain.layer_flow.layer_flow`` (the gradient flowing back, layer by layer), its maps
        drawn as PNG data URLs: ``map`` grey (brightest: largest gradient), ``mask`` the fraction of
        channels each ReLU passed back per position."""
        from ..explain.layer_flow import layer_flow
        from .draw import heat
        rows = layer_flow(self.model, x, target, rule)
        for row in rows:
            if "map" in row:
                row["map"] = png_data_url(heat(row["map"]))
            if "mask" in row:
                row["mask"] = png_data_url((255 * row["mask"]).round().astype(np.uint8))
        return rows



# ---------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------
LOCAL_NAMES = ("localhost", "127.0.0.1", "[::1]")


def _printable(text: str, limit: int = 300) -> str:
    """One log line: control characters escaped, at most ``limit`` characters."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text)[:limit])
    return text


class Handler(BaseHTTPRequestHandler):
    server_version = "tinygrad-explain-explorer"
    protocol_version = "HTTP/1.0"        # one request per connection: nothing idles between requests
    timeout = HEADER_TIMEOUT             # every read and write on the socket
    explorer: Explorer = None            # set on the subclass made by make_server
    static: dict = {}                    # URL path -> (file bytes, content type), fixed at start
    quiet = False

    # ----- logging: one line per event, nothing a client sends can break it
    def log_message(self, fmt, *args):
        if not self.quiet:
            sys.stderr.write("%s - %s\n" % (self.address_string(), _printable(fmt % args)))

    def setup(self):
        super().setup()
        self.server.track(self.connection, HEADER_TIMEOUT, evictable=True)

    def parse_request(self) -> bool:
        ok = super().parse_request()
        if ok and self.headers.defects:       # a header line without a colon, ...: not HTTP
            self.send_error(HTTPStatus.BAD_REQUEST, "malformed header lines")
            return False
        if ok:                                # headers in: the body gets its own deadline
            self.server.track(self.connection, BODY_TIMEOUT, evictable=False)
        return ok

    def send_error(self, code, message=None, explain=None):
        """http.server's errors (bad request line, headers too long, an unknown method,
        a timeout) as one-line JSON; an unknown method is a 405, not a 501."""
        code = {501: HTTPStatus.METHOD_NOT_ALLOWED, 505: HTTPStatus.BAD_REQUEST}.get(int(code), int(code))
        short = self.responses.get(code, ("error", ""))[0]
        self.log_error("code %d, message %s", code, message or short)
        self.close_connection = True
        try:
            self.send_response(code, short)
            body = json.dumps({"error": message or short}).encode("utf-8")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD" and code >= 200 and code not in (204, 304):
                self.wfile.write(body)
        except OSError:
            pass

    def _send(self, status, body: bytes, ctype: str):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; "
                                                    "frame-ancestors 'none'")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, obj, status=HTTPStatus.OK):
        self._send(status, json.dumps(obj).encode("utf-8"), "application/json")

    def _error(self, e: RequestError):
        self.log_message("refused %s: %s", self.path, str(e).splitlines()[0] if str(e) else "")
        self._json({"error": str(e)}, e.status)

    # ----- who may ask
    def _check_caller(self, post: bool):
        """Host must name this server, Origin (if sent) must be this server, and a POST
        must carry the per-process token; RequestError 403 otherwise."""
        hosts = self.headers.get_all("Host") or []
        if len(hosts) != 1:
            raise RequestError("the request needs exactly one Host header", HTTPStatus.BAD_REQUEST)
        allowed = self.server.allowed_hosts(self.connection)
        if hosts[0].strip().lower() not in allowed:
            raise RequestError(f"Host {_printable(hosts[0], 80)!r} is not this server; open {url_of(self.server)}",
                               HTTPStatus.FORBIDDEN)
        origin = self.headers.get("Origin")
        if origin is not None and origin.strip().lower() not in {"http://" + h for h in allowed if ":" in h}:
            raise RequestError(f"requests from {_printable(origin, 80)!r} are not served (another site's page)",
                               HTTPStatus.FORBIDDEN)
        if self.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
            raise RequestError("requests from another site's page are not served", HTTPStatus.FORBIDDEN)
        if post and not secrets.compare_digest(self.headers.get(TOKEN_HEADER, "").encode("utf-8", "replace"),
                                               self.server.token.encode()):
            raise RequestError(f"missing or wrong {TOKEN_HEADER} (reload the page)", HTTPStatus.FORBIDDEN)

    def _drop_body(self):
        """Read and drop a body that will not be used (at most DRAIN_BYTES, in 64 KB pieces,
        within BODY_TIMEOUT), so that the client reads the answer instead of a connection
        reset; a larger or unreadable one: the connection is closed."""
        self.close_connection = True
        if getattr(self, "_consumed", False):
            return
        self._consumed = True
        lengths = self.headers.get_all("Content-Length") or []
        if len(lengths) != 1 or not re.fullmatch(r"[0-9]{1,12}", lengths[0].strip()):
            return
        n = int(lengths[0])
        if n <= DRAIN_BYTES:
            with contextlib.suppress(OSError):
                for start in range(0, n, 1 << 16):
                    if not self.rfile.read(min(1 << 16, n - start)):
                        break

    def _body(self, limit: int) -> bytes:
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            raise RequestError("chunked bodies are not taken; send a Content-Length", HTTPStatus.LENGTH_REQUIRED)
        lengths = self.headers.get_all("Content-Length") or []
        if len(lengths) != 1 or not re.fullmatch(r"[0-9]{1,12}", lengths[0].strip()):
            self.close_connection = True
            raise RequestError("the request needs one Content-Length (a whole number)", HTTPStatus.LENGTH_REQUIRED)
        n = int(lengths[0])
        if n > limit:
            raise RequestError(f"the request body is {n} bytes; the limit is {limit}",
                               HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
        self._consumed = True
        data = self.rfile.read(n)
        if len(data) != n:
            self.close_connection = True
            raise RequestError(f"the body ended after {len(data)} of {n} bytes")
        self.server.track(self.connection, None)          # read: no deadline while the work runs
        return data

    # ----- routes
    def do_GET(self):
        path = self.path.split("?", 1)[0]
        try:
            self._check_caller(post=False)
            if path == "/api/info":
                return self._json(dict(self.explorer.info(), token=self.server.token))
            hit = self.static.get("/index.html" if path == "/" else path)
            if hit is None:
                raise RequestError(f"not found: {_printable(path, 80)}", HTTPStatus.NOT_FOUND)
            self._send(HTTPStatus.OK, *hit)
        except RequestError as e:
            self._error(e)

    def do_POST(self):
        path = self.path.split("?", 1)[0]
        try:
            self._check_caller(post=True)
            if path == "/api/upload":
                with self.explorer.decoder.place():           # a place first: a busy server keeps no body
                    ref = self.explorer.add_upload(self._body(MAX_UPLOAD_BYTES), placed=True)
                return self._json({"image": ref})
            if path == "/api/explain":
                req = _strict_json(self._body(MAX_JSON_BYTES) or b"{}")
                return self._json(self.explorer.explain(req))
            raise RequestError(f"not found: {_printable(path, 80)}", HTTPStatus.NOT_FOUND)
        except RequestError as e:
            self._drop_body()                 # refused before its body was read (busy, 403, 413, ...)
            self._error(e)
        except OSError:                       # the client went away or was too slow: nothing to answer
            self.close_connection = True
        except Exception as e:  # noqa: BLE001 - one failed request must not stop the server
            self.log_error("error in %s: %s", path, _printable(f"{type(e).__name__}: {e}"))
            self._json({"error": f"internal error: {type(e).__name__}"}, HTTPStatus.INTERNAL_SERVER_ERROR)


class ExplorerServer(ThreadingHTTPServer):
    """ThreadingHTTPServer with a cap on open connections, deadlines per connection
    (enforced by one watcher thread that shuts a late socket), a Host allow-list and
    the page's token.  When every place is taken, a new connection takes the place
    of the oldest one still sending its headers; if none is, it gets a 503."""
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def __init__(self, address, handler, max_connections: int = MAX_CONNECTIONS, quiet: bool = False):
        super().__init__(address, handler)
        self.quiet = quiet
        self.token = secrets.token_urlsafe(24)
        self._places = threading.BoundedSemaphore(max_connections)
        self._conns = {}                    # socket -> (deadline or None, evictable, opened)
        self._conns_lock = threading.Lock()
        self._closing = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="explorer-deadlines", daemon=True)
        self._watcher.start()

    # ----- who may ask
    def allowed_hosts(self, conn) -> set:
        """The Host values this server answers: its names with and without the port."""
        port = self.server_address[1]
        names = set(LOCAL_NAMES)
        for addr in (self.server_address[0], _sockname(conn)):
            if addr and addr not in ("0.0.0.0", "::"):
                names.add(f"[{addr}]" if ":" in addr else addr)
        return {n.lower() for n in names} | {f"{n}:{port}".lower() for n in names}

    # ----- connections
    def track(self, conn, seconds, evictable=False):
        with self._conns_lock:
            opened = self._conns.get(conn, (None, False, time.monotonic()))[2]
            self._conns[conn] = (None if seconds is None else time.monotonic() + seconds, evictable, opened)

    def _drop(self, conn):
        with contextlib.suppress(OSError):
            conn.shutdown(socket.SHUT_RDWR)     # the handler's blocked read returns at once

    def _watch(self):
        while not self._closing.wait(0.25):
            now = time.monotonic()
            with self._conns_lock:
                late = [c for c, (d, _, _) in self._conns.items() if d is not None and d < now]
            for c in late:
                self._drop(c)

    def process_request(self, request, client_address):
        if not self._places.acquire(blocking=False):
            with self._conns_lock:
                waiting = [(opened, c) for c, (_, ev, opened) in self._conns.items() if ev]
            if waiting:
                self._drop(min(waiting, key=lambda t: t[0])[1])
            if not self._places.acquire(timeout=1.0):
                self._refuse(request)
                return
        try:
            with self._conns_lock:
                self._conns[request] = (time.monotonic() + HEADER_TIMEOUT, True, time.monotonic())
            super().process_request(request, client_address)
        except BaseException:
            self._release(request)
            raise

    def _release(self, request):
        with self._conns_lock:
            self._conns.pop(request, None)
        self._places.release()

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release(request)

    def _refuse(self, request):
        body = json.dumps({"error": "too many connections; try again in a moment"}).encode()
        with contextlib.suppress(OSError):
            request.settimeout(0.5)
            request.sendall(b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                            b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        self.shutdown_request(request)

    def handle_error(self, request, client_address):
        """One line, never a traceback: a client that vanishes is not the server's error."""
        if not self.quiet:
            e = sys.exc_info()[1]
            sys.stderr.write(f"{client_address[0]} - connection ended: {type(e).__name__}: {_printable(e, 120)}\n")

    def server_close(self):
        self._closing.set()
        super().server_close()


def _sockname(conn):
    try:
        return conn.getsockname()[0]
    except (OSError, IndexError, TypeError):
        return None


def static_table() -> dict:
    """URL path -> (bytes, content type) for the files of explorer_static/, read once."""
    table = {}
    for p in sorted(STATIC_DIR.iterdir()):
        if p.is_file() and p.suffix in CONTENT_TYPES:
            table["/" + p.name] = (p.read_bytes(), CONTENT_TYPES[p.suffix])
    return table


def check_port(port) -> int:
    """A TCP port number 0..65535 (0: any free port), or ValueError saying so."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be a whole number from 0 to 65535 (0: any free port), got {port!r}")
    return port


def make_server(explorer: Explorer, host: str = "127.0.0.1", port: int = 8000, quiet: bool = False,
                max_connections: int = MAX_CONNECTIONS):
    """An :class:`ExplorerServer` serving ``explorer`` (port 0: any free port; see .server_address).
    A bad port is a ValueError, an address that cannot be bound an OSError."""
    check_port(port)
    if not isinstance(host, str) or not host:
        raise ValueError(f"host must be an address such as 127.0.0.1, got {host!r}")
    handler = type("ExplorerHandler", (Handler,), {"explorer": explorer, "static": static_table(),
                                                    "quiet": quiet})
    return ExplorerServer((host, port), handler, max_connections=max_connections, quiet=quiet)


def url_of(server) -> str:
    host, port = server.server_address[:2]
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}/"


class _Stop(Exception):
    """SIGTERM: leave serve_forever the way Ctrl-C does."""


def serve(weights=None, host: str = "127.0.0.1", port: int = 8000, threads: int = 1, quiet: bool = False) -> int:
    """``python -m tinygrad_explain serve``: check the arguments before anything is made
    (port, thread count), load the model, serve until Ctrl-C or SIGTERM, and release
    everything on every way out.  Returns the exit status (2 with one line on stderr
    for a bad argument or an address that cannot be bound)."""
    from .. import ModelFileError
    try:
        check_port(port)
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
            raise ValueError(f"--threads must be a whole number >= 0, got {threads!r}")
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    previous = None
    running = {}                                   # "server": set once it serves
    if threading.current_thread() is threading.main_thread():
        def stop(*_):
            # Serving: ask serve_forever to return, from another thread (server.shutdown waits for
            # it), rather than raise into whatever the main thread is doing -- an exception raised
            # from a signal handler can land inside threading's or the pool's own bookkeeping and
            # leave the process unable to exit.  Before serving: leave at once.
            if "server" in running:
                threading.Thread(target=running["server"].shutdown, name="explorer-stop", daemon=True).start()
            else:
                raise _Stop()
        previous = signal.signal(signal.SIGTERM, stop)
    explorer = server = None
    try:
        try:
            explorer = Explorer(weights, threads=threads)
            server = make_server(explorer, host, port, quiet=quiet)
        except (ModelFileError, FileNotFoundError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except OSError as e:
            print(f"error: cannot listen on {host}:{port}: {e.strerror or e}", file=sys.stderr)
            return 2
        print(f"explorer: serving on {url_of(server)} (Ctrl-C to stop)", flush=True)
        running["server"] = server
        server.serve_forever()
    except (KeyboardInterrupt, _Stop):
        pass
    finally:
        if server is not None:
            server.server_close()
        if explorer is not None:
            explorer.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="tinygrad-explain serve",
                                 description="The explorer: a local web page for backprop to the input.")
    ap.add_argument("--host", default="127.0.0.1",
                    help="address to bind (default 127.0.0.1: only this machine; 0.0.0.0 exposes it to the network)")
    ap.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 = any free port)")
    ap.add_argument("--weights", help="model file or shipped name such as random_labels (default: the embedded "
                                      "model); the shipped scenes are offered to any 3x64x64 model")
    ap.add_argument("--threads", type=int, default=1, help="Numba/BLAS threads (default 1; capped to the cores)")
    ap.add_argument("--quiet", action="store_true", help="do not log every request")
    args = ap.parse_args(argv)
    return serve(args.weights, args.host, args.port, args.threads, args.quiet)


if __name__ == "__main__":
    sys.exit(main())
