"""The CLI run as a user runs it: a real subprocess on real files."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from imagegen import blur, scene

ROOT = Path(__file__).resolve().parent.parent


def run(*args, cwd=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "afiqa", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("photos")
    (d / "sub").mkdir()
    Image.fromarray(scene(1)).save(d / "sharp.jpg", quality=95)
    Image.fromarray(blur(scene(1), 4)).save(d / "sub" / "blurred.png")
    Image.fromarray(scene(2)).save(d / "sub" / "fötö ñ.jpg")
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (d / "empty.png").write_bytes(b"")
    (d / "notes.txt").write_text("not an image and not an image extension: ignored in folders")
    return d


def test_score_folder_writes_the_csv_contract_and_exits_1_on_bad_files(folder, tiny_card_path, tmp_path):
    out = tmp_path / "scores.csv"
    heat = tmp_path / "heat"
    p = run("score", folder, "--csv", out, "--model", tiny_card_path, "--heatmaps", heat, "--batch-size", 2)
    assert p.returncode == 1, p.stderr
    assert "Traceback" not in p.stderr and "2 of 5 files could not be scored" in p.stderr
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert list(rows[0])[:4] == ["path", "score", "label", "error"]
    by_name = {Path(r["path"]).name: r for r in rows}
    assert set(by_name) == {"sharp.jpg", "blurred.png", "fötö ñ.jpg", "broken.jpg", "empty.png"}
    for name in ("sharp.jpg", "blurred.png", "fötö ñ.jpg"):
        r = by_name[name]
        assert 0 <= float(r["score"]) <= 100 and r["label"] and r["error"] == ""
        assert Path(r["heatmap"]).is_file()
    for name in ("broken.jpg", "empty.png"):
        r = by_name[name]
        assert r["score"] == "" and r["label"] == "" and r["error"] and "\n" not in r["error"]
    assert "empty" in by_name["empty.png"]["error"]
    assert float(by_name["sharp.jpg"]["score"]) > float(by_name["blurred.png"]["score"])
    assert "sharp.jpg" in p.stdout and "score" in p.stdout.splitlines()[0]


def test_all_good_files_exit_0(folder, tiny_card_path):
    p = run("score", folder / "sharp.jpg", folder / "sub", "--model", tiny_card_path, "--quiet")
    assert p.returncode == 0, p.stderr
    assert p.stdout == ""


def test_usage_errors_exit_2(folder, tiny_card_path, tmp_path):
    assert run("score").returncode == 2
    assert run("score", folder, "--batch-size", "0", "--model", tiny_card_path).returncode == 2
    p = run("score", folder, "--model", "no-such-model")
    assert p.returncode == 2 and "Unknown model" in p.stderr and "Traceback" not in p.stderr
    (tmp_path / "empty_dir").mkdir()
    assert run("score", tmp_path / "empty_dir", "--model", tiny_card_path).returncode == 2


def test_info_lists_version_backend_and_device():
    p = run("info")
    assert p.returncode == 0, p.stderr
    assert "afiqa" in p.stdout and "backend: " in p.stdout and "device: " in p.stdout
