"""Read a feature cache written by ``train.cache_features`` and feed it to Keras."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np


@dataclass
class FeatureCache:
    root: Path
    meta: dict
    features: list[np.ndarray]  # per stream (N, h, w, C) float16, memory-mapped
    levels: list[np.ndarray]  # per stream (N, D) float32
    paths: list[str]
    scores: np.ndarray
    splits: np.ndarray
    groups: np.ndarray
    own_levels: list[np.ndarray] = field(init=False)  # the level vectors as written (see use_level_taps)

    def __post_init__(self) -> None:
        self.own_levels = self.levels

    def use_level_taps(self, kind: str) -> None:
        """Make ``levels`` the vectors of ``model.level_taps == kind``: the cache's own
        level vectors when they are of that kind, else the matching columns of its
        candidate taps (a cache written with ``--taps``)."""
        from afiqa.model.backbones import get_backbone

        if kind == self.meta["config"].get("level_taps", "sparse"):
            self.levels = self.own_levels
            return
        if "taps" not in self.meta:
            raise SystemExit(f"cache {self.root} holds {self.meta['config'].get('level_taps', 'sparse')} levels, "
                             f"not {kind}; rebuild it (train.cache_features --level-taps {kind}) or with --taps")
        levels = []
        for i, backbone in enumerate(self.meta["config"]["backbones"]):
            offsets, at = {}, 0
            for name, channels in self.meta["taps"][i]:  # each tap: mean (channels) then std (channels)
                offsets[name] = (at, channels)
                at += 2 * channels
            cols = np.concatenate([np.arange(offsets[n][0], offsets[n][0] + 2 * offsets[n][1])
                                   for n in get_backbone(backbone).level_layers(kind)])
            levels.append(np.ascontiguousarray(np.load(self.root / f"s{i}_taps.npy", mmap_mode="r")[:, cols]))
        self.levels = levels

    @classmethod
    def open(cls, root: str | Path) -> "FeatureCache":
        root = Path(root)
        meta = json.loads((root / "meta.json").read_text())
        n_streams = len(meta["config"]["backbones"])
        with open(root / "index.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        return cls(
            root,
            meta,
            [np.load(root / f"s{i}_features.npy", mmap_mode="r") for i in range(n_streams)],
            [np.load(root / f"s{i}_levels.npy") for i in range(n_streams)],
            [r["path"] for r in rows],
            np.array([float(r["score"]) for r in rows], np.float32),
            np.array([r["split"] for r in rows]),
            np.array([r["group"] for r in rows]),
        )

    def inputs(self, rows: np.ndarray, streams: list[int], multilevel: bool, flip: bool = False) -> list[np.ndarray]:
        """Head inputs for ``rows`` in the head's order: per stream [features, (levels)]."""
        order = np.argsort(rows)  # memmap reads in file order
        rows_sorted = rows[order]
        back = np.empty_like(order)
        back[order] = np.arange(len(order))
        out = []
        for i in streams:
            f = np.asarray(self.features[i][rows_sorted], np.float32)[back]
            out.append(f[:, :, ::-1] if flip else f)
            if multilevel:
                out.append(self.levels[i][rows])
        return out

    def predict(self, head, rows: np.ndarray, streams: list[int], multilevel: bool, chunk: int = 512) -> np.ndarray:
        """``head``'s scores for ``rows``, gathered ``chunk`` rows at a time: the inputs of a
        whole subset (6,679 photos of ss03: 4.4 GB as float32, copied again into a tensor)
        are never held at once."""
        rows = np.asarray(rows)
        out = [head.predict_on_batch(self.inputs(rows[k : k + chunk], streams, multilevel)).reshape(-1)
               for k in range(0, len(rows), chunk)]
        return np.concatenate(out) if out else np.zeros(0, np.float32)


@dataclass
class PairFeatures:
    """Ranking pairs (better, worse) over cached inputs: an index >= 0 is a row of the
    synthetic copies' arrays, an index < 0 is the untouched source row ``-1 - index`` of
    the dataset's cache (see ``train.synthetic.pairs``)."""

    pairs: np.ndarray  # (P, 2)
    features: list[np.ndarray]  # per stream, like FeatureCache.features
    levels: list[np.ndarray]
    per_batch: int

    def inputs(self, cache: FeatureCache, idx: np.ndarray, streams, multilevel, flip: bool) -> list[np.ndarray]:
        src = idx < 0
        rows_src = -1 - idx[src]
        out = []
        for i in streams:
            f = np.empty((len(idx), *self.features[i].shape[1:]), np.float32)
            if src.any():
                f[src] = cache.inputs(rows_src, [i], False)[0]
            if (~src).any():
                order = np.argsort(idx[~src])
                f_syn = np.asarray(self.features[i][idx[~src][order]], np.float32)
                f[np.flatnonzero(~src)[order]] = f_syn
            out.append(f[:, :, ::-1] if flip else f)
            if multilevel:
                lv = np.empty((len(idx), self.levels[i].shape[1]), np.float32)
                lv[src] = cache.levels[i][rows_src]
                lv[~src] = self.levels[i][idx[~src]]
                out.append(lv)
        return out


class CachedBatches(keras.utils.PyDataset):
    """Shuffled batches of cached head inputs and scores (optionally random flips).

    With ``pairs``, every batch also holds ``pairs.per_batch`` random ranking pairs:
    inputs ``(x..., better..., worse...)``, targets ``(scores, zeros)``.

    ``workers`` > 0: that many threads gather the next batches while one trains (the
    gathering is a third of a step on 2 cores). Each batch then draws its flip and its
    pairs from its own generator, seeded by (seed, epoch, batch), so the batches are the
    same whichever thread makes them and in whatever order. ``workers`` = 0 keeps the one
    sequential generator that the earlier recipes were trained with.
    """

    def __init__(self, cache: FeatureCache, rows, streams, multilevel, batch_size, shuffle, flip, seed,
                 pairs: PairFeatures | None = None, workers: int = 0):
        if workers > 0:
            super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=2 * workers)
        else:
            super().__init__()
        self.cache, self.rows = cache, np.asarray(rows)
        self.streams, self.multilevel = streams, multilevel
        self.batch_size, self.shuffle, self.flip = batch_size, shuffle, flip
        self.pairs = pairs
        self.seed, self.threaded, self.epoch = int(seed), workers > 0, 0
        self.rng = np.random.default_rng(seed)
        self.order = self.rows.copy()
        self.on_epoch_end()

    def __len__(self):
        return math.ceil(len(self.rows) / self.batch_size)

    def __getitem__(self, k):
        rng = np.random.default_rng([self.seed, self.epoch, k]) if self.threaded else self.rng
        rows = self.order[k * self.batch_size : (k + 1) * self.batch_size]
        flip = bool(self.flip and rng.random() < 0.5)
        x = self.cache.inputs(rows, self.streams, self.multilevel, flip=flip)
        y = self.cache.scores[rows]
        if self.pairs is None:
            return tuple(x), y
        p = self.pairs.pairs[rng.choice(len(self.pairs.pairs), self.pairs.per_batch,
                                        replace=len(self.pairs.pairs) < self.pairs.per_batch)]
        better = self.pairs.inputs(self.cache, p[:, 0], self.streams, self.multilevel, flip)
        worse = self.pairs.inputs(self.cache, p[:, 1], self.streams, self.multilevel, flip)
        return tuple(x + better + worse), (y, np.zeros(len(p), np.float32))

    def on_epoch_end(self):
        self.epoch += 1
        if self.shuffle:
            self.order = self.rng.permutation(self.rows)
