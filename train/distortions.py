"""Synthetic distortions of uint8 RGB photos, each at a strength: pure functions.

A catalogue modelled on KADID-10k's 25 kinds (Lin et al., QoMEX 2019): blurs, noises,
compressions, colour changes, brightness and contrast changes, spatial distortions and
quantization. Each ``Kind`` has a function ``(rgb, strength, seed) -> rgb``, a ladder of
five strengths (untouched first, then stronger and stronger) and the ranges a moderate
and a strong training copy are drawn from.

``HELD_OUT`` kinds are never used for training (``train.synthetic``): the ladders
(``train.ladder``) check on them that scores fall for distortions the model has not
seen, one from each family (a blur, a noise, a compression, a spatial distortion, a
brightness change).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(x, np.float32) + 0.5, 0, 255).astype(np.uint8)


def blur(rgb: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    return cv2.GaussianBlur(rgb, (0, 0), float(sigma)) if sigma > 0 else rgb


def lens_blur(rgb: np.ndarray, radius: float, seed: int = 0) -> np.ndarray:
    """A defocus blur: the mean over a disc of ``radius`` px."""
    if radius <= 0:
        return rgb
    r = int(np.ceil(radius))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    disc = (xx**2 + yy**2 <= radius**2).astype(np.float32)
    return _u8(cv2.filter2D(rgb.astype(np.float32), -1, disc / disc.sum(), borderType=cv2.BORDER_REFLECT))


def motion_blur(rgb: np.ndarray, length: float, seed: int = 0) -> np.ndarray:
    """A straight camera shake of ``length`` px at a seeded angle."""
    n = int(round(length))
    if n <= 1:
        return rgb
    k = np.zeros((n, n), np.float32)
    k[n // 2, :] = 1.0
    angle = float(np.random.default_rng(seed).uniform(0, 180))
    k = cv2.warpAffine(k, cv2.getRotationMatrix2D(((n - 1) / 2, (n - 1) / 2), angle, 1.0), (n, n))
    return _u8(cv2.filter2D(rgb.astype(np.float32), -1, k / max(k.sum(), 1e-6), borderType=cv2.BORDER_REFLECT))


def noise(rgb: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    if sigma <= 0:
        return rgb
    n = np.random.default_rng(seed).normal(0, float(sigma), rgb.shape)
    return np.clip(rgb + n, 0, 255).astype(np.uint8)


def chroma_noise(rgb: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    """White noise in the two colour-difference channels only (YCrCb)."""
    if sigma <= 0:
        return rgb
    ycc = cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb).astype(np.float32)
    ycc[..., 1:] += np.random.default_rng(seed).normal(0, float(sigma), ycc[..., 1:].shape)
    return cv2.cvtColor(_u8(ycc), cv2.COLOR_YCrCb2RGB)


def impulse(rgb: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """Salt and pepper: ``fraction`` of the pixels set to black or white."""
    if fraction <= 0:
        return rgb
    rng = np.random.default_rng(seed)
    out = rgb.copy()
    hit = rng.random(rgb.shape[:2]) < fraction
    out[hit] = np.where(rng.random(int(hit.sum())) < 0.5, 0, 255)[:, None]
    return out


def speckle(rgb: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    """Multiplicative noise: each pixel times (1 + N(0, sigma))."""
    if sigma <= 0:
        return rgb
    n = np.random.default_rng(seed).normal(0, float(sigma), rgb.shape[:2] + (1,))
    return _u8(rgb * (1.0 + n))


def _reencode(rgb: np.ndarray, fmt: str, **options) -> np.ndarray:
    """``rgb`` saved by Pillow as ``fmt`` with ``options`` and decoded again."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, fmt, **options)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def jpeg(rgb: np.ndarray, quality: float, seed: int = 0) -> np.ndarray:
    return rgb if quality >= 100 else _reencode(rgb, "JPEG", quality=int(round(quality)))


def jpeg2000(rgb: np.ndarray, ratio: float, seed: int = 0) -> np.ndarray:
    """JPEG 2000 at a compression ratio (ringing and blur rather than blocks)."""
    return rgb if ratio <= 1 else _reencode(rgb, "JPEG2000", quality_mode="rates", quality_layers=[float(ratio)])


