"""train/: config overrides, and the whole recipe end to end on a tiny BIQ2021-format set."""

import json

import numpy as np
import pytest
from PIL import Image

from imagegen import blur, scene


def test_config_overrides_parse_yaml_values_and_reject_unknown_keys(tmp_path):
    from train import config

    p = tmp_path / "c.yaml"
    p.write_text("name: x\nmodel:\n  head_units: [128]\n  multilevel: true\ntrain:\n  epochs: 3\n")
    cfg = config.load(p, ["train.epochs=5", "model.head_units=[64, 32]", "model.multilevel=false"])
    assert cfg["train"]["epochs"] == 5 and cfg["model"]["head_units"] == [64, 32]
    assert cfg["model"]["multilevel"] is False
    with pytest.raises(ValueError, match="unknown key"):
        config.load(p, ["train.epoch=5"])
    with pytest.raises(ValueError, match="KEY=VALUE"):
        config.load(p, ["train.epochs"])
    config.dump(cfg, tmp_path / "out.yaml")
    assert config.load(tmp_path / "out.yaml") == cfg


@pytest.fixture(scope="module")
def tiny_biq(tmp_path_factory):
    """A BIQ2021-shaped folder: Images/ and the two official CSVs, MOS falling with blur."""
    root = tmp_path_factory.mktemp("biq")
    (root / "Images").mkdir()
    rows = {"train": [], "test": []}
    k = 0
    for seed in range(14):
        for sigma, mos in ((0, 0.8), (2.5, 0.3)):
            k += 1
            name = f"ss0{1 + seed % 3} ({k}).jpg"
            Image.fromarray(blur(scene(seed), sigma)).save(root / "Images" / name, quality=92)
            rows["test" if seed >= 10 else "train"].append((name, mos + 0.01 * (seed % 4)))
    with open(root / "Train (Images and MOS).csv", "w") as f:
        f.write("Image Name,MOS,,\n" + "".join(f"{n},{m:.4f},,\n" for n, m in rows["train"]))
    with open(root / "Test (Images and MOS).csv", "w") as f:
        f.write("Image Name,MOS\n" + "".join(f"{n},{m:.4f}\n" for n, m in rows["test"]))
    return root


