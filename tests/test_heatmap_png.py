"""``afiqa score --heatmaps``: capped PNGs that carry the score, the label and the legend."""

import argparse
import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imagegen import scene

ROOT = Path(__file__).resolve().parent.parent


def test_heatmap_pngs_are_capped_and_carry_score_label_and_legend(tiny_card_path, tmp_path):
    photo = tmp_path / "wide.png"
    Image.fromarray(scene(5, size=(240, 180))).resize((2400, 1800)).save(photo)
    out, heat = tmp_path / "s.csv", tmp_path / "heat"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-m", "afiqa", "score", str(photo), "--model", str(tiny_card_path),
                        "--csv", str(out), "--heatmaps", str(heat), "--quiet"],
                       capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr
    row = next(csv.DictReader(out.open(encoding="utf-8")))
    png = np.asarray(Image.open(row["heatmap"]).convert("RGB"))
    assert png.shape[1] == 1024 and 768 < png.shape[0] < 768 + 200  # 2400 -> 1024 wide, + title and legend
    legend = png[-40:]
    assert (legend[..., 2].astype(int) - legend[..., 0] > 80).sum() > 100  # blue: lowers quality
    assert (legend[..., 0].astype(int) - legend[..., 2] > 80).sum() > 100  # red: raises quality
    title = png[:30]
    assert (title.min(axis=-1) < 80).sum() > 100  # dark text on white: the score, label and name


def test_heatmap_size_option():
    from afiqa.cli import heatmap_size

    assert heatmap_size("full") is None and heatmap_size("512") == 512
    for bad in ("0", "12", "big"):
        with pytest.raises(argparse.ArgumentTypeError):
            heatmap_size(bad)
