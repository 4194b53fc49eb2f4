"""scripts/finetune_tail.py: the backbones' last blocks run on cached maps give the model's own score.

The measurement in train/README.md ("Fine-tuning the last block of each backbone")
trains on maps cached before each backbone's last block. That is only a measurement of
the model if the rebuilt tail, fed those maps and the rest of the level vector, scores
exactly as the whole network does on the photo, and if each mode trains the layers it
names and no others.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent


def _script():
    spec = importlib.util.spec_from_file_location("finetune_tail", ROOT / "scripts" / "finetune_tail.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def network():
    import keras

    from afiqa.model.config import ModelConfig
    from afiqa.model.network import build_model
    from afiqa.runtime.zoo import get_card

    cfg = ModelConfig.from_dict({**get_card("afiqa-v4").config.to_dict(), "image_size": 256})
    keras.utils.set_random_seed(3)
    return cfg, build_model(cfg, backbone_weights=None)


def _cut_inputs(mod, cfg, model, x):
    """Per stream: the map before the last block and the level vector less the tail's tap."""
    import keras

    from afiqa.model.backbones import get_backbone
    from afiqa.model.layers import BackbonePreprocess
    from afiqa.model.network import streams_of

    out = []
    for i, stream in enumerate(streams_of(model)):
        spec = get_backbone(cfg.backbones[i])
        bb = stream.get_layer(spec.name)
        cut = keras.Model(bb.inputs, bb.get_layer(mod.CUTS[spec.name][0]).output)
        tap = spec.level_layers(cfg.level_taps)[-1]
        levels = np.asarray(stream(x)[1])
        out += [np.asarray(cut(BackbonePreprocess(spec.preprocess)(x))),
                levels[:, : -2 * int(bb.get_layer(tap).output.shape[-1])]]
    return out


def test_the_tail_on_cut_maps_scores_as_the_whole_network(network):
    mod = _script()
    cfg, model = network
    x = np.random.default_rng(0).uniform(0, 255, (2, cfg.image_size, cfg.image_size, 3)).astype(np.float32)
    inputs = _cut_inputs(mod, cfg, model, x)
    _, scorer, taps, _ = mod.tail_models(model, cfg, [a.shape[1:] for a in inputs[::2]],
                                         [a.shape[1] + 2 * c for a, c in zip(inputs[1::2], (960, 1248))], "none")
    assert taps == [960, 1248]  # block_16_expand_relu, block_20_expand_relu
    whole = np.asarray(model(x)).reshape(-1)
    assert np.ptp(whole) > 0  # two photos, two scores: the comparison below can tell them apart
    np.testing.assert_allclose(np.asarray(scorer(inputs)).reshape(-1), whole, atol=1e-5)


@pytest.mark.parametrize("mode, trained", [("last", 2_039_712), ("top", 320 * 1280 + 352 * 1280), ("none", 0)])
def test_each_mode_trains_the_layers_it_names(network, mode, trained):
    import keras

    mod = _script()
    cfg, model = network
    # at 256 px the cut maps are 8x8; the level vectors have afiqa-v4's length at any size
    trainer, _, _, n = mod.tail_models(model, cfg, [(8, 8, 160), (8, 8, 208)], [14272, 25312], mode)
    assert n == trained
    head = sum(int(np.prod(w.shape)) for w in model.get_layer("head").trainable_weights)
    assert sum(int(np.prod(w.shape)) for w in trainer.trainable_weights) == head + trained
    frozen_bn = [layer for layer in trainer.layers if isinstance(layer, keras.layers.BatchNormalization)
                 and layer.name.startswith(("block_16", "block_20", "Conv_1", "top"))]
    assert frozen_bn and not any(layer.trainable for layer in frozen_bn)
