"""The ``afiqa`` command line.

    afiqa score PATH... [--csv FILE] [--heatmaps DIR] [--batch-size N] [--model NAME|CARD.json]
    afiqa score PATH|LISTING... --engine ray [--csv FILE] [--parquet FILE] [--ray-address ADDR] [--workers N]
    afiqa export --model NAME|CARD.json [--format litert|onnx] [--precision fp32|fp16|int8] [--out FILE]
    afiqa info

Exit codes: 0 every file was scored; 1 some file could not be scored (each is reported,
the others are scored); 2 usage, set-up or output error (bad arguments, unknown model,
weights not found, an output path that cannot or must not be written), in one line;
130 Ctrl-C; 141 the reader of the output went away (``| head``). The last two keep the
CSV rows written so far.

The CSV is written beside FILE under a temporary name and renamed into place (after
Ctrl-C too, with the rows so far); FILE is never a photo: an image name or an existing
file that is not a CSV is refused before the model loads. Cells that a spreadsheet
would run as a formula (starting with = + - @) are neutralised: see afiqa.io.csvout.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from afiqa import __version__
from afiqa.io.csvout import CSV_COLUMNS, OutputError
from afiqa.errors import AfiqaError


def main(argv: list[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):  # a non-UTF-8 terminal or file name must not crash
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    args = _parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from afiqa.runtime import quiet

    quiet.install()  # TensorFlow's oneDNN notice ignores TF_CPP_MIN_LOG_LEVEL: a good run logs nothing
    try:
        code = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, not as a message at exit
        return code
    except AfiqaError as e:
        print(f"afiqa: {_printable(str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("afiqa: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `afiqa score ... | head`: the reader left; stop as quietly as SIGPIPE would
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 141


def _parser() -> argparse.ArgumentParser:
    from afiqa.io.render import DISPLAY_SIDE
    from afiqa.runtime.zoo import DEFAULT_MODEL

    p = argparse.ArgumentParser(prog="afiqa", description="Blind image quality assessment (0-100, higher is better).")
    p.add_argument("--version", action="version", version=f"afiqa {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("score", help="score images or folders of images", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders (searched recursively)")
    s.add_argument("--csv", metavar="FILE", help=f"write {','.join(CSV_COLUMNS)},heatmap rows here")
    s.add_argument("--heatmaps", metavar="DIR", help="write a GradCAM overlay PNG per image here")
    s.add_argument("--heatmap-size", type=heatmap_size, default=DISPLAY_SIDE, metavar="PX|full",
                   help=f"longest side of the heat-map PNGs (default {DISPLAY_SIDE}; full: the photo's own size)")
    s.add_argument("--batch-size", type=positive_int, default=None, metavar="N",
                   help="photos a forward pass (default: the runtime's best: 1 on LiteRT, 8 on Keras)")
    s.add_argument("--model", default=DEFAULT_MODEL, help="a model name from `afiqa info`, or a model card .json")
    s.add_argument("--weights", metavar="FILE", help="weights file to use instead of the resolved one")
    s.add_argument("--quiet", action="store_true", help="no table and no progress bar")
    s.add_argument("--runtime", choices=("auto", "litert", "litert-int8", "keras"), default="auto",
                   help="what computes the scores (default auto: the fastest available; `afiqa info` says which)")
    r = s.add_argument_group("scoring at scale (--engine ray; resumable: a rerun with the same output goes on)")
    r.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: this process; ray: Ray Data workers (pip install 'afiqa[ray]'); "
                        "PATH may then also be a URI or a .txt/.csv/.parquet listing")
    r.add_argument("--parquet", metavar="FILE", help=f"write {','.join(CSV_COLUMNS)} rows as Parquet")
    r.add_argument("--ray-address", metavar="ADDR", help="an existing Ray cluster (default: start one here)")
    r.add_argument("--workers", type=positive_int, metavar="N", help="scoring workers (default: one per CPU)")
    s.set_defaults(func=_score_with_engine)

    e = sub.add_parser("export", help="export a model for LiteRT or ONNX and record it in its model card")
    e.add_argument("--model", default=DEFAULT_MODEL, help="a model name, or a model card .json")
    e.add_argument("--format", default="litert", choices=("litert", "onnx"),
                   help="litert (default): afiqa's own CPU runtime; onnx: for ONNX Runtime and others (afiqa[onnx])")
    e.add_argument("--precision", default=None, choices=("fp32", "fp16", "int8"),
                   help="litert: fp16 (default; half the size of fp32, the same speed), fp32 or int8; onnx: fp32")
    e.add_argument("--out", metavar="FILE", help="where to write it (default: NAME.tflite or NAME.onnx beside the weights)")
    e.add_argument("--weights", metavar="FILE", help="Keras weights file to export instead of the resolved one")
    e.add_argument("--check", nargs="+", metavar="PATH", help="photos or folders to compare it with Keras on "
                   "(default: the repository's examples/)")
    e.add_argument("--calibrate", nargs="+", metavar="PATH", help="int8: photos or folders whose activations set "
                   "the int8 ranges (a few hundred like the ones it will score; not the --check photos)")
    e.add_argument("--force", action="store_true", help="replace an existing output file")
    e.set_defaults(func=_export)

    c = sub.add_parser("calibrate", help="fit afiqa's score to your own ratings; writes a model card",
                       description="Fit a monotone map from afiqa's score to your own ratings (columns path,score, "
                       "from 20 photos up) and write it as a model card usable as --model.")
    c.add_argument("ratings", metavar="RATINGS.csv", help="columns path,score (any scale)")
    c.add_argument("--images", metavar="DIR", help="folder the paths are relative to (default: the CSV's folder)")
    c.add_argument("--out", required=True, metavar="CARD.json", help="the calibrated model card to write (a new file)")
    c.add_argument("--model", default=DEFAULT_MODEL, help="the base model: a name or a model card .json")
    c.add_argument("--lower-better", action="store_true", help="a lower rating means a better photo")
    c.add_argument("--name", help="the calibrated model's name (default: the --out file's stem)")
    c.set_defaults(func=_calibrate)

    i = sub.add_parser("info", help="version, runtime, backend, device, models and where their weights are")
    i.set_defaults(func=_info)
    return p


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return n


def _score_with_engine(args) -> int:
    """The one place the engine is chosen: this process, or Ray Data workers."""
    if args.engine == "ray":
        from afiqa.distributed import score_command

        return score_command(args)
    if args.parquet or args.ray_address or args.workers:
        raise AfiqaError("--parquet, --ray-address and --workers need --engine ray")
    return _score(args)


def heatmap_size(text: str) -> int | None:
    """argparse type: a side in pixels (>= 64), or "full" (None: the photo's own size)."""
    if text.strip().lower() == "full":
        return None
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 64:
        raise argparse.ArgumentTypeError(f"expected a size in pixels (at least 64) or 'full', got {text}")
    return n


def _score(args) -> int:
    from afiqa.io.csvout import ScoreCsv
    from afiqa.io.inputs import list_images
    from afiqa.predictor import Predictor

    files = list_images(args.paths)
    if not files:
        print("afiqa: no image files found in " + _printable(", ".join(args.paths)), file=sys.stderr)
        return 2
    if args.heatmaps:
        from afiqa import runtime

        if not runtime.has_keras():  # before loading anything: one sentence, nothing else
            raise runtime.RuntimeUnavailable(runtime.keras_missing_message("Heat-maps (GradCAM)"))
    heat_dir = Path(args.heatmaps) if args.heatmaps else None
    _check_outputs(args.csv, heat_dir, files)  # before the model loads: a mistake costs no wait
    out = ScoreCsv(args.csv, extra=("heatmap",)) if args.csv else None  # also proves the folder is writable
    try:
        if heat_dir:
            _make_dir(heat_dir)
        predictor = Predictor(args.model, weights=args.weights, batch_size=args.batch_size, runtime=args.runtime)
        if heat_dir:
            predictor.keras_runtime()  # heat-maps need Keras: say so before scoring anything
    except BaseException:
        if out:
            out.discard()
        raise
    bar = None
    if not args.quiet and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=len(files), unit="img", file=sys.stderr)
    # heat-map names never take the name of a photo being scored (--heatmaps pointing at the photos)
    failed, used_names = 0, {f.name for f in files if heat_dir and f.parent == heat_dir}
    show = not args.quiet
    if show:
        print(f"{'score':>7}  {'±':>5}  {'label':<9}  {'problem':<11}  path", flush=True)
    try:
        for path, r in zip(files, predictor.iter_scores(files, heatmaps=heat_dir is not None)):
            heat = ""
            if r.ok and heat_dir:
                heat = str(_write_heatmap(r, path, heat_dir, used_names, args.heatmap_size))
            if not r.ok:
                failed += 1
            if out:
                out.row(path, r.score, r.label, r.error, heat, uncertainty=r.uncertainty, problem=r.problem)
            if show:
                text = (f"{r.score:7.2f}  {_or_dash(r.uncertainty):>5}  {r.label:<9}  {r.problem or '-':<11}  {path}"
                        if r.ok else f"{'-':>7}  {'':>5}  {'error':<9}  {'':<11}  {r.error}")
                (bar.write if bar else print)(_printable(text))
            if bar:
                bar.update(1)
    except BaseException as e:
        if out:  # Ctrl-C or a closed pipe keeps the rows so far; an error leaves the old file as it was
            out.close() if isinstance(e, (KeyboardInterrupt, BrokenPipeError)) else out.discard()
        raise
    finally:
        if bar:
            bar.close()
    if out:
        out.close()
    if failed:
        print(f"afiqa: {failed} of {len(files)} files could not be scored (see the error column)", file=sys.stderr)
    return 1 if failed else 0


