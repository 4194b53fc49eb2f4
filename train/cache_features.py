"""Compute the frozen backbones' outputs for a dataset once and keep them on disk.

Training the attention blocks and the head on cached feature maps is what makes the
recipe fit a 2-core CPU: the backbones (the expensive part) run once per image.

    python -m train.cache_features --dataset biq2021 --data-dir DIR --out CACHE [--image-size 512]

``--feature-pool K`` stores the feature maps average-pooled by K (as the model's
``feature_pool`` does before its attention), K*K times smaller. ``--extra-scales 2``
adds the pooled maps of a half-size view to the level vectors (``model.extra_scales``).
``--level-taps dense`` makes the level vectors pool every block (``model.level_taps``);
``--taps`` also stores every candidate tap (``s{i}_taps.npy``), so that one cache
serves models with either kind of levels (``FeatureCache.use_level_taps``).

Writes, for stream i: ``s{i}_features.npy`` (N, h/K, w/K, C) float16 and ``s{i}_levels.npy``
(N, D) float32, plus ``index.csv`` (row, path, score, split, group) and ``meta.json``
(written last: its presence means the cache is complete). A stopped run resumes where it
stopped when run again with the same arguments (``progress.json``).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import queue
import threading
import time
from pathlib import Path

import numpy as np

from afiqa.model.backbones import get_backbone
from afiqa.model.config import LEVEL_TAPS, ModelConfig
from afiqa.io.inputs import load_model_input
from afiqa.model.network import build_stream
from train.datasets import ADAPTERS


def pool(maps: np.ndarray, k: int) -> np.ndarray:
    """Average-pool (N, H, W, C) maps by k (like keras AveragePooling2D(k), 'valid')."""
    if k == 1:
        return maps
    n, h, w, c = maps.shape
    h, w = h // k * k, w // k * k
    return maps[:, :h, :w].reshape(n, h // k, k, w // k, k, c).mean(axis=(2, 4))


def tap_dims(backbone: str) -> list[list]:
    """``[[layer name, channels], ...]`` of the backbone's candidate taps, in cache order."""
    spec = get_backbone(backbone)
    model = spec.build(weights=None)
    return [[n, int(model.get_layer(n).output.shape[-1])] for n in spec.taps]


def tap_stream(cfg: ModelConfig, i: int):
    """Like ``build_stream`` (multi-level, no extra scales), plus a third output: the
    mean/std of every candidate tap of the backbone (``BackboneSpec.taps``), from which
    ``FeatureCache`` can serve either kind of level vector."""
    import keras

    from afiqa.model.layers import BackbonePreprocess, GlobalPooling

    spec = get_backbone(cfg.backbones[i])
    backbone = spec.build(weights="imagenet")
    taps = keras.Model(backbone.inputs, [backbone.output] + [backbone.get_layer(n).output for n in spec.taps])
    image = keras.Input((cfg.image_size, cfg.image_size, 3))
    fmap, *maps = taps(BackbonePreprocess(spec.preprocess)(image), training=False)
    pooled = dict(zip(spec.taps, (GlobalPooling("avg_std")(m) for m in maps)))  # each tap pooled once
    levels = [pooled[n] for n in spec.level_layers(cfg.level_taps)]  # either kind is a subset of the taps
    return keras.Model(image, [fmap, keras.layers.Concatenate()(levels), keras.layers.Concatenate()(list(pooled.values()))])


