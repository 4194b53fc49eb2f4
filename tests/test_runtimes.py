"""The runtime seam: LiteRT and Keras score alike, auto picks and says why, the export
is recorded and found like the weights (explicit file, the card's folder, the Hub)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imagegen import blur, jpeg_bytes, scene

ROOT = Path(__file__).resolve().parent.parent


def test_export_is_recorded_in_the_card(tiny_litert_card_path):
    from afiqa.runtime.weights import sha256_of

    card = json.loads(tiny_litert_card_path.read_text())
    rec = card["exports"]["litert"]
    tflite = tiny_litert_card_path.parent / rec["file"]
    assert tflite.is_file() and rec["file"] == "afiqa-tiny.tflite"
    assert rec["sha256"] == sha256_of(tflite) and rec["bytes"] == tflite.stat().st_size
    assert rec["precision"] == "fp32" and rec["n_check"] == 6 and rec["check_set"] == "6 synthetic scenes"
    assert 0 <= rec["mean_score_diff"] <= rec["max_score_diff"] <= rec["tolerance"] == 0.5
    assert card["sha256"] and card["config"]["image_size"] == 96  # the rest of the card kept


def test_onnx_export_is_checked_with_onnx_runtime_and_recorded_beside_litert(tiny_litert_card_path, tmp_path):
    """Issue 14's second format: tf2onnx converts this TensorFlow/Keras; ONNX Runtime runs it."""
    import onnxruntime

    from afiqa.runtime.export import export
    from afiqa.io.inputs import load_rgb, to_model_input
    from afiqa.predictor import Predictor
    from afiqa.runtime.weights import sha256_of

    d = tmp_path / "m"
    shutil.copytree(tiny_litert_card_path.parent, d)
    card_path = d / tiny_litert_card_path.name
    check = sorted(d.glob("check_*.png"))
    rec = export(card_path, "onnx", check=check, check_name="6 synthetic scenes")
    onnx_file = d / "afiqa-tiny.onnx"
    card = json.loads(card_path.read_text())
    assert card["exports"]["onnx"]["file"] == "afiqa-tiny.onnx" and "litert" in card["exports"]  # both kept
    assert rec["precision"] == "fp32" and rec["sha256"] == sha256_of(onnx_file) and "tf2onnx" in rec["converter"]
    assert 0 <= rec["max_score_diff"] <= 0.05, rec  # fp32 both sides
    # a user's own ONNX Runtime session gives afiqa's score for the same photo
    keras_p = Predictor(card_path, runtime="keras")
    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    x = to_model_input(load_rgb(check[0], min_size=96), 96)[None].astype(np.float32)
    raw = float(session.run(None, {session.get_inputs()[0].name: x})[0].reshape(-1)[0])
    assert abs(keras_p.card.to_score(raw) - keras_p.score(check[0]).score) <= 0.05
    from afiqa.errors import AfiqaError

    with pytest.raises(AfiqaError, match="fp32 only|choose one of fp32"):
        export(card_path, "onnx", "fp16", check=check, force=True)


def test_export_refuses_to_replace_a_file(tiny_litert_card_path):
    from afiqa.errors import AfiqaError
    from afiqa.runtime.export import export

    before = (tiny_litert_card_path.parent / "afiqa-tiny.tflite").read_bytes()
    with pytest.raises(AfiqaError, match="already exists; pass --force"):
        export(tiny_litert_card_path, "litert", "fp32")
    assert (tiny_litert_card_path.parent / "afiqa-tiny.tflite").read_bytes() == before


@pytest.fixture(scope="module")
def both(tiny_litert_card_path):
    from afiqa.predictor import Predictor

    return Predictor(tiny_litert_card_path), Predictor(tiny_litert_card_path, runtime="keras")


def test_auto_picks_litert_and_says_why(both):
    lite, keras_p = both
    # each runtime's own batch: one photo at a time on LiteRT (as fast, far less memory), 8 on Keras
    assert (lite.batch_size, keras_p.batch_size) == (1, 8)
    assert lite.runtime.name == "litert" and lite.choice.name == "litert"
    assert "fastest available" in lite.choice.reason and "fp32" in lite.choice.reason
    assert lite.weights_path.name == "afiqa-tiny.tflite"
    assert keras_p.runtime.name == "keras" and keras_p.choice.reason == "asked for"
    assert lite._keras is None  # no Keras model built for scores


