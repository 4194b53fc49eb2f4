"""The model table: every published afiqa model, by name.

A model card says everything needed to rebuild, find, verify and read a model: the
network config (which fixes backbones and the input policy's size), where its weights
live (file name and sha256, Hugging Face Hub repo and revision), the score scale and its
labels, and how it was trained and measured.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from afiqa.model.config import ModelConfig
from afiqa.errors import UnknownNameError

# Five labels over the 0-100 scale, worst first, each covering an equal fifth
# (the five-point ACR scale of ITU-T P.910 that BIQ2021's observers used).
LABELS = ("bad", "poor", "fair", "good", "excellent")


@dataclass(frozen=True)
class ModelCard:
    name: str
    config: ModelConfig
    weights_file: str
    sha256: str
    hub_repo: str
    hub_revision: str = "main"
    score_range: tuple[float, float] = (0.0, 100.0)
    higher_better: bool = True
    labels: tuple[str, ...] = LABELS
    train_set: str = ""
    test_metrics: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    # Other formats of the same model, by format: {"litert": {"file", "sha256", "precision",
    # "max_score_diff", "check_set", "tolerance", ...}} (``afiqa export`` writes them).
    exports: dict[str, dict[str, Any]] = field(default_factory=dict)
    # A user's own scale (``afiqa calibrate``): the base model's score (on ``base_range``)
    # mapped through knots ``x`` -> ``y`` onto ``score_range``; empty for a plain model.
    calibration: dict[str, Any] = field(default_factory=dict)
    # The side heads (afiqa.model.sideheads: problem, uncertainty): {"file", "sha256", and
    # how they were trained and measured}; empty for a model without them.
    side_heads: dict[str, Any] = field(default_factory=dict)

    def to_score(self, raw: float) -> float:
        """Model output (MOS on [0, 1]) -> the card's score range, clipped."""
        if self.calibration.get("method") == "refit":  # its own head reads the fused features: afiqa.predictor
            raise ValueError(f"{self.name}'s score comes from its own head (afiqa calibrate's refit), not the base score")
        if self.calibration:
            from afiqa.calibration import apply_map

            blo, bhi = self.calibration["base_range"]
            lo, hi = self.score_range
            base = min(max(blo + raw * (bhi - blo), blo), bhi)
            return float(min(max(apply_map(self.calibration, [base])[0], lo), hi))
        lo, hi = self.score_range
        return float(min(max(lo + raw * (hi - lo), lo), hi))

    def label(self, score: float) -> str:
        """The label of the quality ``score`` stands for: the best fifth of the range is the
        last label, whichever way the scale runs (``higher_better``)."""
        lo, hi = self.score_range
        frac = (score - lo) / (hi - lo) if hi > lo else 0.5
        k = int((frac if self.higher_better else 1 - frac) * len(self.labels))
        return self.labels[min(max(k, 0), len(self.labels) - 1)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "config": self.config.to_dict(),
            "weights_file": self.weights_file,
            "sha256": self.sha256,
            "hub_repo": self.hub_repo,
            "hub_revision": self.hub_revision,
            "score_range": list(self.score_range),
            "higher_better": self.higher_better,
            "labels": list(self.labels),
            "train_set": self.train_set,
            "test_metrics": dict(self.test_metrics),
            "description": self.description,
            "exports": {k: dict(v) for k, v in self.exports.items()},
            **({"calibration": dict(self.calibration)} if self.calibration else {}),
            **({"side_heads": dict(self.side_heads)} if self.side_heads else {}),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelCard":
        d = dict(d)
        d["config"] = ModelConfig.from_dict(d["config"])
        d["score_range"] = tuple(d.get("score_range", (0.0, 100.0)))
        d["labels"] = tuple(d.get("labels", LABELS))
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in d.items() if k in known})


# afiqa-v4 (EfficientNet-Lite2 beside MobileNetV2, attention read from each cell's channel
# spread) holds up better beyond BIQ2021 (leave one subset out) than afiqa-v3 and v2,
# which held up better than afiqa-biq2021 at a cost on BIQ2021's own test split: see
# train/README.md. Earlier defaults stay loadable by name.
DEFAULT_MODEL = "afiqa-v4"

MODELS: dict[str, ModelCard] = {}


def register(card: ModelCard) -> ModelCard:
    MODELS[card.name] = card
    return card


