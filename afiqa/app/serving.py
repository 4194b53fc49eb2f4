"""What a public server needs beyond images: a request-body limit and a bounded store.

- ``BodyLimit``: ASGI middleware that refuses a request whose body is larger than its
  path's limit with 413, from ``Content-Length`` before reading anything, and by counting
  the bytes of a body sent without one (chunked) as they arrive. Frameworks read a JSON
  body whole before they look at it (a data URL in it included), so this is the one
  place a limit holds for every way in.
- ``ResultStore``: the results that pages re-draw without the model (another heat-map
  view, another pair on the slider), kept in one least-recently-used store whose total
  size is capped, instead of one copy per page for an hour. A page holds only its key.

Neither imports a web framework or Keras.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import Any


class BodyLimit:
    """ASGI middleware: ``limit_for(path)`` bytes at most per request body (None: no limit)."""

    def __init__(self, app, limit_for: Callable[[str], int | None]):
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope, receive, send):
        limit = self.limit_for(scope.get("path", "")) if scope["type"] == "http" else None
        if limit is None:
            return await self.app(scope, receive, send)
        length = _content_length(scope)
        if length is not None and length > limit:
            return await _refuse(send, limit)

        received, refused, started = 0, False, False

        async def limited_receive():
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused = True
                    if not started:
                        await _refuse(send, limit)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            nonlocal started
            if refused:
                return  # the 413 is the answer; whatever the app says after it is dropped
            started = True
            await send(message)

        await self.app(scope, limited_receive, guarded_send)


def _content_length(scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _refuse(send, limit: int) -> None:
    body = json.dumps({"error": f"The request is too large: at most {limit / 2**20:.0f} MB."}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class ResultStore:
    """A thread-safe LRU of values with a known size; the oldest go when ``max_bytes`` is passed."""

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def put(self, value: Any, nbytes: int) -> str:
        """Keep ``value`` (``nbytes`` large); returns its key."""
        key = uuid.uuid4().hex
        with self._lock:
            self._items[key] = (value, int(nbytes))
            self._bytes += int(nbytes)
            while self._bytes > self.max_bytes and len(self._items) > 1:
                _, (_, n) = self._items.popitem(last=False)
                self._bytes -= n
        return key

    def get(self, key: str | None) -> Any | None:
        """The value kept under ``key``, or None when there is none (or it was dropped)."""
        if not isinstance(key, str):
            return None
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            self._items.move_to_end(key)
            return item[0]

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)
