"""The app's functions: each calls the package and shapes the result for the page (no
layout here; ``afiqa.app.page`` wires them to components). Scores are shown with
``format_score``, the CSV's format, everywhere.
"""

from __future__ import annotations

import json
import os
import statistics
import uuid
from pathlib import Path

import gradio as gr
import numpy as np

from afiqa.app.serving import ResultStore
from afiqa.app.settings import EXAMPLES_DIR, LIMITS, MB, ZOOMS
from afiqa.app.uploads import refused
from afiqa.errors import AfiqaError, ImageError
from afiqa.explain import FUSED
from afiqa.io.csvout import format_score, write_scores
from afiqa.io.inputs import load_rgb
from afiqa.io.render import DISPLAY_SIDE, HOW_TO_READ, fit, overlay
from afiqa.model.network import stream_name
from afiqa.predictor import Predictor, ScoreResult

# One store for every page's results (a page keeps only its key): capped in bytes.
STORE = ResultStore(LIMITS.store_mb * MB)


RANKING_HEADERS = ["rank", "file", "score", "label", "vs best", "error"]
BATCH_HEADERS = ["file", "score", "label", "error", "± error", "problem"]  # the CSV's order


def score_table(rows: list[list], headers: list[str]):
    """Rows for a ``gr.Dataframe``: the numbers kept (so a column sorts by value) and each
    score drawn by ``format_score`` (35.10, not 35.1), the CSV's format."""
    import pandas as pd

    frame = pd.DataFrame([list(r) for r in rows], columns=headers)
    if frame.empty:
        return frame
    return frame.style.format({"score": format_score, "± error": format_score,
                               "rank": lambda k: "" if pd.isna(k) else f"{int(k)}"},
                              na_rep="")


def stream_choices(predictor: Predictor) -> list[tuple[str, str]]:
    """(label, key) for the heat-map selector: fused first, then each backbone's stream."""
    backbones = predictor.card.config.backbones
    return [(f"fused ({len(backbones)} streams)", FUSED)] + [
        (f"stream {i + 1}: {name}", stream_name(i)) for i, name in enumerate(backbones)
    ]


def score_file(predictor: Predictor, path: str, heatmaps: bool = False, keep: int | None = DISPLAY_SIDE) -> ScoreResult:
    """One file through afiqa's input policy and the model; never raises (see ``error``).

    Files go one at a time, so one request holds one decoded photo at most; the result
    keeps the photo shrunk to ``keep`` px (None: no picture) and the maps at the model's
    resolution.
    """
    name = str(path)
    try:
        size = os.path.getsize(path)
        if size > LIMITS.max_file_bytes:
            raise ImageError(f"{name}: the file is {size / MB:.0f} MB, over the {LIMITS.max_file_bytes // MB} MB limit")
        rgb = load_rgb(path, min_size=predictor.size)  # what Predictor does with a path
    except (AfiqaError, OSError) as e:
        error = str(e) if isinstance(e, AfiqaError) else f"{name}: could not be read"
        refused(name, _short_names(error, name))
        return ScoreResult(name, error=error)
    r = next(predictor.iter_scores([rgb], heatmaps=heatmaps))
    r.source = name
    r.image = fit(rgb, keep) if keep else None
    return r


def score_image(predictor: Predictor, image: str | None, stream: str = FUSED, view: str = "signed",
                last: ScoreResult | None = None):
    """/score: (score, label, uncertainty, problem, (photo, heat-map), attention overlay, the
    result for the page).

    ``last``: the page's previous result, reused when the same upload comes again (Gradio
    sends a change twice when an image replaces another). A file that cannot be scored
    raises ``gr.Error`` with afiqa's sentence: the page shows it, API clients get it.
    """
    if not image:
        return None, "", None, "", None, None, None
    result = last if same_upload(last, image) else score_file(predictor, image, heatmaps=True)
    if not result.ok:
        raise gr.Error(_short_names(result.error, image), title="This image cannot be scored",
                       print_exception=False)
    slider, attention = render_maps(result, stream, view)
    return (round(result.score, 2), result.label, result.uncertainty, result.problem, slider, attention,
            result)


def same_upload(last: ScoreResult | None, image: str | None) -> bool:
    """Whether ``image`` is the upload the page's previous result ``last`` came from."""
    return last is not None and last.source == str(image)


