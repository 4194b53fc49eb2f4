"""Fine-tune the last block of each backbone, and the convolution after it, on cached maps.

A measurement for issue 13 (train/README.md, "Fine-tuning the last block of each
backbone"), not part of the recipe. Full fine-tuning needs a backbone pass per step
(about 112 min an epoch on a 2-core CPU); the maps just before each backbone's last block
change only when that block moves, so they are computed once and the last block, the
1x1 convolution to 1,280 channels after it and the head train on them:

    python scripts/finetune_tail.py cache --features CACHE --out CUT
    python scripts/finetune_tail.py fit --model runs/afiqa-v4/afiqa-v4.json --features CACHE --cut CUT \\
        --mode last --epochs 3 --out runs/tail/last.json [--fold ss01] [--save W.weights.h5]

``cache``: the training split's photos (the test split is never read) through each
backbone up to the input of its last block, float16, resumable (``progress.json``).
``fit``: ``--mode last`` trains the last block, the convolution and the head;
``--mode top`` the convolution and the head; ``--mode none`` the head alone (the control:
the same extra epochs without any backbone weight moving). BatchNorm statistics stay
fixed. The level vectors' columns of the taps inside the trained part are recomputed, the
others read from the features cache (``train.cache_features``, dense taps). Without
``--fold`` it scores the validation part after every epoch; with ``--fold G`` it first
trains the recipe's head on the other two subsets (as ``train.loso`` does) and scores
the held-out subset G.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import queue
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# The map each backbone's last block reads, and that block's layer-name prefix.
CUTS = {"mobilenet_v2": ("block_15_add", "block_16"), "efficientnet_lite2": ("block_19_add", "block_20")}


def _backbone(stream, name: str):
    from afiqa.model.backbones import get_backbone

    spec = get_backbone(name)
    if name not in CUTS:
        raise SystemExit(f"no cut point known for {name}: one of {', '.join(CUTS)}")
    return spec, stream.get_layer(spec.name) if stream is not None else spec.build(weights="imagenet")


def cache(args) -> None:
    import keras

    from afiqa.io.inputs import load_model_input
    from afiqa.model.layers import BackbonePreprocess
    from train.cache_features import _open_array, _write_json

    meta = json.loads((Path(args.features) / "meta.json").read_text())
    with open(Path(args.features) / "index.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "train"][: args.limit or None]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "rows.npy", np.array([int(r["row"]) for r in rows]))
    size = int(meta["config"]["image_size"])
    models = []
    for name in meta["config"]["backbones"]:
        spec, bb = _backbone(None, name)
        image = keras.Input((size, size, 3))
        sub = keras.Model(bb.inputs, bb.get_layer(CUTS[name][0]).output)
        models.append(keras.Model(image, sub(BackbonePreprocess(spec.preprocess)(image), training=False)))
    n, progress = len(rows), out / "progress.json"
    state = json.loads(progress.read_text()) if progress.exists() else {}
    done = state["done"] if state.get("n") == n else 0  # another --limit starts afresh
    arrays = [_open_array(out / f"s{i}_cut.npy", np.float16, (n, *m.output.shape[1:]), done > 0)
              for i, m in enumerate(models)]
    batches: queue.Queue = queue.Queue(maxsize=3)

    def reader() -> None:
        for s in range(done, n, args.batch):
            batches.put((s, np.stack([load_model_input(r["path"], size) for r in rows[s : s + args.batch]])))
        batches.put(None)

    threading.Thread(target=reader, daemon=True).start()
    t0, first = time.time(), done
    while (item := batches.get()) is not None:
        s, x = item
        for m, a in zip(models, arrays):
            a[s : s + len(x)] = np.asarray(m.predict_on_batch(x), np.float32).astype(np.float16)
        end = s + len(x)
        if (end - first) % (args.batch * 10) == 0 or end == n:
            for a in arrays:
                a.flush()
            _write_json(progress, {"n": n, "done": end})  # only rows already on disk count as done
            rate = (time.time() - t0) / (end - first)
            print(f"{end}/{n}  {rate:.3f} s a photo", flush=True)


def tail_models(model, mcfg, cut_shapes, level_dims, mode: str):
    """``(trainer, scorer, tap_channels, n_trained)`` over ``model``'s own layers (weights
    shared): per stream, inputs (the map before the last block, the level vector less the
    tail's tap columns); ``trainer`` outputs each head member's score, ``scorer`` the
    score. ``mode`` says which layers train (``last``, ``top``, ``none``; the head always)."""
    import keras

    from afiqa.model.backbones import get_backbone
    from afiqa.model.layers import GlobalPooling
    from afiqa.model.network import HEAD, member_view, streams_of

    head = model.get_layer(HEAD)
    inputs, head_inputs, tap_channels, n_trained = [], [], [], 0
    for i, stream in enumerate(streams_of(model)):
        name = mcfg.backbones[i]
        spec, bb = _backbone(stream, name)
        cut, block = CUTS[name]
        names = [layer.name for layer in bb.layers]
        tap_name = get_backbone(name).level_layers(mcfg.level_taps)[-1]
        if names.index(tap_name) <= names.index(cut):
            raise SystemExit(f"{name}: the last level tap {tap_name} lies before the cut {cut}")
        channels = int(bb.get_layer(tap_name).output.shape[-1])
        tap_channels.append(channels)
        x = c = keras.Input(tuple(cut_shapes[i]))
        lv = keras.Input((level_dims[i] - 2 * channels,))
        tap = None
        for layer in bb.layers[names.index(cut) + 1 :]:  # the tail is a chain: no skip reaches past the cut
            x = layer(x)
            tap = x if layer.name == tap_name else tap
            train_it = (not isinstance(layer, keras.layers.BatchNormalization)
                        and (mode == "last" or (mode == "top" and not layer.name.startswith(block))))
            layer.trainable = train_it
            n_trained += sum(int(np.prod(w.shape)) for w in layer.weights) if train_it else 0
        inputs += [c, lv]
        head_inputs += [x, keras.layers.Concatenate()([lv, GlobalPooling("avg_std")(tap)])]
    trainer = keras.Model(inputs, member_view(head, mcfg)(head_inputs))
    scorer = keras.Model(inputs, head(head_inputs))
    return trainer, scorer, tap_channels, n_trained


def fit(args) -> None:
    import keras

    from afiqa import metrics
    from afiqa.model.losses import QualityLoss
    from afiqa.model.network import HEAD, build_model
    from afiqa.runtime.weights import resolve_weights
    from afiqa.runtime.zoo import ModelCard
    from train import config as train_config
    from train.features import FeatureCache
    from train.fit import split_rows, train_head

    card = ModelCard.from_dict(json.loads(Path(args.model).read_text()))
    mcfg = card.config
    model = build_model(mcfg, backbone_weights=None)
    model.load_weights(resolve_weights(card, None, Path(args.model).parent))
    head = model.get_layer(HEAD)
    features = FeatureCache.open(args.features)
    features.use_level_taps(mcfg.level_taps)
    recipe = train_config.load(args.config, [])
    rows_train, rows_val, _ = split_rows(features, float(recipe["data"]["val_fraction"]), int(recipe["data"]["seed"]))
    t_start = time.time()
    if args.fold:
        from train.loso import pairs_without

        every = np.concatenate([rows_train, rows_val])
        held = np.sort(every[features.groups[every] == args.fold])
        pairs = pairs_without(recipe, features, rows_train, set(held.tolist()))
        rows_train, rows_val = (r[features.groups[r] != args.fold] for r in (rows_train, rows_val))
        trained, best, _ = train_head(recipe, features, rows_train, rows_val, verbose=0, pairs=pairs)
        head.set_weights(trained.get_weights())
        print(f"head trained without {args.fold}: epoch {best['epoch']}", flush=True)
    else:
        held = rows_val
    if args.limit:
        rows_train, held = rows_train[: args.limit], held[: args.limit]
    position = {int(r): k for k, r in enumerate(np.load(Path(args.cut) / "rows.npy"))}
    cuts = [np.load(Path(args.cut) / f"s{i}_cut.npy", mmap_mode="r") for i in range(len(mcfg.backbones))]

    trainer, scorer, tap_channels, n_trained = tail_models(
        model, mcfg, [c.shape[1:] for c in cuts], [lv.shape[1] for lv in features.levels], args.mode)
    print(f"{args.mode}: {n_trained:,} backbone weights trained", flush=True)

    def batch(rows, flip=False):
        p = np.array([position[int(r)] for r in rows])
        order = np.argsort(p)  # memmap reads in file order
        back = np.empty_like(order)
        back[order] = np.arange(len(order))
        out = []
        for i, cut in enumerate(cuts):
            m = np.asarray(cut[p[order]], np.float32)[back]
            out += [m[:, :, ::-1] if flip else m, features.levels[i][rows, : -2 * tap_channels[i]]]
        return out

    def score(rows):
        return np.concatenate([scorer.predict_on_batch(batch(rows[k : k + 128])).reshape(-1)
                               for k in range(0, len(rows), 128)])

    class Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__(workers=2, use_multiprocessing=False, max_queue_size=4)
            self.epoch = 0
            self.order = np.random.default_rng(args.seed).permutation(rows_train)

        def __len__(self):
            return math.ceil(len(rows_train) / args.batch)

        def __getitem__(self, k):
            rng = np.random.default_rng([args.seed, self.epoch, k])
            rows = self.order[k * args.batch : (k + 1) * args.batch]
            return tuple(batch(rows, bool(rng.random() < 0.5))), features.scores[rows]

        def on_epoch_end(self):
            self.epoch += 1
            self.order = np.random.default_rng([args.seed, self.epoch]).permutation(rows_train)

    def report_epoch(tag):
        m = metrics.evaluate(score(held), features.scores[held])
        print(f"{tag}: SROCC {m['srocc']:.4f}  PLCC {m['plcc']:.4f}  ({time.time() - t_start:.0f} s)", flush=True)
        return m

    report = {"model": args.model, "mode": args.mode, "fold": args.fold, "lr": args.lr, "before": report_epoch("before")}
    data = Batches()
    lr = keras.optimizers.schedules.CosineDecay(args.lr, len(data) * args.epochs, alpha=0.02)
    trainer.compile(keras.optimizers.AdamW(lr, weight_decay=args.weight_decay), loss=QualityLoss(1.0, 0.5))
    report["epochs"] = []
    for e in range(1, args.epochs + 1):
        t0 = time.time()
        trainer.fit(data, epochs=1, verbose=0)
        report["epochs"].append({"epoch": e, "seconds": round(time.time() - t0, 1), **report_epoch(f"epoch {e}")})
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1))
    if args.save:
        model.save_weights(args.save)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    c = sub.add_parser("cache", help="the maps before each backbone's last block, training split")
    c.add_argument("--features", required=True, help="the dataset's feature cache (its index and backbones)")
    c.add_argument("--out", required=True)
    c.add_argument("--batch", type=int, default=16)
    c.add_argument("--limit", type=int, default=0, help="first N photos only (for trials)")
    f = sub.add_parser("fit", help="fine-tune on them")
    f.add_argument("--model", required=True, help="a trained model's card (.json, weights beside it)")
    f.add_argument("--config", default="train/configs/afiqa-v4.yaml", help="the recipe (split; the head with --fold)")
    f.add_argument("--features", required=True)
    f.add_argument("--cut", required=True, help="the folder `cache` wrote")
    f.add_argument("--mode", choices=("last", "top", "none"), default="last")
    f.add_argument("--fold", default="", help="hold out this subset (ss01, ss02, ss03)")
    f.add_argument("--epochs", type=int, default=3)
    f.add_argument("--lr", type=float, default=1e-4)
    f.add_argument("--weight-decay", type=float, default=0.05)
    f.add_argument("--batch", type=int, default=32)
    f.add_argument("--seed", type=int, default=7)
    f.add_argument("--limit", type=int, default=0, help="first N training and scored rows only (for trials)")
    f.add_argument("--out", required=True, help="the report (JSON), written after every epoch")
    f.add_argument("--save", default="", help="also save the whole model's weights here")
    args = ap.parse_args(argv)
    (cache if args.command == "cache" else fit)(args)


if __name__ == "__main__":
    main()
