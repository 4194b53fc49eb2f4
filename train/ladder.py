"""Distortion ladders: do scores fall as a distortion grows?

    python -m train.ladder --model weights/afiqa-v4.json --images DIR [--n 50] [--kinds K ...] [--out FILE.json]

For each of ``--n`` photos (sorted, from DIR) and each distortion of the catalogue
(``train.distortions.CATALOGUE``, or ``--kinds``), the photo is scored at five strengths
(the first untouched). The kinds held out of training (``HELD_OUT``) check transfer to
distortions the model never saw. Reported per distortion: the share of photos whose
scores fall strictly at every step, the share whose scores never rise (ties allowed: a
score can sit at the floor of the scale), the share that fall overall (strongest < untouched),
and the mean Spearman correlation between strength and score (-1 = perfect).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy import stats

from afiqa.io.inputs import list_images, load_rgb
from train import distortions


def run(predictor, images: list[Path], kinds: list[str] | None = None) -> dict:
    report = {}
    photos = [load_rgb(path) for path in images]
    for name in kinds or list(distortions.CATALOGUE):
        levels = distortions.CATALOGUE[name].ladder
        rows = []
        for k, rgb in enumerate(photos):
            rows.append([r.score for r in predictor.score_batch([distortions.apply(rgb, name, s, seed=k) for s in levels])])
        scores = np.array(rows)
        rho = [stats.spearmanr(np.arange(len(levels)), r)[0] for r in scores]
        report[name] = {
            "held_out": name in distortions.HELD_OUT or name == "downscale",
            "levels": list(levels),
            "mean_scores": [round(float(v), 2) for v in scores.mean(axis=0)],
            "strictly_falling": float(np.mean(np.all(np.diff(scores, axis=1) < 0, axis=1))),
            "never_rises": float(np.mean(np.all(np.diff(scores, axis=1) <= 0, axis=1))),  # ties allowed
            "falls_overall": float(np.mean(scores[:, -1] < scores[:, 0])),
            "mean_spearman": float(np.nanmean(rho)),
        }
    return report


def main(argv: list[str] | None = None) -> dict:
    from afiqa.predictor import Predictor
    from afiqa.runtime.zoo import DEFAULT_MODEL

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--images", required=True, nargs="+")
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--kinds", nargs="+", choices=sorted(distortions.CATALOGUE), help="default: the whole catalogue")
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    images = list_images(args.images)
    step = max(1, len(images) // args.n)
    images = images[::step][: args.n]
    report = run(Predictor(args.model), images, args.kinds)
    for name, r in report.items():
        print(f"{name:15s}{' (held out)' if r['held_out'] else '':11s} levels {r['levels']}: mean scores {r['mean_scores']}; strictly falling "
              f"{r['strictly_falling']:.0%}, never rises {r['never_rises']:.0%}, falls overall {r['falls_overall']:.0%}, Spearman {r['mean_spearman']:.3f}")
    for held, title in ((False, "trained kinds"), (True, "held-out kinds")):
        rho = [r["mean_spearman"] for r in report.values() if r["held_out"] == held]
        if rho:
            print(f"{title}: mean Spearman {np.mean(rho):.3f} over {len(rho)}")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
