"""Load test of the afiqa web app on loopback: concurrent users scoring photos.

    python scripts/loadtest.py [--model NAME|CARD.json] [--clients 20] [--requests 10]
                               [--image PATH ...] [--json OUT]

Starts ``python app.py --model ...`` as a subprocess on 127.0.0.1 and a free port, waits
until it answers, scores one photo to warm it up, then runs ``--clients`` threads, each
with its own ``gradio_client.Client``, each making ``--requests`` sequential ``/score``
calls with real photos (the examples in rotation, or ``--image``). Prints the requests,
errors, throughput, latency p50/p95/max and the server's peak memory (its VmHWM, read from
/proc: the server is a process of its own, so this is the app's memory and not the
client's). The server is stopped at the end, also on an error or Ctrl-C.

Latency is end to end as a user sees it: upload, wait in the queue (the app runs one model
call at a time, ``MODEL_CONCURRENCY``), scoring with heat-maps, and downloading the result
pictures. Every request runs the model: a client whose next photo is the one it just sent
starts a new session first, so the app's per-page cache of the last result is not hit.

tests/test_load.py runs this with a small model; the functions here are shared with it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "app.py"
EXAMPLES = ROOT / "examples"
FIRST_EXAMPLE = "coffee.jpg"

# Run app.py as ``python app.py ARGS`` would, but ask the kernel to end it if this process
# dies without stopping it (Linux prctl PR_SET_PDEATHSIG; elsewhere it just runs).
_LAUNCH = (
    "import runpy, signal, sys\n"
    "try:\n"
    "    import ctypes; ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)\n"
    "except Exception:\n"
    "    pass\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)


# -- the server -----------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _proc_status_mb(pid: int, field: str) -> float | None:
    """A memory field of /proc/<pid>/status (VmHWM: peak resident, VmRSS: now) in MB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def _proc_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds the process has used (/proc/<pid>/stat)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


class AppServer:
    """``python app.py --model MODEL`` on 127.0.0.1:<free port>, as a context manager.

    ``with AppServer(model) as server:`` starts it and waits until it answers (or raises
    RuntimeError with the tail of its log); leaving the block always stops it.
    """

    def __init__(self, model: str | Path, weights: str | Path | None = None, port: int | None = None,
                 startup_timeout_s: float = 600.0):
        self.model, self.weights = str(model), None if weights is None else str(weights)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.startup_timeout_s = startup_timeout_s
        self.proc: subprocess.Popen | None = None
        self.startup_s: float | None = None
        self._log = None

    def __enter__(self) -> "AppServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        args = [sys.executable, "-c", _LAUNCH, str(APP), "--model", self.model]
        if self.weights:
            args += ["--weights", self.weights]
        env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(self.port),
               "GRADIO_ANALYTICS_ENABLED": "False", "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
               # every simulated user comes from 127.0.0.1: the per-address caps (docs/security.md) would
               # count them as one client, so they are raised here unless the caller sets them
               "AFIQA_UPLOADS_PER_MINUTE": os.environ.get("AFIQA_UPLOADS_PER_MINUTE", "100000"),
               "AFIQA_PER_CLIENT": os.environ.get("AFIQA_PER_CLIENT", "100000")}
        self._log = tempfile.TemporaryFile(mode="w+", prefix="afiqa-loadtest-server-")
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(args, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT)
        try:
            self._wait_ready(t0)
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.perf_counter() - t0

    def _wait_ready(self, t0: float) -> None:
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the app exited with status {self.proc.returncode} before answering:\n"
                                   + self.log_tail())
            try:
                with urllib.request.urlopen(self.url, timeout=5) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if time.perf_counter() - t0 > self.startup_timeout_s:
                raise RuntimeError(f"the app did not answer at {self.url} within {self.startup_timeout_s:.0f} s:\n"
                                   + self.log_tail())
            time.sleep(0.5)

    def peak_mb(self) -> float | None:
        """The server's peak resident memory so far (VmHWM), in MB; None off Linux."""
        return None if self.proc is None else _proc_status_mb(self.proc.pid, "VmHWM")

    def rss_mb(self) -> float | None:
        return None if self.proc is None else _proc_status_mb(self.proc.pid, "VmRSS")

    def cpu_s(self) -> float | None:
        return None if self.proc is None else _proc_cpu_s(self.proc.pid)

    def log_tail(self, chars: int = 4000) -> str:
        if self._log is None:
            return ""
        self._log.flush()
        self._log.seek(0)
        return self._log.read()[-chars:]

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM, then SIGKILL after ``grace_s``; idempotent."""
        p = self.proc
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(grace_s)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)


# -- the clients ------------------------------------------------------------------------------
@dataclass
class Request:
    client: int
    index: int
    image: str
    latency_s: float | None = None  # None: not started (deadline) or not finished in time
    score: float | None = None
    label: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.latency_s is not None and self.error is None and self.score is not None


def default_images() -> list[Path]:
    """The app's example photos, coffee.jpg first."""
    return sorted(EXAMPLES.glob("*.jpg"), key=lambda p: (p.name != FIRST_EXAMPLE, p.name))


