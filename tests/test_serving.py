"""afiqa.app.serving on its own: the request-body limit (an ASGI app driven directly) and the
bounded store of results."""

import asyncio

from afiqa.app.serving import BodyLimit, ResultStore


async def _echo(scope, receive, send):
    """An app that reads the whole body, then answers 200 with its length."""
    n = 0
    while True:
        m = await receive()
        if m["type"] == "http.disconnect":
            return
        n += len(m.get("body", b""))
        if not m.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(n).encode()})


def _request(app, path: str, chunks: list[bytes], length: int | None):
    headers = [] if length is None else [(b"content-length", str(length).encode())]
    scope = {"type": "http", "path": path, "headers": headers}
    pending = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    pulled, sent = [], []

    async def receive():
        if not pending:
            return {"type": "http.disconnect"}
        pulled.append(pending.pop(0))
        return pulled[-1]

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, sent, len(pulled)


def test_body_limit_refuses_from_content_length_without_reading():
    app = BodyLimit(_echo, lambda path: 100)
    status, sent, pulled = _request(app, "/x", [b"a" * 500], 500)
    assert status == 413 and pulled == 0 and b"too large" in sent[-1]["body"]


def test_body_limit_counts_a_body_without_length_and_stops_reading_it():
    app = BodyLimit(_echo, lambda path: 100)
    status, sent, pulled = _request(app, "/x", [b"a" * 60] * 10, None)
    assert status == 413 and pulled == 2  # refused at the second chunk, the other 8 never read
    assert sum(m["type"] == "http.response.start" for m in sent) == 1


def test_body_limit_passes_small_bodies_and_paths_without_a_limit():
    limits = {"/upload": None}
    app = BodyLimit(_echo, lambda path: limits.get(path, 100))
    assert _request(app, "/x", [b"a" * 40, b"b" * 40], None)[0] == 200
    status, sent, _ = _request(app, "/upload", [b"a" * 500], 500)
    assert status == 200 and sent[-1]["body"] == b"500"


def test_store_keeps_the_newest_within_its_byte_cap():
    store = ResultStore(max_bytes=1000)
    keys = [store.put(f"v{k}", 300) for k in range(5)]
    assert len(store) == 3 and store.nbytes == 900
    assert [store.get(k) for k in keys] == [None, None, "v2", "v3", "v4"]
    store.get(keys[2])  # used: now the newest
    store.put("v5", 300)
    assert store.get(keys[2]) == "v2" and store.get(keys[3]) is None
    assert store.get(None) is None and store.get("no such key") is None
    big = store.put("huge", 5000)  # one item larger than the cap is kept alone
    assert store.get(big) == "huge" and len(store) == 1
