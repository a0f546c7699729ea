"""Airflow itself finds the routing hook in the plugins folder and applies it to new task instances."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# In a fresh interpreter: Airflow loads its cluster policies once, at import.
PROBE = """
import json
from airflow import settings
from airflow.policies import hookimpl  # noqa: F401
hooks = settings.get_policy_plugin_manager().hook.task_instance_mutation_hook.get_hookimpls()
print(json.dumps([h.plugin_name for h in hooks]))

class TI:
    dag_id, task_id, queue, pool = "train_pipeline", "train", "default", "default_pool"

for conf in ({"overrides": {"train.device": "auto"}}, {"overrides": {"train.device": "cpu"}}):
    ti = TI()
    settings.task_instance_mutation_hook(ti, dag_run=type("R", (), {"conf": conf})())
    print(ti.queue, ti.pool)
"""


def test_airflow_loads_the_hook_from_the_plugins_folder(tmp_path: Path) -> None:
    env = {
        "PATH": f"{Path(sys.executable).parent}",
        "AIRFLOW_HOME": str(tmp_path),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "VISIONOPS_GPU_QUEUE": "gpu",
        "VISIONOPS_CONFIG": str(REPO / "conf" / "digits.yaml"),
        "VISIONOPS_HOME": str(tmp_path / "home"),
    }
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    # The policy Airflow made from plugins/airflow_local_settings.py (its name for such a module).
    assert json.loads(lines[-3]) == ["AirflowLocalSettingsPolicy"], lines
    assert lines[-2:] == ["gpu gpu", "default default_pool"], lines
