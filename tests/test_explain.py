import numpy as np

from imagegen import blur, scene


def _inputs(size, *images):
    from afiqa.io.inputs import to_model_input

    return np.stack([to_model_input(im, size) for im in images])


def test_gradcam_is_signed_at_model_resolution_and_scores_match_the_model(tiny_predictor):
    from afiqa.explain import FUSED, explain

    size = tiny_predictor.size
    x = _inputs(size, scene(1), scene(2))
    e = explain(tiny_predictor.model, x)
    assert set(e.gradcam) == {"stream_0", "stream_1", FUSED}
    side = size // 32  # the backbones' last maps: stride 32, never the image's size
    for m in e.gradcam.values():
        assert m.shape == (2, side, side) and m.dtype == np.float32
        assert m.min() >= -1.0 and m.max() <= 1.0
        assert (np.abs(m).reshape(2, -1).max(axis=1) == 1.0).all()  # scaled by the largest |value|
    for m in e.attention.values():
        assert m.shape[0] == 2 and m.shape[1] <= side and m.min() >= 0.0 and m.max() <= 1.0
    np.testing.assert_allclose(e.scores, tiny_predictor.predict_raw(x), rtol=1e-4, atol=1e-5)


def test_gradcam_depends_on_the_image(tiny_predictor):
    from afiqa.explain import FUSED, explain

    x = _inputs(tiny_predictor.size, scene(3), np.ascontiguousarray(scene(3)[::-1, ::-1]), blur(scene(4), 2))
    cams = explain(tiny_predictor.model, x).gradcam[FUSED]
    assert np.std(cams[0]) > 0.05  # not a constant map
    assert np.abs(cams[0] - cams[1]).mean() > 0.02  # flipped image -> different map
    assert np.abs(cams[0] - cams[2]).mean() > 0.02


def test_a_flat_map_stays_flat_and_signs_survive_scaling():
    from afiqa.explain import scale_signed

    flat = np.full((16, 16), 0.3, np.float32)
    flat[3, 4] = 0.31  # a tiny difference: min-max scaling made this a full-range blotch
    s = scale_signed(flat)
    assert s.min() > 0.96 and s.max() == 1.0
    assert not scale_signed(np.zeros((4, 4))).any()
    m = np.array([[-2.0, 1.0], [0.0, 0.5]], np.float32)
    np.testing.assert_allclose(scale_signed(m), m / 2.0)


def test_overlay_is_blue_where_quality_is_lowered_red_where_raised_clear_where_no_effect():
    from afiqa.io.render import overlay

    img = np.full((80, 120, 3), 128, np.uint8)
    heat = np.zeros((8, 12), np.float32)
    heat[:, :4], heat[:, 8:] = -1.0, 1.0
    out = overlay(img, heat)
    assert out.shape == img.shape and out.dtype == np.uint8
    out = out.astype(int)
    left, mid, right = out[:, :30].mean((0, 1)), out[:, 55:65].mean((0, 1)), out[:, 90:].mean((0, 1))
    assert left[2] - left[0] > 40 and right[0] - right[2] > 40  # blue lowers, red raises
    assert np.ptp(mid) < 3  # no effect: the photo (in grey), not a colour
    mag = overlay(img, heat, "magnitude").astype(int)
    # magnitude: lowering and raising look the same (means within a level: OpenCV's SIMD paths differ by
    # processor, and .round() of a mean near x.5 is luck)
    np.testing.assert_allclose(mag[:, :30].mean((0, 1)), mag[:, 90:].mean((0, 1)), atol=1.0)


def test_heatmap_picture_is_capped_and_carries_title_and_legend():
    from afiqa.io.render import DISPLAY_SIDE, heatmap_picture

    img = np.full((3000, 2000, 3), 90, np.uint8)
    heat = np.linspace(-1, 1, 64, dtype=np.float32).reshape(8, 8)
    out = heatmap_picture(img, heat, "71.9 good  photo.jpg")
    assert out.shape[1] == round(2000 * DISPLAY_SIDE / 3000) and out.shape[0] > DISPLAY_SIDE  # + title + legend
    assert out.shape[0] < DISPLAY_SIDE + 200
    band = out[-30:]  # the legend: blue at its left end, red at its right end
    blue = band[(band[..., 2].astype(int) - band[..., 0] > 80)]
    red = band[(band[..., 0].astype(int) - band[..., 2] > 80)]
    assert len(blue) > 50 and len(red) > 50
    full = heatmap_picture(img[:1200, :1100], heat, "t", side=None)
    assert full.shape[1] == 1100
