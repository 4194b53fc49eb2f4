"""Explanations as pure functions: GradCAM and spatial-attention maps, and an overlay.

``explain`` runs the model once on a batch of model inputs and returns the scores with
one GradCAM map per stream and a fused one, all (B, S, S) in [0, 1], plus each stream's
spatial-attention map. GradCAM (Selvaraju et al., 2017) for a regression output: the
gradient of the predicted score with respect to a stream's last feature map, averaged
over space, weights that map's channels. The weighted sum is signed for a regression
score: ``sign="positive"`` (classic GradCAM) keeps the regions that raise the score,
``"negative"`` those that lower it, ``"both"`` (the default) the magnitude of either,
i.e. where the score comes from. ``resize_map`` brings a map to an image's resolution;
``overlay`` blends a map onto an image. No I/O, no plotting, no state.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from afiqa.model import HEAD, spatial_map_name, stream_name, streams_of

if TYPE_CHECKING:
    import keras  # imported where a model is run: overlay() and friends need no Keras

FUSED = "fused"


@dataclass
class Explanation:
    scores: np.ndarray  # (B,) model output, MOS on [0, 1]
    gradcam: dict[str, np.ndarray]  # "stream_i" and "fused" -> (B, S, S) in [0, 1]
    attention: dict[str, np.ndarray]  # "stream_i" -> (B, S, S) spatial attention in [0, 1]


SIGNS = ("both", "positive", "negative")


def explain(model: keras.Model, images: np.ndarray, sign: str = "both") -> Explanation:
    """Scores, GradCAM maps and attention maps for a (B, S, S, 3) batch of model inputs."""
    if sign not in SIGNS:
        raise ValueError(f"sign: expected one of {SIGNS}, got {sign!r}")
    images = np.asarray(images, dtype=np.float32)
    size = images.shape[1:3]
    streams = streams_of(model)
    outs = [_as_list(s.predict_on_batch(images)) for s in streams]
    feats = [o for out in outs for o in out]
    fmap_index = np.cumsum([0] + [len(o) for o in outs])[:-1]  # where each stream's map sits
    view = _head_view(model.get_layer(HEAD), len(streams))
    (score, *att), grads = _value_and_grads(view, feats, [int(k) for k in fmap_index])

    cams = {}
    for i, k in enumerate(fmap_index):
        fmap, g = np.asarray(feats[k], np.float32), grads[i]
        cam = np.einsum("bhwc,bc->bhw", fmap, g.mean(axis=(1, 2)))
        cam = np.abs(cam) if sign == "both" else np.maximum(cam if sign == "positive" else -cam, 0.0)
        cams[stream_name(i)] = np.stack([normalise(resize_map(c, size)) for c in cam])
    cams[FUSED] = np.stack([normalise(m) for m in np.mean(list(cams.values()), axis=0)])
    attention = {
        stream_name(i): np.stack([np.clip(resize_map(a[..., 0], size), 0.0, 1.0) for a in np.asarray(m)])
        for i, m in _att_by_stream(att, view).items()
    }
    return Explanation(np.asarray(score, np.float32).reshape(-1), cams, attention)


def resize_map(m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a 2-D map to ``size`` = (height, width)."""
    import cv2

    h, w = int(size[0]), int(size[1])
    m = np.asarray(m, np.float32)
    return m if m.shape == (h, w) else cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR)


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45, colormap: str = "jet") -> np.ndarray:
    """Blend a [0, 1] heat-map (resized to the image) onto uint8 RGB; returns uint8 RGB."""
    from matplotlib import colormaps

    image = np.asarray(image)
    heat = np.clip(resize_map(heatmap, image.shape[:2]), 0.0, 1.0)
    colour = colormaps[colormap](heat)[..., :3] * 255.0
    out = (1.0 - alpha) * image[..., :3].astype(np.float32) + alpha * colour
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _att_by_stream(att: list, view: keras.Model) -> dict[int, np.ndarray]:
    return dict(zip(view._afiqa_att_streams, att))


_VIEWS: "weakref.WeakKeyDictionary[keras.Model, keras.Model]" = weakref.WeakKeyDictionary()


def _head_view(head: keras.Model, n_streams: int) -> keras.Model:
    """The head with its spatial-attention maps as extra outputs (built once per head)."""
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


def _value_and_grads(view: keras.Model, feats: list, wrt: list[int]):
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
