import numpy as np
import pytest


def test_tiny_model_builds_runs_and_round_trips_keras_format(tmp_path, tiny_config):
    import keras

    from afiqa.model.network import build_model

    cfg = tiny_config.replace(backbone_weights=None)
    model = build_model(cfg)
    n = cfg.image_size
    x = np.random.default_rng(0).uniform(0, 255, (2, n, n, 3)).astype("float32")
    y = model.predict_on_batch(x)
    assert y.shape == (2, 1) and np.isfinite(y).all()

    model.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras")  # custom layers deserialize
    np.testing.assert_allclose(again.predict_on_batch(x), y, rtol=1e-5, atol=1e-6)


def test_weights_file_round_trip_into_a_fresh_build(tmp_path, tiny_config):
    from afiqa.model.network import build_model

    cfg = tiny_config.replace(backbone_weights=None, multilevel=True)
    a, b = build_model(cfg), build_model(cfg)
    n = cfg.image_size
    x = np.random.default_rng(1).uniform(0, 255, (3, n, n, 3)).astype("float32")
    a.save_weights(tmp_path / "w.weights.h5")
    assert not np.allclose(a.predict_on_batch(x), b.predict_on_batch(x))
    b.load_weights(tmp_path / "w.weights.h5")
    np.testing.assert_allclose(b.predict_on_batch(x), a.predict_on_batch(x), rtol=1e-5, atol=1e-6)


def test_custom_layers_serialize_their_config():
    import keras

    from afiqa.model.attention import ChannelAttention, SpatialAttentionMap
    from afiqa.model.layers import BackbonePreprocess, GlobalPooling
    from afiqa.model.losses import QualityLoss

    for obj in (ChannelAttention(4), SpatialAttentionMap(5), BackbonePreprocess("caffe"), GlobalPooling("avg_max")):
        clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(obj))
        assert type(clone) is type(obj) and clone.get_config() == obj.get_config()
    loss = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(QualityLoss(2.0, 0.3)))
    assert (loss.mae_weight, loss.plcc_weight) == (2.0, 0.3)


def test_attention_is_applied_to_the_spatial_map_before_pooling(tiny_config):
    from afiqa.model.network import HEAD, build_model, spatial_map_name

    model = build_model(tiny_config.replace(backbone_weights=None))
    head = model.get_layer(HEAD)
    for i in range(2):
        m = head.get_layer(spatial_map_name(i)).output
        side = tiny_config.image_size // 32  # the backbones' output stride
        assert m.shape[1] == m.shape[2] == side and m.shape[3] == 1
    no_att = build_model(tiny_config.replace(backbone_weights=None, channel_attention=False, spatial_attention=False))
    names = {layer.name for layer in no_att.get_layer(HEAD).layers}
    assert not any("attention" in n or "spatial_map" in n for n in names)


def test_residual_spatial_attention_weights_positions_by_one_plus_the_map(tiny_config):
    import keras

    from afiqa.model.network import build_head, spatial_map_name

    cfg = tiny_config.replace(backbone_weights=None, channel_attention=False, spatial_residual=True)
    shapes = [[(None, 3, 3, 8)], [(None, 3, 3, 4)]]
    head = build_head(cfg, shapes)
    x = [np.random.default_rng(2).normal(size=(2, 3, 3, c)).astype("float32") for c in (8, 4)]
    probe = keras.Model(head.inputs, [head.get_layer(spatial_map_name(0)).output,
                                      head.get_layer("s0_spatial_attention").output])
    a, weighted = probe.predict_on_batch(x)
    assert a.min() >= 0 and a.max() <= 1  # the map explanations show is still the [0, 1] one
    np.testing.assert_allclose(weighted, x[0] * (1.0 + a), rtol=1e-5, atol=1e-6)


def test_spatial_attention_map_is_a_sigmoid_map_that_depends_on_position():
    from afiqa.model.attention import SpatialAttentionMap

    x = np.zeros((1, 8, 8, 4), "float32")
    x[0, 2, 3] = 10.0
    m = np.asarray(SpatialAttentionMap(3)(x))
    assert m.shape == (1, 8, 8, 1) and (m > 0).all() and (m < 1).all()
    assert m[0, 2, 3, 0] != m[0, 6, 6, 0]


