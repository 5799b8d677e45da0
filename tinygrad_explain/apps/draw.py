"""Pictures: how maps, images and tables are drawn (PIL and OpenCV only).

One home for the drawing that the figures (:mod:`.figures`), the command line
(``python -m tinygrad_explain``), the explorer and the notebooks share:

    grid           tiles with labels underneath, in rows, with a title
    table_image    small integer matrices in coloured cells (the ReLU slide)
    heat           a saliency map (H, W) as grey, 99th percentile clipped
    signed_heat    a signed map as red (+) / blue (-)
    cam_overlay    a class activation map in jet colours over the picture
    normalize_cam  a map >= 0 scaled to uint8 by its maximum
    grad_picture   a (C, H, W) input gradient as a colour picture
    method_picture how one image's map of each explanation method is shown
    overlay        a mask tinted red and boxes (green: found, blue: truth)
    upscale        nearest-neighbour enlargement of small pictures
    as_rgb         grey -> RGB
    pil_font       PIL's default font at a size
    save_png       a picture written as PNG through the safe writer

The picture functions take and return uint8 pictures (H, W) or (H, W, 3) RGB,
or a PIL image (``grid``, ``table_image``).
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..core.safe_io import atomic_write
from ..data import image as te_image


def pil_font(size: int = 12) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """PIL's default font at ``size`` px (a fixed size on Pillow < 10.1)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:                                    # Pillow < 10.1
        return ImageFont.load_default()


def upscale(img: np.ndarray, min_side: int = 160) -> np.ndarray:
    """Nearest-neighbour upscaling of small images so that pixels stay visible."""
    h, w = img.shape[:2]
    k = max(1, int(np.ceil(min_side / max(h, w))))
    return np.repeat(np.repeat(img, k, 0), k, 1) if k > 1 else img


def as_rgb(img: np.ndarray) -> np.ndarray:
    """uint8 (H, W) grey or (H, W, 3) -> uint8 (H, W, 3)."""
    img = np.asarray(img)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return img.astype(np.uint8)


