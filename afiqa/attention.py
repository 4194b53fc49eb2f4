"""CBAM-style attention on a spatial feature map (Woo et al., ECCV 2018).

Channel attention: average- and max-pooled descriptors through one shared two-layer MLP
(reduction ratio ``r``), summed, sigmoid; the map's channels are scaled by the result.
Spatial attention: the channel-wise mean and max stacked, a ``k x k`` convolution,
sigmoid; a (B, H, W, 1) map in [0, 1]. ``SpatialAttentionMap`` returns the map itself
(so explanations can show it) and the model multiplies it in.
"""

from __future__ import annotations

import keras
from keras import ops


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


@keras.saving.register_keras_serializable(package="afiqa")
class SpatialAttentionMap(keras.layers.Layer):
    def __init__(self, kernel_size: int = 7, **kwargs):
        super().__init__(**kwargs)
        self.kernel_size = int(kernel_size)

    def build(self, input_shape):
        self.conv = keras.layers.Conv2D(
            1, self.kernel_size, padding="same", activation="sigmoid", name="conv"
        )
        self.conv.build(tuple(input_shape[:-1]) + (2,))

    def call(self, x):
        desc = ops.concatenate(
            [ops.mean(x, axis=-1, keepdims=True), ops.max(x, axis=-1, keepdims=True)], axis=-1
        )
        return self.conv(desc)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (1,)

    def get_config(self):
        return {**super().get_config(), "kernel_size": self.kernel_size}
