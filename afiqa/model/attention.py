"""CBAM-style attention on a spatial feature map (Woo et al., ECCV 2018).

Channel attention: average- and max-pooled descriptors through one shared two-layer MLP
(reduction ratio ``r``), summed, sigmoid; the map's channels are scaled by the result.
Spatial attention: the channel-wise mean and max stacked (or mean and standard
deviation), a ``k x k`` convolution, sigmoid; a (B, H, W, 1) map in [0, 1].
``SpatialAttentionMap`` returns the map itself (so explanations can show it) and the
model multiplies it in.

On a small grid (8x8 cells at 512 px) a 7x7 convolution with zero padding sees the
border at almost every position, and a trained one learns where the border is: the
map becomes a fixed positional prior that peaks in the same corner for every photo.
``padding="reflect"`` pads the descriptors with their own mirror image, so the map can
only respond to what the cells hold; ``mirror=True`` ties the kernel's left and right
halves, so the map of a mirrored feature map is exactly the mirrored map.

Frozen ImageNet backbones are not mirror-equivariant themselves: the map a photo's mirror
gives is only roughly the mirror of the photo's map, channel by channel. Measured on
validation photos at 8x8, the channel-wise mean and standard deviation of a mirrored
photo's map correlate 0.91-0.95 with the mirrored descriptors, the channel-wise max only
0.74-0.82 (0.55-0.69 on the README's examples): one channel's peak decides it.
``descriptors="mean_std"`` builds the map from the two steady ones.

Those steady descriptors still differ a little between a photo and its mirror (8x8
correlation 0.91-0.92 on the README's examples), and a free 7x7 kernel can learn a
difference of neighbouring cells that magnifies it: afiqa-v3's MobileNetV2 kernel
sums to -0.85 on the mean descriptor against 3.7 in absolute values, and its map's
mirror correlation falls to 0.80 (0.55 on one photo). ``kernel_form="smooth"`` writes
the kernel as one non-negative profile that sums to 1 (a softmax over the ``k x k``
taps: a learned blur, from a single cell to a 7x7 box) times a signed weight per
descriptor: the map is a blurred, weighted sum of the descriptors, as steady as they
are. The profile starts as a bump on the cell itself (a 7x7 box start flattened the
map, and training hardly moves it); with ``descriptors="std"`` there is one
descriptor, so no two can cancel each other either (afiqa-v4's map: mirror
correlation 0.92-0.96, train/README.md).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from afiqa.model.config import SPATIAL_DESCRIPTORS, SPATIAL_KERNEL_FORMS, SPATIAL_PADDINGS


@keras.saving.register_keras_serializable(package="afiqa")
class ChannelAttention(keras.layers.Layer):
    def __init__(self, reduction: int = 16, **kwargs):
        super().__init__(**kwargs)
        self.reduction = int(reduction)

    def build(self, input_shape):
        channels = int(input_shape[-1])
        hidden = max(channels // self.reduction, 1)
        self.mlp_hidden = keras.layers.Dense(hidden, activation="relu", name="mlp_hidden")
        self.mlp_out = keras.layers.Dense(channels, name="mlp_out")
        self.mlp_hidden.build((None, channels))
        self.mlp_out.build((None, hidden))

    def weights_of(self, x):
        """The (B, C) channel weights in [0, 1] for feature map ``x``."""
        avg = ops.mean(x, axis=(1, 2))
        mx = ops.max(x, axis=(1, 2))
        logits = self.mlp_out(self.mlp_hidden(avg)) + self.mlp_out(self.mlp_hidden(mx))
        return ops.sigmoid(logits)

    def call(self, x):
        w = self.weights_of(x)
        return x * ops.expand_dims(ops.expand_dims(w, 1), 1)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "reduction": self.reduction}


def _centred_bump(shape, dtype=None):
    """Profile logits of a blur that starts close to the cell itself: a Gaussian of one
    cell's standard deviation (a box over a 7x7 kernel on an 8x8 grid flattens the map
    to almost nothing, and training barely moves a profile away from its start)."""
    k = shape[0]
    d = np.arange(k, dtype="float32") - (k - 1) / 2
    return ops.convert_to_tensor(-(d[:, None] ** 2 + d[None, :] ** 2) / 2.0, dtype=dtype)


@keras.saving.register_keras_serializable(package="afiqa")
class SpatialAttentionMap(keras.layers.Layer):
    PADDINGS = SPATIAL_PADDINGS
    DESCRIPTORS = SPATIAL_DESCRIPTORS
    KERNEL_FORMS = SPATIAL_KERNEL_FORMS

    def __init__(self, kernel_size: int = 7, padding: str = "zero", mirror: bool = False,
                 descriptors: str = "mean_max", kernel_form: str = "free", **kwargs):
        super().__init__(**kwargs)
        if padding not in self.PADDINGS:
            raise ValueError(f"padding: expected one of {self.PADDINGS}, got {padding!r}")
        if descriptors not in self.DESCRIPTORS:
            raise ValueError(f"descriptors: expected one of {self.DESCRIPTORS}, got {descriptors!r}")
        if kernel_form not in self.KERNEL_FORMS:
            raise ValueError(f"kernel_form: expected one of {self.KERNEL_FORMS}, got {kernel_form!r}")
        self.kernel_size = int(kernel_size)
        self.padding = padding
        self.mirror = bool(mirror)
        self.descriptors = descriptors
        self.kernel_form = kernel_form

    def build(self, input_shape):
        if self.kernel_form == "smooth":
            k = self.kernel_size
            self.profile = self.add_weight(name="profile", shape=(k, k), initializer=_centred_bump)
            self.mix = self.add_weight(name="mix", shape=(self.n_descriptors,),
                                       initializer=keras.initializers.RandomNormal(stddev=0.5))
            self.bias = self.add_weight(name="bias", shape=(1,), initializer="zeros")
            return
        self.conv = keras.layers.Conv2D(
            1, self.kernel_size, padding="same", activation="sigmoid", name="conv"
        )
        self.conv.build(tuple(input_shape[:-1]) + (self.n_descriptors,))

    @property
    def n_descriptors(self) -> int:
        return 1 if self.descriptors == "std" else 2

    def kernel(self):
        """The ``(k, k, descriptors, 1)`` convolution kernel the map is computed with."""
        if self.kernel_form == "smooth":
            k = self.kernel_size
            profile = ops.reshape(ops.softmax(ops.reshape(self.profile, (k * k,))), (k, k, 1, 1))
            kernel = profile * ops.reshape(self.mix, (1, 1, self.n_descriptors, 1))
        else:
            kernel = self.conv.kernel
        if self.mirror:  # left and right halves tied: mirrored input, mirrored map
            kernel = 0.5 * (kernel + ops.flip(kernel, axis=1))
        return kernel

    def call(self, x):
        mean = ops.mean(x, axis=-1, keepdims=True)
        if self.descriptors == "mean_max":
            desc = ops.concatenate([mean, ops.max(x, axis=-1, keepdims=True)], axis=-1)
        else:  # the epsilon keeps the gradient finite on a flat cell
            std = ops.sqrt(ops.mean(ops.square(x - mean), axis=-1, keepdims=True) + 1e-6)
            desc = std if self.descriptors == "std" else ops.concatenate([mean, std], axis=-1)
        if self.padding == "zero" and not self.mirror and self.kernel_form == "free":
            return self.conv(desc)  # the layout of models trained before the options existed
        kernel = self.kernel()
        bias = self.bias if self.kernel_form == "smooth" else self.conv.bias
        if self.padding == "reflect":
            p = self.kernel_size // 2
            desc = ops.pad(desc, ((0, 0), (p, p), (p, p), (0, 0)), mode="reflect")
            conv_padding = "valid"
        else:
            conv_padding = "same"
        return ops.sigmoid(ops.conv(desc, kernel, padding=conv_padding) + bias)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (1,)

    def get_config(self):
        return {**super().get_config(), "kernel_size": self.kernel_size, "padding": self.padding,
                "mirror": self.mirror, "descriptors": self.descriptors, "kernel_form": self.kernel_form}
