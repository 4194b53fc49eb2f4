"""Small synthetic photos for tests: a textured scene, and distorted copies of it."""

from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image, ImageDraw


def scene(seed: int = 0, size: tuple[int, int] = (160, 120)) -> np.ndarray:
    """A uint8 RGB (H, W, 3) scene with gradients, shapes, edges and fine texture."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([xx / w * 200 + 30, yy / h * 180 + 40, (xx + yy) / (w + h) * 150 + 60], -1)
    img = Image.fromarray(base.astype(np.uint8))
    d = ImageDraw.Draw(img)
    for _ in range(12):
        x0, y0 = rng.integers(0, w), rng.integers(0, h)
        x1, y1 = x0 + rng.integers(8, w // 2), y0 + rng.integers(8, h // 2)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (d.ellipse if rng.random() < 0.5 else d.rectangle)([x0, y0, x1, y1], fill=colour, outline=(0, 0, 0))
    for k in range(0, w, 6):
        d.line([k, int(h * 0.8), k + 3, h], fill=(250, 250, 250))
    arr = np.asarray(img).astype(np.float32)
    arr += rng.normal(0, 4, arr.shape)  # sensor-like grain
    return np.clip(arr, 0, 255).astype(np.uint8)


def blur(rgb: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(rgb, (0, 0), sigma) if sigma > 0 else rgb


def jpeg_bytes(rgb: np.ndarray, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=quality)
    return buf.getvalue()
