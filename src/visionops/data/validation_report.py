"""What validation found: the issues (with the offending files or classes), the report, and the error
that stops a run. Plain dataclasses, JSON round-trip for XCom and MLflow."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from visionops.core.errors import InputError

MAX_OFFENDING = 20  # offending rows kept per issue (the Data Docs list them all)


@dataclass(frozen=True)
class ValidationIssue:
    """One failed expectation and the rows (files or classes) that broke it."""

    expectation: str
    column: str
    description: str
    offending: list[dict]
    severity: str = "error"  # "error" stops the pipeline; "warning" is recorded and the run goes on


@dataclass(frozen=True)
class ValidationReport:
    """Outcome of validating a manifest: issues, statistics, where the Data Docs and the page are."""

    success: bool
    issues: list[ValidationIssue]
    statistics: dict
    data_docs_index: Path | None
    html_report: Path | None = None  # the one self-contained page (data.validation_html)

    def summary(self) -> str:
        """Multi-line message naming each failed expectation and its offending files."""
        st = self.statistics
        head = (
            f"{st.get('n_images', 0)} images, {st.get('n_classes', 0)} classes, "
            f"{st.get('successful_expectations', 0)}/{st.get('evaluated_expectations', 0)} "
            "expectations met"
        )
        lines = [f"Data validation {'passed' if self.success else 'FAILED'}: {head}."]
        for issue in sorted(self.issues, key=lambda i: i.severity != "error"):
            lines.append(
                f"- {issue.severity.upper()} {issue.expectation} on '{issue.column}': "
                f"{issue.description}."
            )
            for row in issue.offending:
                name = row.get("path", row.get("label", row.get("feature")))
                extra = "".join(
                    f", {k}: {v}"
                    for k, v in row.items()
                    if k not in ("path", "label", "feature", "observed") and v is not None
                )
                lines.append(f"    {name}  (observed: {row.get('observed')!r}{extra})")
            if len(issue.offending) >= MAX_OFFENDING:
                lines.append(f"    (first {MAX_OFFENDING} shown; the Data Docs list all)")
        if self.html_report is not None:
            lines.append(f"Report: {self.html_report}")
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
                    "severity": i.severity,
                }
                for i in self.issues
            ],
            "statistics": dict(self.statistics),
            "data_docs_index": None if self.data_docs_index is None else str(self.data_docs_index),
            "html_report": None if self.html_report is None else str(self.html_report),
        }

    @classmethod
    def from_dict(cls, data: dict) -> ValidationReport:
        """Rebuild a report from :meth:`to_dict` output (e.g. after a JSON round trip)."""
        index, page = data.get("data_docs_index"), data.get("html_report")
        return cls(
            success=bool(data["success"]),
            issues=[ValidationIssue(**issue) for issue in data["issues"]],
            statistics=dict(data["statistics"]),
            data_docs_index=None if index is None else Path(index),
            html_report=None if page is None else Path(page),
        )


class DataValidationError(InputError):
    """Raised by the pipeline when validation fails; carries the report."""

    def __init__(self, report: ValidationReport):
        super().__init__(report.summary())
        self.report = report

    def __reduce__(self) -> tuple[Any, ...]:
        # The default reduce would call cls(summary_str); rebuild from the report instead.
        return (type(self), (self.report,))
