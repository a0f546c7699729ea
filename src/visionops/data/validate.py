"""Validate an ingest manifest with Great Expectations; build its Data Docs and one HTML page.

The manifest (one row per image: path, label, sha256, width, height, mode, decode_error) is
checked by a real GX 1.x suite. Offending rows are taken from GX's own validation results
(result_format COMPLETE, indexed by ``path``) so that every issue names the files involved. Every
expectation of every suite, with its result, goes on one offline page (``data.validation_html``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from visionops.core.config import ValidateConfig
from visionops.data.validation_html import expectation_row, write_validation_html
from visionops.data.validation_report import (
    MAX_OFFENDING,
    DataValidationError,
    ValidationIssue,
    ValidationReport,
)

if TYPE_CHECKING:  # pandas and great_expectations are imported lazily: GX alone takes ~3 s
    import pandas as pd

    from visionops.data.checks import Table
    from visionops.data.split import SplitPlan

__all__ = ["DataValidationError", "ValidationIssue", "ValidationReport", "validate_manifest"]

REQUIRED_COLUMNS = ("path", "label", "sha256", "decode_error")
_SITE_NAME = "visionops"


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


def _issue_from_result(
    result: Any, index_columns: list[str], severity: str, min_per_class: int, cfg: ValidateConfig
) -> ValidationIssue:
    """Build an issue from one failed GX ExpectationValidationResult."""
    from visionops.data.checks import ADVICE

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
            severity="error",
        )
    res = result.result or {}
    rows = [
        {**{c: _plain(row.get(c)) for c in index_columns}, "observed": _plain(row.get(column))}
        for row in res.get("unexpected_index_list") or []
    ]
    n = res.get("unexpected_count", len(rows))
    advice = ADVICE.get((etype, column), "{n} row(s) do not meet this expectation")
    return ValidationIssue(
        expectation=etype,
        column=column,
        description=advice.format(n=n, min=min_per_class, cfg=cfg),
        offending=rows[:MAX_OFFENDING],
        severity=severity,
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


def _run(context: Any, name: str, table: Table) -> Any:
    """Validate ``table.frame`` against a new suite; return GX's ExpectationSuiteValidationResult."""
    import great_expectations as gx
    from great_expectations.expectations.metadata_types import FailureSeverity

    for expectation, severity in table.expectations:
        # Recorded in the suite too, so the Data Docs show which failures stop the run.
        expectation.severity = (
            FailureSeverity.CRITICAL if severity == "error" else FailureSeverity.WARNING
        )
    batch = context.data_sources.add_pandas(name).add_dataframe_asset(name)
    batch_definition = batch.add_batch_definition_whole_dataframe(name)
    expectations = [e for e, _ in table.expectations]
    suite = context.suites.add(gx.ExpectationSuite(name=name, expectations=expectations))
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=name, data=batch_definition, suite=suite)
    )
    return definition.run(
        batch_parameters={"dataframe": table.frame},
        result_format={
            "result_format": "COMPLETE",
            "unexpected_index_column_names": table.index_columns,
            "return_unexpected_index_query": False,
        },
    )


