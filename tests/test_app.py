"""The web app (app.py): its functions on real images, a live server driven by
gradio_client, and a real browser (headless Chromium driven by Playwright).

The browser test needs Debian's chromium at /usr/bin/chromium: run .ci/install-browser.
Its screenshots (one per tab) are written to $AFIQA_TEST_ARTIFACTS, else test-artifacts/
(gitignored).

The hardening tests (a public Space gets anything) run against a live server on loopback,
each bounded in time and in requests: request-body limits (a data URL included), files
left out past the limits and said so, afiqa's sentence for every bad upload, a batch that
stops when its client leaves, the CSV download neutralised and deleted with the cache,
and memory that does not grow with the photo's size or with the number of pages.
"""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402

from afiqa.errors import ImageError  # noqa: E402
from afiqa.io.csvout import format_score  # noqa: E402
from afiqa.model.sideheads import FAMILIES  # noqa: E402
from imagegen import blur, jpeg_bytes, scene  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import app  # noqa: E402
from afiqa.app import launch, page, views  # noqa: E402
from afiqa.app.settings import LIMITS  # noqa: E402

EXAMPLES = ROOT / "examples"
ARTIFACTS = Path(os.environ.get("AFIQA_TEST_ARTIFACTS") or ROOT / "test-artifacts")
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
    score, label, uncertainty, problem, slider, attention, result = views.score_image(
        tiny_predictor, str(EXAMPLES / "coffee.jpg"))
    assert 0 <= score <= 100 and label in tiny_predictor.card.labels
    plain = tiny_predictor.score(EXAMPLES / "coffee.jpg")
    assert score == round(plain.score, 2)
    assert uncertainty == pytest.approx(plain.uncertainty, abs=0.05) and problem == plain.problem  # Keras = the runtime
    photo, heat = slider
    assert photo.shape == heat.shape == attention.shape and photo.dtype == np.uint8
    assert not np.array_equal(photo, heat)  # the overlay differs from the photo
    seen = []
    for _, key in views.stream_choices(tiny_predictor):
        (p, h), a = views.render_maps(result, key)
        assert p is photo and a is not None
        seen.append(h)
    assert len(seen) == 1 + len(tiny_predictor.card.config.backbones)
    assert not np.array_equal(seen[0], seen[1])  # the fused map is not stream 1's
    (_, magnitude), _ = views.render_maps(result, "fused", "magnitude")
    assert not np.array_equal(magnitude, seen[0])  # the magnitude view is another picture
    # the page keeps maps at the model's resolution, never the photo's
    assert all(m.shape[0] <= tiny_predictor.size // 16 for m in (*result.heatmaps.values(), *result.attention.values()))
    # the same upload again (Gradio sends a change twice) is not scored twice
    assert views.score_image(tiny_predictor, str(EXAMPLES / "coffee.jpg"), last=result)[6] is result
    assert views.score_image(tiny_predictor, None) == (None, "", None, "", None, None, None)


@pytest.mark.parametrize("name, reason", [("tiny", "32 px"), ("truncated", "corrupt or truncated"),
                                          ("text", "not an image")])
def test_score_image_reports_a_bad_file_as_a_message(tiny_predictor, photos, name, reason):
    with pytest.raises(gr.Error) as e:
        views.score_image(tiny_predictor, str(photos[name]))
    assert reason in e.value.message and str(photos[name].parent) not in e.value.message


def test_compare_ranks_best_first_with_the_difference_and_lists_bad_files(tiny_predictor, photos):
    files = [str(photos["blurred"]), str(photos["text"]), str(photos["sharp"]), str(EXAMPLES / "coffee.jpg")]
    gallery, rows, note, ranked = views.compare_images(tiny_predictor, files)
    assert note == ""
    assert [r[1] for r in rows][-1] == "notes.txt" and "not an image" in rows[-1][5] and rows[-1][2] is None
    good = rows[:-1]
    assert [r[0] for r in good] == [1, 2, 3] and [r[2] for r in good] == sorted((r[2] for r in good), reverse=True)
    names = [r[1] for r in good]
    assert names.index("sharp.jpg") < names.index("blurred.jpg")
    assert good[0][4] == "best" and all(r[4].startswith("-") and r[4].endswith("vs best") for r in good[1:])
    assert len(gallery) == 3 and gallery[0][1].startswith("#1 ") and "best" in gallery[0][1]
    assert np.array_equal(gallery[0][0], ranked[0].image)  # photos by default
    assert "sharp.jpg" in gallery[names.index("sharp.jpg")][1]  # captions name the file
    heat = views.render_gallery(ranked, "signed")
    assert not np.array_equal(heat[0][0], ranked[0].image)
    # A/B: any two versions on one slider, with the difference; the same region of each, enlarged
    choices = views.ab_choices(ranked)
    assert [v for _, v in choices] == [0, 1, 2]
    (a, b), text = views.render_ab(ranked, 2, 0)
    assert a.shape == b.shape and np.array_equal(a, ranked[2].image)
    assert f"B - A = {ranked[0].score - ranked[2].score:+.2f}" in text
    crops = views.zoom_crops(ranked, 25, 75, "4x")
    assert len(crops) == 3 and all(c.shape == (LIMITS.zoom_tile, LIMITS.zoom_tile, 3) for c, _ in crops)
    assert not np.array_equal(crops[0][0], views.zoom_crops(ranked, 75, 25, "4x")[0][0])


def test_batch_scores_good_files_lists_bad_ones_and_writes_the_cli_csv(tiny_predictor, photos):
    from afiqa.io.csvout import CSV_COLUMNS

    files = [str(EXAMPLES / "coffee.jpg"), str(photos["truncated"]), str(photos["sharp"]), str(photos["text"])]
    calls = []
    steps = list(views.batch_scores(tiny_predictor, files, lambda f, desc: calls.append(f)))
    assert len(steps) == 4 and [len(s[0]) for s in steps] == [1, 2, 3, 4]  # a yield per file: it can stop
    rows, csv_path, summary, key = steps[-1]
    assert [r[0] for r in rows] == ["coffee.jpg", "truncated.jpg", "sharp.jpg", "notes.txt"]
    assert rows[0][1] is not None and rows[0][2] and rows[0][3] == ""
    assert rows[1][1] is None and "truncated" in rows[1][3] and str(photos["text"].parent) not in rows[1][3]
    assert rows[0][4] > 0 and rows[0][5] in (*FAMILIES, "none") and rows[1][4] is None  # ± error, problem
    assert calls[-1] == 1.0 and len(calls) == 4
    assert "2 of 4" in summary and "2 could not" in summary
    good = [r[1] for r in rows if r[1] is not None]
    assert f"median {np.median(good):.2f}" in summary and f"best {max(good):.2f}" in summary
    with open(csv_path, newline="", encoding="utf-8") as f:
        table = list(csv.reader(f))
    assert tuple(table[0]) == CSV_COLUMNS and len(table) == 5
    # the CLI's format, which every view of a score shares: 2 decimals, trailing zeros kept
    assert table[1][1] == f"{tiny_predictor.score(EXAMPLES / 'coffee.jpg').score:.2f}" and table[2][1] == ""
    kept = views.STORE.get(key)
    assert len(kept["thumbs"]) == 2 and max(kept["thumbs"][0][0].shape[:2]) <= LIMITS.thumb_side
    fig = views.histogram(tiny_predictor, kept["scores"])
    assert sum(p.get_height() for p in fig.axes[0].patches) == 2  # one bar count per scored file
    assert list(views.batch_scores(tiny_predictor, [], None))[-1][0] == []


def test_score_card_and_help_text(tiny_predictor):
    card = views.render_card(tiny_predictor, 73.24, "good")
    assert "73.2" in card and "afiqa-good" in card and "width:73.2%" in card
    assert "Drop" in views.render_card(tiny_predictor, 0, "")
    card = views.render_card(tiny_predictor, 52.0, "fair", 6.6, "blur")
    assert "52.00" in card and "± 7" in card and "— mostly blur" in card
    assert "no clear problem" in views.render_card(tiny_predictor, 80.0, "good", 3.0, "none")
    text = views.how_to_read(tiny_predictor)
    assert all(name in text for name in tiny_predictor.card.labels) and "higher is better" in text


def test_main_refuses_an_unknown_model_without_starting_a_server(capsys):
    assert app.main(["--model", "afiqa-nonexistent"]) == 2
    assert "Unknown model" in capsys.readouterr().err


# -- 2. a live server on loopback, driven by gradio_client ------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(predictor) -> tuple[gr.Blocks, str]:
    demo = page.build_demo(predictor)
    port = _free_port()
    launch.serve(demo, prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True)
    return demo, f"http://127.0.0.1:{port}/"


@pytest.fixture(scope="module")
def live(tiny_predictor):
    demo, url = _start(tiny_predictor)
    yield demo, url
    demo.close()


@pytest.fixture(scope="module")
def server(live):
    return live[1]


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client

    return Client(server, verbose=False)


def test_api_score_matches_the_cli(client, tiny_card_path, tmp_path):
    from gradio_client import handle_file

    photo = EXAMPLES / "coffee.jpg"
    score, label, uncertainty, problem, slider, attention = client.predict(handle_file(str(photo)), api_name="/score")
    out = tmp_path / "cli.csv"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-m", "afiqa", "score", str(photo), "--model", str(tiny_card_path),
                        "--csv", str(out), "--quiet"], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    row = next(csv.DictReader(out.open(encoding="utf-8")))
    # the app and the CSV show a score the same way: 2 decimals
    assert format_score(score) == row["score"] and label == row["label"]
    # the side heads: the score's likely error and what lowers it, as in the CSV
    assert format_score(uncertainty) == row["uncertainty"] and float(row["uncertainty"]) > 0
    assert problem == row["problem"] and problem in (*FAMILIES, "none")
    assert len(slider) == 2 and all(Path(f).is_file() for f in slider) and Path(attention).is_file()
    streamed = client.predict(handle_file(str(photo)), "stream_1", api_name="/score")
    assert streamed[0] == score


