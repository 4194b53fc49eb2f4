"""The web app (app.py): its functions on real images, a live server driven by
gradio_client, and a real browser (headless Chromium driven by Playwright).

The browser test needs Debian's chromium at /usr/bin/chromium: run .ci/install-browser.
Its screenshots are written to test-artifacts/ (gitignored).
"""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402

from imagegen import blur, jpeg_bytes, scene  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import app  # noqa: E402

EXAMPLES = ROOT / "examples"
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    """Real files: a sharp synthetic scene, its heavily blurred copy, and bad files."""
    d = tmp_path_factory.mktemp("app_photos")
    sharp = scene(3, size=(320, 240))
    files = {"sharp": d / "sharp.jpg", "blurred": d / "blurred.jpg", "tiny": d / "tiny.png",
             "truncated": d / "truncated.jpg", "text": d / "notes.txt"}
    files["sharp"].write_bytes(jpeg_bytes(sharp, 95))
    files["blurred"].write_bytes(jpeg_bytes(blur(sharp, 4), 95))
    Image.new("RGB", (20, 20), (200, 20, 20)).save(files["tiny"])
    files["truncated"].write_bytes(jpeg_bytes(sharp)[:300])
    files["text"].write_text("not an image")
    return files


# -- 1. the app's functions, called directly ------------------------------------------
def test_examples_are_small_licensed_jpegs():
    jpgs = sorted(EXAMPLES.glob("*.jpg"))
    assert len(jpgs) >= 5 and (EXAMPLES / "LICENSE.md").is_file()
    licence = (EXAMPLES / "LICENSE.md").read_text()
    for p in jpgs:
        assert p.stat().st_size < 150_000, p
        assert max(Image.open(p).size) <= 640, p
        assert f"`{p.name}`" in licence, f"{p.name} has no source and licence in examples/LICENSE.md"


def test_score_image_gives_score_label_and_maps_for_every_stream(tiny_predictor):
    score, label, slider, attention, result = app.score_image(tiny_predictor, str(EXAMPLES / "coffee.jpg"))
    assert 0 <= score <= 100 and label in tiny_predictor.card.labels
    assert score == round(tiny_predictor.score(EXAMPLES / "coffee.jpg").score, 2)
    photo, heat = slider
    assert photo.shape == heat.shape == attention.shape and photo.dtype == np.uint8
    assert not np.array_equal(photo, heat)  # the overlay differs from the photo
    seen = []
    for _, key in app.stream_choices(tiny_predictor):
        (p, h), a = app.render_maps(result, key)
        assert p is photo and a is not None
        seen.append(h)
    assert len(seen) == 1 + len(tiny_predictor.card.config.backbones)
    assert not np.array_equal(seen[0], seen[1])  # the fused map is not stream 1's
    # the same upload again (Gradio sends a change twice) is not scored twice
    assert app.score_image(tiny_predictor, str(EXAMPLES / "coffee.jpg"), last=result)[4] is result
    assert app.score_image(tiny_predictor, None) == (None, "", None, None, None)


@pytest.mark.parametrize("name, reason", [("tiny", "32 px"), ("truncated", "corrupt or truncated"),
                                          ("text", "not an image")])
def test_score_image_reports_a_bad_file_as_a_message(tiny_predictor, photos, name, reason):
    with pytest.raises(gr.Error) as e:
        app.score_image(tiny_predictor, str(photos[name]))
    assert reason in e.value.message and str(photos[name].parent) not in e.value.message


def test_compare_ranks_best_first_with_the_difference_and_lists_bad_files(tiny_predictor, photos):
    files = [str(photos["blurred"]), str(photos["text"]), str(photos["sharp"]), str(EXAMPLES / "coffee.jpg")]
    gallery, rows, ranked = app.compare_images(tiny_predictor, files)
    assert [r[1] for r in rows][-1] == "notes.txt" and "not an image" in rows[-1][5] and rows[-1][2] is None
    good = rows[:-1]
    assert [r[0] for r in good] == [1, 2, 3] and [r[2] for r in good] == sorted((r[2] for r in good), reverse=True)
    names = [r[1] for r in good]
    assert names.index("sharp.jpg") < names.index("blurred.jpg")
    assert good[0][4] == "best" and all(r[4].startswith("-") and r[4].endswith("vs best") for r in good[1:])
    assert len(gallery) == 3 and gallery[0][1].startswith("#1") and "best" in gallery[0][1]
    photos_only = app.render_gallery(ranked, "photo")
    assert np.array_equal(photos_only[0][0], ranked[0].image)


def test_batch_scores_good_files_lists_bad_ones_and_writes_the_cli_csv(tiny_predictor, photos):
    from afiqa.cli import CSV_COLUMNS

    files = [str(EXAMPLES / "coffee.jpg"), str(photos["truncated"]), str(photos["sharp"]), str(photos["text"])]
    calls = []
    rows, csv_path, summary = app.batch_scores(tiny_predictor, files, lambda f, desc: calls.append(f))
    assert [r[0] for r in rows] == ["coffee.jpg", "truncated.jpg", "sharp.jpg", "notes.txt"]
    assert rows[0][1] is not None and rows[0][2] and rows[0][3] == ""
    assert rows[1][1] is None and "truncated" in rows[1][3] and str(photos["text"].parent) not in rows[1][3]
    assert calls[-1] == 1.0 and len(calls) == 4
    assert "2 of 4" in summary and "2 could not" in summary
    with open(csv_path, newline="", encoding="utf-8") as f:
        table = list(csv.reader(f))
    assert tuple(table[0]) == CSV_COLUMNS and len(table) == 5
    assert float(table[1][1]) == pytest.approx(rows[0][1], abs=0.006) and table[2][1] == ""
    assert app.batch_scores(tiny_predictor, [], None)[0] == []


