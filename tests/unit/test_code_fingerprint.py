"""The code fingerprint: what "nothing changed since the champion" compares for the code."""

from __future__ import annotations

from pathlib import Path

from visionops.core.run import code_fingerprint


def test_code_changes_count_and_docs_do_not(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("VISIONOPS_PROJECT_DIR", str(tmp_path))
    (tmp_path / "dags").mkdir()
    (tmp_path / "dags" / "flow.py").write_text("x = 1\n")
    (tmp_path / "requirements.txt").write_text("torch==2.14.1\n")
    (tmp_path / "README.md").write_text("docs\n")
    before = code_fingerprint()
    assert before == code_fingerprint() and len(before) == 16
    (tmp_path / "README.md").write_text("more docs\n")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_x.py").write_text("def test(): pass\n")
    assert code_fingerprint() == before  # documentation and tests train nothing
    (tmp_path / "dags" / "flow.py").write_text("x = 2\n")
    after_dag = code_fingerprint()
    assert after_dag != before
    (tmp_path / "requirements.txt").write_text("torch==2.14.2\n")
    assert code_fingerprint() != after_dag  # a dependency pin is code too
