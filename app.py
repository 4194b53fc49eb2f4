"""The afiqa web app: score a photo's quality, see what raises and lowers the score,
compare versions of a photo, score a batch.

    python app.py [--model NAME|CARD.json] [--weights FILE] [--share]

The model loads once, at start: ``--model``, else ``$AFIQA_MODEL``, else afiqa's default
model; ``--weights`` (or ``$AFIQA_WEIGHTS``) overrides the resolved weights file. Host and
port come from ``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT`` (default 127.0.0.1:7860).
Named API endpoints for ``gradio_client``: ``/score``, ``/compare`` and ``/batch``.
Everything lives in the ``afiqa`` package: ``afiqa.app.page`` lays out the page,
``afiqa.app.views`` shapes results for it, ``afiqa.app.uploads`` and ``afiqa.app.guard``
stand between it and the public, ``afiqa.app.settings`` holds every limit; this file
only starts it. What a public Space is defended against: docs/security.md.

Built to be public: uploads only (no other path is opened), bodies and file references
counted before Gradio parses them, a fair queue per client, image files only in the
upload cache, which is capped and cleaned every few minutes.
"""

from __future__ import annotations

import argparse
import sys

from afiqa.app.launch import load_predictor, serve
from afiqa.app.page import build_demo
from afiqa.errors import AfiqaError
from afiqa.runtime.zoo import DEFAULT_MODEL


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
