"""A public Space under attack (issue 34): each probe of docs/security.md against a real
server on loopback, the attacker's request and the victim's experience measured.

The server trusts one proxy (as on a Hugging Face Space), so ``X-Forwarded-For`` tells
attacker and victim apart although both are on 127.0.0.1.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
from PIL import Image

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from afiqa.app import guard, launch, page  # noqa: E402
from afiqa.app.settings import LIMITS  # noqa: E402
from afiqa.app.uploads import NOT_UPLOADED  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
COFFEE = ROOT / "examples" / "coffee.jpg"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def site(tiny_predictor, tmp_path_factory):
    """The app with small per-client caps, trusting one proxy; (url, demo). Its upload cache
    is its own folder, so what another process uploads meanwhile is not counted as kept."""
    saved_cache = os.environ.get("GRADIO_TEMP_DIR")
    os.environ["GRADIO_TEMP_DIR"] = str(tmp_path_factory.mktemp("gradio_cache"))
    saved = {k: getattr(LIMITS, k) for k in ("trusted_proxies", "per_client", "per_session", "uploads_per_minute")}
    LIMITS.trusted_proxies, LIMITS.per_client, LIMITS.per_session, LIMITS.uploads_per_minute = 1, 4, 2, 12
    demo = page.build_demo(tiny_predictor)
    port = _free_port()
    try:
        launch.serve(demo, prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True)
        yield f"http://127.0.0.1:{port}", demo
    finally:
        demo.close()
        for k, v in saved.items():
            setattr(LIMITS, k, v)
        if saved_cache is None:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        else:
            os.environ["GRADIO_TEMP_DIR"] = saved_cache


def who(name: str) -> dict:
    """Headers of a client at its own address (the proxy's X-Forwarded-For entry)."""
    return {"X-Forwarded-For": f"10.0.{hash(name) % 250}.{len(name)}"}


def upload(url: str, path: Path, client: str = "uploader") -> str:
    with path.open("rb") as fh:
        r = httpx.post(f"{url}/gradio_api/upload", files={"files": (path.name, fh)}, headers=who(client), timeout=60)
    r.raise_for_status()
    return r.json()[0]


def call(url: str, api: str, data: list, client: str = "caller", timeout: float = 120) -> tuple[str, str]:
    """(event, data) of the final event of a /call/<api> request."""
    r = httpx.post(f"{url}/gradio_api/call/{api}", json={"data": data}, headers=who(client), timeout=timeout)
    r.raise_for_status()
    event_id = r.json()["event_id"]
    last = ("", "")
    with httpx.stream("GET", f"{url}/gradio_api/call/{api}/{event_id}", headers=who(client), timeout=timeout) as s:
        event = ""
        for line in s.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event in ("complete", "error"):
                last = (event, line.split(":", 1)[1].strip())
    return last


def timed_get(url: str) -> float:
    t0 = time.perf_counter()
    httpx.get(url, timeout=60).raise_for_status()
    return time.perf_counter() - t0


# -- 1. no file read through the API, and no oracle of what exists ------------------------
def test_a_path_that_is_no_upload_is_refused_alike_whatever_it_is(site, tmp_path):
    url, _ = site
    outside = tmp_path / "secret.png"  # a real image, but not uploaded to this server
    Image.new("RGB", (300, 300), (10, 200, 30)).save(outside)
    answers = {}
    for target in (outside, "/etc/hostname", "/etc/shadow", "/nonexistent/x.png", "/root", "/dev/zero",
                   ROOT / "examples" / ".." / "README.md"):
        answers[str(target)] = call(url, "score", [{"path": str(target)}, "fused", "signed"])
        # the same trick on the tabs that take many files
        event, _ = call(url, "compare", [[{"path": str(target)}], "photo"])
        assert event == "error", target
    assert {event for event, _ in answers.values()} == {"error"}, answers  # no score, no slider URL
    assert len({text for _, text in answers.values()}) == 1, answers  # one sentence for every path
    assert NOT_UPLOADED in next(iter(answers.values()))[1]
    event, data = call(url, "score", [{"path": upload(url, COFFEE)}, "fused", "signed"])  # an upload still scores
    assert event == "complete" and json.loads(data)[0] > 0


# -- 2. work per request bounded before Gradio parses it -----------------------------------
def test_a_request_naming_too_many_files_is_refused_before_it_is_parsed(site):
    url, _ = site
    ref = {"path": upload(url, COFFEE), "meta": {"_type": "gradio.FileData"}}
    body = json.dumps({"data": [[ref] * 150_000]}).encode()  # the probe: 23 MB, under the body limit
    assert len(body) < LIMITS.max_body_bytes
    waits = []
    stop = threading.Event()

    def victim():
        while not stop.is_set():
            waits.append(timed_get(f"{url}/gradio_api/info"))

    t = threading.Thread(target=victim)
    t.start()
    try:
        t0 = time.perf_counter()
        r = httpx.post(f"{url}/gradio_api/call/batch", content=body, headers={"content-type": "application/json"},
                       timeout=120)
        refused_in = time.perf_counter() - t0
    finally:
        stop.set()
        t.join()
    assert r.status_code == 413 and "Too many files" in r.json()["detail"]
    assert refused_in < 2.0, refused_in  # sending 23 MB over loopback included
    assert max(waits) < 1.0, waits
    r = httpx.post(f"{url}/gradio_api/call/score", json={"data": [ref, ref, "fused", "signed"]}, timeout=30)
    assert r.status_code == 413  # /score takes one file
    event, _ = call(url, "batch", [[ref] * 3])  # a batch within its limit runs
    assert event == "complete"


# -- 3. a fair queue ----------------------------------------------------------------------
def test_one_client_cannot_fill_the_queue_for_everyone(site):
    url, demo = site
    fn_index = next(i for i, fn in demo.fns.items() if fn.api_name == "batch")
    ref = {"path": upload(url, COFFEE, "attacker"), "meta": {"_type": "gradio.FileData"}}
    codes, details = [], set()
    with httpx.Client(timeout=30) as c:
        for _ in range(100):  # random session hashes, as the probe sent
            r = c.post(f"{url}/gradio_api/queue/join", headers=who("attacker"),
                       json={"data": [[ref] * 20], "fn_index": fn_index, "session_hash": uuid.uuid4().hex,
                             "event_data": None, "trigger_id": None})
            codes.append(r.status_code)
            if r.status_code != 200:
                details.add(r.json()["detail"])
    accepted = codes.count(200)
    assert accepted <= LIMITS.per_client + 4, codes  # (+ those that finished while the others were sent)
    assert codes.count(429) == 100 - accepted and 503 not in codes, codes  # never "queue is full"
    assert len(details) == 1 and "Too many requests from you" in details.pop()
    t0 = time.perf_counter()
    event, data = call(url, "score", [{"path": upload(url, COFFEE, "victim")}, "fused", "signed"], client="victim")
    assert event == "complete", data  # the victim is served, behind at most the attacker's few jobs
    assert time.perf_counter() - t0 < 120


# -- 4. uploads: images only, a rate, a capped cache ------------------------------------
def test_uploads_keep_only_images_at_a_rate_into_a_capped_cache(site, tmp_path, monkeypatch):
    url, demo = site
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(os.urandom(2 * 2**20))  # random bytes named like a photo
    before = set(guard.cache_folder().rglob("*"))
    with junk.open("rb") as fh, COFFEE.open("rb") as good:
        r = httpx.post(f"{url}/gradio_api/upload", files=[("files", ("a.jpg", good)), ("files", ("junk.jpg", fh))],
                       headers=who("junk"), timeout=60)
    assert r.status_code == 415 and "Only image files" in r.json()["detail"]
    kept = {p for p in set(guard.cache_folder().rglob("*")) - before if p.is_file()}
    assert not kept, kept  # neither file of the refused request is kept
    codes = []
    for _ in range(LIMITS.uploads_per_minute + 3):
        with COFFEE.open("rb") as fh:
            codes.append(httpx.post(f"{url}/gradio_api/upload", files={"files": ("c.jpg", fh)},
                                    headers=who("eager"), timeout=60).status_code)
    assert codes[:LIMITS.uploads_per_minute] == [200] * LIMITS.uploads_per_minute and set(codes[-3:]) == {429}
    assert upload(url, COFFEE, "someone else")  # the rate is per client
    mw = _guard_of(demo)
    monkeypatch.setattr(mw.policy, "cache_max_bytes", 1)
    mw._cache_at = 0.0  # walk the cache now
    with COFFEE.open("rb") as fh:
        r = httpx.post(f"{url}/gradio_api/upload", files={"files": ("c.jpg", fh)}, headers=who("late"), timeout=60)
    assert r.status_code == 503 and "upload space is full" in r.json()["detail"]
    assert demo.delete_cache == LIMITS.cleanup and LIMITS.cleanup[1] <= 900  # cleaned within 15 min


def _guard_of(demo) -> guard.Guard:
    app = demo.server_app.middleware_stack
    while app is not None and not isinstance(app, guard.Guard):
        app = getattr(app, "app", None)
    assert app is not None, "guard.Guard is not in the server's middleware"
    return app


# -- 5. nothing reflected, errors cut, one log line per refused image -------------------
def test_no_header_is_reflected_or_trusted_and_errors_are_short(site, caplog, capfd, tmp_path):
    url, _ = site
    r = httpx.get(f"{url}/gradio_api/file={COFFEE}", headers={"Range": "bytes=0-99", "X-Probe": "reflected-marker"},
                  timeout=30)
    assert r.status_code in (200, 206) and r.content[:3] == b"\xff\xd8\xff"
    assert "reflected-marker" not in json.dumps(dict(r.headers))
    r = httpx.get(f"{url}/config", headers={"X-Forwarded-Host": "evil.example"}, timeout=30)
    assert r.status_code == 200 and "evil.example" not in r.text
    ref = {"path": upload(url, COFFEE)}
    event, text = call(url, "score", [ref, "x" * 500_000, "signed"])  # an invalid 0.5 MB stream value
    assert event == "error" and len(text) < 500, len(text)
    capfd.readouterr()
    with caplog.at_level(logging.WARNING, logger="afiqa.app"):
        Image.new("RGB", (8, 8)).save(tmp_path / "tiny8.png")  # an image too small to score
        event, _ = call(url, "score", [{"path": upload(url, tmp_path / "tiny8.png")}, "fused", "signed"])
    assert event == "error"
    lines = [r for r in caplog.records if r.name == "afiqa.app" and "tiny8.png" in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in caplog.records]
    assert "Traceback" not in "".join(capfd.readouterr())
