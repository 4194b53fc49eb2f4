"""Drawing explanations for people: overlays, a legend and a caption, at display size.

One module for the app and the CLI, so a heat-map reads the same on the page and in a
PNG. Maps come from ``afiqa.explain`` at the model's resolution (16x16, 8x8) and are
enlarged here only to the picture they are drawn on, which ``fit`` first brings down to
the size shown (longest side ``DISPLAY_SIDE``): nothing is drawn at a 8000-px photo's
full size unless asked.

- ``signed`` (the default view): a diverging colour map, **blue where a region lowers
  the quality score, red where it raises it**, clear where it has no effect (the colour's
  opacity follows the map's strength), over the photo in grey so the colours read on any
  photo. ColorBrewer's RdBu, readable with the common colour-vision deficiencies.
- ``magnitude``: how much each region weighs, either way (black-red-yellow).
- attention: where the network chose to look (relative; yellow = most).

Pure functions on uint8 RGB arrays; no Keras, no I/O.
"""

from __future__ import annotations

import numpy as np

DISPLAY_SIDE = 1024  # longest side of a picture shown or written by default
VIEWS = ("signed", "magnitude")
LOWERS, RAISES = "lowers quality", "raises quality"
COLORMAPS = {"signed": "RdBu_r", "magnitude": "inferno", "attention": "viridis"}
ALPHA = {"signed": 0.7, "magnitude": 0.7, "attention": 0.45}
HOW_TO_READ = (
    "Blue marks what lowers the quality score, red what raises it; the stronger the colour, "
    "the more that region weighs (clear: no effect)."
)


def fit(rgb: np.ndarray, side: int | None = DISPLAY_SIDE) -> np.ndarray:
    """uint8 RGB with its longest side brought down to ``side`` (area averaging); as is if
    it is smaller already or ``side`` is None."""
    import cv2

    rgb = np.asarray(rgb)
    h, w = rgb.shape[:2]
    if not side or max(h, w) <= side:
        return rgb
    f = side / max(h, w)
    size = (max(1, round(w * f)), max(1, round(h * f)))
    return np.ascontiguousarray(cv2.resize(rgb, size, interpolation=cv2.INTER_AREA))


def colour(values: np.ndarray, view: str) -> np.ndarray:
    """RGB floats in [0, 255] of map ``values`` in one view's colour map ([-1, 1] signed)."""
    from matplotlib import colormaps

    v = np.asarray(values, np.float32)
    position = 0.5 + 0.5 * np.clip(v, -1.0, 1.0) if view == "signed" else np.clip(v, 0.0, 1.0)
    return colormaps[COLORMAPS[view]](position)[..., :3].astype(np.float32) * 255.0


def overlay(image: np.ndarray, heatmap: np.ndarray, view: str = "signed", alpha: float | None = None) -> np.ndarray:
    """A map drawn over uint8 RGB ``image`` (the map is enlarged to the image); uint8 RGB.

    ``view``: "signed" (map in [-1, 1]: blue lowers, red raises), "magnitude" (its absolute
    value) or "attention" (any non-negative map, shown relative to its own range).
    """
    from afiqa.explain import normalise, resize_map

    if view not in COLORMAPS:
        raise ValueError(f"view: expected one of {tuple(COLORMAPS)}, got {view!r}")
    image = np.asarray(image)[..., :3].astype(np.float32)
    m = resize_map(heatmap, image.shape[:2])
    if view != "attention":  # the colours read on any photo when it is shown in grey beneath them
        grey = image @ np.array([0.299, 0.587, 0.114], np.float32)
        image = np.repeat((0.25 * 255 + 0.7 * grey)[..., None], 3, axis=-1)
    alpha = ALPHA[view] if alpha is None else alpha
    if view == "attention":
        m = normalise(m)
        weight = np.full(m.shape + (1,), alpha, np.float32)
    else:
        if view == "magnitude":
            m = np.abs(m)
        strength = np.clip(np.abs(m), 0.0, 1.0)
        weight = alpha * strength[..., None] ** 0.75  # no effect: the photo shows through
        if view == "signed":  # the hue of the sign, never the pale middle of the colour map
            m = np.sign(m) * (0.4 + 0.6 * strength)
    out = (1.0 - weight) * image + weight * colour(m, view)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def legend_html(view: str = "signed") -> str:
    """The page's legend: a colour bar with what its ends mean."""
    from matplotlib.colors import to_hex

    stops = ", ".join(to_hex(c / 255.0) for c in colour(np.linspace(-1 if view == "signed" else 0, 1, 9), view))
    left, right = (LOWERS, RAISES) if view == "signed" else ("no effect", "strong effect")
    return (
        '<div class="afiqa-legend"><span>◀ ' + left + "</span>"
        f'<div class="afiqa-legend-bar" style="background: linear-gradient(to right, {stops})"></div>'
        "<span>" + right + " ▶</span></div>"
    )


def annotate(picture: np.ndarray, title: str, view: str = "signed") -> np.ndarray:
    """``picture`` with ``title`` (e.g. the score and label) above it and the legend below
    (the canvas is widened, the picture centred, when the legend needs more room)."""
    from PIL import Image, ImageDraw

    picture = np.asarray(picture)
    h, w = picture.shape[:2]
    font, small = _font(max(14, min(28, w // 28))), _font(max(12, min(22, w // 36)))
    fs, ss = _size(font), _size(small)
    left, right = (LOWERS, RAISES) if view == "signed" else ("no effect", "strong effect")
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    lw, rw = probe.textlength(left, font=small), probe.textlength(right, font=small)
    tw = probe.textlength(title, font=font)
    pad = ss // 2
    width = int(max(w, lw + rw + 4 * pad + 4 * ss, tw + fs))
    top, bottom = fs * 2, ss * 3
    canvas = Image.new("RGB", (width, h + top + bottom), (255, 255, 255))
    canvas.paste(Image.fromarray(picture), ((width - w) // 2, top))
    d = ImageDraw.Draw(canvas)
    d.text((fs // 2, fs // 2), title, fill=(20, 20, 20), font=font)
    # the legend: a colour bar across the middle, what each end means beside it
    y0 = h + top + ss // 2
    x0, x1 = int(lw + 2 * pad), int(width - rw - 2 * pad)
    bar = colour(np.linspace(-1 if view == "signed" else 0, 1, x1 - x0), view).astype(np.uint8)
    canvas.paste(Image.fromarray(np.repeat(bar[None], ss, axis=0)), (x0, y0))
    d.text((pad, y0), left, fill=(20, 20, 20), font=small)
    d.text((width - rw - pad, y0), right, fill=(20, 20, 20), font=small)
    return np.asarray(canvas)


def heatmap_picture(image: np.ndarray, heatmap: np.ndarray, title: str, view: str = "signed",
                    side: int | None = DISPLAY_SIDE) -> np.ndarray:
    """What ``afiqa score --heatmaps`` writes: the overlay at ``side`` (None: full size),
    the title above, the legend below."""
    return annotate(overlay(fit(image, side), heatmap, view), title, view)


def _size(font) -> int:
    return int(getattr(font, "size", 11))


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # Pillow's bundled font (needs FreeType)
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()