def grid(tiles: Sequence[np.ndarray], labels: Sequence[str] | None = None, ncol: int | None = None,
         title: str | None = None, min_side: int = 160, pad: int = 6) -> Image.Image:
    """Tiles (uint8 HxW or HxWx3) in a grid, each with a label underneath."""
    tiles = [upscale(as_rgb(t), min_side) for t in tiles]
    labels = labels or [""] * len(tiles)
    n = len(tiles)
    ncol = ncol or n
    nrow = (n + ncol - 1) // ncol
    th = max(t.shape[0] for t in tiles)
    tw = max(t.shape[1] for t in tiles)
    font, tfont = pil_font(12), pil_font(15)
    lab_h = 16 * max(1, max(len(str(lb).split("\n")) for lb in labels))
    top = 24 if title else 0
    W = pad + ncol * (tw + pad)
    H = top + pad + nrow * (th + lab_h + pad)
    canvas = Image.new("RGB", (W, H), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((pad, 4), title, fill="black", font=tfont)
    for i, (t, lb) in enumerate(zip(tiles, labels)):
        r, c = divmod(i, ncol)
        x0, y0 = pad + c * (tw + pad), top + pad + r * (th + lab_h + pad)
        canvas.paste(Image.fromarray(t), (x0, y0))
        draw.multiline_text((x0, y0 + th + 2), str(lb), fill="black", font=font, spacing=2)
    return canvas


def table_image(tables: Sequence[tuple[str, np.ndarray]], title: str | None = None, cell: int = 44) -> Image.Image:
    """Small integer matrices side by side, values printed in coloured cells
    (red negative, green positive, grey zero) -- the slide's ReLU tables."""
    font = pil_font(14)
    pad, head = 14, 22
    blocks = []
    for name, a in tables:
        a = np.asarray(a)
        h, w = a.shape
        im = Image.new("RGB", (w * cell, h * cell + head), "white")
        d = ImageDraw.Draw(im)
        d.text((2, 2), name, fill="black", font=font)
        for i in range(h):
            for j in range(w):
                v = float(a[i, j])
                col = (250, 200, 200) if v < 0 else ((200, 240, 200) if v > 0 else (225, 225, 225))
                box = (j * cell, head + i * cell, (j + 1) * cell - 1, head + (i + 1) * cell - 1)
                d.rectangle(box, fill=col, outline="black")
                s = f"{v:g}"
                d.text((box[0] + cell // 2 - 4 * len(s), box[1] + cell // 2 - 8), s, fill="black", font=font)
        blocks.append(im)
    top = 26 if title else 0
    W = pad + sum(b.width + pad for b in blocks)
    H = top + pad + max(b.height for b in blocks) + pad
    canvas = Image.new("RGB", (W, H), "white")
    if title:
        ImageDraw.Draw(canvas).text((pad, 6), title, fill="black", font=pil_font(15))
    x = pad
    for b in blocks:
        canvas.paste(b, (x, top + pad))
        x += b.width + pad
    return canvas


def heat(sal: np.ndarray) -> np.ndarray:
    """A saliency map (H, W) as a grey picture, brightest = most salient (99th percentile clip)."""
    return te_image.normalize_display(sal, mode="abs", percentile=99)


def signed_heat(m: np.ndarray) -> np.ndarray:
    """A signed map (H, W) as colour: red where positive, blue where negative, white at 0
    (scaled by the 99th percentile of |m|)."""
    m = np.asarray(m, np.float64)
    s = np.percentile(np.abs(m), 99) or 1.0
    v = np.clip(m / s, -1, 1)[..., None]
    out = 1 - np.abs(v) * np.where(v > 0, [0, 1, 1], [1, 1, 0])
    return (out * 255 + 0.5).astype(np.uint8)


def cam_overlay(img: np.ndarray, cam: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """A class activation map (H, W), >= 0, in the jet colours laid over the picture
    (uint8 (H, W, 3)), as Grad-CAM's figures show it."""
    jet = cv2.applyColorMap(normalize_cam(cam), cv2.COLORMAP_JET)[..., ::-1]
    return (alpha * as_rgb(img) + (1 - alpha) * jet + 0.5).astype(np.uint8)


def normalize_cam(cam: np.ndarray) -> np.ndarray:
    """(H, W) >= 0 -> uint8 0..255, divided by its maximum (an all-zero map stays 0)."""
    cam = np.maximum(np.asarray(cam, np.float64), 0)
    return (255 * cam / (cam.max() or 1.0) + 0.5).astype(np.uint8)


def grad_picture(g: np.ndarray) -> np.ndarray:
    """A (C, H, W) input gradient as a colour picture (min-max, 0.5% clipped on each side)."""
    return te_image.normalize_display(g, mode="minmax", percentile=99.5)


#: how each kind of map is drawn (te.explain.methods.PICTURES names the kinds; "mask" is ``overlay``)
PICTURES = {
    "heat": lambda values, picture: heat(values),
    "gradient": lambda values, picture: grad_picture(values),
    "cam": lambda values, picture: cam_overlay(picture, values),
    "positive-heat": lambda values, picture: heat(np.maximum(values, 0)),
    "signed": lambda values, picture: signed_heat(values.sum(0)),
}


def method_picture(method: str, values: np.ndarray, picture: np.ndarray) -> np.ndarray:
    """How the CLI, the explorer and the figures show one image's map of a method (not upscaled):
    as its registry entry's ``picture`` says (te.explain.methods: heat, gradient, cam,
    positive-heat, signed; :data:`PICTURES`).

    ``values`` is what te.explain returned for that image, (C, H, W) or (H, W); ``picture``
    the image, uint8 (H, W, 3) (Grad-CAM is laid over it).  A method drawn as a GrabCut mask
    has no picture of its map here (``overlay`` draws the mask)."""
    from ..explain.methods import get
    kind = get(method).picture
    if kind not in PICTURES:
        raise ValueError(f"no picture for method {method!r} (it is drawn as {kind!r})")
    return PICTURES[kind](values, picture)


def overlay(img: np.ndarray, mask: np.ndarray | None = None, box: Sequence[int] | None = None,
            truth_box: Sequence[int] | None = None) -> np.ndarray:
    """The picture (H, W[, 3]) upscaled, with ``mask`` (bool (H, W)) tinted red and the boxes
    (x0, y0, x1, y1) drawn: ``box`` green (what was found), ``truth_box`` blue (the truth)."""
    out = as_rgb(img).copy()
    if mask is not None:
        tint = out.astype(np.float32)
        tint[mask] = 0.5 * tint[mask] + 0.5 * np.array([255, 40, 40])
        out = tint.astype(np.uint8)
    out = upscale(out)
    k = out.shape[0] // img.shape[0]
    for b, col in ((truth_box, (40, 90, 255)), (box, (0, 220, 0))):
        if b is not None and b[2] > b[0]:
            cv2.rectangle(out, (int(b[0]) * k, int(b[1]) * k), (int(b[2]) * k - 1, int(b[3]) * k - 1), col, 2)
    return out


def save_png(im: Image.Image | np.ndarray, path: str | os.PathLike) -> None:
    """Write a PIL image (or uint8 array) as PNG through the one safe writer."""
    if isinstance(im, np.ndarray):
        im = Image.fromarray(im)
    with atomic_write(path) as f:
        im.save(f, format="PNG")
