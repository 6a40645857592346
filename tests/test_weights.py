"""Registry, weight resolution and safetensors I/O; offline, CPU, tiny files."""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
import socket
import stat
import sys
from pathlib import Path

import huggingface_hub
import pytest
import torch
from huggingface_hub.utils import EntryNotFoundError, LocalEntryNotFoundError, OfflineModeIsEnabled
from safetensors import safe_open
from safetensors.torch import save_file

from colorize_cli import weights
from colorize_cli.weights import (
    ARCHITECTURES,
    ArchitectureMismatchError,
    HashMismatchError,
    ModelEntry,
    RegistryError,
    UnknownModelError,
    UnsafeWeightsError,
    WeightsError,
    WeightsNotFoundError,
    download,
    load_model_file,
    load_registry,
    locate_weights,
    read_config,
    read_metadata,
    registry_path,
    resolve_weights,
    save_model_file,
    sha256_file,
    verify,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No test may reach the network: offline mode for the hub client, and sockets refuse."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def refuse(*args, **kwargs):
        raise OSError("network access is disabled in tests")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.fixture
def bundled(tmp_path, monkeypatch) -> Path:
    directory = tmp_path / "bundled"
    directory.mkdir()
    monkeypatch.setattr(weights, "bundled_dir", lambda: directory)
    return directory


@pytest.fixture
def cache_dir(tmp_path) -> Path:
    directory = tmp_path / "hf-cache"
    directory.mkdir()
    return directory


def make_entry(**overrides) -> ModelEntry:
    fields = dict(
        name="tiny",
        architecture="unet",
        description="test model",
        licence="MIT",
        default_sampler="oneshot",
        default_steps=1,
        size=32,
        params=0,
        file="tiny.safetensors",
        repo="test-org/tiny",
        revision="main",
        filename="tiny.safetensors",
        sha256=None,
    )
    return ModelEntry(**{**fields, **overrides})


def make_weights(path: Path, architecture: str = "unet", seed: int = 0) -> Path:
    """A tiny valid colorize weights file; `seed` makes files with different hashes."""
    generator = torch.Generator().manual_seed(seed)
    state = {"conv.weight": torch.randn(4, 1, 3, 3, generator=generator), "conv.bias": torch.zeros(4)}
    return save_model_file(path, state, {"architecture": architecture, "channels": 4})


def add_to_fake_hub_cache(
    cache_dir: Path, repo: str, filename: str, source: Path, *, revision: str = "main", symlink: bool = True
) -> Path:
    """Lay `source` out the way huggingface_hub's cache does:
    models--ORG--NAME/{blobs/<sha>, refs/<revision>, snapshots/<commit>/<filename>}."""
    repo_dir = cache_dir / f"models--{repo.replace('/', '--')}"
    blob = repo_dir / "blobs" / sha256_file(source)
    blob.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, blob)
    if revision != COMMIT:  # a branch name resolves through refs/; a commit hash directly
        ref = repo_dir / "refs" / revision
        ref.parent.mkdir(parents=True, exist_ok=True)
        ref.write_text(COMMIT)
    snapshot = repo_dir / "snapshots" / COMMIT / filename
    snapshot.parent.mkdir(parents=True, exist_ok=True)
    snapshot.unlink(missing_ok=True)  # re-adding replaces, as a fresh download would
    if symlink:
        snapshot.symlink_to(Path("..", "..", "blobs", blob.name))
    else:
        shutil.copyfile(source, snapshot)
    return snapshot


# ------------------------------------------------------------------------------------------
# Registry


def test_real_registry_parses_with_every_field():
    registry = load_registry()
    assert set(registry.names) == {"lab-ddpm", "latent-cold", "unet", "unet-gan"}
    assert registry.default in registry.names
    for name, entry in registry.models.items():
        assert entry.name == name
        assert entry.architecture in ARCHITECTURES
        assert entry.description and entry.licence and entry.default_sampler
        assert entry.default_steps >= 1 and entry.size >= 1 and entry.params >= 0
        if entry.repo is not None:  # published on the Hub: pinned and named
            assert entry.revision and entry.filename.endswith(".safetensors")
        assert entry.sha256 is None or len(entry.sha256) == 64
    # The first run needs no network: the default model ships inside the package, hash-checked.
    default = registry.get(registry.default)
    assert default.file is not None and default.sha256 is not None