def test_runtimes_agree_on_every_test_image_within_the_recorded_tolerance(both, tiny_litert_card_path):
    lite, keras_p = both
    tol = json.loads(tiny_litert_card_path.read_text())["exports"]["litert"]["tolerance"]
    images = [scene(k) for k in range(6)] + [blur(scene(k), 3) for k in range(3)]
    images += [jpeg_bytes(scene(k), 10) for k in range(3)] + sorted((ROOT / "examples").glob("*.jpg"))
    a = [r.score for r in lite.score_batch(images)]
    b = [r.score for r in keras_p.score_batch(images)]
    assert all(s is not None for s in a + b)
    diff = np.abs(np.subtract(a, b))
    assert diff.max() <= tol, diff
    assert np.ptp(a) > 10  # the images do differ: agreement is not trivial


def test_batches_of_every_size_give_the_same_scores_on_litert(both):
    lite, _ = both
    images = [scene(k) for k in range(5)]
    alone = [lite.score(im).score for im in images]
    lite.batch_size = 3  # 3 then 2: the interpreter is resized both ways
    try:
        batched = [r.score for r in lite.score_batch(images)]
    finally:
        lite.batch_size = 8
    np.testing.assert_allclose(batched, alone, atol=1e-3)


def test_heatmaps_on_litert_build_keras_lazily(tiny_litert_card_path):
    from afiqa.predictor import Predictor

    p = Predictor(tiny_litert_card_path)
    img = scene(3)
    plain = p.score(img).score
    assert p._keras is None
    r = p.score(img, heatmaps=True)
    assert p._keras is not None and r.heatmaps["fused"].ndim == 2  # at the model's resolution
    assert r.image.shape == img.shape and r.heatmaps["fused"].shape[0] < img.shape[0]
    assert abs(r.score - plain) <= 0.5
    assert p.warm(heatmaps=True, background=True).join(60) is None


def test_litert_without_an_export(tiny_card_path):
    from afiqa.errors import AfiqaError
    from afiqa.predictor import Predictor

    with pytest.raises(AfiqaError, match="no LiteRT export.*afiqa export --model afiqa-tiny --format litert"):
        Predictor(tiny_card_path, runtime="litert")
    p = Predictor(tiny_card_path)
    assert p.runtime.name == "keras" and "no LiteRT export" in p.choice.reason


def test_unknown_runtime_and_mismatched_files(tiny_litert_card_path):
    from afiqa.errors import AfiqaError
    from afiqa.predictor import Predictor

    with pytest.raises(AfiqaError, match="Unknown runtime 'onnx'; choose one of auto, litert, litert-int8, keras"):
        Predictor(tiny_litert_card_path, runtime="onnx")
    tflite = tiny_litert_card_path.parent / "afiqa-tiny.tflite"
    with pytest.raises(AfiqaError, match="needs a .weights.h5 file"):
        Predictor(tiny_litert_card_path, weights=tflite, runtime="keras")
    with pytest.raises(AfiqaError, match="needs a .tflite file"):
        Predictor(tiny_litert_card_path, weights=tiny_litert_card_path.parent / "afiqa-tiny.weights.h5",
                  runtime="litert")


def test_explicit_tflite_and_damaged_files(tiny_litert_card_path, tmp_path):
    from afiqa.errors import WeightsError
    from afiqa.predictor import Predictor

    tflite = tiny_litert_card_path.parent / "afiqa-tiny.tflite"
    own = tmp_path / "own.tflite"
    shutil.copy(tflite, own)
    p = Predictor(tiny_litert_card_path, weights=own)
    assert p.runtime.name == "litert" and p.weights_path == own and p.choice.reason == "a LiteRT file was given"
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"TFL3" + b"\0" * 100)
    with pytest.raises(WeightsError, match="could not be loaded as a LiteRT model"):
        Predictor(tiny_litert_card_path, weights=bad)
    # a damaged export in the card's folder is refused by its sha256
    d = tmp_path / "card"
    shutil.copytree(tiny_litert_card_path.parent, d)
    (d / "afiqa-tiny.tflite").write_bytes(tflite.read_bytes()[:-10])
    with pytest.raises(WeightsError, match="sha256"):
        Predictor(d / tiny_litert_card_path.name, runtime="litert")


