"""The shipped model: its table entry, its card and its behaviour on real photos."""

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def test_model_table_entry_matches_the_shipped_card_and_file():
    from afiqa.runtime.weights import REPO_WEIGHTS_DIR, sha256_of
    from afiqa.runtime.zoo import DEFAULT_MODEL, ModelCard, get_card

    card = get_card(DEFAULT_MODEL)
    shipped = ModelCard.from_dict(json.loads((REPO_WEIGHTS_DIR / f"{DEFAULT_MODEL}.json").read_text()))
    assert shipped.config == card.config and shipped.sha256 == card.sha256
    assert shipped.weights_file == card.weights_file and shipped.hub_repo == card.hub_repo
    for k in ("srocc", "plcc", "krocc"):
        assert shipped.test_metrics[k] == card.test_metrics[k]
    weights = REPO_WEIGHTS_DIR / card.weights_file
    assert sha256_of(weights) == card.sha256
    assert weights.stat().st_size <= 40 * 1024 * 1024  # issue 13: at most 40 MB


def test_only_the_default_model_ships_and_the_others_come_from_their_hub_repo():
    """weights/ holds the default model's card, weights and LiteRT export, matching the
    table's checksums; every other model in the table names a Hub repo to load from (the
    resolver's download is tested against the stand-in Hub in test_weights.py) and keeps
    its card as a record in docs/models/."""
    from afiqa.runtime.weights import REPO_WEIGHTS_DIR, sha256_of
    from afiqa.runtime.zoo import DEFAULT_MODEL, MODELS

    assert DEFAULT_MODEL in MODELS and {"afiqa-biq2021", "afiqa-v2"} <= set(MODELS)
    shipped_files = {p.name for p in REPO_WEIGHTS_DIR.iterdir()}
    for name, card in MODELS.items():
        if name != DEFAULT_MODEL:
            assert card.hub_repo and card.weights_file not in shipped_files, name
            record = json.loads((REPO_WEIGHTS_DIR.parent / "docs" / "models" / f"{name}.json").read_text())
            assert record["sha256"] == card.sha256, name
            continue
        shipped = json.loads((REPO_WEIGHTS_DIR / f"{name}.json").read_text())
        assert shipped["sha256"] == card.sha256 == sha256_of(REPO_WEIGHTS_DIR / card.weights_file), name
        litert = card.exports["litert"]
        assert shipped["exports"]["litert"]["sha256"] == litert["sha256"], name
        assert sha256_of(REPO_WEIGHTS_DIR / litert["file"]) == litert["sha256"], name
        heads = card.side_heads
        assert shipped["side_heads"]["sha256"] == heads["sha256"] == sha256_of(REPO_WEIGHTS_DIR / heads["file"]), name


@pytest.fixture(scope="module")
def shipped():
    from afiqa.predictor import Predictor

    return Predictor()  # the default model, resolved from weights/


@pytest.mark.real_weights
def test_shipped_model_ranks_each_distortion_below_the_clean_photo(shipped):
    clean = shipped.score(EXAMPLES / "coffee.jpg").score
    for name in ("coffee_blur.jpg", "coffee_noise.jpg", "coffee_jpeg.jpg"):
        assert shipped.score(EXAMPLES / name).score < clean - 5, name


@pytest.mark.real_weights
def test_shipped_model_scores_fall_as_blur_rises(shipped):
    import cv2

    from afiqa.io.inputs import load_rgb

    rgb = load_rgb(EXAMPLES / "astronaut.jpg")
    scores = [r.score for r in shipped.score_batch([cv2.GaussianBlur(rgb, (0, 0), s) if s else rgb
                                                     for s in (0, 1.5, 3, 6)])]
    assert all(a > b for a, b in zip(scores, scores[1:])), scores


@pytest.mark.real_weights
def test_shipped_attention_follows_the_photo_not_a_fixed_position(shipped):
    """Issue 13: the spatial attention maps follow content (the paper's "regions of
    interest"). The map of a mirrored photo is the mirror of the photo's map (correlation
    >= 0.8 in each stream; afiqa-biq2021: -0.02 and 0.06), and the maps of different
    photos differ (mean pairwise correlation <= 0.6; afiqa-biq2021: 0.87 and 0.94, one
    positional prior)."""
    import numpy as np

    from afiqa.io.inputs import load_rgb

    photos = [load_rgb(EXAMPLES / f"{n}.jpg") for n in ("chelsea", "rocket", "astronaut", "coffee")]
    results = shipped.score_batch(photos + [p[:, ::-1] for p in photos], heatmaps=True)
    results, mirrored = results[:len(photos)], results[len(photos):]

    def corr(a, b):
        return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])

    for stream in results[0].attention:
        maps = [np.asarray(r.attention[stream], np.float32) for r in results]
        assert all(m.std() > 0 for m in maps), stream  # not flat
        pairs = [corr(maps[i], maps[j]) for i in range(len(maps)) for j in range(i + 1, len(maps))]
        assert np.mean(pairs) <= 0.6, (stream, pairs)
        mirror = [corr(m, np.asarray(r.attention[stream], np.float32)[:, ::-1]) for m, r in zip(maps, mirrored)]
        assert np.mean(mirror) >= 0.8, (stream, mirror)


@pytest.mark.real_weights
def test_shipped_score_holds_under_changes_nobody_sees(shipped):
    """Issue 31's stability check on the example photos: mirror and a JPEG re-save at
    quality 90 move no score more than 5 points, a downscale to 3/4 no more than 8
    (``scripts/stability.py`` measures the same on BIQ2021's validation photos)."""
    import importlib.util

    from afiqa.io.inputs import load_rgb
    from imagegen import jpeg_bytes

    spec = importlib.util.spec_from_file_location("stability", ROOT / "scripts" / "stability.py")
    stability = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stability)
    photos = sorted((ROOT / "examples").glob("*.jpg"))
    report = stability.measure(shipped, photos)
    assert report["n"] == len(photos) >= 5
    assert report["mirror"]["max_abs"] <= 5 and report["jpeg90"]["max_abs"] <= 5, report
    assert report["downscale_0.75"]["max_abs"] <= 8, report
    # and the check can fail: a copy that is not benign (JPEG quality 8) moves the score far more
    base = [r.score for r in shipped.score_batch(photos[:3])]
    worse = [r.score for r in shipped.score_batch([jpeg_bytes(load_rgb(p), 8) for p in photos[:3]])]
    assert max(abs(a - b) for a, b in zip(worse, base)) > 5, (base, worse)


@pytest.mark.real_weights
def test_shipped_model_names_what_lowers_each_example_and_how_sure_it_is(shipped):
    """Issue 30/31's side heads on the example photos (none of them trained on): each
    distorted copy gets its family, the clean photo none, and every score an uncertainty;
    the Keras runtime says the same as LiteRT."""
    from afiqa.predictor import Predictor

    names = ["coffee.jpg", "coffee_blur.jpg", "coffee_noise.jpg", "coffee_jpeg.jpg"]
    want = ["none", "blur", "noise", "compression"]
    got = shipped.score_batch([EXAMPLES / n for n in names])
    assert [r.problem for r in got] == want, [(r.problem, r.problems) for r in got]
    assert all(0 < r.uncertainty < 50 for r in got)
    assert all(r.problems[p] >= 0.5 for r, p in zip(got[1:], want[1:]))
    keras = Predictor(runtime="keras").score_batch([EXAMPLES / n for n in names])
    assert [r.problem for r in keras] == want
    assert all(abs(a.uncertainty - b.uncertainty) < 0.5 for a, b in zip(got, keras))
