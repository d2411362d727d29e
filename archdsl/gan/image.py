"""Pictures of generated samples, written as PNG with zlib alone (no imaging library needed).

    grid = image_grid(samples)            # [N, 1, H, W] / [N, 3, H, W] / [N, H, W] -> uint8 picture
    write_png("samples.png", grid)        # atomically
    write_png("ring.png", scatter(points))   # [N, 2] points -> a scatter plot

Values are mapped to 0..255 from the range the samples are in: [-1, 1] (a Tanh output) when
they fit it and go below 0, else [0, 1] when they fit that, else their own min..max.
"""
from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path

import numpy as np

from ..errors import ArchError
from ..fileio import atomic_path


def is_image_batch(shape: tuple) -> bool:
    """[N, 1|3, H, W] or [N, H, W] with H, W >= 2."""
    if len(shape) == 4:
        return shape[1] in (1, 3) and shape[2] >= 2 and shape[3] >= 2
    return len(shape) == 3 and shape[1] >= 2 and shape[2] >= 2


def value_range(x: np.ndarray) -> tuple[float, float]:
    lo, hi = float(np.min(x)), float(np.max(x))
    if lo >= -1.0 and hi <= 1.0 and lo < 0.0:
        return -1.0, 1.0
    if lo >= 0.0 and hi <= 1.0:
        return 0.0, 1.0
    return lo, (hi if hi > lo else lo + 1.0)


def image_grid(samples: np.ndarray, cols: int | None = None, scale: int | None = None, pad: int = 1,
               vrange: tuple[float, float] | None = None) -> np.ndarray:
    """Tile images into one uint8 picture ([H, W] grey or [H, W, 3] colour). `scale` repeats each
    pixel (default: enough to make each image at least 32 pixels high); `pad` pixels of grey
    separate the tiles."""
    x = np.asarray(samples, dtype=np.float64)
    if not is_image_batch(x.shape):
        raise ArchError(f"samples of shape {list(x.shape)} are not images ([N, 1, H, W], [N, 3, H, W] or "
                        f"[N, H, W])", hint="write them to an .npy file instead")
    if x.ndim == 3:
        x = x[:, None]
    n, c, h, w = x.shape
    lo, hi = vrange if vrange is not None else value_range(x)
    img = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    img = np.nan_to_num(img, nan=0.0)
    img = (img * 255.0 + 0.5).astype(np.uint8)
    if scale is None:
        scale = max(1, -(-32 // max(h, w)))
    if scale > 1:
        img = img.repeat(scale, axis=2).repeat(scale, axis=3)
        h, w = h * scale, w * scale
    cols = cols or int(math.ceil(math.sqrt(n)))
    rows = -(-n // cols)
    out = np.full((c, rows * (h + pad) + pad, cols * (w + pad) + pad), 128, dtype=np.uint8)
    for i in range(n):
        r, k = divmod(i, cols)
        y0, x0 = pad + r * (h + pad), pad + k * (w + pad)
        out[:, y0:y0 + h, x0:x0 + w] = img[i]
    return out[0] if c == 1 else out.transpose(1, 2, 0)


def scatter(points: np.ndarray, size: int = 480, lim: float | None = None, dot: int = 2) -> np.ndarray:
    """2-D points [N, 2] drawn dark on white, with faint axes through 0; the view is square and
    symmetric about the origin (half-width `lim`, default: the largest |coordinate| plus 10%)."""
    p = np.asarray(points, dtype=np.float64).reshape(len(points), -1)
    if p.shape[1] != 2:
        raise ArchError(f"a scatter plot needs 2-D points [N, 2], got {list(np.shape(points))}")
    p = p[np.isfinite(p).all(axis=1)]
    if lim is None:
        lim = 1.1 * float(np.abs(p).max()) if len(p) else 1.0
        lim = lim if lim > 0 else 1.0
    img = np.full((size, size), 255, dtype=np.uint8)
    mid = size // 2
    img[mid, :] = 220
    img[:, mid] = 220
    px = np.round((p[:, 0] + lim) / (2 * lim) * (size - 1)).astype(np.int64)
    py = np.round((lim - p[:, 1]) / (2 * lim) * (size - 1)).astype(np.int64)
    keep = (px >= 0) & (px < size) & (py >= 0) & (py < size)
    px, py = px[keep], py[keep]
    for dy in range(dot):
        for dx in range(dot):
            img[np.clip(py + dy, 0, size - 1), np.clip(px + dx, 0, size - 1)] = 30
    return img


def png_bytes(img: np.ndarray) -> bytes:
    """PNG encoding of a uint8 picture [H, W] (grey) or [H, W, 3] (RGB)."""
    a = np.ascontiguousarray(img, dtype=np.uint8)
    if a.ndim == 2:
        color, channels = 0, 1
    elif a.ndim == 3 and a.shape[2] == 3:
        color, channels = 2, 3
    else:
        raise ArchError(f"cannot write a picture of shape {list(a.shape)} as PNG")
    h, w = a.shape[:2]
    rows = a.reshape(h, w * channels)
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rows], axis=1).tobytes()   # filter 0 per row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, color, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def write_png(path, img: np.ndarray) -> Path:
    path = Path(path)
    data = png_bytes(img)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
    return path


def read_png(path) -> np.ndarray:
    """Decode a PNG written by `write_png` (8-bit grey or RGB, filter 0): for tests and checks."""
    data = Path(path).read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ArchError(f"'{path}' is not a PNG file")
    pos, idat, w = 8, b"", None
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            w, h, depth, color = struct.unpack(">IIBB", body[:10])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    ch = 1 if color == 0 else 3
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 1 + w * ch)
    if raw[:, 0].any():
        raise ArchError(f"'{path}' uses PNG row filters this reader does not decode")
    img = raw[:, 1:].reshape(h, w, ch)
    return img[:, :, 0] if ch == 1 else img
