"""What the problem head names: families of the distortion catalogue (``train.distortions``).

Each family has kinds the head trains on and one it never sees (``HELD_OUT``), on which
``train.sidehead`` reports how often the head names the right family. Kinds of the
catalogue in no family (sharpening, jitter, patches, posterize, downscale) are left out of
the head's training: they are not what its names describe.
"""

from __future__ import annotations

from afiqa.model.sideheads import FAMILIES

TRAINING: dict[str, tuple[str, ...]] = {
    "blur": ("blur", "lens_blur", "resample_blur"),
    "noise": ("noise", "chroma_noise", "impulse", "shot_noise"),
    "compression": ("jpeg", "pixelate", "webp"),
    "exposure": ("brighten", "underexpose", "overexpose"),
    "contrast": ("contrast",),
    "colour": ("desaturate", "oversaturate", "colour_quantize", "colour_cast", "chroma_bleed"),
}
HELD_OUT: dict[str, tuple[str, ...]] = {
    "blur": ("motion_blur",),
    "noise": ("speckle",),
    "compression": ("jpeg2000",),
    "exposure": ("darken",),
    "contrast": ("haze",),
    "colour": ("colour_shift",),
}
assert tuple(TRAINING) == tuple(HELD_OUT) == FAMILIES


def family_of(kind: str) -> str:
    """The family of a catalogue kind, "none" for an untouched photo ("")."""
    if not kind:
        return "none"
    for fam in FAMILIES:
        if kind in TRAINING[fam] or kind in HELD_OUT[fam]:
            return fam
    raise KeyError(f"{kind!r} is in no problem family")
