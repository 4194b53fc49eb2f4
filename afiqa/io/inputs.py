"""Image loading and the input policy: how any image becomes the model's input.

The policy, decided once and used by training, evaluation, the CLI, the Python API and
the app:

1. Decode to 8-bit RGB, upright: EXIF orientation is applied; grayscale, 1-bit, palette,
   CMYK (Adobe's inverted CMYK included) and 16-bit images are converted (16-bit values
   map 0..65535 onto 0..255); transparency (an alpha channel, or a palette or colour-key
   ``tRNS`` entry) is composited over white; of an animated or multi-page image (GIF,
   APNG, WebP, TIFF, HEIF) the first frame is scored. Files are read as JPEG (and MPO),
   PNG, GIF, BMP, TIFF, WebP, AVIF, HEIC/HEIF (through ``pillow-heif``, registered when
   first needed) or PPM/PGM only; other formats are refused rather than handed to a
   rarely used decoder. Only regular files are read: a FIFO, a device or a folder is
   refused from its ``stat``, without being opened.
2. Refuse what cannot be judged, with one sentence that names the file: anything that
   does not decode completely (a truncated file is an error, never a half-grey image), a
   shorter side under ``MIN_SIDE`` pixels, or more than ``MAX_PIXELS`` pixels that
   cannot be decoded at reduced size (decompression bombs). Both sizes are checked from
   the header, before any pixel is decoded. Large JPEGs are decoded at 1/2, 1/4 or 1/8
   scale by the JPEG decoder itself (never below the model's input size), so memory
   stays bounded and decoding is fast.
3. Resize the whole image to a ``size`` x ``size`` square (area averaging when shrinking,
   bicubic when enlarging); the aspect ratio is not kept.

Why a whole-image square: BIQ2021, the training set, is 512x512, so at 512 px the model
sees photos at the scale it learnt from; the whole frame is judged (a crop can cut away
the defect people react to); and one fixed shape lets images batch through one compiled
graph. The cost: a very wide or tall photo is squeezed, and at 512 px very fine noise in
a large photo is partly averaged away, as it is on a screen that shows the whole photo.

Pillow's own decompression-bomb guard (``Image.MAX_IMAGE_PIXELS``, ~179 MP for an error)
is left in place for the whole process: afiqa's limit is lower, except that a JPEG
above ``MAX_PIXELS`` may still be read at reduced size, up to Pillow's limit.
"""

from __future__ import annotations

import io
import os
import re
import stat
import threading
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from PIL.JpegImagePlugin import JpegImageFile

from afiqa.errors import ImageError

MIN_SIDE = 32
MAX_PIXELS = 64_000_000
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jfif", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".avif", ".heic", ".heif", ".ppm",
     ".pgm"}
)
# Pillow format names tried when opening a file or bytes, in this order (MPO: multi-picture
# JPEGs from cameras, which Pillow opens as MPO).
FORMATS = ("JPEG", "MPO", "PNG", "GIF", "BMP", "TIFF", "WEBP", "AVIF", "HEIF", "PPM")
_FORMATS_TEXT = "JPEG, PNG, GIF, BMP, TIFF, WebP, AVIF, HEIC/HEIF or PPM"
_ORIENTATION = 0x0112  # EXIF tag

ImageSource = Union[str, os.PathLike, bytes, Image.Image, np.ndarray]

