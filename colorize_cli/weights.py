"""Model registry, weight resolution and safetensors I/O.

`weights.toml` says where each model's weights live (bundled file, Hugging Face repo) and how to
check them (sha256); the architecture config travels inside each .safetensors file under the
`colorize.config` metadata key, so a file rebuilds its own network without guessing.

Resolution order: an explicit `--weights` file > the bundled copy > the Hugging Face cache >
a Hub download. Only safetensors are ever read: pickle checkpoints are refused, never loaded.

torch and huggingface_hub are imported inside the functions that need them, so listing models
and `--help` stay fast.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import struct
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Literal

from .atomic import temp_path_beside
from .paths import real_path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 only
    import tomli as tomllib

if TYPE_CHECKING:
    import torch

ARCHITECTURES = ("lab-ddpm", "latent-cold", "unet", "unet-gan")
REGISTRY_FILENAME = "weights.toml"
CONFIG_KEY = "colorize.config"
FORMAT_KEY = "colorize.format"
FORMAT_VERSION = "1"

# Suffixes of pickle-based checkpoints; refused by name before the header is even read.
PICKLE_SUFFIXES = frozenset({".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle"})
# safetensors itself refuses headers above 100 MB; a larger length means another format.
_MAX_HEADER_BYTES = 100_000_000
_HASH_CHUNK_BYTES = 1 << 20
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
# ORG/NAME as the Hub allows them: word characters, "-" and ".", no leading "." or "-", no "..".
_REPO_ID_RE = re.compile(r"(?!.*\.\.)[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")

Source = Literal["file", "bundled", "hf-cache", "hub"]
HashStatus = Literal["ok", "mismatch", "unknown"]


# --------------------------------------------------------------------------------------------
# Errors: each message is one sentence, printed by the CLI as `Error: ...`.


class WeightsError(Exception):
    """An expected failure to find, check or read model weights."""


class RegistryError(WeightsError):
    """weights.toml is missing or malformed."""


class UnknownModelError(WeightsError, ValueError):  # a bad setting, as every other one the API refuses
    def __init__(self, name: str, known: list[str]):
        self.name = name
        self.known = list(known)
        super().__init__(f"Unknown model {name!r}; known models: {', '.join(self.known)}.")


class WeightsNotFoundError(WeightsError):
    """No weights anywhere we are allowed to look; the message says how to get them."""


class HashMismatchError(WeightsError):
    def __init__(self, path: Path, expected: str, actual: str, advice: str = "delete it and download it again"):
        self.path, self.expected, self.actual = path, expected, actual
        super().__init__(
            f"sha256 mismatch for {path}: expected {expected}, got {actual}; the file is corrupt "
            f"or not the published one: {advice}."
        )


class UnsafeWeightsError(WeightsError):
    """A pickle checkpoint or anything else that is not a valid safetensors file."""


class ArchitectureMismatchError(WeightsError):
    def __init__(self, path: Path, found: str, expected: str):
        self.path, self.found, self.expected = path, found, expected
        super().__init__(f"{path} holds a {found!r} model, but a {expected!r} model was expected.")


# --------------------------------------------------------------------------------------------
# Registry


@dataclass(frozen=True)
class ModelEntry:
    name: str
    architecture: str
    description: str
    licence: str
    default_sampler: str
    default_steps: int
    size: int  # working resolution the network was trained at
    params: int  # 0 until trained
    file: str | None = None  # bundled copy, relative to bundled_dir()
    repo: str | None = None  # Hugging Face repo id
    revision: str | None = None
    filename: str | None = None
    sha256: str | None = None  # lower-case hex; None while unpublished (hash not checked)


@dataclass(frozen=True)
class Registry:
    models: dict[str, ModelEntry]
    default: str
    path: Path | None = None

    @property
    def names(self) -> list[str]:
        return list(self.models)

    def get(self, name: str) -> ModelEntry:
        try:
            return self.models[name]
        except KeyError:
            raise UnknownModelError(name, self.names) from None


_REQUIRED_FIELDS: dict[str, type] = {
    "architecture": str,
    "description": str,
    "licence": str,
    "default_sampler": str,
    "default_steps": int,
    "size": int,
    "params": int,
}
_OPTIONAL_FIELDS: dict[str, type] = {
    "file": str,
    "repo": str,
    "revision": str,
    "filename": str,
    "sha256": str,
}


def bundled_dir() -> Path:
    """Where weights shipped inside the package live."""
    return Path(__file__).parent / "weights"


def registry_path() -> Path:
    """The packaged weights.toml, else the repository's top-level one.

    In a checkout `colorize_cli/weights.toml` is a symlink to `../weights.toml`; the fallback
    covers a checkout where the link did not survive.
    """
    package_dir = Path(__file__).parent
    candidates = (package_dir / REGISTRY_FILENAME, package_dir.parent / REGISTRY_FILENAME)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise RegistryError(f"Model registry not found; looked for {candidates[0]} and {candidates[1]}.")


def load_registry(path: str | os.PathLike[str] | None = None) -> Registry:
    """Parse and validate weights.toml (the packaged one unless `path` is given)."""
    path = Path(path) if path is not None else registry_path()
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise RegistryError(f"Model registry {path} does not exist.") from None
    except tomllib.TOMLDecodeError as e:
        raise RegistryError(f"Model registry {path} is not valid TOML: {e}.") from e

    tables = data.get("models")
    if not isinstance(tables, dict) or not tables:
        raise RegistryError(f"Model registry {path} has no [models.NAME] tables.")
    models = {name: _parse_entry(name, table, path) for name, table in tables.items()}

    default = data.get("default")
    if default not in models:
        raise RegistryError(
            f"Model registry {path}: default = {default!r} is not one of {', '.join(models)}."
        )
    return Registry(models=models, default=default, path=path)


def _parse_entry(name: str, table: Any, path: Path) -> ModelEntry:
    def fail(problem: str) -> RegistryError:
        return RegistryError(f"Model registry {path}: model {name!r} {problem}.")

    if not isinstance(table, dict):
        raise fail("is not a table")
    unknown = set(table) - set(_REQUIRED_FIELDS) - set(_OPTIONAL_FIELDS)
    if unknown:  # catches typos such as `licence` spelled `license`
        raise fail(f"has unknown fields {sorted(unknown)}")
    missing = [key for key in _REQUIRED_FIELDS if key not in table]
    if missing:
        raise fail(f"is missing required fields {missing}")
    for key, value in table.items():
        expected = {**_REQUIRED_FIELDS, **_OPTIONAL_FIELDS}[key]
        # bool is an int subclass in Python; `size = true` is still a mistake.
        if not isinstance(value, expected) or isinstance(value, bool):
            raise fail(f"field {key!r} must be a {expected.__name__}, not {value!r}")

    if table["architecture"] not in ARCHITECTURES:
        raise fail(f"has architecture {table['architecture']!r}, not one of {', '.join(ARCHITECTURES)}")
    if table["default_steps"] < 1 or table["size"] < 1 or table["params"] < 0:
        raise fail("needs default_steps >= 1, size >= 1 and params >= 0")

    file = table.get("file")
    if file is not None:
        relative = PurePosixPath(file)
        if relative.is_absolute() or ".." in relative.parts:
            raise fail(f"file {file!r} must be a path inside colorize_cli/weights/")
    repo = table.get("repo")
    if repo is not None:
        if not _REPO_ID_RE.fullmatch(repo):
            raise fail(f"repo {repo!r} is not a Hugging Face repo id (ORG/NAME)")
        if not table.get("revision") or not table.get("filename"):
            raise fail("has a repo but no revision or filename")
        if not table["filename"].endswith(".safetensors"):
            raise fail(f"filename {table['filename']!r} is not a .safetensors file")
        if not table.get("sha256"):  # a download is only trusted once checked
            raise fail("has a repo but no sha256 to check its download against")

    sha256 = table.get("sha256", "").lower() or None
    if sha256 is not None and not _SHA256_RE.fullmatch(sha256):
        raise fail(f"sha256 {table['sha256']!r} is not 64 hex digits")

    return ModelEntry(
        name=name,
        architecture=table["architecture"],
        description=table["description"],
        licence=table["licence"],
        default_sampler=table["default_sampler"],
        default_steps=table["default_steps"],
        size=table["size"],
        params=table["params"],
        file=file,
        repo=repo,
        revision=table.get("revision"),
        filename=table.get("filename"),
        sha256=sha256,
    )


# --------------------------------------------------------------------------------------------
# Checks


def sha256_file(path: str | os.PathLike[str], chunk_bytes: int = _HASH_CHUNK_BYTES) -> str:
    """Hex sha256 of a file, read in chunks so multi-GB weights never sit in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def check_sha256(path: Path, expected: str | None, advice: str = "delete it and download it again") -> None:
    """Raise HashMismatchError unless `path` hashes to `expected`; None means nothing to check."""
    if expected is None:
        return
    try:
        actual = sha256_file(path)
    except OSError as e:  # unreadable: the weights are at fault (as in check_safetensors), not an output
        raise WeightsError(f"Weights file {path} cannot be read: {e.strerror or e}.") from None
    if actual != expected.lower():
        raise HashMismatchError(path, expected.lower(), actual, advice)