def test_every_bundled_model_verifies_loads_and_matches_its_entry():
    from colorize_cli.models import build_model
    from colorize_cli.weights import verify

    registry = load_registry()
    bundled = [entry for entry in registry.models.values() if entry.file is not None]
    assert registry.get(registry.default) in bundled
    for entry in bundled:
        result = verify(entry)
        assert result.ok and result.source == "bundled" and result.hash_status == "ok", (entry.name, result.problem)
        state, config = load_model_file(result.path, expected_architecture=entry.architecture)
        model = build_model(config)
        model.load_state_dict(state)  # every tensor present, every shape right
        assert entry.params == sum(p.numel() for p in model.parameters()), entry.name


def test_package_registry_is_the_top_level_file():
    path = registry_path()
    assert path == Path(weights.__file__).parent / "weights.toml"
    top_level = REPO_ROOT / "weights.toml"
    if top_level.exists():  # a checkout, not an installed wheel
        assert path.read_bytes() == top_level.read_bytes()


def test_unknown_model_error_lists_known_names():
    registry = load_registry()
    with pytest.raises(UnknownModelError) as excinfo:
        registry.get("no-such-model")
    message = str(excinfo.value)
    assert "no-such-model" in message
    for name in registry.names:
        assert name in message


GOOD_TOML = """
default = "tiny"
[models.tiny]
architecture = "unet"
description = "d"
licence = "MIT"
default_sampler = "oneshot"
default_steps = 1
size = 32
params = 0
repo = "test-org/tiny"
revision = "main"
filename = "tiny.safetensors"
sha256 = "%s"
""" % ("ab" * 32)


def test_custom_registry_path_parses(tmp_path):
    path = tmp_path / "weights.toml"
    path.write_text(GOOD_TOML)
    entry = load_registry(path).get("tiny")
    assert entry.sha256 == "ab" * 32 and entry.repo == "test-org/tiny"
    assert entry.file is None
    # Without a repo, "" means no hash yet (a bundled file in development).
    local = GOOD_TOML.replace('repo = "test-org/tiny"\nrevision = "main"\nfilename = "tiny.safetensors"\n', "")
    path.write_text(local.replace('sha256 = "%s"' % ("ab" * 32), 'sha256 = ""'))
    assert load_registry(path).get("tiny").sha256 is None


@pytest.mark.parametrize(
    "old, new, complaint",
    [
        ('architecture = "unet"', 'architecture = "gan"', "architecture"),
        ('licence = "MIT"\n', "", "licence"),
        ('licence = "MIT"', 'license = "MIT"', "unknown fields"),
        ("size = 32", 'size = "32"', "size"),
        ('sha256 = "%s"' % ("ab" * 32), 'sha256 = "abc"', "sha256"),
        ('sha256 = "%s"' % ("ab" * 32), 'sha256 = ""', "no sha256 to check its download"),
        ('filename = "tiny.safetensors"', 'filename = "tiny.bin"', "not a .safetensors file"),
        ('default = "tiny"', 'default = "other"', "default"),
        ('repo = "test-org/tiny"', 'repo = "../tiny"', "repo"),
        ('filename = "tiny.safetensors"\n', 'file = "../../etc/x.safetensors"\n', "file"),
    ],
)
def test_malformed_registry_is_rejected(tmp_path, old, new, complaint):
    assert old in GOOD_TOML
    path = tmp_path / "weights.toml"
    path.write_text(GOOD_TOML.replace(old, new))
    with pytest.raises(RegistryError, match=complaint):
        load_registry(path)


# ------------------------------------------------------------------------------------------
# Resolution


