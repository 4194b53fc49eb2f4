"""Deploying: the Space folder that scripts/build_space.py builds runs the app on its own, and
scripts/publish_model.py stages a Hub model repo with a model card. Both in --dry-run mode."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from hubserver import HubServer

ROOT = Path(__file__).resolve().parent.parent
from afiqa.runtime.zoo import DEFAULT_MODEL as M  # noqa: E402  (the default model is what is published and hosted)
MB = 1024 * 1024


def script(name, *args, env=None, cwd=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9", **(env or {})}
    env.pop("PYTHONPATH", None)  # the scripts find the package themselves
    return subprocess.run([sys.executable, str(ROOT / "scripts" / name), *map(str, args)], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=300)


def front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text[4:text.index("\n---\n", 4)])


def test_publish_dry_run_stages_weights_card_and_a_hub_model_card(tmp_path):
    stage = tmp_path / "stage"
    p = script("publish_model.py", "--stage", stage, "--repo", f"someone/{M}", "--dry-run")
    assert p.returncode == 0, p.stderr
    assert f"dry run: would create the model repo someone/{M}" in p.stdout
    card = json.loads((ROOT / "weights" / f"{M}.json").read_text())
    assert sorted(f.name for f in stage.iterdir()) == ["README.md", f"{M}.heads.npz", f"{M}.json", f"{M}.tflite",
                                                       f"{M}.weights.h5"]  # the LiteRT export and side heads too
    assert hashlib.sha256((stage / f"{M}.weights.h5").read_bytes()).hexdigest() == card["sha256"]
    lite = card["exports"]["litert"]
    assert hashlib.sha256((stage / f"{M}.tflite").read_bytes()).hexdigest() == lite["sha256"]
    assert json.loads((stage / f"{M}.json").read_text()) == card
    meta = front_matter((stage / "README.md").read_text(encoding="utf-8"))
    assert meta["license"] == "mit" and meta["library_name"] == "keras" and meta["datasets"] == ["BIQ2021"]
    assert "image-quality-assessment" in meta["tags"]
    (result,) = meta["model-index"][0]["results"]
    assert result["dataset"]["split"] == "test"
    values = {m["type"]: m["value"] for m in result["metrics"]}
    for key in ("srocc", "plcc", "krocc", "rmse"):
        assert values[key] == card["test_metrics"][key]


def test_publish_stages_a_tflite_beside_the_weights(tmp_path, tiny_card_path):
    tfl = tiny_card_path.parent / "afiqa-tiny.tflite"
    tfl.write_bytes(b"TFL3 stand-in")
    try:
        p = script("publish_model.py", "--model", tiny_card_path, "--stage", tmp_path / "s", "--dry-run")
    finally:
        tfl.unlink()
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "s" / "afiqa-tiny.tflite").read_bytes() == b"TFL3 stand-in"


def test_space_with_weights_in_lfs(tmp_path):
    out = tmp_path / "space"
    p = script("build_space.py", out, "--upload", "someone/afiqa", "--dry-run")
    assert p.returncode == 0, p.stderr
    assert "dry run: would create the Space someone/afiqa" in p.stdout and "(LFS)" in p.stdout
    for f in ("app.py", "requirements.txt", "afiqa/cli.py", "afiqa/io/csvout.py", f"weights/{M}.json",
              f"weights/{M}.weights.h5", "examples/coffee.jpg", ".gitattributes"):
        assert (out / f).is_file(), f
    meta = front_matter((out / "README.md").read_text(encoding="utf-8"))
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py"
    # requirements.txt installs the package (`-e .`, for a clone); the Space's copy does not (a Space
    # installs it before its files are there) and keeps every other requirement
    ours = [ln.strip() for ln in (ROOT / "requirements.txt").read_text().splitlines() if ln.strip() and ln[0] != "#"]
    space = [ln.strip() for ln in (out / "requirements.txt").read_text().splitlines() if ln.strip() and ln[0] != "#"]
    assert "-e ." in ours and space == [ln for ln in ours if ln != "-e ."]
    assert "leaves this line out" not in (out / "requirements.txt").read_text()  # nor the comment about that line
    # every file over 10 MB is in LFS for git (checked with git itself)
    subprocess.run(["git", "init", "-q", str(out)], check=True)
    big = [str(f.relative_to(out)) for f in out.rglob("*") if f.is_file() and f.stat().st_size > 10 * MB]
    assert big == [f"weights/{M}.weights.h5"]
    attrs = subprocess.run(["git", "-C", str(out), "check-attr", "filter", *big], capture_output=True, text=True,
                           check=True).stdout
    assert attrs.strip() == f"weights/{M}.weights.h5: filter: lfs"
    # ... and this repository's own weights stay plain git objects
    here = subprocess.run(["git", "-C", str(ROOT), "check-attr", "filter", f"weights/{M}.weights.h5"],
                          capture_output=True, text=True, check=True).stdout
    assert here.strip().endswith("filter: unspecified")


def test_space_build_refuses_a_folder_in_use(tmp_path):
    (tmp_path / "mine.txt").write_text("x")
    p = script("build_space.py", tmp_path, "--dry-run")
    assert p.returncode == 2 and "not empty" in p.stderr and "Traceback" not in p.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_built_space_runs_alone_with_weights_from_the_hub(tmp_path, tiny_card_path):
    from gradio_client import Client, handle_file

    card = json.loads(tiny_card_path.read_text())
    out = tmp_path / "space"
    p = script("build_space.py", out, "--model", tiny_card_path, "--weights-from", "hub", "--dry-run")
    assert p.returncode == 0, p.stderr
    assert not list(out.rglob("*.h5"))  # the weights come from the Hub at start
    assert front_matter((out / "README.md").read_text(encoding="utf-8"))["models"] == [card["hub_repo"]]

    # A clean venv that sees this environment's installed packages, but not this repository: a .pth line
    # adds site-packages to sys.path without running the .pth files there (the editable afiqa install).
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    here = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(purelib) / "ci-packages.pth").write_text("\n".join(sorted(here)) + "\n")
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "HF_HOME": str(tmp_path / "hf"),
           "TF_CPP_MIN_LOG_LEVEL": "2", "GRADIO_ANALYTICS_ENABLED": "False"}
    probe = subprocess.run([str(python), "-c", "import afiqa"], cwd=tmp_path, env=env, capture_output=True)
    assert probe.returncode != 0  # no afiqa outside the Space folder
    where = subprocess.run([str(python), "-c", "import afiqa, app; print(afiqa.__file__)"], cwd=out, env=env,
                           capture_output=True, text=True)
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(out)

    port = _free_port()
    with HubServer() as hub:
        weights = (tiny_card_path.parent / card["weights_file"]).read_bytes()
        hub.add(card["hub_repo"], card["weights_file"], weights, revision=card["hub_revision"])
        env |= {"HF_ENDPOINT": hub.url, "AFIQA_MODEL": f"weights/{card['name']}.json",
                "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port)}
        log = (tmp_path / "app.log").open("w+")
        app = subprocess.Popen([str(python), "app.py"], cwd=out, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            url, deadline = f"http://127.0.0.1:{port}/", time.monotonic() + 300
            while True:
                assert app.poll() is None, f"the Space's app exited:\n{(tmp_path / 'app.log').read_text()[-3000:]}"
                try:
                    with urllib.request.urlopen(url, timeout=5) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                assert time.monotonic() < deadline, (tmp_path / "app.log").read_text()[-3000:]
                time.sleep(0.5)
            assert hub.count("GET", card["weights_file"]) == 1
            client = Client(url, verbose=False, download_files=str(tmp_path / "dl"))
            result = client.predict(handle_file(str(out / "examples" / "coffee.jpg")), api_name="/score")
            client.close()
        finally:
            app.terminate()
            try:
                app.wait(20)
            except subprocess.TimeoutExpired:
                app.kill()
    score = result[0] if isinstance(result, (list, tuple)) else result
    assert 0 <= float(score) <= 100


def test_fetch_keras_weights_copies_from_a_cache_and_leaves_a_full_one_alone(tmp_path):
    source = Path(os.environ.get("KERAS_HOME") or "~/.keras").expanduser()  # the cache these tests use
    home = tmp_path / "keras"
    p = script("fetch_keras_weights.py", "--from", source, env={"KERAS_HOME": str(home)})
    assert p.returncode == 0, p.stderr
    for f in ("mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5", "mobilenet_1_0_224_tf_no_top.h5"):
        assert (home / "models" / f).read_bytes() == (source / "models" / f).read_bytes()
    stamp = {f: f.stat().st_mtime_ns for f in home.rglob("*")}
    p = script("fetch_keras_weights.py", env={"KERAS_HOME": str(home)})  # already there: nothing written
    assert p.returncode == 0 and "already in" in p.stdout, p.stderr
    assert {f: f.stat().st_mtime_ns for f in home.rglob("*")} == stamp
    p = script("fetch_keras_weights.py", "--from", tmp_path / "nothing", env={"KERAS_HOME": str(tmp_path / "k2")})
    assert p.returncode == 2 and "is not in" in p.stderr and "Traceback" not in p.stderr


def test_fetch_keras_weights_finds_the_shared_cache_beside_the_checkout_without_keras_home(tmp_path):
    """KERAS_HOME unset: the offline cache ../shared/keras beside the checkout is the one used (as
    tests/conftest.py picks it), so the README's test command passes offline without an export."""
    source = Path(os.environ.get("KERAS_HOME") or "~/.keras").expanduser()
    clone, shared = tmp_path / "clone", tmp_path / "shared" / "keras" / "models"
    (clone / "scripts").mkdir(parents=True)
    (clone / "scripts" / "fetch_keras_weights.py").write_bytes((ROOT / "scripts" / "fetch_keras_weights.py").read_bytes())
    shared.mkdir(parents=True)
    for f in ("mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5", "mobilenet_1_0_224_tf_no_top.h5"):
        (shared / f).symlink_to(source / "models" / f)
    env = {k: v for k, v in os.environ.items() if k not in ("KERAS_HOME", "PYTHONPATH")} | {"HOME": str(tmp_path)}
    p = subprocess.run([sys.executable, str(clone / "scripts" / "fetch_keras_weights.py")], capture_output=True,
                       text=True, env=env, cwd=tmp_path, timeout=120)
    assert p.returncode == 0, p.stderr
    assert f"already in {shared}" in p.stdout
    assert not (tmp_path / ".keras").exists()  # nothing went to ~/.keras
