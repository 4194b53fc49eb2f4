"""Small serializable Keras layers: backbone preprocessing and global pooling."""

from __future__ import annotations

import keras
from keras import ops

PREPROCESS_MODES = ("tf", "caffe", "torch", "lite", "none")
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)


@keras.saving.register_keras_serializable(package="afiqa")
class BackbonePreprocess(keras.layers.Layer):
    """RGB pixels in 0..255 -> what a ``keras.applications`` backbone expects.

    ``tf``: scale to [-1, 1] (MobileNet, Inception, Xception); ``caffe``: RGB->BGR minus
    the ImageNet mean (ResNet50); ``torch``: [0, 1] then ImageNet mean/std (DenseNet);
    ``lite``: ``(x - 127) / 128`` (EfficientNet-Lite's checkpoints); ``none``: unchanged (EfficientNet rescales inside the model).
    """

    def __init__(self, mode: str = "tf", **kwargs):
        super().__init__(**kwargs)
        if mode not in PREPROCESS_MODES:
            raise ValueError(f"mode: expected one of {PREPROCESS_MODES}, got {mode!r}")
        self.mode = mode

    def call(self, x):
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "caffe":
            return ops.flip(x, axis=-1) - ops.convert_to_tensor(_CAFFE_MEAN_BGR, dtype=x.dtype)
        if self.mode == "torch":
            mean = ops.convert_to_tensor(_TORCH_MEAN, dtype=x.dtype)
            std = ops.convert_to_tensor(_TORCH_STD, dtype=x.dtype)
            return (x / 255.0 - mean) / std
        if self.mode == "lite":
            return (x - 127.0) / 128.0
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


@keras.saving.register_keras_serializable(package="afiqa")
class GlobalPooling(keras.layers.Layer):
    """(B, H, W, C) -> (B, k*C): the mean, plus the standard deviation or the maximum.

    The spread of a feature over the image (``avg_std``) carries much of what makes
    quality (is the blur everywhere or in one corner?), which the mean alone loses.
    """

    def __init__(self, mode: str = "avg_std", **kwargs):
        super().__init__(**kwargs)
        if mode not in ("avg", "avg_std", "avg_max"):
            raise ValueError(f"mode: expected avg, avg_std or avg_max, got {mode!r}")
        self.mode = mode

    def call(self, x):
        x = ops.cast(x, "float32")
        mean = ops.mean(x, axis=(1, 2))
        if self.mode == "avg":
            return mean
        if self.mode == "avg_max":
            return ops.concatenate([mean, ops.max(x, axis=(1, 2))], axis=-1)
        var = ops.mean(ops.square(x), axis=(1, 2)) - ops.square(mean)
        return ops.concatenate([mean, ops.sqrt(ops.maximum(var, 0.0) + 1e-6)], axis=-1)

    def compute_output_shape(self, input_shape):
        k = 1 if self.mode == "avg" else 2
        return (input_shape[0], k * input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}
