"""Choose the precision of a model's shipped LiteRT export by measurement.

    python scripts/litert_precision.py --data-dir path/to/BIQ2021 [--model NAME]
        [--precisions fp32 fp16 int8] [--reference keras_scores.json] [--json OUT] [--ship]

Each precision is exported (``afiqa.runtime.export``) and scored on the BIQ2021 validation part
(the 1,000 photos of the official train split that ``train/fit.py``'s ``split_rows``
holds out, seed 2023), against the Keras model's scores of the same photos; then its
speed is timed (LiteRT, every core, batch 1 and 8, median of 3). The one shipped is the
fastest whose largest difference stays within ``afiqa.runtime.export.TOLERANCE`` (0.5 points on
the 0-100 scale); speeds within 5 % count as equal, and then the smaller file wins.
``--ship`` copies it to ``weights/NAME.tflite`` and records it in ``weights/NAME.json``.
``--reference``: a JSON of {path: Keras score (0-100)} from an earlier run, to skip the
Keras pass.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def validation_paths(data_dir: str, val_fraction: float = 0.1, seed: int = 2023) -> list[Path]:
    from train.datasets import biq2021
    from train.fit import split_rows

    samples = biq2021(data_dir)
    _, val, _ = split_rows(types.SimpleNamespace(splits=np.array([s.split for s in samples])), val_fraction, seed)
    return [samples[i].path for i in val]


def speed(path: Path, paths: list[Path], size: int, repeats: int = 3) -> dict:
    from afiqa.io.inputs import load_rgb, to_model_input
    from afiqa.runtime import LiteRTRuntime

    rt = LiteRTRuntime(path, size)
    x = np.stack([to_model_input(load_rgb(p, min_size=size), size) for p in paths[:8]]).astype(np.float32)
    out = {}
    for b in (1, 8):
        rt.predict(x[:b])
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            rt.predict(x[:b])
            ts.append((time.perf_counter() - t0) / b)
        out[f"ms_per_image_batch_{b}"] = round(1e3 * statistics.median(ts), 1)
    return out


def check_file(card, path: Path, precision: str, paths, check_name: str, reference) -> dict:
    """The record ``afiqa.runtime.export.export`` makes, for a file converted earlier."""
    from afiqa.runtime.export import TOLERANCE, raw_scores
    from afiqa.runtime import LiteRTRuntime
    from afiqa.runtime.weights import sha256_of

    lo, hi = card.score_range
    got = raw_scores(LiteRTRuntime(path, card.config.image_size), paths, card.config.image_size)
    diff = np.abs(got - reference) * (hi - lo)
    return {"file": path.name, "sha256": sha256_of(path), "precision": precision, "bytes": path.stat().st_size,
            "check_set": check_name, "n_check": len(paths), "max_score_diff": round(float(diff.max()), 4),
            "mean_score_diff": round(float(diff.mean()), 4), "tolerance": TOLERANCE,
            "converter": f"tensorflow {_tf_version()} TFLiteConverter.from_saved_model"}


def _tf_version() -> str:
    import tensorflow as tf

    return tf.__version__


def main(argv=None) -> int:
    from afiqa.runtime.export import PRECISIONS, TOLERANCE, export, raw_scores, record_in_card
    from afiqa.predictor import load_card
    from afiqa.runtime import load_keras
    from afiqa.runtime.weights import REPO_WEIGHTS_DIR

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--model", default=None, help="model name or card (default: the default model)")
    ap.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    ap.add_argument("--reference", help="JSON {path: Keras score 0-100} of the validation photos")
    ap.add_argument("--json", help="write the measurements here")
    ap.add_argument("--ship", action="store_true", help="copy the chosen one to weights/ and record it in the card")
    ap.add_argument("--limit", type=int, default=0,
                    help="only N photos of the validation part, evenly spaced (when time is short)")
    ap.add_argument("--candidates", help="a folder with NAME-PRECISION.tflite files already converted by "
                    "afiqa.runtime.export.to_litert: checked as they are instead of converted again")
    args = ap.parse_args(argv)

    from afiqa.runtime.zoo import DEFAULT_MODEL

    args.model = args.model or DEFAULT_MODEL
    card, weights_dir = load_card(args.model)
    lo, hi = card.score_range
    paths = validation_paths(args.data_dir)
    n_val = len(paths)
    if args.limit and args.limit < n_val:
        paths = [paths[int(k)] for k in np.linspace(0, n_val - 1, args.limit)]
    check_name = (f"BIQ2021 validation part ({len(paths):,}" + (f" of its {n_val:,}, evenly spaced" if len(paths) < n_val
                  else "") + " photos of the official train split, seed 2023)")
    if args.reference:
        ref_scores = json.loads(Path(args.reference).read_text())
        reference = np.array([(ref_scores[str(p)] - lo) / (hi - lo) for p in paths], np.float32)
    else:
        t0 = time.perf_counter()
        reference = raw_scores(load_keras(card, None, weights_dir), paths, card.config.image_size)
        print(f"Keras reference: {len(paths)} photos in {time.perf_counter() - t0:.0f} s", flush=True)
    results = {}
    with tempfile.TemporaryDirectory(prefix="afiqa-precision-") as tmp:
        for prec in args.precisions:
            t0 = time.perf_counter()
            given = Path(args.candidates or tmp) / f"{card.name}-{prec}.tflite"
            if args.candidates and given.is_file():
                rec = check_file(card, given, prec, paths, check_name, reference)
                shutil.copy(given, Path(tmp) / given.name)
            else:
                rec = export(args.model, "litert", prec, out=Path(tmp) / f"{card.name}-{prec}.tflite", check=paths,
                             check_name=check_name, record=False, reference=reference)
            rec.update(speed(Path(tmp) / rec["file"], paths, card.config.image_size))
            rec["seconds"] = round(time.perf_counter() - t0, 1)
            results[prec] = rec
            print(json.dumps({k: rec[k] for k in ("precision", "bytes", "max_score_diff", "mean_score_diff",
                                                  "ms_per_image_batch_1", "ms_per_image_batch_8")}), flush=True)
        ok = [r for r in results.values() if r["max_score_diff"] <= TOLERANCE]
        chosen = None
        if ok:
            best = min(r["ms_per_image_batch_8"] for r in ok)
            chosen = min((r for r in ok if r["ms_per_image_batch_8"] <= best * 1.05), key=lambda r: r["bytes"])
        print(f"chosen: {chosen['precision'] if chosen else 'none within the tolerance'}")
        if args.ship and chosen:
            folder = Path(weights_dir or REPO_WEIGHTS_DIR)
            shutil.copy(Path(tmp) / chosen["file"], folder / f"{card.name}.tflite")
            rec = {k: v for k, v in chosen.items() if not k.startswith("ms_") and k != "seconds"}
            rec["file"] = f"{card.name}.tflite"
            print("recorded in", record_in_card(card, args.model, weights_dir, "litert", rec))
            print("zoo entry:", json.dumps({"litert": rec}, indent=4))
    if args.json:
        Path(args.json).write_text(json.dumps({"chosen": chosen and chosen["precision"], "tolerance": TOLERANCE,
                                               "results": results, "load_avg": os.getloadavg()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
