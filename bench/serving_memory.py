"""The server's memory under a small request of huge images: with the per-request budget and without.

Run: .venv/bin/python bench/serving_memory.py [--images 12] [--side 6000]

A small_cnn classifier (untrained: what it answers does not matter here) is logged and registered
in a temporary SQLite store, and ``visionops serve`` started on it twice: with the packaged budget
(``serving.max_pixels_per_request``, ``serving.max_decoded_side``: the defaults), and with the
budget lifted through its environment variables (every image decoded at full size, as before the
budget). Each gets the same request, ``--images`` PNGs of ``--side`` x ``--side`` grey pixels
(about half a megabyte in all for 12 x 6000), and the server process's resident memory is sampled
every 20 ms while it answers. Printed: idle and peak RSS of each, and the ratio of the growths.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import psutil
from PIL import Image

LIFTED = {
    "VISIONOPS_SERVING_MAX_PIXELS_PER_REQUEST": str(2_000_000_000),
    "VISIONOPS_SERVING_MAX_DECODED_SIDE": str(65_536),
}


def register(root: Path) -> str:
    import mlflow
    from visionops.core import tracking
    from visionops.models import build_model
    from visionops.models.wrappers import NormalizedNet
    from visionops.release import registry
    from visionops.serving.model import log_classifier

    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root}/mlflow.db"
    tracking.configure()
    net = NormalizedNet(
        build_model("small_cnn", in_channels=1, image_size=16, num_classes=2, dropout=0.0),
        [0.5],
        [0.25],
    ).eval()
    example = np.zeros((2, 1, 16, 16), np.uint8)
    (root / "w").mkdir()
    with mlflow.start_run(experiment_id=tracking.experiment_id("bench-serving")) as run:
        uris = log_classifier(
            net, labels=["a", "b"], image_size=16, channels=1, example=example, workdir=root / "w"
        )
    registry.register_version("bench-serving", uris["model_uri"], run.info.run_id, {}, "bench")
    return "bench-serving/1"


def measure(ref: str, root: Path, body: bytes, extra_env: dict[str, str]) -> tuple[int, int, str]:
    port = 5100 + os.getpid() % 500
    env = {**os.environ, **extra_env}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    cmd = [str(Path(sys.executable).parent / "visionops"), "serve", ref, "--port", str(port)]
    with (root / "serve.log").open("a") as log:
        server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2).close()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "server did not start"
                time.sleep(0.5)
        proc = psutil.Process(server.pid)
        idle, peak, done = proc.memory_info().rss, [0], threading.Event()

        def watch() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], proc.memory_info().rss)
                time.sleep(0.02)

        watcher = threading.Thread(target=watch)
        watcher.start()
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations", body, {"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=600) as resp:
                rows = json.loads(resp.read())["predictions"]
        finally:
            done.set()
            watcher.join()
        statuses = ",".join(sorted({r["status"] for r in rows}))
        return idle, peak[0], f"{len(rows)} rows ({statuses})"
    finally:
        server.terminate()
        server.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument("--side", type=int, default=6000)
    args = parser.parse_args()
    buf = io.BytesIO()
    Image.fromarray(np.zeros((args.side, args.side), np.uint8)).save(buf, format="PNG")
    image = base64.b64encode(buf.getvalue()).decode()
    body = json.dumps({"inputs": {"image": [image] * args.images}}).encode()
    print(f"request: {args.images} PNGs of {args.side}x{args.side}, {len(body) / 1e6:.2f} MB")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ref = register(root)
        growth = {}
        for name, env in (("budget", {}), ("no budget", LIFTED)):
            idle, peak, answered = measure(ref, root, body, env)
            growth[name] = peak - idle
            print(
                f"{name:>10}: idle {idle / 2**20:6.0f} MiB, peak {peak / 2**20:6.0f} MiB, "
                f"growth {growth[name] / 2**20:6.0f} MiB; {answered}"
            )
    print(f"growth ratio (budget / no budget): {growth['budget'] / growth['no budget']:.3f}")


if __name__ == "__main__":
    main()