def _or_dash(value: float | None) -> str:
    from afiqa.io.csvout import format_score

    return format_score(value) or "-"


def _printable(text: str) -> str:
    from afiqa.io.inputs import printable

    return printable(text)


def _check_outputs(csv_path: str | None, heat_dir: Path | None, inputs: list[Path]) -> None:
    """Refuse, in one sentence (``OutputError``, exit 2), an output that cannot or must
    not be written: a CSV named like an image or that is one of the inputs (``--csv
    *.jpg`` puts the first photo there), an existing file that is not a CSV, a folder,
    a missing folder; a heat-map folder that is a file."""
    from afiqa.io.inputs import IMAGE_EXTENSIONS

    if csv_path is not None:
        target = Path(csv_path)
        if target.suffix.lower() in IMAGE_EXTENSIONS or any(_same_file(target, f) for f in inputs):
            raise OutputError(f"--csv {csv_path} names an image; give the CSV a name of its own, e.g. --csv scores.csv "
                              "(afiqa never writes over a photo)")
        if target.is_dir():
            raise OutputError(f"--csv {csv_path} is a folder; give a file name, e.g. {target / 'scores.csv'}")
        if target.exists() or target.is_symlink():
            if not target.is_file():
                raise OutputError(f"--csv {csv_path} exists and is not a regular file; give a new file name")
            if not _looks_like_csv(target):
                raise OutputError(f"--csv {csv_path} exists and is not a CSV file; afiqa will not write over it")
        parent = target.parent
        if not parent.is_dir():
            raise OutputError(f"--csv {csv_path}: the folder {parent} does not exist")
    if heat_dir is not None:
        if heat_dir.exists() and not heat_dir.is_dir():
            raise OutputError(f"--heatmaps {heat_dir} is a file, not a folder; give a folder for the heat-map PNGs")
        for up in heat_dir.parents:  # the first existing folder above it must be a folder
            if up.exists():
                if not up.is_dir():
                    raise OutputError(f"--heatmaps {heat_dir}: {up} is a file, not a folder")
                break


