#!/usr/bin/env python
"""The explorer's response time per method, as the page sees it.

Starts the explorer on a free localhost port (in this process), then for every method
sends --repeats requests over HTTP (a different shipped scene each time, its predicted
class) and prints the median and worst wall time of the whole request -- JSON in,
maps and the layer-by-layer view out -- with the server's own split (map / layer view).

    python scripts/bench_explorer.py [--repeats 7] [--no-layers]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import urllib.request

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tinygrad_explain.apps import explorer  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--no-layers", action="store_true", help="without the layer-by-layer view")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    ex = explorer.Explorer(threads=args.threads)
    server = explorer.make_server(ex, "127.0.0.1", 0, quiet=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = explorer.url_of(server) + "api/explain"
    print(f"explorer ready in {time.perf_counter() - t0:.1f} s (model loaded, kernels warmed up) at {url}")
    try:
        load = os.getloadavg()[0]
        print(f"load average {load:.1f} on {os.cpu_count()} cores; {args.repeats} requests per method")
    except OSError:
        pass
    print(f"{'method':<16}{'median ms':>11}{'max ms':>9}{'map ms':>9}{'layers ms':>11}")
    for method in explorer.METHODS:
        wall, split = [], []
        for r in range(args.repeats + 1):
            body = json.dumps({"image": f"scene:{r}", "method": method, "layers": not args.no_layers}).encode()
            req = urllib.request.Request(url, body, {"Content-Type": "application/json",
                                                     explorer.TOKEN_HEADER: server.token})
            t = time.perf_counter()
            with urllib.request.urlopen(req) as resp:
                res = json.loads(resp.read())
            if r:                                  # the first request of a method is not counted
                wall.append(1e3 * (time.perf_counter() - t))
                split.append((res["ms"]["map"], res["ms"]["layers"]))
        s = np.median(split, axis=0)
        print(f"{method:<16}{np.median(wall):>11.0f}{max(wall):>9.0f}{s[0]:>9.0f}{s[1]:>11.0f}")
    server.shutdown()
    ex.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
