"""How fast afiqa scores photos on this machine, on each runtime side by side.

    python -m benchmarks.bench [--model NAME|CARD.json] [--runtimes litert keras] [--random-weights]
                          [--n 32] [--batch-size 8] [--repeats 3] [--json OUT]
                          [--onnx NAME.onnx] [--onnx-int8 NAME-int8.onnx]

One run measures, on ``--n`` synthetic 1080x800 JPEG files written to a temporary
folder, for each runtime (``afiqa.runtime``: LiteRT when the model has a LiteRT export,
and Keras), per image:

* decode (``load_rgb``), resize (``to_model_input``) and both, on one thread (the same
  input policy whatever the runtime);
* the runtime's raw forward pass on ready-made model-size arrays at batch 1,
  ``--batch-size`` and 16, and for Keras the backbones alone (``streams_of(model)``);
* the pipeline as users run it: ``Predictor.score`` per file (batch 1) and
  ``Predictor.score_batch`` (decode on the thread pool, batched forward), with and without
  GradCAM (``heatmaps=True``; heat-maps always run on Keras);
* start-up: ``Predictor(runtime=...)`` in this process (LiteRT first, before anything
  has imported TensorFlow), and ``afiqa score one.jpg`` as a fresh process (wall time);
* ``afiqa score`` on all the photos as a fresh process, per photo with the start-up
  cancelled out ((T(n) - T(1)) / (n - 1)), and that process's peak resident memory;
* the target ratio: each LiteRT runtime's ``afiqa score`` per photo over the Keras forward
  pass per image at batch 16, both measured in this run (goal: at most 0.30). The int8
  runtime (``litert-int8``) is measured when the model has an int8 export
  (``afiqa export --precision int8 --calibrate PHOTOS``), else listed as left out.
* with ``--onnx`` (and ``--onnx-int8``): the raw forward pass of ONNX Runtime and
  OpenVINO on those files (``benchmarks.engines``), in the same rounds, as more columns.

Timings are the median of ``--repeats`` runs after a warm-up run (``time.perf_counter``);
the repeats go round all measurements in turn, so a busy machine slows all rows alike.
``--random-weights`` builds the card's architecture (default: ``ModelConfig()``, the
real one) with random weights, for when trained weights are not at hand (Keras only):
speed does not depend on weight values.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from afiqa.cli import positive_int

PHOTO_SIZE = (1080, 800)  # width, height of the test photos
RUNTIMES = ("litert", "litert-int8", "keras")  # litert-int8: left out when the model has no int8 export
TARGET_BATCH = 16  # the Keras forward pass the target compares with


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from afiqa.errors import AfiqaError

    try:
        with tempfile.TemporaryDirectory(prefix="afiqa-bench-") as tmp:
            predictors, what, card_ref, skipped = _predictors(args, Path(tmp))
            files = make_photos(Path(tmp), args.n, PHOTO_SIZE)
            from benchmarks import engines as other

            size = next(iter(predictors.values()))[0].size
            extra, left_out = other.available(args.onnx, args.onnx_int8, size)
            skipped.update(left_out)
            report = run(predictors, files, batch_size=args.batch_size, repeats=args.repeats, engines=extra)
            runs = min(2, args.repeats)
            report["cli"] = {name: cli_times(card_ref, name, files, args.weights, runs) for name in predictors}
    except AfiqaError as e:
        hint = "" if args.random_weights else " (--random-weights times the architecture without trained weights)"
        print(f"benchmarks.bench: {e}{hint}", file=sys.stderr)
        return 2
    report["model"], report["skipped"] = what, skipped
    report["target"] = target(report)
    report["target_int8"] = target(report, "litert-int8")
    print(markdown(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


def _parser() -> argparse.ArgumentParser:
    from afiqa.runtime.zoo import DEFAULT_MODEL

    p = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help=f"model name or card .json (default {DEFAULT_MODEL}; "
                   "with --random-weights and no --model: ModelConfig() defaults)")
    p.add_argument("--weights", metavar="FILE", help="Keras weights file instead of the resolved one (Keras only)")
    p.add_argument("--random-weights", action="store_true", help="random weights: no trained weights needed")
    p.add_argument("--runtimes", nargs="+", default=list(RUNTIMES), choices=RUNTIMES,
                   help="runtimes to compare (default: both; one the model cannot run on is left out)")
    p.add_argument("--n", type=positive_int, default=32, help="number of photos (default 32)")
    p.add_argument("--batch-size", type=positive_int, default=8, help="batch size of the batched runs (default 8)")
    p.add_argument("--repeats", type=positive_int, default=3, help="timed repeats; the median is reported (default 3)")
    p.add_argument("--json", metavar="OUT", help="also write the results here as JSON")
    p.add_argument("--onnx", type=Path, metavar="FILE", help="the model's ONNX export: time ONNX Runtime and OpenVINO")
    p.add_argument("--onnx-int8", type=Path, metavar="FILE", help="its static int8 copy (python -m benchmarks.engines "
                   "quantize): time it too")
    return p


def _predictors(args, tmp: Path):
    """{runtime: (Predictor, seconds Predictor() took)}, a line saying which model, the
    model reference for ``afiqa score``, and {runtime: why it was left out}."""
    from afiqa.errors import AfiqaError
    from afiqa.predictor import Predictor
    from afiqa.runtime.zoo import DEFAULT_MODEL

    ref, weights = args.model or DEFAULT_MODEL, args.weights
    if args.random_weights:
        ref, weights = _random_card(args, tmp), None
    runtimes = [r for r in RUNTIMES if r in args.runtimes]  # LiteRT first: nothing has imported TensorFlow yet
    out, skipped = {}, {}
    for name in runtimes:
        t0 = time.perf_counter()
        try:
            p = Predictor(ref, weights=weights if name == "keras" else None, batch_size=args.batch_size, runtime=name)
        except AfiqaError as e:
            if name == "keras" or len(runtimes) == 1:
                raise
            skipped[name] = str(e)
            continue
        out[name] = (p, time.perf_counter() - t0)
    first = next(iter(out.values()))[0]
    what = f"{first.card.name}" + (" (random weights)" if args.random_weights else "")
    return out, what, ref, skipped


def _random_card(args, tmp: Path) -> Path:
    import keras

    from afiqa.model.config import ModelConfig
    from afiqa.model.network import build_model
    from afiqa.predictor import load_card
    from afiqa.runtime.weights import sha256_of
    from afiqa.runtime.zoo import ModelCard

    base = load_card(args.model)[0] if args.model else None
    cfg = (base.config if base else ModelConfig()).replace(backbone_weights=None)
    keras.utils.set_random_seed(0)
    weights = tmp / "random.weights.h5"
    build_model(cfg).save_weights(weights)
    card = ModelCard(name=f"{base.name if base else 'ModelConfig()'}-random", config=cfg,
                     weights_file=weights.name, sha256=sha256_of(weights), hub_repo="none/none")
    card_path = tmp / "random.json"
    card_path.write_text(json.dumps(card.to_dict()))
    return card_path


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


def run(predictors: dict, files: list[Path], batch_size: int = 8, repeats: int = 3,
        engines: dict | None = None) -> dict:
    """Every in-process measurement, per runtime: seconds per image for each row, the
    ratios, start-up, memory and the machine.

    Each measurement is called once untimed (its first call: graph tracing, warm-up), in
    the order of the table; then the timed repeats go round all of them in turn, so that a
    change in the machine's load falls on every row alike rather than on a few.
    """
    from afiqa.io.inputs import load_rgb, to_model_input

    any_p = next(iter(predictors.values()))[0]
    size = any_p.size
    n, b = len(files), max(1, min(batch_size, len(files)))
    k = min(n, 8)  # per-file runs use the first k files
    rgbs = [load_rgb(f, min_size=size) for f in files[:k]]
    rng = np.random.default_rng(0)
    x = {bs: rng.uniform(0, 255, (bs, size, size, 3)).astype(np.float32) for bs in sorted({1, b, TARGET_BATCH})}

    # (runtime, key, name, batch, function, images per call); runtime "" = the same for every runtime
    tasks = [
        ("", "decode", "decode (load_rgb)", 1, lambda: [load_rgb(f, min_size=size) for f in files[:k]], k),
        ("", "resize", "resize (to_model_input)", 1, lambda: [to_model_input(r, size) for r in rgbs], k),
        ("", "decode_resize", "decode + resize", 1,
         lambda: [to_model_input(load_rgb(f, min_size=size), size) for f in files[:k]], k),
    ]
    for name, (p, _) in predictors.items():
        tasks += _runtime_tasks(name, p, files, k, b, x)
    for name, fn in (engines or {}).items():  # raw forward passes at batch 1 and b only: not afiqa runtimes
        tasks += [(name, f"raw_{bs}", "raw forward (runtime.predict)", bs, (lambda xb=xb, fn=fn: fn(xb)), bs)
                  for bs, xb in x.items() if bs in (1, b)]  # at 16, five engines' arenas outgrow 24 GB

    first, rss, times = {}, {}, {}
    old = {name: p.batch_size for name, (p, _) in predictors.items()}
    try:
        for rt, key, _, _, fn, _ in tasks:
            t0 = time.perf_counter()
            fn()
            first[rt, key] = time.perf_counter() - t0
            rss[rt, key] = _peak_rss_mb()
            times[rt, key] = []
        for _ in range(max(1, repeats)):
            for rt, key, _, _, fn, _ in tasks:
                t0 = time.perf_counter()
                fn()
                times[rt, key].append(time.perf_counter() - t0)
    finally:
        for name, (p, _) in predictors.items():
            p.batch_size = old[name]

    rows, per = [], {}
    for rt, key, name, batch, _, count in tasks:
        med = statistics.median(times[rt, key])
        per[rt, key] = med / count
        rows.append({
            "runtime": rt, "key": key, "name": name, "batch": batch, "per_image_s": med / count,
            "min_per_image_s": min(times[rt, key]) / count,
            "first_call_extra_s": max(0.0, first[rt, key] - med),  # tracing, warm-up
            "peak_rss_mb_after_first_call": rss[rt, key],
        })
    ratios = {}
    for rt in predictors:
        ratios[f"{rt}: pipeline / raw forward, batch 1"] = per[rt, "single"] / per[rt, "raw_1"]
        ratios[f"{rt}: pipeline / raw forward, batch {b}"] = per[rt, "batched"] / per[rt, f"raw_{b}"]
        ratios[f"{rt}: GradCAM / plain, batch {b}"] = per[rt, "cam_batched"] / per[rt, "batched"]
    for lite in ("litert", "litert-int8"):
        if lite in predictors and "keras" in predictors:
            ratios[f"{lite} / keras, score_batch, batch {b}"] = per[lite, "batched"] / per["keras", "batched"]
    return {
        "rows": rows,
        "ratios": ratios,
        "startup_s": {rt: t for rt, (_, t) in predictors.items()},
        "engines": list(engines or {}),
        "why": {rt: p.choice.reason for rt, (p, _) in predictors.items()},
        "peak_rss_mb": _peak_rss_mb(),
        "n": n,
        "batch_size": b,
        "repeats": repeats,
        "photo": f"{PHOTO_SIZE[0]}x{PHOTO_SIZE[1]} JPEG",
        "input_size": size,
        "machine": _machine("keras" in predictors),
    }


def _runtime_tasks(rt: str, p, files, k: int, b: int, x: dict) -> list:
    def batched(heatmaps: bool):
        def go():
            p.batch_size = b
            p.score_batch(files, heatmaps=heatmaps)
        return go

    tasks = [
        (rt, "single", "pipeline: score(path)", 1, lambda: [p.score(f) for f in files[:k]], k),
        (rt, "batched", "pipeline: score_batch(paths)", b, batched(False), len(files)),
        (rt, "cam_batched", "pipeline + GradCAM: score_batch(paths, heatmaps=True)", b, batched(True), len(files)),
    ]
    for bs, xb in x.items():
        tasks.append((rt, f"raw_{bs}", "raw forward (runtime.predict)", bs, (lambda xb=xb: p.runtime.predict(xb)), bs))
    if rt == "keras":
        from afiqa.model.network import streams_of

        streams = streams_of(p.model)
        tasks.append((rt, f"streams_{b}", "raw backbones alone (streams, predict_on_batch)", b,
                      lambda: [s.predict_on_batch(x[b]) for s in streams], b))
    return tasks


def cli_times(model_ref, runtime: str, files: list[Path], weights=None, runs: int = 2) -> dict:
    """``afiqa score`` as a fresh process: wall time on one photo and on all of them (each
    the fastest of ``runs`` runs), the per-photo time with the start-up cancelled out, and
    the peak resident memory of the run on all photos."""
    def once(paths):
        cmd = [sys.executable, "-m", "afiqa", "score", *map(str, paths), "--quiet", "--runtime", runtime,
               "--model", str(model_ref)] + (["--weights", str(weights)] if weights and runtime == "keras" else [])
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_child_env())
        sampler = _PeakRSS(proc.pid)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        peak = sampler.stop()
        err = proc.stderr.read().decode(errors="replace").strip()
        proc.stderr.close()
        if os.waitstatus_to_exitcode(status) != 0:
            from afiqa.errors import AfiqaError

            raise AfiqaError(f"`afiqa score --runtime {runtime}` failed: {err.splitlines()[-1] if err else status}")
        if peak is None:  # no /proc: the child's rusage (on Linux it would hold this process's peak)
            peak = usage.ru_maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)
        return wall, peak

    one = min(once(files[:1])[0] for _ in range(runs))
    alls = [once(files) for _ in range(runs)]
    all_ = min(w for w, _ in alls)
    n = len(files)
    return {"one_photo_s": one, "all_photos_s": all_, "n": n,
            # nan when the run on all photos was not slower than on one: start-up noise
            # then outweighs the photos' own time, and more photos (--n) are needed
            "per_photo_s": (all_ - one) / (n - 1) if n > 1 and all_ > one else float("nan"),
            "peak_rss_mb": max(m for _, m in alls)}


def _child_env() -> dict:
    root = str(Path(__file__).resolve().parent.parent)
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": root + (os.pathsep + path if path else "")}


def target(report: dict, runtime: str = "litert") -> dict | None:
    """``afiqa score`` per photo on a LiteRT runtime / Keras forward per image at batch 16."""
    cli = report.get("cli", {}).get(runtime)
    keras_fwd = next((r["per_image_s"] for r in report["rows"]
                      if r["runtime"] == "keras" and r["key"] == f"raw_{TARGET_BATCH}"), None)
    if not cli or not keras_fwd:
        return None
    return {"litert_cli_per_photo_s": cli["per_photo_s"], "keras_forward_batch_16_s": keras_fwd,
            "ratio": cli["per_photo_s"] / keras_fwd, "goal": 0.30, "runtime": runtime}


class _PeakRSS:
    """A child's own peak resident memory, read from ``/proc/<pid>/status`` (``VmHWM``)
    every 20 ms while it runs. Its rusage will not do on Linux: a child started by
    ``vfork`` keeps the parent's peak across ``exec`` in ``ru_maxrss``, so it would report
    this process's memory (every runtime loaded), not its own."""

    def __init__(self, pid: int):
        self._path = Path(f"/proc/{pid}/status")
        self.peak_kb: int | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        if self._path.parent.exists():
            self._thread.start()

    def _run(self) -> None:
        while not self._done.is_set():
            try:
                text = self._path.read_text()
            except OSError:  # reaped
                return
            m = re.search(r"^VmHWM:\s+(\d+) kB", text, re.M)  # absent once the process is a zombie
            if m:
                self.peak_kb = max(self.peak_kb or 0, int(m.group(1)))
            self._done.wait(0.02)

    def stop(self) -> float | None:
        """The peak in MB (None where ``/proc`` is not there)."""
        self._done.set()
        if self._thread.is_alive():
            self._thread.join()
        return None if self.peak_kb is None else self.peak_kb / 1024


