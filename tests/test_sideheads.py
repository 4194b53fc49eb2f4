"""The side heads (issue 30's problem, issue 31's uncertainty): their maths, their file, and
their place in every output: ScoreResult, the CLI's CSV, the tiny model's card."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from afiqa.model.sideheads import FAMILIES, SideHeads, name_problem
from train.sidehead import (CLASSES, fit_problem, fit_projection, fit_softmax, linear_fit_error, predict_softmax,
                            tracking)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def test_projection_is_orthonormal_and_keeps_the_main_directions():
    rng = np.random.default_rng(0)
    signal = rng.normal(size=(300, 3)) @ rng.normal(size=(3, 50)) * 5
    x = (signal + rng.normal(size=(300, 50)) * 0.1).astype(np.float32)
    mean, scale, basis = fit_projection(x, 3)
    assert basis.shape == (50, 3) and np.allclose(basis.T @ basis, np.eye(3), atol=1e-4)
    xs = (x - mean) / scale
    kept = np.linalg.norm(xs @ basis @ basis.T) ** 2 / np.linalg.norm(xs) ** 2
    assert kept > 0.95  # three directions carry the data


def test_softmax_learns_separable_classes_and_cross_validation_picks_a_strength():
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(len(CLASSES), 8)) * 3
    y = np.repeat(np.arange(len(CLASSES)), 30)
    z = (centres[y] + rng.normal(size=(len(y), 8))).astype(np.float32)
    w, b = fit_softmax(z, y, 1e-3)
    p = predict_softmax(z, w, b)
    assert np.allclose(p.sum(axis=1), 1) and np.mean(p.argmax(1) == y) > 0.95
    w, b, report = fit_problem(z, y, [str(k // 7) for k in range(len(y))], l2s=(1e-3, 10.0))
    assert report["l2"] == 1e-3 and report["cv"]["0.001"]["criterion"] > report["cv"]["10.0"]["criterion"]


def test_photo_stats_see_brightness_blur_and_noise():
    from afiqa.model.sideheads import STATS, photo_stats
    from imagegen import blur, scene

    from afiqa.io.inputs import to_model_input

    img = to_model_input(scene(3), 128)
    dark, blurred = img * 0.3, to_model_input(blur(scene(3), 3), 128)
    noisy = np.clip(img + np.random.default_rng(0).normal(0, 20, img.shape), 0, 255)
    s = dict(zip(STATS, photo_stats(np.stack([img, dark, blurred, noisy])).T))
    assert s["luma_mean"][1] < 0.5 * s["luma_mean"][0] and s["dark_share"][1] > s["dark_share"][0]
    assert s["log_laplacian_var"][2] < s["log_laplacian_var"][0] - 1
    assert s["log_noise"][3] > s["log_noise"][0]


def test_tracking_and_linear_fit_error():
    pred = np.linspace(0, 1, 100)
    mos = 20 + 60 * pred
    assert np.allclose(linear_fit_error(pred, mos), 0, atol=1e-9)  # one linear fit removes scale and offset
    err = np.r_[np.full(90, 1.0), np.full(10, 8.0)]
    good = tracking(np.r_[np.zeros(90), np.ones(10)], err)
    assert good["spearman"] > 0.5 and good["top10_ratio"] == 8.0
    flat = tracking(np.random.default_rng(0).random(100), np.ones(100) * 3)
    assert flat["top10_ratio"] == 1.0


def test_side_heads_composed_with_the_projection_match_and_round_trip(tmp_path):
    from afiqa.model.sideheads import STATS, extra_inputs, softmax

    rng = np.random.default_rng(2)
    mean, scale = rng.normal(size=20).astype(np.float32), rng.uniform(0.5, 2, 20).astype(np.float32)
    basis = np.linalg.qr(rng.normal(size=(20, 4)))[0].astype(np.float32)
    k = len(STATS)
    pw, pb = rng.normal(size=(4 + k, 7)).astype(np.float32), rng.normal(size=7).astype(np.float32)
    uw, ub = rng.normal(size=6).astype(np.float32) * 0.1, 1.5
    s_mean, s_scale = rng.normal(size=k).astype(np.float32), rng.uniform(0.5, 2, k).astype(np.float32)
    heads = SideHeads.compose(mean, scale, basis, (pw, pb), (uw, ub), (s_mean, s_scale))
    path = tmp_path / "h.npz"
    heads.save(path)
    with pytest.raises(FileExistsError):
        heads.save(path)
    again = SideHeads.load(path)
    fused = rng.normal(size=(5, 20)).astype(np.float32)
    z = ((fused - mean) / scale) @ basis  # what the heads were fitted on
    stats = rng.normal(size=(5, k)).astype(np.float32)
    want = softmax(np.concatenate([z, (stats - s_mean) / s_scale], axis=1) @ pw + pb)
    assert np.allclose(again.problems(fused, stats), want, atol=1e-5)
    members = rng.uniform(0, 100, size=(5, 3))
    u = again.uncertainty(fused, members, members.mean(axis=1))
    want = np.exp(np.concatenate([z, extra_inputs(members, members.mean(axis=1))], axis=1) @ uw + ub)
    assert u.shape == (5,) and np.allclose(u, want, rtol=1e-4)
    name, strengths = name_problem(np.array([0.05, 0.6, 0.05, 0.05, 0.05, 0.1, 0.1]))
    assert name == "noise" and set(strengths) == set(FAMILIES) and strengths["noise"] == 0.6


def test_every_score_of_a_model_with_side_heads_says_its_error_and_problem(tiny_predictor):
    from imagegen import scene

    rs = tiny_predictor.score_batch([scene(7), scene(8)])
    for r in rs:
        assert r.ok and r.uncertainty is not None and r.uncertainty > 0
        assert r.problem in (*FAMILIES, "none") and set(r.problems) == set(FAMILIES)
        assert all(0 <= v <= 1 for v in r.problems.values())
    # the score is the model's, side heads or not
    assert rs[0].score == pytest.approx(tiny_predictor.card.to_score(float(tiny_predictor.predict_raw(
        tiny_predictor_input(tiny_predictor, scene(7)))[0])), abs=1e-4)


def tiny_predictor_input(p, rgb):
    from afiqa.io.inputs import to_model_input

    return to_model_input(rgb, p.size)[None]


def test_the_tiny_model_names_the_family_of_a_strong_distortion(tiny_predictor):
    """Trained on other scenes (tests/conftest.py): most strong copies get their family."""
    from conftest import TINY_PROBLEMS, TINY_SIZE
    from imagegen import scene

    from afiqa.io.inputs import to_model_input
    from train import distortions

    right = total = 0
    for seed in range(6):
        img = to_model_input(scene(5000 + seed), TINY_SIZE).astype(np.uint8)
        copies = [distortions.apply(img, k, distortions.CATALOGUE[k].ladder[-1], seed) for k in TINY_PROBLEMS.values()]
        for fam, r in zip(TINY_PROBLEMS, tiny_predictor.score_batch(copies)):
            right += r.problem == fam
            total += 1
    assert right / total >= 0.6, f"{right} of {total}"


def test_a_model_without_side_heads_leaves_them_empty(tiny_card_path, tmp_path):
    from afiqa.predictor import Predictor

    card = json.loads(tiny_card_path.read_text())
    card.pop("side_heads")
    path = tmp_path / "plain.json"
    path.write_text(json.dumps(card))
    for f in tiny_card_path.parent.glob("*.weights.h5"):
        os.symlink(f, tmp_path / f.name)
    p = Predictor(path)
    r = p.score(EXAMPLES / "coffee.jpg")
    assert r.ok and r.uncertainty is None and r.problem == "" and "no side heads" in p.side_heads_missing


def test_cli_csv_has_uncertainty_and_problem_after_error(tiny_card_path, tmp_path):
    out = tmp_path / "s.csv"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-m", "afiqa", "score", str(EXAMPLES / "coffee.jpg"),
                        str(EXAMPLES / "coffee_blur.jpg"), "--model", str(tiny_card_path), "--csv", str(out)],
                       capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    rows = list(csv.reader(out.open(encoding="utf-8")))
    assert rows[0][:6] == ["path", "score", "label", "error", "uncertainty", "problem"]
    for r in rows[1:]:
        assert float(r[4]) > 0 and r[5] in (*FAMILIES, "none")
    assert "±" in p.stdout.splitlines()[0] and "problem" in p.stdout.splitlines()[0]
