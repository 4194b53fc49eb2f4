"""Ranking pairs from synthetic distortions: a distorted photo must score below its source.

BIQ2021 holds few extreme distortions, so a model fitted to its scores alone can rate a
photo blurred with sigma 8 above the same photo at sigma 4. Here seeded training photos
(never validation or test ones) get a moderate and a strong copy of distortions drawn
from ``train.synthetic.kinds`` (``classic``: blur, noise and JPEG, each; ``catalogue``:
``kinds_per_source`` of the catalogue's training kinds, ``train.distortions.TRAINING``,
drawn per photo); their backbone outputs are cached once, like the dataset's, and
``train.fit`` adds a hinge loss on each pair, ``max(0, margin - (s_better - s_worse))``,
for (source, moderate) and (moderate, strong). No score is invented for a distorted
photo: only the order, which holds by construction.

The strengths are drawn at random from ranges; the ladders (``train.ladder``) use the
same kinds at fixed steps on photos never used here, and the catalogue's held-out kinds
(``train.distortions.HELD_OUT``), which no copy ever shows, check new distortions.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import time
from pathlib import Path

import numpy as np

from afiqa.model.config import ModelConfig
from train import distortions

KIND_SETS = {"classic": distortions.CLASSIC, "catalogue": distortions.TRAINING}


def ranges(kind: str) -> tuple[tuple[float, float], tuple[float, float]]:
    """(moderate range, strong range) of a training kind's strength."""
    k = distortions.CATALOGUE[kind]
    if k.moderate is None:
        raise ValueError(f"{kind!r} is held out of training (train.distortions.HELD_OUT)")
    return k.moderate, k.strong


@dataclasses.dataclass(frozen=True)
class Copy:
    source: int  # row of the source photo in the dataset's feature cache
    kind: str
    rank: int  # 1 moderate, 2 strong
    strength: float


def plan(rows_train: np.ndarray, n_sources: int, seed: int, kinds: str = "classic",
         per_source: int = 0) -> list[Copy]:
    """Seeded distorted copies: for each of ``n_sources`` training rows, distortions of
    the kind set ``kinds`` at a moderate (rank 1) and a strong (rank 2) strength: every
    kind of the set, or ``per_source`` of them drawn for each row."""
    names = KIND_SETS[kinds]
    rng = np.random.default_rng(seed)
    sources = np.sort(rng.choice(np.asarray(rows_train), size=min(n_sources, len(rows_train)), replace=False))
    out = []
    for r in sources:
        chosen = names if not per_source else [names[k] for k in sorted(rng.choice(len(names), per_source, replace=False))]
        out += [Copy(int(r), kind, rank, _round(rng.uniform(*ranges(kind)[rank - 1])))
                for kind in chosen for rank in (1, 2)]
    return out


def _round(x: float) -> float:
    return round(float(x), 2 if abs(x) >= 0.1 else 4)  # two decimals, as plans always had, unless tiny


def plan_of(syn: dict, rows_train: np.ndarray) -> list[Copy]:
    """The plan of a recipe's ``train.synthetic`` section."""
    return plan(rows_train, int(syn["sources"]), int(syn["seed"]), syn.get("kinds", "classic"),
                int(syn.get("kinds_per_source", 0)))


def distort(image: np.ndarray, c: Copy) -> np.ndarray:
    """A model input (S, S, 3) float32 0..255 distorted as planned (noise seeded per copy)."""
    rgb = np.clip(image + 0.5, 0, 255).astype(np.uint8)
    return distortions.apply(rgb, c.kind, c.strength, seed=c.source * 2 + c.rank).astype(np.float32)


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
    from afiqa.io.inputs import load_model_input
    from train.cache_features import write_outputs

    syn = cfg["train"]["synthetic"]
    copies = plan_of(syn, rows_train)
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
    ``head`` outputs each ensemble member's score: ``afiqa.model.network.member_view``). The pairs go through
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