def test_recipe_end_to_end_cache_fit_evaluate_and_load(tiny_biq, tmp_path, monkeypatch):
    from afiqa.predictor import Predictor
    from train import evaluate, fit

    out = tmp_path / "run"
    fit.main([
        "--config", "train/configs/afiqa-biq2021.yaml", "--data-dir", str(tiny_biq),
        "--cache", str(tmp_path / "cache"), "--out", str(out),
        "--set", "model.image_size=96", "model.feature_pool=1", "model.head_units=[16]", "train.epochs=8",
        "train.batch_size=4", "train.lr=0.001", "data.val_fraction=0.25",
    ])
    card = json.loads((out / "afiqa-biq2021.json").read_text())
    assert card["config"]["image_size"] == 96 and card["config"]["backbone_weights"] is None
    assert card["description"].startswith("Two-stream (mobilenet_v2 + mobilenet) ")  # the backbones it was trained with
    assert (out / "config.yaml").is_file() and (out / "log.csv").read_text().count("\n") == 9
    assert card["training"]["n_train"] == 15 and card["training"]["n_val"] == 5
    syn = list((tmp_path / "cache").glob("synthetic-*/meta.json"))  # the recipe's ranking pairs were cached
    assert len(syn) == 1 and json.loads(syn[0].read_text())["copies"] == 15 * 6

    report = evaluate.main(["--model", str(out / "afiqa-biq2021.json"), "--dataset", "biq2021",
                            "--data-dir", str(tiny_biq), "--split", "test", "--out", str(tmp_path / "eval")])
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["n"] == 8 and {"plcc", "srocc", "krocc", "rmse", "plcc_logistic"} <= set(saved)
    assert set(saved["groups"]) <= {"ss01", "ss02", "ss03"} and saved["groups"]
    assert (tmp_path / "eval" / "scatter.png").stat().st_size > 1000
    assert card["training"]["validation"]["val_srocc"] > 0.5  # sharp above blurred, held-out scenes
    # metrics.json is computed from exactly the scores written to scores.csv
    import csv

    from afiqa import metrics

    rows = list(csv.DictReader((tmp_path / "eval" / "scores.csv").open()))
    assert len(rows) == 8
    again = metrics.rmse([float(r["prediction"]) for r in rows], [float(r["mos"]) for r in rows])
    assert again == pytest.approx(report["rmse"], abs=1e-3)

    # What evaluate measured is what a user gets from the Predictor.
    p = Predictor(out / "afiqa-biq2021.json")
    first = sorted((tiny_biq / "Images").glob("*.jpg"))[0]
    assert 0 <= p.score(first).score <= 100

    # Leave one subset out on the same cache: each subset's training-split photos scored by
    # a head trained on the other two, without the pairs made from its photos.
    from train import loso

    rep = loso.main(["--config", "train/configs/afiqa-biq2021.yaml", "--cache", str(tmp_path / "cache"),
                     "--set", "model.image_size=96", "model.feature_pool=1", "model.head_units=[16]",
                     "train.epochs=2", "train.batch_size=4", "data.val_fraction=0.25",
                     "--out", str(tmp_path / "loso.json")])
    assert {k for k in rep if k.startswith("ss")} == {"ss01", "ss02", "ss03"}
    assert sum(rep[g]["n"] for g in ("ss01", "ss02", "ss03")) == 20  # every training-split photo once
    assert rep["mean"]["srocc"] == pytest.approx(np.mean([rep[g]["srocc"] for g in ("ss01", "ss02", "ss03")]))
    assert json.loads((tmp_path / "loso.json").read_text())["mean"] == rep["mean"]

    # A cut run resumes: the subsets the report holds are kept, only the others are trained.
    cut = json.loads((tmp_path / "loso.json").read_text())
    del cut["mean"], cut["ss03"]
    (tmp_path / "loso.json").write_text(json.dumps(cut))
    trained = []
    real_train_head = loso.train_head

    def counting(*a, **k):
        trained.append(1)
        return real_train_head(*a, **k)

    monkeypatch.setattr(loso, "train_head", counting)
    again = loso.main(["--config", "train/configs/afiqa-biq2021.yaml", "--cache", str(tmp_path / "cache"),
                       "--set", "model.image_size=96", "model.feature_pool=1", "model.head_units=[16]",
                       "train.epochs=2", "train.batch_size=4", "data.val_fraction=0.25",
                       "--out", str(tmp_path / "loso.json")])
    assert len(trained) == 1  # ss03 only
    assert again["ss01"] == rep["ss01"] and again["ss02"] == rep["ss02"] and again["ss03"]["n"] == rep["ss03"]["n"]
    assert json.loads((tmp_path / "loso.json").read_text())["mean"] == again["mean"]

    # Scores from cached features come in chunks (a whole subset's inputs are never held at
    # once) and equal one pass over every row, in the rows' own order.
    from afiqa.model.config import ModelConfig
    from afiqa.model.network import build_head
    from train.features import FeatureCache

    cache = FeatureCache.open(tmp_path / "cache")
    cache.use_level_taps(card["config"]["level_taps"])
    head = build_head(ModelConfig.from_dict(card["config"]),
                      [[(None, *cache.features[i].shape[1:]), (None, cache.levels[i].shape[1])] for i in (0, 1)])
    rows = np.array([7, 2, 11, 0, 5, 19, 3])
    whole = head.predict_on_batch(cache.inputs(rows, [0, 1], True)).reshape(-1)
    np.testing.assert_allclose(cache.predict(head, rows, [0, 1], True, chunk=3), whole, rtol=1e-5, atol=1e-6)
    assert np.ptp(whole) > 0  # different photos, different scores: the order is really checked


