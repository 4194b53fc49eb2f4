"""The afiqa web app: score a photo's quality, see where the score comes from, compare
versions of a photo, score a batch.

    python app.py [--model NAME|CARD.json] [--weights FILE] [--share]

The model loads once, at start: ``--model``, else ``$AFIQA_MODEL``, else afiqa's default
model; ``--weights`` (or ``$AFIQA_WEIGHTS``) overrides the resolved weights file. Host and
port come from ``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT`` (default 127.0.0.1:7860).
Named API endpoints for ``gradio_client``: ``/score``, ``/compare`` and ``/batch``.
Everything that judges an image lives in the ``afiqa`` package; this file only lays out
the page.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
from pathlib import Path

import gradio as gr
import numpy as np
from gradio import processing_utils

from afiqa.cli import CSV_COLUMNS
from afiqa.errors import AfiqaError
from afiqa.explain import FUSED, normalise, overlay, resize_map
from afiqa.model import stream_name
from afiqa.predictor import Predictor, ScoreResult
from afiqa.zoo import DEFAULT_MODEL

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
MAX_FILE_SIZE = "25mb"  # per uploaded file; the server refuses larger uploads with a message
MODEL_CONCURRENCY = 1  # model calls at a time, all tabs together: one call already uses every core
QUEUE_SIZE = 64  # requests waiting beyond this are refused ("queue is full")
MAX_COMPARE = 12  # images in one comparison; the Batch tab takes any number
DISPLAY_SIDE = 1024  # longest side of the pictures the page shows (scoring uses the full image)
STATE_TTL = 3600  # seconds a page's last result is kept for re-rendering (also dropped when the tab closes)
ATTENTION_COLORMAP = "viridis"
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
"""


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


# -- the app's functions: each calls the package and shapes the result for the page ----
def stream_choices(predictor: Predictor) -> list[tuple[str, str]]:
    """(label, key) for the heat-map selector: fused first, then each backbone's stream."""
    backbones = predictor.card.config.backbones
    return [(f"fused ({len(backbones)} streams)", FUSED)] + [
        (f"stream {i + 1}: {name}", stream_name(i)) for i, name in enumerate(backbones)
    ]


def score_image(predictor: Predictor, image: str | None, stream: str = FUSED, last: ScoreResult | None = None):
    """/score: (score, label, (photo, GradCAM overlay), attention overlay, maps for the page).

    ``last``: the page's previous result, reused when the same upload comes again (Gradio
    sends a change twice when an image replaces another).
    """
    if not image:
        return None, "", None, None, None
    try:
        same = last is not None and last.source == str(image)
        result = last if same else _for_display(predictor.score(image, heatmaps=True))
    except AfiqaError as e:
        raise gr.Error(_short_names(str(e), image), title="This image cannot be scored") from None
    slider, attention = render_maps(result, stream)
    return round(result.score, 2), result.label, slider, attention, result


def render_maps(result: ScoreResult | None, stream: str = FUSED):
    """The photo/overlay pair and the attention overlay of one stream (no model call)."""
    if result is None or result.image is None:
        return None, None
    heat = result.heatmaps.get(stream, result.heatmaps[FUSED])
    att = result.attention.get(stream)
    if att is None and result.attention:  # fused: where the streams attend on average
        att = np.mean(list(result.attention.values()), axis=0)
    att_img = None if att is None else overlay(result.image, normalise(att), colormap=ATTENTION_COLORMAP)
    return (result.image, overlay(result.image, heat)), att_img


def compare_images(predictor: Predictor, files: list[str] | None, show: str = "heat-map"):
    """/compare: a gallery ranked best first and a table (rank, file, score, label, vs best, error)."""
    files = list(files or [])
    if len(files) > MAX_COMPARE:
        gr.Warning(f"Comparing the first {MAX_COMPARE} of {len(files)} images; the Batch tab takes any number.")
        files = files[:MAX_COMPARE]
    results = [_for_display(r) for r in predictor.iter_scores(files, heatmaps=True)]
    for f, r in zip(files, results):
        r.source, r.error = Path(f).name, _short_names(r.error, f)
    ranked = sorted((r for r in results if r.ok), key=lambda r: -r.score) + [r for r in results if not r.ok]
    best = ranked[0].score if ranked and ranked[0].ok else None
    rows = []
    for k, r in enumerate(ranked, 1):
        if r.ok:
            rows.append([k, r.source, round(r.score, 2), r.label, _vs_best(r.score, best, k), ""])
        else:
            rows.append([None, r.source, None, "", "", r.error])
    return render_gallery(ranked, show), rows, ranked