def test_resolution_order_file_then_bundled_then_cache(tmp_path, bundled, cache_dir):
    entry = make_entry()
    user_file = make_weights(tmp_path / "mine.safetensors", seed=1)
    bundled_file = make_weights(bundled / entry.file, seed=2)
    cached_file = add_to_fake_hub_cache(
        cache_dir, entry.repo, entry.filename, make_weights(tmp_path / "published.safetensors", seed=3)
    )
    kwargs = dict(cache_dir=cache_dir, allow_download=False, local_files_only=True)

    chosen = resolve_weights(entry, weights_path=user_file, **kwargs)
    assert (chosen.source, chosen.path) == ("file", user_file)

    chosen = resolve_weights(entry, **kwargs)
    assert (chosen.source, chosen.path) == ("bundled", bundled_file)

    bundled_file.unlink()
    chosen = resolve_weights(entry, **kwargs)
    assert (chosen.source, chosen.path) == ("hf-cache", cached_file)


@pytest.mark.parametrize("symlink", [True, False])
@pytest.mark.parametrize("revision", ["main", COMMIT])
def test_fake_hub_cache_resolves(tmp_path, bundled, cache_dir, symlink, revision):
    published = make_weights(tmp_path / "published.safetensors")
    entry = make_entry(revision=revision, sha256=sha256_file(published))
    add_to_fake_hub_cache(cache_dir, entry.repo, entry.filename, published, revision=revision, symlink=symlink)

    chosen = resolve_weights(entry, cache_dir=cache_dir, allow_download=False)
    assert chosen.source == "hf-cache"
    assert cache_dir in chosen.path.parents
    assert chosen.path.read_bytes() == published.read_bytes()


@pytest.mark.parametrize(
    "options, reason", [({"allow_download": False}, "disabled"), ({"local_files_only": True}, "offline")]
)
def test_nothing_available_says_how_to_get_weights(bundled, cache_dir, monkeypatch, options, reason):
    calls = []
    real_download = huggingface_hub.hf_hub_download

    def recording_download(*args, **kwargs):
        calls.append(kwargs["local_files_only"])
        return real_download(*args, **kwargs)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", recording_download)
    with pytest.raises(WeightsNotFoundError) as excinfo:
        resolve_weights(make_entry(), cache_dir=cache_dir, **options)
    message = str(excinfo.value)
    assert "colorize models download tiny" in message
    assert "--weights PATH" in message
    assert reason in message
    assert calls == [True]  # looked in the cache, never tried the Hub


def test_unpublished_model_only_suggests_weights_path(bundled, cache_dir):
    entry = make_entry(file=None, repo=None, revision=None, filename=None)
    with pytest.raises(WeightsNotFoundError) as excinfo:
        resolve_weights(entry, cache_dir=cache_dir)
    assert "--weights PATH" in str(excinfo.value)
    assert "models download" not in str(excinfo.value)


def test_locate_weights_is_none_when_absent_and_finds_the_cache(tmp_path, bundled, cache_dir):
    entry = make_entry()
    assert locate_weights(entry, cache_dir=cache_dir) is None
    cached = add_to_fake_hub_cache(cache_dir, entry.repo, entry.filename, make_weights(tmp_path / "p.safetensors"))
    assert locate_weights(entry, cache_dir=cache_dir).path == cached


def test_missing_weights_path_is_not_found(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        resolve_weights(None, weights_path=tmp_path / "absent.safetensors")


def fake_hub(monkeypatch, remote):
    """Replace hf_hub_download: every cache lookup misses; a download calls `remote`."""

    def fake_download(repo_id, filename, **kwargs):
        if kwargs["local_files_only"]:
            raise LocalEntryNotFoundError("not in the cache")
        return remote(repo_id, filename, **kwargs)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)


@pytest.mark.parametrize(
    "error",
    [
        OfflineModeIsEnabled("offline mode"),
        LocalEntryNotFoundError("cannot reach the Hub and not cached"),
        EntryNotFoundError("no such file in the repo"),
        ConnectionError("connection reset"),
    ],
)
def test_hub_errors_become_weights_not_found(bundled, cache_dir, monkeypatch, error):
    def failing(*args, **kwargs):
        raise error

    fake_hub(monkeypatch, failing)
    with pytest.raises(WeightsNotFoundError, match="colorize models download tiny") as excinfo:
        resolve_weights(make_entry(), cache_dir=cache_dir)
    assert excinfo.value.__cause__ is error
    with pytest.raises(WeightsNotFoundError, match="colorize models download tiny"):
        download(make_entry(), cache_dir=cache_dir)


