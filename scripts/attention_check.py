"""Does a model's spatial attention follow the photo? (issue 13's attention check)

    python scripts/attention_check.py --model afiqa-v4 PHOTO [PHOTO ...]

Scores each photo and its mirror image with heat-maps and prints, per stream, the mean
correlation between a photo's attention map and the mirror of its mirror image's map
(1 when the map moves with the photo) and the mean correlation between the maps of
different photos (near 0 when the map follows content, not position).
``tests/test_shipped_model.py`` asserts the same two figures on the example photos.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _corr(a, b) -> float:
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model name or card .json (default: the default model)")
    ap.add_argument("photos", nargs="+")
    args = ap.parse_args(argv)
    from afiqa.io.inputs import load_rgb
    from afiqa.predictor import Predictor
    from afiqa.runtime.zoo import DEFAULT_MODEL

    predictor = Predictor(args.model or DEFAULT_MODEL)
    photos = [load_rgb(p) for p in args.photos]
    results = predictor.score_batch(photos + [p[:, ::-1] for p in photos], heatmaps=True)
    own, mirrored = results[:len(photos)], results[len(photos):]
    report = {}
    for stream in own[0].attention:
        maps = [np.asarray(r.attention[stream], np.float32) for r in own]
        mirror = [_corr(m, np.asarray(r.attention[stream], np.float32)[:, ::-1]) for m, r in zip(maps, mirrored)]
        pairs = [_corr(maps[i], maps[j]) for i in range(len(maps)) for j in range(i + 1, len(maps))]
        report[stream] = {"mirror": float(np.mean(mirror)), "pairwise": float(np.mean(pairs)) if pairs else None}
        print(f"{stream}: mirror {report[stream]['mirror']:.3f}  between photos "
              f"{report[stream]['pairwise'] if pairs else float('nan'):.3f}  ({len(photos)} photos)")
    return report


if __name__ == "__main__":
    main()
