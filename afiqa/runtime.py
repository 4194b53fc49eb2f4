"""What afiqa runs on: the Keras backend and the device it computes on."""

from __future__ import annotations


def backend() -> str:
    import keras

    return keras.backend.backend()


def device() -> str:
    """'GPU (name)' when the backend sees a GPU, else 'CPU'. Keras places work on it."""
    b = backend()
    try:
        if b == "tensorflow":
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
            return f"GPU ({', '.join(g.name for g in gpus)})" if gpus else "CPU"
        if b == "jax":
            import jax

            d = jax.devices()[0]
            return f"GPU ({d.device_kind})" if d.platform == "gpu" else d.platform.upper()
        if b == "torch":
            import torch

            return f"GPU ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "CPU"
    except Exception as e:  # a broken driver should not stop `afiqa info`
        return f"unknown ({type(e).__name__})"
    return "CPU"
