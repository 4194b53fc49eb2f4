"""The benchmark runs end to end on the tiny model (numbers are not checked: smoke only)."""

import json

from afiqa import bench


def test_bench_measures_every_row_and_writes_json(tiny_card_path, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert bench.main(["--model", str(tiny_card_path), "--n", "3", "--batch-size", "2", "--repeats", "1",
                       "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    names = {r["name"] for r in report["rows"]}
    assert {"decode + resize", "raw backbones (streams only)", "pipeline: score_batch(paths)",
            "pipeline + GradCAM: score_batch(paths, heatmaps=True)"} <= names
    assert all(r["per_image_s"] > 0 for r in report["rows"])
    assert set(report["ratios"]) == {"pipeline / raw backbones, batch 1", "pipeline / raw backbones, batch 2",
                                     "GradCAM / plain, batch 1", "GradCAM / plain, batch 2"}
    assert report["peak_rss_mb"] > 0 and report["startup_s"] > 0
    table = capsys.readouterr().out
    assert "| pipeline: score(path) | 1 |" in table and "GradCAM / plain" in table


def test_bench_without_weights_is_a_clear_error(tmp_path, capsys):
    assert bench.main(["--model", str(tmp_path / "missing.json"), "--n", "1"]) == 2
    assert "does not exist" in capsys.readouterr().err
