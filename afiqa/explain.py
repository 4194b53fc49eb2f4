"""Explanations as pure functions: signed GradCAM and spatial-attention maps.

``explain`` runs the model once on a batch of model inputs and returns the scores with
one GradCAM map per stream and a fused one, plus each stream's spatial-attention map,
all at the model's own resolution (16x16 and 8x8 for the MobileNets at 512 px): a map is
only brought to a picture's size when it is drawn (``afiqa.io.render``), and then only to
the size shown.

GradCAM (Selvaraju et al., 2017) for a regression output: the gradient of the predicted
score with respect to a stream's last feature map, averaged over space, weights that
map's channels; the weighted sum is the first-order share of the score each position
carries. It is kept **signed**: positive where the region raises the score, negative
where it lowers it (no ReLU and no absolute value, which would paint both the same).
Each map is divided by its largest absolute value, so it lies in [-1, 1] with 0 meaning
"no effect": a map that is nearly flat stays nearly flat (min-max scaling stretched the
small differences of an evenly blurred photo into blotches). The fused map is the mean of
the streams' maps in score units, scaled the same way. ``np.abs`` of a map is the
magnitude view (where the score comes from, either way). No I/O, no plotting, no state;
Keras is imported when a model is explained, not on import.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from afiqa.model.network import HEAD, spatial_map_name, stream_name, streams_of

if TYPE_CHECKING:
    import keras  # imported where a model is run: overlay() and friends need no Keras

FUSED = "fused"


@dataclass
class Explanation:
    scores: np.ndarray  # (B,) model output, MOS on [0, 1]
    gradcam: dict[str, np.ndarray]  # "stream_i" and "fused" -> (B, h, w) signed, in [-1, 1]
    attention: dict[str, np.ndarray]  # "stream_i" -> (B, h, w) spatial attention in [0, 1]


def explain(model, images: np.ndarray) -> Explanation:
    """Scores, signed GradCAM maps and attention maps for a (B, S, S, 3) batch of model inputs."""
    from afiqa.model.network import HEAD, stream_name, streams_of

    images = np.asarray(images, dtype=np.float32)
    streams = streams_of(model)
    outs = [_as_list(s.predict_on_batch(images)) for s in streams]
    feats = [o for out in outs for o in out]
    fmap_index = np.cumsum([0] + [len(o) for o in outs])[:-1]  # where each stream's map sits
    view = _head_view(model.get_layer(HEAD), len(streams))
    (score, *att), grads = _value_and_grads(view, feats, [int(k) for k in fmap_index])

    raw = {}
    for i, k in enumerate(fmap_index):
        fmap, g = np.asarray(feats[k], np.float32), grads[i]
        raw[stream_name(i)] = np.einsum("bhwc,bc->bhw", fmap, g.mean(axis=(1, 2)))
    side = max(m.shape[1] for m in raw.values())  # streams of other backbones may differ
    fused = np.mean([np.stack([resize_map(c, (side, side)) for c in m]) for m in raw.values()], axis=0)
    cams = {name: np.stack([scale_signed(c) for c in m]) for name, m in raw.items()}
    cams[FUSED] = np.stack([scale_signed(c) for c in fused])
    attention = {
        stream_name(i): np.clip(np.asarray(m, np.float32)[..., 0], 0.0, 1.0)
        for i, m in _att_by_stream(att, view).items()
    }
    return Explanation(np.asarray(score, np.float32).reshape(-1), cams, attention)


def scale_signed(m: np.ndarray) -> np.ndarray:
    """A signed map divided by its largest absolute value: [-1, 1], zeros stay zeros."""
    m = np.asarray(m, np.float32)
    top = float(np.max(np.abs(m))) if m.size else 0.0
    return m / top if top > 0 else np.zeros_like(m)


def resize_map(m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a 2-D map to ``size`` = (height, width)."""
    import cv2

    h, w = int(size[0]), int(size[1])
    m = np.asarray(m, np.float32)
    return m if m.shape == (h, w) else cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR)


def _att_by_stream(att: list, view) -> dict[int, np.ndarray]:
    return dict(zip(view._afiqa_att_streams, att))


_VIEWS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # head -> its view


def _head_view(head, n_streams: int):
    """The head with its spatial-attention maps as extra outputs (built once per head)."""
    import keras

    from afiqa.model.network import spatial_map_name

    view = _VIEWS.get(head)
    if view is None:
        import keras

        names = {layer.name for layer in head.layers}
        with_att = [i for i in range(n_streams) if spatial_map_name(i) in names]
        view = keras.Model(
            head.inputs, [head.output] + [head.get_layer(spatial_map_name(i)).output for i in with_att]
        )
        view._afiqa_att_streams = with_att
        _VIEWS[head] = view
    return view


def _value_and_grads(view, feats: list, wrt: list[int]):
    """Outputs of ``view(feats)`` and d(sum of scores)/d(feats[k]) for k in ``wrt``."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        xs = [tf.convert_to_tensor(np.asarray(f, np.float32)) for f in feats]
        with tf.GradientTape() as tape:
            tape.watch(xs)
            outs = _as_list(view(xs, training=False))
            total = tf.reduce_sum(outs[0])
        grads = tape.gradient(total, [xs[k] for k in wrt])
        return [o.numpy() for o in outs], [g.numpy() for g in grads]
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        xs = [jnp.asarray(np.asarray(f, np.float32)) for f in feats]

        def total(sel):
            full = list(xs)
            for k, v in zip(wrt, sel):
                full[k] = v
            outs = _as_list(view(full, training=False))
            return jnp.sum(outs[0]), outs

        (_, outs), grads = jax.value_and_grad(total, has_aux=True)([xs[k] for k in wrt])
        return [np.asarray(o) for o in outs], [np.asarray(g) for g in grads]
    if backend == "torch":
        import torch

        xs = [torch.tensor(np.asarray(f, np.float32), requires_grad=True) for f in feats]
        outs = _as_list(view(xs, training=False))
        grads = torch.autograd.grad(outs[0].sum(), [xs[k] for k in wrt])
        return [o.detach().cpu().numpy() for o in outs], [g.cpu().numpy() for g in grads]
    raise RuntimeError(f"GradCAM supports the tensorflow, jax and torch backends, not {backend!r}")


def normalise(m: np.ndarray) -> np.ndarray:
    """A map rescaled to fill [0, 1] (all zeros when it is constant)."""
    m = np.asarray(m, np.float32) - float(np.min(m))
    top = float(np.max(m))
    return m / top if top > 0 else np.zeros_like(m)


def _as_list(x):
    return list(x) if isinstance(x, (list, tuple)) else [x]