def test_the_export_is_fetched_from_the_hub_like_the_weights(tiny_litert_card_path, tmp_path, monkeypatch):
    import huggingface_hub.constants

    from afiqa.predictor import Predictor
    from hubserver import HubServer

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    card = json.loads(tiny_litert_card_path.read_text())
    d = tmp_path / "card_only"
    d.mkdir()
    (d / "card.json").write_text(json.dumps(card))
    with HubServer() as hub:
        hub.add(card["hub_repo"], "afiqa-tiny.tflite", (tiny_litert_card_path.parent / "afiqa-tiny.tflite").read_bytes())
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        p = Predictor(d / "card.json")
        assert p.runtime.name == "litert" and p.weights_path.is_relative_to(tmp_path / "hub")
        assert hub.count("GET", "afiqa-tiny.tflite") == 1
    assert 0 <= p.score(scene(1)).score <= 100


def _cli(*args):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "afiqa", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300)


def test_cli_and_api_give_the_same_score_on_each_runtime(tiny_litert_card_path, tmp_path, both):
    files = []
    for k in range(3):
        files.append(tmp_path / f"p{k}.jpg")
        Image.fromarray(blur(scene(40 + k), k)).save(files[-1], quality=92)
    got = {}
    for rt in ("litert", "keras"):
        out = tmp_path / f"{rt}.csv"
        p = _cli("score", *files, "--model", tiny_litert_card_path, "--runtime", rt, "--csv", out, "--quiet")
        assert p.returncode == 0 and p.stderr == "", p.stderr  # issue 16: no runtime banners on a good run
        got[rt] = [float(r["score"]) for r in csv.DictReader(out.open())]
    lite, keras_p = both
    np.testing.assert_allclose(got["litert"], [lite.score(f).score for f in files], atol=5e-3 + 1e-6)  # CSV: 2 decimals
    np.testing.assert_allclose(got["keras"], [keras_p.score(f).score for f in files], atol=5e-3 + 1e-6)
    assert np.abs(np.subtract(got["litert"], got["keras"])).max() <= 0.5


def test_info_says_which_runtime_and_why():
    p = _cli("info")
    assert p.returncode == 0, p.stderr
    line = next(x for x in p.stdout.splitlines() if x.startswith("runtime: "))
    assert "litert (fastest available here" in line
    assert "LiteRT: ai-edge-litert, XNNPACK" in p.stdout and "litert: " in p.stdout


@pytest.mark.real_weights
def test_shipped_export_agrees_with_keras_on_the_examples():
    """The shipped .tflite and the shipped weights, on every example photo, within the
    card's tolerance; and the card's record is the file's."""
    from afiqa.predictor import Predictor
    from afiqa.runtime.weights import REPO_WEIGHTS_DIR, sha256_of
    from afiqa.runtime.zoo import DEFAULT_MODEL, get_card

    card = get_card(DEFAULT_MODEL)
    rec = card.exports["litert"]
    shipped = json.loads((REPO_WEIGHTS_DIR / f"{DEFAULT_MODEL}.json").read_text())["exports"]["litert"]
    assert rec == shipped and sha256_of(REPO_WEIGHTS_DIR / rec["file"]) == rec["sha256"]
    assert rec["max_score_diff"] <= rec["tolerance"] == 0.5
    photos = sorted((ROOT / "examples").glob("*.jpg"))
    lite = Predictor(runtime="litert", batch_size=4)
    keras_p = Predictor(runtime="keras", batch_size=4)
    # fp16, as recorded: about 2 bytes a parameter (fp32 would be 4)
    size = (REPO_WEIGHTS_DIR / rec["file"]).stat().st_size
    assert rec["precision"] == "fp16" and size <= 2.5 * keras_p.model.count_params(), size
    a = [r.score for r in lite.score_batch(photos)]
    b = [r.score for r in keras_p.score_batch(photos)]
    assert np.abs(np.subtract(a, b)).max() <= rec["tolerance"]