def _new_client(url: str, downloads: Path):
    from gradio_client import Client

    return Client(url, verbose=False, download_files=str(downloads), analytics_enabled=False)


def _score(client, image: str, timeout_s: float, req: Request) -> None:
    from gradio_client import handle_file

    t = time.perf_counter()
    job = client.submit(handle_file(image), api_name="/score")
    try:
        out = job.result(timeout=timeout_s)
    except Exception as e:  # noqa: BLE001 - every failure is a data point
        if isinstance(e, TimeoutError):
            try:
                job.cancel()
            except Exception:  # noqa: BLE001 - the server may be gone
                pass
        req.latency_s = time.perf_counter() - t
        req.error = f"{type(e).__name__}: {e}"[:300] + _where(e)
        return
    req.latency_s = time.perf_counter() - t
    score, label = out[0], out[1]
    if isinstance(score, (int, float)) and math.isfinite(score):
        req.score, req.label = float(score), label
    else:
        req.error = f"no score in the answer: {out[:2]!r}"[:300]


def _where(e: BaseException) -> str:
    """Where in gradio_client an error arose: " (at <file>:<line> <function>)", or ""."""
    import traceback

    frames = []
    while e is not None and not frames:
        frames = [f for f in traceback.extract_tb(e.__traceback__) if "gradio_client" in f.filename]
        e = e.__cause__ or e.__context__
    if not frames:
        return ""
    f = frames[-1]
    return f" (at gradio_client/{Path(f.filename).name}:{f.lineno} {f.name})"


def warm_up(url: str, image: str | Path, timeout_s: float = 300.0) -> float:
    """One /score call (the first builds the model's graphs); its latency in seconds."""
    with tempfile.TemporaryDirectory(prefix="afiqa-loadtest-") as d:
        client = _new_client(url, Path(d))
        try:
            req = Request(-1, 0, str(image))
            _score(client, str(image), timeout_s, req)
        finally:
            client.close()
    if not req.ok:
        raise RuntimeError(f"the warm-up request failed: {req.error}")
    return req.latency_s


