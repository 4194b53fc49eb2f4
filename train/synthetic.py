"""Ranking pairs from synthetic distortions: a distorted photo must score below its source.

BIQ2021 holds few extreme distortions, so a model fitted to its scores alone can rate a
photo blurred with sigma 8 above the same photo at sigma 4. Here seeded training photos
(never validation or test ones) get a moderate and a strong copy of each distortion
(blur, noise, JPEG); their backbone outputs are cached once, like the dataset's, and
``train.fit`` adds a hinge loss on each pair, ``max(0, margin - (s_better - s_worse))``,
for (source, moderate) and (moderate, strong). No score is invented for a distorted
photo: only the order, which holds by construction.

The strengths are drawn at random from ranges; the ladders (``train.ladder``) use the
same kinds of distortion at fixed steps inside those ranges, on photos never used here,
so they check the trained model on new photos, not on new distortions.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import time
from pathlib import Path

import numpy as np

from afiqa.config import ModelConfig
from train import distortions

# distortion -> (moderate range, strong range) of its strength
RANGES = {
    "blur": ((1.5, 3.0), (5.0, 10.0)),
    "noise": ((8.0, 16.0), (28.0, 50.0)),
    "jpeg": ((15.0, 30.0), (3.0, 8.0)),
}


@dataclasses.dataclass(frozen=True)
class Copy:
    source: int  # row of the source photo in the dataset's feature cache
    kind: str
    rank: int  # 1 moderate, 2 strong
    strength: float


def plan(rows_train: np.ndarray, n_sources: int, seed: int) -> list[Copy]:
    """Seeded distorted copies: for each of ``n_sources`` training rows, each distortion
    at a moderate (rank 1) and a strong (rank 2) strength."""
    rng = np.random.default_rng(seed)
    sources = np.sort(rng.choice(np.asarray(rows_train), size=min(n_sources, len(rows_train)), replace=False))
    return [
        Copy(int(r), kind, rank, round(float(rng.uniform(*RANGES[kind][rank - 1])), 2))
        for r in sources
        for kind in RANGES
        for rank in (1, 2)
    ]


def distort(image: np.ndarray, c: Copy) -> np.ndarray:
    """A model input (S, S, 3) float32 0..255 distorted as planned (noise seeded per copy)."""
    rgb = np.clip(image + 0.5, 0, 255).astype(np.uint8)
    if c.kind == "noise":
        out = distortions.noise(rgb, c.strength, seed=c.source * 2 + c.rank)
    else:
        out = distortions.DISTORTIONS[c.kind](rgb, c.strength)
    return out.astype(np.float32)


def copies_dir(root: Path, mcfg: ModelConfig, feature_pool: int, copies: list[Copy]) -> Path:
    """``root/synthetic-<digest>``: a digest of what the cached outputs depend on (the
    copies and the streams' settings), not of head settings, which a cache serves alike."""
    streams = {k: mcfg.to_dict()[k] for k in ("backbones", "image_size", "level_taps", "extra_scales")}
    key = json.dumps([streams, feature_pool, [dataclasses.astuple(c) for c in copies]])
    return Path(root) / f"synthetic-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def ensure_cache(cfg: dict, cache, rows_train: np.ndarray, root: Path):
    """The synthetic copies' stream outputs: ``(copies, features, levels)``.

    They are computed once per plan, in ``root/synthetic-<digest of the plan>``, so a
    different plan (another seed, subset or backbone set) never overwrites another's.
    """
    from afiqa.inputs import load_model_input
    from train.cache_features import write_outputs

    syn = cfg["train"]["synthetic"]
    copies = plan(rows_train, int(syn["sources"]), int(syn["seed"]))
    have = cache.meta["config"]
    mcfg = ModelConfig(backbones=tuple(have["backbones"]), image_size=have["image_size"], multilevel=True,
                       level_taps=cfg["model"].get("level_taps", "sparse"),
                       extra_scales=tuple(have.get("extra_scales", [])))
    feature_pool = int(cache.meta.get("feature_pool", 1))
    out = copies_dir(root, mcfg, feature_pool, copies)
    if not (out / "meta.json").exists():  # written last; a stopped run resumes (progress.json)
        t0 = time.time()
        print(f"caching {len(copies)} distorted copies of {len({c.source for c in copies})} training photos -> {out}", flush=True)
        write_outputs(mcfg, lambda j: distort(load_model_input(cache.paths[copies[j].source], mcfg.image_size),
                                              copies[j]), len(copies), out, feature_pool, key=out.name)
        with open(out / "index.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["row", "source", "kind", "rank", "strength"])
            w.writerows([k, *dataclasses.astuple(c)] for k, c in enumerate(copies))
        (out / "meta.json").write_text(json.dumps({"copies": len(copies), "seconds": round(time.time() - t0, 1)}))
    n_streams = len(mcfg.backbones)
    feats = [np.load(out / f"s{i}_features.npy", mmap_mode="r") for i in range(n_streams)]
    levels = [np.load(out / f"s{i}_levels.npy") for i in range(n_streams)]
    return copies, feats, levels


def pairs(copies: list[Copy]) -> np.ndarray:
    """(P, 2) of (better, worse): a copy index, or -1 - source row for an untouched source."""
    index = {(c.source, c.kind, c.rank): k for k, c in enumerate(copies)}
    out = []
    for (source, kind, rank), k in index.items():
        better = -1 - source if rank == 1 else index[(source, kind, rank - 1)]
        out.append((better, k))
    return np.array(out, np.int64)


def hinge(margin: float):
    """Keras loss on ``s_better - s_worse``: ``mean(max(0, margin - difference))``."""
    from keras import ops

    def rank_hinge(_, difference):
        return ops.mean(ops.relu(margin - ops.reshape(difference, (-1,))))

    return rank_hinge


def ranking_trainer(head):
    """A training model around ``head`` (weights shared): inputs ``(x..., better...,
    worse...)``, outputs ``(head(x), head(better) - head(worse))`` (per member, when
    ``head`` outputs each ensemble member's score: ``afiqa.model.member_view``). The pairs go through
    the head in inference mode: no dropout, and BatchNorm uses the moving statistics,
    which the dataset's photos alone update, so the distorted copies never shift the
    normalisation the model is used with."""
    import keras

    class InferenceMode(keras.layers.Layer):
        def __init__(self, model, **kwargs):
            super().__init__(**kwargs)
            self.model = model

        def call(self, x):
            return self.model(x, training=False)

    sides = [[keras.Input(x.shape[1:]) for x in head.inputs] for _ in range(3)]
    ranked = InferenceMode(head, name="ranked_head")
    diff = keras.layers.Subtract(name="rank")([ranked(sides[1]), ranked(sides[2])])
    return keras.Model(sides[0] + sides[1] + sides[2], [head(sides[0]), diff])
