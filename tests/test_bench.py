"""The benchmark runs end to end on the tiny model, both runtimes side by side (numbers
are not checked: smoke only)."""

import json

import numpy as np
import pytest

from benchmarks import bench


def test_bench_measures_every_row_for_each_runtime_and_writes_json(tiny_litert_card_path, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert bench.main(["--model", str(tiny_litert_card_path), "--n", "3", "--batch-size", "2", "--repeats", "1",
                       "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    for rt in ("litert", "keras"):
        names = {r["name"] for r in report["rows"] if r["runtime"] == rt}
        assert {"pipeline: score(path)", "pipeline: score_batch(paths)", "raw forward (runtime.predict)",
                "pipeline + GradCAM: score_batch(paths, heatmaps=True)"} <= names, rt
        cli = report["cli"][rt]
        assert cli["one_photo_s"] > 0 and cli["all_photos_s"] > 0 and cli["peak_rss_mb"] > 0
        assert report["startup_s"][rt] > 0
    # the LiteRT CLI's own memory (no TensorFlow), not this process's, which has Keras loaded
    assert report["cli"]["litert"]["peak_rss_mb"] < 0.8 * report["peak_rss_mb"]
    assert {r["name"] for r in report["rows"] if r["runtime"] == ""} == {
        "decode (load_rgb)", "resize (to_model_input)", "decode + resize"}
    assert {r["batch"] for r in report["rows"] if r["key"].startswith("raw_")} == {1, 2, 16}
    assert all(r["per_image_s"] > 0 for r in report["rows"])
    assert "litert / keras, score_batch, batch 2" in report["ratios"]
    t = report["target"]  # 3 tiny photos: the per-photo time may drown in start-up noise (then nan, said so)
    assert t["goal"] == 0.30 and (t["ratio"] > 0 or np.isnan(t["ratio"]))
    assert np.isnan(t["ratio"]) or t["ratio"] == pytest.approx(t["litert_cli_per_photo_s"] / t["keras_forward_batch_16_s"])
    table = capsys.readouterr().out
    assert "| measurement | batch | litert | keras |" in table and "target: litert `afiqa score`" in table
    assert "no int8 LiteRT export" in report["skipped"]["litert-int8"]  # left out, said why


def test_bench_without_weights_is_a_clear_error(tmp_path, capsys):
    assert bench.main(["--model", str(tmp_path / "missing.json"), "--n", "1"]) == 2
    assert "does not exist" in capsys.readouterr().err