def _looks_like_csv(path: Path) -> bool:
    """A file afiqa may replace: named .csv, or starting with afiqa's CSV header."""
    if path.suffix.lower() == ".csv":
        return True
    try:
        with path.open("rb") as fh:
            head = ",".join(CSV_COLUMNS[:4])  # the first four columns, the same since the first release
            return fh.read(len(head)) == head.encode()
    except OSError:
        return False


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _make_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"could not create the folder {path}: {e.strerror or type(e).__name__}") from None


def _write_heatmap(r, path: Path, heat_dir: Path, used: set, side: int | None) -> Path:
    try:
        return _save_overlay(r, path, heat_dir, used, side)
    except OSError as e:
        raise OutputError(f"could not write a heat-map in {heat_dir}: {e.strerror or type(e).__name__}") from None


def _save_overlay(r, path: Path, heat_dir: Path, used: set, side: int | None) -> Path:
    """The signed GradCAM overlay of ``r`` as a PNG in ``heat_dir``: longest side ``side``
    (None: full size), the score, label and file name above it, the legend below."""
    from PIL import Image

    from afiqa.explain import FUSED
    from afiqa.io.render import heatmap_picture

    stem, k = path.stem, 1
    name = f"{stem}_gradcam.png"
    while name in used:
        name, k = f"{stem}_{k}_gradcam.png", k + 1
    used.add(name)
    target = heat_dir / name
    title = f"{r.score:.2f} {r.label}  {_printable(path.name)}"
    # compress_level=1: still lossless, ~6x faster than the default 6 (which took longer
    # than scoring the photo), files ~15% larger.
    Image.fromarray(heatmap_picture(r.image, r.heatmaps[FUSED], title, side=side)).save(target, compress_level=1)
    return target


