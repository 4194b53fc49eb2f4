"""Train an afiqa model from a YAML config.

    python -m train.fit --config train/configs/afiqa-biq2021.yaml --data-dir DIR \
        [--cache DIR] [--out DIR] [--set train.epochs=10 model.multilevel=false ...]

1. Backbone outputs are cached once per dataset and input size (``train.cache_features``).
2. The attention blocks and the head train on them (the backbones stay frozen), seeded,
   with the quality-aware loss; the best epoch by validation SROCC is kept. The
   validation part is carved from the training split; the test split chooses nothing.
3. The full model (backbones included) is assembled, checked against the head's
   predictions on cached features, and saved with its model card and resolved config:
   ``OUT/<name>.weights.h5``, ``OUT/<name>.json``, ``OUT/config.yaml``, ``OUT/log.csv``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from afiqa import metrics
from afiqa.model.config import ModelConfig
from train import config as train_config


def split_rows(cache, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train / validation / test row indices; validation drawn from the train split."""
    train = np.flatnonzero(cache.splits == "train")
    test = np.flatnonzero(cache.splits == "test")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(train)
    n_val = int(round(len(train) * val_fraction))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val]), test


def ensure_cache(cfg: dict, data_dir: str | None, cache_dir: Path):
    from train.features import FeatureCache

    m = cfg["model"]
    if not (cache_dir / "meta.json").exists():
        if not data_dir:
            raise SystemExit(f"no feature cache at {cache_dir}; give --data-dir to compute it")
        from train import cache_features

        cache_features.main(["--dataset", cfg["data"]["dataset"], "--data-dir", data_dir, "--out", str(cache_dir),
                             "--image-size", str(m["image_size"]), "--backbones", *m["backbones"],
                             "--level-taps", m.get("level_taps", "sparse"),
                             "--feature-pool", str(m.get("feature_pool", 1)),
                             "--extra-scales", *(str(f) for f in m.get("extra_scales", []))])
    cache = FeatureCache.open(cache_dir)
    cache.use_level_taps(m.get("level_taps", "sparse"))
    have = cache.meta["config"]
    scales_differ = list(have.get("extra_scales", [])) != list(m.get("extra_scales", []))
    if (have["image_size"] != m["image_size"] or not set(m["backbones"]) <= set(have["backbones"])
            or (m.get("multilevel") and scales_differ)):  # the level vectors hold the extra views
        raise SystemExit(f"cache {cache_dir} holds {have['backbones']} at {have['image_size']} px with extra scales "
                         f"{have.get('extra_scales', [])}, not {m['backbones']} at {m['image_size']} px with "
                         f"{m.get('extra_scales', [])}")
    return cache


def uses_pairs(cfg: dict) -> bool:
    return int((cfg["train"].get("synthetic") or {}).get("sources", 0)) > 0


def ranking_pairs(cfg: dict, cache, rows_train):
    """The synthetic ranking pairs of ``train.synthetic`` (cached beside the dataset's
    features, computed on first use), or None when ``train.synthetic.sources`` is 0."""
    if not uses_pairs(cfg):
        return None
    syn = cfg["train"]["synthetic"]
    from train import synthetic
    from train.features import PairFeatures

    copies, feats, levels = synthetic.ensure_cache(cfg, cache, rows_train, Path(cache.root))
    print(f"{len(copies)} ranking pairs (source > moderate > strong), one per distorted copy", flush=True)
    return PairFeatures(synthetic.pairs(copies), feats, levels, int(syn["pairs_per_batch"]))


def train_head(cfg: dict, cache, rows_train, rows_val, log_path: Path | None = None, verbose: int = 1,
               pairs=None):
    """Fit attention + head on cached features; returns (head, best val metrics, history).

    ``pairs`` (a ``train.features.PairFeatures``): also train on ranking pairs with the
    hinge loss of ``train.synthetic`` (weight ``train.synthetic.weight``).
    """
    import keras

    from afiqa.model.losses import QualityLoss
    from afiqa.model.network import build_head, member_score_names, member_view
    from train.features import CachedBatches

    mcfg = ModelConfig.from_dict(cfg["model"])
    t = cfg["train"]
    keras.utils.set_random_seed(int(t["seed"]))
    streams = [cache.meta["config"]["backbones"].index(b) for b in mcfg.backbones]
    shapes = []
    for i in streams:
        s = [(None, *cache.features[i].shape[1:])]
        if mcfg.multilevel:
            s.append((None, cache.levels[i].shape[1]))
        shapes.append(s)
    cached_pool = int(cache.meta.get("feature_pool", 1))
    if cached_pool not in (1, mcfg.feature_pool):
        raise SystemExit(f"the cache is pooled by {cached_pool}, the model by {mcfg.feature_pool}")
    head = build_head(mcfg, shapes, prepooled=cached_pool > 1)
    for name in member_score_names(mcfg):
        score = head.get_layer(name)
        score.bias.assign(np.full(score.bias.shape, float(np.mean(cache.scores[rows_train])), "float32"))
    members = member_view(head, mcfg)  # the loss trains each member of the ensemble on its own
    steps = int(np.ceil(len(rows_train) / t["batch_size"])) * int(t["epochs"])
    lr = keras.optimizers.schedules.CosineDecay(float(t["lr"]), decay_steps=steps, alpha=0.02)
    optimizer = keras.optimizers.AdamW(lr, weight_decay=float(t["weight_decay"]))
    loss = QualityLoss(float(t["mae_weight"]), float(t["plcc_weight"]))
    if pairs is None:
        trainer = members
        trainer.compile(optimizer, loss=loss)
    else:
        from train.synthetic import hinge, ranking_trainer

        trainer = ranking_trainer(members)
        syn = t["synthetic"]
        trainer.compile(optimizer, loss=[loss, hinge(float(syn["margin"]))], loss_weights=[1.0, float(syn["weight"])])
    batches = CachedBatches(cache, rows_train, streams, mcfg.multilevel, int(t["batch_size"]), True,
                            bool(t.get("flip", False)), int(t["seed"]), pairs, int(t.get("loader_workers", 0)))
    y_val = cache.scores[rows_val]
    best, best_weights, history = None, None, []
    log = open(log_path, "w", newline="") if log_path else None
    writer = None
    for epoch in range(1, int(t["epochs"]) + 1):
        t0 = time.time()
        h = trainer.fit(batches, epochs=1, verbose=verbose)
        pred = cache.predict(head, rows_val, streams, mcfg.multilevel)
        row = {"epoch": epoch, "loss": float(h.history["loss"][-1]), **{
            f"val_{k}": v for k, v in metrics.evaluate(pred, y_val).items() if k != "n"}, "seconds": round(time.time() - t0, 1)}
        history.append(row)
        if log:
            writer = writer or csv.DictWriter(log, fieldnames=list(row))
            if epoch == 1:
                writer.writeheader()
            writer.writerow(row)
            log.flush()
        improved = best is None or row["val_srocc"] > best["val_srocc"]
        if improved:
            best, best_weights = row, head.get_weights()
        if verbose:
            print(f"epoch {epoch}: loss {row['loss']:.4f}  val SROCC {row['val_srocc']:.4f}  PLCC {row['val_plcc']:.4f}"
                  f"{'  *' if improved else ''}  ({row['seconds']} s)", flush=True)
    if log:
        log.close()
    head.set_weights(best_weights)
    return head, best, history


