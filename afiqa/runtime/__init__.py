"""What afiqa runs on: the runtime that computes scores, the Keras backend and its device.

One seam: a runtime turns a batch of model inputs (B, S, S, 3), RGB 0..255, into the
model's output (B,), MOS on [0, 1] (``predict``), or into ``Outputs``: that and, where it
can, each head member's output and the fused features the side heads read (``forward``);
it says the batch it runs best at (``batch``: 1 for LiteRT, whose XNNPACK kernels gain
nothing from batching while memory grows with it; 8 for Keras). ``select`` picks one,
once, and says why:

* ``litert``: the model's LiteRT (``.tflite``) export run by ``ai-edge-litert``'s
  interpreter with XNNPACK on every core. Scores only; no TensorFlow needed.
* ``keras``: the Keras model built from the card's config and ``.weights.h5``. Needed for
  heat-maps (GradCAM), training, and models without an export; on a GPU when the Keras
  backend sees one (``pip install "afiqa[gpu]"`` on Linux).
* ``litert-int8``: the model's calibrated int8 LiteRT export (``afiqa export --precision
  int8``), when it has one.
* ``auto``: the fastest available: Keras when TensorFlow can use a GPU, else LiteRT when
  ``ai-edge-litert`` is installed and the model has a LiteRT export that can be found,
  else Keras. Of the LiteRT exports, the int8 one only where its card records that it
  scored within the tolerance of Keras on at least ``INT8_MIN_CHECK`` photos and was
  measured faster than the fp16 export on this processor (``processor()``); else fp16.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from afiqa.errors import AfiqaError, WeightsError

RUNTIMES = ("auto", "litert", "litert-int8", "keras")
LITERT = "litert"  # the format name in a card's ``exports`` and ``afiqa export --format``
LITERT_INT8 = "litert-int8"  # the card's record of the int8 export, and the runtime's name
INT8_MIN_CHECK = 1000  # photos the int8 export must have been checked on (afiqa.runtime.export)
TOLERANCE = 0.5  # the largest score difference to Keras (0-100 scale) an export may show (afiqa export checks it)
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16", "asimddp", "i8mm")
TF_HINT = 'pip install "afiqa[tf]"'
LITERT_HINT = "pip install ai-edge-litert"


class RuntimeUnavailable(AfiqaError, RuntimeError):
    """A runtime that was asked for but cannot run here (a package or a file is missing)."""


def keras_missing_message(what: str) -> str:
    return (f"{what}: needs TensorFlow and Keras, which are not installed; install them with {TF_HINT} "
            "(scores work without them, through LiteRT).")


def has_keras() -> bool:
    return _installed("keras") and _installed(_backend_package())


def has_litert() -> bool:
    return _installed("ai_edge_litert")


def _installed(module: str) -> bool:
    """Whether ``module`` can be imported, found without importing it (TensorFlow takes seconds)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def cpu_threads() -> int:
    """Threads for the scoring runtime: ``AFIQA_THREADS`` when set (a Ray worker given one
    CPU sets 1, so that many workers on a node do not each start a thread per core), else
    the cores this process may use (the CPU affinity mask where the OS has one)."""
    want = os.environ.get("AFIQA_THREADS", "").strip()
    if want.isdigit() and int(want) > 0:
        return int(want)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


# -- the runtimes ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Outputs:
    """One batch through a runtime: ``score`` (B,) MOS on [0, 1]; ``members`` (B, K) each head
    member's, and ``fused`` (B, D) the fused features, or None where the runtime's file does
    not give them (a LiteRT export made before they were exported, an int8 export)."""

    score: np.ndarray
    members: np.ndarray | None = None
    fused: np.ndarray | None = None


