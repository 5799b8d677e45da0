#!/usr/bin/env python
"""Download torchvision's pretrained AlexNet, verify it, convert it to weights/.

    python scripts/fetch_alexnet.py                      # -> weights/alexnet_torchvision.h5

Steps: download https://download.pytorch.org/models/alexnet-owt-7be5be79.pth
(244 MB, progress bar), check its SHA-256 against the published digest (the
"7be5be79" in the file name is the digest's first 8 hex digits), then convert
it with scripts/convert_torchvision.py's logic.  The .pth is kept next to the
output (``--keep-pth``) or deleted.

Offline?  Download the file any other way and pass it with ``--pth FILE``;
it is verified and converted the same way.

Exit codes: 0 ok, 1 network failure (no connection, timeout, HTTP error),
2 bad input (checksum mismatch, unreadable checkpoint).
"""
import argparse
import hashlib
import socket
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))   # run from a checkout

URL = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"
# Full SHA-256 of alexnet-owt-7be5be79.pth (244,408,911 bytes); its first 8
# hex digits are the "7be5be79" that torchvision puts in the file name.
SHA256 = "7be5be791159472b1fbf3c69796f7cb30dca7ad8466c2df70058c37116cdee02"
SIZE = 244_408_911
DEFAULT_OUT = ROOT / "weights" / "alexnet_torchvision.h5"
CHUNK = 1 << 20


class FetchError(Exception):
    """Download failed (network); exit code 1."""


class BadFileError(Exception):
    """The file is not the expected checkpoint; exit code 2."""


def _open_url(url: str, timeout: float):
    """``urlopen`` with a hard deadline on connecting.

    ``timeout`` bounds each socket operation, but name resolution (DNS) is
    not covered by it and can hang for a long time on a broken network; so
    the open runs in a daemon thread and we stop waiting after ``timeout``.
    """
    box = {}

    def worker():
        try:
            box["resp"] = urllib.request.urlopen(url, timeout=timeout)
        except BaseException as e:          # noqa: BLE001 -- re-raised in the caller
            box["err"] = e

    t = threading.Thread(target=worker, daemon=True)
    t.start()
    t.join(timeout + 1.0)
    if t.is_alive():
        raise FetchError(f"timed out after {timeout:g} s connecting to {url}")
    if "err" in box:
        e = box["err"]
        if isinstance(e, urllib.error.HTTPError):
            raise FetchError(f"HTTP {e.code} {e.reason} for {url}")
        reason = getattr(e, "reason", e)
        if isinstance(reason, (socket.timeout, TimeoutError)):
            raise FetchError(f"timed out after {timeout:g} s connecting to {url}")
        raise FetchError(f"cannot reach {url}: {reason}")
    return box["resp"]


def download(url: str, dest: Path, timeout: float = 15.0, expected_sha256: str = SHA256,
             progress: bool = True) -> Path:
    """Stream ``url`` to ``dest`` (through a temporary file beside it), hashing as it goes.

    Raises FetchError on network trouble, BadFileError on a checksum
    mismatch; ``dest`` only ever appears complete and verified.
    """
    from tqdm import tqdm

    from tinygrad_explain.core.safe_io import atomic_write
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    resp = _open_url(url, timeout)
    total = resp.headers.get("Content-Length")
    total = int(total) if total and total.isdigit() else None
    h = hashlib.sha256()
    got = 0
    # atomic_write: a temporary file beside dest, removed if anything below raises
    with resp, atomic_write(dest) as f, tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                                             desc=dest.name, disable=not progress) as bar:
        while True:
            try:
                chunk = resp.read(CHUNK)
            except (socket.timeout, TimeoutError):
                raise FetchError(f"download stalled for {timeout:g} s: {url}") from None
            except OSError as e:
                raise FetchError(f"download of {url} failed: {e}") from None
            if not chunk:
                break
            f.write(chunk)
            h.update(chunk)
            got += len(chunk)
            bar.update(len(chunk))
        if total is not None and got != total:
            raise FetchError(f"download of {url} ended early: got {got} of {total} bytes")
        digest = h.hexdigest()
        if expected_sha256 and digest != expected_sha256:
            raise BadFileError(f"checksum mismatch for {url}: SHA-256 {digest}, expected "
                               f"{expected_sha256} (corrupt download or the file changed)")
    return dest


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def main(argv=None):
    ap = argparse.ArgumentParser(description="Download, verify and convert torchvision's "
                                             "pretrained AlexNet.")
    ap.add_argument("--out", default=str(DEFAULT_OUT),
                    help="model file to write (default: weights/alexnet_torchvision.h5)")
    ap.add_argument("--pth", help="use this already-downloaded alexnet-owt-7be5be79.pth "
                                  "instead of downloading")
    ap.add_argument("--url", default=URL, help=argparse.SUPPRESS)
    ap.add_argument("--sha256", default=SHA256, help=argparse.SUPPRESS)
    ap.add_argument("--timeout", type=float, default=15.0,
                    help="network timeout in seconds (default 15)")
    ap.add_argument("--keep-pth", action="store_true",
                    help="keep the downloaded .pth next to the output file")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    out = Path(args.out)
    try:
        if args.pth:
            pth = Path(args.pth)
            if not pth.is_file():
                raise BadFileError(f"{pth}: no such file")
            digest = sha256_file(pth)
            if args.sha256 and digest != args.sha256:
                raise BadFileError(f"{pth}: SHA-256 {digest} does not match the published "
                                   f"{args.sha256}; not the torchvision AlexNet checkpoint "
                                   "(or a corrupt copy)")
            downloaded = False
        else:
            pth = out.with_name(Path(args.url).name)
            print(f"downloading {args.url}", file=sys.stderr)
            download(args.url, pth, timeout=args.timeout, expected_sha256=args.sha256,
                     progress=not args.no_progress)
            downloaded = True
        from tinygrad_explain.modelfiles.convert import convert_torchvision
        try:
            model = convert_torchvision(pth, out)
        except (ValueError, KeyError, OSError) as e:
            raise BadFileError(e.args[0] if isinstance(e, KeyError) and e.args else str(e))
        finally:
            if downloaded and not args.keep_pth and pth.exists():
                pth.unlink()
    except FetchError as e:
        print(f"fetch_alexnet: error: {e}\n  (no internet? download the file elsewhere and run "
              f"with --pth FILE)", file=sys.stderr)
        return 1
    except BadFileError as e:
        print(f"fetch_alexnet: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fetch_alexnet: interrupted", file=sys.stderr)
        return 130
    print(f"wrote {out}: torchvision AlexNet ({model.num_classes} ImageNet classes, "
          f"input {model.input_shape})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
