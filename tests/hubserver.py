"""A small real HTTP server that stands in for the Hugging Face Hub in tests.

It serves ``/{repo_id}/resolve/{revision}/{filename}`` (HEAD and GET) with the headers
``huggingface_hub.hf_hub_download`` reads from a HEAD (see ``get_hf_file_metadata`` and
``_get_metadata_or_catch_error`` in its ``file_download.py``):

- ``X-Repo-Commit``: the commit the revision points to (required: without it the client
  decides the server is not a Hub and gives up);
- ``X-Linked-Etag`` / ``ETag``: the file's id, which names the blob in the HF cache (the
  sha256, as the Hub gives for LFS files);
- ``X-Linked-Size`` / ``Content-Length``: the size, checked after the GET.

No ``X-Xet-*`` headers, so the client downloads with a plain GET. Unknown repos,
revisions and files answer 404 with the Hub's ``X-Error-Code`` (``RepoNotFound``,
``RevisionNotFound``, ``EntryNotFound``), which the client turns into its exceptions.

    with HubServer() as hub:
        hub.add("afiqa/tiny", "tiny.weights.h5", data)
        os.environ["HF_ENDPOINT"] = hub.url
        ...
        hub.count("GET", "tiny.weights.h5")  # how many times the body was sent

``HubServer(drip=2.0)`` answers a HEAD at once but sends a GET's body one byte every
2 s: each read arrives within any per-read timeout, so only an overall deadline stops it.
"""

from __future__ import annotations

import hashlib
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit


class HubServer:
    def __init__(self, delay: float = 0.0, drip: float = 0.0):
        self.delay = delay  # seconds to wait before answering ("slow" mode)
        self.drip = drip  # seconds between the bytes of a GET's body ("drip" mode)
        self.files: dict[tuple[str, str], dict[str, bytes]] = {}  # (repo, revision) -> files
        self.requests: Counter[tuple[str, str]] = Counter()  # (method, path) -> count
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None

    def add(self, repo_id: str, filename: str, data: bytes, revision: str = "main") -> None:
        self.files.setdefault((repo_id, revision), {})[filename] = data

    @staticmethod
    def commit(repo_id: str, revision: str) -> str:
        return hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()

    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def count(self, method: str, filename: str = "") -> int:
        """Requests seen with ``method`` for a path ending in ``/filename`` (any path if empty)."""
        with self._lock:
            return sum(
                n for (m, p), n in self.requests.items() if m == method and p.endswith("/" + filename if filename else "")
            )

    def start(self) -> "HubServer":
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop listening: later connections to ``url`` are refused."""
        self._stopped.set()  # wakes handlers sleeping in slow mode
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def answer(self, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
        """(status, headers, body) for a request, the way the Hub would answer it."""
        with self._lock:
            self.requests[(method, path)] += 1
        if self.delay:
            self._stopped.wait(self.delay)
        repo_id, sep, rest = unquote(urlsplit(path).path).lstrip("/").partition("/resolve/")
        revision, _, filename = rest.partition("/")
        if not sep or not any(repo == repo_id for repo, _ in self.files):
            return 404, {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"}, b""
        if (repo_id, revision) not in self.files:
            return 404, {"X-Error-Code": "RevisionNotFound", "X-Error-Message": "Invalid rev id"}, b""
        commit = {"X-Repo-Commit": self.commit(repo_id, revision)}
        data = self.files[(repo_id, revision)].get(filename)
        if data is None:
            return 404, {**commit, "X-Error-Code": "EntryNotFound", "X-Error-Message": "Entry not found"}, b""
        etag = f'"{hashlib.sha256(data).hexdigest()}"'
        size = str(len(data))
        headers = {**commit, "ETag": etag, "X-Linked-Etag": etag, "X-Linked-Size": size}
        headers["Content-Type"] = "application/octet-stream"
        return 200, headers, data


def _handler(server: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # one request per connection: nothing lingers after stop()

        def _reply(self, body: bool) -> None:
            status, headers, data = server.answer(self.command, self.path)
            try:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body and server.drip:
                    for k in range(len(data)):
                        self.wfile.write(data[k:k + 1])
                        self.wfile.flush()
                        if server._stopped.wait(server.drip):
                            break
                elif body:
                    self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (slow mode)
                pass

        def do_HEAD(self) -> None:
            self._reply(body=False)

        def do_GET(self) -> None:
            self._reply(body=True)

        def log_message(self, *args) -> None:  # keep test output clean
            pass

    return Handler
