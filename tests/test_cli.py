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


# -- issue 16: outputs are checked before the model loads; a photo is never written over ----------
def one_line_usage_error(p, *words):
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert "Unknown model" not in p.stderr, "the model was looked up before the outputs were checked"
    for w in words:
        assert w in p.stderr, p.stderr


@pytest.fixture
def photos(tmp_path):
    d = tmp_path / "photos"
    d.mkdir()
    for k in range(3):
        Image.fromarray(scene(k)).save(d / f"IMG_{k}.jpg", quality=90)
    return d


def test_csv_glob_never_overwrites_the_first_photo(photos):
    before = {f.name: f.read_bytes() for f in photos.iterdir()}
    # the shell's expansion of `afiqa score --csv *.jpg`; "no-such-model" shows nothing got that far
    p = run("score", "--csv", *sorted(before), "--model", "no-such-model", cwd=photos)
    one_line_usage_error(p, "--csv IMG_0.jpg", "names an image")
    assert {f.name: f.read_bytes() for f in photos.iterdir()} == before
    (photos / "IMG_0.jpg").rename(photos / "IMG_0")  # no extension: still one of the photos
    p = run("score", "--csv", "IMG_0", "IMG_0", "--model", "no-such-model", cwd=photos)
    one_line_usage_error(p, "names an image")
    assert (photos / "IMG_0").read_bytes() == before["IMG_0.jpg"]