def check_safetensors(path: str | os.PathLike[str]) -> None:
    """Raise UnsafeWeightsError unless `path` starts with a valid safetensors header.

    Judges the bytes, not the name: a pickle renamed `.safetensors` is still refused.
    """
    path = Path(path)
    try:
        # One stat, in here: path.exists() raises PermissionError (an output's exit code) for a
        # folder on the way that cannot be searched, and says False for a symlink loop.
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise WeightsNotFoundError(f"Weights file {path} does not exist.") from None
    except OSError as e:
        raise WeightsError(f"Weights file {path} cannot be read: {e.strerror or e}.") from None
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        raise UnsafeWeightsError(
            f"{path} is a pickle checkpoint ({suffix}); colorize only loads .safetensors files "
            "because unpickling can run arbitrary code."
        )
    if not stat.S_ISREG(mode):  # a folder, a pipe, a device: never read (a pipe would block)
        raise WeightsError(f"Weights file {path} is not a regular file.")
    try:
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            prefix = f.read(8)
            header_len = struct.unpack("<Q", prefix)[0] if len(prefix) == 8 else 0
            valid_len = 2 <= header_len <= min(_MAX_HEADER_BYTES, size - 8)
            header_bytes = f.read(header_len) if valid_len else b""
    except FileNotFoundError:
        raise WeightsNotFoundError(f"Weights file {path} does not exist.") from None
    except OSError as e:  # unreadable (permissions, I/O error): the weights are at fault, not an output
        raise WeightsError(f"Weights file {path} cannot be read: {e.strerror or e}.") from None

    # Zip (torch.save) and pickle protocol >= 2 magic: name the real format in the message. Only
    # when the bytes are not a safetensors header: a header of 128 + 256k bytes also starts 0x80.
    looks_safetensors = valid_len and header_bytes.startswith(b"{")
    if not looks_safetensors and (prefix.startswith(b"PK\x03\x04") or prefix.startswith(b"\x80")):
        raise UnsafeWeightsError(
            f"{path} is a PyTorch pickle checkpoint, not safetensors; colorize never loads pickle "
            "because it can run arbitrary code."
        )
    not_safetensors = UnsafeWeightsError(f"{path} is not a valid safetensors file.")
    if not looks_safetensors:
        raise not_safetensors
    try:
        header = json.loads(header_bytes)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise not_safetensors from None
    if not isinstance(header, dict):
        raise not_safetensors


