"""Shared fixtures: a small trained afiqa model saved with its model card.

The model uses the real ImageNet MobileNet backbones from the offline Keras cache
(``KERAS_HOME``, ../shared/keras) at 64 px, and its attention blocks and head are fit
for a few seconds on synthetic scenes (sharp = high quality, blurred = low), so it ranks
images the way a quality model should while staying fast.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
if (ROOT.parent / "shared" / "keras").is_dir():  # the offline Keras cache beside the checkout
    os.environ.setdefault("KERAS_HOME", str(ROOT.parent / "shared" / "keras"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

TINY_SIZE = 96


@pytest.fixture(scope="session")
def tiny_config():
    from afiqa.model.config import ModelConfig

    return ModelConfig(image_size=TINY_SIZE, head_units=(16,), reduction=8, dropout=0.0)


@pytest.fixture(scope="session")
def tiny_card_path(tmp_path_factory, tiny_config) -> Path:
    """Path of the model card JSON of a small trained model (weights beside it)."""
    import keras

    from afiqa.io.inputs import to_model_input
    from afiqa.model.losses import QualityLoss
    from afiqa.model.network import build_model
    from afiqa.runtime.weights import sha256_of
    from afiqa.runtime.zoo import ModelCard
    from imagegen import blur, scene

    keras.utils.set_random_seed(0)
    x, y = [], []
    for seed in range(48):
        img = scene(seed)
        for sigma, mos in ((0, 0.85), (1.5, 0.5), (4, 0.15)):
            x.append(to_model_input(blur(img, sigma), TINY_SIZE))
            y.append(mos)
    model = build_model(tiny_config)  # ImageNet backbones from KERAS_HOME, frozen
    model.compile(keras.optimizers.Adam(3e-3), loss=QualityLoss(1.0, 0.5))
    model.fit(np.stack(x), np.array(y, np.float32), batch_size=16, epochs=12, verbose=0, shuffle=True)

    d = tmp_path_factory.mktemp("tiny_model")
    weights = d / "afiqa-tiny.weights.h5"
    model.save_weights(weights)
    heads = d / "afiqa-tiny.heads.npz"
    side = tiny_side_heads(model, tiny_config, np.stack(x), np.array(y), heads)
    card = ModelCard(
        name="afiqa-tiny",
        config=tiny_config.replace(backbone_weights=None),
        weights_file=weights.name,
        sha256=sha256_of(weights),
        hub_repo="afiqa/afiqa-tiny",
        train_set="synthetic scenes (tests)",
        side_heads={"file": heads.name, "sha256": sha256_of(heads), **side},
    )
    path = d / "afiqa-tiny.json"
    path.write_text(json.dumps(card.to_dict(), indent=2))
    return path


TINY_PROBLEMS = {"blur": "blur", "noise": "noise", "compression": "jpeg", "exposure": "brighten",
                 "contrast": "contrast", "colour": "desaturate"}  # a family: the kind its copies show


def tiny_side_heads(model, config, x: np.ndarray, mos: np.ndarray, path: Path) -> dict:
    """The tiny model's side heads (afiqa.model.sideheads), trained by train.sidehead's code:
    ``problem`` on scenes it never scored, each untouched and with one kind of each family at
    its strongest; ``uncertainty`` on the training images' out-of-fold errors. Returns its report."""
    from afiqa.io.inputs import to_model_input
    from afiqa.model.network import feature_view
    from afiqa.model.sideheads import FAMILIES, SideHeads, photo_stats
    from imagegen import scene
    from train import distortions
    from train.sidehead import CLASSES, fit_problem, fit_projection, fit_uncertainty

    view = feature_view(model, config)
    imgs, y, src = [], [], []
    for seed in range(24):
        img = to_model_input(scene(1000 + seed), TINY_SIZE).astype(np.uint8)
        for fam in (None, *FAMILIES):
            kind = TINY_PROBLEMS.get(fam)
            imgs.append(img if kind is None else distortions.apply(img, kind, distortions.CATALOGUE[kind].ladder[-1], seed))
            y.append(CLASSES.index(fam or "none"))
            src.append(str(seed))
    _, _, fused = view.predict(np.stack(imgs).astype(np.float32), verbose=0)
    mean, scale, basis = fit_projection(fused, 16)
    stats = photo_stats(np.stack(imgs))
    s_mean, s_scale = stats.mean(axis=0), stats.std(axis=0) + 1e-6
    pw, pb, problem = fit_problem(np.concatenate([((fused - mean) / scale) @ basis, (stats - s_mean) / s_scale], axis=1),
                                  np.array(y), src, l2s=(1e-2,))
    score, members, fused = view.predict(x, verbose=0)
    group = np.arange(len(x)) // 3 % 3  # three groups of scenes, each scene's copies in one
    uw, ub, unc = fit_uncertainty(((fused - mean) / scale) @ basis, 100 * members, 100 * score.reshape(-1),
                                  100 * mos, group)
    SideHeads.compose(mean, scale, basis, (pw, pb), (uw, ub), (s_mean, s_scale)).save(path)
    return {"problem": problem, "uncertainty": unc}


@pytest.fixture(scope="session")
def tiny_predictor(tiny_card_path):
    from afiqa.predictor import Predictor

    return Predictor(tiny_card_path)


@pytest.fixture(scope="session")
def tiny_litert_card_path(tmp_path_factory, tiny_card_path) -> Path:
    """A copy of the tiny model's card and weights with a LiteRT (fp32) export recorded in it,
    checked on six synthetic scenes (sharp and blurred)."""
    import shutil

    from afiqa.runtime.export import export
    from imagegen import blur, scene
    from PIL import Image

    d = tmp_path_factory.mktemp("tiny_litert")
    for f in tiny_card_path.parent.iterdir():
        shutil.copy(f, d / f.name)
    check = []
    for k in range(3):
        for sigma in (0, 3):
            p = d / f"check_{k}_{sigma}.png"
            Image.fromarray(blur(scene(200 + k), sigma)).save(p)
            check.append(p)
    export(d / tiny_card_path.name, "litert", "fp32", check=check, check_name="6 synthetic scenes")
    return d / tiny_card_path.name
