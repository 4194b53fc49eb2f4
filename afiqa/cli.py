"""The ``afiqa`` command line.

    afiqa score PATH... [--csv FILE] [--heatmaps DIR] [--batch-size N] [--model NAME|CARD.json]
    afiqa info

Exit codes: 0 every file was scored; 1 some file could not be scored (each is reported,
the others are scored); 2 usage or set-up error (bad arguments, unknown model, weights
not found), nothing was scored.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path

from afiqa import __version__
from afiqa.csvout import CSV_COLUMNS
from afiqa.errors import AfiqaError


def main(argv: list[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):  # a non-UTF-8 terminal or file name must not crash
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    args = _parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        return args.func(args)
    except AfiqaError as e:
        print(f"afiqa: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("afiqa: interrupted", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    from afiqa.render import DISPLAY_SIDE
    from afiqa.zoo import DEFAULT_MODEL

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
    s.add_argument("--batch-size", type=positive_int, default=8, metavar="N")
    s.add_argument("--model", default=DEFAULT_MODEL, help="a model name from `afiqa info`, or a model card .json")
    s.add_argument("--weights", metavar="FILE", help="weights file to use instead of the resolved one")
    s.add_argument("--quiet", action="store_true", help="no table and no progress bar")
    s.set_defaults(func=_score)

    i = sub.add_parser("info", help="version, backend, device, models and where their weights are")
    i.set_defaults(func=_info)
    return p


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return n


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
    from afiqa.inputs import list_images
    from afiqa.predictor import Predictor

    files = list_images(args.paths)
    if not files:
        print("afiqa: no image files found in " + ", ".join(args.paths), file=sys.stderr)
        return 2
    predictor = Predictor(args.model, weights=args.weights, batch_size=args.batch_size)
    heat_dir = Path(args.heatmaps) if args.heatmaps else None
    if heat_dir:
        heat_dir.mkdir(parents=True, exist_ok=True)
    bar = None
    if not args.quiet and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=len(files), unit="img", file=sys.stderr)
    # surrogateescape: a file name that is not UTF-8 is written back as the bytes it has on disk
    out = open(args.csv, "w", newline="", encoding="utf-8", errors="surrogateescape") if args.csv else None
    writer = csv.writer(out) if out else None
    if writer:
        writer.writerow([*CSV_COLUMNS, "heatmap"])
    failed, used_names = 0, set()
    show = not args.quiet
    if show:
        print(f"{'score':>7}  {'label':<9}  path", flush=True)
    try:
        for path, r in zip(files, predictor.iter_scores(files, heatmaps=heat_dir is not None)):
            heat = ""
            if r.ok and heat_dir:
                heat = str(_save_overlay(r, path, heat_dir, used_names, args.heatmap_size))
            if not r.ok:
                failed += 1
            if writer:
                writer.writerow([str(path), "" if r.score is None else f"{r.score:.3f}", r.label, r.error, heat])
                out.flush()
            if show:
                line = f"{r.score:7.2f}  {r.label:<9}  {path}" if r.ok else f"{'-':>7}  {'error':<9}  {r.error}"
                (bar.write if bar else print)(line)
            if bar:
                bar.update(1)
    finally:
        if bar:
            bar.close()
        if out:
            out.close()
    if failed:
        print(f"afiqa: {failed} of {len(files)} files could not be scored (see the error column)", file=sys.stderr)
    return 1 if failed else 0


def _save_overlay(r, path: Path, heat_dir: Path, used: set, side: int | None) -> Path:
    """The signed GradCAM overlay of ``r`` as a PNG in ``heat_dir``: longest side ``side``
    (None: full size), the score, label and file name above it, the legend below."""
    from PIL import Image

    from afiqa.explain import FUSED
    from afiqa.render import heatmap_picture

    stem, k = path.stem, 1
    name = f"{stem}_gradcam.png"
    while name in used:
        name, k = f"{stem}_{k}_gradcam.png", k + 1
    used.add(name)
    target = heat_dir / name
    title = f"{r.score:.1f} {r.label}  {_printable(path.name)}"
    # compress_level=1: still lossless, ~6x faster than the default 6 (which took longer
    # than scoring the photo), files ~15% larger.
    Image.fromarray(heatmap_picture(r.image, r.heatmaps[FUSED], title, side=side)).save(target, compress_level=1)
    return target


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in text)


def _info(args) -> int:
    from afiqa import runtime
    from afiqa.weights import describe_weights
    from afiqa.zoo import DEFAULT_MODEL, MODELS

    print(f"afiqa {__version__}")
    print(f"backend: {runtime.backend()}")
    print(f"device: {runtime.device()}")
    print(f"models ({len(MODELS)}):")
    for name, card in MODELS.items():
        mark = " (default)" if name == DEFAULT_MODEL else ""
        cfg = card.config
        print(f"  {name}{mark}: {' + '.join(cfg.backbones)} at {cfg.image_size} px; trained on {card.train_set or '?'}")
        print(f"    weights: {describe_weights(card)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