# --------------------------------------------------------------------------------------------
# Resolution


@dataclass(frozen=True)
class ResolvedWeights:
    path: Path
    source: Source


def resolve_weights(
    entry: ModelEntry | None,
    *,
    weights_path: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    allow_download: bool = True,
    local_files_only: bool = False,
) -> ResolvedWeights:
    """Find the weights file: `weights_path` > bundled > Hugging Face cache > Hub download.

    `allow_download=False` is the caller's policy (never fetch); `local_files_only=True` means
    the machine is offline. Either skips the Hub. Registry files are sha256-checked when the
    entry has a hash; a user's `weights_path` is only checked for being safetensors.
    """
    if weights_path is not None:
        path = Path(weights_path).expanduser()
        check_safetensors(path)  # (refuses missing files, folders, pipes, devices and unreadable paths too)
        return ResolvedWeights(path, "file")
    if entry is None:
        raise ValueError("resolve_weights needs a registry entry or a weights_path")

    found = locate_weights(entry, cache_dir=cache_dir)
    if found is None:
        if entry.repo is None:
            raise WeightsNotFoundError(_how_to_get(entry, "it is not bundled and not on the Hub"))
        if local_files_only or not allow_download:
            reason = "offline" if local_files_only else "downloads are disabled"
            raise WeightsNotFoundError(
                _how_to_get(entry, f"not bundled, not in the Hugging Face cache, and {reason}")
            )
        return _checked_download(entry, cache_dir)
    if found.source == "hf-cache" and allow_download and not local_files_only and not _hub_offline():
        return _checked_cached_or_fetched(entry, found, cache_dir)
    _check(entry, found, offline=local_files_only or _hub_offline())
    return found


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def download(entry: ModelEntry, cache_dir: str | os.PathLike[str] | None = None) -> ResolvedWeights:
    """Fetch `entry` into the Hugging Face cache (a no-op when a good copy is there) and check
    it, architecture included; a damaged cached copy is replaced."""
    found = locate_weights(entry, cache_dir=cache_dir)
    if entry.repo is None or (found is not None and found.source == "bundled"):
        if found is not None:  # bundled: nothing to fetch, just check it
            return resolve_weights(entry, cache_dir=cache_dir, allow_download=False)
        raise WeightsNotFoundError(
            f"Model {entry.name!r} is not published on the Hugging Face Hub; "
            "pass --weights PATH to a .safetensors file instead."
        )
    if found is not None and found.source == "hf-cache" and _hub_offline():
        _check(entry, found, offline=True)  # nothing can be fetched: the cached copy is what there is
        resolved = found
    elif found is not None and found.source == "hf-cache":
        resolved = _checked_cached_or_fetched(entry, found, cache_dir)
    else:
        resolved = _checked_download(entry, cache_dir)
    _check_architecture(read_config(resolved.path), entry.architecture, resolved.path)  # as `models verify` does
    return resolved


