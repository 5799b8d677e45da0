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

Safety:

* binds to 127.0.0.1 unless ``--host`` says otherwise;
* serves only the files that are in ``explorer_static/`` when it starts (a fixed
  table of names: no path from a request ever reaches the file system);
* an upload is at most ``MAX_UPLOAD_BYTES``; it is written to a private temporary
  folder (removed on exit), decoded there by ``te.image.load`` -- the same checks
  as every image -- and deleted at once; a bad file is a 400 answer whose message
  the page shows, never a server crash;
* every computation on the model runs on one worker thread (``Explorer.pool``):
  the engine is thread-safe (tests/test_threads.py), but on a small CPU two maps
  computed at once only slow each other down, and one thread lets Numba's
  (thread-local) thread count be set once.

``Explorer`` holds the model and does the work; the HTTP handler only parses
requests and writes JSON, so the tests and ``scripts/bench_explorer.py`` call
``Explorer.explain`` directly or over HTTP.
"""
from __future__ import annotations

import argparse
import base64
import collections
import concurrent.futures
import io
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
from PIL import Image

from .explain.methods import get as get_method

STATIC_DIR = Path(__file__).resolve().parent / "explorer_static"
MAX_UPLOAD_BYTES = 8 * 1024 * 1024       # a photo; the embedded model sees 64x64 anyway
MAX_JSON_BYTES = 64 * 1024
DRAIN_BYTES = 64 * 1024 * 1024           # a larger body is not read: the connection is closed
MAX_UPLOADS_KEPT = 32                    # model-space arrays of recent uploads, oldest dropped
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".png": "image/png", ".svg": "image/svg+xml"}

#: the page's menu, in its order: method -> (label, the options it runs with).  The function
#: computing each map and the ReLU rule of its backward pass (shown in the layer view) are
#: te.explain.methods' (names as in the CLI).
METHODS = {
    "gradient": ("gradient dS/dx (backprop)", {}),
    "saliency": ("saliency max_c |dS/dx|", {}),
    "deconvnet": ("deconvnet", {}),
    "guided": ("guided backprop", {}),
    "grabcut": ("saliency -> GrabCut mask and box", {}),
    "smoothgrad": ("SmoothGrad (25 noisy copies)", {}),
    "grad-x-input": ("gradient x input", {}),
    "gradcam": ("Grad-CAM (last conv layer)", {}),
    "guided-gradcam": ("guided Grad-CAM", {}),
    "occlusion": ("occlusion (8x8 grey patch, stride 8)", {"patch": 8, "stride": 8}),
}


class RequestError(ValueError):
    """A bad request: its message is shown on the page (HTTP 400)."""


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
        from . import load_model
        from . import scenes as te_scenes
        from .device import set_num_threads
        self.model = load_model(weights)
        self.methods = METHODS
        # one worker thread owns the model: requests are serialised, and Numba's
        # (thread-local) thread count is set once, in that thread
        self.pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="explorer-model",
                                                          initializer=set_num_threads, initargs=(threads,))
        self.tmp = Path(tempfile.mkdtemp(prefix="tge-explorer-"))
        self.uploads = collections.OrderedDict()
        self._uploads_lock = threading.Lock()
        self.scenes = None
        if tuple(self.model.input_shape) == (3, 64, 64):          # the shipped scenes fit this model
            data = te_scenes.load_sample()
            n = len(data["images"]) if scenes is None else min(scenes, len(data["images"]))
            self.scenes = {k: data[k][:n] for k in ("images", "labels", "boxes", "masks")}
        # compile / load every kernel now, so that the first click is as fast as the others
        x = np.zeros((1, *self.model.input_shape), np.float32)
        self.run(self._explain, x, np.zeros(self.model.input_shape[1:] + (3,), np.uint8), None, "guided", None, True)

    def close(self):
        self.pool.shutdown(wait=True)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def run(self, fn, *args):
        """``fn(*args)`` on the model's worker thread; returns its result (or raises its error)."""
        return self.pool.submit(fn, *args).result()

    # ----- what the page needs to build its menus -------------------------
    def info(self) -> dict:
        from .explain import class_names
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
    def add_upload(self, data: bytes) -> str:
        """Decode an uploaded file with ``te.image.load`` (from a private temp file, deleted
        at once); keep its model-space array; return its id.  Bad files raise RequestError."""
        from . import image as te_image
        if not data:
            raise RequestError("the upload is empty")
        if len(data) > MAX_UPLOAD_BYTES:
            raise RequestError(f"the upload is {len(data)} bytes; the limit is {MAX_UPLOAD_BYTES}")
        fd, path = tempfile.mkstemp(dir=self.tmp, suffix=".upload")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            try:
                x = te_image.load(path, self.model)
            except (ValueError, TypeError, OSError, Image.DecompressionBombError) as e:
                msg = str(e).replace(repr(path), "(the upload)").replace(path, "(the upload)")
                raise RequestError(msg) from None
        finally:
            try:
                os.unlink(path)
            except OSError:
                pass
        uid = uuid.uuid4().hex[:12]
        with self._uploads_lock:
            self.uploads[uid] = x
            while len(self.uploads) > MAX_UPLOADS_KEPT:
                self.uploads.popitem(last=False)
        return f"upload:{uid}"

    def image(self, ref: str):
        """"scene:i" / "upload:id" -> (model-space x (1, C, H, W), picture uint8 (H, W, 3), truth box or None)."""
        from . import image as te_image
        kind, _, key = str(ref).partition(":")
        if kind == "scene" and self.scenes is not None:
            if not key.isdecimal() or int(key) >= len(self.scenes["images"]):
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
        """The page's target -> what te.explain takes: a class index, or (layer, c[, i, j])."""
        from .explain import ExplainError, resolve_class, resolve_layer
        if not isinstance(spec, dict):
            raise RequestError("target must be {'class': c} or {'layer': name, 'channel': c}")
        try:
            if "class" in spec:
                return resolve_class(self.model, spec["class"])
            layer = resolve_layer(self.model, spec.get("layer"))
            unit = [spec.get("channel")] + ([spec["row"], spec["col"]] if spec.get("row") is not None else [])
            unit = [int(v) for v in unit]
        except (ExplainError, TypeError, ValueError) as e:
            raise RequestError(str(e)) from None
        return (layer, *unit)

    def describe_target(self, t) -> str:
        from .explain import class_names
        if isinstance(t, tuple):
            if len(self.model.shapes[t[0]]) == 1:
                return f"{t[0]} neuron {t[1]}"
            return f"{t[0]} channel {t[1]}" + (f" at ({t[2]}, {t[3]})" if len(t) == 4 else " (mean over positions)")
        return f"class {class_names(self.model)[t]} (score before softmax)"

    # ----- the computation ----------------------------------------------------
    def explain(self, req: dict) -> dict:
        if not isinstance(req, dict):
            raise RequestError("the request must be a JSON object")
        method = req.get("method", "saliency")
        if method not in self.methods:
            raise RequestError(f"unknown method {method!r}; expected one of {', '.join(self.methods)}")
        ref = req.get("image", "scene:0")
        x, picture, truth = self.image(ref)
        want_layers = bool(req.get("layers", True))
        return dict(self.run(self._explain, x, picture, truth, method, req.get("target"), want_layers), image=ref)

    def _explain(self, x, picture, truth, method, target_spec, want_layers):
        from . import explain as X
        from .explain import class_names
        t0 = time.perf_counter()
        names = class_names(self.model)
        _, probs = X.predict(self.model, x)
        p = probs[0]
        top = np.argsort(-p, kind="stable")[:5]
        target = int(top[0]) if target_spec is None else self.target(target_spec)
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
        from . import draw as D
        from . import explain as X
        values = get_method(method).fn(self.model, x, target, **self.methods[method][1])[0]
        if method != "grabcut":
            return values, D.method_picture(method, values, picture), {}
        mask, box = X.grabcut_mask(picture, values)
        extra = {"box": [int(v) for v in box], "mask_area": int(mask.sum()),
                 "mask": png_data_url((mask * 255).astype(np.uint8))}
        if truth is not None:
            extra["truth_box"] = [int(v) for v in truth]
            extra["box_iou"] = float(X.metrics.box_iou(box, truth))
        return mask.astype(np.float32), D.overlay(picture, mask, box, truth), extra

    def layer_flow(self, x, target, rule: str) -> list:
        """The gradient flowing back, layer by layer: one forward pass keeping every layer's
        output (``model(x, keep=all)``, each retaining its gradient), one backward pass
        from the target, then per layer the norm of dS/d(output) and, for a map, where it
        is large (sum over channels of |grad|); per ReLU, the fraction of units active
        (x > 0) and the fraction of the gradient entries it passed back under ``rule``."""
        from .draw import heat
        from .engine import Tensor, relu_backward
        from .explain import resolve_objective
        m = self.model
        names = m.layer_names
        obj = resolve_objective(m, target, 1)          # the seed te.explain.gradient starts from
        run = [n for n in names[:names.index(obj.layer) + 1] if n == obj.layer or m.feeds(n, obj.layer)]
        leaf = Tensor(np.array(x, copy=True), requires_grad=True)
        with relu_backward(rule):
            outs = m(leaf, until=obj.layer, keep=run)
            outs.output.backward(obj.seed_like(outs.output))
        rows = []
        below = leaf
        for n in run:
            t = outs[n]
            g = t.grad if t.grad is not None else np.zeros(t.shape, np.float32)
            row = {"name": n, "type": m.layers[n].type, "shape": list(t.shape[1:]),
                   "grad_norm": float(np.linalg.norm(g))}
            if g.ndim == 4:
                row["map"] = png_data_url(heat(np.abs(g[0]).sum(0)))
            if hasattr(m, "inputs"):                    # a graph network: the node this one reads
                below = leaf if m.inputs[n][0] == "input" else outs[m.inputs[n][0]]
            if m.layers[n].type == "relu":
                gin = below.grad if below.grad is not None else np.zeros(below.shape, np.float32)
                row["active"] = float((below.data > 0).mean())
                row["passed"] = float((gin != 0).mean())
                row["arrived"] = float((g != 0).mean())
                if gin.ndim == 4:
                    row["mask"] = png_data_url((255 * (gin[0] != 0).mean(0)).round().astype(np.uint8))
            rows.append(row)
            below = t
        g = leaf.grad if leaf.grad is not None else np.zeros(leaf.shape, np.float32)
        return [{"name": "input", "type": "image", "shape": list(x.shape[1:]), "grad_norm": float(np.linalg.norm(g)),
                 "map": png_data_url(heat(np.abs(g[0]).max(0)))}] + rows


