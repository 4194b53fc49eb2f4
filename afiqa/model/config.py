"""The one configuration object for an afiqa model.

Every hyper-parameter that changes the network lives here, so that a model is fully
described by ``ModelConfig.to_dict()`` (what the model card and the training run save)
and rebuilt by ``build_model(ModelConfig.from_dict(d))``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

POOLINGS = ("avg", "avg_std", "avg_max")
LEVEL_TAPS = ("sparse", "dense")
SPATIAL_PADDINGS = ("zero", "reflect")
SPATIAL_DESCRIPTORS = ("mean_max", "mean_std", "std")
SPATIAL_KERNEL_FORMS = ("free", "smooth")


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of the two-stream attention IQA network.

    backbones: two names from ``afiqa.model.backbones.BACKBONES``; both read the same image.
    image_size: side of the square model input in pixels (see ``afiqa.io.inputs``).
    backbone_weights: ``"imagenet"`` to start from ImageNet, ``None`` for random
        (trained afiqa weights replace them anyway).
    feature_pool: average-pool each backbone's feature map by this factor before the
        attention (2: the 16x16 map of a 512-px image becomes an 8x8 grid of 64-px
        cells); GradCAM still reads the backbone's own map.
    channel_attention / spatial_attention: switch each CBAM branch on or off.
    spatial_residual: weight the map by ``1 + a`` instead of ``a`` (``a``: the spatial
        attention map in [0, 1]), as residual attention does (Wang et al., CVPR 2017):
        attention can stress positions but never erase them. The map shown by
        explanations is ``a`` either way.
    reduction: channel-attention MLP reduction ratio.
    spatial_kernel: side of the spatial-attention convolution.
    spatial_padding: how that convolution sees past the grid's edge: ``zero`` (as in
        CBAM; on a small grid it lets the map learn a fixed positional prior) or
        ``reflect`` (the descriptors' own mirror image: the map follows content).
    spatial_mirror: tie the convolution's left and right halves, so the attention map
        of a mirrored photo is the mirror of the photo's map.
    spatial_descriptors: what the convolution reads at each cell: ``mean_max``, the
        channel-wise mean and max (CBAM), or ``mean_std``, the mean and standard
        deviation across channels, which a photo's mirror changes far less than the
        max (``afiqa.model.attention``), or ``std`` alone: with one descriptor, a ``smooth``
        kernel cannot cancel one against the other.
    spatial_kernel_form: ``free``, any ``k x k`` convolution over the descriptors (CBAM),
        or ``smooth``, one learned non-negative profile (a blur that sums to 1) shared by
        the descriptors, each with its own signed weight: the map is a blurred, weighted
        sum of the descriptors and cannot be a difference of neighbouring cells, which
        magnifies the backbone's small left/right differences (``afiqa.model.attention``).
    multilevel: also mean/std-pool earlier feature maps of each backbone into the fused
        vector, so low-level cues (noise, blur) reach the head.
    level_taps: which earlier maps ``multilevel`` pools: ``sparse``, three (strides 4, 8,
        16: ``BackboneSpec.levels``), or ``dense``, every block (``BackboneSpec.taps``).
    extra_scales: each backbone also reads the image box-downscaled by each of these
        factors (2: a 256-px view of a 512-px input); the mean/std of that view's
        feature maps join the fused vector, so the head sees the photo at two viewing
        distances. Needs ``multilevel``.
    pooling: how each attended feature map becomes a vector: ``avg`` (mean),
        ``avg_std`` (mean and standard deviation) or ``avg_max``.
    head_units: hidden widths of the regression head.
    head_members: how many regression heads read the fused vector (an ensemble inside
        the model): each has its own dense layers and dropout, is trained on its own
        loss, and the score is their mean. The attention blocks are shared, so
        explanations are unchanged.
    dropout: dropout rate before every dense layer of the head.
    """

    backbones: tuple[str, ...] = ("mobilenet_v2", "mobilenet")
    image_size: int = 512
    backbone_weights: str | None = "imagenet"
    feature_pool: int = 1
    channel_attention: bool = True
    spatial_attention: bool = True
    spatial_residual: bool = False
    reduction: int = 16
    spatial_kernel: int = 7
    spatial_padding: str = "zero"
    spatial_mirror: bool = False
    spatial_descriptors: str = "mean_max"
    spatial_kernel_form: str = "free"
    multilevel: bool = False
    level_taps: str = "sparse"
    extra_scales: tuple[int, ...] = ()
    pooling: str = "avg_std"
    head_units: tuple[int, ...] = (256,)
    head_members: int = 1
    dropout: float = 0.25
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "backbones", tuple(self.backbones))
        object.__setattr__(self, "head_units", tuple(int(u) for u in self.head_units))
        object.__setattr__(self, "extra_scales", tuple(int(f) for f in self.extra_scales))
        if not 1 <= len(self.backbones) <= 4:
            raise ValueError(f"backbones: expected 1 to 4 names, got {self.backbones!r}")
        if self.image_size < 32:
            raise ValueError(f"image_size: expected >= 32, got {self.image_size}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling: expected one of {POOLINGS}, got {self.pooling!r}")
        if self.level_taps not in LEVEL_TAPS:
            raise ValueError(f"level_taps: expected one of {LEVEL_TAPS}, got {self.level_taps!r}")
        if self.feature_pool < 1:
            raise ValueError(f"feature_pool: expected >= 1, got {self.feature_pool}")
        if any(f < 2 or self.image_size // f < 32 for f in self.extra_scales):
            raise ValueError(f"extra_scales: expected factors >= 2 that leave >= 32 px, got {list(self.extra_scales)}")
        if self.extra_scales and not self.multilevel:
            raise ValueError("extra_scales: needs multilevel: true (the extra views join the multi-level vector)")
        if self.head_members < 1:
            raise ValueError(f"head_members: expected >= 1, got {self.head_members}")
        if self.reduction < 1:
            raise ValueError(f"reduction: expected >= 1, got {self.reduction}")
        if self.spatial_padding not in SPATIAL_PADDINGS:
            raise ValueError(f"spatial_padding: expected one of {SPATIAL_PADDINGS}, got {self.spatial_padding!r}")
        if self.spatial_descriptors not in SPATIAL_DESCRIPTORS:
            raise ValueError(f"spatial_descriptors: expected one of {SPATIAL_DESCRIPTORS}, "
                             f"got {self.spatial_descriptors!r}")
        if self.spatial_kernel_form not in SPATIAL_KERNEL_FORMS:
            raise ValueError(f"spatial_kernel_form: expected one of {SPATIAL_KERNEL_FORMS}, "
                             f"got {self.spatial_kernel_form!r}")
        if self.spatial_kernel < 1 or self.spatial_kernel % 2 == 0:
            raise ValueError(f"spatial_kernel: expected an odd size >= 1, got {self.spatial_kernel}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout: expected 0 <= dropout < 1, got {self.dropout}")
        from afiqa.model.backbones import get_backbone

        for name in self.backbones:
            spec = get_backbone(name)  # raises with close matches
            if self.multilevel and not spec.level_layers(self.level_taps):
                raise ValueError(f"multilevel: backbone {name!r} has no levels registered ({self.level_taps})")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["backbones"] = list(self.backbones)
        d["head_units"] = list(self.head_units)
        d["extra_scales"] = list(self.extra_scales)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown ModelConfig keys {unknown}; known keys: {sorted(known)}")
        return cls(**d)

    def replace(self, **changes: Any) -> "ModelConfig":
        return dataclasses.replace(self, **changes)
