"""IQA evaluation metrics, written once: training, evaluation, the app and tests import these.

All take predictions and ground-truth scores as 1-D sequences of equal length. A
correlation of a constant sequence is undefined and returned as NaN (never an exception),
so a degenerate batch shows up in a log instead of stopping a run.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import optimize, stats


def _pair(pred, target) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pred, dtype=np.float64).reshape(-1)
    t = np.asarray(target, dtype=np.float64).reshape(-1)
    if p.shape != t.shape:
        raise ValueError(f"predictions and targets differ in length: {p.size} vs {t.size}")
    return p, t


def _undefined(p: np.ndarray, t: np.ndarray) -> bool:
    return p.size < 2 or np.ptp(p) == 0 or np.ptp(t) == 0


def plcc(pred, target) -> float:
    """Pearson linear correlation coefficient."""
    p, t = _pair(pred, target)
    return float("nan") if _undefined(p, t) else float(stats.pearsonr(p, t)[0])


def srocc(pred, target) -> float:
    """Spearman rank-order correlation coefficient."""
    p, t = _pair(pred, target)
    return float("nan") if _undefined(p, t) else float(stats.spearmanr(p, t)[0])


def krocc(pred, target) -> float:
    """Kendall rank-order correlation coefficient (tau-b)."""
    p, t = _pair(pred, target)
    return float("nan") if _undefined(p, t) else float(stats.kendalltau(p, t)[0])


def rmse(pred, target) -> float:
    p, t = _pair(pred, target)
    return float(np.sqrt(np.mean((p - t) ** 2))) if p.size else float("nan")


def mae(pred, target) -> float:
    p, t = _pair(pred, target)
    return float(np.mean(np.abs(p - t))) if p.size else float("nan")


def logistic4(x, b1, b2, b3, b4):
    """The monotonic 4-parameter logistic of the VQEG / IQA literature."""
    return b2 + (b1 - b2) / (1.0 + np.exp(-(x - b3) / np.abs(b4)))


def fit_logistic(pred, target) -> np.ndarray:
    """Parameters of ``logistic4`` mapping predictions onto targets (least squares)."""
    p, t = _pair(pred, target)
    p0 = [t.max(), t.min(), float(np.mean(p)), float(np.std(p)) or 1.0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        params, _ = optimize.curve_fit(logistic4, p, t, p0=p0, maxfev=20000)
    return params


def logistic_plcc(pred, target) -> float:
    """PLCC after fitting ``logistic4`` from predictions to targets (the IQA convention).

    Falls back to the plain PLCC when there are too few points to fit four parameters
    (under 5) or the fit does not converge.
    """
    p, t = _pair(pred, target)
    if _undefined(p, t):
        return float("nan")
    if p.size < 5:
        return plcc(p, t)
    try:
        return plcc(logistic4(p, *fit_logistic(p, t)), t)
    except (RuntimeError, ValueError, TypeError):
        return plcc(p, t)


def evaluate(pred, target) -> dict[str, float]:
    """Every metric at once: n, PLCC, SROCC, KROCC, RMSE, MAE and logistic PLCC."""
    p, t = _pair(pred, target)
    return {
        "n": int(p.size),
        "plcc": plcc(p, t),
        "srocc": srocc(p, t),
        "krocc": krocc(p, t),
        "rmse": rmse(p, t),
        "mae": mae(p, t),
        "plcc_logistic": logistic_plcc(p, t),
    }