class KerasRuntime:
    """The Keras model of a card with its trained weights; also what GradCAM needs."""

    name = "keras"
    batch = 8  # TensorFlow's kernels gain from batching
    gives_features = True  # forward() gives the fused features the side heads read (afiqa.model.sideheads)

    def __init__(self, card, weights_path: Path):
        if not has_keras():
            raise RuntimeUnavailable(keras_missing_message("The Keras runtime"))
        from afiqa.model.network import build_model

        self.path = Path(weights_path)
        self.model = build_model(card.config, backbone_weights=None)
        try:
            self.model.load_weights(self.path)
        except Exception as e:  # h5py/keras raise many types for a bad file
            raise WeightsError(
                f"{self.path} could not be loaded as the weights of {card.name} "
                f"({str(e).splitlines()[0][:160]}); delete it so it is fetched again, or pass the right file"
            ) from None
        self.size = card.config.image_size
        self.config = card.config
        self._traced = {}  # the traced forward passes, made on first use
        self.explained = False
        self._lock = threading.Lock()

    def _fn(self, which: str):
        if which not in self._traced:
            with self._lock:
                if which not in self._traced:
                    from afiqa.model.network import feature_view

                    model = self.model if which == "score" else feature_view(self.model, self.config)
                    self._traced[which] = _forward_fn(model, self.size)
        return self._traced[which]

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self._fn("score")(np.asarray(x, np.float32))).reshape(-1)

    def forward(self, x: np.ndarray) -> Outputs:
        score, members, fused = self._fn("features")(np.asarray(x, np.float32))
        return Outputs(np.asarray(score).reshape(-1), np.asarray(members).reshape(len(x), -1), np.asarray(fused))

    def explain(self, x: np.ndarray):
        from afiqa.explain import explain

        out = explain(self.model, x)
        self.explained = True  # traced: the next call is quick
        return out

    def describe(self) -> str:
        return f"Keras {backend()} backend on {device()}, weights {self.path}"


class LiteRTRuntime:
    """A ``.tflite`` export run by the LiteRT interpreter (XNNPACK, ``threads`` threads).

    The interpreter is not thread-safe: calls are serialised; it is resized when the batch
    size changes (the decode pool keeps feeding it meanwhile).
    """

    name = LITERT
    # XNNPACK runs a 512-px photo as fast alone as in a batch, and its arena grows with the
    # batch (afiqa-v4: 280 MB peak at 1, 1.2 GB at 8), so one photo at a time.
    batch = 1

    def __init__(self, path: Path, image_size: int, threads: int | None = None, name: str = LITERT):
        self.name = name
        if not has_litert():
            raise RuntimeUnavailable(f"The LiteRT runtime needs ai-edge-litert, which is not installed: {LITERT_HINT}.")
        from ai_edge_litert.interpreter import Interpreter

        self.path = Path(path)
        self.threads = threads or cpu_threads()
        try:
            self._interp = Interpreter(model_path=str(self.path), num_threads=self.threads)
        except Exception as e:  # ValueError for a file that is not a flatbuffer model
            raise WeightsError(f"{self.path} could not be loaded as a LiteRT model "
                               f"({str(e).splitlines()[0][:160]}); delete it or pass the right file") from None
        self._in = self._interp.get_input_details()[0]
        self._outs = _output_roles(self._interp.get_output_details())
        self._out = self._outs.get("score")
        self.gives_features = "fused" in self._outs  # what the side heads read (afiqa.model.sideheads)
        want = [image_size, image_size, 3]
        if list(self._in["shape"][1:]) != want or self._out is None:
            raise WeightsError(f"{self.path} takes inputs of shape {list(self._in['shape'])}, but the model card "
                               f"says (batch, {image_size}, {image_size}, 3): it belongs to another model")
        self._batch = int(self._in["shape"][0])
        with _without_litert_banner():
            self._interp.allocate_tensors()  # where XNNPACK is applied, and announced once per process
        self._lock = threading.Lock()

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x, roles=("score",)).score

    def forward(self, x: np.ndarray, roles=("score", "members", "fused")) -> Outputs:
        x = np.ascontiguousarray(x, np.float32)
        with self._lock:
            if x.shape[0] != self._batch:
                self._interp.resize_tensor_input(self._in["index"], list(x.shape), strict=True)
                self._interp.allocate_tensors()
                self._batch = x.shape[0]
            self._interp.set_tensor(self._in["index"], x)
            self._interp.invoke()
            got = {r: np.array(self._interp.get_tensor(self._outs[r]["index"])).reshape(len(x), -1)
                   for r in roles if r in self._outs}
        return Outputs(got["score"].reshape(-1), got.get("members"), got.get("fused"))

    def describe(self) -> str:
        return f"LiteRT (ai-edge-litert, XNNPACK, {self.threads} threads), {self.path}"