def colour_quantize(rgb: np.ndarray, colours: float, seed: int = 0) -> np.ndarray:
    """A palette of ``colours`` colours (median cut), no dithering: banding."""
    if colours >= 256:
        return rgb
    img = Image.fromarray(rgb).quantize(int(colours), method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    return np.asarray(img.convert("RGB"))


def posterize(rgb: np.ndarray, bits: float, seed: int = 0) -> np.ndarray:
    """Each channel quantized to ``bits`` bits (grey-level quantization)."""
    if bits >= 8:
        return rgb
    step = 256 // (2 ** int(bits))
    return (rgb // step * step + step // 2).astype(np.uint8)


def desaturate(rgb: np.ndarray, amount: float, seed: int = 0) -> np.ndarray:
    """Blend towards grey by ``amount`` (1: grey)."""
    if amount <= 0:
        return rgb
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)[..., None].astype(np.float32)
    return _u8((1 - amount) * rgb + amount * grey)


def oversaturate(rgb: np.ndarray, factor: float, seed: int = 0) -> np.ndarray:
    """Saturation (HSV) multiplied by ``factor``."""
    if factor <= 1:
        return rgb
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 1] *= float(factor)
    return cv2.cvtColor(_u8(hsv), cv2.COLOR_HSV2RGB)


def colour_shift(rgb: np.ndarray, pixels: float, seed: int = 0) -> np.ndarray:
    """The red and blue channels moved apart by ``pixels`` (misregistered colours)."""
    p = int(round(pixels))
    if p <= 0:
        return rgb
    out = rgb.copy()
    out[..., 0] = np.roll(rgb[..., 0], p, axis=1)
    out[..., 2] = np.roll(rgb[..., 2], -p, axis=0)
    return out


def darken(rgb: np.ndarray, gamma: float, seed: int = 0) -> np.ndarray:
    """A gamma curve > 1: shadows sink."""
    return rgb if gamma <= 1 else _u8(255.0 * (rgb / 255.0) ** float(gamma))


def brighten(rgb: np.ndarray, gamma: float, seed: int = 0) -> np.ndarray:
    """The inverse of ``darken``: highlights wash out."""
    return rgb if gamma <= 1 else _u8(255.0 * (rgb / 255.0) ** (1.0 / float(gamma)))


