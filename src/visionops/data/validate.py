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
    faces: dict[str, Any] | None = None,
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
    added, removed or dropped, and drift per feature (PSI). ``faces`` (ingest's face report): photos
    without a usable face, and each class's losses in the reasons a class is dropped.

    Minority problems follow one policy (``data.quality``): below their threshold they are
    quarantined and reported as warnings, with a table in ``statistics["quality"]``.
    Returns the report; ``success`` is False only when an error-severity check failed.
    """
    cfg = config or ValidateConfig()
    if min_images_per_class is not None:
        cfg = cfg.model_copy(update={"min_images_per_class": min_images_per_class})
    min_per_class = cfg.min_images_per_class
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
    from visionops.data.suite_tables import suite_tables

    try:
        tables, details = suite_tables(manifest, cfg, plan, reference, faces)
        context = _new_context(docs_dir)
        names = {"files": suite_name}
        results = []
        for t in tables:
            name = names.get(t.name, f"{suite_name}_{t.name}")
            results.append((t, name, _run(context, name, t)))
        built = context.build_data_docs(site_names=[_SITE_NAME])

        issues, rows, problems = [], [], []
        for table, name, outcome in results:
            # GX orders results by severity, not as the suite lists them: matched by type and column.
            severities = {
                _key(e.expectation_type, getattr(e, "column", None)): sev
                for e, sev in table.expectations
            }
            for r in outcome.results:
                conf = r.expectation_config
                severity = severities[_key(conf.type, conf.kwargs.get("column"))]
                issue, problem = _judge(r, table, severity, cfg, details)
                if issue is not None:
                    issues.append(issue)
                if problem is not None:
                    problems.append(problem.to_dict())
                rows.append(expectation_row(name, r, severity, issue and issue.description))
    finally:
        gx_logger.setLevel(previous_level)
    index = docs_dir / "index.html"
    statistics = _statistics(manifest, tables, results, issues, problems, details, plan, reference)
    statistics["min_images_per_class"] = int(min_per_class)
    per_class = statistics["images_per_class"].values()
    statistics["n_classes_kept"] = sum(n >= min_per_class for n in per_class)
    report = ValidationReport(
        success=statistics["n_errors"] == 0,
        issues=issues,
        statistics=statistics,
        data_docs_index=index if _SITE_NAME in built and index.exists() else None,
    )
    page = write_validation_html(report_html or docs_dir / "validation_report.html", report, rows)
    return replace(report, html_report=page)


def _statistics(
    manifest: pd.DataFrame,
    tables: list[Table],
    results: list[Any],
    issues: list[ValidationIssue],
    problems: list[dict[str, Any]],
    details: dict[str, Any],
    plan: SplitPlan | None,
    reference: dict[str, Any] | None,
) -> dict[str, Any]:
    """The report's figures: counts per class, issues by severity, the split plan, the policy's
    table, the schema and drift tables, and GX's expectation counts."""
    counts = next(t.frame for t in tables if t.name == "class_counts")
    statistics: dict[str, Any] = {
        "n_images": int(len(manifest)),
        "n_classes": int(len(counts)),
        "images_per_class": {str(k): int(v) for k, v in zip(counts["label"], counts["count"])},
        "n_errors": sum(i.severity == "error" for i in issues),
        "n_warnings": sum(i.severity == "warning" for i in issues),
    }
    if plan is not None:
        statistics["split_plan"] = plan.stats
    else:
        statistics["split_plan"] = {
            "n_duplicates_dropped": int(tables[0].frame["duplicate_of"].notna().sum())
        }
    for table in tables:
        if table.name in ("schema", "drift"):
            statistics[table.name] = table.frame.to_dict("records")
    statistics["quality"] = problems
    statistics["dropped_classes"] = details["dropped_classes"]
    if reference:
        statistics["champion_version"] = reference.get("version")
    for key in ("evaluated_expectations", "successful_expectations", "unsuccessful_expectations"):
        statistics[key] = int(sum(outcome.statistics[key] for _, _, outcome in results))
    return statistics


def _key(etype: str, column: str | None) -> tuple[str, str]:
    return etype, column or ""


def _judge(
    result: Any, table: Table, severity: str, cfg: ValidateConfig, details: dict[str, Any]
) -> tuple[ValidationIssue | None, Any]:
    """The issue of one GX result (a failure; or, for a policy check, a problem handled below its
    threshold, as a warning) and its row of the policy's table."""
    from visionops.data.quality import handled_text, problem_from_result

    config = result.expectation_config
    key = (config.type, config.kwargs.get("column") or "")
    problem = problem_from_result(key, result, severity, list(details["dropped_classes"]))
    if problem is not None and problem.kind != "small_classes":  # only classes are named
        problem = replace(problem, names=[])
    detail = details.get(problem.kind, []) if problem is not None else []
    if not result.success:
        issue = _issue_from_result(
            result, table.index_columns, severity, cfg.min_images_per_class, cfg
        )
        if detail:
            issue = replace(issue, description=f"{issue.description}: {'; '.join(detail)}")
        return issue, problem
    if problem is None or not problem.count or problem.threshold is None:
        return None, problem
    issue = _issue_from_result(
        result, table.index_columns, "warning", cfg.min_images_per_class, cfg
    )
    # Conflicts are named per pair of classes in the text: their 20 first files would only repeat it.
    rows = [] if problem.kind == "label_conflicts" and detail else issue.offending
    return replace(issue, description=handled_text(problem, detail), offending=rows), problem