def test_csv_refuses_existing_files_that_are_not_csv(photos, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    p = run("score", photos, "--csv", notes, "--model", "no-such-model")
    one_line_usage_error(p, "is not a CSV file")
    assert notes.read_text() == "my notes\n"
    old = tmp_path / "old-scores.txt"  # afiqa's own CSV under another name may be replaced
    old.write_text("path,score,label,error,heatmap\n")
    assert "Unknown model" in run("score", photos, "--csv", old, "--model", "no-such-model").stderr


@pytest.mark.parametrize("case", ["csv-folder", "csv-missing-parent", "heatmaps-file", "heatmaps-under-file"])
def test_bad_output_paths_are_one_line_before_the_model_loads(photos, tmp_path, case):
    afile = tmp_path / "afile.png"
    afile.write_bytes(b"a user's file")
    args, words = {
        "csv-folder": (["--csv", tmp_path], ["is a folder"]),
        "csv-missing-parent": (["--csv", tmp_path / "no" / "scores.csv"], ["does not exist"]),
        "heatmaps-file": (["--heatmaps", afile], ["is a file, not a folder"]),
        "heatmaps-under-file": (["--heatmaps", afile / "heat"], ["is a file, not a folder"]),
    }[case]
    p = run("score", photos, *args, "--model", "no-such-model")
    one_line_usage_error(p, *words)
    assert afile.read_bytes() == b"a user's file"


def test_a_write_error_is_one_line_and_leaves_the_old_csv(photos, tiny_card_path, tmp_path):
    import resource
    import signal

    out = tmp_path / "scores.csv"
    out.write_text("path,score,label,error,heatmap\nkept,1.000,bad,,\n")
    for k in range(60):  # rows of ~100 bytes: the CSV outgrows the limit, TensorFlow's own small files do not
        os.link(photos / "IMG_0.jpg", photos / f"IMG_0_copy_{k:02d}_with_a_long_name_to_make_the_row_longer.jpg")

    def small_files():  # the OS refuses writes past 4 KB (EFBIG): a full disk, for one file
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    p = subprocess.run([sys.executable, "-m", "afiqa", "score", photos, "--csv", out, "--model", tiny_card_path,
                        "--batch-size", "1", "--quiet"], capture_output=True, text=True, env=env, timeout=300,
                       preexec_fn=small_files)
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert f"could not write {out}: File too large" in p.stderr
    assert out.read_text() == "path,score,label,error,heatmap\nkept,1.000,bad,,\n"
    assert [f.name for f in tmp_path.iterdir() if f.name.endswith(".part")] == []


def test_ctrl_c_leaves_a_valid_partial_csv(tiny_card_path, tmp_path):
    import signal
    import time

    d = tmp_path / "many"
    d.mkdir()
    Image.fromarray(scene(1)).save(d / "0000.jpg", quality=90)
    for k in range(1, 3000):  # links: many photos for nothing, so a busy machine cannot finish before the Ctrl-C
        os.link(d / "0000.jpg", d / f"{k:04d}.jpg")
    out = tmp_path / "scores.csv"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # Ctrl-C as at a terminal: a runner started in the background (``cmd &``) ignores SIGINT, and an ignored
    # signal is inherited, so Python in the child would never raise KeyboardInterrupt
    proc = subprocess.Popen([sys.executable, "-m", "afiqa", "score", d, "--csv", out, "--model", tiny_card_path,
                             "--batch-size", "1", "--quiet"], env=env, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            parts = [f for f in tmp_path.iterdir() if f.name.endswith(".part")]
            if parts and parts[0].read_text().count("\n") >= 4:
                break
            time.sleep(0.05)
        assert not out.exists()  # the rows go to a temporary file until the end
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err, err
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert 3 <= len(rows) < 3000 and all(float(r["score"]) >= 0 for r in rows)
    assert [f.name for f in tmp_path.iterdir() if f.name.endswith(".part")] == []


# -- every path that looks like an image gets a row; names are printed escaped; cells are safe --------
@pytest.mark.skipif(sys.platform != "linux", reason="FIFOs, /dev/zero and such file names are POSIX")
def test_special_files_get_rows_and_names_are_escaped(tiny_card_path, tmp_path):
    d = tmp_path / "odd"
    d.mkdir()
    Image.fromarray(scene(1)).save(d / "fine.jpg", quality=90)
    os.mkfifo(d / "pipe.jpg")
    (d / "zero.png").symlink_to("/dev/zero")
    (d / "y.jpg").mkdir()
    evil = "\x1b[31mred\x1b[0m\nfake row.jpg"
    Image.fromarray(scene(2)).save(d / evil, format="JPEG")
    Image.fromarray(scene(3)).save(d / "=HYPERLINK(1).jpg", format="JPEG")
    import pillow_heif

    pillow_heif.from_pillow(Image.fromarray(scene(4))).save(d / "IMG_0001.HEIC", quality=90)  # an iPhone photo
    out = tmp_path / "scores.csv"
    p = run("score", "=HYPERLINK(1).jpg", ".", "--csv", out, "--model", tiny_card_path, cwd=d)
    assert p.returncode == 1, p.stderr
    assert "\x1b" not in p.stdout + p.stderr and "\\x1b[31mred\\x1b[0m\\nfake row.jpg" in p.stdout
    lines = p.stdout.splitlines()
    assert len(lines) == 1 + 8, p.stdout  # the header and one line per path: the newline did not split one
    rows = list(csv.DictReader(out.open(encoding="utf-8", newline="")))
    by_path = {r["path"]: r for r in rows}
    # the photo named =HYPERLINK(1).jpg (given by name and found in the folder) as ./=HYPERLINK(1).jpg
    assert len(rows) == 8 and set(by_path) == {"./=HYPERLINK(1).jpg", "fine.jpg", "pipe.jpg", "zero.png", "y.jpg",
                                               "IMG_0001.HEIC", evil}
    assert "FIFO" in by_path["pipe.jpg"]["error"] and "device" in by_path["zero.png"]["error"]
    assert "folder" in by_path["y.jpg"]["error"]
    assert by_path[evil]["score"] and by_path["fine.jpg"]["score"] and by_path["IMG_0001.HEIC"]["score"]
    assert not any(cell.startswith(("=", "+", "-", "@")) for r in rows for cell in r.values())


def test_an_unreadable_subfolder_gets_a_row(tiny_card_path, tmp_path, monkeypatch, capsys):
    from afiqa.cli import main

    d = tmp_path / "photos"
    (d / "locked").mkdir(parents=True)
    Image.fromarray(scene(1)).save(d / "a.jpg", quality=90)
    Image.fromarray(scene(2)).save(d / "locked" / "b.jpg", quality=90)
    locked = str(d / "locked")
    real_scandir = os.scandir

    def scandir(path="."):  # what a user without permission gets (this may run as root)
        if os.fspath(path) == locked:
            raise PermissionError(13, "Permission denied", locked)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    out = tmp_path / "scores.csv"
    assert main(["score", str(d), "--csv", str(out), "--model", str(tiny_card_path), "--quiet"]) == 1
    rows = {Path(r["path"]).name: r for r in csv.DictReader(out.open(encoding="utf-8"))}
    assert set(rows) == {"a.jpg", "locked"}
    assert "could not be read (Permission denied)" in rows["locked"]["error"] and rows["a.jpg"]["score"]
    assert "1 of 2 files could not be scored" in capsys.readouterr().err


def test_a_good_run_logs_nothing_and_a_user_error_is_one_line(folder, tiny_card_path):
    p = run("score", folder / "sharp.jpg", "--model", tiny_card_path)
    assert p.returncode == 0 and p.stderr == "", p.stderr  # no TensorFlow banners, no warnings
    p = run("score", folder / "sharp.jpg", "--model", tiny_card_path, "--weights", folder / "nope.h5")
    assert p.returncode == 2 and len(p.stderr.splitlines()) == 1 and "does not exist" in p.stderr, p.stderr


def test_a_reader_that_leaves_stops_the_run_quietly_and_keeps_the_csv(folder, tiny_card_path, tmp_path):
    """`afiqa score DIR --csv OUT | head -1`: no traceback, the rows so far kept."""
    out = tmp_path / "s.csv"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.Popen([sys.executable, "-m", "afiqa", "score", str(folder), "--csv", str(out), "--model",
                          str(tiny_card_path), "--batch-size", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=env)
    assert b"score" in p.stdout.readline()  # the header; then the reader goes
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait(timeout=300) in (0, 1, 141), err  # 0/1: it finished before it noticed
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert all(r["path"] for r in rows)


@pytest.mark.parametrize("level, hidden", [("2", True), ("0", False)])
def test_tensorflows_start_up_notice_is_kept_off_stderr_and_nothing_else(tmp_path, level, hidden):
    """TensorFlow 2.21 writes its oneDNN notice to fd 2 whatever TF_CPP_MIN_LOG_LEVEL says
    (on AVX-512 processors); a stand-in ``tensorflow`` package writes the same lines, and one
    of its own, at import. The filter drops only the notice, only when INFO logs are off, and
    a ``find_spec`` before the import (as afiqa.runtime.has_keras does) must not disarm it."""
    fake = tmp_path / "tensorflow"
    fake.mkdir()
    notice = ("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
              "I0000 00:00:1796290134.663809    7900 port.cc:153] oneDNN custom operations are on. You may see "
              "slightly different numerical results.\n")
    (fake / "__init__.py").write_text(f"import os\nos.write(2, {(notice * 2 + 'a real warning' + chr(10)).encode()!r})\n")
    code = ("import importlib.util, sys\nfrom afiqa.runtime import quiet\nquiet.install()\n"
            "assert importlib.util.find_spec('tensorflow')\nimport tensorflow\nprint('after', file=sys.stderr)\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}", "TF_CPP_MIN_LOG_LEVEL": level}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stderr == ("" if hidden else notice * 2) + "a real warning\nafter\n"