def write_outputs(cfg: ModelConfig, load, n: int, out: Path, feature_pool: int, batch_size: int = 16,
                  taps: bool = False, key: str = "", flush_every: int = 20) -> None:
    """Run the model's streams on images ``load(0) .. load(n - 1)`` (model inputs) and
    write ``s{i}_features.npy`` / ``s{i}_levels.npy`` in ``out`` (``taps``: also
    ``s{i}_taps.npy``, the pooled candidate taps).

    Resumable: after every few batches the arrays are flushed and ``progress.json``
    records how many rows are done, so a run that was stopped (a session cut, Ctrl-C, a
    crash) continues from there when called again with the same ``n`` and ``key`` (what
    the rows are: a digest of the samples and settings); anything else starts afresh.
    """
    if taps:
        streams = [tap_stream(cfg, i) for i in range(len(cfg.backbones))]
    else:
        streams = [build_stream(cfg, i, weights="imagenet") for i in range(len(cfg.backbones))]
    out.mkdir(parents=True, exist_ok=True)
    progress = out / "progress.json"
    state = {"key": key, "n": n, "done": 0}
    if progress.exists():
        have = json.loads(progress.read_text())
        if have.get("key") == key and have.get("n") == n:
            state = have
    resume = state["done"] > 0
    arrays = []
    for i, s in enumerate(streams):
        fshape, lshape, *tshape = (tuple(t.shape[1:]) for t in s.outputs)
        fshape = (fshape[0] // feature_pool, fshape[1] // feature_pool, fshape[2])
        files = [(f"s{i}_features.npy", np.float16, fshape), (f"s{i}_levels.npy", np.float32, lshape),
                 *((f"s{i}_taps.npy", np.float32, t) for t in tshape)]
        arrays.append(tuple(_open_array(out / name, dtype, (n, *shape), resume) for name, dtype, shape in files))
    if resume:
        print(f"resuming at {state['done']}/{n} (progress.json in {out})", flush=True)
    first = state["done"]

    batches: queue.Queue = queue.Queue(maxsize=3)

    def reader() -> None:  # decode on a thread while the backbones run
        try:
            for start in range(first, n, batch_size):
                batches.put((start, np.stack([load(j) for j in range(start, min(start + batch_size, n))])))
            batches.put(None)
        except BaseException as e:  # handed to the main thread, which would otherwise wait forever
            batches.put(e)

    threading.Thread(target=reader, daemon=True).start()
    t0 = time.time()
    while (item := batches.get()) is not None:
        if isinstance(item, BaseException):
            raise item
        start, x = item
        for s, (feat, lev, *tap) in zip(streams, arrays):
            f, lv, *tp = s.predict_on_batch(x)
            feat[start : start + len(x)] = pool(np.asarray(f, np.float32), feature_pool).astype(np.float16)
            lev[start : start + len(x)] = np.asarray(lv, np.float32)
            for a, t in zip(tap, tp):
                a[start : start + len(x)] = np.asarray(t, np.float32)
        done = start + len(x)
        if (done - first) % (batch_size * flush_every) == 0 or done == n:
            for a in arrays:
                for m in a:
                    m.flush()
            _write_json(progress, {**state, "done": done})  # only rows already on disk count as done
            el = time.time() - t0
            rate = el / (done - first)
            print(f"{done}/{n}  {el:.0f}s  {rate:.3f}s/img  eta {rate * (n - done):.0f}s", flush=True)
    for a in arrays:
        for m in a:
            m.flush()
    _write_json(progress, {**state, "done": n})


def _open_array(path: Path, dtype, shape: tuple, resume: bool) -> np.memmap:
    """A .npy memory map: the existing file when resuming (it must have this shape and
    type), else a new one."""
    if resume and path.exists():
        a = np.load(path, mmap_mode="r+")
        if a.shape == shape and a.dtype == dtype:
            return a
        raise SystemExit(f"{path} holds {a.dtype} {a.shape}, not {np.dtype(dtype)} {shape}; delete its folder to start afresh")
    return np.lib.format.open_memmap(path, "w+", dtype, shape)


def _write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj))
    tmp.replace(path)  # atomic: a reader never sees half a file


def samples_key(samples, *settings) -> str:
    """A digest of the samples (path, score) and the settings their outputs depend on."""
    h = hashlib.sha256(json.dumps([[str(s.path), s.score] for s in samples] + [list(settings)]).encode())
    return h.hexdigest()[:16]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=sorted(ADAPTERS), default="biq2021")
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--image-size", type=int, default=512)
    ap.add_argument("--backbones", nargs="+", default=list(ModelConfig().backbones))
    ap.add_argument("--feature-pool", type=int, default=1)
    ap.add_argument("--level-taps", choices=LEVEL_TAPS, default="sparse", help="what s{i}_levels.npy holds")
    ap.add_argument("--extra-scales", type=int, nargs="*", default=[],
                    help="also pool each backbone on the image downscaled by these factors (model.extra_scales)")
    ap.add_argument("--taps", action="store_true",
                    help="also store the mean/std of every candidate tap of each backbone (s{i}_taps.npy)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--limit", type=int, default=0, help="first N samples only (for trials)")
    args = ap.parse_args(argv)

    samples = ADAPTERS[args.dataset](args.data_dir)
    if args.limit:
        samples = samples[: args.limit]
    cfg = ModelConfig(backbones=tuple(args.backbones), image_size=args.image_size, multilevel=True,
                      level_taps=args.level_taps, extra_scales=tuple(args.extra_scales))
    if args.taps and cfg.extra_scales:
        raise SystemExit("--taps: not with --extra-scales")
    if args.taps and (untapped := [b for b in cfg.backbones if not get_backbone(b).taps]):
        raise SystemExit(f"--taps: no candidate taps registered for {', '.join(untapped)}")
    out = Path(args.out)
    t0 = time.time()
    key = samples_key(samples, cfg.to_dict(), args.feature_pool, args.taps)
    write_outputs(cfg, lambda j: load_model_input(samples[j].path, cfg.image_size), len(samples), out,
                  args.feature_pool, args.batch_size, args.taps, key=key)
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
        **({"taps": [tap_dims(b) for b in args.backbones]} if args.taps else {}),
        "seconds": round(time.time() - t0, 1),
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    print(f"cached {len(samples)} samples in {meta['seconds']} s -> {out}")


if __name__ == "__main__":
    main()