def render_maps(result: ScoreResult | None, stream: str = FUSED, view: str = "signed"):
    """The photo/heat-map pair and the attention overlay of one stream (no model call)."""
    if result is None or result.image is None:
        return None, None
    heat = result.heatmaps.get(stream, result.heatmaps[FUSED])
    att = result.attention.get(stream)
    if att is None and result.attention:  # fused: where the streams attend on average
        from afiqa.explain import resize_map

        side = max(a.shape[0] for a in result.attention.values())
        att = np.mean([resize_map(a, (side, side)) for a in result.attention.values()], axis=0)
    att_img = None if att is None else overlay(result.image, att, "attention")
    return (result.image, overlay(result.image, heat, view)), att_img


def compare_images(predictor: Predictor, files: list[str] | None, show: str = "photo"):
    """/compare: a gallery ranked best first, a table (rank, file, score, label, vs best,
    error), a note (empty unless files were left out) and the ranked results."""
    files = list(files or [])
    note = ""
    if len(files) > LIMITS.max_compare:
        note = (f"Compared the first {LIMITS.max_compare} of {len(files)} images (the limit per comparison); "
                f"{len(files) - LIMITS.max_compare} left out. The Batch tab takes up to {LIMITS.max_batch}.")
        gr.Warning(note)
        files = files[:LIMITS.max_compare]
    results = []
    for f in files:
        r = score_file(predictor, f, heatmaps=True)
        r.source, r.error = Path(f).name, _short_names(r.error, f)
        results.append(r)
    ranked = sorted((r for r in results if r.ok), key=lambda r: -r.score) + [r for r in results if not r.ok]
    best = ranked[0].score if ranked and ranked[0].ok else None
    rows = []
    for k, r in enumerate(ranked, 1):
        if r.ok:
            rows.append([k, r.source, r.score, r.label, _vs_best(r.score, best, k), ""])
        else:
            rows.append([None, r.source, None, "", "", r.error])
    return render_gallery(ranked, show), rows, note, ranked


def _caption(r: ScoreResult, k: int, best: float | None) -> str:
    return f"#{k} {r.source} · {format_score(r.score)} {r.label} · {_vs_best(r.score, best, k)}"


def _scored(ranked: list[ScoreResult] | None) -> list[ScoreResult]:
    return [r for r in ranked or [] if r.ok and r.image is not None]


def _picture(r: ScoreResult, show: str) -> np.ndarray:
    return r.image if show == "photo" else overlay(r.image, r.heatmaps[FUSED], show)


def render_gallery(ranked: list[ScoreResult] | None, show: str = "photo"):
    """Gallery items (picture, caption) of ranked results; ``show``: "photo", "signed" or "magnitude"."""
    good = _scored(ranked)
    best = good[0].score if good else None
    return [(_picture(r, show), _caption(r, k, best)) for k, r in enumerate(good, 1)]


def ab_choices(ranked: list[ScoreResult] | None) -> list[tuple[str, int]]:
    """(caption, index) of each scored version, for the A/B pickers."""
    good = _scored(ranked)
    best = good[0].score if good else None
    return [(_caption(r, k, best), k - 1) for k, r in enumerate(good, 1)]


def render_ab(ranked: list[ScoreResult] | None, a: int | None, b: int | None, show: str = "photo"):
    """Two versions on one slider (B brought to A's size) and a line that says which is which."""
    good = _scored(ranked)
    if len(good) < 2 or a is None or b is None or not (0 <= a < len(good) and 0 <= b < len(good)):
        return None, ""
    ra, rb = good[a], good[b]
    pa, pb = _picture(ra, show), _picture(rb, show)
    if pb.shape[:2] != pa.shape[:2]:
        from PIL import Image

        pb = np.asarray(Image.fromarray(pb).resize(pa.shape[1::-1], Image.Resampling.BILINEAR))
    return (pa, pb), (f"**A** (left): {_md(ra.source)}, {format_score(ra.score)} {ra.label} · **B** (right): "
                      f"{_md(rb.source)}, {format_score(rb.score)} {rb.label} · B - A = {rb.score - ra.score:+.2f}")