def get_card(name: str) -> ModelCard:
    """The card of model ``name``; an unknown name lists close matches."""
    try:
        return MODELS[name]
    except KeyError:
        close = difflib.get_close_matches(name, MODELS, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UnknownNameError(f"Unknown model {name!r}.{hint} Known models: {', '.join(MODELS) or 'none'}.") from None


register(
    ModelCard(
        name="afiqa-biq2021",
        config=ModelConfig(
            backbones=("mobilenet_v2", "mobilenet"),
            image_size=512,
            backbone_weights=None,  # the weights file holds the backbones too
            feature_pool=2,
            spatial_residual=True,
            multilevel=True,
            level_taps="dense",
            pooling="avg_std",
            head_units=(48,),
            dropout=0.25,
        ),
        weights_file="afiqa-biq2021.weights.h5",
        sha256="62e035a9b252a98b4de6e30d293575cadbac5513a70ad7ec01df93122e88e9fd",
        hub_repo="afiqa/afiqa-biq2021",
        hub_revision="main",
        train_set="BIQ2021 official train split (8,999 images; 1,000 more held out for validation)",
        test_metrics={"srocc": 0.8869, "plcc": 0.8855, "krocc": 0.7034, "rmse": 0.0917, "n": 2000},
        description="Two-stream (MobileNetV2 + MobileNet) CBAM attention IQA model, 512 px, residual spatial "
        "attention, dense multi-level pooling, trained with synthetic-distortion ranking pairs",
        exports={  # as recorded in docs/models/afiqa-biq2021.json (scripts/litert_precision.py, afiqa export)
            "litert": {
                "file": "afiqa-biq2021.tflite",
                "sha256": "f25523397e967a36fc85c831c3f703d29ecf0d68839d2e6dc8a34de4c1dfffa6",
                "precision": "fp16",
                "bytes": 14417268,
                "check_set": "BIQ2021 validation part (100 of its 1,000 photos, evenly spaced; official train split, seed 2023)",
                "n_check": 100,
                "max_score_diff": 0.1901,
                "mean_score_diff": 0.0324,
                "tolerance": 0.5,
                "converter": "tensorflow 2.21.0 TFLiteConverter.from_saved_model",
                "other_precisions": {
                    "fp32": {
                        "bytes": 28622040,
                        "max_score_diff": 0.01,
                        "examples_max_score_diff": 0.0016
                    },
                    "int8": {
                        "bytes": 7719696,
                        "examples_max_score_diff": 1.6663,
                        "note": "dynamic-range; outside the tolerance on examples/, not faster on x86"
                    }
                },
                "examples": {
                    "n_check": 7,
                    "max_score_diff": 0.0914,
                    "mean_score_diff": 0.0451
                }
            }
        },
    )
)


register(
    ModelCard(
        name="afiqa-v2",
        config=ModelConfig(
            backbones=("mobilenet_v2", "mobilenet"),
            image_size=512,
            backbone_weights=None,  # the weights file holds the backbones too
            feature_pool=2,
            spatial_residual=True,
            spatial_padding="reflect",
            spatial_mirror=True,
            multilevel=True,
            level_taps="dense",
            pooling="avg_std",
            head_units=(16,),
            head_members=3,
            dropout=0.5,
        ),
        weights_file="afiqa-v2.weights.h5",
        sha256="230b05f0b0245b8f2e16a892065ba24b5cefd24630ff00a70d0bd0c4f3d48218",
        hub_repo="afiqa/afiqa-v2",
        hub_revision="main",
        train_set="BIQ2021 official train split (8,999 images; 1,000 more held out for validation)",
        test_metrics={"srocc": 0.8508, "plcc": 0.8554, "krocc": 0.6602, "rmse": 0.123, "n": 2000},
        description="Two-stream (MobileNetV2 + MobileNet) CBAM attention IQA model, 512 px, residual spatial attention "
        "with reflect padding and a mirror-tied kernel, dense multi-level pooling, three small regression heads "
        "averaged, trained with ranking pairs from an 18-kind distortion catalogue",
        exports={  # as recorded in docs/models/afiqa-v2.json (afiqa export)
            "litert": {
                "file": "afiqa-v2.tflite",
                "sha256": "f477e0fe9e7b17a13d474114be4d9b6765de749d84a701558536b68be502a603",
                "precision": "fp16",
                "bytes": 14422432,
                "check_set": "BIQ2021 validation part: 100 of its 1,000 photos, evenly spaced",
                "n_check": 100,
                "max_score_diff": 0.1034,
                "mean_score_diff": 0.0243,
                "tolerance": 0.5,
                "converter": "tensorflow 2.21.0 TFLiteConverter.from_saved_model"
            },
        },
    )
)


register(
    ModelCard(
        name="afiqa-v3",
        # afiqa-v2's network with one change: the attention map read from mean and std
        config=MODELS["afiqa-v2"].config.replace(spatial_descriptors="mean_std"),
        weights_file="afiqa-v3.weights.h5",
        sha256="684d79ef8f8dcab722d1dcab280fc0fa750c38a9cf26389776ca44add6b41bbf",
        hub_repo="afiqa/afiqa-v3",
        hub_revision="main",
        train_set="BIQ2021 official train split (8,999 images; 1,000 more held out for validation)",
        test_metrics={"srocc": 0.8528, "plcc": 0.8578, "krocc": 0.662, "rmse": 0.1238, "n": 2000},
        description="Two-stream (MobileNetV2 + MobileNet) CBAM attention IQA model, 512 px, residual spatial attention "
        "read from each cell's channel mean and standard deviation, with reflect padding and a mirror-tied kernel, "
        "dense multi-level pooling, three small regression heads averaged, trained with ranking pairs from an "
        "18-kind distortion catalogue",
        exports={  # as recorded in docs/models/afiqa-v3.json (afiqa export)
            "litert": {
                "file": "afiqa-v3.tflite",
                "sha256": "00c3ebc94788900047f54983df83f1fbba79a37b10ef25c047a45f3bbfe83391",
                "precision": "fp16",
                "bytes": 14423544,
                "check_set": "BIQ2021 validation part: 100 of its 1,000 photos, evenly spaced",
                "n_check": 100,
                "max_score_diff": 0.1127,
                "mean_score_diff": 0.0282,
                "tolerance": 0.5,
                "converter": "tensorflow 2.21.0 TFLiteConverter.from_saved_model"
            },
        },
    )
)


register(
    ModelCard(
        name="afiqa-v4",
        # afiqa-v3's network with EfficientNet-Lite2 for MobileNet, and the attention map a
        # learned blur of each cell's channel standard deviation
        config=MODELS["afiqa-v3"].config.replace(backbones=("mobilenet_v2", "efficientnet_lite2"),
                                                 spatial_descriptors="std", spatial_kernel_form="smooth"),
        weights_file="afiqa-v4.weights.h5",
        sha256="f9fcdb6e32f485adbfe21363fa288b11d91cf2abe5462d3b47f3f64b00adef37",
        hub_repo="afiqa/afiqa-v4",
        hub_revision="main",
        train_set="BIQ2021 official train split (8,999 images; 1,000 more held out for validation)",
        test_metrics={"srocc": 0.8615, "plcc": 0.8708, "krocc": 0.6713, "rmse": 0.1258, "n": 2000},
        description="Two-stream (MobileNetV2 + EfficientNet-Lite2) CBAM attention IQA model, 512 px, residual spatial "
        "attention that is a learned blur of each cell's channel standard deviation (reflect padding, mirror-tied), "
        "dense multi-level pooling, three small regression heads averaged, trained with ranking pairs from an "
        "18-kind distortion catalogue",
        exports={  # as recorded in weights/afiqa-v4.json (afiqa export)
            "litert": {
                "file": "afiqa-v4.tflite",
                "sha256": "7aafd50fdcb8a2cbf80f51c7ba66e144edd6e14fa2205cde1d4e2bc2915429c9",
                "precision": "fp16",
                "bytes": 19558532,
                "check_set": "BIQ2021 validation part: 100 of its 1,000 photos, evenly spaced",
                "n_check": 100,
                "max_score_diff": 0.0598,
                "mean_score_diff": 0.0131,
                "tolerance": 0.5,
                "converter": "tensorflow 2.21.0 TFLiteConverter.from_saved_model"
            },
            "litert-int8": {
                "file": "afiqa-v4-int8.tflite",
                "published": False,
                "sha256": "27baf806ad7ee37efe469f29ca48f364c834756595518762de4f32f261a79c74",
                "precision": "int8",
                "bytes": 18685304,
                "check_set": "BIQ2021 validation part: all 1,000 photos",
                "n_check": 1000,
                "max_score_diff": 3.5556,
                "mean_score_diff": 0.4878,
                "tolerance": 0.5,
                "converter": "tensorflow 2.21.0 TFLiteConverter.from_saved_model (QuantizationDebugger, float ops denylisted)",
                "calibration_set": "200 BIQ2021 training photos (seeded draw)",
                "n_calibration": 200,
                "speed": {
                    "AMD EPYC [avx2 avx512f avx512_vnni avx_vnni avx512_bf16]": {
                        "int8_s": 0.2621,
                        "fp16_s": 0.4519,
                        "batch": 8,
                        "threads": 2
                    }
                },
                "note": "fails the 0.5-point check, so it is neither shipped nor published; auto keeps fp16"
            },
        },
        side_heads={  # problem and uncertainty (afiqa.model.sideheads); weights/afiqa-v4.json has the full record
            "file": "afiqa-v4.heads.npz",
            "sha256": "cda2e3b0623e6525ab28a56c2bacbe794913f2ffa3fe4a62505e9ebe9cc8ee5c",
            "bytes": 1432622,
        },
    )
)