def test_a_cold_heatmap_model_does_not_hold_back_the_first_score(tiny_litert_card_path):
    """Issue 14: the app serves its page while the Keras model for heat-maps still warms;
    a /score meanwhile shows the LiteRT score first, then the maps."""
    from gradio_client import Client, handle_file

    from afiqa import Predictor

    cold = Predictor(tiny_litert_card_path)
    assert cold.runtime.name == "litert" and not cold.heatmaps_ready()
    demo, url = _start(cold)
    try:
        job = Client(url, verbose=False).submit(handle_file(str(EXAMPLES / "coffee.jpg")), api_name="/score")
        final = job.result(timeout=300)
        first, *_ = job.outputs()
    finally:
        demo.close()
    # (score, label, uncertainty, problem, slider, attention): the score alone, then with its maps
    assert first[4] is None and first[1] and final[4], (first, final)
    assert first[2] > 0 and first[3]  # the LiteRT export gives the side heads their features too
    assert abs(first[0] - final[0]) <= 0.5  # LiteRT, then Keras with the maps: within the export's tolerance
    assert len(final[4]) == 2 and Path(final[5]).is_file()
    assert cold.heatmaps_ready()


def test_api_score_reports_a_bad_image(client, photos):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="32 px"):
        client.predict(handle_file(str(photos["tiny"])), api_name="/score")


