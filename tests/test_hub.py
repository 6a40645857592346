"""The real Hugging Face Hub client against a fake Hub on 127.0.0.1: downloads, bad bytes,
repair of a damaged cache, HTTP errors. Nothing leaves this machine."""

from __future__ import annotations

import hashlib
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import huggingface_hub
import pytest
import torch
from huggingface_hub import constants

from colorize_cli.weights import (
    HashMismatchError,
    ModelEntry,
    WeightsNotFoundError,
    download,
    resolve_weights,
    save_model_file,
    sha256_file,
)

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FakeHub:
    """Serves one file at /{org}/{name}/resolve/{revision}/{filename} with the headers
    hf_hub_download reads. `mode` picks the answer: "good", "wrong" (other bytes under the good
    file's size and etag), "get500" (HEAD fine, GET fails), "gated" (403 GatedRepo)."""

    def __init__(self, payload: bytes):
        self.payload, self.mode, self.gets = payload, "good", 0
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_HEAD(self):
                hub.answer(self, head=True)

            def do_GET(self):
                hub.answer(self, head=False)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, handler: BaseHTTPRequestHandler, head: bool) -> None:
        if not re.fullmatch(r"/[^/]+/[^/]+/resolve/[^/]+/.+", handler.path.split("?")[0]):
            return self.send(handler, 404, {"X-Error-Code": "RepoNotFound"}, b"", head)
        if self.mode == "gated":
            return self.send(handler, 403, {"X-Error-Code": "GatedRepo",
                                            "X-Error-Message": "Access to this model is restricted."}, b"", head)
        etag = hashlib.sha256(self.payload).hexdigest()
        meta = {"X-Repo-Commit": COMMIT, "ETag": f'"{etag}"', "X-Linked-Etag": f'"{etag}"',
                "X-Linked-Size": str(len(self.payload))}
        if head:
            return self.send(handler, 200, meta, self.payload, head)
        self.gets += 1
        if self.mode == "get500":
            return self.send(handler, 500, {}, b"internal error", head)
        body = self.payload[:-1] + bytes([self.payload[-1] ^ 1]) if self.mode == "wrong" else self.payload
        self.send(handler, 200, meta, body, head)

    @staticmethod
    def send(handler, code: int, headers: dict, body: bytes, head: bool) -> None:
        handler.send_response(code)
        for key, value in {"Content-Length": str(len(body)), **headers}.items():
            handler.send_header(key, value)
        handler.end_headers()
        if not head:
            handler.wfile.write(body)