def test_hub_download_is_hash_checked(tmp_path, bundled, cache_dir, monkeypatch):
    published = make_weights(tmp_path / "published.safetensors")

    def serve(repo_id, filename, *, revision, cache_dir, local_files_only):
        return str(add_to_fake_hub_cache(Path(cache_dir), repo_id, filename, published, revision=revision))

    fake_hub(monkeypatch, serve)
    good = make_entry(sha256=sha256_file(published))
    chosen = resolve_weights(good, cache_dir=cache_dir)
    assert chosen.source == "hub"
    assert download(good, cache_dir=cache_dir).path == chosen.path

    shutil.rmtree(cache_dir / "models--test-org--tiny")
    with pytest.raises(HashMismatchError):
        resolve_weights(make_entry(sha256="f" * 64), cache_dir=cache_dir)


def test_a_download_of_another_architecture_is_refused(tmp_path, bundled, cache_dir, monkeypatch):
    published = make_weights(tmp_path / "published.safetensors", architecture="lab-ddpm")

    def serve(repo_id, filename, *, revision, cache_dir, local_files_only):
        return str(add_to_fake_hub_cache(Path(cache_dir), repo_id, filename, published, revision=revision))

    fake_hub(monkeypatch, serve)
    with pytest.raises(WeightsError, match="lab-ddpm"):
        download(make_entry(sha256=sha256_file(published)), cache_dir=cache_dir)


# ------------------------------------------------------------------------------------------
# Hashes


def test_sha256_file_matches_hashlib(tmp_path):
    path = tmp_path / "data"
    path.write_bytes(b"x" * 3_000_001)  # spans several chunks
    assert sha256_file(path, chunk_bytes=1 << 16) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_cache_hash_mismatch_raises_and_correct_hash_passes(tmp_path, bundled, cache_dir):
    published = make_weights(tmp_path / "published.safetensors")
    cached = add_to_fake_hub_cache(cache_dir, "test-org/tiny", "tiny.safetensors", published)
    actual = sha256_file(published)

    wrong = "0" * 64
    with pytest.raises(HashMismatchError) as excinfo:
        resolve_weights(make_entry(sha256=wrong), cache_dir=cache_dir, allow_download=False)
    assert (excinfo.value.expected, excinfo.value.actual) == (wrong, actual)
    assert str(cached) in str(excinfo.value)

    chosen = resolve_weights(make_entry(sha256=actual.upper()), cache_dir=cache_dir, allow_download=False)
    assert chosen.source == "hf-cache"


def test_bundled_hash_is_checked(bundled, cache_dir):
    make_weights(bundled / "tiny.safetensors")
    with pytest.raises(HashMismatchError):
        resolve_weights(make_entry(sha256="0" * 64), cache_dir=cache_dir, allow_download=False)


def test_weights_path_skips_the_registry_hash(tmp_path, bundled):
    user_file = make_weights(tmp_path / "mine.safetensors")
    chosen = resolve_weights(make_entry(sha256="0" * 64), weights_path=user_file)
    assert chosen.source == "file"


# ------------------------------------------------------------------------------------------
# Refusing anything that is not safetensors


def write_torch_zip(path):
    torch.save({"w": torch.zeros(2)}, path)


def write_pickle(path):
    path.write_bytes(pickle.dumps({"w": [0.0, 0.0]}, protocol=0))  # no \x80 magic: caught by the header check


def write_text(path):
    path.write_text("definitely not weights")


def write_empty(path):
    path.write_bytes(b"")


def write_oversized_header_length(path):
    path.write_bytes((10**6).to_bytes(8, "little") + b"{}")


@pytest.mark.parametrize(
    "writer", [write_torch_zip, write_pickle, write_text, write_empty, write_oversized_header_length]
)
def test_non_safetensors_renamed_safetensors_is_refused(tmp_path, writer):
    path = tmp_path / "model.safetensors"
    writer(path)
    with pytest.raises(UnsafeWeightsError):
        resolve_weights(None, weights_path=path)
    with pytest.raises(UnsafeWeightsError):
        load_model_file(path)
    with pytest.raises(UnsafeWeightsError):
        read_metadata(path)


