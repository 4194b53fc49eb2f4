"""How fast the app comes up and answers its first request (issue 14's start-up target).

    python scripts/app_startup.py [--photo examples/coffee.jpg] [--model NAME]

Starts ``python app.py`` as a fresh process on a free loopback port and measures, wall
clock from the start of the process: when the page is served (HTTP 200 on ``/``), then,
for a ``/score`` sent at once, when its score arrives and when its heat-maps arrive,
and a second ``/score`` of another photo. Prints one JSON object; the process is stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_page(url: str, proc: subprocess.Popen, deadline: float) -> None:
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"app.py exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit("the page did not come up in time")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photo", default=str(ROOT / "examples" / "coffee.jpg"))
    ap.add_argument("--second", default=str(ROOT / "examples" / "rocket.jpg"))
    ap.add_argument("--model", help="model name or card (default: the app's)")
    ap.add_argument("--timeout", type=float, default=180)
    args = ap.parse_args(argv)
    from gradio_client import Client, handle_file

    port = free_port()
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
           "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, str(ROOT / "app.py")] + (["--model", args.model] if args.model else [])
    t0 = time.time()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_for_page(url, proc, t0 + args.timeout)
        page = time.time() - t0
        client = Client(url, verbose=False)
        sent = time.time()
        job = client.submit(handle_file(args.photo), api_name="/score")
        first_score = None
        while not job.done():
            if first_score is None and job.outputs():
                first_score = time.time() - sent
            time.sleep(0.01)
        final = job.result()
        heat = time.time() - sent
        first_score = heat if first_score is None else first_score
        t = time.time()
        client.predict(handle_file(args.second), api_name="/score")
        second = time.time() - t
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    report = {"page_s": round(page, 2), "first_score_s": round(first_score, 2),
              "first_heatmaps_s": round(heat, 2), "second_score_with_heatmaps_s": round(second, 2),
              "score": final[0], "machine": f"{os.cpu_count()} CPU cores"}
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
