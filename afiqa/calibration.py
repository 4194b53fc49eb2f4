"""Fit afiqa's score to a user's own ratings (``afiqa calibrate``).

    afiqa calibrate RATINGS.csv --images DIR --out my-model.json [--lower-better] [--model NAME]

``RATINGS.csv`` has columns ``path,score`` (any scale; ``--lower-better`` when a lower
number means a better photo). Each photo is scored by the base model, then a monotone map
from afiqa's score (0-100) to the user's scale is fitted:

* ``linear``: a straight line, the fewest assumptions;
* ``isotonic``: any non-decreasing curve (pool-adjacent-violators, then straight lines
  between the pooled blocks), for a scale that bends;

and, from ``REFIT_MIN`` (200) rated photos up, on a model whose runtime gives its fused
features (afiqa-v4's LiteRT export and Keras model do):

* ``refit``: a new regression head, a ridge regression from the fused features (the
  numbers the model's own head reads) straight to the user's scale, its L2 strength
  chosen by leave-one-out inside each fold. It can reorder photos, which no map can.

The candidate with the lowest cross-validated error (k-fold over the user's photos, each
photo predicted by a fit made without it) is kept, and the report says why. Before/after figures are measured
the same way, never on the photos a map was fitted on: "before" is afiqa's own score
stretched onto the user's range, "after" the cross-validated map. Correlations are signed
so that higher always means agreement.

The result is a model card (``calibration`` + ``base``) usable wherever a model name is:
``--model my-model.json``, ``Predictor("my-model.json")``, ``python app.py --model
my-model.json``. Its scores are on the user's scale; labels follow the quality the score
stands for (the best fifth of the range is "excellent", whichever way the scale runs).
A refitted head is written beside the card (``NAME.head.npz``, its sha256 in the card).
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from afiqa.errors import AfiqaError

MIN_ROWS = 20
REFIT_MIN = 200  # rated photos from which a head refit is tried
METHODS = ("linear", "isotonic")
REFIT = "refit"
RIDGE_L2 = tuple(10.0 ** np.arange(-2, 4.5, 0.5))  # on the kernel's scale (fused features . / D)


class CalibrationError(AfiqaError, ValueError):
    """Ratings that cannot be fitted (too few rows, a constant scale, a bad file)."""


# -- the map ----------------------------------------------------------------------------------
def fit_map(x: np.ndarray, y: np.ndarray, method: str) -> dict:
    """Knots (``x``, ``y``) of a non-decreasing piecewise-linear map from afiqa's score to
    the user's (both as given: for a lower-better scale ``y`` is the negated rating)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    if method == "linear":
        slope, icpt = np.polyfit(x, y, 1) if np.ptp(x) > 0 else (0.0, float(y.mean()))
        if slope < 0:  # monotone: never a falling line; the best flat one is the mean
            slope, icpt = 0.0, float(y.mean())
        slope = float(slope)
        lo, hi = float(x.min()), float(x.max())
        return {"method": method, "x": [lo, hi], "y": [icpt + slope * lo, icpt + slope * hi], "extend": True}
    if method == "isotonic":
        from scipy.optimize import isotonic_regression

        fitted = isotonic_regression(y).x
        knots_x, knots_y = [], []
        for value in np.unique(fitted):  # one knot at the mean afiqa score of each pooled block
            block = fitted == value
            knots_x.append(float(x[block].mean()))
            knots_y.append(float(value))
        return {"method": method, "x": knots_x, "y": knots_y, "extend": False}
    raise CalibrationError(f"Unknown map {method!r}; choose one of {', '.join(METHODS)}.")


def apply_map(m: dict, x) -> np.ndarray:
    """The map at afiqa scores ``x``: straight lines between knots; beyond them a linear map
    goes on, an isotonic one holds its end values."""
    kx, ky = np.asarray(m["x"], float), np.asarray(m["y"], float)
    x = np.asarray(x, float)
    if len(kx) == 1 or np.ptp(kx) == 0:
        return np.full_like(x, ky.mean())
    if m.get("extend"):
        return ky[0] + (x - kx[0]) * (ky[-1] - ky[0]) / (kx[-1] - kx[0])
    return np.interp(x, kx, ky)


def _folds(n: int, k: int, seed: int = 0) -> list[np.ndarray]:
    return np.array_split(np.random.default_rng(seed).permutation(n), min(k, n))


def cross_validated(x: np.ndarray, y: np.ndarray, method: str, k: int = 5) -> np.ndarray:
    """Each photo's prediction by a map fitted on the other folds."""
    out = np.empty(len(x))
    for held in _folds(len(x), k):
        train = np.setdiff1d(np.arange(len(x)), held)
        out[held] = apply_map(fit_map(x[train], y[train], method), x[held])
    return out


