"""afiqa calibrate: a user's own ratings fitted by a monotone map, cross-validated, written
as a model card that works wherever a model name does; bad input gets clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from imagegen import blur, scene


@pytest.fixture(scope="module")
def rated(tmp_path_factory):
    """30 photos at six blur levels, rated by a 'user' on a 1-10 scale where 1 is best."""
    d = tmp_path_factory.mktemp("rated")
    rows = []
    for k in range(30):
        sigma = (0, 0.8, 1.5, 2.5, 4, 6)[k % 6]
        name = f"p{k:02d}.png"
        Image.fromarray(blur(scene(500 + k), sigma)).save(d / name)
        rows.append((name, round(1 + 1.4 * sigma + 0.3 * (k % 2), 2)))  # lower is better
    return d, rows


def write_csv(path, rows, header="path,score"):
    path.write_text(header + "\n" + "".join(f"{p},{s}\n" for p, s in rows))
    return path


def test_the_report_is_plain_data(rated, tiny_card_path, tmp_path):
    from afiqa.calibration import calibrate

    d, rows = rated
    rep = calibrate(write_csv(tmp_path / "r.csv", rows), d, None, str(tiny_card_path))
    json.dumps(rep)  # no reference cycle between the report and the card it holds
    assert rep["card"]["calibration"]["cross_validation"]["n"] == 30


def test_pure_maps_are_monotone_and_cross_validated_out_of_fold():
    from afiqa.calibration import apply_map, cross_validated, fit_map

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 100, 60)
    y = 1 + 4 / (1 + np.exp(-(x - 50) / 8)) + rng.normal(0, 0.1, 60)  # a bent scale
    for method in ("linear", "isotonic"):
        m = fit_map(x, y, method)
        grid = apply_map(m, np.linspace(-10, 110, 200))
        assert np.all(np.diff(grid) >= -1e-9), method  # never falls
    iso = cross_validated(x, y, "isotonic")
    lin = cross_validated(x, y, "linear")
    assert np.sqrt(np.mean((iso - y) ** 2)) < np.sqrt(np.mean((lin - y) ** 2))  # the bend is found
    # a falling trend gets the best flat line (the mean), never a falling one
    flat = fit_map(np.array([0.0, 50, 100]), np.array([100.0, 95, 91]), "linear")
    assert flat["y"] == pytest.approx([np.mean([100, 95, 91])] * 2)
    # out of fold: a point's prediction does not know its own value
    y2 = y.copy()
    y2[0] += 100
    assert abs(cross_validated(x, y2, "linear")[0] - lin[0]) < 5


def test_calibrate_fits_the_users_scale_and_the_card_works_as_a_model(rated, tiny_card_path, tmp_path, capsys):
    from afiqa.cli import main
    from afiqa.metrics import srocc
    from afiqa.predictor import Predictor

    d, rows = rated
    ratings = write_csv(tmp_path / "ratings.csv", rows)
    out = tmp_path / "mine.json"
    assert main(["calibrate", str(ratings), "--images", str(d), "--out", str(out), "--model", str(tiny_card_path),
                 "--lower-better"]) == 0
    text = capsys.readouterr().out
    assert "30 rated photos; 0 left out" in text and "5-fold cross-validated" in text and "kept:" in text
    card = json.loads(out.read_text())
    cv = card["calibration"]["cross_validation"]
    assert cv["chosen"] in ("linear", "isotonic") and card["higher_better"] is False
    assert card["score_range"] == [min(s for _, s in rows), max(s for _, s in rows)]
    # the tiny model ranks blur; the user's scale runs the other way, and correlations say agreement
    assert cv["before"]["srocc"] > 0.5 and cv["maps"][cv["chosen"]]["srocc"] > 0.5
    assert cv["maps"][cv["chosen"]]["rmse"] < cv["before"]["rmse"]  # fitted beats stretched, out of fold
    mine = Predictor(out)
    scores = [r.score for r in mine.score_batch([d / p for p, _ in rows])]
    lo, hi = card["score_range"]
    assert all(lo <= s <= hi for s in scores)
    assert srocc(scores, [s for _, s in rows]) > 0.5  # on the user's scale, lower = better
    sharp = mine.score(d / rows[0][0])  # sigma 0: the best photo
    assert sharp.label in ("good", "excellent") and sharp.score < np.median(scores)
    # the CLI takes the card as --model
    assert main(["score", str(d / rows[0][0]), "--model", str(out)]) == 0
    assert f"{sharp.score:.2f}" in capsys.readouterr().out
    # a calibrated card is not a base for another calibration, nor exported itself
    again = tmp_path / "again.json"
    assert main(["calibrate", str(ratings), "--images", str(d), "--out", str(again), "--model", str(out)]) == 2
    assert "is itself calibrated" in capsys.readouterr().err and not again.exists()
    assert main(["export", "--model", str(out), "--out", str(tmp_path / "x.tflite")]) == 2
    assert "calibrated card; export its base model" in capsys.readouterr().err


def test_bad_rows_are_reported_and_too_few_is_an_error(rated, tiny_card_path, tmp_path, capsys):
    from afiqa.cli import main

    d, rows = rated
    (d / "broken.png").write_bytes(b"not a png")
    bad = rows[:18] + [("missing.png", 3), ("broken.png", 4), (rows[18][0], "n/a")]
    out = tmp_path / "few.json"
    assert main(["calibrate", str(write_csv(tmp_path / "r.csv", bad)), "--images", str(d), "--out", str(out),
                 "--model", str(tiny_card_path)]) == 2
    err = capsys.readouterr().err
    assert "missing.png" in err and "broken.png" in err and "'n/a' is not a number" in err
    assert "18 usable rated photos; calibration needs at least 20" in err and not out.exists()


@pytest.mark.parametrize("case, expect", [
    ("constant", "constant scale"),
    ("columns", "needs the columns path,score"),
    ("exists", "already exists"),
])
def test_clear_errors(rated, tiny_card_path, tmp_path, capsys, case, expect):
    from afiqa.cli import main

    d, rows = rated
    csv_path = write_csv(tmp_path / "r.csv", [(p, 5) for p, _ in rows] if case == "constant" else rows,
                         header="file,rating" if case == "columns" else "path,score")
    out = tmp_path / "x.json"
    if case == "exists":
        out.write_text("mine")
    assert main(["calibrate", str(csv_path), "--images", str(d), "--out", str(out),
                 "--model", str(tiny_card_path)]) == 2
    assert expect in capsys.readouterr().err
    assert (out.read_text() == "mine") if case == "exists" else not out.exists()


def test_from_200_ratings_the_head_is_refitted_when_it_beats_every_map(tiny_card_path, tmp_path, capsys):
    """A user who minds noise and not blur: afiqa's score (which falls with blur) cannot be
    mapped onto that scale by any monotone map, a head refitted on the fused features can.
    The report says it tried, kept it and why; the card scores new photos on the user's scale."""
    from afiqa.cli import main
    from afiqa.metrics import srocc
    from afiqa.predictor import Predictor

    rng = np.random.default_rng(0)
    rows = []
    for k in range(210):
        img = blur(scene(2000 + k), float(rng.choice([0, 1.5, 3, 5])))
        noise = float(rng.choice([0, 8, 16, 30]))
        img = np.clip(img + rng.normal(0, noise, img.shape), 0, 255).astype(np.uint8) if noise else img
        Image.fromarray(img).save(tmp_path / f"u{k:03d}.png")
        rows.append((f"u{k:03d}.png", round(10 - noise / 4 + rng.normal(0, 0.3), 2)))
    out = tmp_path / "mine.json"
    assert main(["calibrate", str(write_csv(tmp_path / "r.csv", rows)), "--images", str(tmp_path), "--out", str(out),
                 "--model", str(tiny_card_path)]) == 0
    text = capsys.readouterr().out
    assert "refitted head, 5-fold cross-validated" in text and "head refit: kept" in text
    card = json.loads(out.read_text())
    cv = card["calibration"]["cross_validation"]
    assert cv["chosen"] == "refit" and card["calibration"]["file"] == "mine.head.npz"
    assert cv["maps"]["refit"]["srocc"] > max(cv["maps"][m]["srocc"] for m in ("linear", "isotonic")) + 0.2
    mine = Predictor(out)
    new = [np.clip(scene(9000 + k) + rng.normal(0, n, (120, 160, 3)), 0, 255).astype(np.uint8)
           for k, n in enumerate([0, 0, 30, 30])]
    got = [r.score for r in mine.score_batch(new)]
    assert min(got[:2]) > max(got[2:])  # clean above noisy, on the user's scale
    assert srocc([r.score for r in mine.score_batch([tmp_path / p for p, _ in rows[:60]])], [s for _, s in rows[:60]]) > 0.6
    (tmp_path / "mine.head.npz").write_bytes(b"not it")  # a changed head is refused, never used unchecked
    with pytest.raises(Exception, match="sha256"):
        Predictor(out)


def test_under_200_ratings_no_head_is_refitted(rated, tiny_card_path, tmp_path):
    from afiqa.calibration import calibrate

    d, rows = rated
    rep = calibrate(write_csv(tmp_path / "r.csv", rows), d, None, str(tiny_card_path))
    assert "refit" not in rep["maps"] and rep["head_refit"].startswith("not tried: it needs at least 200")