def run_clients(url: str, images: list[str | Path], clients: int = 20, requests: int = 10,
                deadline_s: float = 600.0, request_timeout_s: float = 120.0,
                stop: threading.Event | None = None) -> tuple[list[Request], float]:
    """``clients`` threads, each with its own Client, each making ``requests`` sequential
    /score calls (client k's i-th request sends ``images[(k + i) % len(images)]``).

    All clients connect first, then start together. No request starts after ``deadline_s``
    (from the start) and none waits longer than ``request_timeout_s`` (it then fails with
    TimeoutError); requests not started stay ``latency_s=None``. Returns the requests (client-major) and the wall time.
    """
    images = [str(p) for p in images]
    stop = stop or threading.Event()
    plan = [[Request(k, i, images[(k + i) % len(images)]) for i in range(requests)] for k in range(clients)]
    connected = threading.Semaphore(0)
    go = threading.Event()
    start = [0.0]

    def worker(k: int, downloads: Path) -> None:
        try:
            client = _new_client(url, downloads)
        except Exception as e:  # noqa: BLE001
            for req in plan[k]:
                req.error = f"could not connect: {type(e).__name__}: {e}"[:300]
            connected.release()
            return
        connected.release()
        try:
            go.wait()
            previous = None
            for req in plan[k]:
                if stop.is_set() or time.perf_counter() - start[0] > deadline_s:
                    break
                if req.image == previous:
                    client.reset_session()  # a fresh page: the app's cache of its last result is not hit
                _score(client, req.image, request_timeout_s, req)
                previous = req.image
        finally:
            client.close()

    with tempfile.TemporaryDirectory(prefix="afiqa-loadtest-", ignore_cleanup_errors=True) as d:
        threads = [threading.Thread(target=worker, args=(k, Path(d) / str(k)), daemon=True, name=f"client-{k}")
                   for k in range(clients)]
        for t in threads:
            t.start()
        connect_by = time.perf_counter() + min(120.0, deadline_s)
        for _ in threads:
            if not connected.acquire(timeout=max(0.0, connect_by - time.perf_counter())):
                break
        start[0] = time.perf_counter()
        go.set()
        end_by = start[0] + deadline_s + request_timeout_s + 30
        try:
            for t in threads:
                while t.is_alive() and time.perf_counter() < end_by:
                    t.join(0.5)  # short joins: Ctrl-C stays responsive
        except KeyboardInterrupt:
            stop.set()  # no new requests; let those in flight end (10 s at most) before the server goes
            grace = time.perf_counter() + 10
            for t in threads:
                t.join(max(0.0, grace - time.perf_counter()))
            raise
        finally:
            stop.set()
        wall = time.perf_counter() - start[0]
    return [req for reqs in plan for req in reqs], wall


# -- the figures ------------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0..100), linear between closest ranks (numpy's default)."""
    xs = sorted(values)
    if not xs:
        return None
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarize(requests: list[Request], wall_s: float, server: AppServer | None = None) -> dict:
    """Counts, throughput and latency figures of a run (and the server's memory and CPU)."""
    done = [r for r in requests if r.latency_s is not None]
    ok = [r.latency_s for r in done if r.ok]
    errors = [r for r in requests if r.error is not None]
    out = {
        "requests": len(requests),
        "completed": len(ok),
        "errors": len(errors),
        "unfinished": sum(1 for r in requests if r.latency_s is None and r.error is None),
        "wall_s": round(wall_s, 3),
        "throughput_rps": round(len(ok) / wall_s, 3) if wall_s > 0 else None,
        "latency_p50_s": _r(percentile(ok, 50)),
        "latency_p95_s": _r(percentile(ok, 95)),
        "latency_max_s": _r(max(ok, default=None)),
        "latency_mean_s": _r(sum(ok) / len(ok) if ok else None),
        "first_errors": sorted({r.error for r in errors})[:5],
    }
    if server is not None:
        out["server_peak_mb"] = _r(server.peak_mb(), 1)
        out["server_rss_mb"] = _r(server.rss_mb(), 1)
    return out


def measure(url: str, images: list[str | Path], clients: int, requests: int, deadline_s: float,
            request_timeout_s: float, server: AppServer | None = None,
            stop: threading.Event | None = None) -> tuple[dict, list[Request]]:
    """Warm up, then the load: the summary (with context: load average, CPU, memory) and the requests."""
    summary = {"clients": clients, "requests_per_client": requests, "images": [Path(p).name for p in images],
               "cpu_count": os.cpu_count(), "python": platform.python_version()}
    summary["loadavg_before"] = _loadavg()
    summary["warmup_s"] = round(warm_up(url, images[0], request_timeout_s * 2), 3)
    idle = server.rss_mb() if server else None
    cpu0 = server.cpu_s() if server else None
    reqs, wall = run_clients(url, images, clients, requests, deadline_s, request_timeout_s, stop)
    summary.update(summarize(reqs, wall, server))
    summary["loadavg_after"] = _loadavg()
    if server is not None:
        summary["server_startup_s"] = _r(server.startup_s, 1)
        summary["server_rss_before_load_mb"] = _r(idle, 1)
        cpu1 = server.cpu_s()
        if cpu0 is not None and cpu1 is not None and summary["completed"]:
            summary["server_cpu_s_per_request"] = round((cpu1 - cpu0) / summary["completed"], 4)
    return summary, reqs


