import numpy as np
import pytest
from PIL import Image

from imagegen import blur, jpeg_bytes, scene


def test_score_accepts_path_pil_array_and_bytes_alike(tmp_path, tiny_predictor):
    img = scene(7)
    path = tmp_path / "scene.png"
    Image.fromarray(img).save(path)
    scores = [
        tiny_predictor.score(path).score,
        tiny_predictor.score(str(path)).score,
        tiny_predictor.score(Image.fromarray(img)).score,
        tiny_predictor.score(img).score,
        tiny_predictor.score(path.read_bytes()).score,
        tiny_predictor.score(img.astype(np.float32) / 255.0).score,
    ]
    assert all(0.0 <= s <= 100.0 for s in scores)
    assert max(scores) - min(scores) < 1e-3


def test_result_has_label_on_the_card_scale(tiny_predictor):
    r = tiny_predictor.score(scene(8))
    assert r.ok and r.label in tiny_predictor.card.labels
    assert r.label == tiny_predictor.card.label(r.score)


def test_blur_lowers_the_score_of_the_trained_tiny_model(tiny_predictor):
    sharp, blurred = tiny_predictor.score_batch([scene(100), blur(scene(100), 4)])
    assert sharp.score > blurred.score + 10


def test_batch_keeps_order_and_reports_bad_items_without_losing_good_ones(tmp_path, tiny_predictor):
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    items = [scene(i) for i in range(5)]
    items.insert(2, bad)
    items.insert(4, np.zeros((4, 4, 3), np.uint8))
    tiny_predictor.batch_size = 3
    results = tiny_predictor.score_batch(items)
    assert [r.ok for r in results] == [True, True, False, True, False, True, True]
    assert "not an image" in results[2].error and "at least" in results[4].error
    alone = [tiny_predictor.score(scene(i)).score for i in range(5)]
    got = [r.score for r in results if r.ok]
    np.testing.assert_allclose(got, alone, atol=1e-3)


def test_score_raises_a_clear_error_for_one_bad_image(tmp_path, tiny_predictor):
    from afiqa.errors import ImageError

    with pytest.raises(ImageError, match="no such file"):
        tiny_predictor.score(tmp_path / "missing.jpg")


def test_heatmaps_come_at_the_models_resolution_and_draw_at_the_images(tiny_predictor):
    from afiqa.io.render import overlay

    img = scene(9, size=(120, 90))
    r = tiny_predictor.score(jpeg_bytes(img), heatmaps=True)
    assert r.image.shape == img.shape
    side = tiny_predictor.size // 32  # never a full-resolution map per image
    assert r.heatmaps["fused"].shape == (side, side) and np.abs(r.heatmaps["fused"]).max() == 1.0
    assert overlay(r.image, r.heatmaps["fused"]).shape == img.shape
    assert set(r.attention) == {"stream_0", "stream_1"}
    plain = tiny_predictor.score(jpeg_bytes(img)).score
    assert r.score == pytest.approx(plain, abs=1e-2)


def test_unknown_model_name_is_a_clear_error():
    from afiqa.errors import UnknownNameError
    from afiqa.predictor import Predictor

    with pytest.raises(UnknownNameError, match="Unknown model 'afiqa-biq'"):
        Predictor("afiqa-biq")


def test_corrupt_weights_file_is_a_clear_error(tmp_path, tiny_card_path):
    import json

    from afiqa.errors import WeightsError
    from afiqa.predictor import Predictor

    bad = tmp_path / "bad.weights.h5"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(WeightsError, match="could not be loaded"):
        Predictor(tiny_card_path, weights=bad)
    card = json.loads(tiny_card_path.read_text())
    card["sha256"] = "0" * 64
    (tmp_path / "afiqa-tiny.json").write_text(json.dumps(card))
    (tmp_path / "afiqa-tiny.weights.h5").write_bytes((tiny_card_path.parent / card["weights_file"]).read_bytes())
    with pytest.raises(WeightsError, match="sha256"):
        Predictor(tmp_path / "afiqa-tiny.json")
