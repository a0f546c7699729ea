"""Writes that could lose data, tried: what ``visionops predict`` and the ``batch_predict`` DAG's
scoring do with an output that exists, that is a folder, and when writing fails or is read midway.

An existing output is refused unless ``--overwrite`` (``overwrite`` in the DAG) before any image is
scored; a folder is a clear error; the CSV is written under a temporary name and renamed over the
target, so a reader sees the old file or the whole new one, and a failed write leaves the old one.
(``visionops data add`` writing outside its source is tried in tests/data/test_watch_and_add.py.)
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from PIL import Image

from visionops.cli.main import main
from visionops.core.constants import CHAMPION
from visionops.core.errors import InputError
from visionops.release import registry
from visionops.serving import batch


@pytest.fixture()
def scored(good_and_bad: str, helpers, tmp_path: Path) -> dict[str, Any]:
    """The good model as champion, and a folder of four images to label."""
    registry.set_alias(good_and_bad, CHAMPION, "1")
    folder = tmp_path / "inbox"
    folder.mkdir()
    x, _ = helpers.images(4, seed=5)
    for i, img in enumerate(x[:, 0]):
        Image.fromarray(img).save(folder / f"{i}.png")
    return {"name": good_and_bad, "folder": folder}


def _predict(scored: dict[str, Any], output: Path, *extra: str) -> int:
    args = ["predict", "--model", scored["name"], "--input", str(scored["folder"])]
    return main([*args, "--output", str(output), *extra])


def test_an_existing_output_is_refused_unless_overwrite(
    scored: dict[str, Any], tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "labels.csv"
    out.write_text("kept: a file the user had\n")
    calls: list[int] = []
    real = batch.predict_files
    monkeypatch.setattr(batch, "predict_files", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert _predict(scored, out) == 2
    err = capsys.readouterr().err
    assert f"output {out} exists; pass --overwrite" in err
    assert out.read_text() == "kept: a file the user had\n" and calls == []  # nothing scored
    assert _predict(scored, out, "--overwrite") == 0
    frame = pd.read_csv(out, dtype=str)
    assert len(frame) == 4 and set(frame["model_version"]) == {"1"}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".labels")] == []


def test_an_output_that_is_a_folder_is_a_clear_error(
    scored: dict[str, Any], tmp_path: Path, capsys
) -> None:
    folder = tmp_path / "results"
    folder.mkdir()
    assert _predict(scored, folder) == 2
    assert f"output {folder} is a folder; name a CSV file inside it" in capsys.readouterr().err
    assert _predict(scored, folder, "--overwrite") == 2
    assert list(folder.iterdir()) == []


def test_the_dag_scoring_refuses_an_existing_output_path(
    scored: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "given.csv"
    out.write_text("earlier batch\n")
    ref = batch.resolve_model(scored["name"])
    with pytest.raises(InputError, match="exists; pass --overwrite"):
        batch.batch_predict(ref, str(scored["folder"]), str(out), run_id="manual__1")
    assert out.read_text() == "earlier batch\n"
    done = batch.batch_predict(
        ref, str(scored["folder"]), str(out), run_id="manual__1", overwrite=True
    )
    assert done.n_images == 4 and len(pd.read_csv(out)) == 4


def test_a_failed_write_leaves_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "out.csv"
    target.write_bytes(b"old,content\n")

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(batch.os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        batch.write_whole(str(target), b"new," * 1000)
    assert target.read_bytes() == b"old,content\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


def test_a_reader_sees_the_old_file_or_the_whole_new_one(tmp_path: Path) -> None:
    target = tmp_path / "out.csv"
    old, new = b"o" * 1000, b"n" * 20_000_000
    target.write_bytes(old)
    seen: set[int] = set()
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            seen.add(len(target.read_bytes()))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for _ in range(3):
            batch.write_whole(str(target), new)
            batch.write_whole(str(target), old)
    finally:
        stop.set()
        reader.join()
    assert seen <= {len(old), len(new)} and seen, seen


def test_the_stack_files_holding_secrets_end_private_whatever_was_there(tmp_path: Path) -> None:
    """``stack.env`` and ``stack.json`` hold the stack's passwords: mode 600 even where a readable
    file (or a temporary left by a crash) was already there."""
    import stat

    from visionops.cli.stack import write_env_file
    from visionops.cli.stack_proc import StackState

    for name in ("stack.env", "stack.json", ".stack.json.tmp"):
        (tmp_path / name).write_text("{}")
        (tmp_path / name).chmod(0o644)
    write_env_file(tmp_path, {"AIRFLOW_ADMIN_PASSWORD": "s3cret", "HOME": "/root"})
    state = StackState(tmp_path)
    state.info["secret"] = "s3cret"
    state.save()
    for name in ("stack.env", "stack.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
    assert (tmp_path / "stack.env").read_text() == 'export AIRFLOW_ADMIN_PASSWORD="s3cret"\n'
    leftovers = {p.name for p in tmp_path.iterdir()} - {"stack.env", "stack.json"}
    assert leftovers == {".stack.json.tmp"}  # the stale one untouched, no new temporary left
