"""The quality-aware loss: ``mae_weight * MAE + plcc_weight * (1 - PLCC)`` over a batch.

The correlation term rewards getting the *order and spread* of a batch right, which is
what PLCC/SROCC measure; MAE keeps predictions on the MOS scale. Both are written with
``keras.ops`` so the loss runs under any Keras backend. A batch with constant targets
or predictions (or of one sample) has an undefined correlation: the term is then 1 with
a finite gradient (the epsilon sits inside the square root), never NaN.

Predictions of shape (B, K) are K ensemble members' scores for the same targets
(``ModelConfig.head_members``): the loss is the mean of the K members' losses, so each
member fits the data on its own.
"""

from __future__ import annotations

import keras
from keras import ops

EPS = 1e-8


def batch_plcc(y_true, y_pred):
    """Pearson correlation of two batches, differentiable, 0 when undefined."""
    t = ops.reshape(ops.cast(y_true, "float32"), (-1,))
    p = ops.reshape(ops.cast(y_pred, "float32"), (-1,))
    return _column_plcc(t, ops.expand_dims(p, -1))[0]


def _column_plcc(t, p):
    """(B,) targets, (B, K) predictions -> (K,) correlations."""
    t = ops.expand_dims(t - ops.mean(t), -1)
    p = p - ops.mean(p, axis=0, keepdims=True)
    return ops.sum(t * p, axis=0) / ops.sqrt(ops.sum(t * t, axis=0) * ops.sum(p * p, axis=0) + EPS)


def quality_loss(y_true, y_pred, mae_weight: float = 1.0, plcc_weight: float = 1.0):
    t = ops.reshape(ops.cast(y_true, "float32"), (-1,))
    p = ops.cast(y_pred, "float32")
    p = ops.reshape(p, (ops.shape(t)[0], -1))  # (B, K): one column per member
    mae = ops.mean(ops.abs(ops.expand_dims(t, -1) - p))
    return mae_weight * mae + plcc_weight * (1.0 - ops.mean(_column_plcc(t, p)))


@keras.saving.register_keras_serializable(package="afiqa")
class QualityLoss(keras.losses.Loss):
    """``quality_loss`` as a Keras loss (one value per batch)."""

    def __init__(self, mae_weight: float = 1.0, plcc_weight: float = 1.0, name: str = "quality_loss", **kwargs):
        kwargs.pop("reduction", None)
        super().__init__(name=name, reduction="none", **kwargs)
        self.mae_weight = float(mae_weight)
        self.plcc_weight = float(plcc_weight)

    def call(self, y_true, y_pred):
        return quality_loss(y_true, y_pred, self.mae_weight, self.plcc_weight)

    def get_config(self):
        return {"name": self.name, "mae_weight": self.mae_weight, "plcc_weight": self.plcc_weight}
