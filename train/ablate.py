"""The ablation table: variants of the recipe, each trained on the same cached features
and measured on the same validation part (never the test split).

    python -m train.ablate --config train/configs/afiqa-biq2021.yaml --cache DIR \
        [--only full no_spatial ...] [--out runs/ablation]

Writes ``results.json`` and ``ablation.md`` (a Markdown table) in ``--out``; runs that
are already in results.json are not repeated.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

from train import config as train_config
from train.features import FeatureCache
from train.fit import ranking_pairs, split_rows, train_head, uses_pairs

VARIANTS: dict[str, tuple[str, dict]] = {
    "full": ("two streams, channel + spatial attention, multi-level, MAE + PLCC loss", {}),
    "mobilenet_v2_only": ("one stream: MobileNetV2", {"model.backbones": ["mobilenet_v2"]}),
    "mobilenet_only": ("one stream: MobileNet (v1)", {"model.backbones": ["mobilenet"]}),
    "no_channel": ("without channel attention", {"model.channel_attention": False}),
    "no_spatial": ("without spatial attention", {"model.spatial_attention": False}),
    "no_attention": ("without any attention", {"model.channel_attention": False, "model.spatial_attention": False}),
    "mae_only": ("loss: MAE only (no PLCC term)", {"train.plcc_weight": 0.0}),
    "single_level": ("without multi-level features (last map only)",
                     {"model.multilevel": False, "model.extra_scales": []}),
    "avg_pool": ("average pooling only (no std), single level: closest to the paper",
                 {"model.pooling": "avg", "model.multilevel": False, "model.extra_scales": []}),
    "no_synthetic": ("without the synthetic-distortion ranking pairs", {"train.synthetic.sources": 0}),
}


def apply(cfg: dict, changes: dict) -> dict:
    cfg = copy.deepcopy(cfg)
    for key, value in changes.items():
        *sections, leaf = key.split(".")
        node = cfg
        for section in sections:
            node = node[section]
        node[leaf] = value
    return cfg


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--cache", required=True, action="append", help="feature cache(s); several for resolutions")
    ap.add_argument("--only", nargs="*", help=f"variants to run (default all): {', '.join(VARIANTS)}")
    ap.add_argument("--out", default="runs/ablation")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    ap.add_argument("--rows", type=int, default=0,
                    help="use only the first N rows of each cache (to compare caches of a subset)")
    args = ap.parse_args(argv)

    base = train_config.load(args.config, args.set)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    for cache_dir in args.cache:
        cache = FeatureCache.open(cache_dir)
        size = cache.meta["config"]["image_size"]
        if args.rows:
            cache.splits = cache.splits.copy()
            cache.splits[args.rows:] = "unused"
        tr, va, _ = split_rows(cache, float(base["data"]["val_fraction"]), int(base["data"]["seed"]))
        pairs = {}  # per kind of level taps, loaded once; the variants without pairs skip them
        for name in args.only or VARIANTS:
            what, changes = VARIANTS[name]
            key = name if size == base["model"]["image_size"] else f"{name}@{size}"
            key += f"/{args.rows}rows" if args.rows else ""
            if key in results:
                continue
            cfg = apply(base, {**changes, "model.image_size": size})
            kind = cfg["model"].get("level_taps", "sparse")
            cache.use_level_taps(kind)
            if uses_pairs(cfg) and kind not in pairs:
                pairs[kind] = ranking_pairs(cfg, cache, tr)
            t0 = time.time()
            _, best, _ = train_head(cfg, cache, tr, va, verbose=0, pairs=pairs.get(kind) if uses_pairs(cfg) else None)
            results[key] = {"what": what + f", {size} px input" * (size != base["model"]["image_size"] or bool(args.rows))
                            + (f" (first {args.rows} rows: {len(tr)} train, {len(va)} val)" if args.rows else ""),
                            **{k: best[k] for k in ("epoch", "val_srocc", "val_plcc", "val_krocc", "val_rmse")},
                            "seconds": round(time.time() - t0, 1)}
            print(f"{key}: SROCC {best['val_srocc']:.4f} PLCC {best['val_plcc']:.4f} ({results[key]['seconds']} s)", flush=True)
            results_path.write_text(json.dumps(results, indent=2))
    lines = ["| variant | SROCC | PLCC | KROCC | RMSE | best epoch |", "|---|---|---|---|---|---|"]
    for key, r in results.items():
        lines.append(f"| {r['what']} | {r['val_srocc']:.4f} | {r['val_plcc']:.4f} | {r['val_krocc']:.4f} | "
                     f"{r['val_rmse']:.4f} | {r['epoch']} |")
    (out / "ablation.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