def test_channel_attention_weights_lie_in_0_1_and_scale_channels():
    from afiqa.model.attention import ChannelAttention

    x = np.random.default_rng(0).normal(size=(2, 4, 4, 16)).astype("float32")
    layer = ChannelAttention(4)
    y = np.asarray(layer(x))
    w = np.asarray(layer.weights_of(x))
    assert w.shape == (2, 16) and (w > 0).all() and (w < 1).all()
    np.testing.assert_allclose(y, x * w[:, None, None, :], rtol=1e-5, atol=1e-6)


def test_unknown_backbone_lists_close_matches():
    from afiqa.model.backbones import get_backbone
    from afiqa.model.config import ModelConfig
    from afiqa.errors import UnknownNameError

    with pytest.raises(UnknownNameError, match="Did you mean mobilenet_v2"):
        get_backbone("mobilenetv2")
    with pytest.raises(UnknownNameError, match="efficientnetb3"):
        ModelConfig(backbones=("efficientnet_b3", "mobilenet"))


def test_config_round_trip_and_validation():
    from afiqa.model.config import ModelConfig

    cfg = ModelConfig(backbones=("resnet50", "efficientnetb7"), image_size=224, multilevel=False)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="pooling"):
        ModelConfig(pooling="median")
    with pytest.raises(ValueError, match="unknown ModelConfig keys"):
        ModelConfig.from_dict({**cfg.to_dict(), "lr": 1})
    with pytest.raises(ValueError, match="no levels"):
        ModelConfig(backbones=("xception", "mobilenet"), multilevel=True)


def test_every_registered_backbone_names_a_constructor():
    import keras

    from afiqa.model import efficientnet_lite
    from afiqa.model.backbones import BACKBONES, LiteSpec

    for spec in BACKBONES.values():
        if isinstance(spec, LiteSpec):  # not in keras.applications: afiqa.model.efficientnet_lite builds it
            assert spec.variant in efficientnet_lite.VARIANTS and spec.name.endswith(str(spec.variant)), spec.name
        else:
            assert callable(getattr(keras.applications, spec.constructor)), spec.name


@pytest.mark.real_weights
def test_real_imagenet_mobilenets_load_offline_and_run():
    """Both offline backbones load ImageNet weights from KERAS_HOME at any input size."""
    import keras

    from afiqa.model.config import ModelConfig
    from afiqa.model.network import build_stream

    cfg = ModelConfig(image_size=96, multilevel=True)
    x = np.random.default_rng(0).uniform(0, 255, (1, 96, 96, 3)).astype("float32")
    for i, (name, channels) in enumerate((("mobilenet_v2", 1280), ("mobilenet", 1024))):
        stream = build_stream(cfg, i, weights="imagenet")
        fmap, levels = stream.predict_on_batch(x)
        assert fmap.shape == (1, 3, 3, channels) and levels.ndim == 2
        ref = getattr(keras.applications, "MobileNetV2" if i == 0 else "MobileNet")(
            include_top=False, weights="imagenet", input_shape=(None, None, 3)
        )
        expected = ref.predict_on_batch(x / 127.5 - 1.0)
        np.testing.assert_allclose(fmap, expected, rtol=1e-4, atol=1e-4)


def test_extra_scale_view_runs_the_same_backbone_on_the_box_downscaled_image():
    """extra_scales=(2,): the level vector gains the half-size view's pooled maps."""
    import keras

    from afiqa.model.config import ModelConfig
    from afiqa.model.layers import GlobalPooling
    from afiqa.model.network import build_stream

    x = np.random.default_rng(2).uniform(0, 255, (2, 96, 96, 3)).astype("float32")
    one = build_stream(ModelConfig(image_size=96, multilevel=True), 0, weights="imagenet")
    two = build_stream(ModelConfig(image_size=96, multilevel=True, extra_scales=(2,)), 0, weights="imagenet")
    f1, v1 = one.predict_on_batch(x)
    f2, v2 = two.predict_on_batch(x)
    np.testing.assert_allclose(f2, f1, rtol=1e-5, atol=1e-5)  # the full-size map is unchanged
    np.testing.assert_allclose(v2[:, : v1.shape[1]], v1, rtol=1e-5, atol=1e-5)
    half = x.reshape(2, 48, 2, 48, 2, 3).mean(axis=(2, 4))  # 2x2 box filter
    ref = keras.applications.MobileNetV2(include_top=False, weights="imagenet", input_shape=(None, None, 3))
    expected = GlobalPooling("avg_std")(ref(half / 127.5 - 1.0)).numpy()
    np.testing.assert_allclose(v2[:, -expected.shape[1]:], expected, rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError, match="multilevel"):
        ModelConfig(extra_scales=(2,))
    with pytest.raises(ValueError, match="extra_scales"):
        ModelConfig(image_size=96, multilevel=True, extra_scales=(4,))  # 24 px < 32