def test_litert_threads_follow_afiqa_threads(tiny_litert_card_path, monkeypatch):
    """A Ray worker given one CPU scores on one thread (AFIQA_THREADS), not one per core."""
    from afiqa import runtime
    from afiqa.predictor import Predictor

    monkeypatch.setenv("AFIQA_THREADS", "1")
    assert runtime.cpu_threads() == 1
    assert Predictor(tiny_litert_card_path, runtime="litert").runtime.threads == 1
    monkeypatch.setenv("AFIQA_THREADS", "zero")  # not a count: the cores, as without it
    assert runtime.cpu_threads() == len(os.sched_getaffinity(0))


# -- the calibrated int8 export (issue 29) ---------------------------------------------------
@pytest.fixture(scope="module")
def int8_card_path(tiny_litert_card_path, tmp_path_factory):
    """The tiny model with its fp32 export and a full-integer int8 export beside it,
    calibrated on 12 synthetic scenes that are not the check photos."""
    from afiqa.runtime.export import export

    d = tmp_path_factory.mktemp("tiny_int8")
    shutil.copytree(tiny_litert_card_path.parent, d, dirs_exist_ok=True)
    calib = []
    for k in range(12):
        p = d / f"calib_{k}.png"
        Image.fromarray(blur(scene(300 + k), (0, 1.5, 3)[k % 3])).save(p)
        calib.append(p)
    export(d / tiny_litert_card_path.name, "litert", "int8", check=sorted(d.glob("check_*.png")),
           check_name="6 synthetic scenes", calibrate=calib, calibrate_name="12 synthetic scenes")
    return d / tiny_litert_card_path.name


def test_int8_export_is_full_integer_recorded_beside_fp16_and_timed_here(int8_card_path):
    from ai_edge_litert.interpreter import Interpreter

    from afiqa import runtime

    card = json.loads(int8_card_path.read_text())
    rec = card["exports"]["litert-int8"]
    assert "litert" in card["exports"] and rec["file"] == "afiqa-tiny-int8.tflite"
    assert rec["precision"] == "int8" and rec["n_calibration"] == 12 and rec["n_check"] == 6
    here = rec["speed"][runtime.processor()]
    assert here["int8_s"] > 0 and here["fp16_s"] > 0 and here["batch"] == 1  # LiteRT's own batch
    interp = Interpreter(str(int8_card_path.parent / rec["file"]))
    ops = {o["op_name"] for o in interp._get_ops_details()}
    int8_weights = [t for t in interp.get_tensor_details() if t["dtype"] == np.int8]
    assert int8_weights and "QUANTIZE" in ops, ops  # int8 kernels run, not only int8 storage


def test_int8_scores_the_test_images_within_the_recorded_difference(int8_card_path):
    """The int8 runtime reproduces the check it recorded, and ranks like Keras on new images."""
    from afiqa.metrics import srocc
    from afiqa.predictor import Predictor

    rec = json.loads(int8_card_path.read_text())["exports"]["litert-int8"]
    i8 = Predictor(int8_card_path, runtime="litert-int8")
    keras_p = Predictor(int8_card_path, runtime="keras")
    assert i8.runtime.name == "litert-int8" and i8.weights_path.name == "afiqa-tiny-int8.tflite"
    check = sorted(int8_card_path.parent.glob("check_*.png"))
    diff = np.abs(np.subtract([r.score for r in i8.score_batch(check)], [r.score for r in keras_p.score_batch(check)]))
    assert diff.max() <= rec["max_score_diff"] + 1e-3, (diff, rec)
    images = [scene(k) for k in range(6)] + [blur(scene(k), 3) for k in range(6)]
    a = [r.score for r in i8.score_batch(images)]
    b = [r.score for r in keras_p.score_batch(images)]
    assert srocc(a, b) > 0.8 and np.abs(np.subtract(a, b)).mean() < 5