def render_gallery(ranked: list[ScoreResult] | None, show: str = "heat-map"):
    """Gallery items (picture, caption) of ranked results; ``show``: "heat-map" or "photo"."""
    best = next((r.score for r in ranked or [] if r.ok), None)
    items = []
    for k, r in enumerate(ranked or [], 1):
        if r.ok:
            pic = overlay(r.image, r.heatmaps[FUSED]) if show == "heat-map" else r.image
            items.append((pic, f"#{k} · {r.score:.1f} {r.label} · {_vs_best(r.score, best, k)} · {r.source}"))
    return items


def batch_scores(predictor: Predictor, files: list[str] | None, progress=None):
    """/batch: a table (file, score, label, error), the CSV (the CLI's columns) and a summary."""
    files = list(files or [])
    if not files:
        return [], None, "Add some image files first."
    rows = []
    for k, (f, r) in enumerate(zip(files, predictor.iter_scores(files)), 1):
        score = None if r.score is None else round(r.score, 2)
        rows.append([Path(f).name, score, r.label, _short_names(r.error, f)])
        if progress is not None:
            progress(k / len(files), desc=f"scored {k} of {len(files)}")
    out = Path(tempfile.mkdtemp(prefix="afiqa-")) / "afiqa-scores.csv"
    with out.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(CSV_COLUMNS)
        w.writerows([name, "" if s is None else f"{s:.3f}", label, err] for name, s, label, err in rows)
    bad = sum(1 for r in rows if r[3])
    summary = f"Scored {len(rows) - bad} of {len(rows)} files."
    if bad:
        summary += f" {bad} could not be scored: see the error column."
    return rows, str(out), summary


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
        "The **GradCAM heat-map** (red = strong) shows where the score comes from: drag the "
        "handle to compare the photo with it. The **spatial attention** map shows where the "
        "network chose to look (relative: yellow = most)."
    )


def _short_names(text: str, path: str) -> str:
    """An error message with the upload's temporary folder left out: only the file name."""
    return text.replace(str(path), Path(path).name)


def _vs_best(score: float, best: float | None, rank: int) -> str:
    return "best" if rank == 1 or best is None else f"{score - best:+.1f} vs best"


def _for_display(r: ScoreResult) -> ScoreResult:
    """The result with its picture and maps shrunk to DISPLAY_SIDE (kept per session)."""
    if r.image is None or max(r.image.shape[:2]) <= DISPLAY_SIDE:
        return r
    from PIL import Image

    h, w = r.image.shape[:2]
    f = DISPLAY_SIDE / max(h, w)
    size = (max(1, round(h * f)), max(1, round(w * f)))
    r.image = np.asarray(Image.fromarray(r.image).resize(size[::-1], Image.Resampling.LANCZOS))
    r.heatmaps = {k: resize_map(m, size) for k, m in r.heatmaps.items()}
    r.attention = {k: resize_map(m, size) for k, m in r.attention.items()}
    return r


def _examples(*names: str) -> list[str]:
    return [str(EXAMPLES_DIR / n) for n in names if (EXAMPLES_DIR / n).is_file()]