# ---------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------
class Handler(BaseHTTPRequestHandler):
    server_version = "tinygrad-explain-explorer"
    explorer: Explorer = None            # set on the subclass made by make_server
    static: dict = {}                    # URL path -> (file bytes, content type), fixed at start
    quiet = False

    def log_message(self, fmt, *args):
        if not self.quiet:
            sys.stderr.write("%s - %s\n" % (self.address_string(), fmt % args))

    def _send(self, status, body: bytes, ctype: str):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, obj, status=HTTPStatus.OK):
        self._send(status, json.dumps(obj).encode("utf-8"), "application/json")

    def _body(self, limit: int) -> bytes:
        try:
            n = int(self.headers.get("Content-Length", ""))
        except ValueError:
            raise RequestError("the request has no Content-Length") from None
        if n < 0 or n > limit:
            if 0 < n <= DRAIN_BYTES:         # read and drop it, so that the client sees the answer
                for start in range(0, n, 1 << 16):
                    self.rfile.read(min(1 << 16, n - start))
            else:
                self.close_connection = True
            raise RequestError(f"the request body is {n} bytes; the limit is {limit}")
        return self.rfile.read(n)

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path == "/api/info":
            return self._json(self.explorer.info())
        hit = self.static.get("/index.html" if path == "/" else path)
        if hit is None:
            return self._json({"error": f"not found: {path}"}, HTTPStatus.NOT_FOUND)
        self._send(HTTPStatus.OK, *hit)

    def do_POST(self):
        path = self.path.split("?", 1)[0]
        try:
            if path == "/api/upload":
                ref = self.explorer.add_upload(self._body(MAX_UPLOAD_BYTES))
                return self._json({"image": ref})
            if path == "/api/explain":
                try:
                    req = json.loads(self._body(MAX_JSON_BYTES) or b"{}")
                except json.JSONDecodeError as e:
                    raise RequestError(f"the request is not JSON: {e}") from None
                return self._json(self.explorer.explain(req))
            return self._json({"error": f"not found: {path}"}, HTTPStatus.NOT_FOUND)
        except RequestError as e:
            return self._json({"error": str(e)}, HTTPStatus.BAD_REQUEST)
        except Exception as e:  # noqa: BLE001 - one failed request must not stop the server
            self.log_error("error in %s: %r", path, e)
            return self._json({"error": f"internal error: {type(e).__name__}: {e}"},
                              HTTPStatus.INTERNAL_SERVER_ERROR)


