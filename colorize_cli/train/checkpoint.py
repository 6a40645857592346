"""Resumable training checkpoints: tensors in safetensors, everything else as JSON metadata.

No pickle anywhere: model, EMA and extra-module weights, the optimizers' state (flattened with
key prefixes) and RNG states (uint8 tensors) are safetensors tensors; the step, option values,
model config, data positions and optimizer hyper-parameters are JSON under one metadata key.
Writes are atomic (temporary file, fsync, os.replace): a crash leaves the previous checkpoint.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..atomic import temp_path_beside
from ..weights import TRAIN_CHECKPOINT_KEY
from .data import RUN_CHECKPOINT, TrainingError

META_KEY = TRAIN_CHECKPOINT_KEY  # (weights.py knows it, to tell a checkpoint from a model)
FORMAT = 1
FILENAME = RUN_CHECKPOINT


def write_error(error: Exception, path: str | os.PathLike[str]) -> Exception:
    """The OSError behind a safetensors write that failed (a full disk, a quota, a read-only disk):
    safetensors raises its own error, "... (os error 28)", which the command would report as a bug
    (exit 1) rather than as an output that cannot be written. Other errors are returned as they are."""
    found = re.search(r"\(os error (\d+)\)", str(error))
    return OSError(int(found[1]), os.strerror(int(found[1])), os.fspath(path)) if found else error


def save_checkpoint(path: str | os.PathLike[str], tensors: dict[str, Tensor], meta: dict[str, Any]) -> Path:
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # clone: safetensors refuses tensors that share storage.
    out = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}
    tmp = temp_path_beside(path)
    try:
        # safetensors writes files as 0600: the checkpoint gets the mode a new file gets here (0666
        # less the umask), as the export does, so whoever may read the run folder can resume it.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        mode = os.fstat(fd).st_mode & 0o777
        os.close(fd)
        try:
            save_file(out, str(tmp), metadata={META_KEY: json.dumps({"format": FORMAT, **meta}, sort_keys=True)})
        except SafetensorError as e:
            raise write_error(e, path) from e
        os.chmod(tmp, mode)
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | os.PathLike[str], *,
                    tensors: bool = True) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The checkpoint's tensors and metadata; with `tensors=False` only the metadata (no tensor is read)."""
    from safetensors import SafetensorError, safe_open

    from ..weights import safetensors_name

    path = Path(path)
    if not path.is_file():
        raise TrainingError(f"no checkpoint to resume from at {path}")
    try:
        with safetensors_name(path) as name, safe_open(name, framework="pt", device="cpu") as f:
            meta_raw = (f.metadata() or {}).get(META_KEY)
            state = {k: f.get_tensor(k) for k in f.keys()} if tensors else {}
    except SafetensorError as e:
        raise TrainingError(f"{path} is not a valid checkpoint ({e})") from e
    if meta_raw is None:
        raise TrainingError(f"{path} is not a colorize training checkpoint (no {META_KEY!r} metadata)")
    try:
        meta = json.loads(meta_raw)
    except ValueError as e:
        raise TrainingError(f"{path} is not a valid checkpoint (its metadata is not JSON: {e})") from e
    if not isinstance(meta, dict):
        raise TrainingError(f"{path} is not a valid checkpoint (its metadata is not a JSON object)")
    if meta.get("format") != FORMAT:
        raise TrainingError(f"{path} has checkpoint format {meta.get('format')!r}; this version reads {FORMAT}")
    missing = [key for key in ("step", "options", "config", "optimizers", "data") if key not in meta]
    if missing:
        raise TrainingError(f"{path} is not a valid checkpoint (its metadata lacks {', '.join(missing)})")
    return state, meta


def prefixed(prefix: str, state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {f"{prefix}.{k}": v for k, v in state.items()}


def unprefixed(prefix: str, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    p = prefix + "."
    return {k[len(p):]: v for k, v in tensors.items() if k.startswith(p)}


def flatten_optimizer(prefix: str, state_dict: dict) -> tuple[dict[str, Tensor], dict]:
    """torch optimizer state_dict -> (tensors keyed `prefix.<param>.<name>`, JSON-able rest)."""
    tensors, scalars = {}, {}
    for index, entries in state_dict["state"].items():
        for name, value in entries.items():
            if isinstance(value, Tensor):
                tensors[f"{prefix}.{index}.{name}"] = value
            else:
                scalars[f"{index}.{name}"] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def unflatten_optimizer(prefix: str, tensors: dict[str, Tensor], rest: dict) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for key, value in unprefixed(prefix, tensors).items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    for key, value in rest.get("scalars", {}).items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    groups = []
    for group in rest["param_groups"]:
        group = dict(group)
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
        groups.append(group)
    return {"state": state, "param_groups": groups}


def rng_tensor(state: Tensor | bytes) -> Tensor:
    if isinstance(state, (bytes, bytearray)):
        return torch.frombuffer(bytearray(state), dtype=torch.uint8).clone()
    return state.detach().to("cpu", torch.uint8).clone()
