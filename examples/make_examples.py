"""Make the app's example images from photos that scikit-image ships with a free licence.

    pip install --no-deps scikit-image      # only to run this script; not a dependency
    python examples/make_examples.py

The photos are read straight from scikit-image's ``data`` folder (skimage is not imported,
so its own dependencies are not needed) and saved as small JPEGs here, one of them at
several distortion strengths so that the app's Compare tab has versions of one photo to
rank, and ``captions.json`` says what was done to each (the app's captions; its
thumbnails are crops at full resolution, where blur, noise and blocks show). Sources and
licences: examples/LICENSE.md. The output is deterministic.
"""

from __future__ import annotations

import importlib.util
import io
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

HERE = Path(__file__).resolve().parent
LONGEST_SIDE = 640
MAX_BYTES = 150_000
QUALITY = 90  # the "clean" versions: one mild JPEG compression of the PNG originals

# file in skimage/data -> stem of the example
PHOTOS = {"coffee.png": "coffee", "astronaut.png": "astronaut", "chelsea.png": "chelsea", "rocket.jpg": "rocket"}
DISTORTED = "coffee"  # the photo also saved blurred, noisy and heavily compressed


def blur(rgb: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(rgb).filter(ImageFilter.GaussianBlur(radius=3)))


def noise(rgb: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.clip(rgb.astype(np.float32) + rng.normal(0.0, 22.0, rgb.shape), 0, 255).astype(np.uint8)


# suffix -> (distortion of the RGB array, JPEG quality it is saved at)
DISTORTIONS = {"blur": (blur, QUALITY), "noise": (noise, QUALITY), "jpeg": (lambda rgb: rgb, 6)}
# what each example is, for the app's captions (written to captions.json)
CAPTIONS = {
    "coffee.jpg": "coffee: the original (JPEG quality 90)",
    "coffee_blur.jpg": "coffee, blurred (Gaussian, radius 3)",
    "coffee_noise.jpg": "coffee, with noise (sigma 22 grey levels)",
    "coffee_jpeg.jpg": "coffee, saved at JPEG quality 6 (blocks)",
    "astronaut.jpg": "astronaut: a clean portrait",
    "chelsea.jpg": "chelsea: a cat, clean",
    "rocket.jpg": "rocket at dusk: dark sky, bright lights",
}


def skimage_data_dir() -> Path:
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("make_examples: scikit-image is not installed; pip install --no-deps scikit-image")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def load(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        img = img.convert("RGB")
        if max(img.size) > LONGEST_SIDE:
            img.thumbnail((LONGEST_SIDE, LONGEST_SIDE), Image.Resampling.LANCZOS)
        return np.asarray(img)


def save(rgb: np.ndarray, name: str, quality: int) -> Path:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=quality, optimize=True)
    if buf.tell() > MAX_BYTES:
        raise SystemExit(f"make_examples: {name} would be {buf.tell()} bytes, over {MAX_BYTES}")
    target = HERE / name
    target.write_bytes(buf.getvalue())
    return target


def main() -> int:
    data = skimage_data_dir()
    for source, stem in PHOTOS.items():
        rgb = load(data / source)
        written = [save(rgb, f"{stem}.jpg", QUALITY)]
        if stem == DISTORTED:
            for suffix, (fn, quality) in DISTORTIONS.items():
                written.append(save(fn(rgb), f"{stem}_{suffix}.jpg", quality))
        for p in written:
            print(f"{p.relative_to(HERE.parent)}  {p.stat().st_size / 1000:.0f} kB")
    (HERE / "captions.json").write_text(json.dumps(CAPTIONS, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