def test_score_card_and_help_text(tiny_predictor):
    card = app.render_card(tiny_predictor, 73.24, "good")
    assert "73.2" in card and "afiqa-good" in card and "width:73.2%" in card
    assert "Drop" in app.render_card(tiny_predictor, 0, "")
    text = app.how_to_read(tiny_predictor)
    assert all(name in text for name in tiny_predictor.card.labels) and "higher is better" in text


def test_main_refuses_an_unknown_model_without_starting_a_server(capsys):
    assert app.main(["--model", "afiqa-nonexistent"]) == 2
    assert "Unknown model" in capsys.readouterr().err


# -- 2. a live server on loopback, driven by gradio_client ------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_predictor):
    demo = app.build_demo(tiny_predictor)
    port = _free_port()
    app.serve(demo, prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    demo.close()


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client

    return Client(server, verbose=False)


def test_api_score_matches_the_cli(client, tiny_card_path, tmp_path):
    from gradio_client import handle_file

    photo = EXAMPLES / "coffee.jpg"
    score, label, slider, attention = client.predict(handle_file(str(photo)), api_name="/score")
    out = tmp_path / "cli.csv"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-m", "afiqa", "score", str(photo), "--model", str(tiny_card_path),
                        "--csv", str(out), "--quiet"], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    row = next(csv.DictReader(out.open(encoding="utf-8")))
    # the app shows 2 decimals, the CSV keeps 3: the same score within both roundings (not
    # round(csv, 2), which rounds twice: 35.2148 -> 35.21 in the app, 35.215 -> 35.22)
    assert abs(score - float(row["score"])) <= 0.005 + 0.0005 + 1e-9 and label == row["label"]
    assert len(slider) == 2 and all(Path(f).is_file() for f in slider) and Path(attention).is_file()
    streamed = client.predict(handle_file(str(photo)), "stream_1", api_name="/score")
    assert streamed[0] == score


def test_api_score_reports_a_bad_image(client, photos):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="32 px"):
        client.predict(handle_file(str(photos["tiny"])), api_name="/score")


def test_api_compare_ranks_a_photo_above_its_blurred_copy(client, photos):
    from gradio_client import handle_file

    gallery, table = client.predict([handle_file(str(photos["blurred"])), handle_file(str(photos["sharp"]))],
                                    api_name="/compare")
    assert table["headers"][:4] == ["rank", "file", "score", "label"]
    (r1, f1, s1, _, vs1, _), (r2, f2, s2, _, vs2, _) = table["data"]
    assert (r1, f1, r2, f2) == (1, "sharp.jpg", 2, "blurred.jpg") and s1 > s2
    assert vs1 == "best" and vs2 == f"{s2 - s1:+.1f} vs best"
    assert len(gallery) == 2 and gallery[0]["caption"].startswith("#1") and Path(gallery[0]["image"]).is_file()


def test_api_batch_returns_table_and_csv(client, photos):
    from gradio_client import handle_file

    table, csv_path, summary = client.predict(
        [handle_file(str(photos["sharp"])), handle_file(str(photos["truncated"]))], api_name="/batch")
    assert [r[0] for r in table["data"]] == ["sharp.jpg", "truncated.jpg"] and table["data"][1][3]
    assert Path(csv_path).read_text(encoding="utf-8").splitlines()[0] == "path,score,label,error"
    assert "1 of 2" in summary


def test_uploads_over_the_size_limit_are_refused(server, tmp_path):
    import httpx

    limit = int(app.MAX_FILE_SIZE.removesuffix("mb")) * 1024 * 1024
    r = httpx.post(f"{server}gradio_api/upload", files={"files": ("big.jpg", b"\xff\xd8" + bytes(limit), "image/jpeg")})
    assert r.status_code == 413 and "maximum allowed size" in r.text


# -- 3. a real browser --------------------------------------------------------------------
@pytest.mark.browser
def test_browser_upload_shows_the_score(server, tiny_predictor):
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run .ci/install-browser (installs Debian's chromium)")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    photo = EXAMPLES / "coffee.jpg"
    expected = tiny_predictor.score(photo)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 900})
            page.goto(server, wait_until="load")
            page.locator("#afiqa-photo input[type=file]").set_input_files(str(photo))
            page.locator("#afiqa-card .afiqa-label").wait_for(timeout=60_000)
            shown = page.locator("#afiqa-card .afiqa-big").inner_text()
            assert shown.split("/")[0].strip() == f"{expected.score:.1f}"
            assert page.locator("#afiqa-card .afiqa-label").inner_text().lower() == expected.label
            page.wait_for_timeout(500)  # let the heat-map images paint
            page.screenshot(path=str(ARTIFACTS / "app-score.png"), full_page=True)

            page.get_by_role("tab", name="Compare").click()
            page.locator("#afiqa-compare-files input[type=file]").set_input_files(
                [str(EXAMPLES / n) for n in ("coffee.jpg", "coffee_blur.jpg", "coffee_noise.jpg", "coffee_jpeg.jpg")])
            page.get_by_text("vs best").first.wait_for(timeout=60_000)
            page.wait_for_timeout(500)
            page.screenshot(path=str(ARTIFACTS / "app-compare.png"), full_page=True)
        finally:
            browser.close()
