"""afiqa: blind image quality assessment with a two-stream attention network.

Importing afiqa is cheap and touches no network; the heavy parts (Keras, the model)
load on first use of the names below.
"""

__version__ = "0.1.0"

__all__ = ["Predictor", "ScoreResult", "ModelConfig", "build_model", "evaluate", "explain", "overlay", "__version__"]

_LAZY = {
    "Predictor": "afiqa.predictor",
    "ScoreResult": "afiqa.predictor",
    "ModelConfig": "afiqa.model.config",
    "build_model": "afiqa.model.network",
    "evaluate": "afiqa.metrics",
    "explain": "afiqa.explain",
    "overlay": "afiqa.io.render",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'afiqa' has no attribute {name!r}")
