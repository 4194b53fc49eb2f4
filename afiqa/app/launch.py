"""Serving the page: the queue and its fair share per client, the request guards in front
of Gradio (``BodyLimit``, then ``guard.Guard``), the theme, and the model loaded once."""

from __future__ import annotations

import os

import gradio as gr

from afiqa.app import guard
from afiqa.app.serving import BodyLimit
from afiqa.app.settings import EXAMPLES_DIR, LIMITS, MB
from afiqa.app.theme import CSS, THEME
from afiqa.predictor import Predictor
from afiqa.runtime.zoo import DEFAULT_MODEL


def body_limit(path: str) -> int:
    """Bytes a request body may have: uploads carry up to a batch's files, anything else
    (JSON; a data URL in it) one file's worth."""
    return LIMITS.max_upload_bytes if path.rstrip("/").endswith("/upload") else LIMITS.max_body_bytes


def policy_for(demo: gr.Blocks) -> guard.Policy:
    """``guard.Guard``'s limits for this page (its endpoints' fn_index known once it is built)."""
    return guard.Policy(refs_for=LIMITS.refs_for, fn_names={i: fn.api_name for i, fn in demo.fns.items()},
                        cache_dir=str(guard.cache_folder()), cache_max_bytes=LIMITS.cache_max_mb * MB,
                        uploads_per_minute=LIMITS.uploads_per_minute, trusted_proxies=LIMITS.trusted_proxies,
                        error_chars=LIMITS.error_chars)


def serve(demo: gr.Blocks, **launch_kwargs):
    """Queue and launch with the app's limits, guards, theme and CSS; returns what launch returns."""
    from starlette.middleware import Middleware

    demo.queue(max_size=LIMITS.queue_size, default_concurrency_limit=LIMITS.model_concurrency)
    guard.fair_queue(demo._queue, LIMITS.per_session, LIMITS.per_client, trusted_proxies=LIMITS.trusted_proxies)
    middleware = [Middleware(BodyLimit, limit_for=body_limit), Middleware(guard.Guard, policy=policy_for(demo))]
    launch_kwargs.setdefault("allowed_paths", [str(EXAMPLES_DIR)])  # the examples the page loads on a click
    return demo.launch(max_file_size=LIMITS.max_file_size, theme=THEME, css=CSS,
                       app_kwargs={"middleware": middleware}, **launch_kwargs)


def load_predictor(model: str | None = None, weights: str | None = None) -> Predictor:
    """The model, once: ``model`` or ``$AFIQA_MODEL`` or the default; scores warm now, the
    Keras model for heat-maps on a thread."""
    predictor = Predictor(model or os.environ.get("AFIQA_MODEL") or DEFAULT_MODEL,
                          weights=weights or os.environ.get("AFIQA_WEIGHTS") or None)
    predictor.warm(heatmaps=True, background=True)
    return predictor
