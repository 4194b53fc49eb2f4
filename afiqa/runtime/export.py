"""Export a model for another runtime and record the export in its model card.

    afiqa export --model NAME|CARD.json [--format litert|onnx] [--precision fp32|fp16|int8] [--out FILE]
                 [--check PATH...] [--force]

``litert`` (afiqa's own fast CPU runtime, ``afiqa.runtime``): the Keras model is
exported as a TensorFlow SavedModel (``model.export(dir, format="tf_saved_model")``) and
converted by TensorFlow's own converter (``tf.lite.TFLiteConverter.from_saved_model``):

* ``fp32``: the weights as they are;
* ``fp16``: the weights stored as float16 (half the file; LiteRT computes in float32 on
  a CPU, so the speed is fp32's);
* ``int8``: full-integer static quantisation, calibrated on real photos (``--calibrate``):
  per-channel int8 weights and int8 activations in the backbones' convolutions, which
  XNNPACK runs with its QS8 kernels (VNNI where the processor has it); the pooling,
  attention and head (``INT8_FLOAT_OPS``) stay float32, because the standard deviation of
  a map (E[x^2] - E[x]^2) loses everything in 8 bits. Recorded as ``exports.litert-int8``,
  beside the fp16 export; ``runtime="auto"`` uses it only where it passes the check on at
  least ``INT8_MIN_CHECK`` photos and was measured faster on the running processor.

``onnx`` (for runtimes afiqa does not run itself: ONNX Runtime, TensorRT, OpenVINO...):
the model's inference pass, traced by ``tf.function``, converted by ``tf2onnx``
(opset 17), fp32 only, checked with ONNX Runtime. Needs ``pip install "afiqa[onnx]"``.

The export is then checked: every photo of the check set (``--check``; default the
repository's ``examples/``) is scored by Keras and by the export, and the largest
difference, on the card's 0-100 scale, is recorded with the file's name, sha256 and
precision under ``exports.<format>`` of the model card JSON (``weights/NAME.json`` for a
model of the table, else the card file given). Needs TensorFlow (``afiqa[tf]``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from afiqa.errors import AfiqaError
from afiqa.runtime import TOLERANCE
from afiqa.runtime.zoo import DEFAULT_MODEL

PRECISIONS = ("fp32", "fp16", "int8")
ONNX_OPSET = 17
ONNX_HINT = 'pip install "afiqa[onnx]"'

# Ops of the int8 export that stay float32: everything after the backbones' convolutions.
INT8_FLOAT_OPS = ("MEAN", "SQUARE", "SQRT", "SUB", "SQUARED_DIFFERENCE", "MUL", "FULLY_CONNECTED", "CONCATENATION",
                  "LOGISTIC", "AVERAGE_POOL_2D", "REDUCE_MAX", "EXPAND_DIMS", "MIRROR_PAD")
EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"


def to_litert(model, precision: str = "fp16", calibration: Sequence = ()) -> bytes:
    """The ``.tflite`` flatbuffer of a Keras model (input (None, S, S, 3) float32).

    ``calibration``: photos (paths) whose activations set the int8 ranges (int8 only)."""
    import tensorflow as tf

    if precision not in PRECISIONS:
        raise AfiqaError(f"Unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}.")
    if precision == "int8" and not calibration:
        raise AfiqaError("An int8 export is calibrated on real photos: pass some with --calibrate PATH "
                         "(a few hundred like the ones it will score).")
    with tempfile.TemporaryDirectory(prefix="afiqa-export-") as tmp:
        model.export(tmp, format="tf_saved_model", verbose=False)
        conv = tf.lite.TFLiteConverter.from_saved_model(tmp)
        if precision in ("fp16", "int8"):
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
        if precision == "fp16":
            conv.target_spec.supported_types = [tf.float16]
            return conv.convert()
        if precision == "fp32":
            return conv.convert()
        size = int(model.input_shape[1])

        def representative():
            from afiqa.io.inputs import load_rgb, to_model_input

            for p in calibration:
                yield [to_model_input(load_rgb(p, min_size=size), size)[None].astype(np.float32)]

        conv.representative_dataset = representative
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
        options = tf.lite.experimental.QuantizationDebugOptions(denylisted_ops=list(INT8_FLOAT_OPS))
        debugger = tf.lite.experimental.QuantizationDebugger(converter=conv, debug_dataset=representative,
                                                             debug_options=options)
        return debugger.get_nondebug_quantized_model()


def to_onnx(model, precision: str = "fp32", calibration: Sequence = ()) -> bytes:
    """The ONNX model (opset ``ONNX_OPSET``) of a Keras model's inference pass, input
    ``image`` (None, S, S, 3) float32 RGB 0..255, output the MOS on [0, 1]."""
    import logging

    import tensorflow as tf
    import tf2onnx

    if precision != "fp32":
        raise AfiqaError(f"The ONNX export is fp32 only, not {precision}.")
    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    size = int(model.input_shape[1])
    spec = (tf.TensorSpec((None, size, size, 3), tf.float32, name="image"),)
    fn = tf.function(lambda x: model(x, training=False))
    proto, _ = tf2onnx.convert.from_function(fn, input_signature=spec, opset=ONNX_OPSET)
    return proto.SerializeToString()


class OnnxRunner:
    """An ONNX file run by ONNX Runtime on the CPU: what the export is checked with."""

    def __init__(self, path: Path, image_size: int):
        import onnxruntime

        self._session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self._session.run(None, {self._input: np.asarray(x, np.float32)})[0]).reshape(-1)


@dataclass(frozen=True)
class ExportFormat:
    """One export format: how it is written, run for the check, and what it needs."""

    name: str
    suffix: str
    precisions: tuple[str, ...]
    convert: Callable  # (keras model, precision, calibration photos) -> bytes
    runner: Callable  # (path, image size) -> an object with predict(x) -> (B,) MOS
    needs: tuple[tuple[str, str], ...]  # (module, how to install it)
    converter: Callable[[], str]  # what converted it, with versions
    graph: Callable = lambda model, config, precision: model  # what is converted: the scoring model


def _litert_graph(model, config, precision: str):
    """A float LiteRT export also gives each member's score and the fused features (for the
    side heads: ``afiqa.model.sideheads``); an int8 one the score alone."""
    from afiqa.model.network import feature_view

    return model if precision == "int8" else feature_view(model, config)


def _litert_runner(path: Path, image_size: int):
    from afiqa.runtime import LiteRTRuntime

    return LiteRTRuntime(path, image_size)


def _version(module: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(module)
    except metadata.PackageNotFoundError:
        return "?"


def _tf_converter() -> str:
    import tensorflow as tf

    return f"tensorflow {tf.__version__} TFLiteConverter.from_saved_model"


FORMATS: dict[str, ExportFormat] = {
    "litert": ExportFormat("litert", ".tflite", PRECISIONS, to_litert, _litert_runner,
                           (("ai_edge_litert", "pip install ai-edge-litert"),), _tf_converter, _litert_graph),
    "onnx": ExportFormat("onnx", ".onnx", ("fp32",), to_onnx, OnnxRunner,
                         (("tf2onnx", ONNX_HINT), ("onnxruntime", ONNX_HINT)),
                         lambda: f"tf2onnx {_version('tf2onnx')}, opset {ONNX_OPSET}; checked with onnxruntime "
                                 f"{_version('onnxruntime')}"),
}
DEFAULT_PRECISION = {"litert": "fp16", "onnx": "fp32"}


def record_key(fmt: str, precision: str) -> str:
    """Where a card keeps an export's record: ``litert`` (fp16/fp32, the one auto uses),
    ``litert-int8`` beside it, ``onnx``."""
    return f"{fmt}-int8" if precision == "int8" else fmt


def raw_scores(runtime, paths: Sequence, size: int, batch_size: int = 8) -> np.ndarray:
    """Model output (MOS on [0, 1]) of ``runtime`` for each photo, through the input policy."""
    from afiqa.io.inputs import load_rgb, to_model_input

    out = []
    for k in range(0, len(paths), batch_size):
        x = np.stack([to_model_input(load_rgb(p, min_size=size), size) for p in paths[k:k + batch_size]])
        out.append(runtime.predict(x.astype(np.float32)))
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def export(
    model: str | os.PathLike = DEFAULT_MODEL,
    fmt: str = "litert",
    precision: str | None = None,
    out: str | os.PathLike | None = None,
    check: Sequence | None = None,
    check_name: str | None = None,
    weights: str | os.PathLike | None = None,
    force: bool = False,
    record: bool = True,
    reference: np.ndarray | None = None,
    calibrate: Sequence | None = None,
    calibrate_name: str | None = None,
) -> dict:
    """Write the export, check it against Keras and (``record``) write it into the card.

    Returns the record: file, sha256, precision, bytes, check set, the largest and mean
    score difference to Keras (on the card's scale, 0-100), the tolerance, and the converter. ``reference``:
    the Keras outputs for ``check``, when already known.
    """
    from afiqa import runtime
    from afiqa.io.inputs import list_images
    from afiqa.predictor import load_card
    from afiqa.runtime.weights import REPO_WEIGHTS_DIR, sha256_of

    if fmt not in FORMATS:
        raise AfiqaError(f"Unknown export format {fmt!r}; afiqa exports {', '.join(FORMATS)}.")
    form = FORMATS[fmt]
    precision = precision or DEFAULT_PRECISION[fmt]
    if precision not in form.precisions:
        raise AfiqaError(f"Unknown precision {precision!r} for {fmt}; choose one of {', '.join(form.precisions)}.")
    if not runtime.has_keras():
        raise runtime.RuntimeUnavailable(runtime.keras_missing_message("afiqa export"))
    for module, hint in form.needs:
        if importlib.util.find_spec(module) is None:
            raise runtime.RuntimeUnavailable(f"The {fmt} export needs {module}, which is not installed: {hint}.")
    card, weights_dir = load_card(model)
    if card.calibration:
        raise AfiqaError(f"{model} is a calibrated card; export its base model (the map is applied to its scores)")
    if calibrate and precision != "int8":
        raise AfiqaError(f"--calibrate is for --precision int8 (a {precision} export uses no calibration photos)")
    folder = Path(weights_dir or REPO_WEIGHTS_DIR)
    key = record_key(fmt, precision)
    target = Path(out) if out else folder / f"{card.name}{'-int8' if key.endswith('-int8') else ''}{form.suffix}"
    if target.exists() and not force:
        raise AfiqaError(f"{target} already exists; pass --force to replace it, or --out another file.")
    if check is None:
        check, check_name = list_images([EXAMPLES_DIR]) if EXAMPLES_DIR.is_dir() else [], "examples/"
    check = list(check)
    if not check:
        raise AfiqaError("No photos to check the export on; pass some with --check PATH.")

    keras_rt = runtime.load_keras(card, weights, weights_dir)
    calibrate = list(calibrate or [])
    data = form.convert(form.graph(keras_rt.model, card.config, precision), precision, calibrate)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.part")
    tmp.write_bytes(data)
    try:
        exported = form.runner(tmp, card.config.image_size)
        size = card.config.image_size
        ref = raw_scores(keras_rt, check, size) if reference is None else np.asarray(reference, np.float32)
        got = raw_scores(exported, check, size)
        del exported  # the file is renamed next (Windows would refuse while it is open)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    lo, hi = card.score_range
    diff = np.abs(got - ref) * (hi - lo)
    rec = {
        "file": target.name,
        "sha256": sha256_of(target),
        "precision": precision,
        "bytes": target.stat().st_size,
        "check_set": check_name or f"{len(check)} photos",
        "n_check": len(check),
        "max_score_diff": round(float(diff.max()), 4),
        "mean_score_diff": round(float(diff.mean()), 4),
        "tolerance": TOLERANCE,
        "converter": form.converter(),
    }
    if calibrate:
        rec["calibration_set"] = calibrate_name or f"{len(calibrate)} photos"
        rec["n_calibration"] = len(calibrate)
    if key == runtime.LITERT_INT8:
        rec["speed"] = _speed_here(card, weights_dir, target, check, size, record)
    if record:
        rec["card"] = str(record_in_card(card, model, weights_dir, key, rec))
    return rec


def time_forward(rt, x: np.ndarray, repeats: int = 3) -> float:
    """Seconds of ``rt``'s forward pass on ``x``: the best of ``repeats`` after a warm-up."""
    import time

    rt.predict(x)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        rt.predict(x)
        best = min(best, time.perf_counter() - t)
    return best


def _speed_here(card, weights_dir, int8_path: Path, check: Sequence, size: int, keep_old: bool) -> dict:
    """The int8 export's speed record: what the card had, plus this processor's timing of
    int8 and the fp16 export (when that can be found) at the batch LiteRT scores at, on
    check photos."""
    from afiqa import runtime
    from afiqa.io.inputs import load_rgb, to_model_input

    old = (runtime.litert_export(card, runtime.LITERT_INT8) or {}).get("speed", {}) if keep_old else {}
    speed = dict(old)
    if runtime.litert_export(card) is None:
        return speed
    path, missing = runtime._find_litert(card, weights_dir, dry=False, strict=False)
    if missing:
        return speed
    batch = runtime.LiteRTRuntime.batch
    x = np.stack([to_model_input(load_rgb(p, min_size=size), size) for p in list(check)[:batch]]).astype(np.float32)
    fp16 = runtime.LiteRTRuntime(path, size)
    int8 = runtime.LiteRTRuntime(int8_path, size)
    speed[runtime.processor()] = {"int8_s": round(time_forward(int8, x), 4), "fp16_s": round(time_forward(fp16, x), 4),
                                  "batch": len(x), "threads": int8.threads}
    return speed


def record_in_card(card, model, weights_dir: Path | None, fmt: str, rec: dict) -> Path:
    """Write ``rec`` as ``exports[fmt]`` of the card's JSON (created from the table entry
    if the model has none), keeping every other key as it is."""
    from afiqa.runtime.weights import REPO_WEIGHTS_DIR

    p = Path(model)
    path = p if (p.suffix == ".json" or p.is_file()) else Path(weights_dir or REPO_WEIGHTS_DIR) / f"{card.name}.json"
    d = json.loads(path.read_text()) if path.is_file() else card.to_dict()
    d.setdefault("exports", {})[fmt] = {k: v for k, v in rec.items() if k != "card"}
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(json.dumps(d, indent=2) + "\n")
    os.replace(tmp, path)
    return path