def _export(args) -> int:
    from afiqa.runtime.export import export
    from afiqa.io.inputs import list_images

    from afiqa.runtime.export import record_key

    check = list_images(args.check) if args.check else None
    calibrate = list_images(args.calibrate) if args.calibrate else None
    rec = export(args.model, args.format, args.precision, out=args.out, weights=args.weights,
                 check=check, check_name=", ".join(args.check) if args.check else None, force=args.force,
                 calibrate=calibrate, calibrate_name=", ".join(args.calibrate) if args.calibrate else None)
    key = record_key(args.format, rec["precision"])
    print(f"wrote {rec['file']} ({rec['precision']}, {rec['bytes'] / 1e6:.1f} MB, sha256 {rec['sha256']})")
    print(f"scores vs Keras on {rec['n_check']} photos ({rec['check_set']}): largest difference "
          f"{rec['max_score_diff']:.3f}, mean {rec['mean_score_diff']:.3f} (0-100 scale; tolerance {rec['tolerance']})")
    print(f"recorded in {rec['card']} under exports.{key}")
    for where, t in rec.get("speed", {}).items():
        print(f"speed on {where}: int8 {t['int8_s']:.3f} s, fp16 {t['fp16_s']:.3f} s a batch of {t['batch']}")
    from afiqa.runtime.zoo import MODELS

    if args.model in MODELS:
        print(f"the table entry in afiqa/runtime/zoo.py must carry the same record: exports={{{key!r}: ...}}")
    if rec["max_score_diff"] > rec["tolerance"]:
        print(f"afiqa: the export differs from Keras by more than {rec['tolerance']}; "
              "try a higher --precision", file=sys.stderr)
        return 1
    return 0


def _calibrate(args) -> int:
    from afiqa.calibration import calibrate

    rep = calibrate(args.ratings, args.images, args.out, args.model, args.lower_better, args.name)
    for row in rep["left_out"]:
        where = f"line {row['line']}: " if row["line"] else ""
        print(f"left out: {where}{_printable(row['path'])}: {_printable(row['why'])}", file=sys.stderr)
    b = rep["before"]
    print(f"{rep['n']} rated photos; {len(rep['left_out'])} left out")
    print(f"before (afiqa's score stretched onto your range): SROCC {b['srocc']:.3f}  PLCC {b['plcc']:.3f}  "
          f"RMSE {b['rmse']:.4g}")
    for method, f in rep["maps"].items():
        what = "refitted head" if method == "refit" else f"{method} map"
        print(f"after, {what}, 5-fold cross-validated: SROCC {f['srocc']:.3f}  PLCC {f['plcc']:.3f}  "
              f"RMSE {f['rmse']:.4g}")
    print(f"kept: {rep['chosen']} ({rep['why']}); head refit: {rep['head_refit']}")
    print(f"wrote {args.out}: use it as --model {args.out}")
    return 0


def _info(args) -> int:
    from afiqa import runtime
    from afiqa.runtime.weights import describe_file, describe_weights
    from afiqa.runtime.zoo import DEFAULT_MODEL, MODELS

    print(f"afiqa {__version__}")
    keras_scores = False
    try:
        choice = runtime.choose("auto", MODELS[DEFAULT_MODEL], dry=True)
        print(f"runtime: {choice.name} ({choice.reason})")
        keras_scores = choice.name == "keras"
    except AfiqaError as e:
        print(f"runtime: none ({e})")
    lite = f"ai-edge-litert, XNNPACK, {runtime.cpu_threads()} threads" if runtime.has_litert() else \
        f"not installed ({runtime.LITERT_HINT})"
    print(f"LiteRT: {lite}")
    if runtime.has_keras():
        print(f"backend: {runtime.backend()}")
        print(f"device: {runtime.device()} (Keras: heat-maps{', scores' if keras_scores else ''})")
    else:
        print(f"backend: none: Keras/TensorFlow not installed (heat-maps and training need them: {runtime.TF_HINT})")
        print("device: CPU (LiteRT)")
    print(f"models ({len(MODELS)}):")
    for name, card in MODELS.items():
        mark = " (default)" if name == DEFAULT_MODEL else ""
        cfg = card.config
        print(f"  {name}{mark}: {' + '.join(cfg.backbones)} at {cfg.image_size} px; trained on {card.train_set or '?'}")
        print(f"    weights: {describe_weights(card)}")
        rec = runtime.litert_export(card)
        if rec:
            print(f"    litert: {describe_file(card, rec['file'])}, {rec.get('precision')}, largest score difference "
                  f"to Keras {rec.get('max_score_diff')} on {rec.get('check_set')}")
        if card.side_heads.get("file"):
            print(f"    side heads (problem, uncertainty): {describe_file(card, card.side_heads['file'])}")
        rec8 = runtime.litert_export(card, runtime.LITERT_INT8)
        if rec8:
            why_not = runtime.int8_problem(card)
            where = "measured, not published" if rec8.get("published") is False else describe_file(card, rec8["file"])
            print(f"    litert-int8: {where}; "
                  f"{'auto uses it here' if why_not is None else 'auto does not use it: ' + why_not}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
