"""Per-epoch training checkpoints: written atomically, read back with ``weights_only=True``.

A checkpoint holds everything needed to continue as if never stopped: model, optimizer and
scheduler state, the fp16 gradient scaler's state, every RNG state, the history and the best
weights so far. Beside it, ``<checkpoint>.run.json`` names the MLflow run that the checkpointed
attempt logged to, so a retry that resumes from the checkpoint goes on logging to that run.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        # numpy's state as tensors and plain numbers, which weights_only loading accepts.
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "batches": generator.get_state(),
    }


def restore_rng(state: dict[str, Any], generator: torch.Generator) -> None:
    random.setstate(_tuples(state["python"]))
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"])
    )
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    generator.set_state(state["batches"])


def restore_scaler(scaler: torch.amp.GradScaler, state: dict[str, Any] | None) -> None:
    """Continue with the saved loss scale; nothing to do when either side trains without fp16 scaling.

    A disabled scaler saves ``{}``, and an enabled one refuses ``{}``; a checkpoint from before
    scalers were saved has no entry at all.
    """
    if state and scaler.is_enabled():
        scaler.load_state_dict(state)


def _tuples(obj: Any) -> Any:
    """random.setstate wants tuples all the way down."""
    return tuple(_tuples(o) for o in obj) if isinstance(obj, (list, tuple)) else obj


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write to a temporary file in the same folder and rename: a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    """The checkpoint at ``path``, or None when there is none yet."""
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


def run_record_path(checkpoint: Path) -> Path:
    return checkpoint.with_name(f"{checkpoint.name}.run.json")


def record_run_id(checkpoint: Path, run_id: str) -> None:
    """Name the MLflow run the checkpoints at ``checkpoint`` belong to (atomically, like them)."""
    path = run_record_path(checkpoint)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"run_id": run_id}))
    os.replace(tmp, path)


def recorded_run_id(checkpoint: Path) -> str | None:
    """The MLflow run named by ``record_run_id``, or None when none is (or the record is unreadable)."""
    try:
        return json.loads(run_record_path(checkpoint).read_text())["run_id"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def remove_checkpoint(checkpoint: Path) -> None:
    """The checkpoint and its run record, once the stage's output is committed and answers any retry."""
    checkpoint.unlink(missing_ok=True)
    run_record_path(checkpoint).unlink(missing_ok=True)