def test_api_compare_ranks_a_photo_above_its_blurred_copy(client, photos):
    from gradio_client import handle_file

    gallery, table, note = client.predict([handle_file(str(photos["blurred"])), handle_file(str(photos["sharp"]))],
                                          api_name="/compare")
    assert note == ""
    assert table["headers"][:4] == ["rank", "file", "score", "label"]
    (r1, f1, s1, _, vs1, _), (r2, f2, s2, _, vs2, _) = table["data"]
    assert (r1, f1, r2, f2) == (1, "sharp.jpg", 2, "blurred.jpg") and s1 > s2
    assert vs1 == "best" and vs2 == f"{s2 - s1:+.2f} vs best"
    assert len(gallery) == 2 and gallery[0]["caption"].startswith("#1") and Path(gallery[0]["image"]).is_file()


def test_api_batch_returns_table_and_csv(client, photos):
    from gradio_client import handle_file

    table, csv_path, summary = client.predict(
        [handle_file(str(photos["sharp"])), handle_file(str(photos["truncated"]))], api_name="/batch")
    assert [r[0] for r in table["data"]] == ["sharp.jpg", "truncated.jpg"] and table["data"][1][3]
    assert Path(csv_path).read_text(encoding="utf-8").splitlines()[0] == "path,score,label,error,uncertainty,problem"
    assert "1 of 2" in summary


def test_uploads_over_the_size_limit_are_refused(server, tmp_path):
    import httpx

    limit = int(LIMITS.max_file_size.removesuffix("mb")) * 1024 * 1024
    r = httpx.post(f"{server}gradio_api/upload", files={"files": ("big.jpg", b"\xff\xd8" + bytes(limit), "image/jpeg")})
    assert r.status_code == 413 and "maximum allowed size" in r.text