# -- the page -----------------------------------------------------------------------
def build_demo(predictor: Predictor) -> gr.Blocks:
    card = predictor.card
    model_events = dict(concurrency_limit=MODEL_CONCURRENCY, concurrency_id="model")
    with gr.Blocks(title="afiqa: image quality") as demo:
        gr.Markdown(
            "# afiqa: how good is this photo?\n"
            f"Blind image quality assessment: a score from {card.score_range[0]:g} to {card.score_range[1]:g} "
            f"({'higher' if card.higher_better else 'lower'} is better) and a map of where it comes from. "
            f"Model `{card.name}` ({' + '.join(card.config.backbones)}). "
            f"Files up to {MAX_FILE_SIZE.upper().replace('MB', ' MB')}."
        )
        with gr.Tab("Score"):
            with gr.Row(equal_height=False):
                with gr.Column(scale=5):
                    image = gr.Image(label="Photo: drop, paste or click to upload", type="filepath",
                                     image_mode=None, sources=["upload", "clipboard"], height=420,
                                     elem_id="afiqa-photo")
                    gr.Examples(_examples("coffee.jpg", "coffee_blur.jpg", "coffee_noise.jpg", "coffee_jpeg.jpg",
                                          "astronaut.jpg", "chelsea.jpg", "rocket.jpg"),
                                inputs=image, cache_examples=False, examples_per_page=8)
                    gr.Markdown(how_to_read(predictor), elem_classes="afiqa-note")
                with gr.Column(scale=6):
                    score_card = gr.HTML(render_card(predictor, None, ""), elem_id="afiqa-card")
                    # The API's values; the card above shows them (a Number cannot show "no score").
                    score = gr.Number(label="score", precision=2, visible="hidden", elem_id="afiqa-score")
                    label = gr.Textbox(label="label", visible="hidden", elem_id="afiqa-label")
                    slider = gr.ImageSlider(label="GradCAM heat-map", interactive=False, max_height=480)
                    stream = gr.Radio(stream_choices(predictor), value=FUSED, label="Heat-map of")
                    attention = gr.Image(label="Spatial attention", interactive=False, height=360,
                                         elem_id="afiqa-attention")
            maps = gr.State(time_to_live=STATE_TTL)

        with gr.Tab("Compare"):
            gr.Markdown("Upload two or more images, typically versions of one photo (edits, exports, "
                        "compressions). They are ranked best first; the difference to the best is shown.")
            with gr.Row(equal_height=False):
                with gr.Column(scale=3):
                    files = gr.File(label="Images to compare", file_count="multiple", height=200,
                                    elem_id="afiqa-compare-files")
                    gr.Examples([[_examples("coffee.jpg", "coffee_blur.jpg", "coffee_noise.jpg", "coffee_jpeg.jpg")],
                                 [_examples("astronaut.jpg", "chelsea.jpg", "rocket.jpg")]],
                                inputs=files, cache_examples=False,
                                example_labels=["coffee: original, blur, noise, JPEG", "three photos"])
                    show = gr.Radio(["heat-map", "photo"], value="heat-map", label="Show")
                with gr.Column(scale=7):
                    ranking = gr.Dataframe(headers=["rank", "file", "score", "label", "vs best", "error"],
                                           datatype=["number", "str", "number", "str", "str", "str"],
                                           label="Ranking", interactive=False, wrap=True, max_height=360,
                                           column_widths=["8%", "28%", "10%", "10%", "16%", "28%"])
                    gallery = gr.Gallery(label="Ranked, best first", columns=2, height=720,
                                         object_fit="contain", interactive=False)
            ranked = gr.State(time_to_live=STATE_TTL)

        with gr.Tab("Batch"):
            gr.Markdown("Score many files at once. Files that cannot be read are listed with the reason; "
                        "the others are scored. Click a column header to sort. The CSV has the columns of "
                        "`afiqa score --csv`: " + ",".join(CSV_COLUMNS) + ".")
            with gr.Row(equal_height=False):
                with gr.Column(scale=3):
                    batch_files = gr.File(label="Image files", file_count="multiple", height=200,
                                          elem_id="afiqa-batch-files")
                    run = gr.Button("Score all", variant="primary")
                    summary = gr.Markdown(label="Summary")
                    csv_file = gr.File(label="CSV", interactive=False)
                with gr.Column(scale=7):
                    table = gr.Dataframe(headers=["file", "score", "label", "error"],
                                         datatype=["str", "number", "str", "str"], label="Scores",
                                         column_widths=["28%", "10%", "10%", "52%"],
                                         interactive=False, wrap=True, show_search="search")

        def on_score(image, stream, last):
            return score_image(predictor, image, stream, last)

        def on_compare(files, show):
            return compare_images(predictor, files, show)

        def on_batch(files, progress=gr.Progress()):
            return batch_scores(predictor, files, progress)

        def on_card(score, label):
            return render_card(predictor, score, label)

        outputs = [score, label, slider, attention, maps]
        scored = image.change(on_score, [image, stream, maps], outputs, api_name="score", **model_events)
        scored.success(on_card, [score, label], score_card, api_visibility="private", show_progress="hidden")
        scored.failure(lambda: (None, "", None, None, None, on_card(None, "")), None, [*outputs, score_card],
                       api_visibility="private", show_progress="hidden")
        stream.change(render_maps, [maps, stream], [slider, attention], api_visibility="private",
                      show_progress="hidden")
        files.change(on_compare, [files, show], [gallery, ranking, ranked], api_name="compare", **model_events)
        show.change(render_gallery, [ranked, show], gallery, api_visibility="private", show_progress="hidden")
        run.click(on_batch, batch_files, [table, csv_file, summary], api_name="batch", **model_events)
    return demo


def serve(demo: gr.Blocks, **launch_kwargs):
    """Queue and launch with the app's limits, theme and CSS; returns what launch returns."""
    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=MODEL_CONCURRENCY)
    return demo.launch(max_file_size=MAX_FILE_SIZE, theme=THEME, css=CSS, **launch_kwargs)


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