@pytest.fixture
def hub(tmp_path, monkeypatch):
    weights = save_model_file(tmp_path / "published.safetensors",
                              {"conv.weight": torch.randn(4, 1, 3, 3), "conv.bias": torch.zeros(4)},
                              {"architecture": "unet", "channels": 4})
    fake = FakeHub(weights.read_bytes())
    # A runner's HTTP(S)_PROXY would send the requests for 127.0.0.1 to its proxy. The hub client
    # keeps one HTTP client, which reads the proxies when made: a fresh one now, and after.
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    close_session = getattr(huggingface_hub, "close_session", lambda: None)  # (requests-based versions: none)
    close_session()
    monkeypatch.setattr(constants, "ENDPOINT", fake.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", fake.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True, raising=False)
    fake.sha256 = sha256_file(weights)
    yield fake
    fake.server.shutdown()
    close_session()


def entry(sha256: str) -> ModelEntry:
    return ModelEntry(name="tiny", architecture="unet", description="d", licence="MIT", default_sampler="oneshot",
                      default_steps=1, size=32, params=0, file=None, repo="test-org/tiny", revision=COMMIT,
                      filename="tiny.safetensors", sha256=sha256)


def blobs(cache: Path) -> list[Path]:
    return sorted((cache / "models--test-org--tiny" / "blobs").glob("*"))


def test_a_download_is_checked_cached_and_then_used_without_the_hub(hub, tmp_path):
    cache = tmp_path / "cache"
    got = download(entry(hub.sha256), cache_dir=cache)
    assert got.source == "hub" and sha256_file(got.path) == hub.sha256 and hub.gets == 1
    again = resolve_weights(entry(hub.sha256), cache_dir=cache)
    assert again.source == "hf-cache" and again.path == got.path and hub.gets == 1


def test_wrong_bytes_from_the_hub_are_refused_and_not_kept(hub, tmp_path):
    cache = tmp_path / "cache"
    hub.mode = "wrong"
    with pytest.raises(HashMismatchError, match="not kept"):
        download(entry(hub.sha256), cache_dir=cache)
    assert blobs(cache) == []  # nothing left that a later run could trust
    hub.mode = "good"
    assert sha256_file(download(entry(hub.sha256), cache_dir=cache).path) == hub.sha256


def test_a_damaged_cached_copy_is_replaced_by_a_fresh_download(hub, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    path = download(entry(hub.sha256), cache_dir=cache).path
    blob = path.resolve()
    blob.write_bytes(blob.read_bytes()[:-1] + b"\0")  # one byte changed on disk
    # Offline, nothing can repair it: refused, with the command that does.
    with pytest.raises(HashMismatchError, match="colorize models download tiny"):
        resolve_weights(entry(hub.sha256), cache_dir=cache, local_files_only=True)
    assert hub.gets == 1
    repaired = download(entry(hub.sha256), cache_dir=cache)
    assert hub.gets == 2 and sha256_file(repaired.path) == hub.sha256
    # Colouring (downloads allowed) repairs it as well.
    repaired.path.resolve().write_bytes(b"\0" * 64)
    assert sha256_file(resolve_weights(entry(hub.sha256), cache_dir=cache).path) == hub.sha256
    assert hub.gets == 3 and len(blobs(cache)) == 1


@pytest.mark.parametrize("mode, message", [("get500", r"HTTP 500"), ("gated", r"is gated")])
def test_hub_errors_are_one_line_that_says_what_happened(hub, tmp_path, mode, message):
    hub.mode = mode
    with pytest.raises(WeightsNotFoundError, match=message) as excinfo:
        download(entry(hub.sha256), cache_dir=tmp_path / "cache")
    assert "\n" not in str(excinfo.value)


def test_a_damaged_cached_copy_offline_is_refused_and_kept_and_a_failed_refetch_says_so(hub, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    path = download(entry(hub.sha256), cache_dir=cache).path
    blob = path.resolve()
    blob.write_bytes(blob.read_bytes()[:-1] + b"\0")  # one byte changed on disk
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # HF_HUB_OFFLINE=1: nothing can be fetched
    with pytest.raises(HashMismatchError, match=r"colorize models download tiny. .*once this machine is online"):
        resolve_weights(entry(hub.sha256), cache_dir=cache)
    with pytest.raises(HashMismatchError, match="once this machine is online"):  # no advice that leads in a circle
        download(entry(hub.sha256), cache_dir=cache)
    assert len(blobs(cache)) == 1 and hub.gets == 1  # left for `models download` to replace online
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    hub.mode = "get500"  # online, but the Hub fails: the damaged copy is gone, and the message says so
    with pytest.raises(WeightsNotFoundError, match="was damaged .* and was removed; fetching it again failed"):
        resolve_weights(entry(hub.sha256), cache_dir=cache)
    assert blobs(cache) == []


def test_a_model_both_bundled_and_published_is_not_downloaded_again(hub, tmp_path, monkeypatch):
    """`models download` of a model that ships with the package: the bundled copy, checked; no fetch
    (offline, the Hub could not be reached at all)."""
    import dataclasses

    from colorize_cli import weights as weights_module

    bundled = tmp_path / "bundled"
    bundled.mkdir()
    (bundled / "tiny.safetensors").write_bytes((tmp_path / "published.safetensors").read_bytes())
    monkeypatch.setattr(weights_module, "bundled_dir", lambda: bundled)
    both = dataclasses.replace(entry(hub.sha256), file="tiny.safetensors")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    resolved = download(both, cache_dir=tmp_path / "cache")
    assert resolved.source == "bundled" and hub.gets == 0


def test_a_token_file_the_client_cannot_read_is_named_not_blamed_on_the_cache(hub, tmp_path, monkeypatch):
    from colorize_cli.weights import WeightsError

    token_path = tmp_path / "token"
    token_path.mkdir()  # HF_TOKEN_PATH naming a folder: the client's read fails with an OSError
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(token_path))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(WeightsError) as caught:
        download(entry(hub.sha256), cache_dir=tmp_path / "cache")
    assert "cache" not in str(caught.value).lower() and str(token_path) in str(caught.value)
