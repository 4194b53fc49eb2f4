"""Compute the frozen backbones' outputs for a dataset once and keep them on disk.

Training the attention blocks and the head on cached feature maps is what makes the
recipe fit a 2-core CPU: the backbones (the expensive part) run once per image.

    python -m train.cache_features --dataset biq2021 --data-dir DIR --out CACHE [--image-size 512]

``--feature-pool K`` stores the feature maps average-pooled by K (as the model's
``feature_pool`` does before its attention), K*K times smaller.

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


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=sorted(ADAPTERS), default="biq2021")
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--image-size", type=int, default=512)
    ap.add_argument("--backbones", nargs="+", default=list(ModelConfig().backbones))
    ap.add_argument("--feature-pool", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--limit", type=int, default=0, help="first N samples only (for trials)")
    args = ap.parse_args(argv)

    samples = ADAPTERS[args.dataset](args.data_dir)
    if args.limit:
        samples = samples[: args.limit]
    cfg = ModelConfig(backbones=tuple(args.backbones), image_size=args.image_size, multilevel=True)
    streams = [build_stream(cfg, i, weights="imagenet") for i in range(len(cfg.backbones))]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    n = len(samples)
    arrays = []
    for i, s in enumerate(streams):
        fshape, lshape = (tuple(t.shape[1:]) for t in s.outputs)
        k = args.feature_pool
        fshape = (fshape[0] // k, fshape[1] // k, fshape[2])
        arrays.append(
            (
                np.lib.format.open_memmap(out / f"s{i}_features.npy", "w+", np.float16, (n, *fshape)),
                np.lib.format.open_memmap(out / f"s{i}_levels.npy", "w+", np.float32, (n, *lshape)),
            )
        )

    batches: queue.Queue = queue.Queue(maxsize=3)

    def reader() -> None:  # decode on a thread while the backbones run
        for start in range(0, n, args.batch_size):
            idx = range(start, min(start + args.batch_size, n))
            batches.put((start, np.stack([load_model_input(samples[j].path, cfg.image_size) for j in idx])))
        batches.put(None)

    threading.Thread(target=reader, daemon=True).start()
    t0 = time.time()
    while (item := batches.get()) is not None:
        start, x = item
        for s, (feat, lev) in zip(streams, arrays):
            f, lv = s.predict_on_batch(x)
            feat[start : start + len(x)] = pool(np.asarray(f, np.float32), args.feature_pool).astype(np.float16)
            lev[start : start + len(x)] = np.asarray(lv, np.float32)
        done = start + len(x)
        if done % (args.batch_size * 20) == 0 or done == n:
            el = time.time() - t0
            print(f"{done}/{n}  {el:.0f}s  {el / done:.3f}s/img  eta {el / done * (n - done):.0f}s", flush=True)
    for feat, lev in arrays:
        feat.flush()
        lev.flush()
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
        "n": n,
        "seconds": round(time.time() - t0, 1),
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    print(f"cached {n} samples in {meta['seconds']} s -> {out}")


if __name__ == "__main__":
    main()
