"""What stands between a public Space and its visitors, before Gradio sees a request.

- ``Guard``: ASGI middleware. Before Gradio parses a JSON body it counts the file
  references in it (and its keys and items, which no escape can hide) and refuses a
  request that names more files than its endpoint takes, in one pass over the bytes. It
  checks uploads: a per-client rate, a cap on the upload cache's total size, and only
  files whose first bytes are an image format afiqa reads are kept (the others are
  deleted and the request refused). It drops ``X-Forwarded-Host`` (Gradio would build the
  page's and the outputs' URLs from it) and a file download's ``Range`` header (Gradio
  echoes every request header into a ranged response), and cuts the text of error
  answers.
- ``fair_queue``: a cap on the jobs one session and one client have queued or running,
  so that one client cannot fill the queue for everyone.
- ``client_key``: the client's address; ``X-Forwarded-For`` is read only when the server
  is told how many proxies in front of it to trust (``AFIQA_TRUSTED_PROXIES``, 1 on a
  Hugging Face Space), and then the entry the nearest trusted proxy wrote.

Nothing here imports Gradio or Keras at import time.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("afiqa.app")

# First bytes of the formats afiqa.io.inputs reads (JPEG/MPO, PNG, GIF, BMP, TIFF, WebP, AVIF/HEIF, PPM/PGM).
MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*",
         b"P5", b"P6", b"P2", b"P3")


def is_image_bytes(head: bytes) -> bool:
    """Whether ``head`` (a file's first 16 bytes or more) starts an image format afiqa reads."""
    if head.startswith(MAGIC):
        return True
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return True
    return head[4:8] == b"ftyp" and head[8:12] in (b"avif", b"avis", b"heic", b"heix", b"heim", b"heis",
                                                   b"hevc", b"hevx", b"mif1", b"msf1")


def client_key(host: str | None, headers, trusted_proxies: int = 0) -> str:
    """The client's address: the socket's peer, or with ``trusted_proxies`` > 0 the
    ``X-Forwarded-For`` entry the nearest trusted proxy appended (entries to its left are
    the client's own word). ``headers``: (name, value) byte pairs or a mapping."""
    if trusted_proxies > 0:
        items = headers.items() if hasattr(headers, "items") else headers
        xff = [v.decode("latin-1") if isinstance(v, bytes) else v for k, v in items
               if (k.decode("latin-1") if isinstance(k, bytes) else k).lower() == "x-forwarded-for"]
        hops = [h.strip() for h in ",".join(xff).split(",") if h.strip()]
        if len(hops) >= trusted_proxies:
            return hops[-trusted_proxies][:64]
    return host or "unknown"


@dataclass
class Policy:
    """Limits of ``Guard``. ``refs_for(api_name)``: file references a request to that
    endpoint may carry (None: the largest of all); ``fn_names``: fn_index -> api name."""
    refs_for: Callable[[str | None], int]
    fn_names: dict[int, str] = field(default_factory=dict)
    cache_dir: str | None = None
    cache_max_bytes: int = 2 * 2**30
    uploads_per_minute: int = 30  # upload requests per client
    trusted_proxies: int = 0
    error_chars: int = 300  # error answers are cut to this many characters
    keys_per_ref: int = 24  # JSON keys and items a file reference may bring with it
    keys_base: int = 512  # ... and the rest of a request


_FN_INDEX = re.compile(rb'"fn_index"\s*:\s*(\d{1,6})')
_API_PATH = re.compile(r"/(?:call|run|api)/([A-Za-z0-9_\-]+)/?$")


class Guard:
    """ASGI middleware; see the module's docstring. ``policy`` may be set after start
    (the endpoints' fn_index are known once the page is built)."""

    def __init__(self, app, policy: Policy):
        self.app = app
        self.policy = policy
        self._uploads: dict[str, deque] = defaultdict(deque)
        self._lock = threading.Lock()
        self._cache_bytes, self._cache_at = 0, 0.0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        drop = {b"x-forwarded-host"} | ({b"range"} if "/file=" in path else set())
        scope = dict(scope, headers=[(k, v) for k, v in scope.get("headers", []) if k.lower() not in drop])
        send = self._cut_errors(send)
        if scope.get("method") == "POST" and path.rstrip("/").endswith("/upload"):
            return await self._upload(scope, receive, send)
        if scope.get("method") == "POST" and "/gradio_api/" in path:
            return await self._json(scope, receive, send, path)
        return await self.app(scope, receive, send)

    # -- JSON calls: count before parsing ------------------------------------------------
    async def _json(self, scope, receive, send, path):
        chunks = []
        while True:
            m = await receive()
            if m["type"] == "http.disconnect":
                return
            chunks.append(m.get("body", b""))
            if not m.get("more_body"):
                break
        body = b"".join(chunks)
        name = None
        if (m := _API_PATH.search(path)) is not None:
            name = m.group(1)
        elif (f := _FN_INDEX.search(body)) is not None:
            name = self.policy.fn_names.get(int(f.group(1)))
        limit = self.policy.refs_for(name)
        refs = max(body.count(b'"path"'), body.count(b'"url"'))
        keys = body.count(b":") + body.count(b",")
        if refs > limit or keys > self.policy.keys_base + self.policy.keys_per_ref * limit:
            who = client_key(_peer(scope), scope["headers"], self.policy.trusted_proxies)
            log.warning("afiqa app: refused a request to %s from %s: %d file references (at most %d)",
                        name or path, who, refs, limit)
            return await _answer(send, 413, f"Too many files in one request: at most {limit} here.")
        sent = False

        async def replay():
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)

    # -- uploads: rate, cache size, image files only -----------------------------------
    async def _upload(self, scope, receive, send):
        p = self.policy
        who = client_key(_peer(scope), scope["headers"], p.trusted_proxies)
        now = time.monotonic()
        with self._lock:
            q = self._uploads[who]
            while q and q[0] < now - 60:
                q.popleft()
            busy = len(q) >= p.uploads_per_minute
            if not busy:
                q.append(now)
            if len(self._uploads) > 10_000:  # forget idle clients
                for k in [k for k, v in self._uploads.items() if not v or v[-1] < now - 60]:
                    del self._uploads[k]
        if busy:
            log.warning("afiqa app: refused an upload from %s: over %d a minute", who, p.uploads_per_minute)
            return await _answer(send, 429, f"Too many uploads from you: at most {p.uploads_per_minute} a minute. "
                                            "Try again in a minute.")
        if p.cache_dir and self.cache_bytes() > p.cache_max_bytes:
            log.warning("afiqa app: refused an upload from %s: the upload cache is full", who)
            return await _answer(send, 503, "The server's upload space is full; try again in a few minutes.")
        start, parts = None, []

        async def capture(message):
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
            else:
                parts.append(message.get("body", b""))
        await self.app(scope, receive, capture)
        body = b"".join(parts)
        if start is None:
            return
        if start["status"] == 200:
            try:
                paths = [x if isinstance(x, str) else x.get("path") for x in json.loads(body)]
            except (ValueError, AttributeError, TypeError):
                paths = []
            bad = [q for q in paths if q and not _starts_an_image(q)]
            if bad:
                for q in paths:
                    _remove(q)
                log.warning("afiqa app: refused an upload from %s: %d of %d files are not images afiqa reads",
                            who, len(bad), len(paths))
                return await _answer(send, 415, "Only image files can be uploaded (JPEG, PNG, GIF, BMP, TIFF, "
                                                "WebP, AVIF, HEIC/HEIF or PPM).")
            with self._lock:
                self._cache_bytes += sum(_size(q) for q in paths)
        await send(start)
        await send({"type": "http.response.body", "body": body})

    def cache_bytes(self) -> int:
        """The upload cache's size in bytes, walked at most every 2 s (counted in between)."""
        now = time.monotonic()
        if now - self._cache_at > 2:
            self._cache_bytes, self._cache_at = _tree_bytes(self.policy.cache_dir), now
        return self._cache_bytes

    # -- error answers: cut -------------------------------------------------------------
    def _cut_errors(self, send):
        limit = self.policy.error_chars
        held: dict = {}

        async def cut(message):
            if message["type"] == "http.response.start" and message["status"] >= 400:
                held["start"], held["body"] = message, []
                return
            if "start" in held and message["type"] == "http.response.body":
                held["body"].append(message.get("body", b""))
                if message.get("more_body"):
                    return
                start, body = held.pop("start"), b"".join(held.pop("body"))
                if len(body) > limit:
                    body = _shorten(body, limit)
                headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
                await send(dict(start, headers=headers + [(b"content-length", str(len(body)).encode())]))
                return await send({"type": "http.response.body", "body": body})
            await send(message)
        return cut