_ADVICE: dict[str, str] = {
    "bundled": "the installed package is damaged, so reinstall colorize",
    "hf-cache": "run `colorize models download {name}` to replace the cached copy",
    "hub": "the Hub served other bytes than the registry's, so it was not kept",
}


def _check(entry: ModelEntry, found: ResolvedWeights, offline: bool = False, advice: str | None = None) -> None:
    """Is `found` a safetensors file with the registry's hash? The message says what to do
    (`offline`: nothing can be fetched now, so a download is advice for when it can; `advice`:
    what to say instead)."""
    advice = advice or _advice(entry, found, offline)
    if not found.path.is_file():  # a folder or pipe where the file should be: never read it
        what = "is not a regular file" if os.path.lexists(found.path) else "is missing"
        raise WeightsError(f"{found.path} (model {entry.name!r}) {what}; {advice}.")
    # The hash first: a damaged or truncated copy is then reported as such, with what to do about
    # it, rather than as "not a valid safetensors file".
    check_sha256(found.path, entry.sha256, advice)
    check_safetensors(found.path)


def _advice(entry: ModelEntry, found: ResolvedWeights, offline: bool = False) -> str:
    """What to do about a damaged file, by where it came from."""
    advice = _ADVICE.get(found.source, "delete it and download it again").format(name=entry.name)
    if offline and found.source == "hf-cache":  # `models download` cannot fetch either until then
        advice += " once this machine is online (HF_HUB_OFFLINE unset)"
    return advice


def _checked_cached_or_fetched(entry: ModelEntry, found: ResolvedWeights,
                               cache_dir: str | os.PathLike[str] | None) -> ResolvedWeights:
    """The cached copy when it passes the checks; else it is removed and fetched once more.

    huggingface_hub returns a pinned revision's cached file without asking the Hub, so a copy
    damaged on disk (or a bad download of an older colorize) would otherwise be refused forever.
    """
    try:
        _check(entry, found)
        return found
    except WeightsError as damaged:
        problem = _discard_cached(found.path)
        if problem is not None:  # (a read-only cache): the Hub client would hand the same file back
            _check(entry, found, advice=f"it cannot be removed from the Hugging Face cache ({problem}): delete "
                                        "it as the cache's owner, or set HF_HUB_CACHE to a writable folder "
                                        f"and run `colorize models download {entry.name}`")
            return found  # (repaired meanwhile, by another process)
        try:  # link and blob are gone: an ordinary download fetches the bytes again
            return _checked_download(entry, cache_dir)
        except WeightsNotFoundError as e:
            raise WeightsNotFoundError(f"The cached copy of model {entry.name!r} was damaged ({damaged}) and was "
                                       f"removed; fetching it again failed: {e}") from e