def test_dense_level_taps_pool_every_registered_block_in_order():
    """level_taps="dense": the level vector is the mean/std of each of the backbone's taps."""
    import keras

    from afiqa.model.backbones import get_backbone
    from afiqa.model.config import ModelConfig
    from afiqa.model.layers import GlobalPooling
    from afiqa.model.network import build_stream

    x = np.random.default_rng(3).uniform(0, 255, (2, 96, 96, 3)).astype("float32")
    for i, name in enumerate(("mobilenet_v2", "mobilenet")):
        spec = get_backbone(name)
        assert set(spec.levels) <= set(spec.taps) and len(spec.taps) > len(spec.levels)
        dense = build_stream(ModelConfig(image_size=96, multilevel=True, level_taps="dense"), i, weights=None)
        ref = spec.build(weights=None)
        ref.set_weights(dense.get_layer(name).get_weights())
        taps = keras.Model(ref.inputs, [ref.get_layer(n).output for n in spec.taps])
        expected = np.concatenate([GlobalPooling("avg_std")(m).numpy() for m in taps(x / 127.5 - 1.0)], axis=1)
        _, levels = dense.predict_on_batch(x)
        np.testing.assert_allclose(levels, expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="level_taps"):
        ModelConfig(level_taps="all")
    with pytest.raises(ValueError, match="no levels"):
        ModelConfig(backbones=("xception", "mobilenet"), multilevel=True, level_taps="dense")


def test_head_members_average_their_own_regressors_and_one_member_keeps_the_old_names(tiny_config):
    from afiqa.model.network import SCORE_LAYER, build_head, build_model, member_score_names, member_view

    cfg = tiny_config.replace(backbone_weights=None, multilevel=True, head_members=3)
    shapes = [[(None, 3, 3, 1280), (None, 8)], [(None, 3, 3, 1024), (None, 6)]]
    head = build_head(cfg, shapes)
    rng = np.random.default_rng(0)
    x = [rng.normal(size=(4, *s[1:])).astype("float32") for pair in shapes for s in pair]
    members = member_view(head, cfg).predict_on_batch(x)
    assert members.shape == (4, 3) and np.ptp(members, axis=1).min() > 0  # three different regressors
    np.testing.assert_allclose(head.predict_on_batch(x).reshape(-1), members.mean(axis=1), rtol=1e-5, atol=1e-6)
    assert member_score_names(cfg) == ["score_m0", "score_m1", "score_m2"]

    from afiqa.model.losses import QualityLoss
    from train.synthetic import hinge, ranking_trainer

    trainer = ranking_trainer(member_view(head, cfg))  # as train.fit trains them, with ranking pairs
    trainer.compile("adam", loss=[QualityLoss(1.0, 0.5), hinge(0.03)])
    before = [head.get_layer(n).kernel.numpy().copy() for n in member_score_names(cfg)]
    y = rng.uniform(0, 1, 4).astype("float32")
    trainer.fit(x + x + x, [y, np.zeros(4)], batch_size=4, epochs=1, verbose=0)
    assert all(not np.allclose(b, head.get_layer(n).kernel.numpy()) for b, n in zip(before, member_score_names(cfg)))

    one = build_model(tiny_config.replace(backbone_weights=None, multilevel=True))  # the shipped weights' layout
    names = {layer.name for layer in one.get_layer("head").layers}
    assert SCORE_LAYER in names and "head_dense_0" in names and not any(n.endswith("_m0") for n in names)
    with pytest.raises(ValueError, match="head_members"):
        tiny_config.replace(head_members=0)


