"""Following a run as it goes: the task lines (``visionops.pipeline.progress``) of the Airflow log a
command writes to a file, printed as they come; epochs overwrite one another on a terminal."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import TextIO

from visionops.pipeline.progress import MARK, progress_line


def run_following(
    cmd: list[str], env: dict[str, str], cwd: Path, log_file: Path, out: TextIO | None = None
) -> int:
    """Run ``cmd`` with its output in ``log_file`` and print the progress lines of that log while
    it runs; returns its exit code."""
    out = out or sys.stdout
    live = out.isatty()
    pending = False  # an epoch line waiting on a terminal, to be overwritten or ended
    with log_file.open("w") as sink, log_file.open() as source:
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=sink, stderr=subprocess.STDOUT)
        partial = ""
        while True:
            done = proc.poll() is not None
            chunk = source.read()
            lines = (partial + chunk).split("\n")
            partial = "" if done else lines.pop()  # the last piece may be half a line
            for line in lines:
                shown = progress_line(line)
                if shown is None:
                    continue
                text, epoch = shown
                if live and epoch:
                    out.write(f"\r  {text}\033[K")
                    pending = True
                else:
                    out.write(("\n" if pending else "") + (f"  {text}" if epoch else text) + "\n")
                    pending = False
                out.flush()
            if done:
                break
            time.sleep(0.5)
    if pending:
        out.write("\n")
    return proc.returncode


class TaskStates:
    """A run on the stack, followed through the REST API: a line when a task instance starts and when
    it ends (its state and duration). The figures are in the task logs (the Airflow UI)."""

    ENDED = ("success", "failed", "skipped", "upstream_failed", "removed")

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stdout
        self.seen: dict[str, str] = {}

    def show(self, tasks: list[dict]) -> None:
        for t in sorted(tasks, key=lambda t: (t.get("start_date") or "~", t["task_id"])):
            index = t.get("map_index", -1)
            label = t["task_id"] + (f"[{index}]" if isinstance(index, int) and index >= 0 else "")
            state, before = t.get("state"), self.seen.get(label)
            if state == before or state is None:
                continue
            self.seen[label] = state
            if state == "running":
                self.out.write(f"{MARK}{label}: started\n")
            elif state in self.ENDED:
                took = t.get("duration")
                when = f" after {took:.1f}s" if isinstance(took, int | float) else ""
                self.out.write(f"{MARK}{label}: {state}{when}\n")
            self.out.flush()