def validate_manifest(
    manifest: pd.DataFrame,
    *,
    min_images_per_class: int | None = None,
    docs_dir: Path,
    report_html: Path | None = None,
    suite_name: str = "visionops_manifest",
    config: ValidateConfig | None = None,
    splits: Sequence[str] | None = None,
    plan: SplitPlan | None = None,
    reference: dict[str, Any] | None = None,
) -> ValidationReport:
    """Validate an ingest manifest with Great Expectations; Data Docs in ``docs_dir``, one page at ``report_html``.

    ``report_html`` (default ``docs_dir/validation_report.html``) is the self-contained page that
    shows every expectation of every suite with its result and the verdict.

    Per file: decodes, label present (and declared), size and mode, exact copies (same label: dropped,
    a ``duplicate_severity`` issue; another label: an error naming both), and, with ``plan`` (the
    split preprocess will write, ``split.plan_split``), held-out images that are near-copies of a
    training image: an error (``leakage_severity``) when the split is user-given (``splits``, one
    split name per row, or a ``split`` column), a warning listing the cut links otherwise. Per class:
    at least ``min_images_per_class`` images and an imbalance within limits. Against ``reference``
    (the champion's ``labels`` and ``profile``, see ``release.lineage.champion_reference``): classes
    added or removed, and drift per feature (PSI).
    Returns the report; ``success`` is False only when an error-severity check failed.
    """
    from visionops.data.checks import class_table, drift_table_for, file_table, schema_table

    cfg = config or ValidateConfig()
    min_per_class = (
        cfg.min_images_per_class if min_images_per_class is None else min_images_per_class
    )
    missing = [c for c in REQUIRED_COLUMNS if c not in manifest.columns]
    if missing:
        raise ValueError(
            f"manifest is missing required column(s) {missing}; "
            f"expected at least {list(REQUIRED_COLUMNS)}"
        )
    if min_per_class < 0:
        raise ValueError(f"min_images_per_class must be >= 0, got {min_per_class}")
    if splits is not None and len(splits) != len(manifest):
        raise ValueError(f"splits has {len(splits)} entries for {len(manifest)} manifest rows")
    if plan is None and splits is not None:
        from visionops.data.split import plan_split

        plan = plan_split(manifest, None, cfg, split=splits)

    docs_dir = Path(docs_dir)
    docs_dir.mkdir(parents=True, exist_ok=True)

    # GX logs hundreds of INFO lines (mostly at import); an Airflow task log needs our summary.
    gx_logger = logging.getLogger("great_expectations")
    previous_level = gx_logger.level
    gx_logger.setLevel(logging.WARNING)
    try:
        tables = [file_table(manifest, cfg, plan), class_table(manifest, min_per_class, cfg)]
        if reference and reference.get("labels"):
            tables.append(schema_table(manifest, reference["labels"], cfg))
        if reference and reference.get("profile"):
            drift = drift_table_for(manifest, reference["profile"], cfg)
            if drift is not None:
                tables.append(drift)
        context = _new_context(docs_dir)
        names = {"files": suite_name}
        results = []
        for t in tables:
            name = names.get(t.name, f"{suite_name}_{t.name}")
            results.append((t, name, _run(context, name, t)))
        built = context.build_data_docs(site_names=[_SITE_NAME])

        issues, rows = [], []
        for table, name, outcome in results:
            for r, (_, severity) in zip(outcome.results, table.expectations, strict=True):
                issue = None
                if not r.success:
                    issue = _issue_from_result(r, table.index_columns, severity, min_per_class, cfg)
                    issues.append(issue)
                rows.append(expectation_row(name, r, severity, issue and issue.description))
    finally:
        gx_logger.setLevel(previous_level)
    counts = tables[1].frame
    index = docs_dir / "index.html"
    statistics: dict[str, Any] = {
        "n_images": int(len(manifest)),
        "n_classes": int(len(counts)),
        "images_per_class": {str(k): int(v) for k, v in zip(counts["label"], counts["count"])},
        "min_images_per_class": int(min_per_class),
        "n_errors": sum(i.severity == "error" for i in issues),
        "n_warnings": sum(i.severity == "warning" for i in issues),
    }
    if plan is not None:
        statistics["split_plan"] = plan.stats
    else:
        statistics["split_plan"] = {
            "n_duplicates_dropped": int(tables[0].frame["duplicate_of"].notna().sum())
        }
    for table in tables[2:]:
        statistics[table.name] = table.frame.to_dict("records")
    if reference:
        statistics["champion_version"] = reference.get("version")
    for key in ("evaluated_expectations", "successful_expectations", "unsuccessful_expectations"):
        statistics[key] = int(sum(outcome.statistics[key] for _, _, outcome in results))
    report = ValidationReport(
        success=statistics["n_errors"] == 0,
        issues=issues,
        statistics=statistics,
        data_docs_index=index if _SITE_NAME in built and index.exists() else None,
    )
    page = write_validation_html(report_html or docs_dir / "validation_report.html", report, rows)
    return replace(report, html_report=page)
