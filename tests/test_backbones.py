"""The EfficientNet-Lite port (afiqa.model.efficientnet_lite) against its source model's outputs.

``$KERAS_HOME/efficientnet_lite/reference_outputs.json`` holds the PyTorch models' top-5
ImageNet logits for three scikit-image photos. The examples here are those photos saved
once as JPEG (quality 90), so the logits move a little (at most 0.46 measured); a port
with a wrong padding, stride, activation or weight layout misses by whole units and
picks other labels. On the PNG originals the port matches to 1e-5 (train/README.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from afiqa.model import efficientnet_lite
from afiqa.errors import AfiqaError

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = ("chelsea", "coffee", "astronaut")


def _references() -> dict:
    return json.loads((efficientnet_lite.weights_file(0).parent / "reference_outputs.json").read_text())


@pytest.mark.parametrize("variant", efficientnet_lite.VARIANTS)
def test_port_reproduces_the_source_logits(variant):
    ref = _references()[f"lite{variant}"]
    size = ref["input_size"]
    model = efficientnet_lite.build(variant, include_top=True)
    x = np.stack([
        np.asarray(Image.open(ROOT / "examples" / f"{p}.jpg").convert("RGB").resize((size, size), Image.BICUBIC),
                   np.float32)
        for p in PHOTOS
    ])
    logits = model.predict((x - 127.0) / 128.0, verbose=0)
    for row, photo in zip(logits, PHOTOS):
        want = ref["photos"][photo]
        assert int(np.argmax(row)) == want["top5"][0], photo
        np.testing.assert_allclose(row[want["top5"]], want["top5_logits"], atol=0.6, err_msg=photo)


def test_the_fixed_layout_matches_the_weight_files():
    for variant, blocks in ((0, 16), (1, 21), (2, 21)):
        plan = efficientnet_lite.block_plan(variant)
        assert len(plan) == blocks
        assert sum(b["stride"] == 2 for b in plan) == 4  # + the stem's: output stride 32
        assert not plan[0]["expand"] and all(b["expand"] for b in plan[1:])
        efficientnet_lite.check_state(variant, efficientnet_lite.load_state(variant))
    with pytest.raises(AfiqaError, match="blocks"):
        efficientnet_lite.check_state(0, efficientnet_lite.load_state(2))
    with pytest.raises(AfiqaError, match="block 4"):  # Lite1 is Lite2 narrower: the first wider block
        efficientnet_lite.check_state(1, efficientnet_lite.load_state(2))


def test_the_registered_backbone_taps_exist_and_preprocess_matches():
    import keras

    from afiqa.model.backbones import get_backbone
    from afiqa.model.layers import BackbonePreprocess

    spec = get_backbone("efficientnet_lite2")
    model = spec.build(weights=None)
    for name in (*spec.taps, *spec.levels, spec.feature_layer):
        model.get_layer(name)  # raises if a registered tap is not in the port
    assert model.output.shape[-1] == 1280
    x = keras.ops.convert_to_numpy(BackbonePreprocess(spec.preprocess)(np.array([[[[0.0, 127.0, 255.0]]]])))
    np.testing.assert_allclose(x.ravel(), [-127 / 128, 0.0, 1.0])


def test_missing_weights_say_how_to_make_them_and_a_trained_model_needs_none(tmp_path, monkeypatch):
    with np.load(efficientnet_lite.weights_file(2)) as f:
        n_values = sum(f[k].size for k in f.files if not k.startswith("_fc") and not k.endswith("num_batches_tracked"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(AfiqaError, match="export_efficientnet_lite.py"):
        efficientnet_lite.build(2)
    assert efficientnet_lite.weights_file(2).parent == tmp_path / "efficientnet_lite"
    model = efficientnet_lite.build(2, weights=None)  # the layout alone: what loading a trained model builds
    assert model.count_params() == n_values
