"""Bad and unusual inputs through the Python API and the CLI: a clear one-line error that
names the file, or a correct score; never a crash, and never a good file lost."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from afiqa.errors import ImageError
from imagegen import blur, jpeg_bytes, scene

ROOT = Path(__file__).resolve().parent.parent
# pytest resets warning filters per test; outside pytest afiqa silences this itself (the CLI test checks).
pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")


def _bomb(path):
    Image.new("L", (12000, 9000), 90).save(path)  # 108 MP in ~100 kB


def _truncated(path):
    path.write_bytes(jpeg_bytes(scene(20))[:1500])


BAD = {  # file name -> (how to make it, words its error must contain)
    "truncated.jpg": (_truncated, "truncated"),
    "empty.jpg": (lambda p: p.write_bytes(b""), "empty"),
    "text.jpg": (lambda p: p.write_text("hello, not a JPEG\n" * 30), "not an image"),
    "random.png": (lambda p: p.write_bytes(np.random.default_rng(2).bytes(3000)), "not an image"),
    "one_pixel.png": (lambda p: Image.new("RGB", (1, 1)).save(p), "1x1"),
    "sliver.png": (lambda p: Image.new("RGB", (4000, 12), "gray").save(p), "4000x12"),
    "bomb.png": (_bomb, "megapixels"),
}


def _good(d: Path) -> dict[str, Path]:
    """Unusual but valid images, each paired with the plain RGB it must score like."""
    base = scene(21, size=(160, 120))
    out = {}
    Image.fromarray(base).convert("L").save(d / "gray.png")
    rgba = np.dstack([base, np.full(base.shape[:2], 255, np.uint8)])
    rgba[:10, :10, 3] = 0
    Image.fromarray(rgba).save(d / "rgba.png")
    p = Image.fromarray(base).convert("P", palette=Image.Palette.ADAPTIVE)
    p.save(d / "palette.png")
    p.save(d / "palette_transparent.gif", transparency=int(np.asarray(p)[0, 0]))
    Image.fromarray(base).convert("CMYK").save(d / "cmyk.jpg", quality=95)
    cv2.imwrite(str(d / "rgb16.png"), cv2.cvtColor(base.astype(np.uint16) * 257, cv2.COLOR_RGB2BGR))
    Image.fromarray(base).save(d / "fötö ñ 写真.jpg", quality=95)
    for f in sorted(d.iterdir()):
        out[f.name] = f
    return out


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("mixed")
    for name, (make, _) in BAD.items():
        make(d / name)
    _good(d)
    return d


def test_score_raises_one_sentence_naming_the_file(folder, tiny_predictor):
    for name, (_, needle) in BAD.items():
        path = folder / name
        with pytest.raises(ImageError) as info:
            tiny_predictor.score(path)
        msg = str(info.value)
        assert msg.startswith(f"{path}: ") and needle in msg and "\n" not in msg, msg


def test_batch_scores_every_good_file_and_reports_every_bad_one(folder, tiny_predictor):
    files = sorted(folder.iterdir())
    tiny_predictor.batch_size = 3
    results = tiny_predictor.score_batch(files)
    assert [r.source for r in results] == [str(f) for f in files]
    for f, r in zip(files, results):
        if f.name in BAD:
            assert not r.ok and r.error.startswith(str(f)) and BAD[f.name][1] in r.error
        else:
            assert r.ok and 0 <= r.score <= 100 and r.error == "", (f.name, r.error)
    good = [f for f in files if f.name not in BAD]
    alone = [tiny_predictor.score(f).score for f in good]
    np.testing.assert_allclose([r.score for r in results if r.ok], alone, atol=1e-3)


def test_unusual_modes_score_like_their_plain_rgb(folder, tiny_predictor):
    base = scene(21, size=(160, 120))
    plain = tiny_predictor.score(base).score
    gray = tiny_predictor.score(np.asarray(Image.fromarray(base).convert("L"))).score
    assert tiny_predictor.score(folder / "gray.png").score == pytest.approx(gray, abs=1e-3)
    assert tiny_predictor.score(folder / "rgb16.png").score == pytest.approx(plain, abs=0.5)
    assert tiny_predictor.score(folder / "palette.png").score == pytest.approx(plain, abs=3)
    assert tiny_predictor.score(folder / "cmyk.jpg").score == pytest.approx(plain, abs=3)


def test_a_16_bit_gradient_scores_like_its_8_bit_version(tmp_path, tiny_predictor):
    h, w = 120, 160
    ramp16 = np.round(np.add.outer(np.linspace(0, 30000, h), np.linspace(0, 35535, w))).astype(np.uint16)
    ramp8 = np.round(ramp16 / 257.0).astype(np.uint8)
    Image.fromarray(ramp16).save(tmp_path / "g16.png")
    Image.fromarray(ramp8).save(tmp_path / "g8.png")
    s16 = tiny_predictor.score(tmp_path / "g16.png").score
    s8 = tiny_predictor.score(tmp_path / "g8.png").score
    assert s16 == pytest.approx(s8, abs=1e-3)  # identical pixels after the 0..65535 -> 0..255 map
    dark = tiny_predictor.score(np.full((h, w), 200, np.uint16)).score  # 16-bit 200 is nearly black
    assert dark == pytest.approx(tiny_predictor.score(np.full((h, w), 1, np.uint8)).score, abs=1e-3)


def test_an_animated_gif_scores_its_first_frame(tmp_path, tiny_predictor):
    frames = [Image.fromarray(blur(scene(30 + k), 3 * k)) for k in range(3)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=80, loop=0)
    frames[0].save(tmp_path / "first.gif")
    frames[2].save(tmp_path / "last.gif")
    anim = tiny_predictor.score(tmp_path / "anim.gif").score
    assert anim == pytest.approx(tiny_predictor.score(tmp_path / "first.gif").score, abs=1e-4)
    assert anim != pytest.approx(tiny_predictor.score(tmp_path / "last.gif").score, abs=1e-4)


def test_an_exif_rotated_jpeg_scores_like_the_upright_one(tmp_path, tiny_predictor):
    upright = scene(40, size=(160, 96))
    exif = Image.Exif()
    exif[0x0112] = 8  # stored turned 90 degrees clockwise; shown after turning it back
    Image.fromarray(np.ascontiguousarray(np.rot90(upright, -1))).save(
        tmp_path / "rot.jpg", quality=98, exif=exif.tobytes())
    Image.fromarray(upright).save(tmp_path / "up.jpg", quality=98)
    r = tiny_predictor.score(tmp_path / "rot.jpg", heatmaps=True)
    assert r.image.shape == upright.shape  # the heat-map image is upright too
    assert r.score == pytest.approx(tiny_predictor.score(tmp_path / "up.jpg").score, abs=1.5)


def test_a_large_jpeg_is_scored_from_a_reduced_decode(tmp_path, tiny_predictor):
    big = cv2.resize(scene(41, size=(300, 200)), (6000, 4000), interpolation=cv2.INTER_CUBIC)
    Image.fromarray(big).save(tmp_path / "large.jpg", quality=90)
    small = cv2.resize(big, (600, 400), interpolation=cv2.INTER_AREA)
    r = tiny_predictor.score(tmp_path / "large.jpg", heatmaps=True)
    assert r.ok and r.image.shape == (500, 750, 3)  # decoded at 1/8: the tiny model needs only 96 px
    assert r.score == pytest.approx(tiny_predictor.score(small).score, abs=3)


# -- the CLI ---------------------------------------------------------------------------------------
def run(*args, env_extra=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "afiqa", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300, errors="replace")


def test_cli_scores_the_good_files_and_reports_each_bad_one_on_one_line(folder, tiny_card_path, tmp_path):
    extra = tmp_path / "extra"
    extra.mkdir()
    raw = os.path.join(os.fsencode(extra), b"caf\xe9.jpg")  # a file name that is not UTF-8
    with open(raw, "wb") as f:
        f.write(jpeg_bytes(scene(50)))
    out = tmp_path / "scores.csv"
    p = run("score", folder, extra, "--csv", out, "--model", tiny_card_path, "--batch-size", 4,
            env_extra={"PYTHONIOENCODING": "ascii"})  # a terminal that cannot print the names
    assert p.returncode == 1, p.stderr
    assert "Traceback" not in p.stderr and "DecompressionBombWarning" not in p.stderr, p.stderr
    n_files = len(list(folder.iterdir())) + 1
    assert f"{len(BAD)} of {n_files} files could not be scored" in p.stderr
    with open(out, newline="", encoding="utf-8", errors="surrogateescape") as f:
        rows = {os.fsencode(r["path"]): r for r in csv.DictReader(f)}
    assert len(rows) == n_files and raw in rows
    for path, r in rows.items():
        name = os.fsdecode(os.path.basename(path))
        if name in BAD:
            assert r["score"] == "" and r["label"] == "", r
            assert r["error"].startswith(os.fsdecode(path)) and BAD[name][1] in r["error"]
            assert "\n" not in r["error"]
        else:
            assert 0 <= float(r["score"]) <= 100 and r["error"] == "", r
    error_lines = [line for line in p.stdout.splitlines() if " error " in line]
    assert len(error_lines) == len(BAD)


def test_cli_weights_missing_or_garbage_is_one_sentence_and_exit_2(folder, tiny_card_path, tmp_path):
    garbage = tmp_path / "garbage.weights.h5"
    garbage.write_bytes(np.random.default_rng(3).bytes(4096))
    for weights, needle in ((tmp_path / "missing.weights.h5", "does not exist"), (garbage, "could not be loaded")):
        p = run("score", folder / "gray.png", "--model", tiny_card_path, "--weights", weights)
        assert p.returncode == 2, p.stderr
        assert "Traceback" not in p.stderr and p.stdout == ""
        lines = [line for line in p.stderr.splitlines() if line.startswith("afiqa: ")]
        assert len(lines) == 1 and needle in lines[0] and str(weights) in lines[0], p.stderr