def static_table() -> dict:
    """URL path -> (bytes, content type) for the files of explorer_static/, read once."""
    table = {}
    for p in sorted(STATIC_DIR.iterdir()):
        if p.is_file() and p.suffix in CONTENT_TYPES:
            table["/" + p.name] = (p.read_bytes(), CONTENT_TYPES[p.suffix])
    return table


def make_server(explorer: Explorer, host: str = "127.0.0.1", port: int = 8000, quiet: bool = False):
    """A ThreadingHTTPServer serving ``explorer`` (port 0: any free port; see .server_address)."""
    handler = type("ExplorerHandler", (Handler,), {"explorer": explorer, "static": static_table(),
                                                    "quiet": quiet})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def url_of(server) -> str:
    host, port = server.server_address[:2]
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}/"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tinygrad_explain serve",
                                 description="The explorer: a local web page for backprop to the input.")
    ap.add_argument("--host", default="127.0.0.1",
                    help="address to bind (default 127.0.0.1: only this machine; 0.0.0.0 exposes it to the network)")
    ap.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 = any free port)")
    ap.add_argument("--weights", help="model file or shipped name such as random_labels (default: the embedded "
                                      "model); the shipped scenes are offered to any 3x64x64 model")
    ap.add_argument("--threads", type=int, default=1, help="Numba/BLAS threads (default 1)")
    ap.add_argument("--quiet", action="store_true", help="do not log every request")
    args = ap.parse_args(argv)
    from . import ModelFileError
    try:
        explorer = Explorer(args.weights, threads=args.threads)
    except (ModelFileError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        server = make_server(explorer, args.host, args.port, quiet=args.quiet)
    except OSError as e:
        explorer.close()
        print(f"error: cannot listen on {args.host}:{args.port}: {e.strerror or e}", file=sys.stderr)
        return 2
    print(f"explorer: serving on {url_of(server)} (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        explorer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
