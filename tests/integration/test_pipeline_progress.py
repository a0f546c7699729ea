"""``visionops pipeline run`` follows the log of the Airflow command it runs: the task lines and the
epochs are printed as the log grows, the rest stays in the log file, the command's exit code is
kept."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from visionops.cli.follow import run_following

pytestmark = pytest.mark.integration


def test_a_command_is_followed_as_its_log_grows(tmp_path: Path) -> None:
    # A stand-in for `airflow dags test`: lines written over time, most of them noise.
    script = (
        "import time\n"
        "for line in ['noise', '[info] visionops task train: started [visionops]',\n"
        "             'INFO epoch 1: train_loss 1.0 val_accuracy 0.5 (1.0s)',\n"
        "             'INFO epoch 2: train_loss 0.5 val_accuracy 0.7 (1.0s)',\n"
        "             '[info] visionops task train: done in 2.0s [visionops]']:\n"
        "    print(line, flush=True); time.sleep(0.3)\n"
        "raise SystemExit(3)\n"
    )
    out = io.StringIO()
    code = run_following([sys.executable, "-c", script], {}, tmp_path, tmp_path / "log", out)
    assert code == 3
    assert out.getvalue().splitlines() == [
        "visionops task train: started",
        "  epoch 1: train_loss 1.0 val_accuracy 0.5 (1.0s)",
        "  epoch 2: train_loss 0.5 val_accuracy 0.7 (1.0s)",
        "visionops task train: done in 2.0s",
    ]
    assert "noise" in (tmp_path / "log").read_text()  # the whole log is kept