# Pillow warns (it does not refuse) between ~89 and ~179 MP; afiqa refuses such images
# itself unless they are JPEGs it can decode at reduced size, so the warning is noise.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def load_rgb(source: ImageSource, min_size: int = 0) -> np.ndarray:
    """Decode ``source`` (a path, encoded bytes, a PIL image or an array) to uint8 RGB.

    ``min_size``: for large JPEG files, let the decoder reduce the image as long as
    both sides stay at least this large (0: full resolution).
    Raises ``ImageError`` with a one-sentence reason, which starts with the file's path
    (or "image bytes", "PIL image", "array"), for anything it cannot score.
    """
    name = _name_of(source)
    try:
        if isinstance(source, np.ndarray):
            rgb = _array_to_rgb(source, name)
        elif isinstance(source, Image.Image):
            rgb = _pil_to_rgb(source, name)
        elif isinstance(source, (bytes, bytearray, memoryview)):
            if len(source) == 0:
                raise ImageError(f"{name}: there are no bytes (empty)")
            rgb = _open_and_convert(io.BytesIO(source), name, min_size)
        elif isinstance(source, (str, os.PathLike)):
            with _open_regular(source, name) as fh:
                rgb = _open_and_convert(fh, name, min_size)
        else:
            raise ImageError(
                f"cannot read an image from a {type(source).__name__}; "
                "give a file path, bytes, a PIL image or a NumPy array"
            )
    except ImageError:
        raise
    except MemoryError:
        raise ImageError(f"{name}: not enough memory to decode the image") from None
    except PermissionError:
        raise ImageError(f"{name}: permission denied") from None
    except Exception as e:  # a decoder's odd exception must not escape as a crash
        raise ImageError(f"{name}: could not be read ({_short(e)})") from None
    _check_sides(name, rgb.shape[1], rgb.shape[0])
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
    by name is reported rather than silently skipped. Inside directories, every entry
    named like an image is kept whatever it is (a FIFO, a device, a link to one, a
    folder named ``y.jpg``), and so is a subfolder that cannot be listed, so that
    ``load_rgb`` reports each instead of leaving it out. Hidden files and folders (a
    leading ".", e.g. macOS ``._IMG_1.jpg`` resource forks) are skipped; links to
    folders are not followed.
    """
    out: list[Path] = []
    for p in map(Path, paths):
        out.extend(_walk(p) if p.is_dir() else [p])
    return out


def _walk(root: Path) -> list[Path]:
    found: list[Path] = []

    def unreadable(err: OSError) -> None:  # a folder os.walk could not list: it gets a row
        found.append(Path(err.filename) if err.filename else root)

    for folder, dirs, files in os.walk(root, onerror=unreadable):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for entry in (*dirs, *files):
            if not entry.startswith(".") and Path(entry).suffix.lower() in IMAGE_EXTENSIONS:
                found.append(Path(folder, entry))
    return sorted(found)


def printable(text: str) -> str:
    """``text`` with control and other non-printing characters escaped (``\\n``,
    ``\\x1b``, ``\\u202e``): safe to print on a terminal, always one line."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


# -- decoding ----------------------------------------------------------------------------
def _name_of(source) -> str:
    if isinstance(source, (str, os.PathLike)):  # control characters escaped: messages stay one line
        return printable(os.fsdecode(source))
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "image bytes"
    if isinstance(source, Image.Image):
        return "PIL image"
    if isinstance(source, np.ndarray):
        return "array"
    return type(source).__name__


_KINDS = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"),
          (stat.S_ISSOCK, "a socket"))


