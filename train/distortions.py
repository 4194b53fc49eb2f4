"""Synthetic distortions of uint8 RGB photos, each at a strength: pure functions.

Used by the distortion ladders (``train.ladder``) and by the ranking pairs of synthetic
training (``train.synthetic``). Strength grows with the number except for JPEG, where it
is the quality setting (lower = stronger).
"""

from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image


def blur(rgb: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(rgb, (0, 0), float(sigma)) if sigma > 0 else rgb


def noise(rgb: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    if sigma <= 0:
        return rgb
    n = np.random.default_rng(seed).normal(0, float(sigma), rgb.shape)
    return np.clip(rgb + n, 0, 255).astype(np.uint8)


def jpeg(rgb: np.ndarray, quality: float) -> np.ndarray:
    if quality >= 100:
        return rgb
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=int(round(quality)))
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def downscale(rgb: np.ndarray, factor: float) -> np.ndarray:
    if factor <= 1:
        return rgb
    h, w = rgb.shape[:2]
    return cv2.resize(rgb, (max(32, round(w / factor)), max(32, round(h / factor))), interpolation=cv2.INTER_AREA)


DISTORTIONS = {"blur": blur, "noise": noise, "jpeg": jpeg, "downscale": downscale}
