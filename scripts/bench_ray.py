"""Throughput of the Ray engine with 1 and 2 workers against the local engine, same run.

    python scripts/bench_ray.py [--model NAME|CARD.json] [--n 96] [--batch-size 8] [--json OUT]

Writes ``--n`` synthetic 1080x800 JPEG photos (``benchmarks.bench.make_photos``) to a
temporary folder, then scores them three ways, one after the other:

* local: one ``Predictor`` in this process, ``score_batch`` (TensorFlow on every core);
* ray, 1 worker and 2 workers: ``afiqa.distributed.score`` on a local Ray cluster with
  one CPU per worker (each worker's TensorFlow on one thread).

For each: the wall time from start to the last row, start-up included (building the
model; for Ray, starting the actors), and the steady rate, photos per second between the
first and the last row (so start-up is left out). For the Ray workers, the peak resident
memory of each worker process (VmHWM from /proc). The machine's load average is printed
too: on a shared machine every number moves with it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="model name or card (default: the shipped model)")
    p.add_argument("--n", type=int, default=96)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--json", metavar="OUT")
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from benchmarks.bench import make_photos
    from afiqa.runtime.zoo import DEFAULT_MODEL

    model = args.model or DEFAULT_MODEL
    rows = []
    with tempfile.TemporaryDirectory(prefix="afiqa-bench-ray-") as tmp:
        files = [str(f) for f in make_photos(Path(tmp), args.n)]
        rows.append(_local(files, model, args.batch_size))
        import afiqa.distributed as dist

        ray = dist.connect()
        ray.data.DataContext.get_current().enable_progress_bars = False
        for workers in (1, 2):
            rows.append(_ray(dist, files, model, args.batch_size, workers))
        ray.shutdown()
    report = {"model": model, "n": args.n, "photo": "1080x800 JPEG", "batch_size": args.batch_size,
              "cpus": os.cpu_count(), "load_avg_1_5_15": [round(v, 2) for v in os.getloadavg()], "runs": rows}
    print(markdown(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


def _local(files, model, batch_size) -> dict:
    from afiqa.predictor import Predictor

    t0 = time.perf_counter()
    predictor = Predictor(model, batch_size=batch_size)
    times = []
    for _ in predictor.iter_scores(files):
        times.append(time.perf_counter())
    from benchmarks.bench import _peak_rss_mb

    return _summary("local (1 process, all cores)", t0, times, [_peak_rss_mb()])


def _ray(dist, files, model, batch_size, workers) -> dict:
    t0 = time.perf_counter()
    ds = dist.score(files, model=model, batch_size=batch_size, workers=workers, rows_per_block=batch_size)
    times, peaks = [], {}
    for table in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        times += [time.perf_counter()] * table.num_rows
        for pid in dist.local_worker_pids():
            peaks[pid] = max(peaks.get(pid, 0), _vm_hwm_mb(pid))
    return _summary(f"ray, {workers} worker{'s' if workers > 1 else ''} (1 CPU each)", t0, times, list(peaks.values()))


def _summary(name, t0, times, worker_mb) -> dict:
    first = times[0]
    after = sum(1 for t in times if t > first)
    steady = after / (times[-1] - first) if times[-1] > first else float("nan")
    return {"engine": name, "photos": len(times), "wall_s": round(times[-1] - t0, 1),
            "first_row_s": round(first - t0, 1), "steady_photos_per_s": round(steady, 2),
            "worker_peak_mb": [round(m) for m in worker_mb]}


def _vm_hwm_mb(pid: int) -> float:
    try:
        for line in (Path("/proc") / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def markdown(report: dict) -> str:
    lines = [f"{report['model']}, {report['n']} photos ({report['photo']}), batch {report['batch_size']}; "
             f"{report['cpus']} CPUs, load average {report['load_avg_1_5_15']}",
             "", "| engine | wall (start-up included) | first row after | steady photos/s | peak memory per worker (local: the process) |",
             "|---|---:|---:|---:|---:|"]
    for r in report["runs"]:
        mem = ", ".join(f"{m} MB" for m in r["worker_peak_mb"]) or "-"
        lines.append(f"| {r['engine']} | {r['wall_s']} s | {r['first_row_s']} s | {r['steady_photos_per_s']} | {mem} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
