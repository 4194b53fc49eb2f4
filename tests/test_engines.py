"""Other engines on the ONNX export (benchmarks.engines): a static int8 copy is made and
runs, each engine is checked against Keras, and the bench times them in the same run."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from imagegen import blur, scene

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def onnx_model(tiny_litert_card_path, tmp_path_factory):
    from afiqa.runtime.export import export

    d = tmp_path_factory.mktemp("tiny_onnx")
    shutil.copytree(tiny_litert_card_path.parent, d, dirs_exist_ok=True)
    card = d / tiny_litert_card_path.name
    export(card, "onnx", check=sorted(d.glob("check_*.png")), check_name="6 synthetic scenes")
    calib = []
    for k in range(8):
        p = d / f"calib_{k}.png"
        Image.fromarray(blur(scene(400 + k), (0, 3)[k % 2])).save(p)
        calib.append(p)
    return card, d / "afiqa-tiny.onnx", calib


def test_quantized_copy_runs_and_is_checked_against_keras(onnx_model, tmp_path):
    from benchmarks import engines

    card, onnx, calib = onnx_model
    out = engines.quantize(onnx, tmp_path / "int8.onnx", calib, 96)
    assert out.is_file() and out.stat().st_size > 0
    with pytest.raises(SystemExit, match="already exists"):
        engines.quantize(onnx, out, calib, 96)  # never written over
    found, skipped = engines.available(onnx, out, 96)
    assert {"onnxruntime-fp32", "onnxruntime-int8"} <= set(found)
    assert set(found) | set(skipped) >= {"openvino-fp32", "openvino-int8"}
    report = engines.check(card, found, sorted(card.parent.glob("check_*.png")))
    assert report["onnxruntime-fp32"]["max_score_diff"] <= 0.05  # fp32 both sides
    assert report["onnxruntime-int8"]["n"] == 6 and np.isfinite(report["onnxruntime-int8"]["max_score_diff"])


def test_bench_times_the_engines_in_the_same_run(onnx_model, tmp_path, capsys):
    from benchmarks import bench

    card, onnx, _ = onnx_model
    out = tmp_path / "bench.json"
    assert bench.main(["--model", str(card), "--runtimes", "litert", "--n", "2", "--batch-size", "2",
                       "--repeats", "1", "--onnx", str(onnx), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert "onnxruntime-fp32" in report["engines"]
    rows = {(r["runtime"], r["key"]) for r in report["rows"]}
    assert {("onnxruntime-fp32", "raw_1"), ("onnxruntime-fp32", "raw_2"), ("litert", "raw_1")} <= rows
    assert "onnxruntime-fp32" in capsys.readouterr().out
