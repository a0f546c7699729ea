"""Small helpers shared by the tests (pytest puts this folder on ``sys.path`` through its conftest).

``left_right``: the two-class "bright left half / bright right half" images, separable by a tiny
CNN in a few steps; mirroring swaps the classes (which the test-time augmentation tests rely on).
``tuning_config`` and ``run_tuning``: a small tuning setup on them, for the unit and the integration
tuning tests. ``YALE`` and ``COIL20``: the data sets of ``../shared/datasets`` (not shipped; CI has
them); a test on one carries ``needs_shared(YALE)`` (or calls ``require_shared``): skipped where the
data set is absent, failed there when ``VISIONOPS_REQUIRE_SHARED=1``. ``yale_fold``: one
cross-validation fold of the unknown-people tests (the ``yale`` fixture of tests/conftest.py loads the
photos).
``glyph_folder``: the real digits as image files plus a class ``O`` of copies of some ``0`` images
(a glyph-like set with two classes drawn identically, for the data-quality tests).
``free_port`` and ``stop_process_group``: for the servers a test starts; ``model_server`` runs
``mlflow models serve`` on a registered model and ``post_json`` sends it a request.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO.parent / "shared" / "datasets"  # not shipped: see needs_shared
YALE = SHARED_DATASETS / "yalefaces"
COIL20 = SHARED_DATASETS / "coil20"
REQUIRE_SHARED = "VISIONOPS_REQUIRE_SHARED"


def shared_dataset_missing(dataset: Path) -> str | None:
    """Why a data set of ``../shared/datasets`` cannot be used here (no ``labels.csv``), else None."""
    if (dataset / "labels.csv").is_file():
        return None
    return f"the data set {dataset.name} is not at {dataset} (../shared/datasets is not shipped)"


def require_shared(dataset: Path) -> None:
    """Skip the calling test when ``dataset`` is absent; fail it instead when
    ``VISIONOPS_REQUIRE_SHARED=1`` (CI, which has the data sets: a test there must run, not skip)."""
    import pytest

    if (why := shared_dataset_missing(dataset)) is None:
        return
    if os.environ.get(REQUIRE_SHARED) == "1":
        pytest.fail(f"{REQUIRE_SHARED}=1 but {why}", pytrace=False)
    pytest.skip(why)


def needs_shared(dataset: Path) -> Any:
    """The mark of a test (or, as ``pytestmark``, a module) on a data set of ``../shared/datasets``:
    tests/conftest.py calls ``require_shared`` on it before the test's fixtures are set up."""
    import pytest

    return pytest.mark.shared_dataset(dataset)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def left_right(
    n: int, seed: int, size: int = 8, *, noise: int = 40, bright: int = 200
) -> tuple[np.ndarray, np.ndarray]:
    """uint8 ``(n, 1, size, size)`` images and int64 labels: class 0 bright on the left half, 1 on the right."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.integers(0, noise, (n, 1, size, size))
    half = size // 2
    x[y == 0, :, :, :half] += bright
    x[y == 1, :, :, half:] += bright
    return x.astype(np.uint8), y.astype(np.int64)


def left_right_split(n: int, seed: int, size: int = 8, *, noise: int = 60, bright: int = 180):  # noqa: ANN201
    """The same as a ``visionops.data.preprocess.Split`` (the trainer's input), noisier by default."""
    from visionops.data.preprocess import Split

    return Split(*left_right(n, seed, size, noise=noise, bright=bright))


def tuning_config(**overrides: Any):  # noqa: ANN201 - a visionops PipelineConfig
    """The pipeline's defaults, small: 8x8 images, batches of 16, on the CPU, 4 trials of 3 epochs."""
    from visionops.core.config import PipelineConfig, build_config

    base = {
        "data.image_size": 8,
        "train.batch_size": 16,
        "train.device": "cpu",
        "tune.n_trials": 4,
        "tune.epochs_per_trial": 3,
    }
    return build_config(PipelineConfig().to_dict(), {**base, **overrides})


def run_tuning(cfg: Any, storage: Any, name: str, tuning_run_id: str | None = None, n: int = 64):  # noqa: ANN201
    """``run_study`` on ``n`` training and 32 validation images of ``left_right_split``."""
    from visionops.tuning import run_study

    return run_study(
        cfg,
        left_right_split(n, 0),
        left_right_split(32, 1),
        mean=[0.3],
        std=[0.3],
        num_classes=2,
        storage=storage,
        study_name=name,
        tuning_run_id=tuning_run_id,
    )


def stop_process_group(server: subprocess.Popen) -> None:
    """Stop a server started with ``start_new_session=True`` and everything it started (uvicorn, workers)."""
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)
    try:  # children may outlive the script's own process for a moment
        os.killpg(server.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def start_project_mlflow_server(
    folder: Path, backend_uri: str, env: dict[str, str], timeout_s: float = 90.0
) -> tuple[subprocess.Popen, str]:
    """The project's MLflow server (``mlflow/start.sh``) on a free port, in its own session, with
    artifacts under ``folder``; returns it and its URL once ``/health`` answers (no login needed).

    ``env`` adds to or overrides the server's settings (``MLFLOW_AUTH`` and the auth store, say).
    The caller stops it with ``stop_process_group``; if it never answers, it is stopped here.
    """
    port = free_port()
    bin_dir = Path(sys.executable).parent
    full = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "MLFLOW_BACKEND_STORE_URI": backend_uri,
        "MLFLOW_ARTIFACTS_DESTINATION": str(folder / "artifacts"),
        "MLFLOW_HOST": "127.0.0.1",
        "MLFLOW_PORT": str(port),
        "MLFLOW_WORKERS": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
        **env,
    }
    # The test session's own store must not leak into the server's.
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_SERVER_ALLOWED_HOSTS"):
        full.pop(key, None)
    log = folder / "server.log"
    with log.open("wb") as handle:
        server = subprocess.Popen(
            [str(REPO / "mlflow" / "start.sh")],
            cwd=folder,
            env=full,
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            assert server.poll() is None, (
                f"start.sh exited with {server.returncode} before answering:\n{log.read_text()}"
            )
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        return server, url
            except OSError:
                pass
            assert time.monotonic() < deadline, (
                f"no 200 from {url}/health within {timeout_s:.0f} s:\n{log.read_text()}"
            )
            time.sleep(0.5)
    except BaseException:
        stop_process_group(server)
        raise


@contextlib.contextmanager
def serving_process(
    cmd: list[str], port: int, workdir: Path, env: dict[str, str] | None, timeout_s: float
) -> Iterator[subprocess.Popen]:
    """``cmd`` (a model server listening on ``port``), ready when ``/ping`` answers; yields the
    process; stops its whole process group after."""
    env = dict(env or os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    log_path = workdir / "serve.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True
        )
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as resp:
                        if resp.status == 200:
                            break
                except OSError:
                    pass
                assert proc.poll() is None, log_path.read_text()[-3000:]
                assert time.monotonic() < deadline, (
                    f"{cmd[:3]} did not answer /ping in {timeout_s} s"
                )
                time.sleep(1)
            yield proc
        finally:
            stop_process_group(proc)


@contextlib.contextmanager
def model_server(
    model_uri: str, workdir: Path, env: dict[str, str] | None = None, timeout_s: float = 180
) -> Iterator[int]:
    """``mlflow models serve`` (local environment) on a free port, ready when ``/ping`` answers; yields the port."""
    port = free_port()
    cmd = [str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m", model_uri]
    cmd += ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]
    with serving_process(cmd, port, workdir, env, timeout_s):
        yield port


def post_json(port: int, body: dict[str, Any], timeout_s: float = 120) -> list[dict[str, Any]]:
    """POST ``body`` to a model server's ``/invocations``; its ``predictions``."""
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:
        return json.loads(resp.read())["predictions"]


def yale_fold(
    yale: dict[str, Any], strangers: list[str], few: tuple[int, int] | None = None, seed: int = 42
) -> dict[str, Any]:
    """One fold of the unknown-people tests: ``strangers`` held out of training, the rest enrolled.

    The enrolled people's photos are split as preprocess splits them (15% val, 15% test), or with
    ``few=(n_train, n_val)`` into that many training and validation photos a person (chosen by
    ``seed``) and the rest as test. The ``face_embedding`` head trained on the train split, the
    unknown threshold chosen from the train and val photos as the train stage chooses it, and the
    answers for the test photos and for the strangers' photos.
    """
    import torch

    from visionops.data.preprocess import Split, stratified_split
    from visionops.models import build_model
    from visionops.serving.unknown import (
        UNKNOWN,
        choose_threshold,
        distance_scores,
        nearest_distance,
        unknown_mask,
    )
    from visionops.training.engine import fit

    labels, emb = yale["labels"], yale["emb"]
    known = ~np.isin(labels, strangers)
    names = sorted(set(labels[known]))
    idx = np.flatnonzero(known)
    if few is None:
        split = stratified_split(labels[idx].tolist(), 0.15, 0.15, seed=seed)
    else:
        rng, split = np.random.default_rng(seed), np.full(len(idx), "test", dtype=object)
        for person in names:
            rows = rng.permutation(np.flatnonzero(labels[idx] == person))
            split[rows[: few[0]]] = "train"
            split[rows[few[0] : few[0] + few[1]]] = "val"
    part = {s: idx[split == s] for s in ("train", "val", "test")}
    y = {s: np.asarray([names.index(lb) for lb in labels[part[s]]]) for s in part}
    torch.manual_seed(0)
    head = build_model(
        "face_embedding", in_channels=128, image_size=1, num_classes=len(names), dropout=0.1
    )
    result = fit(
        head,
        Split(emb[part["train"]], y["train"]),
        Split(emb[part["val"]], y["val"]),
        max_epochs=40,
        batch_size=32,
        learning_rate=1e-2,
        weight_decay=1e-4,
        patience=40,
        seed=0,
        device=torch.device("cpu"),
    )
    # As the train stage chooses it (training.packaging.served_extras), with the default quantile.
    scores = distance_scores(emb[part["train"]], y["train"], emb[part["val"]], y["val"])
    threshold = choose_threshold("auto", None, scores, "distance")
    enrolled = np.concatenate([emb[part["train"]], emb[part["val"]]])

    def answer(rows: np.ndarray, threshold: float | None = threshold) -> list[str]:
        with torch.no_grad():
            best = result.model(torch.from_numpy(emb[rows])).argmax(1).numpy()
        far = unknown_mask(nearest_distance(emb[rows], enrolled)[0], threshold, "distance")
        return [UNKNOWN if f else names[b] for f, b in zip(far, best)]

    return {
        "names": names,
        "part": part,
        "y": y,
        "model": result.model,
        "threshold": threshold,
        "enrolled": enrolled,
        "test_answers": answer(part["test"]),
        "test_answers_unknown_off": answer(part["test"], None),
        "stranger_rows": np.flatnonzero(~known),
        "stranger_answers": answer(np.flatnonzero(~known)),
    }


def glyph_folder(root: Path, n_copies: int) -> Path:
    """Digits as ``root/<digit>/<i>.png`` and ``root/O/<i>.png``: copies of the first ``n_copies`` zeros."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = (digits.images * (255 / 16)).astype(np.uint8)
    for i, (img, label) in enumerate(zip(pixels, digits.target, strict=True)):
        path = root / str(label) / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(path)
    zeros = sorted((root / "0").glob("*.png"), key=lambda p: int(p.stem))[:n_copies]
    (root / "O").mkdir()
    for path in zeros:
        (root / "O" / path.name).write_bytes(path.read_bytes())
    return root


def small_face_set(root: Path, spoil: str = "subject05", n_spoiled: int = 6) -> Path:
    """The Yale faces as a set of small frontal photos (92x112 grey, the face filling most of the
    frame, the layout of many face collections), written as ``root/<person>/<photo>.png`` with a
    ``labels.csv``; ``n_spoiled`` photos of ``spoil`` are turned upside down (no usable face), so
    that person keeps fewer than the shipped ``validate.min_images_per_class``. Returns the csv."""
    from PIL import Image

    from visionops.data.face_detect import detect_dlib

    rows = ["path,label"]
    for person_dir in sorted((YALE / "images").iterdir()):
        for k, src in enumerate(sorted(person_dir.glob("*.png"))):
            with Image.open(src) as img:
                grey = img.convert("L")
            rgb = np.asarray(grey.convert("RGB"))
            (x1, y1, x2, y2), *_ = detect_dlib(rgb, 1, True, 0, 0)[0]
            side = 1.55 * max(x2 - x1, y2 - y1)  # the head, as such sets frame it
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2 + 0.08 * (y2 - y1)
            box = (cx - side / 2, cy - side * 112 / 92 / 2, cx + side / 2, cy + side * 112 / 92 / 2)
            small = grey.crop(tuple(round(v) for v in box)).resize(
                (92, 112), Image.Resampling.LANCZOS
            )
            if person_dir.name == spoil and k < n_spoiled:
                small = small.rotate(180)
            target = root / person_dir.name / src.name
            target.parent.mkdir(parents=True, exist_ok=True)
            small.save(target)
            rows.append(f"{person_dir.name}/{src.name},{person_dir.name}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root / "labels.csv"