def test_pickle_magic_is_named_but_a_header_of_128_plus_256k_bytes_is_safetensors(tmp_path):
    """0x80 opens a pickle (protocol >= 2), and also the length of some safetensors headers."""
    pickled = tmp_path / "p.safetensors"
    pickled.write_bytes(pickle.dumps({"w": [0.0]}, protocol=4))
    with pytest.raises(UnsafeWeightsError, match="pickle"):
        load_model_file(pickled)
    for pad in range(256):
        path = save_model_file(tmp_path / "m.safetensors", {"w": torch.ones(3)}, {"architecture": "unet", "n": "x" * pad})
        if path.read_bytes()[0] == 0x80:
            break
    else:
        pytest.fail("no padding gave a header length of 128 mod 256")
    assert load_model_file(path)[1]["n"] == "x" * pad


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin", ".ckpt"])
def test_pickle_suffix_is_refused_even_with_safetensors_content(tmp_path, suffix):
    path = tmp_path / f"model{suffix}"
    shutil.copyfile(make_weights(tmp_path / "real.safetensors"), path)
    with pytest.raises(UnsafeWeightsError, match="pickle"):
        resolve_weights(None, weights_path=path)
    with pytest.raises(UnsafeWeightsError, match="pickle"):
        load_model_file(path)


# ------------------------------------------------------------------------------------------
# Safetensors I/O


def test_config_round_trips_through_metadata(tmp_path):
    config = {"architecture": "lab-ddpm", "channels": [64, 128], "attention": True, "schedule": "cosine"}
    path = save_model_file(tmp_path / "m.safetensors", {"w": torch.ones(3)}, config)

    metadata = read_metadata(path)
    assert metadata["colorize.format"] == "1"
    assert json.loads(metadata["colorize.config"]) == config
    assert read_config(path) == config
    assert load_model_file(path, expected_architecture="lab-ddpm")[1] == config


def test_saved_as_float16_loaded_as_float32_integers_kept(tmp_path):
    weight = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    state = {
        "w": weight,
        "steps": torch.tensor(7, dtype=torch.int64),
        "index": torch.arange(5, dtype=torch.int32),
    }
    path = save_model_file(tmp_path / "m.safetensors", state, {"architecture": "unet"})

    with safe_open(str(path), framework="pt") as f:
        assert f.get_tensor("w").dtype == torch.float16
        assert f.get_tensor("steps").dtype == torch.int64
        assert f.get_tensor("index").dtype == torch.int32

    loaded, _ = load_model_file(path)
    assert loaded["w"].dtype == torch.float32
    torch.testing.assert_close(loaded["w"], weight, rtol=1e-3, atol=1e-3)
    assert loaded["steps"].dtype == torch.int64 and loaded["steps"].item() == 7
    assert torch.equal(loaded["index"], state["index"])


def test_tied_and_non_contiguous_tensors_save(tmp_path):
    shared = torch.randn(4, 6)
    state = {"a": shared, "b": shared, "t": shared.t()}
    path = save_model_file(tmp_path / "m.safetensors", state, {"architecture": "unet"})
    loaded, _ = load_model_file(path)
    torch.testing.assert_close(loaded["t"], shared.t(), rtol=1e-3, atol=1e-3)


def test_float16_overflow_is_refused(tmp_path):
    with pytest.raises(ValueError, match="overflows"):
        save_model_file(tmp_path / "m.safetensors", {"big": torch.tensor([1e6])}, {"architecture": "unet"})
    saved = save_model_file(
        tmp_path / "m.safetensors", {"big": torch.tensor([1e6])}, {"architecture": "unet"}, dtype=torch.float32
    )
    assert load_model_file(saved)[0]["big"].item() == 1e6


