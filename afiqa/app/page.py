"""The page: a header and three tabs (Score, Compare, Batch), each laid out and wired to
the functions of ``afiqa.app.views`` in its own function. Named API endpoints:
``/score``, ``/compare`` and ``/batch``; everything else is private to the page.
"""

from __future__ import annotations

import gradio as gr

from afiqa.app.settings import EXAMPLE_NAMES, EXAMPLES_DIR, LIMITS, SHOWS, VIEWS, ZOOMS
from afiqa.app.theme import CSS, THEME
from afiqa.app.uploads import checked_choices, only_uploads, photo_input, write_pictures_atomically
from afiqa.app.views import (BATCH_HEADERS, RANKING_HEADERS, STORE, _captions, _examples, _gone, _result_bytes,
                             ab_choices, batch_scores, compare_images, example_thumbnails, histogram,
                             how_to_read, render_ab, render_card, render_gallery, render_maps, same_upload,
                             score_file, score_image, score_table, stream_choices, zoom_crops)
from afiqa.explain import FUSED
from afiqa.io.csvout import CSV_COLUMNS
from afiqa.io.render import HOW_TO_READ, legend_html
from afiqa.predictor import Predictor

MODEL_EVENTS = dict(concurrency_limit=None, concurrency_id="model")  # the limit is set in build_demo
QUIET = dict(api_visibility="private", show_progress="hidden")

__all__ = ["build_demo", "CSS", "THEME"]


def build_demo(predictor: Predictor) -> gr.Blocks:
    """The whole page for ``predictor``'s model."""
    write_pictures_atomically()
    card = predictor.card
    events = dict(MODEL_EVENTS, concurrency_limit=LIMITS.model_concurrency)
    with gr.Blocks(title="afiqa: image quality", delete_cache=LIMITS.cleanup) as demo:
        gr.Markdown(
            "# afiqa: how good is this photo?\n"
            f"Blind image quality assessment: a score from {card.score_range[0]:g} to {card.score_range[1]:g} "
            f"({'higher' if card.higher_better else 'lower'} is better) and a map of what raises and lowers it. "
            f"Model `{card.name}` ({' + '.join(card.config.backbones)}). Files up to "
            f"{LIMITS.max_file_mb} MB; {LIMITS.max_compare} per comparison, {LIMITS.max_batch} per batch."
        )
        with gr.Tab("Score"):
            score_tab(predictor, events)
        with gr.Tab("Compare"):
            compare_tab(predictor, events)
        with gr.Tab("Batch"):
            batch_tab(predictor, events)
    return demo


