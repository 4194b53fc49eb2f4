"""Cache a trained model's fused features, member scores and score for photos and distorted copies.

    python -m train.fused --model weights/afiqa-v4.json --data-dir BIQ2021 --out runs/fused/afiqa-v4

What the side heads (``afiqa.model.sideheads``: ``problem``, ``uncertainty``) train on:
the normalised fused features every head member reads (``afiqa.model.network.feature_view``),
which a trained model gives without any training. Four sets, each a folder of shards
written one at a time (a rerun skips the shards it finds: an interrupted run resumes):

* ``val``: BIQ2021's validation photos (the seeded 10% of the train split, ``train.fit.split_rows``);
* ``problem_eval``: ``--eval-photos`` validation photos, each with every kind of
  ``train.problems.HELD_OUT`` at the two strongest strengths of its ladder;
* ``problem_train``: ``--train-photos`` training photos, each untouched and with
  ``--copies`` copies, each of another family (``train.problems.TRAINING``), a kind of it
  and a ladder strength (1 to 4) drawn at random;
* ``train``: every other training photo, untouched.

Distortions are applied to the model's input (``to_model_input``), as ``train.synthetic`` does.
Each shard also keeps the photo statistics the problem head reads (``afiqa.model.sideheads.photo_stats``).
"""

from __future__ import annotations

import argparse
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import numpy as np

SHARD = 256


def jobs(data_dir: str, eval_photos: int, train_photos: int, copies: int, seed: int = 2023) -> dict[str, list[dict]]:
    """The four sets: rows of {path, mos, group, kind, level} (kind "" = untouched)."""
    from train import distortions, problems
    from train.datasets import biq2021
    from train.fit import split_rows

    samples = biq2021(data_dir)
    train, val, _ = split_rows(SimpleNamespace(splits=np.array([s.split for s in samples])), 0.1, seed)

    def row(i: int, kind: str = "", level: int = 0) -> dict:
        s = samples[i]
        return {"path": str(s.path), "mos": s.score, "group": s.group, "kind": kind, "level": level}

    rng = np.random.default_rng(seed)
    ev = rng.choice(val, size=min(eval_photos, len(val)), replace=False)
    held = [k for ks in problems.HELD_OUT.values() for k in ks]
    out = {"val": [row(i) for i in val],
           "problem_eval": [row(i, k, lv) for i in np.sort(ev) for k in held for lv in (3, 4)]}
    src = np.sort(rng.choice(train, size=min(train_photos, len(train)), replace=False))
    kinds = [k for ks in problems.TRAINING.values() for k in ks]
    pt = []
    for i in src:
        pt.append(row(i))
        for fam in rng.choice(list(problems.TRAINING), size=copies, replace=False):  # families evenly
            pt.append(row(i, str(rng.choice(problems.TRAINING[fam])), int(rng.integers(1, 5))))
    out["problem_train"] = pt
    rest = np.setdiff1d(train, src)
    out["train"] = [row(i) for i in rest]
    assert all(k in distortions.CATALOGUE for k in held + kinds)
    return out


def model_input(r: dict, size: int, seed: int) -> np.ndarray:
    from afiqa.io.inputs import load_model_input
    from train import distortions

    x = load_model_input(r["path"], size)
    if r["kind"]:
        strength = distortions.CATALOGUE[r["kind"]].ladder[r["level"]]
        x = distortions.apply(x.astype(np.uint8), r["kind"], strength, seed=seed).astype(np.float32)
    return x


def run_set(view, size: int, rows: list[dict], out: Path, batch: int = 16, stats: bool = True) -> None:
    out.mkdir(parents=True, exist_ok=True)
    listed = out / "rows.json"
    if listed.exists() and json.loads(listed.read_text()) != rows:  # its shards are of other photos
        raise SystemExit(f"{out} holds another set of photos (its rows.json differs); give a new --out")
    listed.write_text(json.dumps(rows))
    from afiqa.model.sideheads import photo_stats

    pool = ThreadPoolExecutor(2)
    for start in range(0, len(rows), SHARD):
        path = out / f"part-{start // SHARD:05d}.npz"
        if path.exists() and (not stats or "stats" in np.load(path).files):
            continue
        have = dict(np.load(path)) if path.exists() else {}  # a shard made without the statistics: add them
        part = rows[start:start + SHARD]
        xs = list(pool.map(lambda jr: model_input(jr[1], size, start + jr[0]), enumerate(part)))
        if not have:
            scores, members, fused = [], [], []
            for b in range(0, len(xs), batch):
                s, m, f = view(np.stack(xs[b:b + batch]))
                scores.append(np.asarray(s).reshape(-1))
                members.append(np.asarray(m).reshape(len(s), -1))
                fused.append(np.asarray(f).astype(np.float16))
            have = {"score": np.concatenate(scores), "members": np.concatenate(members), "fused": np.concatenate(fused)}
        if stats:
            have["stats"] = photo_stats(np.stack(xs))
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **have)
        tmp.rename(path)  # a shard is there whole or not at all
        print(f"{out.name}: {min(start + SHARD, len(rows))}/{len(rows)}", flush=True)


def load(folder: str | Path) -> SimpleNamespace:
    """A cached set: rows, score (N,), members (N, K), fused (N, D), stats (N, len(STATS)) or
    None, float32."""
    folder = Path(folder)
    rows = json.loads((folder / "rows.json").read_text())
    parts = [np.load(folder / f"part-{k:05d}.npz") for k in range((len(rows) + SHARD - 1) // SHARD)]
    keys = [k for k in ("score", "members", "fused", "stats") if all(k in p.files for p in parts)]
    got = {key: np.concatenate([p[key] for p in parts]).astype(np.float32) for key in keys}
    return SimpleNamespace(rows=rows, **{"stats": None, **got})  # stats: None for shards made without them


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a model card .json (its weights beside it)")
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--eval-photos", type=int, default=150)
    ap.add_argument("--train-photos", type=int, default=1200)
    ap.add_argument("--copies", type=int, default=2)
    ap.add_argument("--sets", nargs="+", default=["val", "problem_eval", "problem_train", "train"])
    ap.add_argument("--no-stats-for", nargs="*", default=["train"],
                    help="sets whose shards skip the photo statistics (the uncertainty head does not read them)")
    args = ap.parse_args(argv)

    import tensorflow as tf

    from afiqa.model.network import feature_view
    from afiqa.predictor import load_card
    from afiqa.runtime import load_keras

    card, where = load_card(args.model)
    rt = load_keras(card, weights_dir=where)
    view = feature_view(rt.model, card.config)
    spec = tf.TensorSpec([None, card.config.image_size, card.config.image_size, 3], tf.float32)
    fn = tf.function(lambda x: view(x, training=False), input_signature=[spec])
    lock = threading.Lock()

    def forward(x):
        with lock:
            return [t.numpy() for t in fn(tf.convert_to_tensor(x))]

    sets = jobs(args.data_dir, args.eval_photos, args.train_photos, args.copies)
    for name in args.sets:
        run_set(forward, card.config.image_size, sets[name], Path(args.out) / name, stats=name not in args.no_stats_for)


if __name__ == "__main__":
    main()