def test_architecture_mismatch(tmp_path):
    path = make_weights(tmp_path / "m.safetensors", architecture="unet")
    with pytest.raises(ArchitectureMismatchError) as excinfo:
        load_model_file(path, expected_architecture="lab-ddpm")
    assert "unet" in str(excinfo.value) and "lab-ddpm" in str(excinfo.value)
    assert load_model_file(path, expected_architecture="unet")[1]["architecture"] == "unet"


def test_file_without_config_names_the_file(tmp_path):
    path = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(WeightsError, match="foreign.safetensors"):
        load_model_file(path)


def test_save_is_atomic(tmp_path, monkeypatch):
    import safetensors.torch

    path = make_weights(tmp_path / "m.safetensors", seed=1)
    before = path.read_bytes()

    def crash_midway(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", crash_midway)
    with pytest.raises(OSError, match="disk full"):
        make_weights(path, seed=2)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]  # no temp file left


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_saved_file_gets_the_usual_new_file_mode(tmp_path):
    reference = tmp_path / "reference"
    reference.touch()
    path = make_weights(tmp_path / "m.safetensors")
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(reference.stat().st_mode)


def test_save_rejects_config_without_known_architecture(tmp_path):
    with pytest.raises(ValueError, match="architecture"):
        save_model_file(tmp_path / "m.safetensors", {"w": torch.zeros(1)}, {"channels": 4})


# ------------------------------------------------------------------------------------------
# verify


def test_verify_reports_hash_status(tmp_path, bundled, cache_dir):
    from conftest import make_tiny_weights

    published = make_tiny_weights(tmp_path / "published.safetensors", "unet")  # verify builds the model
    add_to_fake_hub_cache(cache_dir, "test-org/tiny", "tiny.safetensors", published)
    actual = sha256_file(published)

    ok = verify(make_entry(sha256=actual), cache_dir=cache_dir)
    assert (ok.resolved, ok.source, ok.hash_status, ok.ok) == (True, "hf-cache", "ok", True)

    unknown = verify(make_entry(), cache_dir=cache_dir)
    assert (unknown.hash_status, unknown.actual_sha256, unknown.ok) == ("unknown", actual, True)

    bad = verify(make_entry(sha256="0" * 64), cache_dir=cache_dir)
    assert (bad.hash_status, bad.ok) == ("mismatch", False)
    assert "sha256 mismatch" in bad.problem

    wrong_model = verify(make_entry(architecture="lab-ddpm"), cache_dir=cache_dir)
    assert not wrong_model.ok and "lab-ddpm" in wrong_model.problem

    not_a_model = make_weights(tmp_path / "other.safetensors")  # the right architecture name, wrong tensors
    shutil.rmtree(cache_dir / "models--test-org--tiny")
    add_to_fake_hub_cache(cache_dir, "test-org/tiny", "tiny.safetensors", not_a_model)
    broken = verify(make_entry(sha256=sha256_file(not_a_model)), cache_dir=cache_dir)
    assert (broken.hash_status, broken.ok) == ("ok", False) and "can load" in broken.problem


def test_a_cache_entry_that_is_not_a_file_is_a_weights_error(tmp_path, bundled, cache_dir):
    published = make_weights(tmp_path / "published.safetensors")
    cached = add_to_fake_hub_cache(cache_dir, "test-org/tiny", "tiny.safetensors", published, symlink=False)
    cached.unlink()
    cached.mkdir()
    with pytest.raises(WeightsError, match="not a regular file.*colorize models download tiny"):
        resolve_weights(make_entry(), cache_dir=cache_dir, allow_download=False)
    result = verify(make_entry(), cache_dir=cache_dir)
    # Found but unusable: a failure (counted by `models verify`), not "missing".
    assert result.resolved and not result.ok and "not a regular file" in result.problem


def test_verify_missing_weights(bundled, cache_dir):
    result = verify(make_entry(), cache_dir=cache_dir)
    assert (result.resolved, result.hash_status, result.ok) == (False, "unknown", False)
    assert "colorize models download tiny" in result.problem


