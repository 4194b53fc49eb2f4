"""How fast afiqa scores photos on this machine, and where the time goes.

    python -m afiqa.bench [--model NAME|CARD.json] [--random-weights] [--n 32] [--batch-size 8]
                          [--repeats 3] [--json OUT]

One run measures, per image, on ``--n`` synthetic 1080x800 JPEG files written to a
temporary folder:

* decode (``load_rgb``), resize (``to_model_input``) and both, on one thread;
* the raw forward pass of the backbones alone (``streams_of(model)``, ``predict_on_batch``
  on ready-made model-size arrays) and of the whole network, at batch 1 and ``--batch-size``;
* the pipeline as users run it: ``Predictor.score`` per file (batch 1) and
  ``Predictor.score_batch`` (decode on the thread pool, batched forward), with and without
  GradCAM (``heatmaps=True``);
* the ratios pipeline / raw backbones at the same batch size, and GradCAM / plain;
* what the first call of each took over a timed one (graph tracing, warm-up), the time to
  build the Predictor, and the peak resident memory (``ru_maxrss``).

Every timing is the median of ``--repeats`` runs after a warm-up run (``time.perf_counter``);
the repeats go round all measurements in turn, so a busy machine slows all rows alike.
``--random-weights`` builds the card's architecture (default: ``ModelConfig()``, the
real one) with random weights, for when trained weights are not at hand: speed does not
depend on weight values.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from afiqa.cli import positive_int

PHOTO_SIZE = (1080, 800)  # width, height of the test photos


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from afiqa.errors import AfiqaError

    try:
        with tempfile.TemporaryDirectory(prefix="afiqa-bench-") as tmp:
            predictor, what, startup = _predictor(args, Path(tmp))
            files = make_photos(Path(tmp), args.n, PHOTO_SIZE)
            report = run(predictor, files, batch_size=args.batch_size, repeats=args.repeats)
    except AfiqaError as e:
        hint = "" if args.random_weights else " (--random-weights times the architecture without trained weights)"
        print(f"afiqa.bench: {e}{hint}", file=sys.stderr)
        return 2
    report["model"], report["startup_s"] = what, startup
    print(markdown(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


def _parser() -> argparse.ArgumentParser:
    from afiqa.zoo import DEFAULT_MODEL

    p = argparse.ArgumentParser(prog="python -m afiqa.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help=f"model name or card .json (default {DEFAULT_MODEL}; "
                   "with --random-weights and no --model: ModelConfig() defaults)")
    p.add_argument("--weights", metavar="FILE", help="weights file instead of the resolved one")
    p.add_argument("--random-weights", action="store_true", help="random weights: no trained weights needed")
    p.add_argument("--n", type=positive_int, default=32, help="number of photos (default 32)")
    p.add_argument("--batch-size", type=positive_int, default=8, help="batch size of the batched runs (default 8)")
    p.add_argument("--repeats", type=positive_int, default=3, help="timed repeats; the median is reported (default 3)")
    p.add_argument("--json", metavar="OUT", help="also write the results here as JSON")
    return p


def _predictor(args, tmp: Path):
    """A Predictor, a line saying which model it is, and the seconds ``Predictor()`` took."""
    from afiqa.predictor import Predictor, load_card
    from afiqa.zoo import DEFAULT_MODEL

    if not args.random_weights:
        t0 = time.perf_counter()
        p = Predictor(args.model or DEFAULT_MODEL, weights=args.weights, batch_size=args.batch_size)
        return p, f"{p.card.name} ({p.weights_path})", time.perf_counter() - t0
    import keras

    from afiqa.config import ModelConfig
    from afiqa.model import build_model
    from afiqa.weights import sha256_of
    from afiqa.zoo import ModelCard

    base = load_card(args.model)[0] if args.model else None
    cfg = (base.config if base else ModelConfig()).replace(backbone_weights=None)
    keras.utils.set_random_seed(0)
    weights = tmp / "random.weights.h5"
    build_model(cfg).save_weights(weights)
    card = ModelCard(name=f"{base.name if base else 'ModelConfig()'}-random", config=cfg,
                     weights_file=weights.name, sha256=sha256_of(weights), hub_repo="none/none")
    card_path = tmp / "random.json"
    card_path.write_text(json.dumps(card.to_dict()))
    t0 = time.perf_counter()
    p = Predictor(card_path, batch_size=args.batch_size)
    what = f"{card.name}: {' + '.join(cfg.backbones)} at {cfg.image_size} px, random weights"
    return p, what, time.perf_counter() - t0


def make_photos(folder: Path, n: int, size: tuple[int, int] = PHOTO_SIZE) -> list[Path]:
    """``n`` JPEG files (quality 90) of a synthetic scene: gradients, shapes, edges, texture."""
    import cv2

    w, h = size
    rng = np.random.default_rng(0)
    files = []
    for k in range(n):
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        img = np.stack([xx / w * 200 + 30, yy / h * 180 + 40, (xx + yy) / (w + h) * 150 + 60], -1)
        for _ in range(25):
            c = tuple(float(v) for v in rng.integers(0, 256, 3))
            x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
            if rng.random() < 0.5:
                x1, y1 = x0 + int(rng.integers(20, w // 3)), y0 + int(rng.integers(20, h // 3))
                cv2.rectangle(img, (x0, y0), (x1, y1), c, -1)
            else:
                cv2.circle(img, (x0, y0), int(rng.integers(10, h // 4)), c, -1)
        img[int(h * 0.8):, ::6] = 250.0  # fine texture
        img += rng.normal(0, 3, img.shape).astype(np.float32)  # a little sensor grain
        path = folder / f"photo_{k:03d}.jpg"
        ok, data = cv2.imencode(".jpg", np.clip(img, 0, 255).astype(np.uint8)[:, :, ::-1],
                                [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok
        path.write_bytes(data.tobytes())
        files.append(path)
    return files


def run(predictor, files: list[Path], batch_size: int = 8, repeats: int = 3) -> dict:
    """Every measurement: seconds per image for each row, the ratios, memory and the machine.

    Each measurement is called once untimed (its first call: graph tracing, warm-up), in
    the order of the table; then the timed repeats go round all of them in turn, so that a
    change in the machine's load falls on every row alike rather than on a few.
    """
    from afiqa.inputs import load_rgb, to_model_input
    from afiqa.model import streams_of

    size, model = predictor.size, predictor.model
    streams = streams_of(model)
    n, b = len(files), max(1, min(batch_size, len(files)))
    k = min(n, 8)  # per-file runs use the first k files
    rgbs = [load_rgb(f, min_size=size) for f in files[:k]]
    rng = np.random.default_rng(0)
    x = {bs: rng.uniform(0, 255, (bs, size, size, 3)).astype(np.float32) for bs in sorted({1, b})}

    def batched(heatmaps: bool):
        def go():
            predictor.batch_size = b
            predictor.score_batch(files, heatmaps=heatmaps)
        return go

    # (key, name, batch, function, images per call)
    tasks = [
        ("decode", "decode (load_rgb)", 1, lambda: [load_rgb(f, min_size=size) for f in files[:k]], k),
        ("resize", "resize (to_model_input)", 1, lambda: [to_model_input(r, size) for r in rgbs], k),
        ("decode_resize", "decode + resize", 1,
         lambda: [to_model_input(load_rgb(f, min_size=size), size) for f in files[:k]], k),
        ("single", "pipeline: score(path)", 1, lambda: [predictor.score(f) for f in files[:k]], k),
        ("batched", "pipeline: score_batch(paths)", b, batched(False), n),
        ("cam_single", "pipeline + GradCAM: score(path, heatmaps=True)", 1,
         lambda: [predictor.score(f, heatmaps=True) for f in files[:k]], k),
        ("cam_batched", "pipeline + GradCAM: score_batch(paths, heatmaps=True)", b, batched(True), n),
    ]
    for bs, xb in x.items():
        tasks.append((f"raw_{bs}", "raw backbones (streams only)", bs,
                      (lambda xb=xb: [s.predict_on_batch(xb) for s in streams]), bs))
    for bs, xb in x.items():
        tasks.append((f"whole_{bs}", "raw whole network", bs, (lambda xb=xb: model.predict_on_batch(xb)), bs))

    old_bs = predictor.batch_size
    first, rss, times = {}, {}, {key: [] for key, *_ in tasks}
    try:
        for key, _, _, fn, _ in tasks:
            t0 = time.perf_counter()
            fn()
            first[key] = time.perf_counter() - t0
            rss[key] = _peak_rss_mb()
        for _ in range(max(1, repeats)):
            for key, _, _, fn, _ in tasks:
                t0 = time.perf_counter()
                fn()
                times[key].append(time.perf_counter() - t0)
    finally:
        predictor.batch_size = old_bs

    rows, per = [], {}
    for key, name, batch, _, count in tasks:
        med = statistics.median(times[key])
        per[key] = med / count
        rows.append({
            "key": key, "name": name, "batch": batch, "per_image_s": med / count,
            "min_per_image_s": min(times[key]) / count,
            "first_call_extra_s": max(0.0, first[key] - med),  # tracing, warm-up
            "peak_rss_mb_after_first_call": rss[key],
        })
    return {
        "rows": rows,
        "ratios": {
            "pipeline / raw backbones, batch 1": per["single"] / per["raw_1"],
            f"pipeline / raw backbones, batch {b}": per["batched"] / per[f"raw_{b}"],
            "GradCAM / plain, batch 1": per["cam_single"] / per["single"],
            f"GradCAM / plain, batch {b}": per["cam_batched"] / per["batched"],
        },
        "peak_rss_mb": _peak_rss_mb(),
        "n": n,
        "batch_size": b,
        "repeats": repeats,
        "photo": f"{PHOTO_SIZE[0]}x{PHOTO_SIZE[1]} JPEG",
        "input_size": size,
        "machine": _machine(),
    }


def _peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux, bytes on macOS
    return kb / (1024 * 1024 if sys.platform == "darwin" else 1024)


def _machine() -> dict:
    from afiqa import runtime

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {
        "cpus": os.cpu_count(),
        "load_avg_1_5_15": [round(v, 2) for v in load],
        "python": platform.python_version(),
        "backend": runtime.backend(),
        "device": runtime.device(),
    }


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        f"afiqa speed: {report.get('model', '?')}; {report['n']} photos of {report['photo']}, "
        f"model input {report['input_size']} px; median of {report['repeats']}",
        f"machine: {m['cpus']} CPUs, load average {m['load_avg_1_5_15']}, {m['backend']} on {m['device']}",
        "",
        "| measurement | batch | per image (ms) | images/s | first call extra (s) | peak RSS after (MB) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in report["rows"]:
        t = r["per_image_s"]
        lines.append(f"| {r['name']} | {r['batch']} | {t * 1e3:.1f} | {1 / t:.1f} | {r['first_call_extra_s']:.2f} | "
                     f"{r['peak_rss_mb_after_first_call']:.0f} |")
    lines += ["", "| ratio | value |", "|---|---:|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in report["ratios"].items()]
    if report.get("startup_s") is not None:
        lines += ["", f"startup, Predictor() (build the network, load the weights): {report['startup_s']:.1f} s"]
    lines += [f"peak resident memory: {report['peak_rss_mb']:.0f} MB"]
    lines += ["first call extra: what the first call took over a timed one (graph tracing, warm-up), "
              "in the order of the table"]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