def _with_int8_record(card_path: Path, tmp_path: Path, **changes) -> Path:
    d = tmp_path / "m"
    shutil.copytree(card_path.parent, d)
    card = json.loads((d / card_path.name).read_text())
    rec = card["exports"]["litert-int8"]
    for k, v in changes.items():
        if v is None:
            rec.pop(k, None)
        else:
            rec[k] = v
    (d / card_path.name).write_text(json.dumps(card))
    return d / card_path.name


def test_auto_takes_int8_only_where_it_is_checked_precise_and_faster_here(int8_card_path, tiny_litert_card_path,
                                                                         tmp_path):
    from afiqa import runtime
    from afiqa.predictor import load_card

    here = runtime.processor()
    fast = {here: {"int8_s": 0.01, "fp16_s": 0.02, "batch": 8, "threads": 2}}
    good = dict(n_check=1000, max_score_diff=0.3, speed=fast)
    cases = {  # changes to the record -> the runtime auto picks, and why not int8
        "precise and faster here": (good, "litert-int8", None),
        "slower here": (dict(good, speed={here: {"int8_s": 0.03, "fp16_s": 0.02, "batch": 8}}), "litert", "slower"),
        "timed on another processor only": (dict(good, speed={"Other CPU [avx2]": fast[here]}), "litert",
                                            "not timed on this processor"),
        "too far from Keras": (dict(good, max_score_diff=0.8), "litert", "differs from Keras"),
        "checked on too few photos": (dict(good, n_check=999), "litert", "differs from Keras"),
        "measured but not published": (dict(good, published=False), "litert", "not published"),
    }
    for name, (changes, want, why) in cases.items():
        path = _with_int8_record(int8_card_path, tmp_path / name.replace(" ", "_"), **changes)
        card, folder = load_card(path)
        choice = runtime.choose("auto", card, weights_dir=folder)
        assert choice.name == want, (name, choice)
        problem = runtime.int8_problem(card)
        assert (problem is None) if why is None else (why in problem), (name, problem)
    # the export missing from disk: fp16, no error
    path = _with_int8_record(int8_card_path, tmp_path / "missing", **good)
    (path.parent / "afiqa-tiny-int8.tflite").unlink()
    card, folder = load_card(path)
    assert runtime.choose("auto", card, weights_dir=folder).name == "litert"
    # no int8 record at all
    card, folder = load_card(tiny_litert_card_path)
    assert runtime.choose("auto", card, weights_dir=folder).name == "litert"
    assert runtime.int8_problem(card) == "the model has no int8 export"


def test_int8_asked_for_without_an_export_is_one_sentence(tiny_litert_card_path):
    from afiqa import runtime
    from afiqa.predictor import load_card

    card, folder = load_card(tiny_litert_card_path)
    with pytest.raises(runtime.RuntimeUnavailable, match="no int8 LiteRT export .*--precision int8 --calibrate"):
        runtime.choose("litert-int8", card, weights_dir=folder)
    # the shipped model's int8 export was measured and not published: its card says so, auto keeps fp16
    shipped = load_card("afiqa-v4")[0]
    assert "differs from Keras by up to" in runtime.int8_problem(shipped)
    with pytest.raises(runtime.RuntimeUnavailable, match="measured .*0.5-point check"):
        runtime.choose("litert-int8", shipped)


def test_int8_export_needs_calibration_photos(tiny_litert_card_path, tmp_path):
    from afiqa.errors import AfiqaError
    from afiqa.runtime.export import export

    d = tmp_path / "m"
    shutil.copytree(tiny_litert_card_path.parent, d)
    with pytest.raises(AfiqaError, match="calibrated on real photos: pass some with --calibrate"):
        export(d / tiny_litert_card_path.name, "litert", "int8", check=sorted(d.glob("check_*.png")))
    assert not (d / "afiqa-tiny-int8.tflite").exists()
