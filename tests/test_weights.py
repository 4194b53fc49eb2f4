"""afiqa.runtime.weights against a real local HTTP server standing in for the Hugging Face Hub."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time

import huggingface_hub.constants  # imported first on purpose: its import-time values must not matter
import huggingface_hub.file_download  # noqa: F401 - imported before the timed tests, so they time requests
import httpx2  # noqa: F401
import pytest

from afiqa.model.config import ModelConfig
from afiqa.errors import WeightsError
from afiqa.runtime.weights import describe_weights, resolve_weights, sha256_of
from afiqa.runtime.zoo import ModelCard
from hubserver import HubServer  # tests/ is on sys.path (conftest.py)

REPO, FILE = "afiqa/tiny", "tiny.weights.h5"


def tiny_card(sha256: str, **kw) -> ModelCard:
    fields = dict(weights_file=FILE, hub_repo=REPO, hub_revision="main") | kw
    return ModelCard(name="tiny", config=ModelConfig(image_size=64, backbone_weights=None), sha256=sha256, **fields)


def tiny_model():
    import keras

    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])


@pytest.fixture(scope="module")
def weights_bytes(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("w") / FILE
    tiny_model().save_weights(path)
    return path.read_bytes()


@pytest.fixture
def sha(weights_bytes) -> str:
    return hashlib.sha256(weights_bytes).hexdigest()


@pytest.fixture(autouse=True)
def hf_env(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "3")
    monkeypatch.setenv("HF_HUB_DOWNLOAD_TIMEOUT", "3")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there; `hub` replaces it
    # In case the whole test run was started with HF_HUB_OFFLINE=1: huggingface_hub read it at import.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    # huggingface_hub's first request in a process also fetches {endpoint}/api/agent-harnesses for its
    # user-agent (telemetry, up to 3 s): against the stand-in servers it would only blur the timings.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_TELEMETRY", True)


@pytest.fixture
def hub(monkeypatch, weights_bytes):
    with HubServer() as server:
        server.add(REPO, FILE, weights_bytes)
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        yield server


def dead_endpoint() -> str:
    with HubServer() as server:
        return server.url  # refused once the server has stopped


def test_explicit_path_is_used_as_is(tmp_path):
    own = tmp_path / "mine.weights.h5"
    own.write_bytes(b"not what the card describes")
    assert resolve_weights(tiny_card("0" * 64), path=own) == own
    assert describe_weights(tiny_card("0" * 64), path=own) == f"{own} (given)"


def test_explicit_path_missing(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        resolve_weights(tiny_card("0" * 64), path=tmp_path / "nope.h5")


def test_local_weights_dir(tmp_path, weights_bytes, sha):
    (tmp_path / FILE).write_bytes(weights_bytes)
    assert resolve_weights(tiny_card(sha), weights_dir=tmp_path) == tmp_path / FILE
    assert describe_weights(tiny_card(sha), weights_dir=tmp_path) == f"{tmp_path / FILE} (local)"


def test_local_wrong_sha(tmp_path, weights_bytes, sha):
    (tmp_path / FILE).write_bytes(weights_bytes + b"!")
    with pytest.raises(WeightsError) as err:
        resolve_weights(tiny_card(sha), weights_dir=tmp_path)
    msg = str(err.value)
    assert sha in msg and sha256_of(tmp_path / FILE) in msg and "delete" in msg and str(tmp_path / FILE) in msg


def test_card_without_sha256_is_refused(tmp_path, weights_bytes):
    (tmp_path / FILE).write_bytes(weights_bytes)
    with pytest.raises(WeightsError, match="no sha256"):
        resolve_weights(tiny_card(""), weights_dir=tmp_path)


def test_download_then_cache_hit(hub, tmp_path, sha):
    card = tiny_card(sha)
    would = f"not found locally; would download from {hub.url}/{REPO}@main"
    assert describe_weights(card, weights_dir=tmp_path) == would
    first = resolve_weights(card, weights_dir=tmp_path)
    assert first.is_relative_to(tmp_path / "hf" / "hub") and sha256_of(first) == sha
    assert hub.count("GET", FILE) == 1
    again = resolve_weights(card, weights_dir=tmp_path)
    assert again == first and hub.count("GET", FILE) == 1  # cache hit: the sha256 pins it, no request at all
    assert describe_weights(card, weights_dir=tmp_path) == f"HF cache: {first}"
    tiny_model().load_weights(first)  # a real Keras weights file came through


def test_offline_uses_cache_with_server_stopped(hub, monkeypatch, tmp_path, sha):
    path = resolve_weights(tiny_card(sha), weights_dir=tmp_path)
    hub.stop()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_weights(tiny_card(sha), weights_dir=tmp_path) == path


def test_online_uses_cache_when_hub_is_down(hub, tmp_path, sha):
    path = resolve_weights(tiny_card(sha), weights_dir=tmp_path)
    hub.stop()
    start = time.monotonic()
    assert resolve_weights(tiny_card(sha), weights_dir=tmp_path) == path
    assert time.monotonic() - start < 3


def test_offline_without_cache(hub, monkeypatch, tmp_path, sha):
    monkeypatch.setenv("HF_HUB_OFFLINE", "yes")
    with pytest.raises(WeightsError) as err:
        resolve_weights(tiny_card(sha), weights_dir=tmp_path)
    msg = str(err.value)
    assert "offline" in msg and "HF_HUB_OFFLINE" in msg and str(tmp_path / FILE) in msg and "--weights" in msg
    assert sum(hub.requests.values()) == 0
    assert "HF_HUB_OFFLINE is set" in describe_weights(tiny_card(sha), weights_dir=tmp_path)


@pytest.mark.parametrize(
    "fields, words",
    [
        ({"weights_file": "other.weights.h5"}, ["file not found (404)", REPO]),
        ({"hub_repo": "afiqa/missing"}, ["not found (404)", "afiqa/missing"]),
        ({"hub_revision": "v9"}, ["revision 'v9' not found (404)", REPO]),
    ],
)
def test_not_found(hub, tmp_path, sha, fields, words):
    with pytest.raises(WeightsError) as err:
        resolve_weights(tiny_card(sha, **fields), weights_dir=tmp_path)
    assert all(w in str(err.value) for w in words), str(err.value)
    assert hub.count("GET") == 0, hub.requests


def test_hub_file_with_wrong_sha(hub, tmp_path, sha):
    with pytest.raises(WeightsError) as err:
        resolve_weights(tiny_card("0" * 64), weights_dir=tmp_path)
    msg = str(err.value)
    assert "0" * 64 in msg and sha in msg and "delete" in msg and str(tmp_path / "hf" / "hub") in msg


def test_hub_down_fails_fast(monkeypatch, tmp_path, sha):
    endpoint = dead_endpoint()
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    start = time.monotonic()
    with pytest.raises(WeightsError, match="unreachable") as err:
        resolve_weights(tiny_card(sha), weights_dir=tmp_path)
    assert time.monotonic() - start < 3
    assert f"{endpoint}/{REPO}@main" in str(err.value)


def test_slow_hub_times_out(monkeypatch, tmp_path, sha, weights_bytes):
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "1")
    with HubServer(delay=10) as slow:
        slow.add(REPO, FILE, weights_bytes)
        monkeypatch.setenv("HF_ENDPOINT", slow.url)
        start = time.monotonic()
        with pytest.raises(WeightsError, match="did not answer within 1 s"):
            resolve_weights(tiny_card(sha), weights_dir=tmp_path)
        assert time.monotonic() - start < 4


def test_a_dripping_hub_meets_the_overall_deadline_and_leaves_no_partial_file(monkeypatch, tmp_path, sha,
                                                                              weights_bytes):
    # HF_HUB_DOWNLOAD_TIMEOUT is 3 s per read: never reached. 12 s: time for the download's process to
    # start on a busy machine and begin the GET.
    monkeypatch.setenv("AFIQA_HUB_TIMEOUT", "12")
    with HubServer(drip=1.0) as drip:
        drip.add(REPO, FILE, weights_bytes)
        monkeypatch.setenv("HF_ENDPOINT", drip.url)
        start = time.monotonic()
        with pytest.raises(WeightsError) as err:
            resolve_weights(tiny_card(sha), weights_dir=tmp_path)
        took = time.monotonic() - start
        assert drip.count("GET", FILE) == 1  # the body had started to come
    msg = str(err.value)
    assert "did not finish within 12 s (AFIQA_HUB_TIMEOUT)" in msg, msg
    assert f"{drip.url}/{REPO}@main" in msg and str(tmp_path / FILE) in msg and "--weights" in msg
    assert 12 <= took < 16
    hub_cache = tmp_path / "hf" / "hub"
    assert [p.name for p in hub_cache.rglob("*") if p.is_file() and p.parent.name == "blobs"] == []
    assert list(hub_cache.rglob("*.incomplete")) == []


def test_a_download_after_a_timeout_works(monkeypatch, hub, tmp_path, sha):
    monkeypatch.setenv("AFIQA_HUB_TIMEOUT", "30")  # a fresh attempt: no lock or partial file in the way
    assert sha256_of(resolve_weights(tiny_card(sha), weights_dir=tmp_path)) == sha


def test_import_is_light():
    code = "import sys, afiqa.runtime.weights; print(sorted({'huggingface_hub', 'keras', 'tensorflow'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_saved_weights_are_compressed_deterministic_and_load_to_the_same_values(tmp_path):
    import keras
    import numpy as np

    from afiqa.runtime.weights import save_weights

    def mlp():
        return keras.Sequential([keras.Input((64,)), keras.layers.Dense(256), keras.layers.Dense(1)])

    keras.utils.set_random_seed(0)
    model = mlp()
    plain = tmp_path / "plain.weights.h5"
    model.save_weights(plain)
    a, b = save_weights(model, tmp_path / "a.weights.h5"), save_weights(model, tmp_path / "b.weights.h5")
    assert sha256_of(a) == sha256_of(b)  # no timestamps: the same weights, the same file
    assert a.stat().st_size < plain.stat().st_size
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.weights.h5", "b.weights.h5", "plain.weights.h5"]
    again = mlp()
    again.load_weights(a)
    for w, v in zip(model.get_weights(), again.get_weights(), strict=True):
        np.testing.assert_array_equal(w, v)


def test_a_hub_that_holds_the_head_meets_the_overall_deadline(monkeypatch, tmp_path, sha, weights_bytes):
    monkeypatch.setenv("AFIQA_HUB_TIMEOUT", "1")  # the HEAD's own timeout (3 s) is longer
    with HubServer(delay=10) as slow:
        slow.add(REPO, FILE, weights_bytes)
        monkeypatch.setenv("HF_ENDPOINT", slow.url)
        start = time.monotonic()
        with pytest.raises(WeightsError, match=r"the Hub did not answer within 1 s \(AFIQA_HUB_TIMEOUT\)"):
            resolve_weights(tiny_card(sha), weights_dir=tmp_path)
        assert time.monotonic() - start < 3