def _shorten(body: bytes, limit: int) -> bytes:
    try:
        data = json.loads(body)
    except ValueError:
        return body[:limit] + b"..."
    if isinstance(data, dict) and isinstance(data.get("detail"), str):
        return json.dumps({"detail": data["detail"][:limit] + "..."}).encode()
    return json.dumps({"detail": json.dumps(data)[:limit] + "..."}).encode()


def _peer(scope) -> str | None:
    client = scope.get("client")
    return client[0] if client else None


def _starts_an_image(path: str) -> bool:
    try:
        with open(path, "rb") as fh:
            return is_image_bytes(fh.read(32))
    except OSError:
        return False


def _remove(path: str | None) -> None:
    if path:
        try:
            os.remove(path)
        except OSError:
            pass


def _size(path: str | None) -> int:
    try:
        return os.path.getsize(path) if path else 0
    except OSError:
        return 0


def _tree_bytes(root: str | None) -> int:
    total = 0
    for folder, _, names in os.walk(root or "/nonexistent"):
        for n in names:
            total += _size(os.path.join(folder, n))
    return total


async def _answer(send, status: int, text: str) -> None:
    body = json.dumps({"detail": text, "error": text}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def fair_queue(queue, per_session: int, per_client: int, trusted_proxies: int = 0) -> None:
    """Wrap ``queue.push`` (a ``gradio.queueing.Queue``): a job is refused with 429 and
    "too many requests from you" when its session already has ``per_session`` jobs
    queued or running, or its client ``per_client``."""
    from fastapi import HTTPException

    push = queue.push

    def key(request) -> str:
        if request is None:
            return "unknown"
        return client_key(request.client.host if request.client else None, request.headers, trusted_proxies)

    async def fair_push(body, request, username):
        mine = key(request)
        waiting = [e for q in queue.event_queue_per_concurrency_id.values() for e in q.queue]
        running = [e for job in queue.active_jobs if job for e in job]
        same_session = same_client = 0
        for e in waiting + running:
            same_session += body.session_hash is not None and e.session_hash == body.session_hash
            same_client += key(e.request) == mine
        if same_session >= per_session or same_client >= per_client:
            log.warning("afiqa app: refused a job from %s: %d queued or running (at most %d a client, %d a page)",
                        mine, same_client, per_client, per_session)
            raise HTTPException(status_code=429, detail="Too many requests from you at once: wait for your "
                                                        "earlier ones to finish, then try again.")
        return await push(body, request, username)

    queue.push = fair_push


def cache_folder() -> Path:
    """Gradio's upload cache (``GRADIO_TEMP_DIR``, else the system's temporary folder's ``gradio``)."""
    import tempfile

    return Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio").resolve()