def _checked_download(entry: ModelEntry, cache_dir: str | os.PathLike[str] | None) -> ResolvedWeights:
    """Download and check; a file that fails the checks does not stay in the cache."""
    fetched = ResolvedWeights(_fetch_from_hub(entry, cache_dir), "hub")
    try:
        _check(entry, fetched)
    except WeightsError:
        _discard_cached(fetched.path)
        raise
    return fetched


def _discard_cached(path: Path) -> str | None:
    """Remove a Hugging Face cache entry: the snapshot's link and the blob it points to, so the
    next download fetches the bytes again instead of re-linking the bad blob. Returns why it
    could not be removed, or None.

    Only what lies inside the cache is removed (the blob may be in the cache-wide store,
    CACHE/blobs/, that huggingface_hub shares between repos): a link there that leads elsewhere
    (to the user's own copy, or a folder) loses the link, never what it points to.
    """
    # CACHE/models--ORG--NAME/snapshots/COMMIT/FILENAME
    cache = next((real_path(p.parent.parent) for p in path.parents if p.name == "snapshots"), None)
    for item in (path, real_path(path)):
        where = real_path(item.parent) / item.name  # the entry itself (a link not followed)
        if cache is None or cache not in where.parents:
            if item is path:
                return f"{where} lies outside the cache"
            continue
        try:
            if item.is_dir() and not item.is_symlink():
                shutil.rmtree(item)
            else:
                item.unlink(missing_ok=True)
        except OSError as e:
            return f"{e.strerror or e}: {e.filename or item}"
    return None


@dataclass(frozen=True)
class VerifyResult:
    name: str
    resolved: bool
    source: Source | None
    path: Path | None
    hash_status: HashStatus  # "unknown": not resolved, or the registry has no hash yet
    expected_sha256: str | None
    actual_sha256: str | None  # reported even without an expected one, to fill in weights.toml
    problem: str | None = None  # why the weights are missing or unusable

    @property
    def ok(self) -> bool:
        return self.resolved and self.problem is None and self.hash_status != "mismatch"


def verify(entry: ModelEntry, *, cache_dir: str | os.PathLike[str] | None = None) -> VerifyResult:
    """Check the locally available weights of `entry` without downloading or raising."""
    found = locate_weights(entry, cache_dir=cache_dir)
    if found is not None and not found.path.is_file():
        try:
            _check(entry, found)
        except WeightsError as e:
            return VerifyResult(entry.name, True, found.source, found.path, "unknown", entry.sha256, None, str(e))
    if found is None:
        reason = "not bundled and not in the Hugging Face cache"
        return VerifyResult(
            entry.name, False, None, None, "unknown", entry.sha256, None, _how_to_get(entry, reason)
        )

    try:
        actual = sha256_file(found.path)
    except OSError as e:
        return VerifyResult(entry.name, True, found.source, found.path, "unknown", entry.sha256, None,
                            f"{found.path} cannot be read: {e.strerror or e}")
    problem = None
    if entry.sha256 is None:
        status: HashStatus = "unknown"
    elif actual == entry.sha256:
        status = "ok"
    else:
        status = "mismatch"
        problem = str(HashMismatchError(found.path, entry.sha256, actual, _advice(entry, found)))
    try:  # as colouring would load it: config, tensors, and a model built from them
        load_model_from_file(found.path, expected_architecture=entry.architecture)
    except WeightsError as e:
        problem = problem or str(e)
    return VerifyResult(
        entry.name, True, found.source, found.path, status, entry.sha256, actual, problem
    )


def locate_weights(
    entry: ModelEntry, *, cache_dir: str | os.PathLike[str] | None = None
) -> ResolvedWeights | None:
    """Where `entry`'s weights are on this machine (bundled, else the Hugging Face cache), or None.

    Cheap: no network, no hashing, no checks, for listings; what is found may even be a folder
    in the cache. `_check` (through resolve_weights, download, verify) says what is wrong with it.
    """
    if entry.file is not None:
        bundled = bundled_dir() / entry.file
        # With no Hub copy to stand in, the package's own file is the only place: one missing or
        # broken there is a damaged install (the checks say so), not a model that "is not bundled".
        if bundled.is_file() or entry.repo is None:
            return ResolvedWeights(bundled, "bundled")
    if entry.repo is not None:
        cached = _cached_hub_file(entry, cache_dir)
        if cached is not None:
            return ResolvedWeights(cached, "hf-cache")
    return None