def test_one_cache_with_candidate_taps_serves_sparse_and_dense_levels(tiny_biq, tmp_path):
    """cache_features --taps: FeatureCache.use_level_taps serves dense level vectors equal to
    those of a cache written with --level-taps dense, and switches back to its own."""
    from train import cache_features
    from train.features import FeatureCache

    common = ["--dataset", "biq2021", "--data-dir", str(tiny_biq), "--image-size", "96", "--limit", "6"]
    cache_features.main([*common, "--out", str(tmp_path / "all"), "--taps"])
    cache_features.main([*common, "--out", str(tmp_path / "dense"), "--level-taps", "dense"])
    both, dense = FeatureCache.open(tmp_path / "all"), FeatureCache.open(tmp_path / "dense")
    sparse = [lv.copy() for lv in both.levels]
    both.use_level_taps("dense")
    for i in range(2):
        assert both.levels[i].shape == dense.levels[i].shape and both.levels[i].shape[1] > sparse[i].shape[1]
        np.testing.assert_allclose(both.levels[i], dense.levels[i], rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(both.features[i], dense.features[i])
    both.use_level_taps("sparse")
    for i in range(2):
        np.testing.assert_array_equal(both.levels[i], sparse[i])
    with pytest.raises(SystemExit, match="--level-taps sparse"):
        dense.use_level_taps("sparse")  # no candidate taps stored: rebuild, it says how


def test_a_stopped_cache_run_resumes_where_it_stopped_and_matches_a_clean_run(tmp_path):
    """write_outputs: rows already on disk are not computed again; the result is the same."""
    from afiqa.model.config import ModelConfig
    from afiqa.io.inputs import to_model_input
    from train.cache_features import write_outputs

    cfg = ModelConfig(image_size=64, multilevel=True)
    images = [to_model_input(blur(scene(k), k % 3), 64) for k in range(10)]
    loaded = []

    def load(j, stop_at=None):
        if j == stop_at:
            raise KeyboardInterrupt  # as if the session were cut here
        loaded.append(j)
        return images[j]

    write_outputs(cfg, load, 10, tmp_path / "clean", 1, batch_size=2, flush_every=1, key="k")
    loaded.clear()
    with pytest.raises(KeyboardInterrupt):
        write_outputs(cfg, lambda j: load(j, stop_at=6), 10, tmp_path / "cut", 1, batch_size=2, flush_every=1, key="k")
    done = json.loads((tmp_path / "cut" / "progress.json").read_text())["done"]
    assert 0 < done <= 6
    loaded.clear()
    write_outputs(cfg, load, 10, tmp_path / "cut", 1, batch_size=2, flush_every=1, key="k")
    assert loaded == list(range(done, 10))  # only the rest was computed
    for name in ("s0_features.npy", "s0_levels.npy", "s1_features.npy", "s1_levels.npy"):
        np.testing.assert_allclose(np.load(tmp_path / "cut" / name), np.load(tmp_path / "clean" / name), rtol=1e-5, atol=1e-5)
    loaded.clear()
    write_outputs(cfg, load, 10, tmp_path / "cut", 1, batch_size=2, flush_every=1, key="other")
    assert loaded == list(range(10))  # other rows: started afresh


def test_threaded_batches_are_the_same_whichever_thread_makes_them():
    """train.loader_workers > 0: each batch draws its flip from its own (seed, epoch,
    batch) generator, so the order in which threads ask for batches changes nothing."""
    from train.features import CachedBatches

    class Rows:  # stands in for a FeatureCache: the rows themselves, and whether they were flipped
        scores = np.arange(40, dtype=np.float32)

        def inputs(self, rows, streams, multilevel, flip=False):
            return [np.asarray(rows, np.float32), np.full(len(rows), flip)]

    def epoch(batches, order):
        got = {k: batches[k] for k in order}
        return [np.concatenate([got[k][0][0], got[k][0][1]]) for k in range(len(batches))]

    a = CachedBatches(Rows(), np.arange(40), [0], False, 8, True, True, 7, workers=2)
    b = CachedBatches(Rows(), np.arange(40), [0], False, 8, True, True, 7, workers=2)
    first = epoch(a, range(len(a)))
    assert all(np.array_equal(x, y) for x, y in zip(first, epoch(b, reversed(range(len(b))))))
    assert sorted(np.concatenate([x[:8] for x in first]).tolist()) == list(range(40))  # every row once
    flips = {bool(x[-1]) for x in first}
    a.on_epoch_end()
    second = epoch(a, range(len(a)))
    assert not all(np.array_equal(x, y) for x, y in zip(first, second))  # a new epoch, new batches
    assert flips | {bool(x[-1]) for x in second} == {True, False}  # flips happen, not always
