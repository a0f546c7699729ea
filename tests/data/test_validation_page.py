"""The validation page as a user meets it: the real validate stage (real GX, real MLflow store) logs
one self-contained page, ``validation_report.html`` at the validate run's artifact root, that shows
every expectation of every suite with its result and renders without any http(s) resource."""

from __future__ import annotations

import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

import mlflow
from visionops.core.context import RunContext
from visionops.data.split import plan_split
from visionops.data.suite_tables import suite_tables
from visionops.data.validate import DataValidationError
from visionops.pipeline import stages as pipeline
from visionops.release.lineage import champion_reference

CONF = Path(__file__).resolve().parents[2] / "conf" / "digits.yaml"
COLUMNS = ("expectation", "column", "requires", "severity", "result", "observed", "unexpected")


class _Constant(mlflow.pyfunc.PythonModel):
    """Only the registry entry and its label map are read (the schema suite's reference)."""

    def predict(self, context, model_input: pd.DataFrame, params=None):  # noqa: ANN001, ANN201
        return model_input


class _Page(HTMLParser):
    """The page's expectation rows (per suite), its verdict, and every remote src/href."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict[str, str]] = []
        self.remote: list[str] = []
        self.verdict = ""
        self._suite = ""
        self._cells: list[str] | None = None
        self._where: str | None = None
        self._in_quality = False  # the data-quality table is not an expectation table
        self.quality: list[list[str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and (value or "").strip().lower().startswith("http"):
                self.remote.append(f"<{tag} {name}={value}>")
        classes = (dict(attrs).get("class") or "").split()
        if tag == "h2":
            self._where, self._suite = "suite", ""
        elif tag == "span" and "verdict" in classes:
            self._where = "verdict"
        elif tag == "table":
            self._in_quality = "quality" in classes
        elif tag == "tr":
            self._cells = []
        elif tag == "td" and self._cells is not None:
            self._cells.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("h2", "span"):
            self._where = None
        elif tag == "tr" and self._cells and self._in_quality:
            self.quality.append(self._cells)
            self._cells = None
        elif tag == "tr" and self._cells:
            row = dict(zip(COLUMNS, self._cells, strict=False))
            self.rows.append({**row, "examples": self._cells[-1], "suite": self._suite})
            self._cells = None

    def handle_data(self, data: str) -> None:
        if self._where == "suite":
            self._suite += data.removeprefix("Suite ")
        elif self._where == "verdict":
            self.verdict += data
        elif self._cells:
            self._cells[-1] += data


def _dataset(root: Path, corpus, per_class: int = 6) -> Path:
    lines = ["path,label"]
    for c, label in enumerate(("a", "b")):
        for i in range(per_class):
            corpus.save(root / label / f"{i}.png", corpus.textured(100 * c + i))
            lines.append(f"{label}/{i}.png,{label}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root / "labels.csv"


def _start(manifest: Path, run: str, model_name: str) -> dict:
    overrides = {
        "data.source": "csv",
        "data.path": str(manifest),
        "validate.min_images_per_class": 3,
        "registry.model_name": model_name,
    }
    return pipeline.start(
        {"config": str(CONF), "overrides": overrides}, dag_id="data_tests", airflow_run_id=run
    )


def _register_champion(name: str, tmp_path: Path, labels: list[str]) -> None:
    from visionops.core import tracking

    meta = tmp_path / "champion" / "preprocessing.json"
    meta.parent.mkdir(parents=True, exist_ok=True)
    meta.write_text(json.dumps({"labels": labels, "image_size": 8, "channels": 1}))
    with mlflow.start_run(experiment_id=tracking.experiment_id(f"{name}-champion")):
        info = mlflow.pyfunc.log_model(
            name="model", python_model=_Constant(), artifacts={"preprocessing": str(meta)}
        )
    version = mlflow.register_model(info.model_uri, name).version
    mlflow.tracking.MlflowClient().set_registered_model_alias(name, "champion", version)


def _suite_expectations(ctx: dict, ingested: dict) -> set[tuple[str, str]]:
    """(type, column) of every expectation the stage's suites hold, built from the checks."""
    cfg = RunContext.from_dict(ctx).config()
    manifest = pd.read_parquet(Path(ingested["uri"]) / "manifest.parquet")
    plan = plan_split(manifest, cfg.preprocess, cfg.validate_)
    reference = champion_reference(cfg.registry.model_name)
    tables, _ = suite_tables(manifest, cfg.validate_, plan, reference, None)
    return {
        (e.expectation_type, str(getattr(e, "column", None) or ""))
        for t in tables
        for e, _ in t.expectations
    }


def _logged(ctx: dict, tmp_path: Path) -> tuple[_Page, str, dict]:
    """The validate run's page (parsed and raw) and its report.json, as MLflow stores them."""
    runs = mlflow.search_runs(
        experiment_ids=[ctx["experiment_id"]],
        filter_string=(
            f"tags.mlflow.parentRunId = '{ctx['parent_run_id']}' "
            "and tags.`visionops.stage` = 'validate'"
        ),
        output_format="list",
    )
    assert len(runs) == 1, runs
    run_id = runs[0].info.run_id
    names = [a.path for a in mlflow.tracking.MlflowClient().list_artifacts(run_id)]
    assert "validation_report.html" in names  # at the artifact root, where the README says
    local = Path(
        mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path="validation_report.html", dst_path=str(tmp_path / "dl")
        )
    )
    report = mlflow.artifacts.load_dict(f"runs:/{run_id}/validation/report.json")
    text = local.read_text(encoding="utf-8")
    page = _Page()
    page.feed(text)
    return page, text, report


