import numpy as np

from imagegen import blur, scene


def _inputs(size, *images):
    from afiqa.inputs import to_model_input

    return np.stack([to_model_input(im, size) for im in images])


def test_gradcam_shapes_ranges_and_scores_match_the_model(tiny_predictor):
    from afiqa.explain import FUSED, explain

    size = tiny_predictor.size
    x = _inputs(size, scene(1), scene(2))
    e = explain(tiny_predictor.model, x)
    assert set(e.gradcam) == {"stream_0", "stream_1", FUSED}
    for m in list(e.gradcam.values()) + list(e.attention.values()):
        assert m.shape == (2, size, size) and m.dtype == np.float32
        assert m.min() >= 0.0 and m.max() <= 1.0
    assert e.gradcam[FUSED].max() == 1.0  # normalised, not an empty map
    np.testing.assert_allclose(e.scores, tiny_predictor.predict_raw(x), rtol=1e-4, atol=1e-5)


def test_gradcam_depends_on_the_image(tiny_predictor):
    from afiqa.explain import FUSED, explain

    x = _inputs(tiny_predictor.size, scene(3), np.ascontiguousarray(scene(3)[::-1, ::-1]), blur(scene(4), 2))
    cams = explain(tiny_predictor.model, x).gradcam[FUSED]
    assert np.std(cams[0]) > 0.05  # not a constant map
    assert np.abs(cams[0] - cams[1]).mean() > 0.02  # flipped image -> different map
    assert np.abs(cams[0] - cams[2]).mean() > 0.02


def test_overlay_blends_at_image_resolution():
    from afiqa.explain import overlay, resize_map

    img = scene(5, size=(90, 70))
    heat = np.zeros((8, 8), np.float32)
    heat[:4] = 1.0
    out = overlay(img, heat, alpha=0.5)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert not np.array_equal(out, img)
    assert resize_map(heat, (70, 90)).shape == (70, 90)
    # hot half and cold half are coloured differently (jet: red vs blue)
    assert out[:20, :, 0].mean() - img[:20, :, 0].mean() > out[-20:, :, 0].mean() - img[-20:, :, 0].mean()