# -- 2b. hardening: what a public Space gets ------------------------------------------------
def _png_header_only(path: Path, w: int, h: int) -> None:
    """A PNG whose header says w x h (a decompression bomb's header), with almost no data."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def _webp_claiming_a_huge_canvas(path: Path) -> None:
    """A real small lossless WebP behind a VP8X header that claims a 16384 x 16384 canvas."""
    import io
    import struct

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 120, 200)).save(buf, "WEBP", lossless=True)
    image_chunk = buf.getvalue()[12:]  # after RIFF....WEBP
    side = (16384 - 1).to_bytes(3, "little")
    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\0\0\0\0" + side + side
    body = b"WEBP" + vp8x + image_chunk
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("hostile")
    files = {"text": d / "text.jpg", "huge": d / "huge.png", "webp": d / "crafted.webp"}
    files["text"].write_text("hello, not a JPEG\n" * 40)
    _png_header_only(files["huge"], 20000, 20000)  # 400 megapixels
    _webp_claiming_a_huge_canvas(files["webp"])
    return files


def test_an_upload_that_is_no_image_is_refused_at_once_with_a_sentence(client, hostile):
    import httpx
    from gradio_client import handle_file

    with pytest.raises(httpx.HTTPStatusError) as got:  # refused at /upload: Gradio never keeps it
        client.predict(handle_file(str(hostile["text"])), api_name="/score")
    assert got.value.response.status_code == 415
    assert "Only image files can be uploaded" in got.value.response.json()["detail"]


@pytest.mark.parametrize("name", ["huge", "webp"])
def test_every_bad_upload_gets_afiqas_sentence_through_the_api(client, hostile, tiny_predictor, name):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    path = hostile[name]
    with pytest.raises(ImageError) as expected:
        tiny_predictor.score(path)
    sentence = str(expected.value).replace(str(path), path.name)  # the API names the file, not the folder
    with pytest.raises(AppError) as got:
        client.predict(handle_file(str(path)), api_name="/score")
    assert sentence in str(got.value)
    _, table, _ = client.predict([handle_file(str(path))], api_name="/compare")
    assert table["data"][0][5] == sentence


def _raw_post(url: str, path: str, headers: dict, body_chunks) -> int | None:
    """POST over a plain socket; the status line the server answers with (None: none)."""
    from urllib.parse import urlsplit

    u = urlsplit(url)
    with socket.create_connection((u.hostname, u.port), timeout=30) as s:
        head = f"POST {path} HTTP/1.1\r\nHost: {u.hostname}:{u.port}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        try:
            s.sendall(head.encode())
            for piece in body_chunks:
                s.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before the whole body was sent: read its answer
        try:
            first = s.recv(4096).split(b"\r\n", 1)[0].decode()
        except ConnectionResetError:
            return None
    return int(first.split()[1]) if first.startswith("HTTP/") else None


def test_request_bodies_over_the_limit_are_refused_data_urls_included(server):
    import base64
    import json

    # a data URL of a 26 MB "JPEG" in the JSON of /call/score: refused from Content-Length
    data_url = "data:image/jpeg;base64," + base64.b64encode(b"\xff\xd8\xff\xe0" + bytes(26 * 2**20)).decode()
    body = json.dumps({"data": [{"url": data_url}, "fused", "signed"]}).encode()
    assert len(body) > LIMITS.max_body_bytes
    assert _raw_post(server, "/gradio_api/call/score", {"Content-Type": "application/json",
                                                        "Content-Length": len(body)}, [body]) == 413
    # 120 MB announced: refused before a byte of it is read
    assert _raw_post(server, "/gradio_api/call/score", {"Content-Type": "application/json",
                                                        "Content-Length": 120 * 2**20}, []) == 413
    # no Content-Length (chunked): counted as it arrives, refused past the limit
    def chunked():
        piece = b"x" * 2**20
        for _ in range(LIMITS.max_body_bytes // len(piece) + 4):
            yield f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
        yield b"0\r\n\r\n"
    assert _raw_post(server, "/gradio_api/queue/join", {"Content-Type": "application/json",
                                                        "Transfer-Encoding": "chunked"}, chunked()) == 413
    assert launch.body_limit("/gradio_api/upload") == LIMITS.max_upload_bytes


def _call(server: str, api: str, data: list, timeout: float = 60.0) -> tuple[str, str]:
    """/call/<api> as a plain HTTP client: (the SSE event, its data)."""
    import httpx

    r = httpx.post(f"{server}gradio_api/call/{api}", json={"data": data}, timeout=timeout)
    r.raise_for_status()
    event = ""
    with httpx.stream("GET", f"{server}gradio_api/call/{api}/{r.json()['event_id']}", timeout=timeout) as s:
        for line in s.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event in ("complete", "error"):
                return event, line[6:]
    return event, ""


def test_a_data_url_is_decoded_by_afiqa_with_its_checks(server, hostile):
    import base64
    import time

    small = base64.b64encode((EXAMPLES / "coffee.jpg").read_bytes()).decode()
    event, data = _call(server, "score", [{"url": "data:image/jpeg;base64," + small}, "fused", "signed"])
    assert event == "complete" and 0 <= float(data.strip("[]").split(",")[0]) <= 100
    bomb = base64.b64encode(hostile["huge"].read_bytes()).decode()  # a few hundred bytes, 400 megapixels
    t = time.perf_counter()
    event, data = _call(server, "score", [{"url": "data:image/png;base64," + bomb}, "fused", "signed"])
    assert event == "error" and "400 megapixels" in data and time.perf_counter() - t < 20


def test_files_past_the_limits_are_left_out_and_the_answer_says_so(client, photos, monkeypatch):
    from gradio_client import handle_file

    monkeypatch.setattr(LIMITS, "max_compare", 2)
    monkeypatch.setattr(LIMITS, "max_batch", 2)
    three = [handle_file(str(photos[k])) for k in ("sharp", "blurred", "sharp")]
    _, table, note = client.predict(three, api_name="/compare")
    assert len(table["data"]) == 2 and "first 2 of 3" in note and "1 left out" in note
    table, _, summary = client.predict(three, api_name="/batch")
    assert len(table["data"]) == 2 and "first 2 of 3" in summary and "1 left out" in summary


def test_batch_csv_neutralises_formulas_and_is_deleted_with_the_cache(live, client, photos, tmp_path):
    from gradio.route_utils import delete_files_created_by_app
    from gradio_client import handle_file

    demo, _ = live
    names = ["=HYPERLINK(x).jpg", "@SUM(1).jpg", "+1.jpg", "-2.jpg"]
    for n in names:
        (tmp_path / n).write_bytes(photos["sharp"].read_bytes())
    before = set(Path(tempfile.gettempdir()).glob("afiqa-*"))
    table, csv_path, _ = client.predict([handle_file(str(tmp_path / n)) for n in names], api_name="/batch")
    rows = list(csv.reader(open(csv_path, newline="", encoding="utf-8")))[1:]
    assert len(rows) == 4 and all(r[1] for r in rows)
    assert not any(cell.startswith(("=", "+", "-", "@")) for r in rows for cell in r)
    assert set(Path(tempfile.gettempdir()).glob("afiqa-*")) == before  # nothing left in /tmp/afiqa-*
    served = [f for s in demo.temp_file_sets for f in s if f.endswith("afiqa-scores.csv")]
    assert served and all(f.startswith(gr.utils.get_upload_folder()) for f in served)
    assert demo.delete_cache == LIMITS.cleanup
    delete_files_created_by_app(demo, 0)  # what the schedule does an hour later
    assert not any(Path(f).exists() for f in served)


class _SlowPredictor:
    """The tiny model, 0.25 s slower per photo, counting the photos it scores."""

    def __init__(self, predictor):
        self._p, self.card, self.size, self.scored = predictor, predictor.card, predictor.size, 0

    def heatmaps_ready(self):
        return self._p.heatmaps_ready()

    def iter_scores(self, images, heatmaps=False):
        import time

        for r in self._p.iter_scores(images, heatmaps=heatmaps):
            time.sleep(0.25)
            self.scored += 1
            yield r


def test_an_abandoned_batch_stops_and_the_next_user_is_served(tiny_predictor, photos):
    import json
    import time
    import uuid

    import httpx
    from gradio_client import Client, handle_file

    slow = _SlowPredictor(tiny_predictor)
    demo, url = _start(slow)
    try:
        with open(photos["sharp"], "rb") as fh:
            data = fh.read()
        up = httpx.post(f"{url}gradio_api/upload", files=[("files", (f"p{k}.jpg", data, "image/jpeg"))
                                                           for k in range(40)], timeout=60)
        files = [{"path": p, "orig_name": Path(p).name, "meta": {"_type": "gradio.FileData"}} for p in up.json()]
        fn = next(i for i, f in demo.fns.items() if f.api_name == "batch")
        session = uuid.uuid4().hex
        join = httpx.post(f"{url}gradio_api/queue/join", json={"data": [files], "fn_index": fn,
                                                               "session_hash": session}, timeout=30)
        assert join.status_code == 200, join.text
        seen = []
        with httpx.stream("GET", f"{url}gradio_api/queue/data", params={"session_hash": session},
                          timeout=60) as stream:  # the page, until it has seen 3 files scored
            for line in stream.iter_lines():
                if line.startswith("data: "):
                    msg = json.loads(line[6:])
                    seen.append(msg.get("msg"))
                    if msg.get("msg") == "process_generating" and slow.scored >= 3:
                        break
        left_at = slow.scored  # the client is gone
        time.sleep(3)
        assert slow.scored <= left_at + 2, f"scored {slow.scored - left_at} more after the client left"
        t = time.perf_counter()  # another user's request is not stuck behind the abandoned batch
        score = Client(url, verbose=False).predict(handle_file(str(photos["sharp"])), api_name="/score")[0]
        assert 0 <= score <= 100 and time.perf_counter() - t < 120  # 53 s seen at load average 15 on 2 cores
        time.sleep(1)
        assert slow.scored < 40 - 10
    finally:
        demo.close()


def test_memory_per_request_does_not_grow_with_the_photo(tiny_predictor, tmp_path):
    """12 references to one large PNG: the results keep display-size pictures and model-size
    maps, and the request's numpy peak is one decoded photo, not twelve photo-size maps."""
    import tracemalloc

    big = tmp_path / "big.png"
    rgb = np.asarray(Image.fromarray(scene(7, size=(400, 300))).resize((4000, 3000)))
    Image.fromarray(rgb).save(big, compress_level=1)
    del rgb
    tracemalloc.start()
    try:
        _, rows, _, ranked = views.compare_images(tiny_predictor, [str(big)] * 12)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(rows) == 12 and all(r[2] is not None for r in rows)
    photo_bytes = 4000 * 3000 * 3
    assert peak < 3 * photo_bytes, f"{peak / 2**20:.0f} MB numpy peak for a {photo_bytes / 2**20:.0f} MB photo"
    for r in ranked:
        assert max(r.image.shape[:2]) == views.DISPLAY_SIDE
        assert all(max(m.shape) <= tiny_predictor.size // 16 for m in (*r.heatmaps.values(), *r.attention.values()))
    assert views._result_bytes(ranked) < 12 * (views.DISPLAY_SIDE ** 2 * 3 + 2**16)


def test_pages_share_one_store_capped_in_bytes(tiny_predictor, monkeypatch):
    from afiqa.app.serving import ResultStore

    r = views.score_file(tiny_predictor, str(EXAMPLES / "coffee.jpg"), heatmaps=True)
    size = views._result_bytes([r])
    store = ResultStore(5 * size)
    monkeypatch.setattr(views, "STORE", store)
    monkeypatch.setattr(page, "STORE", store)
    keys = [store.put(r, size) for _ in range(30)]  # 30 pages
    assert store.nbytes <= 5 * size and len(store) == 5
    assert store.get(keys[0]) is None and store.get(keys[-1]) is r
    maps_of_a_gone_page = views.render_maps(store.get(keys[0]))
    assert maps_of_a_gone_page == (None, None)


# -- 3. a real browser --------------------------------------------------------------------
@pytest.mark.browser
def test_browser_each_tab_shows_its_new_parts(server, tiny_predictor, photos, hostile):
    """Score (card, heat-map slider with its legend, a bad upload's sentence), Compare (every
    version visible, the A/B slider, the zoom), Batch (sorting by score, the summary, the
    histogram, the thumbnails); a screenshot of each tab in ARTIFACTS."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run .ci/install-browser (installs Debian's chromium)")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    photo = EXAMPLES / "coffee.jpg"
    expected = tiny_predictor.score(photo)
    coffees = [str(EXAMPLES / n) for n in ("coffee.jpg", "coffee_blur.jpg", "coffee_noise.jpg", "coffee_jpeg.jpg")]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 900})
            page.goto(server, wait_until="load")
            # -- Score: the card, the slider and the legend; then a bad file's sentence
            page.locator("#afiqa-photo input[type=file]").set_input_files(str(photo))
            page.locator("#afiqa-card .afiqa-label").wait_for(timeout=120_000)
            shown = page.locator("#afiqa-card .afiqa-big").inner_text()
            score_text, _, plus_minus = shown.split("/")[0].partition("±")
            assert score_text.strip() == format_score(expected.score)
            assert plus_minus.strip() == f"{expected.uncertainty:.0f}"  # "62.13 ± 7": the side heads' uncertainty
            assert page.locator("#afiqa-card .afiqa-label").inner_text().lower() == expected.label
            said = page.locator("#afiqa-card .afiqa-problem").inner_text()
            assert said == (f"— mostly {expected.problem}" if expected.problem != "none" else "— no clear problem")
            legend = page.locator("#afiqa-legend").inner_text()
            assert "lowers quality" in legend and "raises quality" in legend
            page.locator("#afiqa-slider img").first.wait_for(timeout=30_000)
            page.wait_for_timeout(800)  # let the heat-map images paint
            page.screenshot(path=str(ARTIFACTS / "app-score.png"), full_page=True)
            page.get_by_label("how much each region weighs").check()
            page.get_by_text("strong effect").wait_for(timeout=30_000)  # the legend follows the view
            page.locator("#afiqa-photo input[type=file]").set_input_files(str(hostile["text"]))
            page.get_by_text("Only image files can be uploaded").first.wait_for(timeout=60_000)
            page.screenshot(path=str(ARTIFACTS / "app-score-bad-file.png"), full_page=False)

            # -- Compare: photos by default, every version visible, A/B slider, zoom
            page.get_by_role("tab", name="Compare").click()
            page.locator("#afiqa-compare-files input[type=file]").set_input_files(coffees)
            page.get_by_text("vs best").first.wait_for(timeout=120_000)
            page.locator("#afiqa-ab img").nth(1).wait_for(timeout=60_000)
            page.locator("#afiqa-zoom img").nth(3).wait_for(timeout=60_000)
            gallery = page.locator("#afiqa-compare-gallery")
            assert gallery.locator("img").count() >= 4
            inner_scroll = gallery.evaluate("el => [...el.querySelectorAll('*')].some("
                                            "e => e.scrollHeight > e.clientHeight + 4 && "
                                            "['auto', 'scroll'].includes(getComputedStyle(e).overflowY))")
            assert not inner_scroll, "the compare gallery scrolls inside a box"
            captions = gallery.inner_text()
            assert all(Path(f).name in captions for f in coffees)
            page.wait_for_timeout(800)
            page.screenshot(path=str(ARTIFACTS / "app-compare.png"), full_page=True)

            # -- Batch: the table sorts by score, the summary, the histogram, the thumbnails
            page.get_by_role("tab", name="Batch").click()
            page.locator("#afiqa-batch-files input[type=file]").set_input_files(
                coffees + [str(photos["truncated"])])
            page.locator("#afiqa-batch-run").click()
            page.get_by_text("Scored 4 of 5 files").wait_for(timeout=120_000)
            page.locator("#afiqa-batch-hist img, #afiqa-batch-hist canvas, #afiqa-batch-hist svg").first.wait_for(
                timeout=60_000)
            page.locator("#afiqa-batch-thumbs img").nth(3).wait_for(timeout=60_000)
            table = page.locator("#afiqa-batch-table")
            table.locator("th").nth(1).hover()
            table.locator("th").nth(1).get_by_role("button", name="Open cell menu").click()
            page.get_by_text("Sort descending").click()
            page.wait_for_timeout(500)
            import re

            text = table.inner_text()  # the rows as shown (the table draws them in its own order)
            # every number the table draws (the file names and errors hold none), whatever its format:
            # each scored row's score, then its uncertainty ("± error")
            numbers = [float(x) for x in re.findall(r"\b\d{1,3}(?:\.\d+)?\b", text)]
            scores = numbers[0::2]
            assert len(numbers) == 8 and scores == sorted(scores, reverse=True), text
            assert all(u > 0 for u in numbers[1::2]) and "± error" in text and "problem" in text, text
            page.wait_for_timeout(500)
            page.screenshot(path=str(ARTIFACTS / "app-batch.png"), full_page=True)
        finally:
            browser.close()
