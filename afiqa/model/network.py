"""Build the two-stream attention network from a ``ModelConfig``.

    image (S, S, 3) RGB 0..255
      ├─ stream_0: preprocess -> backbone A -> feature map A  [-> pooled earlier levels]
      │            [downscaled view -> backbone A -> pooled maps, joining the levels]
      └─ stream_1: preprocess -> backbone B -> feature map B  [-> pooled earlier levels]
                   [downscaled view -> backbone B -> pooled maps, joining the levels]
    head: per stream channel attention -> spatial attention -> pooling; concatenate
          (fusion) -> normalise -> dense -> score (MOS in [0, 1], higher is better);
          with ``head_members`` > 1, several dense regressors and the mean of their scores

The streams and the head are nested functional models named ``stream_<i>`` and
``head``, so explanations can run them separately: feature maps from the streams,
gradients of the head's score with respect to them (``afiqa.explain``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from afiqa.model.backbones import get_backbone
from afiqa.model.config import ModelConfig

if TYPE_CHECKING:
    import keras
# Keras (and the layers built on it) is imported by the builders, not here: the names
# below (HEAD, stream_name...) are read by modules that must import without TensorFlow.

HEAD = "head"
SCORE_LAYER = "score"


def stream_name(i: int) -> str:
    return f"stream_{i}"


def spatial_map_name(i: int) -> str:
    """Layer of the head that outputs stream ``i``'s spatial attention map."""
    return f"s{i}_spatial_map"


def build_stream(cfg: ModelConfig, i: int, weights: str | None = None) -> keras.Model:
    """Image -> [feature map] (+ [pooled earlier levels] when ``cfg.multilevel``)."""
    import keras

    from afiqa.model.layers import BackbonePreprocess, GlobalPooling

    spec = get_backbone(cfg.backbones[i])
    shape = (cfg.image_size, cfg.image_size, 3)
    backbone = spec.build(weights=weights)
    backbone.trainable = False
    image = keras.Input(shape, name="image")
    x = BackbonePreprocess(spec.preprocess, name="preprocess")(image)
    if cfg.multilevel:
        taps = keras.Model(
            backbone.inputs,
            [backbone.output] + [backbone.get_layer(n).output for n in spec.level_layers(cfg.level_taps)],
            name=spec.name,
        )
        fmap, *levels = taps(x, training=False)
        pooled = [GlobalPooling("avg_std", name=f"level_{k}_pool")(m) for k, m in enumerate(levels)]
        for f in cfg.extra_scales:  # the same backbone on a box-downscaled view
            view = keras.layers.AveragePooling2D(f, name=f"view_{f}")(x)
            fmap_f, *levels_f = taps(view, training=False)
            pooled += [GlobalPooling("avg_std", name=f"view_{f}_level_{k}_pool")(m) for k, m in enumerate(levels_f)]
            pooled.append(GlobalPooling("avg_std", name=f"view_{f}_pool")(fmap_f))
        outputs = [fmap, keras.layers.Concatenate(name="levels")(pooled)]
    else:
        outputs = [backbone(x, training=False)]
    return keras.Model(image, outputs, name=stream_name(i))


def build_head(cfg: ModelConfig, stream_output_shapes: list[list[tuple]], prepooled: bool = False) -> keras.Model:
    """Stream outputs (flattened, in stream order) -> score.

    ``prepooled``: the feature maps given are already pooled by ``cfg.feature_pool``
    (training on cached features); the weights are the same either way.
    """
    import keras

    from afiqa.model.attention import ChannelAttention, SpatialAttentionMap
    from afiqa.model.layers import GlobalPooling

    inputs, pooled = [], []
    for i, shapes in enumerate(stream_output_shapes):
        fmap = keras.Input(shapes[0][1:], name=f"s{i}_features")
        inputs.append(fmap)
        x = fmap
        if cfg.feature_pool > 1 and not prepooled:
            x = keras.layers.AveragePooling2D(cfg.feature_pool, name=f"s{i}_feature_pool")(x)
        if cfg.channel_attention:
            x = ChannelAttention(cfg.reduction, name=f"s{i}_channel_attention")(x)
        if cfg.spatial_attention:
            m = SpatialAttentionMap(cfg.spatial_kernel, cfg.spatial_padding, cfg.spatial_mirror,
                                    cfg.spatial_descriptors, cfg.spatial_kernel_form,
                                    name=spatial_map_name(i))(x)
            if cfg.spatial_residual:  # 1 + a
                m = keras.layers.Rescaling(1.0, offset=1.0, name=f"s{i}_spatial_residual")(m)
            x = keras.layers.Multiply(name=f"s{i}_spatial_attention")([x, m])
        pooled.append(GlobalPooling(cfg.pooling, name=f"s{i}_pool")(x))
        if cfg.multilevel:
            lv = keras.Input(shapes[1][1:], name=f"s{i}_levels")
            inputs.append(lv)
            pooled.append(lv)
    x = keras.layers.Concatenate(name="fusion")(pooled) if len(pooled) > 1 else pooled[0]
    x = keras.layers.BatchNormalization(name="fusion_norm")(x)
    members = [_regressor(cfg, x, member_suffix(j, cfg.head_members)) for j in range(cfg.head_members)]
    score = members[0] if len(members) == 1 else keras.layers.Average(name=SCORE_LAYER, dtype="float32")(members)
    return keras.Model(inputs, score, name=HEAD)