def _cached_hub_file(entry: ModelEntry, cache_dir: str | os.PathLike[str] | None) -> Path | None:
    """The file from the local Hugging Face cache, or None; never touches the network."""
    from huggingface_hub.utils import LocalEntryNotFoundError

    try:
        return _hf_hub_download(entry, cache_dir, local_files_only=True)
    except LocalEntryNotFoundError:
        return None


def _fetch_from_hub(entry: ModelEntry, cache_dir: str | os.PathLike[str] | None) -> Path:
    """Download into the Hugging Face cache, turning the hub client's errors into ours."""
    from huggingface_hub.utils import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{entry.repo}@{entry.revision}/{entry.filename}"
    try:
        return _hf_hub_download(entry, cache_dir, local_files_only=False)
    except LocalEntryNotFoundError as e:
        # The hub client's way of saying "could not reach the Hub (or may not), and not cached
        # either"; what the Hub actually answered, if it did, is the cause.
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE:
            reason = "HF_HUB_OFFLINE is set"
        elif isinstance(e.__cause__, HfHubHTTPError):
            reason = f"the Hub answered {_http_status(e.__cause__)}"
        else:
            reason = "the Hugging Face Hub could not be reached"
        raise WeightsNotFoundError(_how_to_get(entry, reason)) from e
    except GatedRepoError as e:  # before its parent, RepositoryNotFoundError
        raise WeightsNotFoundError(_how_to_get(entry, f"{where} is gated: accept its terms on the Hub and log in "
                                                      "with `hf auth login`")) from e
    except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError) as e:
        raise WeightsNotFoundError(_how_to_get(entry, f"{where} is not on the Hub")) from e
    except OfflineModeIsEnabled as e:
        raise WeightsNotFoundError(_how_to_get(entry, "HF_HUB_OFFLINE is set")) from e
    except HfHubHTTPError as e:
        raise WeightsNotFoundError(_how_to_get(entry, f"the Hub refused the download: {_http_status(e)}")) from e
    except _network_errors() as e:
        raise WeightsNotFoundError(_how_to_get(entry, f"the download failed ({_first_line(e)})")) from e
    except ValueError as e:  # the client's "Force download failed ..." and kin: still a failed download
        raise WeightsNotFoundError(_how_to_get(entry, f"the download failed ({_first_line(e)})")) from e
    except OSError as e:  # the cache cannot be written (full, read-only, no permission), or a short transfer
        if e.errno is not None:
            from huggingface_hub import constants

            cache = cache_dir or constants.HF_HUB_CACHE
            if e.filename is not None and not Path(os.path.abspath(e.filename)).is_relative_to(os.path.abspath(cache)):
                # another file the client reads, e.g. a token file (HF_TOKEN_PATH) that is a folder
                raise WeightsError(f"The Hugging Face client cannot use {e.filename} ({e.strerror or e}).") from e
            # HF_HUB_CACHE, not HF_HOME: it wins over HF_HOME when both are set.
            raise WeightsError(f"Cannot write the Hugging Face cache at {cache} ({e.strerror or e}); free some "
                               "space or set HF_HUB_CACHE to a writable folder.") from e
        raise WeightsNotFoundError(_how_to_get(entry, f"the download was incomplete ({_first_line(e)})")) from e


def _http_status(error: Exception) -> str:
    response = getattr(error, "response", None)
    code = getattr(response, "status_code", None)
    reason = getattr(response, "reason_phrase", None) or getattr(response, "reason", None) or ""
    return f"HTTP {code} {reason}".strip() if code else _first_line(error)


