"""What a person watching a run sees: one line when a task starts, one when it ends with its duration
and the one figure that matters, and the epochs while it trains.

The task writes the lines to its log (``run_stage`` in plugins/visionops_tasks.py); ``visionops
pipeline run`` follows the Airflow log and prints them (``progress_line``), a live line in a
terminal for the epochs. Pure functions of a task's name and its JSON result: no Airflow, no MLflow.
"""

from __future__ import annotations

import json
import re
from typing import Any

MARK = "visionops task "  # every line a person should see while a run goes on starts with this
_EPOCH = re.compile(r"\bepoch \d+: train_loss \S+ val_accuracy \S+ \([\d.]+s\)")
# What a log renderer puts after the message: `` [visionops] loc=visionops_tasks.py:79``.
_TRAILER = re.compile(r"\s+\[[\w.]+\](?:\s+\w+=\S*)*\s*$")


def _figure(task: str, result: Any) -> str:
    """The figure that matters for a task's result (JSON as XCom carries it), or ''."""
    if not isinstance(result, dict | list):
        return f"-> {result}" if isinstance(result, str) else ""
    r: dict[str, Any] = result if isinstance(result, dict) else {}
    meta = r.get("meta", {}) if isinstance(r.get("meta"), dict) else {}
    if task == "ingest_plan" and isinstance(result, list):
        return f"{len(result)} chunk(s) to read"
    if task == "ingest_chunk":
        return f"{r.get('n_files', 0)} files read on {r.get('host', '?')}"
    if task in ("ingest", "ingest_merge") and "n_images" in meta:
        return f"{meta['n_images']} images in {meta['n_classes']} classes ({meta.get('n_reread', 0)} read)"
    if task == "validate":
        return f"{len(r.get('warnings', []))} warning(s)"
    if task == "preprocess" and "counts" in meta:
        return ", ".join(f"{k} {v}" for k, v in meta["counts"].items())
    if task == "tune_reduce" and r.get("best_value") is not None:
        return f"best trial {r['best_value']:.4f}: {r.get('best_params')}"
    if task == "train" and "epochs_trained" in r:
        return f"{r['epochs_trained']} epochs, best val_accuracy {r['best_val_accuracy']:.4f}"
    if task == "evaluate" and isinstance(r.get("metrics"), dict):
        return f"test accuracy {r['metrics'].get('accuracy', float('nan')):.4f}"
    if task == "gate" and "passed" in r:
        return ("passed" if r["passed"] else "rejected") + f" ({len(r.get('reasons', []))} reasons)"
    if task == "register" and "version" in r:
        return f"version {r['version']}" + (" (challenger)" if r.get("passed") else "")
    if task in ("promote", "reject") and "promoted" in r:
        return "champion moved" if r["promoted"] else "champion unchanged"
    return ""


def started(task: str) -> str:
    return f"{MARK}{task}: started"


def finished(task: str, seconds: float, result: Any, adapter: str | None = None) -> str:
    """``adapter``: the function the task ran (its figure is chosen by it), the task's name if None."""
    figure = _figure(adapter or task, result)
    return f"{MARK}{task}: done in {seconds:.1f}s" + (f": {figure}" if figure else "")


def failed(task: str, seconds: float, error: BaseException) -> str:
    return f"{MARK}{task}: failed after {seconds:.1f}s: {type(error).__name__}: {error}"[:400]


def progress_line(log_line: str) -> tuple[str, bool] | None:
    """The text to show for a line of an Airflow log, and whether it is an epoch (a terminal
    overwrites one epoch with the next); None for every other line."""
    text = log_line.strip()
    if text.startswith("{"):
        try:
            text = str(json.loads(text).get("event", ""))
        except (ValueError, AttributeError):
            pass
    at = text.find(MARK)
    if at >= 0:
        return _TRAILER.sub("", text[at:]).rstrip("\"'}] "), False
    epoch = _EPOCH.search(text)
    if epoch:
        return epoch.group(0), True
    return None