def member_suffix(j: int, members: int) -> str:
    """Layer-name suffix of regression head ``j`` (none for a single head, so one-head
    weights keep their names)."""
    return "" if members == 1 else f"_m{j}"


def member_score_names(cfg: ModelConfig) -> list[str]:
    """The head's layers that output each member's score, in member order."""
    return [SCORE_LAYER + member_suffix(j, cfg.head_members) for j in range(cfg.head_members)]


def member_view(head: keras.Model, cfg: ModelConfig) -> keras.Model:
    """The head with every member's score as an output, (B, K), sharing its weights (the
    head itself for one member): what training fits, one loss per member."""
    import keras

    if cfg.head_members == 1:
        return head
    scores = [head.get_layer(n).output for n in member_score_names(cfg)]
    return keras.Model(head.inputs, keras.layers.Concatenate(name="member_scores")(scores))


def _regressor(cfg: ModelConfig, x, suffix: str):
    import keras

    for k, units in enumerate(cfg.head_units):
        x = keras.layers.Dropout(cfg.dropout, name=f"head_dropout_{k}{suffix}")(x)
        x = keras.layers.Dense(units, activation="relu", name=f"head_dense_{k}{suffix}")(x)
    x = keras.layers.Dropout(cfg.dropout, name=f"head_dropout_out{suffix}")(x)
    return keras.layers.Dense(1, name=SCORE_LAYER + suffix, dtype="float32")(x)


def build_model(cfg: ModelConfig, backbone_weights: str | None | type(...) = ...) -> keras.Model:
    """The full network: ``(B, S, S, 3)`` RGB 0..255 -> ``(B, 1)`` score.

    ``backbone_weights`` overrides ``cfg.backbone_weights`` (pass ``None`` when trained
    afiqa weights, which hold the backbones too, are loaded right after).
    """
    import keras

    weights = cfg.backbone_weights if backbone_weights is ... else backbone_weights
    streams = [build_stream(cfg, i, weights) for i in range(len(cfg.backbones))]
    image = keras.Input((cfg.image_size, cfg.image_size, 3), name="image")
    outs = [_as_list(s(image)) for s in streams]
    head = build_head(cfg, [[tuple(t.shape) for t in o] for o in outs])
    score = head([t for o in outs for t in o])
    return keras.Model(image, score, name="afiqa")


FUSED_LAYER = "fusion_norm"  # the normalised fused features every member reads


def feature_view(model: keras.Model, cfg: ModelConfig) -> keras.Model:
    """The trained network with three outputs sharing its weights: the score (B, 1), every
    member's score (B, K) and the normalised fused features (B, D) that the members read,
    which the side heads (``afiqa.model.sideheads``) take as their input."""
    import keras

    head = model.get_layer(HEAD)
    members = [head.get_layer(n).output for n in member_score_names(cfg)]
    inner = keras.Model(head.inputs, [head.output, _concat(members), head.get_layer(FUSED_LAYER).output])
    image = keras.Input((cfg.image_size, cfg.image_size, 3), name="image")
    outs = [_as_list(s(image)) for s in streams_of(model)]
    score, member_scores, fused = inner([t for o in outs for t in o])
    return keras.Model(image, [score, member_scores, fused], name="afiqa_features")


def _concat(xs):
    import keras

    return xs[0] if len(xs) == 1 else keras.layers.Concatenate(name="member_scores")(xs)


def streams_of(model: keras.Model) -> list[keras.Model]:
    out, i = [], 0
    while True:
        try:
            out.append(model.get_layer(stream_name(i)))
        except ValueError:
            return out
        i += 1


def _as_list(x):
    return list(x) if isinstance(x, (list, tuple)) else [x]