def _first_line(error: BaseException) -> str:
    """huggingface_hub's messages run over several lines; ours are one."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0].rstrip(".:")


def _hf_hub_download(
    entry: ModelEntry, cache_dir: str | os.PathLike[str] | None, *, local_files_only: bool
) -> Path:
    import huggingface_hub

    assert entry.repo is not None and entry.filename is not None  # the registry guarantees both
    return Path(
        huggingface_hub.hf_hub_download(
            entry.repo,
            entry.filename,
            revision=entry.revision,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            # A cache look-up needs no credentials: reading the token (an unreadable token file,
            # HF_HOME naming a file) must not fail it, nor may refreshing one go online.
            **({"token": False} if local_files_only else {}),
        )
    )


def _network_errors() -> tuple[type[BaseException], ...]:
    """Network errors that huggingface_hub lets through raw when a transfer dies mid-way.

    Its HTTP client depends on its version (requests, httpx, httpx2); only the ones already
    imported can have been raised, so nothing is imported here. Evaluated lazily: Python
    computes an `except` clause's classes only when an exception reaches it.
    """
    errors: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module_name, class_name in (
        ("httpx2", "TransportError"),
        ("httpx", "TransportError"),
        ("requests", "RequestException"),
    ):
        module = sys.modules.get(module_name)
        if module is not None and hasattr(module, class_name):
            errors.append(getattr(module, class_name))
    return tuple(errors)


def _how_to_get(entry: ModelEntry, reason: str) -> str:
    if entry.repo is None:
        return f"No weights for model {entry.name!r} ({reason}); pass --weights PATH to a .safetensors file."
    return (
        f"No weights for model {entry.name!r} ({reason}); run `colorize models download {entry.name}` "
        "on a machine with internet (and copy its Hugging Face cache here), "
        "or pass --weights PATH to a .safetensors file."
    )


# --------------------------------------------------------------------------------------------
# Safetensors I/O


def save_model_file(
    path: str | os.PathLike[str],
    state_dict: Mapping[str, torch.Tensor],
    config: Mapping[str, Any],
    *,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write inference weights: float tensors as `dtype` (float16 when None), integer buffers
    as they are, `config` as JSON metadata. Atomic: readers see the old file or the new one.
    """
    import torch

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"weights must be saved with a .safetensors suffix, not {path.name!r}")
    if config.get("architecture") not in ARCHITECTURES:
        raise ValueError(
            f"config['architecture'] must be one of {ARCHITECTURES}, not {config.get('architecture')!r}"
        )
    dtype = torch.float16 if dtype is None else dtype
    metadata = {FORMAT_KEY: FORMAT_VERSION, CONFIG_KEY: json.dumps(dict(config), sort_keys=True)}

    tensors = {}
    for name, tensor in state_dict.items():
        target = dtype if tensor.is_floating_point() else tensor.dtype
        # copy=True: safetensors refuses tensors sharing storage (tied weights, views).
        saved = tensor.detach().to(device="cpu", dtype=target, copy=True).contiguous()
        # Values beyond float16's range (65504) would silently become inf.
        overflowed = torch.isfinite(saved) != torch.isfinite(tensor.detach().cpu())
        if saved.is_floating_point() and overflowed.any():
            raise ValueError(f"tensor {name!r} overflows {dtype}; save it with a wider dtype")
        tensors[name] = saved

    return write_safetensors(path, tensors, metadata)


def write_safetensors(path: str | os.PathLike[str], tensors: Mapping[str, torch.Tensor],
                      metadata: dict[str, str]) -> Path:
    """Write a safetensors file atomically (readers see the old file or the new one), with the
    mode a new file gets here, for the weights and the training checkpoint alike. A write that
    fails (a full disk, a quota) raises the OSError behind it: safetensors' own error, "... (os
    error 28)", would be reported as a bug (exit 1) rather than as an output that cannot be written."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_beside(path)
    try:
        # safetensors writes files as 0600; learn the mode a new file gets here (0666 minus the
        # umask) by creating the temp file ourselves, so what is written stays readable to others.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        mode = os.fstat(fd).st_mode & 0o777
        os.close(fd)
        try:
            save_file(dict(tensors), str(tmp), metadata=metadata)
        except SafetensorError as e:
            found = re.search(r"\(os error (\d+)\)", str(e))
            if found is None:
                raise
            raise OSError(int(found[1]), os.strerror(int(found[1])), os.fspath(path)) from e
        os.chmod(tmp, mode)
        with tmp.open("rb") as f:
            os.fsync(f.fileno())  # data on disk before the rename makes it visible
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


@contextmanager
def safetensors_name(path: str | os.PathLike[str]) -> Iterator[str]:
    """A name of `path` that safetensors can open: the path itself, or, for a name that is not
    UTF-8 (which its Rust core refuses, though the disk holds such names), `/dev/fd/N` of the file
    opened here (Linux and macOS, where such names occur)."""
    text = os.fspath(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        if not os.path.isdir("/dev/fd"):
            raise
        fd = os.open(text, os.O_RDONLY)
        try:
            yield f"/dev/fd/{fd}"
        finally:
            os.close(fd)
        return
    yield text


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The safetensors `__metadata__` dict of `path` (empty when it has none); no tensors read."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    check_safetensors(path)
    try:
        # "numpy" framework: reading the header must not import torch.
        with safetensors_name(path) as name, safe_open(name, framework="numpy") as f:
            return dict(f.metadata() or {})
    except SafetensorError as e:
        raise UnsafeWeightsError(f"{path} is not a valid safetensors file ({e}).") from e


def read_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The model config stored in `path`'s metadata."""
    path = Path(path)
    return _config_from_metadata(read_metadata(path), path)