def test_reflect_padded_mirror_tied_attention_follows_content_not_position():
    """spatial_padding="reflect", spatial_mirror=True: the map of a mirrored feature map is
    the mirrored map (exactly), and a featureless map gets a flat map (no positional
    prior), while the zero-padded CBAM convolution responds to the border."""
    from afiqa.model.attention import SpatialAttentionMap

    rng = np.random.default_rng(4)
    x = rng.normal(size=(3, 8, 8, 6)).astype("float32")
    tied = SpatialAttentionMap(7, "reflect", mirror=True)
    tied.build(x.shape)
    tied.conv.kernel.assign(rng.normal(size=(7, 7, 2, 1)).astype("float32"))  # an asymmetric kernel
    m, m_flip = np.asarray(tied(x)), np.asarray(tied(x[:, :, ::-1]))
    np.testing.assert_allclose(m_flip, m[:, :, ::-1], rtol=1e-5, atol=1e-6)
    assert np.ptp(m) > 0.1  # it still depends on the content

    flat = np.ones((1, 8, 8, 6), "float32")
    assert np.ptp(np.asarray(tied(flat))) < 1e-6  # nothing in the cells, nothing in the map
    zero = SpatialAttentionMap(7)
    zero.build(x.shape)
    zero.conv.set_weights(tied.conv.get_weights())
    assert np.ptp(np.asarray(zero(flat))) > 0.1  # zero padding: the border alone shapes the map
    with pytest.raises(ValueError, match="padding"):
        SpatialAttentionMap(7, "circular")


def test_mean_std_descriptors_are_the_channels_mean_and_standard_deviation():
    """spatial_descriptors="mean_std": the convolution reads each cell's mean and standard
    deviation across channels (not the max, which one channel decides), stays exactly
    mirror-equivariant with the tied kernel, and survives a save (get_config)."""
    from afiqa.model.attention import SpatialAttentionMap

    rng = np.random.default_rng(5)
    x = rng.gamma(1.0, size=(2, 8, 8, 32)).astype("float32")
    layer = SpatialAttentionMap(3, "reflect", mirror=True, descriptors="mean_std")
    layer.build(x.shape)
    picks_std = np.zeros((3, 3, 2, 1), "float32")
    picks_std[1, 1, 1, 0] = 1.0  # the centre tap of the second descriptor only
    layer.conv.kernel.assign(picks_std)
    layer.conv.bias.assign(np.zeros(1, "float32"))
    expected = 1 / (1 + np.exp(-np.sqrt(x.var(axis=-1) + 1e-6)))
    np.testing.assert_allclose(np.asarray(layer(x))[..., 0], expected, rtol=1e-5)
    picks_std[1, 1, 1, 0], picks_std[1, 1, 0, 0] = 0.0, 1.0  # the first: the mean
    layer.conv.kernel.assign(picks_std)
    np.testing.assert_allclose(np.asarray(layer(x))[..., 0], 1 / (1 + np.exp(-x.mean(axis=-1))), rtol=1e-5)

    layer.conv.kernel.assign(rng.normal(size=(3, 3, 2, 1)).astype("float32"))
    np.testing.assert_allclose(np.asarray(layer(x[:, :, ::-1])), np.asarray(layer(x))[:, :, ::-1], rtol=1e-5, atol=1e-6)
    again = SpatialAttentionMap.from_config(layer.get_config())
    assert again.descriptors == "mean_std"
    assert np.isfinite(np.asarray(layer(np.zeros((1, 8, 8, 32), "float32")))).all()  # flat cells: no NaN
    with pytest.raises(ValueError, match="descriptors"):
        SpatialAttentionMap(7, descriptors="mean_min")