def _open_regular(path, name: str):
    """The file at ``path`` opened for reading, if it is a regular, non-empty file.

    Anything else is refused from its ``stat`` (links followed), before any open: a FIFO
    would block and a device never ends. The open itself does not block either, and the
    opened file is checked again, in case the path changed in between.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ImageError(f"{name}: no such file" if not os.path.islink(path) else f"{name}: a broken link") from None
    _check_regular(st, path, name)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)
    try:
        _check_regular(os.fstat(fd), path, name)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def _check_regular(st: os.stat_result, path, name: str) -> None:
    if stat.S_ISDIR(st.st_mode):
        try:
            with os.scandir(path):
                pass
        except OSError as e:
            raise ImageError(
                f"{name}: a folder that could not be read ({e.strerror or type(e).__name__}); the images in it "
                "were not scored"
            ) from None
        raise ImageError(f"{name}: a folder, not an image file")
    for test, kind in _KINDS:
        if test(st.st_mode):
            raise ImageError(f"{name}: {kind}, not an image file; not read")
    if not stat.S_ISREG(st.st_mode):
        raise ImageError(f"{name}: not a regular file")
    if st.st_size == 0:
        raise ImageError(f"{name}: the file is empty")


def _check_sides(name: str, w: int, h: int) -> None:
    if min(w, h) < MIN_SIDE:
        raise ImageError(f"{name}: the image is {w}x{h} pixels; afiqa needs at least {MIN_SIDE} px on each side")


def _open_and_convert(fp, name: str, min_size: int) -> np.ndarray:
    try:
        with Image.open(fp, formats=_formats(heif=_iso_media(fp))) as img:
            w, h = img.size  # from the header: nothing is decoded yet
            _check_sides(name, w, h)
            if min_size and isinstance(img, JpegImageFile) and min(w, h) >= 2 * min_size:
                img.draft("RGB", (min_size, min_size))  # DCT-domain downscale, >= min_size
            if img.size[0] * img.size[1] > MAX_PIXELS:
                raise ImageError(
                    f"{name}: {w}x{h} is {w * h / 1e6:.0f} megapixels, over afiqa's limit of "
                    f"{MAX_PIXELS / 1e6:.0f}; downscale it first"
                )
            img.load()  # raises on truncated or corrupt data (LOAD_TRUNCATED_IMAGES stays False)
            return _pil_to_rgb(img, name)
    except ImageError:
        raise
    except Image.DecompressionBombError as e:  # Pillow's hard limit, hit in Image.open
        px = re.search(r"\d+", str(e))
        size = f"{int(px.group()) / 1e6:.0f} megapixels" if px else "too large"
        raise ImageError(
            f"{name}: the image is {size}, over afiqa's limit of {MAX_PIXELS / 1e6:.0f}; downscale it first"
        ) from None
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image afiqa can read (not a {_FORMATS_TEXT} file)") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError) as e:
        if isinstance(e, (FileNotFoundError, PermissionError, IsADirectoryError)):
            raise
        raise ImageError(f"{name}: the image data is corrupt or truncated ({_short(e)})") from None


_OPENABLE: tuple[str, ...] | None = None
_HEIF_TRIED = False
_HEIF_LOCK = threading.Lock()  # decode threads: the second waits for the opener, not past it
# Pillow's plugins for FORMATS, imported one by one: Image.init() imports every plugin
# Pillow has (45 ms), a third of a one-photo `afiqa score`'s start-up.
_PLUGINS = ("JpegImagePlugin", "MpoImagePlugin", "PngImagePlugin", "GifImagePlugin", "BmpImagePlugin",
            "TiffImagePlugin", "WebPImagePlugin", "AvifImagePlugin", "PpmImagePlugin")


def _iso_media(fp) -> bool:
    """Whether the data starts like an ISO media file (an ``ftyp`` box: HEIF, HEIC, AVIF)."""
    try:
        pos = fp.tell()
        head = fp.read(12)
        fp.seek(pos)
    except (AttributeError, OSError, ValueError):
        return False
    return head[4:8] == b"ftyp"


def _formats(heif: bool = False) -> tuple[str, ...]:
    """``FORMATS`` that this Pillow build can open (AVIF needs a recent Pillow; HEIF needs
    ``pillow-heif``, whose opener is registered the first time an ISO media file comes,
    as importing it takes 50 ms)."""
    global _OPENABLE, _HEIF_TRIED
    if _OPENABLE is None:
        import importlib

        for plugin in _PLUGINS:
            try:
                importlib.import_module(f"PIL.{plugin}")
            except ImportError:  # a Pillow without it (AVIF before 11.2): that format is refused
                pass
        _OPENABLE = tuple(f for f in FORMATS if f in Image.OPEN)
    if heif and not _HEIF_TRIED:
        with _HEIF_LOCK:
            if not _HEIF_TRIED:
                if "HEIF" not in Image.OPEN:
                    try:
                        from pillow_heif import register_heif_opener
                    except ImportError:  # HEIC/HEIF files are then refused as formats afiqa cannot read
                        pass
                    else:
                        register_heif_opener()
                _OPENABLE = tuple(f for f in FORMATS if f in Image.OPEN)
                _HEIF_TRIED = True
    return _OPENABLE


def _pil_to_rgb(img: Image.Image, name: str) -> np.ndarray:
    if img.tell() != 0:
        img.seek(0)  # animated or multi-page: the first frame is scored
    img = _upright(img)
    mode = img.mode
    if mode.startswith("I;16"):  # 16-bit grayscale, either byte order
        return _gray_to_rgb(_u16_to_u8(np.asarray(img).astype(np.uint16)))
    if mode in ("I", "F"):  # 32-bit integer or float grayscale (TIFF, PFM, convert("I"))
        return _array_to_rgb(_float_to_unit(np.asarray(img), name) if mode == "F" else np.asarray(img), name)
    if mode in ("RGBa", "La"):  # premultiplied alpha: over white, out = colour + (255 - alpha)
        a = np.asarray(img).astype(np.int16)
        out = np.minimum(a[..., :-1] + (255 - a[..., -1:]), 255).astype(np.uint8)
        return out if mode == "RGBa" else _gray_to_rgb(out[..., 0])
    if img.has_transparency_data:  # alpha channel, or a tRNS palette entry or colour key
        rgba = img.convert("RGBA")
        img = Image.new("RGB", rgba.size, (255, 255, 255))
        img.paste(rgba, mask=rgba)  # over white: out = rgb * a + 255 * (1 - a)
    elif mode != "RGB":
        img = img.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV
    return np.asarray(img)


def _upright(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; a copy only when the image has to turn."""
    try:
        orientation = img.getexif().get(_ORIENTATION, 1)
    except Exception:  # unreadable EXIF: the pixels are fine, keep them as stored
        return img
    return ImageOps.exif_transpose(img) if orientation in (2, 3, 4, 5, 6, 7, 8) else img


