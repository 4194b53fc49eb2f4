"""The floor to beat: an RBF support-vector regressor on frozen backbone features.

    python -m train.baseline --cache DIR [--seed 2023] [--val-fraction 0.1]

Mean- and std-pooled final feature maps of both backbones (no attention, no training of
the network), standardised, into scikit-learn's SVR. Fit on the training part, reported
on the validation part (for the ablation table) and on the official test split.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from afiqa import metrics
from train.features import FeatureCache
from train.fit import split_rows


def pooled(cache: FeatureCache, rows: np.ndarray, chunk: int = 256) -> np.ndarray:
    out = []
    for s in range(0, len(rows), chunk):
        parts = []
        for i in range(len(cache.features)):
            f = np.asarray(cache.features[i][np.sort(rows[s : s + chunk])], np.float32)
            parts += [f.mean(axis=(1, 2)), f.std(axis=(1, 2))]
        order = np.argsort(np.argsort(rows[s : s + chunk]))
        out.append(np.concatenate(parts, axis=1)[order])
    return np.concatenate(out)


def main(argv: list[str] | None = None) -> dict:
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVR

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", required=True)
    ap.add_argument("--seed", type=int, default=2023)
    ap.add_argument("--val-fraction", type=float, default=0.1)
    ap.add_argument("--C", type=float, default=1.0)
    args = ap.parse_args(argv)
    cache = FeatureCache.open(args.cache)
    tr, va, te = split_rows(cache, args.val_fraction, args.seed)
    scaler = StandardScaler().fit(pooled(cache, tr))
    svr = SVR(kernel="rbf", C=args.C, epsilon=0.05).fit(scaler.transform(pooled(cache, tr)), cache.scores[tr])
    report = {}
    for name, rows in (("val", va), ("test", te)):
        p = svr.predict(scaler.transform(pooled(cache, rows)))
        report[name] = metrics.evaluate(p, cache.scores[rows])
        r = report[name]
        print(f"SVR baseline {name}: SROCC {r['srocc']:.4f} PLCC {r['plcc']:.4f} KROCC {r['krocc']:.4f} RMSE {r['rmse']:.4f}")
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
