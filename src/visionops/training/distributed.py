"""One model trained by several processes together: PyTorch's DistributedDataParallel, launched by
``torchrun`` from the train task (``train.processes`` > 1).

The train task writes what the processes need (the network as built, ``fit``'s settings, where the
splits and the checkpoint are, the MLflow run) into a private folder and runs
``python -m torch.distributed.run --standalone --nproc-per-node N -m visionops.training.distributed``
on it. Each process reads the memory-mapped splits, takes its share of every batch (the batches
are the same in all of them: one seed) and ``DistributedDataParallel`` averages the gradients,
over gloo on CPU or NCCL on GPUs (one GPU per process). Rank 0 alone logs the epochs to the train
task's MLflow run, writes the per-epoch checkpoint (so a retried task resumes, as with one process)
and hands the trained weights back; the task then logs the one model as usual.

One host: ``--standalone`` rendezvous. Several hosts would run the same command on each with a
shared rendezvous endpoint and a checkpoint on shared storage; not wired into the DAG yet.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from visionops.training.engine import EpochMetrics, FitResult, fit

log = logging.getLogger(__name__)
SPEC, RESULT = "spec.pt", "result.pt"


def fit_distributed(
    model: nn.Module,
    folder: Path,
    *,
    processes: int,
    device: torch.device,
    seed: int,
    checkpoint: Path | None = None,
    run_id: str | None = None,
    **fit_kwargs: Any,
) -> FitResult:
    """``fit`` on the ``train`` and ``val`` splits of ``folder`` by ``processes`` processes; the
    returned ``FitResult`` holds ``model`` with the trained weights, as ``fit`` would."""
    import mlflow

    with tempfile.TemporaryDirectory(prefix="visionops-ddp-") as tmp:
        spec = {
            "model": model.cpu(),
            "folder": str(folder),
            "device_type": device.type,
            "seed": seed,
            "checkpoint": str(checkpoint) if checkpoint is not None else None,
            "run_id": run_id,
            "fit_kwargs": fit_kwargs,
        }
        torch.save(spec, Path(tmp) / SPEC)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        cmd += [f"--nproc-per-node={processes}", "-m", "visionops.training.distributed", tmp]
        env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri()}
        log.info("train: %d processes (torchrun, %s)", processes, _backend(device.type))
        start = time.perf_counter()
        _relay(cmd, env)
        result = torch.load(Path(tmp) / RESULT, weights_only=False)  # written by rank 0 just now
    model.load_state_dict(result.pop("state"))
    model.to(device).eval()
    history = [EpochMetrics(**m) for m in result.pop("history")]
    log.info("train: %d processes done in %.1f s", processes, time.perf_counter() - start)
    return FitResult(model=model, history=history, **result)


def _backend(device_type: str) -> str:
    return "nccl" if device_type == "cuda" else "gloo"


def _relay(cmd: list[str], env: dict[str, str]) -> None:
    """Run ``cmd``, its output line by line into this task's log; a failure names the last lines."""
    with subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as proc:
        tail: list[str] = []
        assert proc.stdout is not None
        for line in proc.stdout:
            log.info("%s", line.rstrip())
            tail = [*tail[-39:], line.rstrip()]
    if proc.returncode != 0:
        raise RuntimeError(
            f"distributed training failed (torchrun exit {proc.returncode}):\n" + "\n".join(tail)
        )


def _epoch_logger(run_id: str):  # noqa: ANN202 - the on_epoch callback of rank 0
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from visionops.training.stage_parts import epoch_metrics, log_epoch

    client = MlflowClient()

    def on_epoch(m: EpochMetrics) -> None:
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, m.epoch) for k, v in epoch_metrics(m).items()]
        client.log_batch(run_id, metrics=metrics)
        log_epoch(m)

    return on_epoch


def _worker(folder: str) -> None:
    """One process of the group (torchrun sets RANK, LOCAL_RANK, WORLD_SIZE and the rendezvous)."""
    import torch.distributed as dist

    from visionops.data.preprocess import load_split

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    spec = torch.load(Path(folder) / SPEC, weights_only=False)  # written by the train task just now
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if spec["device_type"] == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    dist.init_process_group(_backend(spec["device_type"]))
    try:
        rank = dist.get_rank()
        split = Path(spec["folder"])
        on_epoch = _epoch_logger(spec["run_id"]) if rank == 0 and spec["run_id"] else None
        checkpoint = Path(spec["checkpoint"]) if spec["checkpoint"] else None
        result = fit(
            spec["model"],
            load_split(split, "train"),
            load_split(split, "val"),
            device=device,
            seed=spec["seed"],
            on_epoch=on_epoch,
            checkpoint=checkpoint,
            **spec["fit_kwargs"],
        )
        if rank == 0:
            out = {f.name: getattr(result, f.name) for f in fields(result)}
            out.pop("model")
            out["history"] = [asdict(m) for m in result.history]
            out["state"] = {k: v.cpu() for k, v in result.model.state_dict().items()}
            torch.save(out, Path(folder) / RESULT)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    _worker(sys.argv[1])
