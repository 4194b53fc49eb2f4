"""Side heads: what else a model says from the fused features its score is made of.

Pure NumPy, applied after the network (``afiqa.model.network.feature_view`` gives the
fused features, ``FUSED_LAYER``); the score is never changed by them.

* ``problem``: the main thing lowering the score, one of ``FAMILIES`` or ``none``, and a
  strength in [0, 1] for each family (the head's probability that it is the main problem).
* ``uncertainty``: the likely absolute error of the score in score points.

Both are linear in the fused features (trained on a projection of them, ``train.sidehead``,
and stored composed with it), so their weights are one small ``.npz`` beside the model's
weights, named in its card (``side_heads``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FAMILIES = ("blur", "noise", "compression", "exposure", "contrast", "colour")
NONE = "none"


@dataclass(frozen=True)
class SideOutputs:
    uncertainty: np.ndarray  # (N,) points of the base model's scale; NaN without an uncertainty head
    problems: np.ndarray | None  # (N, 7): FAMILIES + none


@dataclass(frozen=True)
class SideHeads:
    """``problem_w`` (D, 7), ``problem_stats_w`` (len(STATS), 7), ``problem_b`` (7,): a softmax
    over ``FAMILIES`` + none from the fused features and the photo's statistics
    (``photo_stats``); ``unc_w`` (D,), ``unc_extra`` (2,), ``unc_b``: log-uncertainty from the
    fused features, the members' spread and the score's distance from the middle of the scale."""

    problem_w: np.ndarray | None = None
    problem_b: np.ndarray | None = None
    problem_stats_w: np.ndarray | None = None
    unc_w: np.ndarray | None = None
    unc_extra: np.ndarray | None = None
    unc_b: float = 0.0

    @classmethod
    def compose(cls, mean, scale, basis, problem=None, uncertainty=None, stats_norm=None) -> "SideHeads":
        """Heads fitted on the projection ``z = ((f - mean) / scale) @ basis`` as heads on ``f``:
        ``problem`` (w (P + len(STATS), 7), b) on z and the statistics standardised by
        ``stats_norm`` (mean, scale); ``uncertainty`` (w (P + 2,), b)."""
        def on_features(w):  # z @ w == f @ (basis @ w / scale) - (mean / scale) @ basis @ w
            wf = (basis @ w) / (scale[:, None] if w.ndim == 2 else scale)
            return wf.astype(np.float32), -(mean @ wf)

        kw = {}
        if problem is not None:
            w_all, p = np.asarray(problem[0], np.float32), basis.shape[1]
            w, shift = on_features(w_all[:p])
            b = np.asarray(problem[1], np.float32) + shift
            if stats_norm is not None:
                s_mean, s_scale = (np.asarray(v, np.float32) for v in stats_norm)
                ws = w_all[p:] / s_scale[:, None]
                b = b - s_mean @ ws
                kw.update(problem_stats_w=ws.astype(np.float32))
            kw.update(problem_w=w, problem_b=b.astype(np.float32))
        if uncertainty is not None:
            w_all, b = np.asarray(uncertainty[0], np.float32), float(uncertainty[1])
            p = basis.shape[1]
            w, shift = on_features(w_all[:p])
            kw.update(unc_w=w, unc_extra=w_all[p:].astype(np.float32), unc_b=b + float(shift))
        return cls(**kw)

    @classmethod
    def load(cls, path) -> "SideHeads":
        with np.load(path) as z:
            get = {k: z[k] for k in z.files}
        return cls(get.get("problem_w"), get.get("problem_b"), get.get("problem_stats_w"), get.get("unc_w"),
                   get.get("unc_extra"), float(get["unc_b"]) if "unc_b" in get else 0.0)

    def save(self, path) -> None:
        arrays = {k: v for k, v in self.__dict__.items() if v is not None}
        with open(path, "xb") as f:  # never over a file that is there
            np.savez(f, **arrays)

    def stats(self, x: np.ndarray) -> np.ndarray | None:
        """``photo_stats`` of model inputs ``x`` where the problem head reads them, else None."""
        return photo_stats(x) if self.problem_stats_w is not None else None

    def apply(self, out, x: np.ndarray, lo: float = 0.0, hi: float = 100.0,
              stats: np.ndarray | None = None) -> SideOutputs | None:
        """The side heads on a runtime's ``Outputs`` for model inputs ``x`` (MOS on [0, 1]
        mapped onto ``lo``-``hi``; ``stats``: ``self.stats(x)`` when already made), or None
        where it gave no fused features."""
        if out is None or out.fused is None:
            return None
        f = np.asarray(out.fused, np.float32)
        score = lo + np.asarray(out.score, np.float32) * (hi - lo)
        members = out.members if out.members is not None else np.asarray(out.score)[:, None]
        members = lo + np.asarray(members, np.float32) * (hi - lo)
        unc = self.uncertainty(f, members, score) if self.unc_w is not None else np.full(len(f), np.nan)
        if stats is None:
            stats = self.stats(x)
        probs = self.problems(f, stats) if self.problem_w is not None else None
        return SideOutputs(unc, probs)

    def problems(self, fused: np.ndarray, stats: np.ndarray | None = None) -> np.ndarray:
        """(N, 7) probabilities over ``FAMILIES`` + none (``stats``: ``photo_stats`` of the
        inputs, when the head reads them)."""
        logits = np.asarray(fused, np.float32) @ self.problem_w + self.problem_b
        if self.problem_stats_w is not None:
            logits = logits + np.asarray(stats, np.float32) @ self.problem_stats_w
        return softmax(logits)

    def uncertainty(self, fused: np.ndarray, members: np.ndarray, score: np.ndarray) -> np.ndarray:
        """(N,) likely |error| in points (``score`` and ``members`` on the 0-100 scale)."""
        log_u = np.asarray(fused, np.float32) @ self.unc_w + extra_inputs(members, score) @ self.unc_extra + self.unc_b
        return np.exp(np.clip(log_u, -10, 10))


STATS = ("luma_mean", "luma_std", "luma_p1", "luma_p5", "luma_p50", "luma_p95", "luma_p99", "dark_share",
         "bright_share", "saturation_mean", "saturation_p95", "colourfulness", "cast_rg", "cast_yb",
         "log_laplacian_var", "log_gradient", "log_noise", "blockiness", "log_chroma_detail")


def photo_stats(x: np.ndarray) -> np.ndarray:
    """(N, len(STATS)) global statistics of model inputs (N, S, S, 3), RGB 0..255, that the
    problem head reads beside the fused features: brightness and its clipping, contrast,
    saturation and colour cast, sharpness, fine noise, 8-px blockiness and chroma detail.
    A few milliseconds a photo."""
    import cv2

    def quantiles(u8: np.ndarray, qs) -> np.ndarray:  # from a 256-bin histogram: no sort
        cdf = np.cumsum(np.bincount(u8.ravel(), minlength=256)) / u8.size
        return np.searchsorted(cdf, qs) / 255.0

    out = []
    for img in np.asarray(x, np.float32):
        u8 = np.clip(img + 0.5, 0, 255).astype(np.uint8)
        rgb = img / 255.0
        y8 = cv2.cvtColor(u8, cv2.COLOR_RGB2GRAY)
        y = y8.astype(np.float32) / 255.0
        sat8 = cv2.cvtColor(u8, cv2.COLOR_RGB2HSV)[..., 1]
        rg, yb = rgb[..., 0] - rgb[..., 1], 0.5 * (rgb[..., 0] + rgb[..., 1]) - rgb[..., 2]
        colourful = np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean())
        lap = cv2.Laplacian(y, cv2.CV_32F)
        gx, gy = np.abs(np.diff(y, axis=1)), np.abs(np.diff(y, axis=0))
        noise = np.median(cv2.absdiff(y8, cv2.medianBlur(y8, 3))) / 255.0
        at_edge = (np.arange(gx.shape[1]) % 8 == 7)
        block = (gx[:, at_edge].mean() + 1e-4) / (gx[:, ~at_edge].mean() + 1e-4)
        ycc = cv2.cvtColor(u8, cv2.COLOR_RGB2YCrCb).astype(np.float32) / 255.0
        chroma = np.abs(cv2.Laplacian(ycc[..., 1], cv2.CV_32F)).mean() + np.abs(cv2.Laplacian(ycc[..., 2], cv2.CV_32F)).mean()
        out.append([y.mean(), y.std(), *quantiles(y8, [0.01, 0.05, 0.5, 0.95, 0.99]), (y8 < 8).mean(),
                    (y8 > 247).mean(), sat8.mean() / 255.0, quantiles(sat8, [0.95])[0], colourful, rg.mean(), yb.mean(),
                    np.log(lap.var() + 1e-6), np.log(gx.mean() + gy.mean() + 1e-6), np.log(noise + 1e-3), block,
                    np.log(chroma + 1e-5)])
    return np.asarray(out, np.float32).reshape(len(out), len(STATS))


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def extra_inputs(members: np.ndarray, score: np.ndarray) -> np.ndarray:
    """(N, 2): log(1 + the members' spread), and |score - 50| / 50 (0-100 scale)."""
    members = np.asarray(members, np.float32)
    spread = members.std(axis=1) if members.ndim == 2 and members.shape[1] > 1 else np.zeros(len(members), np.float32)
    middle = np.abs(np.asarray(score, np.float32).reshape(-1) - 50.0) / 50.0
    return np.stack([np.log1p(spread), middle], axis=1)


def name_problem(p: np.ndarray) -> tuple[str, dict[str, float]]:
    """(the main problem, {family: strength}) from one row of ``SideHeads.problems``."""
    names = FAMILIES + (NONE,)
    return names[int(np.argmax(p))], {f: round(float(v), 3) for f, v in zip(FAMILIES, p[:len(FAMILIES)])}