def _float_to_unit(a: np.ndarray, name: str) -> np.ndarray:
    """Float pixels from a file: [0, 1] as they are, 0..255 scaled down, else refused."""
    if not np.isfinite(a).all():
        raise ImageError(f"{name}: the image holds NaN or infinite values")
    lo, hi = float(a.min()), float(a.max())
    if lo >= 0.0 and hi <= 1.0:
        return a
    if lo >= 0.0 and hi <= 255.0:
        return a / np.float32(255.0)
    raise ImageError(f"{name}: float pixels must lie in [0, 1] or 0..255; got {lo:g}..{hi:g}")


def _array_to_rgb(a: np.ndarray, name: str = "array") -> np.ndarray:
    a = np.asarray(a)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise ImageError(f"{name}: expected shape (H, W), (H, W, 3) or (H, W, 4); got {a.shape}")
    if a.size == 0:
        raise ImageError(f"{name}: the array is empty (shape {a.shape})")
    if a.dtype == np.uint8:
        u8 = a
    elif a.dtype == bool:
        u8 = a.astype(np.uint8) * 255
    elif a.dtype.kind == "u" and a.dtype.itemsize == 2:  # uint16, either byte order
        u8 = _u16_to_u8(a)
    elif a.dtype.kind in "iu":
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi > 65535:
            raise ImageError(f"{name}: integer pixels must lie in 0..255 or 0..65535; got {lo}..{hi}")
        u8 = _u16_to_u8(a) if hi > 255 else a.astype(np.uint8)
    elif a.dtype.kind == "f":
        if not np.isfinite(a).all():
            raise ImageError(f"{name}: the array holds NaN or infinite values")
        lo, hi = float(a.min()), float(a.max())
        if lo < 0.0 or hi > 1.0:
            raise ImageError(
                f"{name}: float pixels must lie in [0, 1]; got {lo:g}..{hi:g} (give uint8 for 0..255)"
            )
        u8 = np.round(a.astype(np.float32) * 255.0).astype(np.uint8)
    else:
        raise ImageError(f"{name}: unsupported pixel type {a.dtype}")
    if u8.ndim == 2:
        return _gray_to_rgb(u8)
    if u8.shape[2] == 4:
        alpha = u8[:, :, 3:4].astype(np.float32) / 255.0
        u8 = np.round(u8[:, :, :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    return np.ascontiguousarray(u8)


def _u16_to_u8(a: np.ndarray) -> np.ndarray:
    """0..65535 -> 0..255, rounded (65535 / 255 = 257)."""
    return np.round(a.astype(np.float32) / 257.0).astype(np.uint8)


def _gray_to_rgb(u8: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.broadcast_to(u8[:, :, None], (*u8.shape, 3)))


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text[:120]