def score_tab(predictor: Predictor, events: dict) -> None:
    names = [n for n in EXAMPLE_NAMES if (EXAMPLES_DIR / n).is_file()]
    with gr.Row(equal_height=False):
        with gr.Column(scale=5):
            image = photo_input(label="Photo: drop, paste or click to upload", image_mode=None,
                                sources=["upload", "clipboard"], height=420, elem_id="afiqa-photo")
            examples = gr.Gallery(example_thumbnails(names), label="Examples: click one to score it",
                                  columns=4, height="auto", allow_preview=False, object_fit="cover",
                                  elem_id="afiqa-examples", interactive=False, fit_columns=False)
            gr.Markdown(" · ".join(f"**{k}.** {_captions().get(n, n)}" for k, n in enumerate(names, 1)),
                        elem_classes="afiqa-note")
            gr.Markdown(how_to_read(predictor), elem_classes="afiqa-note")
        with gr.Column(scale=6):
            score_card = gr.HTML(render_card(predictor, None, ""), elem_id="afiqa-card")
            # The API's values; the card above shows them (a Number cannot show "no score").
            score = gr.Number(label="score", precision=2, visible="hidden", elem_id="afiqa-score")
            label = gr.Textbox(label="label", visible="hidden", elem_id="afiqa-label")
            uncertainty = gr.Number(label="uncertainty", precision=2, visible="hidden", elem_id="afiqa-uncertainty")
            problem = gr.Textbox(label="problem", visible="hidden", elem_id="afiqa-problem")
            slider = gr.ImageSlider(label="Photo | heat-map: drag the handle", interactive=False,
                                    max_height=480, elem_id="afiqa-slider")
            legend = gr.HTML(legend_html("signed"), elem_id="afiqa-legend")
            gr.Markdown(HOW_TO_READ, elem_classes="afiqa-note")
            with gr.Row():
                view = checked_choices(gr.Radio(VIEWS, value="signed", label="Heat-map shows"))
                stream = checked_choices(gr.Radio(stream_choices(predictor), value=FUSED, label="Heat-map of"))
            attention = gr.Image(label="Spatial attention", interactive=False, height=360, elem_id="afiqa-attention")
    maps = gr.State()  # the key of this page's result in STORE

    def on_score(image, stream, view, key):
        last = STORE.get(key)
        if image and not predictor.heatmaps_ready() and not same_upload(last, image):
            # The Keras model for heat-maps is still warming (the first seconds after start):
            # the score comes now from the scoring runtime, the maps when they are ready.
            quick = score_file(predictor, image, keep=None)
            if quick.ok:
                yield round(quick.score, 2), quick.label, quick.uncertainty, quick.problem, None, None, key
        *out, result = score_image(predictor, image, stream, view, last)
        if result is not None and result is not last:
            key = STORE.put(result, _result_bytes([result]))
        yield (*out, key)

    def on_maps(key, stream, view):
        result = STORE.get(key)
        if result is None and key:
            _gone()
        return (*render_maps(result, stream, view), legend_html(view))

    def on_card(score, label, uncertainty=None, problem=""):
        return render_card(predictor, score, label, uncertainty, problem)

    outputs = [score, label, uncertainty, problem, slider, attention, maps]
    scored = image.change(on_score, [image, stream, view, maps], outputs, api_name="score", **events)
    score.change(on_card, [score, label, uncertainty, problem], score_card, **QUIET)  # as soon as a score shows
    scored.failure(lambda: (None, "", None, "", None, None, None, on_card(None, "")), None, [*outputs, score_card],
                   **QUIET)
    for control in (stream, view):
        control.change(on_maps, [maps, stream, view], [slider, attention, legend], **QUIET)

    def on_example(evt: gr.SelectData):
        return str(EXAMPLES_DIR / names[evt.index])

    examples.select(on_example, None, image, **QUIET)