def _output_roles(details: list[dict]) -> dict[str, dict]:
    """Which output of a ``.tflite`` is the score (B, 1), the members' scores (B, K <= 16) and
    the fused features (B, D > 16), told by shape: a converter may reorder a model's outputs."""
    roles = {}
    for d in sorted(details, key=lambda d: d["index"]):
        shape = list(d["shape"])
        if len(shape) != 2:
            continue
        role = "score" if shape[1] == 1 and "score" not in roles else "members" if shape[1] <= 16 else "fused"
        roles.setdefault(role, d)
    return roles


LITERT_BANNER = "Created TensorFlow Lite XNNPACK delegate for CPU."
_banner_shown = False  # LiteRT prints it once per process: only the first allocation is filtered


@contextlib.contextmanager
def _without_litert_banner():
    """Leave out LiteRT's "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.".

    The interpreter's C++ side writes it to file descriptor 2 on its first allocation,
    where no Python setting reaches it, so a good ``afiqa score`` run would not be quiet.
    Meanwhile fd 2 goes to a temporary file; every other line written there is passed on.
    """
    global _banner_shown
    if _banner_shown:
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no fd 2 (a detached process): nothing to filter
        yield
        return
    _banner_shown = True
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            rest = [line for line in tmp.read().decode(errors="replace").splitlines(True) if LITERT_BANNER not in line]
            if rest:
                sys.stderr.write("".join(rest))
                sys.stderr.flush()


def _forward_fn(model, size: int):
    """The model's inference pass, traced once for every batch size.

    ``predict_on_batch`` traces a graph per new batch shape (twice at most), 1-2 s each for
    two 512-px backbones on a CPU: a CLI run with a partial last batch, or ``score`` then
    ``score_batch``, paid that twice. Same computation as ``predict_on_batch``.
    """
    import keras

    if keras.backend.backend() != "tensorflow":
        return model.predict_on_batch
    import tensorflow as tf

    spec = tf.TensorSpec([None, size, size, 3], tf.float32)
    fn = tf.function(lambda x: model(x, training=False), input_signature=[spec])

    def run(x):
        out = fn(tf.convert_to_tensor(x))
        return [o.numpy() for o in out] if isinstance(out, (list, tuple)) else out.numpy()

    return run


# -- choosing one ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Choice:
    """Which runtime scores, why, and the file it loads (``None``: resolved when loaded)."""

    name: str
    reason: str
    path: Path | None = None


def litert_export(card, key: str = LITERT) -> dict | None:
    """The card's LiteRT export record (file, sha256, precision, agreement), if it has one;
    ``key`` ``litert-int8``: the int8 export's."""
    rec = (card.exports or {}).get(key)
    return rec if rec and rec.get("file") else None


def processor() -> str:
    """This processor as int8 speed is recorded for it: its model name and the vector ISA
    flags that decide int8 and float speed (Linux ``/proc/cpuinfo``; elsewhere the platform)."""
    import platform

    name, flags = "", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and not name:
                    name = value.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = set(value.split())
                if name and flags:
                    break
    except OSError:
        pass
    name = name or platform.processor() or platform.machine()
    return f"{name} [{' '.join(f for f in ISA_FLAGS if f in flags)}]"


def int8_problem(card, here: str | None = None) -> str | None:
    """Why ``auto`` does not use the model's int8 export here, or None when it does."""
    rec = litert_export(card, LITERT_INT8)
    if rec is None:
        return "the model has no int8 export"
    if rec.get("n_check", 0) < INT8_MIN_CHECK or rec.get("max_score_diff", float("inf")) > TOLERANCE:
        return (f"its int8 export differs from Keras by up to {rec.get('max_score_diff')} points on "
                f"{rec.get('n_check')} photos (auto needs at most {TOLERANCE} on at least {INT8_MIN_CHECK})")
    if rec.get("published") is False:
        return "its int8 export is not published"
    here = here or processor()
    speed = (rec.get("speed") or {}).get(here)
    if not speed:
        return f"its int8 export was not timed on this processor ({here})"
    if speed["int8_s"] >= speed["fp16_s"]:
        return f"its int8 export was slower here ({speed['int8_s']:.3f} s against {speed['fp16_s']:.3f} s a batch)"
    return None