def format_summary(s: dict) -> str:
    def f(v, unit="", fmt="{:.3f}"):
        return "n/a" if v is None else fmt.format(v) + unit

    lines = [
        f"requests      {s['requests']} ({s['clients']} clients x {s['requests_per_client']}), "
        f"completed {s['completed']}, errors {s['errors']}, unfinished {s['unfinished']}",
        f"throughput    {f(s['throughput_rps'], ' req/s', '{:.2f}')} over {s['wall_s']:.1f} s",
        f"latency       p50 {f(s['latency_p50_s'], ' s')}  p95 {f(s['latency_p95_s'], ' s')}  "
        f"max {f(s['latency_max_s'], ' s')}  (warm-up request {f(s.get('warmup_s'), ' s')})",
    ]
    if "server_peak_mb" in s:
        lines.append(f"server memory peak {f(s['server_peak_mb'], ' MB', '{:.0f}')} (VmHWM), "
                     f"{f(s.get('server_rss_before_load_mb'), ' MB', '{:.0f}')} before the load; "
                     f"CPU {f(s.get('server_cpu_s_per_request'), ' s', '{:.3f}')} per request; "
                     f"started in {f(s.get('server_startup_s'), ' s', '{:.1f}')}")
    lines.append(f"machine       {s['cpu_count']} CPUs, load average {s['loadavg_before']} before, "
                 f"{s['loadavg_after']} after")
    for e in s.get("first_errors", []):
        lines.append(f"error         {e}")
    return "\n".join(lines)


def _r(v: float | None, nd: int = 4) -> float | None:
    return None if v is None else round(v, nd)


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


# -- the command ------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(ROOT))
    from afiqa.runtime.zoo import DEFAULT_MODEL

    p = argparse.ArgumentParser(description="Load test of the afiqa web app on loopback (see the module doc).")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"model name or model card .json (default {DEFAULT_MODEL})")
    p.add_argument("--weights", metavar="FILE", help="weights file instead of the model's own")
    p.add_argument("--clients", type=int, default=20, help="concurrent clients (default 20)")
    p.add_argument("--requests", type=int, default=10, help="sequential /score calls per client (default 10)")
    p.add_argument("--image", action="append", metavar="PATH",
                   help="photo to send (repeatable; default: the examples in rotation, coffee.jpg first)")
    p.add_argument("--deadline", type=float, default=900.0, metavar="S",
                   help="no request starts after S seconds of load (default 900)")
    p.add_argument("--timeout", type=float, default=300.0, metavar="S", help="per-request limit (default 300)")
    p.add_argument("--startup-timeout", type=float, default=600.0, metavar="S",
                   help="wait this long for the app to answer (default 600)")
    p.add_argument("--json", metavar="OUT", help="also write the figures and every request's latency as JSON")
    a = p.parse_args(argv)
    if a.clients < 1 or a.requests < 1:
        p.error("--clients and --requests must be at least 1")
    images = [Path(x) for x in a.image] if a.image else default_images()
    missing = [str(x) for x in images if not x.is_file()]
    if missing or not images:
        p.error(f"no such image: {', '.join(missing) or '(none)'}")

    print(f"starting the app with --model {a.model} ...", flush=True)
    try:
        with AppServer(a.model, a.weights, startup_timeout_s=a.startup_timeout) as server:
            print(f"app answering at {server.url} after {server.startup_s:.1f} s; "
                  f"{a.clients} clients x {a.requests} requests ...", flush=True)
            summary, reqs = measure(server.url, images, a.clients, a.requests, a.deadline, a.timeout, server)
    except KeyboardInterrupt:
        print("interrupted; the app is stopped", file=sys.stderr)
        return 130
    except RuntimeError as e:
        print(f"loadtest: {e}", file=sys.stderr)
        return 1
    summary["model"] = a.model
    print(format_summary(summary))
    if a.json:
        out = Path(a.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"summary": summary, "requests": [asdict(r) for r in reqs]}, indent=1))
        print(f"wrote {out}")
    return 0 if summary["errors"] == 0 and summary["unfinished"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
