"""The app's inputs: an image component that hands an upload to afiqa undecoded and opens
only files uploaded to this server (or the shipped examples), whatever the payload's shape;
a data URL written to the cache within the size limit; Gradio's picture cache written
atomically. Refusals are one sentence that says nothing about the path, and one log line.
"""

from __future__ import annotations

import base64
import binascii
import os
import tempfile
import uuid
from pathlib import Path

import gradio as gr
from gradio import processing_utils

from afiqa.app import guard
from afiqa.app.settings import EXAMPLES_DIR, LIMITS, MB

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
        if not uploaded(payload.path, image.GRADIO_CACHE):
            refused(str(payload.path), "not an upload")
            raise gr.Error(NOT_UPLOADED, print_exception=False)
        return str(payload.path)

    image.preprocess = preprocess
    return image


NOT_UPLOADED = "This file was not uploaded to this server; upload the image and try again."


def uploaded(path, cache_dir: str | None = None) -> bool:
    """Whether ``path`` (symbolic links followed) is inside Gradio's upload cache or the
    shipped examples: the only files the app opens."""
    real = os.path.realpath(str(path))
    roots = [EXAMPLES_DIR, cache_dir or guard.cache_folder()]
    return any(real.startswith(os.path.realpath(str(r)) + os.sep) for r in roots)


def only_uploads(files) -> None:
    """Refuse a request naming any file that is not an upload (Gradio's ``File`` checks it
    too; this holds whatever shape the payload had)."""
    for f in files or []:
        if not uploaded(f):
            refused(str(f), "not an upload")
            raise gr.Error(NOT_UPLOADED, print_exception=False)


def refused(name: str, reason: str) -> None:
    """One log line per refused image (Gradio's traceback is held back)."""
    guard.log.warning("afiqa app: refused %s: %s", Path(name).name[:80], reason[:200])


def _data_url_to_file(url: str, cache_dir: str, registry: set) -> str:
    """A base64 data URL written to a file in the cache (deleted with it), within the size limit."""
    head, _, data = url.partition(",")
    if not head.endswith(";base64"):
        raise gr.Error("An image sent as a data URL must be base64-encoded.")
    if len(data) // 4 * 3 > LIMITS.max_file_bytes:
        raise gr.Error(f"The image is over the {LIMITS.max_file_bytes // MB} MB limit.")
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


def write_pictures_atomically() -> None:
    """gr.Image / gr.ImageSlider outputs go through ``save_pil_to_cache``: ours from now on."""
    processing_utils.save_pil_to_cache = _save_pil_to_cache


def checked_choices(component):
    """A ``gr.Radio`` / ``gr.Dropdown`` whose refusal of a value it does not offer is one
    short sentence (Gradio's own repeats the value, however long, and every choice)."""
    check = component.preprocess

    def preprocess(payload):
        try:
            return check(payload)
        except gr.Error:
            refused(repr(payload)[:40], f"not a choice of {component.label!r}")
            raise gr.Error(f"Not one of the choices for {component.label!r}.", print_exception=False) from None

    component.preprocess = preprocess
    return component
