"""Compute the frozen backbones' outputs for a dataset once and keep them on disk.

Training the attention blocks and the head on cached feature maps is what makes the
recipe fit a 2-core CPU: the backbones (the expensive part) run once per image.

    python -m train.cache_features --dataset biq2021 --data-dir DIR --out CACHE [--image-size 512]

``--feature-pool K`` stores the feature maps average-pooled by K (as the model's
``feature_pool`` does before its attention), K*K times smaller. ``--extra-scales 2``
adds the pooled maps of a half-size view to the level vectors (``model.extra_scales``).

Writes, for stream i: ``s{i}_features.npy`` (N, h/K, w/K, C) float16 and ``s{i}_levels.npy``
(N, D) float32, plus ``index.csv`` (row, path, score, split, group) and ``meta.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import queue
import threading
import time
from pathlib import Path

import numpy as np

from afiqa.config import ModelConfig
from afiqa.inputs import load_model_input
from afiqa.model import build_stream
from train.datasets import ADAPTERS


def pool(maps: np.ndarray, k: int) -> np.ndarray:
    """Average-pool (N, H, W, C) maps by k (like keras AveragePooling2D(k), 'valid')."""
    if k == 1:
        return maps
    n, h, w, c = maps.shape
    h, w = h // k * k, w // k * k
    return maps[:, :h, :w].reshape(n, h // k, k, w // k, k, c).mean(axis=(2, 4))


def write_outputs(cfg: ModelConfig, load, n: int, out: Path, feature_pool: int, batch_size: int = 16) -> None:
    """Run the model's streams on images ``load(0) .. load(n - 1)`` (model inputs) and
    write ``s{i}_features.npy`` / ``s{i}_levels.npy`` in ``out``."""
    streams = [build_stream(cfg, i, weights="imagenet") for i in range(len(cfg.backbones))]
    out.mkdir(parents=True, exist_ok=True)
    arrays = []
    for i, s in enumerate(streams):
        fshape, lshape = (tuple(t.shape[1:]) for t in s.outputs)
        fshape = (fshape[0] // feature_pool, fshape[1] // feature_pool, fshape[2])
        arrays.append(
            (
                np.lib.format.open_memmap(out / f"s{i}_features.npy", "w+", np.float16, (n, *fshape)),
                np.lib.format.open_memmap(out / f"s{i}_levels.npy", "w+", np.float32, (n, *lshape)),
            )
        )

    batches: queue.Queue = queue.Queue(maxsize=3)

    def reader() -> None:  # decode on a thread while the backbones run
        for start in range(0, n, batch_size):
            batches.put((start, np.stack([load(j) for j in range(start, min(start + batch_size, n))])))
        batches.put(None)

    threading.Thread(target=reader, daemon=True).start()
    t0 = time.time()
    while (item := batches.get()) is not None:
        start, x = item
        for s, (feat, lev) in zip(streams, arrays):
            f, lv = s.predict_on_batch(x)
            feat[start : start + len(x)] = pool(np.asarray(f, np.float32), feature_pool).astype(np.float16)
            lev[start : start + len(x)] = np.asarray(lv, np.float32)
        done = start + len(x)
        if done % (batch_size * 20) == 0 or done == n:
            el = time.time() - t0
            print(f"{done}/{n}  {el:.0f}s  {el / done:.3f}s/img  eta {el / done * (n - done):.0f}s", flush=True)
    for feat, lev in arrays:
        feat.flush()
        lev.flush()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=sorted(ADAPTERS), default="biq2021")
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--image-size", type=int, default=512)
    ap.add_argument("--backbones", nargs="+", default=list(ModelConfig().backbones))
    ap.add_argument("--feature-pool", type=int, default=1)
    ap.add_argument("--extra-scales", type=int, nargs="*", default=[],
                    help="also pool each backbone on the image downscaled by these factors (model.extra_scales)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--limit", type=int, default=0, help="first N samples only (for trials)")
    args = ap.parse_args(argv)

    samples = ADAPTERS[args.dataset](args.data_dir)
    if args.limit:
        samples = samples[: args.limit]
    cfg = ModelConfig(backbones=tuple(args.backbones), image_size=args.image_size, multilevel=True,
                      extra_scales=tuple(args.extra_scales))
    out = Path(args.out)
    t0 = time.time()
    write_outputs(cfg, lambda j: load_model_input(samples[j].path, cfg.image_size), len(samples), out,
                  args.feature_pool, args.batch_size)
    with open(out / "index.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["row", "path", "score", "split", "group"])
        for k, s in enumerate(samples):
            w.writerow([k, str(s.path), s.score, s.split, s.group])
    meta = {
        "dataset": args.dataset,
        "feature_pool": args.feature_pool,
        "data_dir": str(Path(args.data_dir).resolve()),
        "config": cfg.to_dict(),
        "n": len(samples),
        "seconds": round(time.time() - t0, 1),
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    print(f"cached {len(samples)} samples in {meta['seconds']} s -> {out}")


if __name__ == "__main__":
    main()