def zoom_crops(ranked: list[ScoreResult] | None, x: float = 50, y: float = 50, zoom: str = "4x"):
    """The same region of every version (centre at x %, y % of the picture), enlarged
    without smoothing so blur, noise and blocks show; gallery items with captions."""
    from PIL import Image

    good = _scored(ranked)
    best = good[0].score if good else None
    items = []
    for k, r in enumerate(good, 1):
        h, w = r.image.shape[:2]
        side = max(8, round(min(h, w) / ZOOMS.get(zoom, 4)))
        x0 = int(np.clip(x / 100 * w - side / 2, 0, w - side))
        y0 = int(np.clip(y / 100 * h - side / 2, 0, h - side))
        crop = Image.fromarray(r.image[y0:y0 + side, x0:x0 + side]).resize((LIMITS.zoom_tile, LIMITS.zoom_tile),
                                                                          Image.Resampling.NEAREST)
        items.append((np.asarray(crop), _caption(r, k, best)))
    return items


def batch_scores(predictor: Predictor, files: list[str] | None, progress=None):
    """/batch, a generator: after each file the table so far; at the end the table (file,
    score, label, error), the CSV (the CLI's columns and rounding) and a summary, and the
    thumbnails and scores for the page. Gradio stops it when its page goes away."""
    files = list(files or [])
    if not files:
        yield [], None, "Add some image files first.", None
        return
    left_out = max(0, len(files) - LIMITS.max_batch)
    files = files[:LIMITS.max_batch]
    rows, raw, thumbs = [], [], []
    for k, f in enumerate(files, 1):
        name = Path(f).name
        r = score_file(predictor, f, heatmaps=False, keep=LIMITS.thumb_side)
        err = _short_names(r.error, f)
        rows.append([name, r.score, r.label, err, r.uncertainty, r.problem])
        raw.append((name, r.score, r.label, err, r.uncertainty, r.problem))
        if r.ok:
            thumbs.append((r.image, f"{format_score(r.score)} {r.label} · {name}"))
        if progress is not None:
            progress(k / len(files), desc=f"scored {k} of {len(files)}")
        if k < len(files):
            yield [list(x) for x in rows], gr.skip(), f"Scoring: {k} of {len(files)} done.", gr.skip()
    csv_path = _write_csv(raw)
    nbytes = sum(t.nbytes for t, _ in thumbs) + 64 * len(raw)
    key = STORE.put({"thumbs": thumbs, "scores": [row[1] for row in raw if row[1] is not None]}, nbytes)
    yield rows, csv_path, summarise(raw, left_out), key


def summarise(raw: list[tuple], left_out: int = 0) -> str:
    """Count, mean, median, worst and best of (name, score, label, error, ...) rows."""
    scored = [(row[1], row[0]) for row in raw if row[1] is not None]
    parts = [f"Scored {len(scored)} of {len(raw)} files."]
    if scored:
        values = [s for s, _ in scored]
        (lo, lo_name), (hi, hi_name) = min(scored), max(scored)
        parts.append(f"Mean {format_score(statistics.fmean(values))}, median {format_score(statistics.median(values))}; "
                     f"worst {format_score(lo)} ({_md(lo_name)}), best {format_score(hi)} ({_md(hi_name)}).")
    bad = len(raw) - len(scored)
    if bad:
        parts.append(f"{bad} could not be scored: see the error column.")
    if left_out:
        parts.append(f"Only the first {len(raw)} of {len(raw) + left_out} files were scored "
                     f"(the limit per batch is {LIMITS.max_batch}); {left_out} left out.")
    return " ".join(parts)


def histogram(predictor: Predictor, scores: list[float]):
    """A matplotlib figure: how the scores spread over the scale, with the label bands."""
    from matplotlib.figure import Figure

    card = predictor.card
    lo, hi = card.score_range
    fig = Figure(figsize=(6.4, 2.6), dpi=100)
    ax = fig.add_subplot()
    ax.hist(scores, bins=np.linspace(lo, hi, 21), color="#5c7cfa", edgecolor="white")
    step = (hi - lo) / len(card.labels)
    for i, name in enumerate(card.labels if card.higher_better else card.labels[::-1]):
        ax.axvline(lo + i * step, color="#adb5bd", lw=0.8)
        ax.text(lo + (i + 0.5) * step, 1.0, name, ha="center", va="bottom", fontsize=8,
                transform=ax.get_xaxis_transform())
    if scores:
        median = statistics.median(scores)
        ax.axvline(median, color="#e8590c", lw=1.5)
        ax.set_title(f"{len(scores)} scored · median {format_score(median)} (orange line) · mean {format_score(statistics.fmean(scores))}",
                     fontsize=9, pad=16)
    ax.set_xlim(lo, hi)
    ax.set_xlabel("score")
    ax.set_ylabel("files")
    ax.yaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    return fig