def _assert_offline(page: _Page, text: str) -> None:
    assert page.remote == [], f"the page needs the network: {page.remote}"
    assert "@import" not in text and "url(" not in text  # no remote stylesheet or font via CSS


def _assert_every_expectation(page: _Page, expected: set[tuple[str, str]], report: dict) -> None:
    shown = {(r["expectation"], r["column"]) for r in page.rows}
    assert expected <= shown, f"missing from the page: {expected - shown}"
    assert len(page.rows) == report["statistics"]["evaluated_expectations"]
    assert all(r["result"] in ("passed", "failed") for r in page.rows), page.rows
    assert all(r["observed"] for r in page.rows), "an expectation without its observed value"


@pytest.mark.integration  # the stages, on an MLflow store
def test_good_data_page_lists_every_expectation_as_passed(
    store: Path, tmp_path: Path, corpus
) -> None:
    ctx = _start(_dataset(tmp_path / "data", corpus), "page-good", "page-good")
    ingested = pipeline.ingest(ctx)
    assert pipeline.validate(ctx, ingested)["success"]

    page, text, report = _logged(ctx, tmp_path)
    _assert_offline(page, text)
    _assert_every_expectation(page, _suite_expectations(ctx, ingested), report)
    assert page.verdict == "PASSED"
    assert {r["result"] for r in page.rows} == {"passed"}
    assert {r["suite"] for r in page.rows} == {
        "visionops_manifest",
        "visionops_manifest_class_counts",
    }


@pytest.mark.integration  # the stages, on an MLflow store
def test_broken_data_page_reads_failed_with_the_offending_files(
    store: Path, tmp_path: Path, corpus
) -> None:
    manifest = _dataset(tmp_path / "data", corpus)
    broken = tmp_path / "data" / "a" / "0.png"
    broken.write_bytes(b"")  # zero bytes: does not decode (an error)
    copy = tmp_path / "data" / "b" / "copy.png"
    shutil.copy(tmp_path / "data" / "b" / "1.png", copy)  # the same bytes, same label: a warning
    with open(manifest, "a") as fh:
        fh.write("b/copy.png,b\n")
    _register_champion("page-broken", tmp_path, ["a", "b", "gone"])  # a class the data lacks
    ctx = _start(manifest, "page-broken", "page-broken")
    ingested = pipeline.ingest(ctx)
    with pytest.raises(DataValidationError):
        pipeline.validate(ctx, ingested)

    page, text, report = _logged(ctx, tmp_path)
    _assert_offline(page, text)
    _assert_every_expectation(page, _suite_expectations(ctx, ingested), report)
    assert page.verdict.startswith("FAILED")
    by_key = {(r["expectation"], r["column"]): r for r in page.rows}
    decode = by_key[("expect_column_values_to_be_null", "decode_error")]
    assert (decode["result"], decode["severity"]) == ("failed", "error")
    assert decode["unexpected"].startswith("1 of ") and str(broken) in decode["examples"]
    duplicate = by_key[("expect_column_values_to_be_null", "duplicate_of")]
    assert (duplicate["result"], duplicate["severity"]) == ("failed", "warning")
    assert str(copy) in duplicate["examples"]
    # The policy's table: the dropped copy counted, as a warning, with the setting that rules it.
    copies = [row for row in page.quality if row[0] == "exact copies"]
    assert copies and copies[0][1].startswith("1 of ") and copies[0][4] == "warning"
    assert "validate.duplicate_severity" in copies[0][3]
    schema = [r for r in page.rows if r["suite"].endswith("_schema")]
    assert schema and schema[0]["result"] == "failed" and "gone" in schema[0]["examples"]
    failed = {(r["expectation"], r["column"]) for r in page.rows if r["result"] == "failed"}
    assert failed == {(i["expectation"], i["column"]) for i in report["issues"]}


def test_values_from_the_data_are_escaped(tmp_path: Path) -> None:
    from visionops.data.validate import validate_manifest

    hostile = "<script>alert(1)</script>"
    manifest = pd.DataFrame(
        {
            "path": [f"/d/{hostile}{i}.png" for i in range(4)],
            "label": ["a", "a", "b", f"b{hostile}"],
            "sha256": [f"{i:064x}" for i in range(4)],
            "decode_error": [None, None, None, f"<img src=https://x.example/{hostile}>"],
        }
    )
    report = validate_manifest(manifest, min_images_per_class=1, docs_dir=tmp_path / "docs")

    text = report.html_report.read_text(encoding="utf-8")
    page = _Page()
    page.feed(text)
    _assert_offline(page, text)
    assert "<script" not in text and "<img" not in text
    decode = next(r for r in page.rows if r["column"] == "decode_error")
    assert decode["result"] == "failed" and hostile in decode["examples"]  # shown, as text
