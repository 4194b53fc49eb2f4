"""Find a model's trained weights: an explicit file, the repository's weights/ folder, or
the Hugging Face Hub (downloaded once into the standard HF cache), always verified.

The environment is read when a function is called, not when this module (or
``huggingface_hub``, which reads ``HF_ENDPOINT``, ``HF_HUB_OFFLINE``, ``HF_HUB_CACHE`` and
the timeouts once, at its own import) is imported: ``HF_ENDPOINT``, ``HF_HUB_OFFLINE``,
``HF_HOME`` / ``HF_HUB_CACHE`` and ``HF_HUB_ETAG_TIMEOUT`` are passed to it explicitly.

A file already in the HF cache is used without asking the Hub (the card's sha256 pins
its content, so a newer revision could not be used anyway). A download runs in a child
process with an overall deadline, ``AFIQA_HUB_TIMEOUT`` seconds (default 120):
``huggingface_hub``'s own timeouts apply to each read, so a server that sends a byte
every few seconds would otherwise hold it for ever. At the deadline the child is
killed and the partial ``.incomplete`` file it left in the HF cache is removed.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from afiqa.errors import WeightsError
from afiqa.runtime.zoo import ModelCard

REPO_WEIGHTS_DIR = Path(__file__).resolve().parents[2] / "weights"
DEFAULT_ENDPOINT = "https://huggingface.co"
_TRUE = {"1", "true", "yes", "on"}


def sha256_of(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def hub_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def hub_cache_dir() -> Path:
    """The HF hub cache, resolved the way ``huggingface_hub.constants`` does, but now."""
    env = os.environ
    cache = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE")
    if not cache:
        xdg = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        cache = os.path.join(env.get("HF_HOME") or os.path.join(xdg, "huggingface"), "hub")
    return Path(os.path.expandvars(os.path.expanduser(cache)))


def _etag_timeout() -> float:
    try:
        return float(os.environ.get("HF_HUB_ETAG_TIMEOUT") or 10)
    except ValueError:
        return 10.0


def hub_deadline() -> float:
    """Seconds a whole download may take: ``AFIQA_HUB_TIMEOUT``, default 120."""
    try:
        value = float(os.environ.get("AFIQA_HUB_TIMEOUT") or 120)
    except ValueError:
        return 120.0
    return value if value > 0 else 120.0


def _hub_where(card: ModelCard) -> str:
    return f"{hub_endpoint()}/{card.hub_repo}@{card.hub_revision}"


def _verify(path: Path, card: ModelCard, delete: str, sha256: str | None = None) -> Path:
    expected = sha256 or card.sha256
    actual = sha256_of(path)
    if actual != expected:
        raise WeightsError(
            f"Weights file {path} of model {card.name!r} has sha256 {actual}, but the model card expects "
            f"{expected}: the file is damaged or belongs to another version; delete {delete} so that it is "
            "downloaded again, or pass your own file with --weights PATH."
        )
    return path


def resolve_weights(
    card: ModelCard, path: str | os.PathLike | None = None, weights_dir: Path | None = None
) -> Path:
    """Path of verified weights for ``card``; raises ``WeightsError`` saying what was tried.

    Order: ``path`` (the user's own file, must exist, not checked against the card), then
    ``weights_dir`` (default: the repository's weights/), then the Hub via the HF cache.
    """
    return resolve_file(card, card.weights_file, card.sha256, path, weights_dir)


def resolve_file(
    card: ModelCard, filename: str, sha256: str, path: str | os.PathLike | None = None,
    weights_dir: Path | None = None,
) -> Path:
    """Any file of a model (its ``.weights.h5``, an export such as its ``.tflite``), found
    the same way as its weights and verified against ``sha256``."""
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise WeightsError(f"Weights file {p} does not exist; check the path given with --weights.")
        return p
    if not sha256:
        raise WeightsError(
            f"Model {card.name!r} has no sha256 for {filename} in its card, so afiqa will not load it unverified; "
            "pass a weights file with --weights PATH."
        )
    local = Path(weights_dir or REPO_WEIGHTS_DIR) / filename
    if local.is_file():
        return _verify(local, card, delete=str(local), sha256=sha256)
    cached, why = _from_hub(card, filename)
    if cached is None:
        raise WeightsError(
            f"No weights for model {card.name!r}: {local} does not exist and {filename} could not be "
            f"fetched from {_hub_where(card)} ({why}); download it yourself and pass --weights PATH, or put it "
            f"in {local.parent}."
        )
    # Deleting the blob as well as the snapshot link makes hf_hub_download fetch it again.
    return _verify(cached, card, delete=f"{cached} and {cached.resolve()}", sha256=sha256)


def _from_hub(card: ModelCard, filename: str | None = None) -> tuple[Path | None, str]:
    """(path in the HF cache, "") or (None, why the Hub could not provide it)."""
    from huggingface_hub import try_to_load_from_cache

    cache = hub_cache_dir()
    where = dict(repo_id=card.hub_repo, filename=filename or card.weights_file, revision=card.hub_revision)
    cached = try_to_load_from_cache(**where, cache_dir=cache)
    if isinstance(cached, str):
        return Path(cached), ""
    if hub_offline():
        return None, (
            f"offline mode: HF_HUB_OFFLINE is set and it is not in the HF cache {cache}; "
            "unset HF_HUB_OFFLINE to download it"
        )
    return _download_with_deadline(where, cache)


def _download_with_deadline(where: dict, cache: Path) -> tuple[Path | None, str]:
    """One HEAD (in a thread), then ``hf_hub_download`` in a child process, both within
    ``hub_deadline()``; the child is killed at the deadline and the partial download it
    left in the cache is removed."""
    import threading

    limit, started, wall = hub_deadline(), time.monotonic(), time.time()
    request = dict(where, endpoint=hub_endpoint(), timeout=_etag_timeout())
    answer: list = []
    # One HEAD without retries first: when the Hub is unreachable hf_hub_download retries with
    # backoff (about 25 s, or minutes when packets are dropped). In a daemon thread, so that a
    # server sending its headers byte by byte cannot hold it past the deadline either.
    head = threading.Thread(target=lambda: answer.append(_head(**request)), daemon=True, name="afiqa-hub-head")
    head.start()
    head.join(limit)
    if not answer:
        return None, f"the Hub did not answer within {limit:g} s (AFIQA_HUB_TIMEOUT)"
    if answer[0]:
        return None, answer[0]
    package_root = str(Path(__file__).resolve().parents[2])  # this afiqa, whatever the child's cwd holds
    # No progress bars, and no telemetry: huggingface_hub would otherwise first fetch the Hub's
    # list of "agent harnesses" for its user-agent, one more request (up to 3 s) per download.
    env = {**os.environ, "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    env.pop("HF_HUB_OFFLINE", None)
    code = "import sys; sys.path.insert(0, sys.argv[1]); import afiqa.runtime.weights as w; w._download_child()"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, package_root],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True,
    )
    try:
        out, _ = proc.communicate(json.dumps(dict(request, cache=str(cache))),
                                  timeout=max(limit - (time.monotonic() - started), 0.1))
    except BaseException as e:  # the deadline, or Ctrl-C
        proc.kill()
        proc.communicate()
        _remove_partial(cache, where["repo_id"], wall)
        if isinstance(e, subprocess.TimeoutExpired):
            return None, f"the download did not finish within {limit:g} s (AFIQA_HUB_TIMEOUT)"
        raise
    try:
        result = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        result = {"path": None, "why": f"the download process failed (exit status {proc.returncode})"}
    if result["path"] is None:
        _remove_partial(cache, where["repo_id"], wall)
        return None, result["why"]
    return Path(result["path"]), ""


def _remove_partial(cache: Path, repo_id: str, since: float) -> None:
    """Remove the ``.incomplete`` blobs of ``repo_id`` written since ``since`` (or empty)."""
    blobs = cache / f"models--{repo_id.replace('/', '--')}" / "blobs"
    for f in blobs.glob("*.incomplete"):
        try:
            st = f.stat()
            if st.st_size == 0 or st.st_mtime >= since - 1:
                f.unlink()
        except OSError:
            pass


def _download_child() -> None:
    """The child's side: the request as JSON on stdin, the answer as JSON on stdout."""
    args = json.loads(sys.stdin.read())
    cache = args.pop("cache")
    try:
        import huggingface_hub as hf

        got, why = hf.hf_hub_download(**_hub_args(args), cache_dir=cache, etag_timeout=args["timeout"]), ""
    except Exception as e:  # noqa: BLE001 - every failure becomes the parent's sentence
        got, why = None, _why(e, args["repo_id"], args["revision"], cache, args["timeout"])
    print(json.dumps({"path": got, "why": why}))


def _hub_args(request: dict) -> dict:
    return {k: request[k] for k in ("repo_id", "filename", "revision", "endpoint")}


def _head(repo_id: str, filename: str, revision: str, endpoint: str, timeout: float) -> str:
    """"" when the Hub has the file, else why not."""
    try:
        import huggingface_hub as hf

        hf.get_hf_file_metadata(hf.hf_hub_url(repo_id, filename, revision=revision, endpoint=endpoint),
                                timeout=timeout)
        return ""
    except Exception as e:  # noqa: BLE001
        return _why(e, repo_id, revision, hub_cache_dir(), timeout)


def _why(e: Exception, repo_id: str, revision: str, cache, timeout: float) -> str:
    """Why the Hub could not provide the file, in words, from what ``huggingface_hub`` raised."""
    import httpx2
    from huggingface_hub import errors

    if isinstance(e, errors.RevisionNotFoundError):
        return f"revision {revision!r} not found (404) in repo {repo_id}"
    if isinstance(e, errors.RepositoryNotFoundError):  # includes gated/private repos
        return f"repo {repo_id} not found (404) or not public"
    if isinstance(e, errors.RemoteEntryNotFoundError):
        return f"file not found (404) in repo {repo_id}"
    if isinstance(e, (errors.OfflineModeIsEnabled, errors.LocalEntryNotFoundError)):
        return f"Hub unreachable and not in the HF cache {cache}: {_first_line(e.__cause__ or e)}"
    if isinstance(e, httpx2.TimeoutException):
        return f"Hub did not answer within {timeout:g} s (HF_HUB_ETAG_TIMEOUT)"
    if isinstance(e, httpx2.TransportError):
        return f"Hub unreachable: {_first_line(e)}"
    if isinstance(e, errors.HfHubHTTPError) and e.response is not None:
        return f"Hub answered HTTP {e.response.status_code}"
    # FileMetadataError (not a Hub endpoint), disk full, unwritable cache, anything else
    return _first_line(e) if isinstance(e, OSError) else f"{type(e).__name__}: {_first_line(e)}"


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def describe_weights(card: ModelCard, path: str | os.PathLike | None = None, weights_dir: Path | None = None) -> str:
    """One line saying where the weights would come from now, without downloading or hashing."""
    if path is not None:
        p = Path(path).expanduser()
        return f"{p} (given)" if p.is_file() else f"{p} (given, missing)"
    return describe_file(card, card.weights_file, weights_dir)


def describe_file(card: ModelCard, filename: str, weights_dir: Path | None = None) -> str:
    """``describe_weights`` for any file of the model (e.g. its LiteRT export)."""
    local = Path(weights_dir or REPO_WEIGHTS_DIR) / filename
    if local.is_file():
        return f"{local} (local)"
    from huggingface_hub import try_to_load_from_cache

    cache = hub_cache_dir()
    cached = try_to_load_from_cache(card.hub_repo, filename, cache_dir=cache, revision=card.hub_revision)
    if isinstance(cached, str):
        return f"HF cache: {cached}"
    if hub_offline():
        return f"not found locally or in the HF cache {cache}, and HF_HUB_OFFLINE is set"
    return f"not found locally; would download from {_hub_where(card)}"


def save_weights(model, path: str | os.PathLike) -> Path:
    """``model.save_weights(path)``, then every array of the ``.weights.h5`` file
    stored gzip-compressed (byte shuffle first): the same values, which Keras loads
    as they are, in about two thirds of the bytes. The file is deterministic: the
    same weights give the same sha256."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.plain.weights.h5")
    model.save_weights(tmp)
    try:
        compress_weights_file(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def compress_weights_file(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Copy a Keras ``.weights.h5`` file with its arrays gzip-compressed (see ``save_weights``)."""
    import h5py

    with h5py.File(src, "r") as a, h5py.File(dst, "w") as b:
        _copy_h5(a, b)


def _copy_h5(src, dst) -> None:
    import h5py

    for key, value in src.attrs.items():
        dst.attrs[key] = value
    for name, obj in src.items():
        if isinstance(obj, h5py.Group):
            _copy_h5(obj, dst.create_group(name))
        else:
            big = obj.size >= 1024
            d = dst.create_dataset(name, data=obj[()], track_times=False,
                                   **({"compression": "gzip", "compression_opts": 9, "shuffle": True} if big else {}))
            for key, value in obj.attrs.items():
                d.attrs[key] = value
