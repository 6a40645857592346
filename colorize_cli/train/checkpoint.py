"""Resumable training checkpoints: tensors in safetensors, everything else as JSON metadata.

No pickle anywhere: model, EMA and extra-module weights, the optimizers' state (flattened with
key prefixes) and RNG states (uint8 tensors) are safetensors tensors; the step, option values,
model config, data positions and optimizer hyper-parameters are JSON under one metadata key.
Writes are atomic (temporary file, fsync, os.replace): a crash leaves the previous checkpoint.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..weights import TRAIN_CHECKPOINT_KEY
from .data import RUN_CHECKPOINT, TrainingError

META_KEY = TRAIN_CHECKPOINT_KEY  # (weights.py knows it, to tell a checkpoint from a model)
FORMAT = 1
FILENAME = RUN_CHECKPOINT


def save_checkpoint(path: str | os.PathLike[str], tensors: dict[str, Tensor], meta: dict[str, Any]) -> Path:
    from ..weights import write_safetensors

    # clone: safetensors refuses tensors that share storage.
    out = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}
    return write_safetensors(path, out, {META_KEY: json.dumps({"format": FORMAT, **meta}, sort_keys=True)})


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
    from .loop import TrainOptions  # (loop imports this module)

    wrong = [key for key in ("config", "optimizers", "data") if not isinstance(meta[key], dict)]
    if not isinstance(meta["step"], int) or isinstance(meta["step"], bool) or meta["step"] < 0:
        wrong.insert(0, "step")
    wrong += TrainOptions.saved_problems(meta["options"])
    if wrong:
        raise TrainingError(f"{path} is not a valid checkpoint (its metadata has a wrong {', '.join(wrong)})")
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
