"""Image loading and the input policy: how any image becomes the model's input.

The policy, decided once and used by training, evaluation, the CLI, the Python API and
the app:

1. Decode to 8-bit RGB, upright: EXIF orientation is applied; grayscale, palette, CMYK
   and 16-bit images are converted; transparency is composited over white; of an
   animated image (GIF, APNG, WebP) the first frame is scored.
2. Refuse what cannot be judged: a shorter side under ``MIN_SIDE`` pixels, or more than
   ``MAX_PIXELS`` pixels that cannot be decoded at reduced size (decompression bombs).
   Large JPEGs are decoded at 1/2, 1/4 or 1/8 scale by the JPEG decoder itself (never
   below the model's input size), so memory stays bounded and decoding is fast.
3. Resize the whole image to a ``size`` x ``size`` square (area averaging when shrinking,
   bicubic when enlarging); the aspect ratio is not kept.

Why a whole-image square: BIQ2021, the training set, is 512x512, so at 512 px the model
sees photos at the scale it learnt from; the whole frame is judged (a crop can cut away
the defect people react to); and one fixed shape lets images batch through one compiled
graph. The cost: a very wide or tall photo is squeezed, and at 512 px very fine noise in
a large photo is partly averaged away, as it is on a screen that shows the whole photo.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from afiqa.errors import ImageError

MIN_SIDE = 32
MAX_PIXELS = 64_000_000
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".jfif", ".ppm", ".pgm"}
)

ImageSource = Union[str, os.PathLike, bytes, Image.Image, np.ndarray]

# PIL's own bomb check would otherwise warn or raise before we can decide ourselves.
Image.MAX_IMAGE_PIXELS = None


def load_rgb(source: ImageSource, min_size: int = 0) -> np.ndarray:
    """Decode ``source`` (a path, encoded bytes, a PIL image or an array) to uint8 RGB.

    ``min_size``: for large JPEG files, let the decoder reduce the image as long as
    both sides stay at least this large (0: full resolution).
    Raises ``ImageError`` with a one-sentence reason for anything it cannot score.
    """
    if isinstance(source, np.ndarray):
        rgb = _array_to_rgb(source)
    elif isinstance(source, Image.Image):
        rgb = _pil_to_rgb(source, min_size=0)
    elif isinstance(source, (bytes, bytearray)):
        rgb = _open_and_convert(io.BytesIO(source), "the given bytes", min_size)
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise ImageError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
        if path.stat().st_size == 0:
            raise ImageError(f"{path.name}: the file is empty")
        rgb = _open_and_convert(path, path.name, min_size)
    else:
        raise ImageError(
            f"cannot read an image from a {type(source).__name__}; "
            "give a file path, bytes, a PIL image or a NumPy array"
        )
    h, w = rgb.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise ImageError(f"the image is {w}x{h} pixels; afiqa needs at least {MIN_SIDE} px on each side")
    return rgb


def to_model_input(rgb: np.ndarray, size: int) -> np.ndarray:
    """Resize uint8 RGB (H, W, 3) to the float32 (size, size, 3) model input in 0..255."""
    import cv2

    h, w = rgb.shape[:2]
    if (h, w) != (size, size):
        interp = cv2.INTER_AREA if h * w >= size * size else cv2.INTER_CUBIC
        rgb = cv2.resize(rgb, (size, size), interpolation=interp)  # uint8 in, uint8 out: clipped
    return rgb.astype(np.float32)


def load_model_input(source: ImageSource, size: int) -> np.ndarray:
    """``load_rgb`` then ``to_model_input``: the whole input policy in one call."""
    return to_model_input(load_rgb(source, min_size=size), size)


def list_images(paths: list[str | os.PathLike]) -> list[Path]:
    """Expand directories (recursively, sorted) into the image files inside them.

    Files named explicitly are kept whatever their extension, so that a bad file given
    by name is reported rather than silently skipped.
    """
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(
                sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
            )
        else:
            out.append(p)
    return out


def _open_and_convert(fp, name: str, min_size: int) -> np.ndarray:
    try:
        with Image.open(fp) as img:
            w, h = img.size
            if min_size and img.format == "JPEG" and min(w, h) >= 2 * min_size:
                img.draft("RGB", (min_size, min_size))  # DCT-domain downscale, >= min_size
            if img.size[0] * img.size[1] > MAX_PIXELS:
                raise ImageError(
                    f"{name}: {w}x{h} is {w * h / 1e6:.0f} megapixels, over afiqa's limit of "
                    f"{MAX_PIXELS / 1e6:.0f}; downscale it first"
                )
            return _pil_to_rgb(img, min_size)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image file afiqa can read") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:  # truncated or corrupt data
        raise ImageError(f"{name}: the image data is corrupt or truncated ({_short(e)})") from None


def _pil_to_rgb(img: Image.Image, min_size: int) -> np.ndarray:
    if getattr(img, "n_frames", 1) > 1:
        img.seek(0)  # animated: the first frame is scored
    img = ImageOps.exif_transpose(img)
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return _array_to_rgb(np.asarray(img))
    if mode == "P":
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    rgb = np.asarray(img.convert("RGB"))
    return np.ascontiguousarray(rgb)


def _array_to_rgb(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise ImageError(f"expected an array of shape (H, W), (H, W, 3) or (H, W, 4); got {a.shape}")
    if a.size == 0:
        raise ImageError(f"the array is empty (shape {a.shape})")
    if a.dtype == np.uint8:
        u8 = a
    elif a.dtype == np.uint16 or (a.dtype.kind in "iu" and a.max() > 255):
        if a.min() < 0 or a.max() > 65535:
            raise ImageError(f"integer pixels must lie in 0..65535; got {a.min()}..{a.max()}")
        u8 = np.round(a.astype(np.float32) / 257.0).astype(np.uint8)
    elif a.dtype.kind in "iu":
        if a.min() < 0:
            raise ImageError(f"integer pixels must not be negative; got minimum {a.min()}")
        u8 = a.astype(np.uint8)
    elif a.dtype.kind == "f":
        if not np.isfinite(a).all():
            raise ImageError("the array holds NaN or infinite values")
        lo, hi = float(a.min()), float(a.max())
        if lo < 0.0 or hi > 1.0:
            raise ImageError(
                f"float pixels must lie in [0, 1]; got {lo:g}..{hi:g} (give uint8 for 0..255)"
            )
        u8 = np.round(a * 255.0).astype(np.uint8)
    elif a.dtype == bool:
        u8 = a.astype(np.uint8) * 255
    else:
        raise ImageError(f"unsupported pixel type {a.dtype}")
    if u8.ndim == 2:
        u8 = np.repeat(u8[:, :, None], 3, axis=2)
    elif u8.shape[2] == 4:
        alpha = u8[:, :, 3:4].astype(np.float32) / 255.0
        u8 = np.round(u8[:, :, :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    return np.ascontiguousarray(u8)


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text[:120]
