"""The task modules preloaded where Airflow forks its tasks: which processes preload, and the list
kept complete against what the adapters import."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from visionops.pipeline import preload

PIPELINE = Path(preload.__file__).parent
ADAPTER_FILES = ("stages.py", "batch.py", "continuous.py", "approval.py")


def _imported_inside_functions(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef):
            for inner in ast.walk(node):
                if isinstance(inner, ast.ImportFrom) and (inner.module or "").startswith(
                    "visionops."
                ):
                    found.add(inner.module)
    return found


def test_every_module_an_adapter_imports_is_preloaded() -> None:
    wanted = set().union(*(_imported_inside_functions(PIPELINE / f) for f in ADAPTER_FILES))
    assert "visionops.training.stage" in wanted  # the reading finds the adapters' imports
    assert wanted - set(preload.TASK_MODULES) == set()


@pytest.mark.parametrize(
    ("argv", "executor", "expected"),
    [
        (["celery", "worker", "--queues", "default"], "CeleryExecutor", True),
        (["scheduler"], "LocalExecutor", True),
        (["scheduler"], "airflow.executors.local_executor.LocalExecutor", True),
        (["scheduler"], "CeleryExecutor", False),  # its tasks run on the workers
        (["api-server"], "LocalExecutor", False),
        (["dag-processor"], "LocalExecutor", False),
        (["triggerer"], "LocalExecutor", False),
        (["dags", "test", "train_pipeline"], "LocalExecutor", False),  # tasks run in this process
        ([], "LocalExecutor", False),
    ],
)
def test_only_the_processes_that_fork_tasks_preload(
    argv: list[str], executor: str, expected: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VISIONOPS_PRELOAD", raising=False)
    assert preload.forks_tasks(argv, executor) is expected
    monkeypatch.setenv("VISIONOPS_PRELOAD", "0")
    assert preload.forks_tasks(argv, executor) is False


def test_preload_imports_the_modules_and_names_one_that_fails() -> None:
    assert preload.preload(("visionops.core.contracts", "visionops.no_such_module")) == [
        "visionops.no_such_module"
    ]