# -- the head refit -----------------------------------------------------------------------------
def fit_head(f: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, float, float]:
    """(w (D,), b, L2): ridge regression of ``t`` on fused features ``f`` (N, D), solved in its
    dual (N x N), the L2 strength the one with the lowest leave-one-out error (closed form)."""
    f = np.asarray(f, np.float64)
    mean = f.mean(axis=0)
    fc = f - mean
    k = fc @ fc.T / f.shape[1]
    tc = t - t.mean()
    vals, vecs = np.linalg.eigh(k)
    vals = np.clip(vals, 0, None)
    best = None
    for l2 in RIDGE_L2:
        shrink = vals / (vals + l2)
        hat = (vecs * shrink) @ vecs.T  # fitted = hat @ tc
        loo = (tc - hat @ tc) / np.clip(1 - np.diag(hat) - 1 / len(t), 1e-6, None)
        err = float(np.mean(loo ** 2))
        if best is None or err < best[0]:
            best = (err, l2)
    l2 = best[1]
    alpha = (vecs / (vals + l2)) @ (vecs.T @ tc)
    w = fc.T @ alpha / f.shape[1]
    return w.astype(np.float32), float(t.mean() - mean @ w), float(l2)


def head_cross_validated(f: np.ndarray, t: np.ndarray, k: int = 5) -> np.ndarray:
    """Each photo's prediction by a head refitted (L2 chosen anew) on the other folds."""
    out = np.empty(len(t))
    for held in _folds(len(t), k):
        train = np.setdiff1d(np.arange(len(t)), held)
        w, b, _ = fit_head(f[train], t[train])
        out[held] = f[held] @ w + b
    return out


def fused_features(predictor, paths) -> np.ndarray | None:
    """The fused features of ``paths`` (all readable), or None where the runtime gives none."""
    from afiqa.io.inputs import load_model_input

    if not getattr(predictor.runtime, "gives_features", False):
        return None
    step = predictor.batch_size
    return np.concatenate([predictor.runtime.forward(np.stack([load_model_input(p, predictor.size)
                                                                for p in paths[i:i + step]])).fused
                           for i in range(0, len(paths), step)])


def agreement(pred: np.ndarray, target: np.ndarray) -> dict:
    from afiqa import metrics

    return {k: round(getattr(metrics, k)(pred, target), 4) for k in ("srocc", "plcc", "rmse")}


# -- reading the ratings -----------------------------------------------------------------------
@dataclass
class Ratings:
    paths: list[Path]
    scores: np.ndarray
    bad: list[tuple[int, str, str]]  # (CSV line, path as written, why)


def read_ratings(csv_path: str | os.PathLike, images: str | os.PathLike | None) -> Ratings:
    """Rows of ``path,score``; a row whose file is missing or whose score is not a number is
    kept out and reported, never dropped silently."""
    csv_path = Path(csv_path)
    base = Path(images) if images else csv_path.parent
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            fields = [c.strip().lower() for c in reader.fieldnames or []]
            if "path" not in fields or "score" not in fields:
                raise CalibrationError(f"{csv_path} needs the columns path,score (it has: {', '.join(fields) or 'none'})")
            rows = [{k.strip().lower(): (v or "").strip() for k, v in row.items() if k} for row in reader]
    except FileNotFoundError:
        raise CalibrationError(f"{csv_path} does not exist") from None
    except (UnicodeDecodeError, csv.Error) as e:
        raise CalibrationError(f"{csv_path} is not a readable CSV ({e})") from None
    paths, scores, bad = [], [], []
    for line, row in enumerate(rows, start=2):
        name = row.get("path", "")
        try:
            value = float(row.get("score", ""))
            if not np.isfinite(value):
                raise ValueError
        except ValueError:
            bad.append((line, name, f"score {row.get('score', '')!r} is not a number"))
            continue
        p = Path(name) if Path(name).is_absolute() else base / name
        if not name or not p.is_file():
            bad.append((line, name, f"no such file: {p}"))
            continue
        paths.append(p)
        scores.append(value)
    return Ratings(paths, np.array(scores, float), bad)


def _listing(bad: list, most: int = 20) -> str:
    rows = [f"{'line %d ' % ln if ln else ''}{p}: {why}" for ln, p, why in bad[:most]]
    return "; ".join(rows) + (f"; and {len(bad) - most} more" if len(bad) > most else "")


