"""The Python API: load a model once, score images, optionally explain the scores.

    from afiqa import Predictor
    p = Predictor()                      # the default model, weights resolved once
    r = p.score("photo.jpg")             # ScoreResult(score=73.2, label='good', ...)
    r = p.score(img, heatmaps=True)      # + r.heatmaps["fused"], r.attention, r.image
    results = p.score_batch(paths)       # never raises for a bad file: see r.error

Scores run on the fastest runtime available (``afiqa.runtime``: LiteRT, else Keras;
``p.choice`` says which and why); heat-maps on Keras, loaded when first needed.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from afiqa.errors import AfiqaError, ImageError, WeightsError
from afiqa.io.inputs import ImageSource, load_rgb, to_model_input
from afiqa.runtime.zoo import DEFAULT_MODEL, ModelCard, get_card


@dataclass
class ScoreResult:
    source: str  # a path, or a short description of an in-memory image
    score: float | None = None  # on the card's range (0-100, higher is better, unless the card is calibrated)
    label: str = ""
    error: str = ""  # one sentence when the image could not be scored
    uncertainty: float | None = None  # the likely absolute error of ``score``, in its points (side heads)
    problem: str = ""  # the main thing lowering the score: blur, noise, compression, exposure, contrast, colour, none
    problems: dict[str, float] = field(default_factory=dict)  # each of those but none: a strength in [0, 1]
    heatmaps: dict[str, np.ndarray] = field(default_factory=dict)  # signed GradCAM in [-1, 1], model resolution
    attention: dict[str, np.ndarray] = field(default_factory=dict)  # spatial attention in [0, 1], likewise
    image: np.ndarray | None = None  # the decoded RGB the maps align with (heatmaps=True)

    @property
    def ok(self) -> bool:
        return self.score is not None


def load_card(model: str | os.PathLike | ModelCard) -> tuple[ModelCard, Path | None]:
    """A card from the model table by name, or from a model-card JSON file.

    Returns the card and the folder its weights are looked for in first (the JSON's
    folder; ``None`` means the repository's ``weights/``).
    """
    if isinstance(model, ModelCard):
        return model, None
    p = Path(model)
    if p.suffix == ".json" or p.is_file():
        try:
            d = json.loads(p.read_text())
            if "base" in d:  # a calibrated card (afiqa calibrate): the base model, mapped onto the user's scale
                return _calibrated(d, p)
            return ModelCard.from_dict(d), p.parent
        except FileNotFoundError:
            raise WeightsError(f"model card {p} does not exist") from None
        except (ValueError, KeyError, TypeError) as e:
            raise WeightsError(f"model card {p} is not a valid afiqa model card ({e})") from None
    return get_card(str(model)), None


def _calibrated(d: dict, path: Path) -> tuple[ModelCard, Path | None]:
    import dataclasses

    base = str(d["base"])
    if base.endswith(".json") and not Path(base).is_absolute():
        base = str(path.parent / base)
    if Path(base).resolve() == path.resolve():
        raise ValueError("a calibrated card cannot be its own base")
    card, folder = load_card(base)
    if card.calibration:
        raise ValueError(f"its base {base} is itself calibrated; calibrate the base model instead")
    cal = dict(d["calibration"])
    cal.setdefault("base_range", list(card.score_range))
    if cal.get("method") == "refit":
        cal["path"] = str(path.parent / cal["file"])  # the head is written beside the card
    lo, hi = (float(v) for v in d["score_range"])
    return dataclasses.replace(card, name=str(d.get("name", path.stem)), score_range=(lo, hi),
                               higher_better=bool(d.get("higher_better", True)), calibration=cal), folder


class Predictor:
    """A loaded model. Thread-compatible for scoring; load it once and reuse it.

    ``runtime``: ``"auto"`` (the fastest available), ``"litert"``, ``"litert-int8"`` or
    ``"keras"`` (``afiqa.runtime``); ``self.choice.reason`` says why. ``batch_size``:
    photos a forward pass (default: the runtime's best, 1 on LiteRT, 8 on Keras). Heat-maps always run on Keras,
    built on first use (or ahead, by ``warm(heatmaps=True)``).
    """

    def __init__(
        self,
        model: str | os.PathLike | ModelCard = DEFAULT_MODEL,
        weights: str | os.PathLike | None = None,
        batch_size: int | None = None,
        workers: int = 2,
        runtime: str = "auto",
    ):
        from afiqa import runtime as runtimes

        self.card, self._weights_dir = load_card(model)
        self._weights = weights
        self.runtime, self.choice = runtimes.select(runtime, self.card, weights, self._weights_dir)
        self._keras = self.runtime if self.runtime.name == "keras" else None
        self._keras_lock = threading.Lock()
        self.size = self.card.config.image_size
        self.batch_size = max(1, int(batch_size or self.runtime.batch))  # default: the runtime's own
        self._batch_given = batch_size is not None
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="afiqa-decode")
        self.side_heads, self.side_heads_missing = _load_side_heads(self.card, self._weights_dir, self.runtime)
        self._head = _load_refit(self.card, self.runtime)  # a calibrated card's own head (afiqa calibrate), or None

    @property
    def weights_path(self) -> Path:
        """The file scoring runs on (``.weights.h5`` for Keras, ``.tflite`` for LiteRT)."""
        return self.runtime.path

    @property
    def model(self):
        """The Keras model (built on first use when scores run on LiteRT)."""
        return self.keras_runtime().model

    def keras_runtime(self):
        """The Keras runtime, for heat-maps; raises one clear sentence if it cannot load here."""
        if self._keras is None:
            with self._keras_lock:
                if self._keras is None:
                    from afiqa import runtime as runtimes

                    if not runtimes.has_keras():
                        raise runtimes.RuntimeUnavailable(runtimes.keras_missing_message("Heat-maps (GradCAM)"))
                    if self.runtime.name == runtimes.LITERT and self._weights is not None:
                        raise runtimes.RuntimeUnavailable(
                            f"Heat-maps need the model's Keras weights, but {self._weights} is a LiteRT file; "
                            "run without --weights, or with the .weights.h5 file.")
                    self._keras = runtimes.load_keras(self.card, None, self._weights_dir)
        return self._keras

    def heatmaps_ready(self) -> bool:
        """Whether a heat-map request would start at once: the Keras runtime is built and
        has explained once (``warm(heatmaps=True)`` does both)."""
        return self._keras is not None and self._keras.explained

    def warm(self, heatmaps: bool = False, background: bool = False) -> threading.Thread | None:
        """Run the scoring runtime once so the first request is not slow; with ``heatmaps``,
        also build and run the Keras model for heat-maps (on a thread with ``background``)."""
        x = np.zeros((1, self.size, self.size, 3), np.float32)
        self._side(x, heatmaps=False)  # the pass scoring runs: with the side heads' outputs where it has them
        if not heatmaps:
            return None

        def keras_too():
            self.keras_runtime().explain(x)

        if not background:
            keras_too()
            return None
        t = threading.Thread(target=_quietly, args=(keras_too,), name="afiqa-warm-keras", daemon=True)
        t.start()
        return t

    # -- scoring --------------------------------------------------------------------
    def score(self, image: ImageSource, heatmaps: bool = False) -> ScoreResult:
        """Score one image; raises ``ImageError`` if it cannot be read."""
        result = next(self.iter_scores([image], heatmaps=heatmaps))
        if not result.ok:
            raise ImageError(result.error)
        return result

    def score_batch(self, images: Iterable[ImageSource], heatmaps: bool = False) -> list[ScoreResult]:
        """Score many images; a bad one gets ``error`` set and the others are scored."""
        return list(self.iter_scores(images, heatmaps=heatmaps))

    def iter_scores(self, images: Iterable[ImageSource], heatmaps: bool = False) -> Iterator[ScoreResult]:
        """Results in input order, batch by batch; the next batch decodes while one runs."""
        pending: list = []
        batch: list = []
        size = self.batch_size
        if heatmaps and not self._batch_given:  # GradCAM runs on Keras: at Keras's batch unless told otherwise
            from afiqa.runtime import KerasRuntime

            size = max(size, KerasRuntime.batch)
        for src in images:
            batch.append(self._pool.submit(self._decode, _describe(src), src))
            if len(batch) == size:
                if pending:
                    yield from self._run([f.result() for f in pending], heatmaps)
                pending, batch = batch, []
        for group in (pending, batch):
            if group:
                yield from self._run([f.result() for f in group], heatmaps)

    def predict_raw(self, inputs: np.ndarray) -> np.ndarray:
        """Model output (MOS on [0, 1]) for a batch of model inputs (B, S, S, 3), 0..255."""
        return self.runtime.predict(np.asarray(inputs, np.float32))

    # -- internals --------------------------------------------------------------------
    def _decode(self, name: str, src):
        """(name, RGB, model input, error, photo statistics or None), on a decode thread: the
        statistics the problem head reads are made here, beside the decoding, off the model's path."""
        try:
            rgb = load_rgb(src, min_size=self.size)
            x = to_model_input(rgb, self.size)
            return name, rgb, x, "", self.side_heads.stats(x[None]) if self.side_heads is not None else None
        except AfiqaError as e:
            return name, None, None, str(e), None
        except Exception as e:  # never lose the batch to one odd file
            return name, None, None, f"{name}: could not read the image ({type(e).__name__}: {str(e)[:120]})", None

    def _side(self, x: np.ndarray, heatmaps: bool, stats: np.ndarray | None = None):
        """(model outputs, side-head outputs or None) for a batch (``stats``: its photo statistics,
        made from ``x`` when not given)."""
        from afiqa.runtime import Outputs

        if self.side_heads is None and self._head is None:
            return (None if heatmaps else Outputs(self.predict_raw(x))), None
        rt = self.keras_runtime() if heatmaps else self.runtime
        out = rt.forward(np.asarray(x, np.float32))
        return out, self.side_heads.apply(out, x, *self._base_range, stats=stats) if self.side_heads is not None else None

    def _run(self, decoded, heatmaps: bool) -> Iterator[ScoreResult]:
        from afiqa.model.sideheads import name_problem

        good = [d for d in decoded if d[3] == ""]
        raws, expl, side, own = np.zeros(0), None, None, None
        if good:
            x = np.stack([d[2] for d in good])
            stats = np.concatenate([d[4] for d in good]) if all(d[4] is not None for d in good) else None
            out, side = self._side(x, heatmaps, stats)
            if self._head is not None:  # the user's refitted head: its score on their scale
                lo, hi = self.card.score_range
                own = np.clip(np.asarray(out.fused, np.float32) @ self._head[0] + self._head[1], lo, hi)
            if heatmaps:
                expl = self.keras_runtime().explain(x)
                raws = expl.scores
            else:
                raws = out.score
        k = 0
        for name, rgb, _, err, _ in decoded:
            if err:
                yield ScoreResult(name, error=err)
                continue
            score = self.card.to_score(float(raws[k])) if own is None else float(own[k])
            r = ScoreResult(name, score=score, label=self.card.label(score))
            if side is not None:
                r.uncertainty = self._points(float(raws[k]), side.uncertainty[k]) if own is None else None
                if side.problems is not None:
                    r.problem, r.problems = name_problem(side.problems[k])
            if expl is not None:
                r.image = rgb  # the maps stay at the model's resolution: afiqa.io.render draws them
                r.heatmaps = {n: m[k] for n, m in expl.gradcam.items()}
                r.attention = {n: m[k] for n, m in expl.attention.items()}
            k += 1
            yield r


    @property
    def _base_range(self) -> tuple[float, float]:
        """The scale the base model scores on (a calibrated card's own range is the user's)."""
        return tuple(self.card.calibration.get("base_range", self.card.score_range))

    def _points(self, raw: float, u_base: float) -> float | None:
        """An uncertainty in base-model points as points of this card's scale (a calibrated
        card's map can stretch or squeeze it): half the span the map gives raw +- u."""
        lo, hi = self._base_range
        if not np.isfinite(u_base):
            return None
        du = float(u_base) / (hi - lo)
        return round(abs(self.card.to_score(raw + du) - self.card.to_score(raw - du)) / 2, 2)


def _load_refit(card: ModelCard, runtime):
    """(w, b) of a calibrated card's refitted head (``afiqa calibrate``), verified; None for
    any other card. Raises when the runtime cannot give the fused features it reads."""
    cal = card.calibration or {}
    if cal.get("method") != "refit":
        return None
    from afiqa.runtime.weights import sha256_of

    if not getattr(runtime, "gives_features", False):
        raise WeightsError(f"model {card.name!r} has its own head, which reads the fused features, and the "
                           f"{runtime.name} runtime gives none; use --runtime litert or --runtime keras")
    path = Path(cal.get("path", ""))
    if not path.is_file():
        raise WeightsError(f"model {card.name!r}: its refitted head {path} does not exist (it is written beside the card)")
    if sha256_of(path) != cal.get("sha256"):
        raise WeightsError(f"model {card.name!r}: {path} does not match the sha256 in its card; fit it again")
    with np.load(path) as z:
        return z["w"].astype(np.float32), float(z["b"])


def _load_side_heads(card: ModelCard, weights_dir: Path | None, runtime):
    """(the card's side heads, None) or (None, why there are none here)."""
    from afiqa.model.sideheads import SideHeads
    from afiqa.runtime.weights import resolve_file

    rec = getattr(card, "side_heads", None) or {}
    if not rec.get("file"):
        return None, f"model {card.name!r} has no side heads (problem, uncertainty)"
    if not getattr(runtime, "gives_features", False):
        return None, f"the {runtime.name} runtime gives no fused features"
    try:
        return SideHeads.load(resolve_file(card, rec["file"], rec.get("sha256", ""), None, weights_dir)), None
    except (WeightsError, OSError, ValueError, KeyError) as e:
        return None, f"its side heads could not be loaded ({str(e)[:200]})"


def _quietly(fn) -> None:
    """Run a warm-up; a failure shows on first real use instead (with its one sentence)."""
    try:
        fn()
    except Exception:
        pass


def _describe(src) -> str:
    if isinstance(src, (str, os.PathLike)):
        return str(src)
    if isinstance(src, np.ndarray):
        return f"array{tuple(src.shape)}"
    if isinstance(src, (bytes, bytearray)):
        return f"bytes[{len(src)}]"
    return type(src).__name__
