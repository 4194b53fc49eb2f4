"""Find a model's trained weights: an explicit file, the repository's weights/ folder, or
the Hugging Face Hub (downloaded once into the standard HF cache), always verified.

The environment is read when a function is called, not when this module (or
``huggingface_hub``, which reads ``HF_ENDPOINT``, ``HF_HUB_OFFLINE``, ``HF_HUB_CACHE`` and
the timeouts once, at its own import) is imported: ``HF_ENDPOINT``, ``HF_HUB_OFFLINE``,
``HF_HOME`` / ``HF_HUB_CACHE`` and ``HF_HUB_ETAG_TIMEOUT`` are passed to it explicitly.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from afiqa.errors import WeightsError
from afiqa.zoo import ModelCard

REPO_WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
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
    import httpx2
    import huggingface_hub as hf
    from huggingface_hub import constants, errors

    endpoint, offline, cache = hub_endpoint(), hub_offline(), hub_cache_dir()
    where = dict(repo_id=card.hub_repo, filename=filename or card.weights_file, revision=card.hub_revision)
    timeout = _etag_timeout()
    try:
        if not offline and not isinstance(hf.try_to_load_from_cache(**where, cache_dir=cache), str):
            # Not cached: one HEAD without retries first, because when the Hub is unreachable
            # hf_hub_download retries with backoff (about 25 s, or minutes when packets are dropped).
            hf.get_hf_file_metadata(hf.hf_hub_url(**where, endpoint=endpoint), timeout=timeout)
        got = hf.hf_hub_download(
            **where, cache_dir=cache, endpoint=endpoint, local_files_only=offline, etag_timeout=timeout
        )
        return Path(got), ""
    except errors.RevisionNotFoundError:
        return None, f"revision {card.hub_revision!r} not found (404) in repo {card.hub_repo}"
    except errors.RepositoryNotFoundError:  # includes gated/private repos
        return None, f"repo {card.hub_repo} not found (404) or not public"
    except errors.RemoteEntryNotFoundError:
        return None, f"file not found (404) in repo {card.hub_repo}"
    except (errors.OfflineModeIsEnabled, errors.LocalEntryNotFoundError) as e:
        if offline:
            return None, (
                f"offline mode: HF_HUB_OFFLINE is set and it is not in the HF cache {cache}; "
                "unset HF_HUB_OFFLINE to download it"
            )
        if constants.is_offline_mode():
            return None, "offline mode: huggingface_hub was imported while HF_HUB_OFFLINE was set; restart without it"
        return None, f"Hub unreachable and not in the HF cache {cache}: {_first_line(e.__cause__ or e)}"
    except httpx2.TimeoutException:
        return None, f"Hub did not answer within {timeout:g} s (HF_HUB_ETAG_TIMEOUT)"
    except httpx2.TransportError as e:
        return None, f"Hub unreachable: {_first_line(e)}"
    except errors.HfHubHTTPError as e:
        return None, f"Hub answered HTTP {e.response.status_code}"
    except OSError as e:  # FileMetadataError (not a Hub endpoint), disk full, unwritable cache...
        return None, _first_line(e)


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