def _peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux, bytes on macOS
    return kb / (1024 * 1024 if sys.platform == "darwin" else 1024)


def _machine(with_keras: bool) -> dict:
    from afiqa import runtime

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {
        "cpus": os.cpu_count(),
        "threads": runtime.cpu_threads(),
        "processor": platform.processor() or platform.machine(),
        "load_avg_1_5_15": [round(v, 2) for v in load],
        "python": platform.python_version(),
        "backend": runtime.backend() if with_keras else "none",
        "device": runtime.device() if with_keras else "CPU",
    }


def markdown(report: dict) -> str:
    m = report["machine"]
    rts = list(report["startup_s"]) + list(report.get("engines", []))
    lines = [
        f"afiqa speed: {report.get('model', '?')}; {report['n']} photos of {report['photo']}, "
        f"model input {report['input_size']} px; median of {report['repeats']}",
        f"machine: {m['cpus']} CPUs ({m['processor']}), load average {m['load_avg_1_5_15']}; "
        f"Keras {m['backend']} on {m['device']}",
        *[f"{rt}: {why}" for rt, why in report.get("why", {}).items()],
        *[f"left out: {rt}: {why}" for rt, why in report.get("skipped", {}).items()],
        "",
        "per image, ms (first call extra, s)",
        "",
        "| measurement | batch | " + " | ".join(rts) + " |",
        "|---|---:|" + "---:|" * len(rts),
    ]
    cells: dict = {}
    order: list = []
    for r in report["rows"]:
        key = (r["name"], r["batch"])
        if key not in cells:
            cells[key], _ = {}, order.append(key)
        cell = f"{r['per_image_s'] * 1e3:.1f} ({r['first_call_extra_s']:.2f})"
        for rt in ([r["runtime"]] if r["runtime"] else rts):
            cells[key][rt] = cell
    for key in order:
        lines.append(f"| {key[0]} | {key[1]} | " + " | ".join(cells[key].get(rt, "") for rt in rts) + " |")
    cli = report.get("cli", {})
    def each(fmt) -> str:
        return " | ".join(fmt(rt) for rt in rts)

    lines.append("| start-up: Predictor(runtime=...), s | | "
                 + each(lambda rt: f"{report['startup_s'][rt]:.2f}" if rt in report["startup_s"] else "") + " |")
    if cli:
        lines.append("| `afiqa score one.jpg`, fresh process, wall s | | "
                     + each(lambda rt: f"{cli[rt]['one_photo_s']:.2f}" if rt in cli else "") + " |")
        lines.append(f"| `afiqa score` on {report['n']} photos, per photo (start-up cancelled out) | runtime's | "
                     + each(lambda rt: f"{cli[rt]['per_photo_s'] * 1e3:.1f}" if rt in cli else "") + " |")
        lines.append(f"| `afiqa score` on {report['n']} photos, peak memory MB | | "
                     + each(lambda rt: f"{cli[rt]['peak_rss_mb']:.0f}" if rt in cli else "") + " |")
    lines += ["", "| ratio | value |", "|---|---:|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in report["ratios"].items()]
    for t in (report.get("target"), report.get("target_int8")):
        if not t:
            continue
        verdict = ("not measured: start-up noise outweighed the photos' time; use more photos (--n)"
                   if t["ratio"] != t["ratio"] else "met" if t["ratio"] <= t["goal"] else "NOT met")
        lines += ["", f"target: {t.get('runtime', 'litert')} `afiqa score` per photo "
                  f"{t['litert_cli_per_photo_s'] * 1e3:.1f} ms / Keras forward per image at batch {TARGET_BATCH} "
                  f"{t['keras_forward_batch_16_s'] * 1e3:.1f} ms = {t['ratio']:.2f} (goal <= {t['goal']}: {verdict})"]
    lines += [f"peak resident memory of this process (every runtime loaded): {report['peak_rss_mb']:.0f} MB",
              "first call extra: what the first call took over a timed one (graph tracing, warm-up), "
              "in the order of the table"]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
