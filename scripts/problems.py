"""What does afiqa say lowers real photos' scores? ``problem`` by score band (issue 30).

    python scripts/problems.py --data-dir BIQ2021 [--n 1000] [--model afiqa-v4] [--out report.json]
    python scripts/problems.py PHOTO_OR_FOLDER [...]

Scores the photos (with ``--data-dir``, BIQ2021's validation photos, which no shipped model
trained on: ``scripts/stability.py`` draws the same ones) and prints, for each label band
of the score, how many photos the model says are mostly blurred, noisy, compressed,
badly exposed, flat, off in colour, or have no clear problem, with the mean uncertainty.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stability import validation_photos  # noqa: E402 (scripts/stability.py, beside this one)

from afiqa.io.inputs import list_images  # noqa: E402
from afiqa.model.sideheads import FAMILIES, NONE  # noqa: E402


def spread(results, labels: tuple[str, ...]) -> dict:
    """{label: {"n", "mean_uncertainty", problem: share}} over the scored results."""
    out = {}
    for label in labels:
        band = [r for r in results if r.ok and r.label == label]
        counts = Counter(r.problem for r in band)
        unc = [r.uncertainty for r in band if r.uncertainty is not None]
        out[label] = {"n": len(band), "mean_uncertainty": round(float(np.mean(unc)), 2) if unc else None,
                      **{p: round(counts[p] / len(band), 3) if band else 0.0 for p in (*FAMILIES, NONE)}}
    return out


def main(argv: list[str] | None = None) -> dict:
    from afiqa.predictor import Predictor
    from afiqa.runtime.zoo import DEFAULT_MODEL

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--data-dir", help="BIQ2021's folder: use its validation photos")
    ap.add_argument("--n", type=int, default=1000, help="how many validation photos")
    ap.add_argument("--out", help="write the table as JSON here (a new file)")
    ap.add_argument("photos", nargs="*")
    args = ap.parse_args(argv)
    photos = list_images(args.photos) if args.photos else []
    if args.data_dir:
        photos += validation_photos(args.data_dir, args.n)
    if not photos:
        ap.error("give photos or --data-dir")
    p = Predictor(args.model)
    if p.side_heads is None:
        raise SystemExit(f"afiqa: {p.side_heads_missing}")
    results = p.score_batch(photos)
    table = spread(results, p.card.labels)
    cols = (*FAMILIES, NONE)
    print(f"{p.card.name}: main problem by label band, share of the band's photos ({len(photos)} photos)")
    print(f"{'band':<10}{'n':>6}{'± error':>9}" + "".join(f"{c:>13}" for c in cols))
    for label, row in table.items():
        unc = "-" if row["mean_uncertainty"] is None else f"{row['mean_uncertainty']:.1f}"
        print(f"{label:<10}{row['n']:>6}{unc:>9}" + "".join(f"{row[c]:>13.0%}" for c in cols))
    report = {"model": p.card.name, "n": len(photos), "by_label": table}
    if args.out:
        with open(args.out, "x", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
    return report


if __name__ == "__main__":
    main()