# -- the whole fit -----------------------------------------------------------------------------
def calibrate(ratings_csv, images=None, out=None, model=None, lower_better: bool = False, name: str | None = None,
              predictor=None, k: int = 5) -> dict:
    """Score the rated photos, fit and choose the map, write the card (a new file) and
    return the report: rows used, rows left out with why, the maps' cross-validated
    figures, the choice and why."""
    from afiqa.predictor import Predictor, load_card
    from afiqa.runtime.zoo import DEFAULT_MODEL

    if out is not None and Path(out).exists():
        raise CalibrationError(f"{out} already exists; choose another --out (afiqa never writes over a file)")
    model = model or DEFAULT_MODEL
    base_card, _ = load_card(model)
    if base_card.calibration:
        raise CalibrationError(f"{model} is itself calibrated; calibrate its base model instead")
    ratings = read_ratings(ratings_csv, images)
    predictor = predictor or Predictor(model)
    results = predictor.score_batch(ratings.paths)
    bad = list(ratings.bad)
    x, y, good = [], [], []
    for p, s, r in zip(ratings.paths, ratings.scores, results):
        if r.ok:
            x.append(r.score)
            y.append(s)
            good.append(p)
        else:
            bad.append((0, str(p), r.error))
    x, y = np.array(x, float), np.array(y, float)
    if len(x) < MIN_ROWS:
        raise CalibrationError(f"{len(x)} usable rated photos; calibration needs at least {MIN_ROWS}"
                               + (f". Left out: {_listing(bad)}" if bad else ""))
    if np.ptp(y) == 0:
        raise CalibrationError(f"every rating is {y[0]:g}: a constant scale cannot be fitted")
    sign = -1.0 if lower_better else 1.0
    t = sign * y  # higher is better from here on: the maps are fitted non-decreasing in this
    lo_user, hi_user = float(y.min()), float(y.max())
    blo, bhi = base_card.score_range
    frac = (x - blo) / (bhi - blo)
    stretched = hi_user - frac * (hi_user - lo_user) if lower_better else lo_user + frac * (hi_user - lo_user)
    before = agreement(stretched, y)  # on the user's own numbers: positive correlation = agreement
    maps = {method: agreement(sign * cross_validated(x, t, method, k), y) for method in METHODS}
    fused, refit_note = None, f"not tried: it needs at least {REFIT_MIN} rated photos ({len(x)} given)"
    if len(x) >= REFIT_MIN:
        fused = fused_features(predictor, good)
        if fused is None:
            refit_note = f"not tried: the {predictor.runtime.name} runtime gives no fused features"
        else:
            maps[REFIT] = agreement(sign * head_cross_validated(fused, t, k), y)
            refit_note = "tried"
    chosen = min(maps, key=lambda m: (maps[m]["rmse"], list(maps).index(m)))
    if chosen == REFIT:
        w, b, l2 = fit_head(fused, t)
        m = {"method": REFIT, "l2": l2, "head": (sign * w, sign * b)}
        refit_note = f"kept: it beat the best map ({min(METHODS, key=lambda q: maps[q]['rmse'])}) by cross-validated RMSE"
    else:
        m = fit_map(x, t, chosen)
        m["y"] = [sign * v for v in m["y"]]  # back onto the user's own numbers
        if refit_note == "tried":
            refit_note = f"not kept: its cross-validated RMSE {maps[REFIT]['rmse']:.4g} is above the {chosen} map's"
    m["base_range"] = [blo, bhi]
    report = {
        "n": len(x), "left_out": [{"line": ln, "path": p, "why": why} for ln, p, why in bad],
        "before": before, "maps": maps, "chosen": chosen,
        "why": f"lowest {k}-fold cross-validated RMSE on the user's photos ({maps[chosen]['rmse']:.4g})",
        "head_refit": refit_note,
    }
    base_ref = model if isinstance(model, str) and not model.endswith(".json") else str(Path(model).resolve())
    head = m.pop("head", None)
    if head is not None:
        if out is None:
            m["weights"] = {"w": head[0].tolist(), "b": head[1]}  # no file to put it beside: kept in the report
        else:
            from afiqa.runtime.weights import sha256_of

            path = Path(out).with_name(Path(out).stem + ".head.npz")
            if path.exists():
                raise CalibrationError(f"{path} already exists; choose another --out (afiqa never writes over a file)")
            with open(path, "xb") as fh:
                np.savez(fh, w=head[0].astype(np.float32), b=np.float32(head[1]))
            m.update(file=path.name, sha256=sha256_of(path))
    card = {
        "name": name or (Path(out).stem if out else "calibrated"),
        "base": base_ref,
        "score_range": [lo_user, hi_user],
        "higher_better": not lower_better,
        "calibration": {**m, "fitted_on": {"csv": str(ratings_csv), "n": len(x)}, "cross_validation": dict(report)},
    }
    if out is not None:
        tmp = Path(out).with_name(f".{Path(out).name}.part")
        tmp.write_text(json.dumps(card, indent=2) + "\n")
        try:
            os.link(tmp, out)  # fails if ``out`` appeared meanwhile: never written over
        finally:
            tmp.unlink(missing_ok=True)
    report["card"] = card
    return report