def assemble(cfg: dict, head):
    """The full model with ImageNet backbones and the trained head's weights."""
    from afiqa.model.network import HEAD, build_model

    model = build_model(ModelConfig.from_dict(cfg["model"]), backbone_weights=cfg["model"]["backbone_weights"])
    model.get_layer(HEAD).set_weights(head.get_weights())
    return model


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--data-dir", help="dataset folder (needed when the feature cache is not there yet)")
    ap.add_argument("--cache", help="feature cache folder (default: runs/cache/<dataset>_<size>)")
    ap.add_argument("--out", help="output folder (default: runs/<name>)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    args = ap.parse_args(argv)

    t_start = time.time()
    cfg = train_config.load(args.config, args.set)
    name = cfg["name"]
    out = Path(args.out or f"runs/{name}")
    out.mkdir(parents=True, exist_ok=True)
    cache_dir = Path(args.cache or f"runs/cache/{cfg['data']['dataset']}_{cfg['model']['image_size']}")
    cache = ensure_cache(cfg, args.data_dir, cache_dir)
    rows_train, rows_val, rows_test = split_rows(cache, float(cfg["data"]["val_fraction"]), int(cfg["data"]["seed"]))
    print(f"{len(rows_train)} train, {len(rows_val)} validation, {len(rows_test)} test (not used for choices)")

    pairs = ranking_pairs(cfg, cache, rows_train)
    t_cached = time.time()

    head, best, _ = train_head(cfg, cache, rows_train, rows_val, out / "log.csv", pairs=pairs)
    t_trained = time.time()
    model = assemble(cfg, head)

    # The full model on raw images must agree with the head on cached features.
    from afiqa.io.inputs import load_model_input

    probe = rows_val[:8]
    x = np.stack([load_model_input(cache.paths[r], cfg["model"]["image_size"]) for r in probe])
    full = model.predict_on_batch(x).reshape(-1)
    mcfg = ModelConfig.from_dict(cfg["model"])
    streams = [cache.meta["config"]["backbones"].index(b) for b in mcfg.backbones]
    cached = cache.predict(head, probe, streams, mcfg.multilevel)
    gap = float(np.max(np.abs(full - cached)))
    print(f"full model vs cached features: max |difference| {gap:.5f}")
    if gap > 0.01:
        raise SystemExit("the assembled model disagrees with the trained head; not saving")

    from afiqa.runtime.weights import save_weights, sha256_of
    from afiqa.runtime.zoo import ModelCard

    weights = out / f"{name}.weights.h5"
    save_weights(model, weights)  # gzip-compressed arrays: the same values in fewer bytes
    train_config.dump(cfg, out / "config.yaml")
    card = ModelCard(
        name=name,
        config=mcfg.replace(backbone_weights=None),
        weights_file=weights.name,
        sha256=sha256_of(weights),
        hub_repo=cfg["hub"]["repo"],
        hub_revision=cfg["hub"]["revision"],
        train_set=f"{cfg['data']['dataset']} (official train split minus a seeded {cfg['data']['val_fraction']:.0%} validation part)",
        description=f"Two-stream ({' + '.join(mcfg.backbones)}) CBAM attention IQA model",
    ).to_dict()
    card["training"] = {
        "validation": {k: v for k, v in best.items()},
        "n_train": int(len(rows_train)),
        "n_val": int(len(rows_val)),
        "seconds_feature_cache": round(t_cached - t_start, 1),  # ~0 when the cache was already there
        "seconds_train": round(t_trained - t_cached, 1),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
        "config": cfg,
    }
    (out / f"{name}.json").write_text(json.dumps(card, indent=2))
    print(f"best epoch {best['epoch']}: val SROCC {best['val_srocc']:.4f} PLCC {best['val_plcc']:.4f}; saved {weights} "
          f"({weights.stat().st_size / 1e6:.1f} MB) in {time.time() - t_start:.0f} s")


if __name__ == "__main__":
    main()
