"""How far does the score move under changes a person does not see? (issue 31's stability check)

    python scripts/stability.py --model afiqa-v4 --data-dir BIQ2021 [--n 400] [--out report.json]
    python scripts/stability.py --model afiqa-v4 PHOTO [PHOTO ...]

Scores each photo and three benign copies of it: its mirror image, a JPEG re-save at
quality 90 and a downscale to 3/4 of each side (Lanczos), and prints, per copy, the mean
and the largest absolute change of the score (0-100 points) and the photo that moved most.
With ``--data-dir`` it takes ``--n`` photos of BIQ2021's validation part (the seeded 10% of
the train split that training holds out, ``train.fit.split_rows``), which no shipped
model trained on. ``tests/test_shipped_model.py`` checks the shipped model the same way on
photos the test makes.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from afiqa.io.inputs import load_rgb  # noqa: E402


def mirror(rgb: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(rgb[:, ::-1])


def jpeg90(rgb: np.ndarray) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=90)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def downscale(rgb: np.ndarray, factor: float = 0.75) -> np.ndarray:
    h, w = rgb.shape[:2]
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.LANCZOS))


TRANSFORMS = {"mirror": mirror, "jpeg90": jpeg90, "downscale_0.75": downscale}


def validation_photos(data_dir: str, n: int, val_fraction: float = 0.1, seed: int = 2023) -> list[Path]:
    """The first ``n`` (in dataset order) of BIQ2021's held-out validation photos."""
    from train.datasets import ADAPTERS
    from train.fit import split_rows

    samples = ADAPTERS["biq2021"](data_dir)
    _, val, _ = split_rows(SimpleNamespace(splits=np.array([s.split for s in samples])), val_fraction, seed)
    return [samples[i].path for i in val[:n]]


def measure(predictor, photos: list[Path]) -> dict:
    """Per transform: mean and largest |score change|, and the photo that moved most."""
    base, moved = [], {k: [] for k in TRANSFORMS}
    for path in photos:
        rgb = load_rgb(path)
        copies = [rgb] + [t(rgb) for t in TRANSFORMS.values()]
        scores = [r.score for r in predictor.score_batch(copies)]
        base.append(scores[0])
        for k, s in zip(TRANSFORMS, scores[1:]):
            moved[k].append(s - scores[0])
    report = {"model": predictor.card.name, "runtime": predictor.runtime.name, "n": len(photos)}
    for k, d in moved.items():
        d = np.abs(np.array(d))
        worst = int(np.argmax(d))
        report[k] = {"mean_abs": round(float(d.mean()), 3), "max_abs": round(float(d.max()), 3),
                     "p99_abs": round(float(np.percentile(d, 99)), 3),
                     "worst": str(photos[worst]), "worst_score": round(base[worst], 2)}
    return report


def main(argv: list[str] | None = None) -> dict:
    from afiqa.predictor import Predictor
    from afiqa.runtime.zoo import DEFAULT_MODEL

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=DEFAULT_MODEL, help="model name or card .json")
    ap.add_argument("--runtime", default="auto", help="auto, litert or keras")
    ap.add_argument("--data-dir", help="BIQ2021's folder: use its validation photos")
    ap.add_argument("--n", type=int, default=400, help="how many validation photos")
    ap.add_argument("--out", help="write the report as JSON here (a new file)")
    ap.add_argument("photos", nargs="*")
    args = ap.parse_args(argv)
    photos = [Path(p) for p in args.photos]
    if args.data_dir:
        photos += validation_photos(args.data_dir, args.n)
    if not photos:
        ap.error("give photos or --data-dir")
    report = measure(Predictor(args.model, runtime=args.runtime), photos)
    print(f"{report['model']} ({report['runtime']}) on {report['n']} photos: |score change| in points")
    for k in TRANSFORMS:
        r = report[k]
        print(f"  {k:15s} mean {r['mean_abs']:6.3f}  p99 {r['p99_abs']:6.3f}  largest {r['max_abs']:6.3f}  ({r['worst']})")
    if args.out:
        with open(args.out, "x", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
    return report


if __name__ == "__main__":
    main()