def test_smooth_kernel_is_a_blur_of_the_descriptors_times_a_weight_each():
    """spatial_kernel_form="smooth": the kernel is one non-negative profile summing to 1
    times a signed weight per descriptor, so a map is a blurred, weighted sum of the
    descriptors: a centred bump at the start, a box when the profile is flat, a single
    cell when it is sharp, never a difference of neighbouring cells (a free kernel can
    be one). With ``descriptors="std"`` there is one descriptor and one weight."""
    from afiqa.model.attention import SpatialAttentionMap

    rng = np.random.default_rng(6)
    x = rng.gamma(1.0, size=(2, 8, 8, 16)).astype("float32")
    layer = SpatialAttentionMap(3, "reflect", mirror=True, descriptors="mean_std", kernel_form="smooth")
    layer.build(x.shape)
    assert sorted(tuple(w.shape) for w in layer.weights) == sorted([(3, 3), (2,), (1,)])
    start = np.asarray(layer.kernel())[..., 0, 0] / float(layer.mix.numpy()[0])
    assert start.argmax() == 4 and start[1, 1] > start[0, 1] > start[0, 0] > 0  # a bump on the centre cell
    layer.mix.assign(np.array([1.0, 0.0], "float32"))
    layer.profile.assign(np.zeros((3, 3), "float32"))
    mean = x.mean(axis=-1)
    padded = np.pad(mean, ((0, 0), (1, 1), (1, 1)), mode="reflect")
    box = sum(padded[:, i:i + 8, j:j + 8] for i in range(3) for j in range(3)) / 9  # zero profile: a 3x3 box
    np.testing.assert_allclose(np.asarray(layer(x))[..., 0], 1 / (1 + np.exp(-box)), rtol=1e-5)
    sharp = np.full((3, 3), -30.0, "float32")
    sharp[1, 1] = 30.0  # all the weight on the centre tap: the cell itself
    layer.profile.assign(sharp)
    np.testing.assert_allclose(np.asarray(layer(x))[..., 0], 1 / (1 + np.exp(-mean)), rtol=1e-5)

    layer.profile.assign(rng.normal(size=(3, 3)).astype("float32"))
    layer.mix.assign(rng.normal(size=2).astype("float32"))
    kernel = np.asarray(layer.kernel())
    assert kernel.shape == (3, 3, 2, 1)
    for c in range(2):  # each descriptor's slice: its weight times a non-negative profile summing to 1
        profile = kernel[..., c, 0] / float(layer.mix.numpy()[c])
        assert (profile >= 0).all() and np.isclose(profile.sum(), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(layer(x[:, :, ::-1])), np.asarray(layer(x))[:, :, ::-1], rtol=1e-5, atol=1e-6)
    again = SpatialAttentionMap.from_config(layer.get_config())
    assert again.kernel_form == "smooth"

    one = SpatialAttentionMap(3, "reflect", mirror=True, descriptors="std", kernel_form="smooth")
    one.build(x.shape)
    assert tuple(one.mix.shape) == (1,) and tuple(one.kernel().shape) == (3, 3, 1, 1)
    one.profile.assign(sharp)
    one.mix.assign(np.array([-2.0], "float32"))
    expected = 1 / (1 + np.exp(2.0 * np.sqrt(x.var(axis=-1) + 1e-6)))
    np.testing.assert_allclose(np.asarray(one(x))[..., 0], expected, rtol=1e-5)
    free = SpatialAttentionMap(3, "reflect", descriptors="std")
    free.build(x.shape)
    assert tuple(free.conv.kernel.shape) == (3, 3, 1, 1)
    with pytest.raises(ValueError, match="kernel_form"):
        SpatialAttentionMap(3, kernel_form="gaussian")


def test_attention_options_reach_the_head_and_old_layouts_keep_their_weights(tiny_config):
    from afiqa.model.network import build_head, spatial_map_name

    shapes = [[(None, 3, 3, 8)], [(None, 3, 3, 4)]]
    old = build_head(tiny_config, shapes)
    new = build_head(tiny_config.replace(spatial_padding="reflect", spatial_mirror=True,
                                         spatial_descriptors="mean_std"), shapes)
    smooth = build_head(tiny_config.replace(spatial_padding="reflect", spatial_kernel_form="smooth"), shapes)
    assert smooth.get_layer(spatial_map_name(0)).kernel_form == "smooth"
    layer = new.get_layer(spatial_map_name(0))
    assert (layer.padding, layer.mirror, layer.descriptors) == ("reflect", True, "mean_std")
    assert [w.shape for w in old.weights] == [w.shape for w in new.weights]  # same weights, new use
    with pytest.raises(ValueError, match="spatial_padding"):
        tiny_config.replace(spatial_padding="same")
    with pytest.raises(ValueError, match="spatial_descriptors"):
        tiny_config.replace(spatial_descriptors="max")
    with pytest.raises(ValueError, match="spatial_kernel_form"):
        tiny_config.replace(spatial_kernel_form="gaussian")
