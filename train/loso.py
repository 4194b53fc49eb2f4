"""Leave one subset out: a check of generalization that BIQ2021 itself allows.

    python -m train.loso --config train/configs/afiqa-v2.yaml --cache DIR [--set KEY=VALUE ...] \
        [--out runs/loso/NAME.json] [--card runs/NAME/NAME.json]

BIQ2021's three collections differ in camera, content and defects (ss01 a personal
gallery, ss02 photos shot to span the quality range, ss03 Unsplash). For each subset,
the recipe's head is trained on the other two (their part of the training split; the
epoch is chosen on their part of the validation part) and scores every photo of the
held-out subset in the training split (the test split is never read). Synthetic ranking
pairs whose source photo lies in the held-out subset are left out too. Reported: SROCC,
PLCC and KROCC per held-out subset and their mean.

With ``--out``, the report is written after every subset, and a rerun with the same
config and overrides keeps the subsets that file already holds and trains only the rest
(each takes 13-25 min here for afiqa-v4's recipe, and a session can be cut between them).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from afiqa import metrics
from afiqa.model.config import ModelConfig
from train import config as train_config
from train.features import FeatureCache, PairFeatures
from train.fit import split_rows, train_head, uses_pairs


def pairs_without(cfg: dict, cache: FeatureCache, rows_train: np.ndarray, held: set[int]) -> PairFeatures | None:
    """The recipe's ranking pairs, less those whose source photo is in ``held``."""
    if not uses_pairs(cfg):
        return None
    from train import synthetic

    copies, feats, levels = synthetic.ensure_cache(cfg, cache, rows_train, Path(cache.root))
    p = synthetic.pairs(copies)
    source = np.array([copies[k].source for k in p[:, 1]])  # the worse side is always a copy
    keep = ~np.isin(source, list(held))
    return PairFeatures(p[keep], feats, levels, int(cfg["train"]["synthetic"]["pairs_per_batch"]))


def run(cfg: dict, cache: FeatureCache, verbose: int = 0, done: dict | None = None, on_fold=None) -> dict:
    """The leave-one-subset-out report; subsets already in ``done`` are taken from it, and
    ``on_fold(report)`` is called after each subset trained here."""
    rows_train, rows_val, _ = split_rows(cache, float(cfg["data"]["val_fraction"]), int(cfg["data"]["seed"]))
    mcfg = ModelConfig.from_dict(cfg["model"])
    streams = [cache.meta["config"]["backbones"].index(b) for b in mcfg.backbones]
    groups = sorted(set(cache.groups[rows_train]))
    report = {}
    for g in groups:
        if done and g in done:
            report[g] = done[g]
            print(f"held out {g}: SROCC {done[g]['srocc']:.4f}  (kept from the earlier run)", flush=True)
            continue
        t0 = time.time()
        held = np.sort(np.concatenate([rows_train, rows_val])[np.concatenate([cache.groups[rows_train],
                                                                             cache.groups[rows_val]]) == g])
        fit_rows, val_rows = rows_train[cache.groups[rows_train] != g], rows_val[cache.groups[rows_val] != g]
        pairs = pairs_without(cfg, cache, rows_train, set(held.tolist()))
        head, best, _ = train_head(cfg, cache, fit_rows, val_rows, verbose=verbose, pairs=pairs)
        pred = cache.predict(head, held, streams, mcfg.multilevel)
        m = metrics.evaluate(pred, cache.scores[held])
        report[g] = {"n": int(len(held)), "srocc": m["srocc"], "plcc": m["plcc"], "krocc": m["krocc"],
                     "epoch": best["epoch"], "seconds": round(time.time() - t0, 1)}
        print(f"held out {g}: n {len(held)}  SROCC {m['srocc']:.4f}  PLCC {m['plcc']:.4f}  KROCC {m['krocc']:.4f}"
              f"  (epoch {best['epoch']}, {report[g]['seconds']} s)", flush=True)
        if on_fold is not None:
            on_fold(report)
    report["mean"] = {k: float(np.mean([report[g][k] for g in groups])) for k in ("srocc", "plcc", "krocc")}
    print(f"mean: SROCC {report['mean']['srocc']:.4f}  PLCC {report['mean']['plcc']:.4f}  "
          f"KROCC {report['mean']['krocc']:.4f}", flush=True)
    return report


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--cache", required=True, help="the dataset's feature cache (train.cache_features)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    ap.add_argument("--out", help="write the report here (JSON)")
    ap.add_argument("--card", help="also record it in this model card JSON (training.leave_one_subset_out)")
    args = ap.parse_args(argv)
    cfg = train_config.load(args.config, args.set)
    cache = FeatureCache.open(args.cache)
    cache.use_level_taps(cfg["model"].get("level_taps", "sparse"))
    head = {"config": args.config, "overrides": args.set}
    done, on_fold = None, None
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.is_file():
            earlier = json.loads(out.read_text())
            if {k: earlier.get(k) for k in head} == head:
                done = {g: r for g, r in earlier.items() if g not in head and g != "mean"}

        def on_fold(partial: dict) -> None:
            _write_json(out, {**head, **partial})

    report = {**head, **run(cfg, cache, done=done, on_fold=on_fold)}
    if args.out:
        _write_json(Path(args.out), report)
    if args.card:
        card = json.loads(Path(args.card).read_text())
        card.setdefault("training", {})["leave_one_subset_out"] = report
        Path(args.card).write_text(json.dumps(card, indent=2))
    return report


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)  # a cut run leaves the last complete report, never half of one


if __name__ == "__main__":
    main()