def resample_blur(rgb: np.ndarray, factor: float, seed: int = 0) -> np.ndarray:
    """Down by ``factor`` (area) and back up (bilinear): the softness of an upscaled photo."""
    if factor <= 1:
        return rgb
    h, w = rgb.shape[:2]
    small = cv2.resize(rgb, (max(8, round(w / factor)), max(8, round(h / factor))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def shot_noise(rgb: np.ndarray, photons: float, seed: int = 0) -> np.ndarray:
    """Poisson noise of a sensor that caught ``photons`` photons at full white (fewer: noisier)."""
    if photons <= 0:
        return rgb
    rng = np.random.default_rng(seed)
    return _u8(rng.poisson(rgb.astype(np.float64) / 255.0 * photons) / photons * 255.0)


def webp(rgb: np.ndarray, quality: float, seed: int = 0) -> np.ndarray:
    """WebP (lossy) at ``quality``: smoothing and blocks of another codec than JPEG."""
    return rgb if quality >= 100 else _reencode(rgb, "WEBP", quality=int(round(quality)))


def colour_cast(rgb: np.ndarray, amount: float, seed: int = 0) -> np.ndarray:
    """A white-balance error: the channels scaled towards a seeded tint by ``amount``."""
    if amount <= 0:
        return rgb
    tint = np.random.default_rng(seed).dirichlet(np.ones(3)) * 3.0  # mean 1 per channel
    return _u8(rgb * (1 + float(amount) * (tint - 1)))


def chroma_bleed(rgb: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    """The colour-difference channels (YCrCb) blurred: colours bleed over edges."""
    if sigma <= 0:
        return rgb
    ycc = cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb)
    for c in (1, 2):
        ycc[..., c] = cv2.GaussianBlur(ycc[..., c], (0, 0), float(sigma))
    return cv2.cvtColor(ycc, cv2.COLOR_YCrCb2RGB)


def underexpose(rgb: np.ndarray, stops: float, seed: int = 0) -> np.ndarray:
    """Every value divided by ``stops`` (a linear exposure cut; 1: untouched)."""
    return rgb if stops <= 1 else _u8(rgb / float(stops))


def overexpose(rgb: np.ndarray, gain: float, seed: int = 0) -> np.ndarray:
    """Every value multiplied by ``gain`` and clipped: highlights burn out."""
    return rgb if gain <= 1 else _u8(rgb * float(gain))


def haze(rgb: np.ndarray, amount: float, seed: int = 0) -> np.ndarray:
    """A veil: blend towards a light grey by ``amount`` (contrast lost, blacks lifted)."""
    return rgb if amount <= 0 else _u8((1 - amount) * rgb + amount * 225.0)


def contrast(rgb: np.ndarray, amount: float, seed: int = 0) -> np.ndarray:
    """Contrast cut by ``amount`` (blend towards the mean grey; 1: flat)."""
    if amount <= 0:
        return rgb
    return _u8((1 - amount) * rgb + amount * rgb.mean())


def sharpen(rgb: np.ndarray, amount: float, seed: int = 0) -> np.ndarray:
    """Unsharp masking overdone: haloes and amplified grain."""
    if amount <= 0:
        return rgb
    soft = cv2.GaussianBlur(rgb.astype(np.float32), (0, 0), 2.0)
    return _u8(rgb + float(amount) * (rgb - soft))


def jitter(rgb: np.ndarray, pixels: float, seed: int = 0) -> np.ndarray:
    """Every pixel taken from a random neighbour up to ``pixels`` away."""
    if pixels <= 0:
        return rgb
    h, w = rgb.shape[:2]
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    dy = rng.uniform(-pixels, pixels, (h, w))
    dx = rng.uniform(-pixels, pixels, (h, w))
    return cv2.remap(rgb, (xx + dx).astype(np.float32), (yy + dy).astype(np.float32), cv2.INTER_NEAREST,
                     borderMode=cv2.BORDER_REFLECT)


def _patches(rgb: np.ndarray, count: float, seed: int, fill) -> np.ndarray:
    n = int(round(count))
    if n <= 0:
        return rgb
    h, w = rgb.shape[:2]
    side = max(4, min(h, w) // 20)
    rng = np.random.default_rng(seed)
    out = rgb.copy()
    for _ in range(n):
        y, x = int(rng.integers(0, h - side)), int(rng.integers(0, w - side))
        out[y : y + side, x : x + side] = fill(rng, y, x, side)
    return out


def patch_swap(rgb: np.ndarray, count: float, seed: int = 0) -> np.ndarray:
    """``count`` small squares replaced by a copy of a nearby square (KADID's
    non-eccentricity patch)."""
    h, w = rgb.shape[:2]

    def nearby(rng, y, x, side):
        yy = int(np.clip(y + rng.integers(-2 * side, 2 * side + 1), 0, h - side))
        xx = int(np.clip(x + rng.integers(-2 * side, 2 * side + 1), 0, w - side))
        return rgb[yy : yy + side, xx : xx + side]

    return _patches(rgb, count, seed, nearby)


def colour_block(rgb: np.ndarray, count: float, seed: int = 0) -> np.ndarray:
    """``count`` small squares of a random flat colour."""
    return _patches(rgb, count, seed, lambda rng, y, x, side: rng.integers(0, 256, 3, dtype=np.uint8))


def pixelate(rgb: np.ndarray, block: float, seed: int = 0) -> np.ndarray:
    """Blocks of ``block`` px share one value (nearest-neighbour up from a small copy)."""
    b = int(round(block))
    if b <= 1:
        return rgb
    h, w = rgb.shape[:2]
    small = cv2.resize(rgb, (max(1, w // b), max(1, h // b)), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)


def downscale(rgb: np.ndarray, factor: float, seed: int = 0) -> np.ndarray:
    if factor <= 1:
        return rgb
    h, w = rgb.shape[:2]
    return cv2.resize(rgb, (max(32, round(w / factor)), max(32, round(h / factor))), interpolation=cv2.INTER_AREA)


@dataclass(frozen=True)
class Kind:
    fn: Callable[[np.ndarray, float, int], np.ndarray]
    ladder: tuple[float, ...]  # five strengths: untouched, then stronger and stronger
    moderate: tuple[float, float] | None = None  # ranges the training copies are drawn from
    strong: tuple[float, float] | None = None


CATALOGUE: dict[str, Kind] = {
    # blurs
    "blur": Kind(blur, (0, 1, 2, 4, 8), (1.5, 3.0), (5.0, 10.0)),
    "lens_blur": Kind(lens_blur, (0, 1.5, 3, 5, 8), (2.0, 3.5), (5.0, 9.0)),
    "motion_blur": Kind(motion_blur, (0, 4, 8, 14, 24)),
    # noises
    "noise": Kind(noise, (0, 5, 10, 20, 40), (8.0, 16.0), (28.0, 50.0)),
    "chroma_noise": Kind(chroma_noise, (0, 6, 12, 24, 48), (10.0, 20.0), (35.0, 60.0)),
    "impulse": Kind(impulse, (0, 0.005, 0.01, 0.03, 0.08), (0.004, 0.012), (0.03, 0.08)),
    "speckle": Kind(speckle, (0, 0.05, 0.1, 0.2, 0.4)),
    # compressions
    "jpeg": Kind(jpeg, (100, 40, 20, 10, 4), (15.0, 30.0), (3.0, 8.0)),
    "jpeg2000": Kind(jpeg2000, (1, 20, 50, 120, 300)),
    # colour
    "colour_quantize": Kind(colour_quantize, (256, 64, 24, 12, 6), (20.0, 40.0), (5.0, 10.0)),
    "desaturate": Kind(desaturate, (0, 0.3, 0.5, 0.75, 1.0), (0.4, 0.6), (0.85, 1.0)),
    "oversaturate": Kind(oversaturate, (1, 1.5, 2, 3, 4), (1.6, 2.2), (3.0, 4.5)),
    "colour_shift": Kind(colour_shift, (0, 1, 3, 6, 10), (2.0, 4.0), (7.0, 12.0)),
    # brightness and contrast
    "darken": Kind(darken, (1, 1.4, 2, 3, 4.5)),
    "brighten": Kind(brighten, (1, 1.4, 2, 3, 4.5), (1.6, 2.2), (3.0, 4.5)),
    "contrast": Kind(contrast, (0, 0.2, 0.4, 0.6, 0.8), (0.3, 0.5), (0.65, 0.85)),
    # for the problem head (train.problems) only: never in the score's training
    "underexpose": Kind(underexpose, (1, 1.3, 1.8, 2.6, 4)),
    "overexpose": Kind(overexpose, (1, 1.25, 1.6, 2.1, 2.8)),
    "haze": Kind(haze, (0, 0.2, 0.35, 0.5, 0.7)),
    "resample_blur": Kind(resample_blur, (1, 1.5, 2.5, 4, 6)),
    "shot_noise": Kind(shot_noise, (0, 400, 150, 50, 15)),
    "webp": Kind(webp, (100, 30, 15, 6, 1)),
    "colour_cast": Kind(colour_cast, (0, 0.1, 0.2, 0.35, 0.5)),
    "chroma_bleed": Kind(chroma_bleed, (0, 2, 4, 8, 14)),
    "posterize": Kind(posterize, (8, 5, 4, 3, 2), (3.5, 4.5), (2.0, 2.5)),
    "sharpen": Kind(sharpen, (0, 1, 2, 4, 8), (1.5, 3.0), (5.0, 9.0)),
    # spatial
    "jitter": Kind(jitter, (0, 0.7, 1.5, 3, 5), (1.0, 2.0), (3.0, 5.0)),
    "patch_swap": Kind(patch_swap, (0, 10, 25, 50, 100), (15.0, 30.0), (60.0, 120.0)),
    "colour_block": Kind(colour_block, (0, 3, 8, 16, 32), (4.0, 8.0), (16.0, 32.0)),
    "pixelate": Kind(pixelate, (1, 2, 4, 8, 16)),
    "downscale": Kind(downscale, (1, 2, 3, 4, 6)),
}

# Never in training: one from each family, for the ladders' transfer check. Downscaling
# is never in training either (a smaller photo, not a distorted one).
HELD_OUT = ("motion_blur", "speckle", "jpeg2000", "pixelate", "darken")
TRAINING = tuple(k for k, v in CATALOGUE.items() if v.moderate is not None)

# What the synthetic pairs used before the catalogue (``train.synthetic.kinds``).
CLASSIC = ("blur", "noise", "jpeg")

DISTORTIONS = {name: kind.fn for name, kind in CATALOGUE.items()}


def apply(rgb: np.ndarray, kind: str, strength: float, seed: int = 0) -> np.ndarray:
    """``kind`` at ``strength`` on uint8 RGB, seeded where the distortion is random."""
    return CATALOGUE[kind].fn(rgb, strength, seed)