def load_model_file(
    path: str | os.PathLike[str], expected_architecture: str | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a colorize weights file: (state dict with float tensors as float32, config)."""
    import torch
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    check_safetensors(path)
    try:
        with safetensors_name(path) as name, safe_open(name, framework="pt", device="cpu") as f:
            config = _config_from_metadata(f.metadata() or {}, path)
            _check_architecture(config, expected_architecture, path)
            state_dict = {}
            for name in f.keys():
                tensor = f.get_tensor(name)
                if tensor.is_complex():
                    raise WeightsError(f"{path}: tensor {name!r} is complex; a model's tensors are real")
                if tensor.is_floating_point():
                    tensor = tensor.to(torch.float32)
                    if not torch.isfinite(tensor).all():  # NaN or inf weights colour every photo black
                        raise WeightsError(f"{path}: tensor {name!r} holds NaN or infinite values")
                state_dict[name] = tensor
    except SafetensorError as e:
        raise UnsafeWeightsError(f"{path} is not a valid safetensors file ({e}).") from e
    return state_dict, config


def load_model_from_file(path: str | os.PathLike[str], expected_architecture: str | None = None):
    """The model a colorize weights file holds (`models.ColorModel`); WeightsError if it cannot be built."""
    from .models import load_model

    state, config = load_model_file(path, expected_architecture)
    try:
        return load_model(config, state)
    except (ValueError, TypeError, KeyError, RuntimeError) as e:  # a config or tensors this code cannot use
        raise WeightsError(f"{path} does not hold a model this version can load: {build_problem(e)}") from e


def build_problem(error: BaseException) -> str:
    """Why a model could not be built from a file's config and tensors, on one line: PyTorch lists
    the missing, unexpected and mis-shaped tensors over several lines, so all are kept."""
    return " ".join(str(error).split())[:400]


# The metadata key of `colorize train`'s checkpoints (train/checkpoint.py): resume state, not a model.
TRAIN_CHECKPOINT_KEY = "colorize.train"


def _config_from_metadata(metadata: Mapping[str, str], path: Path) -> dict[str, Any]:
    if CONFIG_KEY not in metadata and TRAIN_CHECKPOINT_KEY in metadata:
        exports = sorted(p.name for p in path.parent.glob("*.safetensors") if p != path)
        where = f" ({', '.join(exports)} beside it)" if exports else " (written when the run ends or stops)"
        raise WeightsError(f"{path} is a training checkpoint, the state `colorize train --resume` continues from; "
                           f"colour with the run's export{where}.")
    if CONFIG_KEY not in metadata:
        raise WeightsError(
            f"{path} has no model config (metadata key {CONFIG_KEY!r}); it was not exported by colorize."
        )
    version = metadata.get(FORMAT_KEY)
    if version != FORMAT_VERSION:
        raise WeightsError(
            f"{path} is in colorize weights format {version!r}; this version reads format {FORMAT_VERSION}."
        )
    try:
        config = json.loads(metadata[CONFIG_KEY])
    except (ValueError, RecursionError) as e:  # JSONDecodeError, or an integer of thousands of digits
        raise WeightsError(f"{path} has a model config that is not valid JSON ({type(e).__name__}).") from e
    if not isinstance(config, dict) or not isinstance(config.get("architecture"), str):
        raise WeightsError(f"{path} has a model config without an architecture name.")
    return config


def _check_architecture(config: Mapping[str, Any], expected: str | None, path: Path) -> None:
    if expected is not None and config["architecture"] != expected:
        raise ArchitectureMismatchError(path, config["architecture"], expected)