def choose(runtime: str, card, weights=None, weights_dir: Path | None = None, dry: bool = False) -> Choice:
    """Decide which runtime scores ``card``'s model, and why; raises ``RuntimeUnavailable``.

    ``weights``: the user's own file: a ``.tflite`` means LiteRT, anything else Keras.
    ``dry``: decide without downloading or hashing anything (``afiqa info``).
    """
    if runtime not in RUNTIMES:
        raise RuntimeUnavailable(f"Unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}.")
    own_tflite = weights is not None and str(weights).lower().endswith(".tflite")
    if runtime == LITERT and weights is not None and not own_tflite:
        raise RuntimeUnavailable(f"{weights} is a Keras weights file; the LiteRT runtime needs a .tflite file.")
    if runtime == "keras" or (runtime == "auto" and weights is not None and not own_tflite):
        if own_tflite:
            raise RuntimeUnavailable(f"{weights} is a LiteRT file; the Keras runtime needs a .weights.h5 file.")
        if not has_keras():
            raise RuntimeUnavailable(keras_missing_message("The Keras runtime"))
        why = "asked for" if runtime == "keras" else "a Keras weights file was given"
        return Choice("keras", why)
    if runtime == LITERT_INT8:
        if weights is not None:
            raise RuntimeUnavailable(f"--runtime litert-int8 runs the card's int8 export; for your own file "
                                     f"{weights} use --runtime litert (a .tflite) or keras (a .weights.h5).")
        problem = _litert_problem(card, own_tflite=False, key=LITERT_INT8)
        if problem:
            raise RuntimeUnavailable(f"The int8 LiteRT runtime cannot run model {card.name!r}: {problem}.")
        path, _ = _find_litert(card, weights_dir, dry, strict=True, key=LITERT_INT8)
        return Choice(LITERT_INT8, "asked for", path)
    if runtime == "auto" and has_keras() and gpu_likely():
        return Choice("keras", f"Keras ({_backend_package()}) can use the GPU here, which beats LiteRT on the CPU")
    problem = _litert_problem(card, own_tflite)
    if problem is None:
        path, problem = (Path(weights), None) if own_tflite else \
            _find_litert(card, weights_dir, dry, strict=runtime == LITERT)
        if problem is None and runtime == "auto" and not own_tflite and int8_problem(card) is None:
            int8_path, int8_missing = _find_litert(card, weights_dir, dry, strict=False, key=LITERT_INT8)
            if int8_missing is None:
                rec = litert_export(card, LITERT_INT8)
                return Choice(LITERT_INT8, f"fastest here: the model's int8 LiteRT export, measured faster than fp16 "
                                           f"on this processor and within {rec['max_score_diff']} of Keras on "
                                           f"{rec['n_check']} photos", int8_path)
        if problem is None:
            rec = litert_export(card) or {}
            how = "a LiteRT file was given" if own_tflite else (
                f"fastest available here: the model's {rec.get('precision', '?')} LiteRT export, scores within "
                f"{rec.get('max_score_diff', '?')} of Keras on {rec.get('check_set', 'its check set')}")
            return Choice(LITERT, how if runtime == "auto" else "asked for", path)
    if runtime == LITERT:
        raise RuntimeUnavailable(f"The LiteRT runtime cannot run model {card.name!r}: {problem}.")
    if not has_keras():
        raise RuntimeUnavailable(f"Model {card.name!r} cannot be scored here: LiteRT cannot run it ({problem}), "
                                 f"and the Keras runtime needs TensorFlow and Keras: {TF_HINT}.")
    return Choice("keras", f"LiteRT cannot run it: {problem}")