def _write_csv(raw: list[tuple]) -> str:
    """The batch's CSV in Gradio's cache (so it is served as it is and deleted with the cache)."""
    folder = Path(gr.utils.get_upload_folder()) / f"afiqa-{uuid.uuid4().hex}"
    folder.mkdir(parents=True, exist_ok=True)
    return str(write_scores(folder / "afiqa-scores.csv", raw))


def example_thumbnails(names: list[str], side: int = 200) -> list[tuple[np.ndarray, str]]:
    """Examples as (crop, caption): the centre of each photo at full resolution, where
    blur, noise and JPEG blocks show (the whole photo at thumbnail size hides them)."""
    captions = _captions()
    out = []
    for name in names:
        rgb = load_rgb(EXAMPLES_DIR / name)
        h, w = rgb.shape[:2]
        c = min(h, w) // 2
        crop = rgb[(h - c) // 2:(h + c) // 2, (w - c) // 2:(w + c) // 2]
        out.append((fit(crop, side), f"{len(out) + 1}. {captions.get(name, name).split(':')[0].split(',')[0]}"))
    return out


def _captions() -> dict[str, str]:
    try:
        return json.loads((EXAMPLES_DIR / "captions.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def render_card(predictor: Predictor, score: float | None, label: str, uncertainty: float | None = None,
                problem: str = "") -> str:
    """The score card's HTML: the score big (± its uncertainty), its label (— mostly the
    problem), a bar; a hint while there is none."""
    if not label:  # no result (the page sends a missing score as 0, so the label decides)
        return ('<div class="afiqa-card afiqa-empty"><div class="afiqa-big">–</div>'
                "<div>Drop, paste or pick a photo to see its score.</div></div>")
    lo, hi = predictor.card.score_range
    pct = 100.0 * (float(score) - lo) / (hi - lo)
    plus_minus = f'<span class="afiqa-pm"> ± {uncertainty:.0f}</span>' if uncertainty is not None else ""
    mostly = f'<div class="afiqa-problem">— mostly {problem}</div>' if problem and problem != "none" else \
        '<div class="afiqa-problem">— no clear problem</div>' if problem == "none" else ""
    return (
        f'<div class="afiqa-card afiqa-{label}"><div class="afiqa-big">{format_score(score)}{plus_minus}'
        f'<span class="afiqa-of"> / {hi:g}</span></div><div class="afiqa-label">{label}</div>{mostly}'
        f'<div class="afiqa-bar"><div style="width:{pct:.1f}%"></div></div></div>'
    )


def how_to_read(predictor: Predictor) -> str:
    card = predictor.card
    lo, hi = card.score_range
    step = (hi - lo) / len(card.labels)
    names = card.labels if card.higher_better else card.labels[::-1]  # from the low end of the scale
    bands = ", ".join(f"**{name}** {lo + i * step:g}-{lo + (i + 1) * step:g}" for i, name in enumerate(names))
    better = "higher is better" if card.higher_better else "lower is better"
    return (
        f"**How to read the score.** {lo:g} to {hi:g}, {better}: {bands}. "
        f"It predicts the mean opinion score people would give the photo; the model "
        f"(`{card.name}`) was trained on {card.train_set or 'human opinion scores'}. "
        f"**The heat-map** (GradCAM): {HOW_TO_READ} Drag the handle to compare it with the photo. "
        "The **spatial attention** map shows where the network chose to look (relative: yellow = most)."
    )


def _short_names(text: str, path: str) -> str:
    """An error message with the upload's temporary folder left out: only the file name."""
    return text.replace(str(path), Path(path).name)


def _md(text: str) -> str:
    """Text (a file name) shown literally in Markdown."""
    return "`" + text.replace("`", "'") + "`"


def _vs_best(score: float, best: float | None, rank: int) -> str:
    return "best" if rank == 1 or best is None else f"{score - best:+.2f} vs best"


def _examples(*names: str) -> list[str]:
    return [str(EXAMPLES_DIR / n) for n in names if (EXAMPLES_DIR / n).is_file()]


def _result_bytes(results: list[ScoreResult]) -> int:
    n = 0
    for r in results:
        n += 0 if r.image is None else r.image.nbytes
        n += sum(m.nbytes for m in (*r.heatmaps.values(), *r.attention.values()))
    return n + 256 * len(results)


def _gone():
    gr.Warning("This result is no longer kept on the server; upload the photos again.")
