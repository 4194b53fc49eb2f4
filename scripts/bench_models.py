"""Per-photo scoring time of several models side by side, in one run (issue 13's speed check).

    python scripts/bench_models.py [--models afiqa-v4 afiqa-v3 ...] [--n 32] [--repeats 3]

Each model scores the same ``--n`` synthetic 1080x800 JPEGs (``benchmarks.bench.make_photos``)
with ``score_batch`` (its default runtime, batch 8), alternating between the models in
every repeat so that both see the same machine load; prints the median ms per photo of
each and the ratio of the last to the first.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["afiqa-v4"])
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    from benchmarks.bench import make_photos
    from afiqa.predictor import Predictor

    with tempfile.TemporaryDirectory(prefix="afiqa-bench-models-") as d:
        files = [str(f) for f in make_photos(Path(d), args.n)]
        predictors = {m: Predictor(m, batch_size=8) for m in args.models}
        for p in predictors.values():
            p.score_batch(files[:8])  # warm
        times = {m: [] for m in predictors}
        for _ in range(args.repeats):
            for m, p in predictors.items():
                t0 = time.perf_counter()
                p.score_batch(files)
                times[m].append((time.perf_counter() - t0) / len(files) * 1000)
    report = {m: {"runtime": predictors[m].runtime.name, "ms_per_photo": round(statistics.median(t), 1)}
              for m, t in times.items()}
    first, last = args.models[0], args.models[-1]
    report["ratio"] = round(report[last]["ms_per_photo"] / report[first]["ms_per_photo"], 3)
    for m in args.models:
        print(f"{m}: {report[m]['ms_per_photo']} ms per photo ({report[m]['runtime']}, median of {args.repeats})")
    print(f"{last} / {first}: {report['ratio']}")
    return report


if __name__ == "__main__":
    main()