def _litert_problem(card, own_tflite: bool, key: str = LITERT) -> str | None:
    if not has_litert():
        return f"ai-edge-litert is not installed ({LITERT_HINT})"
    rec = litert_export(card, key)
    if not own_tflite and rec is not None and rec.get("published") is False:
        return (f"its {key} export was measured ({rec.get('note', 'not published')}); make your own with: afiqa "
                f"export --model {card.name} --precision int8 --calibrate PHOTOS")
    if not own_tflite and rec is None:
        what, how = ("int8 LiteRT", "--precision int8 --calibrate PHOTOS") if key == LITERT_INT8 else \
            ("LiteRT", "--format litert")
        return f"the model card has no {what} export (make one with: afiqa export --model {card.name} {how})"
    return None


def _find_litert(card, weights_dir: Path | None, dry: bool, strict: bool,
                 key: str = LITERT) -> tuple[Path | None, str | None]:
    """(the verified export, None), or (None, why not); ``strict``: raise ``WeightsError`` instead."""
    from afiqa.runtime.weights import describe_file, resolve_file

    rec = litert_export(card, key)
    if dry:
        where = describe_file(card, rec["file"], weights_dir)  # local, cached, or "would download"
        return None, (where if "HF_HUB_OFFLINE is set" in where else None)
    try:
        return resolve_file(card, rec["file"], rec.get("sha256", ""), None, weights_dir), None
    except WeightsError as e:
        if strict:
            raise
        return None, str(e).rstrip(".")


def select(runtime: str, card, weights=None, weights_dir: Path | None = None):
    """(the loaded runtime, the ``Choice`` that picked it)."""
    choice = choose(runtime, card, weights, weights_dir)
    if choice.name in (LITERT, LITERT_INT8):
        return LiteRTRuntime(choice.path, card.config.image_size, name=choice.name), choice
    return load_keras(card, weights, weights_dir), choice


def load_keras(card, weights=None, weights_dir: Path | None = None) -> KerasRuntime:
    if not has_keras():
        raise RuntimeUnavailable(keras_missing_message("The Keras runtime"))
    from afiqa.runtime.weights import resolve_weights

    return KerasRuntime(card, resolve_weights(card, weights, weights_dir))


# -- the Keras backend and its device --------------------------------------------------------
def backend() -> str:
    import keras

    return keras.backend.backend()


def _backend_package() -> str:
    return os.environ.get("KERAS_BACKEND", "tensorflow")  # tensorflow, jax or torch: the module's name too


def gpu_likely() -> bool:
    """Whether the Keras backend could use an NVIDIA GPU here, decided without importing it
    (TensorFlow takes seconds): a GPU device node, and a GPU build of the backend (not
    ``tensorflow-cpu``; a ``jax-cuda*`` plugin; PyTorch with its CUDA runtime)."""
    if not Path("/dev/nvidia0").exists() or os.environ.get("CUDA_VISIBLE_DEVICES", "x") in ("", "-1"):
        return False
    from importlib import metadata

    names = {(d.metadata["Name"] or "").lower().replace("_", "-") for d in metadata.distributions()}
    backend = _backend_package()
    if backend == "tensorflow":
        return "tensorflow" in names  # the GPU-capable build; tensorflow-cpu is another name
    if backend == "jax":
        return any(n.startswith("jax-cuda") for n in names)
    return backend == "torch" and any(n.startswith("nvidia-cuda-runtime") for n in names)


def device() -> str:
    """'GPU (name)' when the backend sees a GPU, else 'CPU'. Keras places work on it."""
    b = backend()
    try:
        if b == "tensorflow":
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
            return f"GPU ({', '.join(g.name for g in gpus)})" if gpus else "CPU"
        if b == "jax":
            import jax

            d = jax.devices()[0]
            return f"GPU ({d.device_kind})" if d.platform == "gpu" else d.platform.upper()
        if b == "torch":
            import torch

            return f"GPU ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "CPU"
    except Exception as e:  # a broken driver should not stop `afiqa info`
        return f"unknown ({type(e).__name__})"
    return "CPU"