def compare_tab(predictor: Predictor, events: dict) -> None:
    gr.Markdown("Upload two or more images, typically versions of one photo (edits, exports, "
                f"compressions; up to {LIMITS.max_compare}). They are ranked best first, with each one's "
                "difference to the best. Put any two on the slider, or zoom all into the same region.")
    with gr.Row(equal_height=False):
        with gr.Column(scale=4):
            files = gr.File(label="Images to compare", file_count="multiple", height=160, elem_id="afiqa-compare-files")
            gr.Examples([[_examples("coffee.jpg", "coffee_blur.jpg", "coffee_noise.jpg", "coffee_jpeg.jpg")],
                         [_examples("astronaut.jpg", "chelsea.jpg", "rocket.jpg")]], inputs=files,
                        cache_examples=False, example_labels=["coffee: original, blurred, noisy, JPEG quality 6",
                                                              "three different photos"])
            show = checked_choices(gr.Radio(SHOWS, value="photo", label="Show"))
        with gr.Column(scale=6):
            note = gr.Markdown(elem_id="afiqa-compare-note")
            ranking = gr.Dataframe(headers=RANKING_HEADERS, datatype=["number", "str", "number", "str", "str", "str"],
                                   label="Ranking", interactive=False, wrap=True, max_height=2000,
                                   column_widths=["8%", "28%", "10%", "12%", "14%", "28%"], elem_id="afiqa-ranking")
    gallery = gr.Gallery(label="Ranked, best first", columns=4, height="auto", object_fit="contain",
                         interactive=False, elem_id="afiqa-compare-gallery")
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            pick_a = gr.Dropdown(label="A (left of the handle)", choices=[], elem_id="afiqa-pick-a")
            pick_b = gr.Dropdown(label="B (right of the handle)", choices=[], elem_id="afiqa-pick-b")
            ab_text = gr.Markdown()
        with gr.Column(scale=7):
            ab = gr.ImageSlider(label="A | B: drag the handle", interactive=False, max_height=560, elem_id="afiqa-ab")
    with gr.Row():
        zoom_x = gr.Slider(0, 100, value=50, step=1, label="Zoom centre: across (%)")
        zoom_y = gr.Slider(0, 100, value=50, step=1, label="Zoom centre: down (%)")
        zoom = checked_choices(gr.Radio(list(ZOOMS), value="4x", label="Zoom"))
    crops = gr.Gallery(label="The same region of every version", columns=4, height="auto", object_fit="contain",
                       interactive=False, elem_id="afiqa-zoom")
    ranked = gr.State()  # the key of this page's ranked results in STORE

    def on_compare(files, show):
        only_uploads(files)
        gallery_items, rows, text, results = compare_images(predictor, files, show)
        return gallery_items, score_table(rows, RANKING_HEADERS), text, STORE.put(results, _result_bytes(results))

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

    compared = files.change(on_compare, [files, show], [gallery, ranking, note, ranked], api_name="compare", **events)
    compared.success(on_compared, [ranked, show], [pick_a, pick_b, ab, ab_text, crops, zoom_x, zoom_y, zoom], **QUIET)
    show.change(on_show, [ranked, show, pick_a, pick_b], [gallery, ab, ab_text], **QUIET)
    for pick in (pick_a, pick_b):
        pick.input(lambda key, a, b, s: render_ab(STORE.get(key), a, b, s), [ranked, pick_a, pick_b, show],
                   [ab, ab_text], **QUIET)
    for control in (zoom_x, zoom_y):
        control.release(lambda key, x, y, z: zoom_crops(STORE.get(key), x, y, z), [ranked, zoom_x, zoom_y, zoom],
                        crops, **QUIET)
    zoom.input(lambda key, x, y, z: zoom_crops(STORE.get(key), x, y, z), [ranked, zoom_x, zoom_y, zoom], crops,
               **QUIET)


def batch_tab(predictor: Predictor, events: dict) -> None:
    gr.Markdown(f"Score up to {LIMITS.max_batch} files at once. Files that cannot be read are listed with "
                "the reason; the others are scored. Sort by a column from the menu on its header. "
                "The CSV has the columns and rounding of `afiqa score --csv`: " + ",".join(CSV_COLUMNS)
                + " (cells that a spreadsheet would run as a formula start with `'`).")
    with gr.Row(equal_height=False):
        with gr.Column(scale=4):
            batch_files = gr.File(label="Image files", file_count="multiple", height=160, elem_id="afiqa-batch-files")
            run = gr.Button("Score all", variant="primary", elem_id="afiqa-batch-run")
            summary = gr.Markdown(label="Summary", elem_id="afiqa-batch-summary")
            hist = gr.Plot(label="Scores", elem_id="afiqa-batch-hist")
            csv_file = gr.File(label="CSV", interactive=False)
        with gr.Column(scale=6):
            table = gr.Dataframe(headers=BATCH_HEADERS, datatype=["str", "number", "str", "str", "number", "str"],
                                 label="Scores", column_widths=["30%", "80px", "90px", "auto", "80px", "110px"], interactive=False, wrap=True,
                                 show_search="search", elem_id="afiqa-batch-table")
    thumbs = gr.Gallery(label="Thumbnails", columns=10, height="auto", object_fit="cover", fit_columns=False,
                        interactive=False, elem_id="afiqa-batch-thumbs")
    batch_key = gr.State()

    def on_batch(files, progress=gr.Progress()):
        only_uploads(files)
        for out in batch_scores(predictor, files, progress):
            if isinstance(out[1], str):  # the CSV: deleted with the cache (delete_cache)
                csv_file.temp_files.add(out[1])
            yield (score_table(out[0], BATCH_HEADERS), *out[1:])

    def on_batched(key):
        kept = STORE.get(key) or {}
        scores = kept.get("scores", [])
        return kept.get("thumbs", []), histogram(predictor, scores) if scores else None

    batched = run.click(on_batch, batch_files, [table, csv_file, summary, batch_key], api_name="batch", **events)
    batched.success(on_batched, batch_key, [thumbs, hist], **QUIET)
