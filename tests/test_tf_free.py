"""Scoring with nothing but ``pip install -e .``: LiteRT, no TensorFlow, no Keras.

Each check runs in a fresh interpreter where importing keras, tensorflow, jax or torch
fails, as in a virtualenv made by ``pip install -e .`` alone (CI also runs this file in
such a virtualenv). The shipped model's LiteRT export scores files, folders and arrays;
a heat-map request gets one sentence saying what to install.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.tf_free

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
BLOCKED = ("keras", "tensorflow", "jax", "torch")

BLOCKER = f'''
import importlib.abc, sys

class _NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, _NotInstalled())
'''


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    site = tmp_path_factory.mktemp("no_tf_site")
    (site / "sitecustomize.py").write_text(BLOCKER)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)]), "HF_HUB_OFFLINE": "1"}


def run(env, *args, code: str | None = None):
    cmd = [sys.executable, "-c", textwrap.dedent(code)] if code else [sys.executable, "-m", "afiqa", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, cwd=ROOT)


def test_the_blocker_blocks(env):
    p = run(env, code="import keras")
    assert p.returncode == 1 and "No module named 'keras'" in p.stderr


def test_score_a_file_and_a_folder_through_litert(env, tmp_path):
    p = run(env, "score", EXAMPLES / "coffee.jpg", "--quiet", "--csv", tmp_path / "one.csv")
    assert p.returncode == 0, p.stderr
    p = run(env, "score", EXAMPLES, "--csv", tmp_path / "all.csv")
    assert p.returncode == 0, p.stderr
    import csv

    rows = {Path(r["path"]).name: float(r["score"]) for r in csv.DictReader((tmp_path / "all.csv").open())}
    one = next(csv.DictReader((tmp_path / "one.csv").open()))
    assert len(rows) == len(list(EXAMPLES.glob("*.jpg"))) and float(one["score"]) == rows["coffee.jpg"]
    for name in ("coffee_blur.jpg", "coffee_noise.jpg", "coffee_jpeg.jpg"):  # the real model at work
        assert rows[name] < rows["coffee.jpg"] - 5, rows


def test_score_arrays_through_the_api_without_importing_keras(env):
    p = run(env, code=f"""
        import sys
        import numpy as np
        from afiqa import Predictor
        from afiqa.io.inputs import load_rgb
        p = Predictor()
        assert p.runtime.name == "litert", p.choice
        rgb = load_rgb({str(EXAMPLES / 'coffee.jpg')!r})
        a, b = p.score(rgb), p.score(rgb.astype(np.float32) / 255)
        assert abs(a.score - b.score) < 1e-3 and a.label
        assert [r.ok for r in p.score_batch([rgb, np.zeros((4, 4, 3), np.uint8)])] == [True, False]
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in {BLOCKED!r})
        assert not heavy, heavy
        print("ok", p.choice.reason)
    """)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("ok fastest available here")


def test_heatmaps_without_tensorflow_say_what_to_install(env, tmp_path):
    p = run(env, "score", EXAMPLES / "coffee.jpg", "--heatmaps", tmp_path / "heat")
    assert p.returncode == 2
    msg = p.stderr.strip()
    assert len(msg.splitlines()) == 1 and "Traceback" not in msg, msg
    assert 'pip install "afiqa[tf]"' in msg and "Heat-maps" in msg
    p = run(env, code="""
        from afiqa import Predictor
        from afiqa.errors import AfiqaError
        try:
            Predictor().score("examples/coffee.jpg", heatmaps=True)
        except AfiqaError as e:
            print(e)
    """)
    assert 'pip install "afiqa[tf]"' in p.stdout, p.stderr
    p = run(env, "score", EXAMPLES / "coffee.jpg", "--runtime", "keras")
    assert p.returncode == 2 and 'pip install "afiqa[tf]"' in p.stderr


def test_info_without_tensorflow(env):
    p = run(env, "info")
    assert p.returncode == 0, p.stderr
    assert "runtime: litert" in p.stdout and "Keras/TensorFlow not installed" in p.stdout
