"""The afiqa web app: score a photo's quality, see what raises and lowers the score,
compare versions of a photo, score a batch.

    python app.py [--model NAME|CARD.json] [--weights FILE] [--share]

The model loads once, at start: ``--model``, else ``$AFIQA_MODEL``, else afiqa's default
model; ``--weights`` (or ``$AFIQA_WEIGHTS``) overrides the resolved weights file. Host and
port come from ``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT`` (default 127.0.0.1:7860).
Named API endpoints for ``gradio_client``: ``/score``, ``/compare`` and ``/batch``.
Everything that judges an image lives in the ``afiqa`` package; this file only lays out
the page.

Built to be public (a Space gets anything, many times): every upload reaches afiqa as a
file and is decoded by ``afiqa.io.inputs`` (its size checked from the header first), never by
Gradio; request bodies are capped (``BodyLimit``: a data URL in a JSON body included);
files per comparison and per batch are capped and the answer says when some were left
out; one model call runs at a time and the queue is bounded; pictures are kept and sent
at display size only (longest side ``DISPLAY_SIDE``), maps at the model's resolution, in
one store capped in bytes for all pages together; a batch stops when its page goes away;
cached files are deleted after an hour.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import os
import statistics
import sys
import tempfile
import uuid
from pathlib import Path

import gradio as gr
import numpy as np
from gradio import processing_utils

from afiqa.io.csvout import CSV_COLUMNS, write_scores
from afiqa.errors import AfiqaError, ImageError
from afiqa.explain import FUSED
from afiqa.io.inputs import load_rgb
from afiqa.model.network import stream_name
from afiqa.predictor import Predictor, ScoreResult
from afiqa.io.render import DISPLAY_SIDE, HOW_TO_READ, fit, legend_html, overlay
from afiqa.app.serving import BodyLimit, ResultStore
from afiqa.runtime.zoo import DEFAULT_MODEL

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
MB = 1024 * 1024
MAX_FILE_SIZE = "25mb"  # per uploaded file; the server refuses larger uploads with a message
MAX_FILE_BYTES = 25 * MB  # the same, for files that arrive another way (a data URL)
MAX_BODY_BYTES = MAX_FILE_BYTES * 4 // 3 + MB  # any other request: JSON with a base64 data URL of the largest file
MAX_COMPARE = 12  # images in one comparison
MAX_BATCH = 100  # files in one batch; the answer says how many were left out
MAX_UPLOAD_BYTES = MAX_BATCH * MAX_FILE_BYTES  # one upload request (the browser sends a batch's files in one)
MODEL_CONCURRENCY = 1  # model calls at a time, all tabs together: one call already uses every core
QUEUE_SIZE = 64  # requests waiting beyond this are refused ("queue is full")
STORE_BYTES = 256 * MB  # pictures kept for re-drawing (another view, the slider, the zoom), all pages together
CACHE_CLEANUP = (600, 3600)  # every 10 min, delete the files the app wrote or received over an hour ago
THUMB_SIDE = 160  # batch thumbnails
ZOOM_TILE = 320  # each version's zoomed crop, in pixels
ZOOMS = {"2x": 2, "4x": 4, "8x": 8}  # the crop is the picture's shorter side divided by this
VIEWS = [("lowers / raises quality", "signed"), ("how much each region weighs", "magnitude")]
SHOWS = [("photos", "photo"), ("heat-maps: lowers / raises", "signed"), ("heat-maps: how much", "magnitude")]
THEME = gr.themes.Soft(primary_hue="indigo", neutral_hue="slate")
CSS = """
.gradio-container { max-width: 1280px !important; margin: auto; }
.afiqa-card { display: grid; grid-template-columns: auto 1fr; align-items: center; column-gap: 1.5rem;
    padding: 1rem 1.5rem; border-radius: 12px; border: 1px solid var(--border-color-primary);
    background: var(--block-background-fill); --afiqa: #64748b; }
.afiqa-big { font-size: 3.4rem; font-weight: 800; line-height: 1; color: var(--afiqa); }
.afiqa-of { font-size: 1.2rem; font-weight: 500; opacity: 0.6; }
.afiqa-label { font-size: 2rem; font-weight: 700; text-transform: capitalize; color: var(--afiqa); }
.afiqa-bar { grid-column: 1 / -1; height: 10px; margin-top: 0.8rem; border-radius: 5px;
    background: var(--neutral-200); overflow: hidden; }
.afiqa-bar > div { height: 100%; background: var(--afiqa); }
.afiqa-empty { grid-template-columns: auto 1fr; opacity: 0.75; }
.afiqa-bad { --afiqa: #d1242f; } .afiqa-poor { --afiqa: #e8590c; } .afiqa-fair { --afiqa: #c99a06; }
.afiqa-good { --afiqa: #2f9e44; } .afiqa-excellent { --afiqa: #0b7285; }
#afiqa-attention img { width: 100%; height: 100%; object-fit: contain; }
.afiqa-note { font-size: 0.95rem; opacity: 0.9; }
.afiqa-legend { display: flex; align-items: center; gap: 0.6rem; font-size: 0.9rem; margin: 0.2rem 0.4rem; }
.afiqa-legend-bar { flex: 1; height: 14px; border-radius: 7px; border: 1px solid var(--border-color-primary); }
#afiqa-batch-table td, #afiqa-batch-table th { white-space: nowrap; }
#afiqa-batch-table td:last-child { white-space: normal; }
"""


def photo_input(**kwargs) -> gr.Image:
    """``gr.Image(type="filepath")`` that hands the upload on undecoded, so ``afiqa.io.inputs``
    decodes it with its checks and its sentences; Gradio's own ``Image`` opens the file
    (and decodes a data URL whole) first. (Its ``preprocess`` is replaced on the instance:
    a subclass would make Gradio write an ``app.pyi`` beside this file.)"""
    image = gr.Image(type="filepath", **kwargs)

    def preprocess(payload):
        if payload is None:
            return None
        if payload.url and payload.url.startswith("data:"):
            return _data_url_to_file(payload.url, image.GRADIO_CACHE, image.temp_files)
        if payload.path is None:
            raise gr.Error("No image was received.")
        return str(payload.path)

    image.preprocess = preprocess
    return image


def _data_url_to_file(url: str, cache_dir: str, registry: set) -> str:
    """A base64 data URL written to a file in the cache (deleted with it), within the size limit."""
    head, _, data = url.partition(",")
    if not head.endswith(";base64"):
        raise gr.Error("An image sent as a data URL must be base64-encoded.")
    if len(data) // 4 * 3 > MAX_FILE_BYTES:
        raise gr.Error(f"The image is over the {MAX_FILE_BYTES // MB} MB limit.")
    try:
        raw = base64.b64decode(data, validate=False)
    except (binascii.Error, ValueError):
        raise gr.Error("The data URL is not valid base64.") from None
    folder = Path(cache_dir) / uuid.uuid4().hex
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "upload"
    path.write_bytes(raw)
    registry.add(str(path))
    return str(path)


def _save_pil_to_cache(img, cache_dir: str, name: str = "image", format: str = "webp") -> str:
    """gradio's ``processing_utils.save_pil_to_cache``, writing atomically (a temporary file,
    then ``os.replace``). The cache is content-addressed, so the same picture sent to two
    users is one file; gradio 6.31 rewrites it in place, and a download of it in flight
    then gets a short or empty body (seen under load: tests/test_load.py)."""
    data = processing_utils.encode_pil_to_bytes(img, format)
    folder = Path(cache_dir) / processing_utils.hash_bytes(data)
    folder.mkdir(exist_ok=True, parents=True)
    path = (folder / f"{name}.{format}").resolve()
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".part")
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return str(path)


processing_utils.save_pil_to_cache = _save_pil_to_cache  # gr.Image / gr.ImageSlider outputs go through it


# One store for every page's results (a page keeps only its key): capped in bytes.
STORE = ResultStore(STORE_BYTES)


# -- the app's functions: each calls the package and shapes the result for the page ----
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
        if size > MAX_FILE_BYTES:
            raise ImageError(f"{name}: the file is {size / MB:.0f} MB, over the {MAX_FILE_BYTES // MB} MB limit")
        rgb = load_rgb(path, min_size=predictor.size)  # what Predictor does with a path
    except (AfiqaError, OSError) as e:
        return ScoreResult(name, error=str(e) if isinstance(e, AfiqaError) else f"{name}: could not be read")
    r = next(predictor.iter_scores([rgb], heatmaps=heatmaps))
    r.source = name
    r.image = fit(rgb, keep) if keep else None
    return r


def score_image(predictor: Predictor, image: str | None, stream: str = FUSED, view: str = "signed",
                last: ScoreResult | None = None):
    """/score: (score, label, (photo, heat-map), attention overlay, the result for the page).

    ``last``: the page's previous result, reused when the same upload comes again (Gradio
    sends a change twice when an image replaces another). A file that cannot be scored
    raises ``gr.Error`` with afiqa's sentence: the page shows it, API clients get it.
    """
    if not image:
        return None, "", None, None, None
    result = last if same_upload(last, image) else score_file(predictor, image, heatmaps=True)
    if not result.ok:
        raise gr.Error(_short_names(result.error, image), title="This image cannot be scored")
    slider, attention = render_maps(result, stream, view)
    return round(result.score, 2), result.label, slider, attention, result


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
    if len(files) > MAX_COMPARE:
        note = (f"Compared the first {MAX_COMPARE} of {len(files)} images (the limit per comparison); "
                f"{len(files) - MAX_COMPARE} left out. The Batch tab takes up to {MAX_BATCH}.")
        gr.Warning(note)
        files = files[:MAX_COMPARE]
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
            rows.append([k, r.source, round(r.score, 2), r.label, _vs_best(r.score, best, k), ""])
        else:
            rows.append([None, r.source, None, "", "", r.error])
    return render_gallery(ranked, show), rows, note, ranked


def _caption(r: ScoreResult, k: int, best: float | None) -> str:
    return f"#{k} {r.source} · {r.score:.1f} {r.label} · {_vs_best(r.score, best, k)}"


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
    return (pa, pb), (f"**A** (left): {_md(ra.source)}, {ra.score:.1f} {ra.label} · **B** (right): "
                      f"{_md(rb.source)}, {rb.score:.1f} {rb.label} · B - A = {rb.score - ra.score:+.1f}")


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
        crop = Image.fromarray(r.image[y0:y0 + side, x0:x0 + side]).resize((ZOOM_TILE, ZOOM_TILE),
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
    left_out = max(0, len(files) - MAX_BATCH)
    files = files[:MAX_BATCH]
    rows, raw, thumbs = [], [], []
    for k, f in enumerate(files, 1):
        name = Path(f).name
        r = score_file(predictor, f, heatmaps=False, keep=THUMB_SIDE)
        err = _short_names(r.error, f)
        rows.append([name, None if r.score is None else round(r.score, 2), r.label, err])
        raw.append((name, r.score, r.label, err))
        if r.ok:
            thumbs.append((r.image, f"{r.score:.1f} {r.label} · {name}"))
        if progress is not None:
            progress(k / len(files), desc=f"scored {k} of {len(files)}")
        if k < len(files):
            yield [list(x) for x in rows], gr.skip(), f"Scoring: {k} of {len(files)} done.", gr.skip()
    csv_path = _write_csv(raw)
    nbytes = sum(t.nbytes for t, _ in thumbs) + 64 * len(raw)
    key = STORE.put({"thumbs": thumbs, "scores": [s for _, s, _, _ in raw if s is not None]}, nbytes)
    yield rows, csv_path, summarise(raw, left_out), key


def summarise(raw: list[tuple], left_out: int = 0) -> str:
    """Count, mean, median, worst and best of (name, score, label, error) rows."""
    scored = [(s, n) for n, s, _, _ in raw if s is not None]
    parts = [f"Scored {len(scored)} of {len(raw)} files."]
    if scored:
        values = [s for s, _ in scored]
        (lo, lo_name), (hi, hi_name) = min(scored), max(scored)
        parts.append(f"Mean {statistics.fmean(values):.1f}, median {statistics.median(values):.1f}; "
                     f"worst {lo:.1f} ({_md(lo_name)}), best {hi:.1f} ({_md(hi_name)}).")
    bad = len(raw) - len(scored)
    if bad:
        parts.append(f"{bad} could not be scored: see the error column.")
    if left_out:
        parts.append(f"Only the first {len(raw)} of {len(raw) + left_out} files were scored "
                     f"(the limit per batch is {MAX_BATCH}); {left_out} left out.")
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
    for i, name in enumerate(card.labels):
        ax.axvline(lo + i * step, color="#adb5bd", lw=0.8)
        ax.text(lo + (i + 0.5) * step, 1.0, name, ha="center", va="bottom", fontsize=8,
                transform=ax.get_xaxis_transform())
    if scores:
        median = statistics.median(scores)
        ax.axvline(median, color="#e8590c", lw=1.5)
        ax.set_title(f"{len(scores)} scored · median {median:.1f} (orange line) · mean {statistics.fmean(scores):.1f}",
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


def render_card(predictor: Predictor, score: float | None, label: str) -> str:
    """The score card's HTML: the score big, its label, a bar; a hint while there is none."""
    if not label:  # no result (the page sends a missing score as 0, so the label decides)
        return ('<div class="afiqa-card afiqa-empty"><div class="afiqa-big">–</div>'
                "<div>Drop, paste or pick a photo to see its score.</div></div>")
    lo, hi = predictor.card.score_range
    pct = 100.0 * (float(score) - lo) / (hi - lo)
    return (
        f'<div class="afiqa-card afiqa-{label}"><div class="afiqa-big">{float(score):.1f}'
        f'<span class="afiqa-of"> / {hi:g}</span></div><div class="afiqa-label">{label}</div>'
        f'<div class="afiqa-bar"><div style="width:{pct:.1f}%"></div></div></div>'
    )


def how_to_read(predictor: Predictor) -> str:
    card = predictor.card
    lo, hi = card.score_range
    step = (hi - lo) / len(card.labels)
    bands = ", ".join(f"**{name}** {lo + i * step:g}-{lo + (i + 1) * step:g}" for i, name in enumerate(card.labels))
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
    return "best" if rank == 1 or best is None else f"{score - best:+.1f} vs best"


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


# -- the page -----------------------------------------------------------------------
def build_demo(predictor: Predictor) -> gr.Blocks:
    card = predictor.card
    model_events = dict(concurrency_limit=MODEL_CONCURRENCY, concurrency_id="model")
    quiet = dict(api_visibility="private", show_progress="hidden")
    example_names = ["coffee.jpg", "coffee_blur.jpg", "coffee_noise.jpg", "coffee_jpeg.jpg",
                     "astronaut.jpg", "chelsea.jpg", "rocket.jpg"]
    example_names = [n for n in example_names if (EXAMPLES_DIR / n).is_file()]
    with gr.Blocks(title="afiqa: image quality", delete_cache=CACHE_CLEANUP) as demo:
        gr.Markdown(
            "# afiqa: how good is this photo?\n"
            f"Blind image quality assessment: a score from {card.score_range[0]:g} to {card.score_range[1]:g} "
            f"({'higher' if card.higher_better else 'lower'} is better) and a map of what raises and lowers it. "
            f"Model `{card.name}` ({' + '.join(card.config.backbones)}). "
            f"Files up to {MAX_FILE_BYTES // MB} MB; {MAX_COMPARE} per comparison, {MAX_BATCH} per batch."
        )
        with gr.Tab("Score"):
            with gr.Row(equal_height=False):
                with gr.Column(scale=5):
                    image = photo_input(label="Photo: drop, paste or click to upload", image_mode=None,
                                        sources=["upload", "clipboard"], height=420, elem_id="afiqa-photo")
                    examples = gr.Gallery(example_thumbnails(example_names), label="Examples: click one to score it",
                                          columns=4, height="auto", allow_preview=False, object_fit="cover",
                                          elem_id="afiqa-examples", interactive=False, fit_columns=False)
                    gr.Markdown(" · ".join(f"**{k}.** {_captions().get(n, n)}" for k, n in enumerate(example_names, 1)),
                                elem_classes="afiqa-note")
                    gr.Markdown(how_to_read(predictor), elem_classes="afiqa-note")
                with gr.Column(scale=6):
                    score_card = gr.HTML(render_card(predictor, None, ""), elem_id="afiqa-card")
                    # The API's values; the card above shows them (a Number cannot show "no score").
                    score = gr.Number(label="score", precision=2, visible="hidden", elem_id="afiqa-score")
                    label = gr.Textbox(label="label", visible="hidden", elem_id="afiqa-label")
                    slider = gr.ImageSlider(label="Photo | heat-map: drag the handle", interactive=False,
                                            max_height=480, elem_id="afiqa-slider")
                    legend = gr.HTML(legend_html("signed"), elem_id="afiqa-legend")
                    gr.Markdown(HOW_TO_READ, elem_classes="afiqa-note")
                    with gr.Row():
                        view = gr.Radio(VIEWS, value="signed", label="Heat-map shows")
                        stream = gr.Radio(stream_choices(predictor), value=FUSED, label="Heat-map of")
                    attention = gr.Image(label="Spatial attention", interactive=False, height=360,
                                         elem_id="afiqa-attention")
            maps = gr.State()  # the key of this page's result in STORE

        with gr.Tab("Compare"):
            gr.Markdown("Upload two or more images, typically versions of one photo (edits, exports, "
                        f"compressions; up to {MAX_COMPARE}). They are ranked best first, with each one's "
                        "difference to the best. Put any two on the slider, or zoom all into the same region.")
            with gr.Row(equal_height=False):
                with gr.Column(scale=4):
                    files = gr.File(label="Images to compare", file_count="multiple", height=160,
                                    elem_id="afiqa-compare-files")
                    gr.Examples([[_examples("coffee.jpg", "coffee_blur.jpg", "coffee_noise.jpg", "coffee_jpeg.jpg")],
                                 [_examples("astronaut.jpg", "chelsea.jpg", "rocket.jpg")]],
                                inputs=files, cache_examples=False,
                                example_labels=["coffee: original, blurred, noisy, JPEG quality 6",
                                                "three different photos"])
                    show = gr.Radio(SHOWS, value="photo", label="Show")
                with gr.Column(scale=6):
                    note = gr.Markdown(elem_id="afiqa-compare-note")
                    ranking = gr.Dataframe(headers=["rank", "file", "score", "label", "vs best", "error"],
                                           datatype=["number", "str", "number", "str", "str", "str"],
                                           label="Ranking", interactive=False, wrap=True, max_height=2000,
                                           column_widths=["8%", "28%", "10%", "12%", "14%", "28%"],
                                           elem_id="afiqa-ranking")
            gallery = gr.Gallery(label="Ranked, best first", columns=4, height="auto", object_fit="contain",
                                 interactive=False, elem_id="afiqa-compare-gallery")
            with gr.Row(equal_height=False):
                with gr.Column(scale=3):
                    pick_a = gr.Dropdown(label="A (left of the handle)", choices=[], elem_id="afiqa-pick-a")
                    pick_b = gr.Dropdown(label="B (right of the handle)", choices=[], elem_id="afiqa-pick-b")
                    ab_text = gr.Markdown()
                with gr.Column(scale=7):
                    ab = gr.ImageSlider(label="A | B: drag the handle", interactive=False, max_height=560,
                                        elem_id="afiqa-ab")
            with gr.Row():
                zoom_x = gr.Slider(0, 100, value=50, step=1, label="Zoom centre: across (%)")
                zoom_y = gr.Slider(0, 100, value=50, step=1, label="Zoom centre: down (%)")
                zoom = gr.Radio(list(ZOOMS), value="4x", label="Zoom")
            crops = gr.Gallery(label="The same region of every version", columns=4, height="auto",
                               object_fit="contain", interactive=False, elem_id="afiqa-zoom")
            ranked = gr.State()  # the key of this page's ranked results in STORE

        with gr.Tab("Batch"):
            gr.Markdown(f"Score up to {MAX_BATCH} files at once. Files that cannot be read are listed with "
                        "the reason; the others are scored. Sort by a column from the menu on its header. "
                        "The CSV has the columns and rounding of `afiqa score --csv`: "
                        + ",".join(CSV_COLUMNS) + " (cells that a spreadsheet would run as a formula start "
                        "with `'`).")
            with gr.Row(equal_height=False):
                with gr.Column(scale=4):
                    batch_files = gr.File(label="Image files", file_count="multiple", height=160,
                                          elem_id="afiqa-batch-files")
                    run = gr.Button("Score all", variant="primary", elem_id="afiqa-batch-run")
                    summary = gr.Markdown(label="Summary", elem_id="afiqa-batch-summary")
                    hist = gr.Plot(label="Scores", elem_id="afiqa-batch-hist")
                    csv_file = gr.File(label="CSV", interactive=False)
                with gr.Column(scale=6):
                    table = gr.Dataframe(headers=["file", "score", "label", "error"],
                                         datatype=["str", "number", "str", "str"], label="Scores",
                                         column_widths=["34%", "90px", "100px", "auto"],
                                         interactive=False, wrap=True, show_search="search",
                                         elem_id="afiqa-batch-table")
            thumbs = gr.Gallery(label="Thumbnails", columns=10, height="auto", object_fit="cover", fit_columns=False,
                                interactive=False, elem_id="afiqa-batch-thumbs")
            batch_key = gr.State()

        def on_score(image, stream, view, key):
            last = STORE.get(key)
            if image and not predictor.heatmaps_ready() and not same_upload(last, image):
                # The Keras model for heat-maps is still warming (the first seconds after start):
                # the score comes now from the scoring runtime, the maps when they are ready.
                quick = score_file(predictor, image, keep=None)
                if quick.ok:
                    yield round(quick.score, 2), quick.label, None, None, key
            *out, result = score_image(predictor, image, stream, view, last)
            if result is not None and result is not last:
                key = STORE.put(result, _result_bytes([result]))
            yield (*out, key)

        def on_maps(key, stream, view):
            result = STORE.get(key)
            if result is None and key:
                _gone()
            return (*render_maps(result, stream, view), legend_html(view))

        def on_example(evt: gr.SelectData):
            return str(EXAMPLES_DIR / example_names[evt.index])

        def on_compare(files, show):
            gallery_items, rows, text, results = compare_images(predictor, files, show)
            return gallery_items, rows, text, STORE.put(results, _result_bytes(results))

        def on_compared(key, show):
            results = STORE.get(key)
            choices = ab_choices(results)
            a, b = (0, 1) if len(choices) >= 2 else (None, None)
            pair, text = render_ab(results, a, b, show)
            return (gr.update(choices=choices, value=a), gr.update(choices=choices, value=b), pair, text,
                    zoom_crops(results, 50, 50, "4x"), 50, 50, "4x")

        def on_show(key, show, a, b):
            results = STORE.get(key)
            if results is None and key:
                _gone()
            return (render_gallery(results, show), *render_ab(results, a, b, show))

        def on_ab(key, a, b, show):
            return render_ab(STORE.get(key), a, b, show)

        def on_zoom(key, x, y, z):
            return zoom_crops(STORE.get(key), x, y, z)

        def on_batch(files, progress=gr.Progress()):
            for out in batch_scores(predictor, files, progress):
                if isinstance(out[1], str):  # the CSV: deleted with the cache (delete_cache)
                    csv_file.temp_files.add(out[1])
                yield out

        def on_batched(key):
            kept = STORE.get(key) or {}
            scores = kept.get("scores", [])
            return kept.get("thumbs", []), histogram(predictor, scores) if scores else None

        def on_card(score, label):
            return render_card(predictor, score, label)

        outputs = [score, label, slider, attention, maps]
        scored = image.change(on_score, [image, stream, view, maps], outputs, api_name="score", **model_events)
        score.change(on_card, [score, label], score_card, **quiet)  # as soon as a score shows
        scored.failure(lambda: (None, "", None, None, None, on_card(None, "")), None, [*outputs, score_card], **quiet)
        for control in (stream, view):
            control.change(on_maps, [maps, stream, view], [slider, attention, legend], **quiet)
        examples.select(on_example, None, image, **quiet)

        compared = files.change(on_compare, [files, show], [gallery, ranking, note, ranked], api_name="compare",
                                **model_events)
        compared.success(on_compared, [ranked, show], [pick_a, pick_b, ab, ab_text, crops, zoom_x, zoom_y, zoom],
                         **quiet)
        show.change(on_show, [ranked, show, pick_a, pick_b], [gallery, ab, ab_text], **quiet)
        for pick in (pick_a, pick_b):
            pick.input(on_ab, [ranked, pick_a, pick_b, show], [ab, ab_text], **quiet)
        for control in (zoom_x, zoom_y):
            control.release(on_zoom, [ranked, zoom_x, zoom_y, zoom], crops, **quiet)
        zoom.input(on_zoom, [ranked, zoom_x, zoom_y, zoom], crops, **quiet)

        batched = run.click(on_batch, batch_files, [table, csv_file, summary, batch_key], api_name="batch",
                            **model_events)
        batched.success(on_batched, batch_key, [thumbs, hist], **quiet)
    return demo


def body_limit(path: str) -> int:
    """Bytes a request body may have: uploads carry up to a batch's files, anything else
    (JSON; a data URL in it) one file's worth."""
    return MAX_UPLOAD_BYTES if path.rstrip("/").endswith("/upload") else MAX_BODY_BYTES


def serve(demo: gr.Blocks, **launch_kwargs):
    """Queue and launch with the app's limits, theme and CSS; returns what launch returns."""
    from starlette.middleware import Middleware

    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=MODEL_CONCURRENCY)
    app_kwargs = {"middleware": [Middleware(BodyLimit, limit_for=body_limit)]}
    launch_kwargs.setdefault("allowed_paths", [str(EXAMPLES_DIR)])  # the examples the page loads on a click
    return demo.launch(max_file_size=MAX_FILE_SIZE, theme=THEME, css=CSS, app_kwargs=app_kwargs, **launch_kwargs)


def load_predictor(model: str | None = None, weights: str | None = None) -> Predictor:
    predictor = Predictor(model or os.environ.get("AFIQA_MODEL") or DEFAULT_MODEL,
                          weights=weights or os.environ.get("AFIQA_WEIGHTS") or None)
    predictor.warm(heatmaps=True, background=True)  # scores warm now; the Keras model for heat-maps on a thread
    return predictor


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="The afiqa web app (Gradio).")
    p.add_argument("--model", help=f"model name or model card .json (default: $AFIQA_MODEL or {DEFAULT_MODEL})")
    p.add_argument("--weights", metavar="FILE", help="weights file instead of the resolved one ($AFIQA_WEIGHTS)")
    p.add_argument("--share", action="store_true", help="also create a public gradio.live link")
    args = p.parse_args(argv)
    try:
        predictor = load_predictor(args.model, args.weights)
    except AfiqaError as e:
        print(f"afiqa app: {e}", file=sys.stderr)
        return 2
    serve(build_demo(predictor), share=True if args.share else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