def test_a_file_whose_config_cannot_be_used_is_refused_at_load_and_named(tmp_path):
    """A saturation that is not a number, an integer of thousands of digits, an unknown prediction:
    a weights error naming the file when it loads (not a bug report, not a failure at the first photo)."""
    from colorize_cli.pipeline import Engine
    from conftest import make_tiny_weights

    source = make_tiny_weights(tmp_path / "ddpm.safetensors", "lab-ddpm")
    with safe_open(str(source), "pt") as f:
        metadata, tensors = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
    config = json.loads(metadata["colorize.config"])
    variants = {"saturation": json.dumps(dict(config, saturation="2")),
                "null": json.dumps(dict(config, saturation=None)),
                "digits": json.dumps(dict(config, size=1)).replace('"size": 1', '"size": ' + "9" * 5000),
                "prediction": json.dumps(dict(config, prediction="bogus"))}
    for name, text in variants.items():
        path = tmp_path / f"{name}.safetensors"
        save_file(tensors, str(path), metadata=dict(metadata, **{"colorize.config": text}))
        with pytest.raises(WeightsError, match=f"{name}.safetensors"):
            Engine.load(weights=path, device="cpu")


# ------------------------------------------------------------------------------------------
# Damaged cache entries, odd places and narrow terminals (adversarial review)


def cache_then_hub(monkeypatch, published: Path):
    """hf_hub_download as the real client behaves for a pinned revision: a cache look-up finds
    whatever the cache holds, a download lays `published` out in the cache. Returns the calls."""
    real_download = huggingface_hub.hf_hub_download
    downloads = []

    def fake_download(repo_id, filename, *, revision, cache_dir, local_files_only, **kwargs):
        try:
            return real_download(repo_id, filename, revision=revision, cache_dir=cache_dir, local_files_only=True)
        except LocalEntryNotFoundError:
            if local_files_only:
                raise
        downloads.append(filename)
        repo_blob = Path(cache_dir) / f"models--{repo_id.replace('/', '--')}" / "blobs" / sha256_file(published)
        if repo_blob.exists():  # as the client does: a blob already there is linked again, not fetched
            snapshot = Path(cache_dir) / f"models--{repo_id.replace('/', '--')}" / "snapshots" / COMMIT / filename
            snapshot.symlink_to(Path("..", "..", "blobs", repo_blob.name))
            return str(snapshot)
        return str(add_to_fake_hub_cache(Path(cache_dir), repo_id, filename, published, revision=revision))

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # online, to this fake Hub
    return downloads


@pytest.mark.parametrize("target", ["folder", "file", "shared store"])
def test_repairing_a_cache_entry_never_deletes_what_a_link_there_points_to(tmp_path, bundled, cache_dir,
                                                                         monkeypatch, target):
    """A snapshot entry linked to the user's own folder or file (outside the cache) that fails the
    checks: the link goes, what it points to stays. A damaged blob in the cache-wide store of
    huggingface_hub (CACHE/blobs/, linked from the repo's blobs/) is inside the cache: it goes."""
    published = make_weights(tmp_path / "published.safetensors")
    entry = make_entry(revision=COMMIT, sha256=sha256_file(published))
    snapshot = add_to_fake_hub_cache(cache_dir, entry.repo, entry.filename, published, revision=COMMIT)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.txt").write_text("years of work")
    other = make_weights(mine / "other.safetensors", seed=1)  # a model, but not the published one
    if target == "shared store":
        repo_blob = snapshot.resolve()
        store = cache_dir / "blobs" / repo_blob.name[:2] / ("e" * 64)
        store.parent.mkdir(parents=True)
        store.write_bytes(repo_blob.read_bytes()[:-1] + b"\0")  # damaged
        repo_blob.unlink()
        repo_blob.symlink_to(Path("..", "..", "blobs", store.parent.name, store.name))
    else:
        snapshot.unlink()
        snapshot.symlink_to(mine if target == "folder" else other)
    downloads = cache_then_hub(monkeypatch, published)

    chosen = resolve_weights(entry, cache_dir=cache_dir)  # online: the damaged entry is fetched again
    assert downloads and sha256_file(chosen.path) == entry.sha256
    assert (mine / "thesis.txt").read_text() == "years of work" and other.is_file()


