"""Evaluate any afiqa weights on any adapter's data through the full scoring pipeline.

    python -m train.evaluate --model weights/afiqa-v4.json --dataset biq2021 \
        --data-dir DIR [--split test] [--out reports/afiqa-biq2021-test]

Scores every image exactly as ``afiqa score`` does (same input policy, same Predictor),
then writes ``metrics.json`` (n, PLCC, SROCC, KROCC, RMSE, MAE, logistic PLCC, on the
[0, 1] MOS scale; per group too, e.g. BIQ2021's subsets ss01-ss03), ``scores.csv`` and
``scatter.png`` (prediction vs MOS).
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np

from afiqa import metrics
from train.datasets import ADAPTERS


def scatter_png(pred: np.ndarray, mos: np.ndarray, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5), dpi=120)
    ax.scatter(mos, pred, s=4, alpha=0.4)
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="MOS (human, 0-1)", ylabel="afiqa prediction (0-1)", title=title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    from afiqa.predictor import Predictor
    from afiqa.runtime.zoo import DEFAULT_MODEL

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=DEFAULT_MODEL, help="model name or model card .json")
    ap.add_argument("--weights", help="weights file (default: the card's, resolved)")
    ap.add_argument("--dataset", choices=sorted(ADAPTERS), required=True)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--split", default="test", help="train, val, test or all (all rows)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--update-card", action="store_true",
                    help="write the metrics into the model card JSON given as --model (test_metrics)")
    args = ap.parse_args(argv)

    samples = ADAPTERS[args.dataset](args.data_dir)
    if args.split != "all":
        samples = [s for s in samples if s.split == args.split]
    if not samples:
        raise SystemExit(f"no {args.split!r} samples in {args.dataset} at {args.data_dir}")
    predictor = Predictor(args.model, weights=args.weights, batch_size=args.batch_size)
    lo, hi = predictor.card.score_range
    t0 = time.time()
    results = predictor.score_batch([s.path for s in samples])
    seconds = time.time() - t0
    ok = [(s, r) for s, r in zip(samples, results) if r.ok]
    failed = [(s, r) for s, r in zip(samples, results) if not r.ok]
    pred = np.array([(r.score - lo) / (hi - lo) for _, r in ok])
    mos = np.array([s.score for s, _ in ok])
    report = {
        "model": predictor.card.name,
        "weights_sha256": predictor.card.sha256,
        "dataset": args.dataset,
        "split": args.split,
        **metrics.evaluate(pred, mos),
        "failed": [f"{s.path.name}: {r.error}" for s, r in failed],
        "seconds": round(seconds, 1),
        "groups": {},
    }
    groups = sorted({s.group for s, _ in ok if s.group})
    if 1 < len(groups) <= 20:
        for g in groups:
            idx = [k for k, (s, _) in enumerate(ok) if s.group == g]
            report["groups"][g] = metrics.evaluate(pred[idx], mos[idx])
    out = Path(args.out or f"runs/eval/{predictor.card.name}-{args.dataset}-{args.split}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(report, indent=2))
    with open(out / "scores.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "mos", "prediction", "group"])
        for (s, _), p in zip(ok, pred):
            w.writerow([s.path, f"{s.score:.4f}", f"{p:.4f}", s.group])
    scatter_png(pred, mos, f"{predictor.card.name} on {args.dataset} {args.split}: "
                f"SROCC {report['srocc']:.3f}, PLCC {report['plcc']:.3f}", out / "scatter.png")
    if args.update_card:
        card_path = Path(args.model)
        card = json.loads(card_path.read_text())
        card["test_metrics"] = {k: round(report[k], 4) for k in ("srocc", "plcc", "krocc", "rmse", "plcc_logistic")}
        card["test_metrics"]["n"] = report["n"]
        card["test_metrics"]["split"] = f"{args.dataset} {args.split}"
        card["test_metrics"]["groups"] = {g: {k: round(m[k], 4) for k in ("n", "srocc", "plcc", "krocc")}
                                          for g, m in report["groups"].items()}
        card_path.write_text(json.dumps(card, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k not in ("groups", "failed")}, indent=2))
    for g, m in report["groups"].items():
        print(f"  {g}: n={m['n']} SROCC {m['srocc']:.4f} PLCC {m['plcc']:.4f} KROCC {m['krocc']:.4f}")
    if failed:
        print(f"{len(failed)} images could not be scored: {report['failed'][:5]}")
    print(f"wrote {out}/metrics.json, scores.csv, scatter.png ({len(ok) / seconds:.1f} img/s)")
    return report


if __name__ == "__main__":
    main()
