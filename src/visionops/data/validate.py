"""Validate an ingest manifest with a Great Expectations suite and build its Data Docs.

The manifest (one row per image: path, label, sha256, width, height, mode, decode_error) is
checked by a real GX 1.x suite. Offending rows are taken from GX's own validation results
(result_format COMPLETE, indexed by ``path``) so that every issue names the files involved.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from visionops.errors import InputError

if TYPE_CHECKING:  # pandas and great_expectations are imported lazily: GX alone takes ~3 s
    import pandas as pd

__all__ = ["DataValidationError", "ValidationIssue", "ValidationReport", "validate_manifest"]

MAX_OFFENDING = 20
REQUIRED_COLUMNS = ("path", "label", "sha256", "decode_error")
_SITE_NAME = "visionops"

# What each failed expectation means for a person fixing the data, keyed by (type, column).
_ADVICE: dict[tuple[str, str], str] = {
    ("expect_column_values_to_be_null", "decode_error"):
        "{n} file(s) do not decode as images; repair or remove them from the source",
    ("expect_column_values_to_not_be_null", "label"):
        "{n} image(s) have no label; label them or remove them from the source",
    ("expect_column_values_to_match_regex", "label"):
        "{n} image(s) have an empty or blank label; label them or remove them from the source",
    ("expect_column_values_to_be_unique", "sha256"):
        "{n} files have the same content (sha256) as another file; keep one copy of each",
    ("expect_column_values_to_be_between", "count"):
        "{n} class(es) have fewer than {min} images; add images or drop the class",
    ("expect_table_row_count_to_be_between", ""):
        "the manifest has no images; check the data source",
}


@dataclass(frozen=True)
class ValidationIssue:
    """One failed expectation and the rows (files or classes) that broke it."""

    expectation: str
    column: str
    description: str
    offending: list[dict]


@dataclass(frozen=True)
class ValidationReport:
    """Outcome of validating a manifest: issues, statistics and where the Data Docs are."""

    success: bool
    issues: list[ValidationIssue]
    statistics: dict
    data_docs_index: Path | None

    def summary(self) -> str:
        """Multi-line message naming each failed expectation and its offending files."""
        st = self.statistics
        head = (
            f"{st.get('n_images', 0)} images, {st.get('n_classes', 0)} classes, "
            f"{st.get('successful_expectations', 0)}/{st.get('evaluated_expectations', 0)} "
            "expectations met"
        )
        lines = [f"Data validation {'passed' if self.success else 'FAILED'}: {head}."]
        for issue in self.issues:
            lines.append(f"- {issue.expectation} on '{issue.column}': {issue.description}.")
            for row in issue.offending:
                name = row.get("path", row.get("label"))
                lines.append(f"    {name}  (observed: {row.get('observed')!r})")
            if len(issue.offending) >= MAX_OFFENDING:
                lines.append(f"    (first {MAX_OFFENDING} shown; the Data Docs list all)")
        if self.data_docs_index is not None:
            lines.append(f"Data Docs: {self.data_docs_index}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """JSON-serialisable form (for XCom, MLflow and logs)."""
        return {
            "success": self.success,
            "issues": [
                {
                    "expectation": i.expectation,
                    "column": i.column,
                    "description": i.description,
                    "offending": [dict(row) for row in i.offending],
                }
                for i in self.issues
            ],
            "statistics": dict(self.statistics),
            "data_docs_index": None if self.data_docs_index is None else str(self.data_docs_index),
        }

    @classmethod
    def from_dict(cls, data: dict) -> ValidationReport:
        """Rebuild a report from :meth:`to_dict` output (e.g. after a JSON round trip)."""
        index = data.get("data_docs_index")
        return cls(
            success=bool(data["success"]),
            issues=[ValidationIssue(**issue) for issue in data["issues"]],
            statistics=dict(data["statistics"]),
            data_docs_index=None if index is None else Path(index),
        )


class DataValidationError(InputError):
    """Raised by the pipeline when validation fails; carries the report."""

    def __init__(self, report: ValidationReport):
        super().__init__(report.summary())
        self.report = report

    def __reduce__(self) -> tuple[Any, ...]:
        # The default reduce would call cls(summary_str); rebuild from the report instead.
        return (type(self), (self.report,))


def _plain(value: Any) -> Any:
    """Turn numpy/pandas scalars and missing markers into JSON-friendly Python values."""
    if value is None:
        return None
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    import pandas as pd

    return None if value is pd.NA or value is pd.NaT else value


def _issue_from_result(result: Any, index_column: str, min_per_class: int) -> ValidationIssue:
    """Build an issue from one failed GX ExpectationValidationResult."""
    config = result.expectation_config
    etype: str = config.type
    column: str = config.kwargs.get("column") or ""
    info = result.exception_info or {}
    if info.get("raised_exception"):
        return ValidationIssue(
            expectation=etype,
            column=column,
            description=f"GX could not evaluate it: {info.get('exception_message')}",
            offending=[],
        )
    res = result.result or {}
    rows = [
        {index_column: _plain(row.get(index_column)), "observed": _plain(row.get(column))}
        for row in res.get("unexpected_index_list") or []
    ]
    if etype == "expect_column_values_to_be_unique":
        # Keep files with the same hash next to each other so both of a pair survive truncation.
        rows.sort(key=lambda row: str(row["observed"]))
    n = res.get("unexpected_count", len(rows))
    advice = _ADVICE.get((etype, column), "{n} row(s) do not meet this expectation")
    return ValidationIssue(
        expectation=etype,
        column=column,
        description=advice.format(n=n, min=min_per_class),
        offending=rows[:MAX_OFFENDING],
    )


def _new_context(docs_dir: Path) -> Any:
    """An in-memory GX context whose only Data Docs site writes into ``docs_dir``."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    # In-memory stores: no gx/ project folder anywhere; only the Data Docs site touches disk.
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
        data_docs_sites={
            _SITE_NAME: {
                "class_name": "SiteBuilder",
                "show_how_to_buttons": False,
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(docs_dir.resolve()),
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            }
        },
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def _run(
    context: Any, name: str, frame: pd.DataFrame, expectations: list, index_column: str
) -> Any:
    """Validate ``frame`` against a new suite; return GX's ExpectationSuiteValidationResult."""
    import great_expectations as gx

    batch = context.data_sources.add_pandas(name).add_dataframe_asset(name)
    batch_definition = batch.add_batch_definition_whole_dataframe(name)
    suite = context.suites.add(gx.ExpectationSuite(name=name, expectations=expectations))
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=name, data=batch_definition, suite=suite)
    )
    return definition.run(
        batch_parameters={"dataframe": frame},
        result_format={
            "result_format": "COMPLETE",
            "unexpected_index_column_names": [index_column],
            "return_unexpected_index_query": False,
        },
    )