def test_a_damaged_copy_in_a_read_only_cache_is_not_blamed_on_the_hub(tmp_path, bundled, cache_dir, monkeypatch):
    """The entry cannot be removed, so the client would hand it back as the "download": the message
    says what is wrong (a damaged cached copy that cannot be removed), not that the Hub sent bad bytes."""
    published = make_weights(tmp_path / "published.safetensors")
    entry = make_entry(revision=COMMIT, sha256=sha256_file(published))
    snapshot = add_to_fake_hub_cache(cache_dir, entry.repo, entry.filename, published, revision=COMMIT)
    blob = snapshot.resolve()
    blob.write_bytes(blob.read_bytes()[:-1] + b"\0")
    downloads = cache_then_hub(monkeypatch, published)
    real_unlink = Path.unlink

    def read_only(self, missing_ok=False):
        if cache_dir in self.parents:
            raise PermissionError(13, "Permission denied", str(self))
        return real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", read_only)
    with pytest.raises(HashMismatchError, match="cannot be removed from the Hugging Face cache .Permission") as e:
        resolve_weights(entry, cache_dir=cache_dir)
    assert "HF_HUB_CACHE" in str(e.value) and "Hub served" not in str(e.value)


def test_a_damaged_registry_file_is_reported_by_its_hash_with_what_to_do(tmp_path, bundled, cache_dir):
    """Truncated, zero bytes: no longer a valid safetensors file either, but the hash says what
    happened and the advice says what to do (reinstall; download again)."""
    good = make_weights(bundled / "tiny.safetensors")
    entry = make_entry(sha256=sha256_file(good))
    good.write_bytes(good.read_bytes()[:100])
    with pytest.raises(HashMismatchError, match="reinstall colorize"):
        resolve_weights(entry, cache_dir=cache_dir, allow_download=False)
    good.unlink()
    cached = add_to_fake_hub_cache(cache_dir, entry.repo, entry.filename, make_weights(tmp_path / "p.safetensors"))
    cached.resolve().write_bytes(b"")
    with pytest.raises(HashMismatchError, match="colorize models download tiny"):
        resolve_weights(entry, cache_dir=cache_dir, local_files_only=True)


def test_a_cache_look_up_does_not_read_the_login_token(tmp_path, bundled, cache_dir, monkeypatch):
    """An unreadable token file (HF_HOME naming a file, a token written by another user) concerns
    downloads only: finding a cached copy must not fail on it."""
    from huggingface_hub import constants

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path))  # a folder: reading it fails
    published = make_weights(tmp_path / "published.safetensors")
    entry = make_entry(revision=COMMIT, sha256=sha256_file(published))
    cached = add_to_fake_hub_cache(cache_dir, entry.repo, entry.filename, published, revision=COMMIT)
    assert locate_weights(entry, cache_dir=cache_dir).path == cached
    assert resolve_weights(entry, cache_dir=cache_dir, local_files_only=True).source == "hf-cache"


def test_a_weights_path_that_cannot_be_looked_up_is_a_weights_error(tmp_path, monkeypatch):
    """A folder on the way that cannot be searched: the weights' exit code, not an output's."""
    path = make_weights(tmp_path / "locked" / "m.safetensors")
    real_stat = Path.stat

    def locked(self, *args, **kwargs):
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return real_stat(self, *args, **kwargs)

    monkeypatch.setattr(Path, "stat", locked)
    with pytest.raises(WeightsError, match="cannot be read: Permission denied"):
        resolve_weights(None, weights_path=path)
    loop = tmp_path / "loop.safetensors"
    loop.symlink_to(loop)
    with pytest.raises(WeightsError, match="cannot be read"):  # a symlink loop: not "does not exist"
        resolve_weights(None, weights_path=loop)


def test_models_list_on_an_80_column_terminal_shows_whole_model_names(monkeypatch):
    import io

    from rich.console import Console

    from colorize_cli import cli

    screen = io.StringIO()
    monkeypatch.setattr(cli, "stdout", Console(file=screen, width=80, force_terminal=True, color_system=None))
    cli.models_list(as_json=False)
    table = screen.getvalue().split("\n┗")[0].split("└")[0]  # the table, not the descriptions under it
    for name in load_registry().names:
        assert f" {name} " in table, (name, table)
