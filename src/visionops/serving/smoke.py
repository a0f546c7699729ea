"""The post-promotion smoke test: the new champion must load and predict in a fresh Python process."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def smoke_test(
    model_uri: str, images: np.ndarray, expected: list[str], timeout_s: int = 300
) -> None:
    """Load ``model_uri`` in a fresh Python process and check it labels ``images`` as ``expected``."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        batch = Path(tmp) / "images.npy"
        np.save(batch, images)
        env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri(),
            "MLFLOW_REGISTRY_URI": mlflow.get_registry_uri(),
        }
        proc = subprocess.run(
            [sys.executable, "-m", "visionops.serving.smoke", "smoke", model_uri, str(batch)],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout_s,
            cwd=tmp,
        )
    if proc.returncode != 0:
        raise RuntimeError(
            f"loading or predicting with {model_uri} failed in a fresh process: "
            f"{proc.stderr.strip()[-1500:]}"
        )
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    if got != list(expected):
        raise RuntimeError(
            f"{model_uri} in a fresh process labelled {got}, the evaluated model said {expected}"
        )


def _smoke_main(model_uri: str, batch: str) -> None:
    from visionops.core.interpreter import tune_gc

    tune_gc()
    from visionops.serving.model import held_out_params, load_classifier

    # Its stderr is shown only when it fails: MLflow's requirements warning would go unread here.
    model = load_classifier(model_uri, check_requirements=False)
    out = model.predict(np.load(batch), params=held_out_params(model) or None)
    if not out["probability"].between(0.0, 1.0).all():
        raise SystemExit(f"probabilities outside [0, 1]: {out['probability'].tolist()}")
    print(json.dumps(out["label"].astype(str).tolist()))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description="internal: the post-promotion smoke test's fresh process"
    )
    parser.add_argument("cmd", choices=["smoke"])
    parser.add_argument("model_uri")
    parser.add_argument("batch")
    args = parser.parse_args()
    _smoke_main(args.model_uri, args.batch)