def validate_manifest(
    manifest: pd.DataFrame,
    *,
    min_images_per_class: int,
    docs_dir: Path,
    suite_name: str = "visionops_manifest",
) -> ValidationReport:
    """Validate an ingest manifest with Great Expectations and build Data Docs in ``docs_dir``.

    Checks that every file decodes, every image has a non-empty label, no two files have the
    same sha256, and every class has at least ``min_images_per_class`` images. Returns the
    report whether or not validation passed; raising is the caller's decision.
    """
    import pandas as pd

    missing = [c for c in REQUIRED_COLUMNS if c not in manifest.columns]
    if missing:
        raise ValueError(f"manifest is missing required column(s) {missing}; "
                         f"expected at least {list(REQUIRED_COLUMNS)}")
    if min_images_per_class < 0:
        raise ValueError(f"min_images_per_class must be >= 0, got {min_images_per_class}")

    docs_dir = Path(docs_dir)
    docs_dir.mkdir(parents=True, exist_ok=True)
    frame = manifest.loc[:, list(REQUIRED_COLUMNS)].reset_index(drop=True)

    # Rows without a usable label are reported by the label expectations, not counted as a class.
    labels = frame["label"]
    usable = labels.notna() & labels.astype("string").str.strip().ne("").fillna(False)
    per_class = labels[usable].astype(str).value_counts().sort_index()
    counts = pd.DataFrame({"label": per_class.index.astype(str), "count": per_class.to_numpy()})

    # GX logs hundreds of INFO lines (mostly at import); an Airflow task log needs our summary.
    gx_logger = logging.getLogger("great_expectations")
    previous_level = gx_logger.level
    gx_logger.setLevel(logging.WARNING)
    try:
        import great_expectations.expectations as gxe

        context = _new_context(docs_dir)
        files = _run(context, suite_name, frame, [
            gxe.ExpectTableRowCountToBeBetween(min_value=1),
            gxe.ExpectColumnValuesToBeNull(column="decode_error"),
            gxe.ExpectColumnValuesToNotBeNull(column="label"),
            gxe.ExpectColumnValuesToMatchRegex(column="label", regex=r"\S"),
            gxe.ExpectColumnValuesToBeUnique(column="sha256"),
        ], index_column="path")
        classes = _run(context, f"{suite_name}_class_counts", counts, [
            gxe.ExpectColumnValuesToBeBetween(column="count", min_value=min_images_per_class),
        ], index_column="label")
        built = context.build_data_docs(site_names=[_SITE_NAME])
    finally:
        gx_logger.setLevel(previous_level)

    issues = [
        _issue_from_result(r, "path", min_images_per_class) for r in files.results if not r.success
    ] + [
        _issue_from_result(r, "label", min_images_per_class)
        for r in classes.results
        if not r.success
    ]
    index = docs_dir / "index.html"
    statistics = {
        "n_images": int(len(frame)),
        "n_classes": int(len(counts)),
        "images_per_class": {str(k): int(v) for k, v in zip(counts["label"], counts["count"])},
        "min_images_per_class": int(min_images_per_class),
    }
    for key in ("evaluated_expectations", "successful_expectations", "unsuccessful_expectations"):
        statistics[key] = int(files.statistics[key] + classes.statistics[key])
    return ValidationReport(
        success=bool(files.success and classes.success),
        issues=issues,
        statistics=statistics,
        data_docs_index=index if _SITE_NAME in built and index.exists() else None,
    )
