"""Other inference engines on afiqa's ONNX export, measured beside LiteRT (issue 29's point 3).

    python -m benchmarks.engines quantize --onnx NAME.onnx --calibrate PHOTOS... --out NAME-int8.onnx
    python -m benchmarks.engines check --model NAME|CARD.json --onnx NAME.onnx [--onnx-int8 F] --check PHOTOS...

afiqa runs LiteRT itself; these engines are measured to decide whether one should replace
it: ONNX Runtime (``onnxruntime``) on the fp32 export and on a static int8 one (QDQ,
per-channel weights, convolutions only, calibrated on real photos), and OpenVINO
(``openvino``, which reads ONNX itself, no TensorFlow) on both files, the fp32 one both
in f32 and in bf16 (OpenVINO's default where the processor has bf16 instructions).
``python -m benchmarks.bench --onnx F [--onnx-int8 F]`` times them in the same run as
afiqa's runtimes; ``check`` scores photos with each and with Keras and prints the largest
and mean score difference (0-100), the check an export must pass (0.5 points).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

Predict = Callable[[np.ndarray], np.ndarray]  # (B, S, S, 3) float32 RGB 0..255 -> (B,) MOS on [0, 1]


def _threads() -> int:
    from afiqa.runtime import cpu_threads

    return cpu_threads()


def onnxruntime_engine(path: Path) -> Predict:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = _threads()
    opts.enable_cpu_mem_arena = False  # memory back after each call: a bench holds several engines
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: np.asarray(session.run(None, {name: np.asarray(x, np.float32)})[0]).reshape(-1)


def openvino_engine(path: Path, size: int, precision: str = "f32") -> Predict:
    """``precision``: OpenVINO's inference precision hint; ``bf16`` is its own default on a
    processor with bf16 instructions (AVX512-BF16, AMX), ``f32`` computes as the file says."""
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(path))
    model.reshape([-1, size, size, 3])
    compiled = core.compile_model(model, "CPU", {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": _threads(),
                                                 "INFERENCE_PRECISION_HINT": precision})
    return lambda x: np.asarray(compiled(np.asarray(x, np.float32))[0]).reshape(-1)


def available(onnx: Path | None, onnx_int8: Path | None, size: int) -> tuple[dict[str, Predict], dict[str, str]]:
    """({engine: predict} for each engine and file at hand, {engine: why it is left out})."""
    engines, skipped = {}, {}
    plans = [  # (name, module, file, how to load it)
        ("onnxruntime-fp32", "onnxruntime", onnx, onnxruntime_engine),
        ("onnxruntime-int8", "onnxruntime", onnx_int8, onnxruntime_engine),
        ("openvino-fp32", "openvino", onnx, lambda p: openvino_engine(p, size, "f32")),
        ("openvino-bf16", "openvino", onnx, lambda p: openvino_engine(p, size, "bf16")),
        ("openvino-int8", "openvino", onnx_int8, lambda p: openvino_engine(p, size, "f32")),
    ]
    for name, module, path, make in plans:
        if path is None:
            continue
        if importlib.util.find_spec(module) is None:
            skipped[name] = f"{module} is not installed (pip install {module})"
            continue
        engines[name] = make(Path(path))
    return engines, skipped


def quantize(onnx: Path, out: Path, calibration: Sequence, size: int) -> Path:
    """A static int8 QDQ copy of ``onnx``: int8 convolutions (per-channel weights),
    activation ranges from ``calibration`` photos through afiqa's input policy."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from afiqa.io.inputs import load_rgb, to_model_input

    if out.exists():
        raise SystemExit(f"{out} already exists; remove it or pass another --out")

    class Photos(CalibrationDataReader):
        def __init__(self):
            self._it = iter(calibration)

        def get_next(self):
            p = next(self._it, None)
            return None if p is None else {"image": to_model_input(load_rgb(p, min_size=size), size)[None]
                                           .astype(np.float32)}

    pre = out.with_name(f".{out.name}.pre")
    try:
        quant_pre_process(str(onnx), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(out), Photos(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, op_types_to_quantize=["Conv"])
    finally:
        pre.unlink(missing_ok=True)
    return out


def check(model, engines: dict[str, Predict], photos: Sequence) -> dict[str, dict]:
    """Largest and mean score difference (the card's scale) of each engine to Keras."""
    from afiqa import runtime
    from afiqa.predictor import load_card
    from afiqa.runtime.export import raw_scores

    card, folder = load_card(model)
    size = card.config.image_size
    ref = raw_scores(runtime.load_keras(card, None, folder), photos, size)
    lo, hi = card.score_range
    out = {}
    for name, fn in engines.items():
        got = raw_scores(type("Engine", (), {"predict": staticmethod(fn)})(), photos, size)
        d = np.abs(got - ref) * (hi - lo)
        out[name] = {"n": len(photos), "max_score_diff": round(float(d.max()), 4),
                     "mean_score_diff": round(float(d.mean()), 4)}
    return out


def main(argv: list[str] | None = None) -> int:
    from afiqa.io.inputs import list_images

    ap = argparse.ArgumentParser(prog="python -m benchmarks.engines", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("quantize", help="a static int8 QDQ copy of an ONNX export")
    q.add_argument("--onnx", required=True, type=Path)
    q.add_argument("--calibrate", required=True, nargs="+")
    q.add_argument("--out", required=True, type=Path)
    q.add_argument("--size", type=int, default=512, help="the model's input size (default 512)")
    c = sub.add_parser("check", help="score difference of each engine to Keras")
    c.add_argument("--model", required=True)
    c.add_argument("--onnx", type=Path)
    c.add_argument("--onnx-int8", type=Path)
    c.add_argument("--check", required=True, nargs="+")
    args = ap.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.cmd == "quantize":
        print(quantize(args.onnx, args.out, list_images(args.calibrate), args.size))
        return 0
    from afiqa.predictor import load_card

    size = load_card(args.model)[0].config.image_size
    engines, skipped = available(args.onnx, args.onnx_int8, size)
    for name, why in skipped.items():
        print(f"left out: {name}: {why}")
    for name, r in check(args.model, engines, list_images(args.check)).items():
        print(f"{name}: largest {r['max_score_diff']:.3f}, mean {r['mean_score_diff']:.3f} on {r['n']} photos")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
