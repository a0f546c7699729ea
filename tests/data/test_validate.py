"""The manifest validation suite (real Great Expectations) against good and broken data."""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from visionops.data.validate import (
    DataValidationError,
    ValidationReport,
    validate_manifest,
)


def _write_png(path: Path, shade: int, mode: str = "L") -> Path:
    """A tiny real PNG whose content (and so sha256) depends on ``shade``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (8, 6), color=shade if mode == "L" else (shade, 0, 0)).save(path)
    return path


def _manifest(files: list[tuple[Path, str | None]]) -> pd.DataFrame:
    """Describe real files the way ingest does: hash, size, mode and decode error."""
    rows = []
    for path, label in files:
        data = path.read_bytes()
        row = {
            "path": str(path),
            "label": label,
            "sha256": hashlib.sha256(data).hexdigest(),
            "width": pd.NA,
            "height": pd.NA,
            "mode": None,
            "decode_error": None,
        }
        try:
            with Image.open(path) as image:
                image.load()
                row.update(width=image.width, height=image.height, mode=image.mode)
        except Exception as exc:  # noqa: BLE001 - any decode failure is data, not a crash
            row["decode_error"] = f"{type(exc).__name__}: {exc}"
        rows.append(row)
    return pd.DataFrame(rows)


@pytest.fixture
def clean_files(tmp_path: Path) -> list[tuple[Path, str | None]]:
    """Three classes of three distinct images each."""
    files = []
    for c, label in enumerate(["cat", "dog", "owl"]):
        for i in range(3):
            path = _write_png(tmp_path / "raw" / label / f"{i}.png", shade=30 * c + i)
            files.append((path, label))
    return files


def _issue(report: ValidationReport, expectation: str, column: str):
    matches = [i for i in report.issues if i.expectation == expectation and i.column == column]
    assert len(matches) == 1, f"expected one {expectation} issue on {column}: {report.issues}"
    return matches[0]


def test_clean_manifest_passes_and_writes_data_docs(
    clean_files, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    docs = tmp_path / "out" / "docs"

    report = validate_manifest(
        _manifest(clean_files), min_images_per_class=3, docs_dir=docs, suite_name="clean_suite"
    )

    assert report.success is True
    assert report.issues == []
    assert report.statistics["n_images"] == 9
    assert report.statistics["n_classes"] == 3
    assert report.statistics["images_per_class"] == {"cat": 3, "dog": 3, "owl": 3}
    n = report.statistics["evaluated_expectations"]
    assert n >= 5 and report.statistics["successful_expectations"] == n
    assert report.data_docs_index == docs / "index.html"
    assert report.data_docs_index.is_file()
    assert "clean_suite" in report.data_docs_index.read_text()
    assert list((docs / "validations").rglob("*.html")), "no validation page was rendered"
    assert list(workdir.iterdir()) == [], "GX wrote into the working directory"
    assert report.summary().startswith("Data validation passed")


def test_undecodable_file_fails_and_is_named(clean_files, tmp_path: Path) -> None:
    broken = tmp_path / "raw" / "cat" / "truncated.png"
    broken.write_bytes(clean_files[0][0].read_bytes()[:40])
    manifest = _manifest([*clean_files, (broken, "cat")])
    assert manifest["decode_error"].notna().sum() == 1  # the fixture really is undecodable

    report = validate_manifest(manifest, min_images_per_class=3, docs_dir=tmp_path / "docs")

    assert report.success is False
    issue = _issue(report, "expect_column_values_to_be_null", "decode_error")
    assert [row["path"] for row in issue.offending] == [str(broken)]
    assert issue.offending[0]["observed"] == manifest["decode_error"].dropna().iloc[0]
    assert "decode" in issue.description
    assert str(broken) in report.summary()
    assert "expect_column_values_to_be_null" in report.summary()
    assert report.data_docs_index is not None and report.data_docs_index.is_file()


def test_same_content_under_two_labels_is_an_error_naming_both(clean_files, tmp_path: Path) -> None:
    original = clean_files[1][0]
    copy = shutil.copy(original, tmp_path / "raw" / "dog" / "copy_of_cat.png")
    report = validate_manifest(
        _manifest([*clean_files, (Path(copy), "dog")]),
        min_images_per_class=3,
        docs_dir=tmp_path / "docs",
    )

    assert report.success is False
    issue = _issue(report, "expect_column_values_to_be_null", "label_conflict")
    assert issue.severity == "error"
    observed = {row["path"]: row["observed"] for row in issue.offending}
    assert set(observed) == {str(original), str(copy)}
    assert observed[str(original)] == f"labelled 'cat'; same content as {copy} (dog)"
    assert observed[str(copy)] == f"labelled 'dog'; same content as {original} (cat)"
    summary = report.summary()
    assert str(original) in summary and str(copy) in summary and "ERROR" in summary
    # Reported once, as the conflict, not also as a dropped copy. Two of 11 images conflict (over
    # validate.max_label_conflict_fraction) and quarantining them leaves cat and dog too small.
    assert {(i.column, i.severity) for i in report.issues} == {
        ("label_conflict", "error"),
        ("count", "error"),
    }


def test_same_label_copies_are_dropped_with_a_warning(clean_files, tmp_path: Path) -> None:
    original = clean_files[4][0]  # dog/1.png
    copies = [
        shutil.copy(original, tmp_path / "raw" / "dog" / name) for name in ("1_again.png", "z.png")
    ]
    manifest = _manifest([*clean_files, *((Path(c), "dog") for c in copies)])
    report = validate_manifest(manifest, min_images_per_class=3, docs_dir=tmp_path / "docs")

    assert report.success is True
    issue = _issue(report, "expect_column_values_to_be_null", "duplicate_of")
    assert issue.severity == "warning"
    assert issue.description.startswith("2 file(s) have the same content (sha256) and label")
    # The first by path is kept: dog/1.png sorts before dog/1_again.png and dog/z.png.
    assert {row["path"]: row["observed"] for row in issue.offending} == {
        str(c): str(original) for c in copies
    }
    assert report.statistics["split_plan"]["n_duplicates_dropped"] == 2
    assert "WARNING" in report.summary() and all(str(c) in report.summary() for c in copies)
    index = report.data_docs_index.read_text() + "".join(
        p.read_text() for p in (tmp_path / "docs" / "validations").rglob("*.html")
    )
    assert "duplicate_of" in index  # the Data Docs show the check


@pytest.mark.parametrize("missing", [None, float("nan"), "", "   "])
def test_missing_label_fails(clean_files, tmp_path: Path, missing) -> None:
    unlabelled = _write_png(tmp_path / "raw" / "unsorted" / "x.png", shade=250)
    report = validate_manifest(
        _manifest([*clean_files, (unlabelled, missing)]),
        min_images_per_class=3,
        docs_dir=tmp_path / "docs",
    )

    assert report.success is False
    assert [i.column for i in report.issues] == ["label"]
    assert [row["path"] for row in report.issues[0].offending] == [str(unlabelled)]
    assert "label" in report.issues[0].description
    assert str(unlabelled) in report.summary()
    assert report.statistics["n_classes"] == 3  # a missing label is not a class


def test_class_with_too_few_images_names_label_and_count(clean_files, tmp_path: Path) -> None:
    rare = _write_png(tmp_path / "raw" / "eel" / "0.png", shade=200)
    report = validate_manifest(
        _manifest([*clean_files, (rare, "eel")]), min_images_per_class=2, docs_dir=tmp_path / "docs"
    )

    assert report.success is False
    issue = _issue(report, "expect_column_values_to_be_between", "count")
    # One class of four is 25% of them: over validate.max_dropped_class_fraction (20%).
    assert issue.offending == [
        {
            "label": "eel",
            "why": "eel: 1 usable of 1 images; needs validate.min_images_per_class=2",
            "observed": 1,
        }
    ]
    assert "fewer than 2" in issue.description
    assert "eel" in report.summary()
    assert report.statistics["images_per_class"]["eel"] == 1


def test_many_offending_rows_are_capped_but_counted(tmp_path: Path) -> None:
    manifest = pd.DataFrame(
        {
            "path": [f"/data/{i}.png" for i in range(30)],
            "label": ["a"] * 30,
            "sha256": [f"{i:064x}" for i in range(30)],
            "decode_error": ["cannot identify image file"] * 25 + [None] * 5,
        }
    )
    report = validate_manifest(manifest, min_images_per_class=1, docs_dir=tmp_path / "docs")

    issue = _issue(report, "expect_column_values_to_be_null", "decode_error")
    assert len(issue.offending) == 20
    assert issue.description.startswith("25 ")
    assert "/data/0.png" in report.summary()


def test_report_round_trips_json(clean_files, tmp_path: Path) -> None:
    broken = tmp_path / "raw" / "owl" / "empty.png"
    broken.write_bytes(b"")
    report = validate_manifest(
        _manifest([*clean_files, (broken, None)]),
        min_images_per_class=4,
        docs_dir=tmp_path / "docs",
    )
    assert len(report.issues) >= 3

    as_json = json.dumps(report.to_dict(), allow_nan=False)
    again = ValidationReport.from_dict(json.loads(as_json))

    assert again == report
    assert again.to_dict() == report.to_dict()
    assert again.summary() == report.summary()


def test_data_validation_error_carries_report(clean_files, tmp_path: Path) -> None:
    rare = _write_png(tmp_path / "raw" / "eel" / "0.png", shade=200)
    report = validate_manifest(
        _manifest([*clean_files, (rare, "eel")]), min_images_per_class=2, docs_dir=tmp_path / "docs"
    )

    error = DataValidationError(report)
    assert str(error) == report.summary()
    assert error.report is report
    restored = pickle.loads(pickle.dumps(error))
    assert restored.report == report and str(restored) == str(error)


def test_missing_column_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sha256"):
        validate_manifest(
            pd.DataFrame({"path": ["/a.png"], "label": ["a"], "decode_error": [None]}),
            min_images_per_class=1,
            docs_dir=tmp_path / "docs",
        )


def test_empty_manifest_fails(tmp_path: Path) -> None:
    empty = pd.DataFrame(
        {c: pd.Series(dtype=object) for c in ("path", "label", "sha256", "decode_error")}
    )
    report = validate_manifest(empty, min_images_per_class=1, docs_dir=tmp_path / "docs")

    assert report.success is False
    assert [i.expectation for i in report.issues] == ["expect_table_row_count_to_be_between"]
    assert "no images" in report.summary()


def test_repeated_runs_reuse_names_and_docs_dir(clean_files, tmp_path: Path) -> None:
    manifest = _manifest(clean_files)
    for _ in range(3):
        report = validate_manifest(manifest, min_images_per_class=3, docs_dir=tmp_path / "docs")
        assert report.success is True


@pytest.mark.integration  # a fresh interpreter (subprocess)
def test_module_import_does_not_load_great_expectations() -> None:
    code = (
        "import sys, visionops.data.validate; "
        "assert 'great_expectations' not in sys.modules; assert 'pandas' not in sys.modules"
    )
    subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        env={"PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")},
    )
