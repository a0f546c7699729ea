"""The validation report as one self-contained HTML page: ``validation_report.html``.

Why a page of our own: GX's Data Docs pages load Bootstrap, jQuery, bootstrap-table, Vega and
Font Awesome from CDNs (``render/view/templates/page.j2``, ``js_script_imports.j2``), and the
package ships none of them (only its own two stylesheets). Offline, the Data Docs index shows an
empty table and the validation pages sit four folders down, unstyled. What each expectation
requires and what it observed still come from GX: its atomic renderers
(``ExpectationValidationResult.render()``) give plain templates and parameters, which are filled
in here; the page around them is plain HTML with inline CSS, no script and no remote resource.
"""

from __future__ import annotations

import html
import json
import math
import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from visionops.data.validation_report import ValidationReport

MAX_EXAMPLES = 5  # unexpected values shown per expectation (validation/report.json keeps 20)

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #1f2328; }
h1 { margin-bottom: .2rem; } h2 { margin-top: 2rem; }
.verdict { display: inline-block; padding: .4rem .9rem; border-radius: .3rem; font-weight: 700;
  color: #fff; }
.passed { background: #1a7f37; } .warned { background: #9a6700; } .failed { background: #cf222e; }
table { border-collapse: collapse; width: 100%; font-size: .9rem; }
th, td { border: 1px solid #d0d7de; padding: .35rem .5rem; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
tr.fail td { background: #ffebe9; } tr.warn td { background: #fff8c5; }
.result { font-weight: 700; } code { font-size: .85rem; }
ul.examples { margin: 0; padding-left: 1.1rem; } .muted { color: #57606a; }
"""


@dataclass(frozen=True)
class ExpectationRow:
    """One expectation of one suite as the page shows it."""

    suite: str
    expectation: str
    column: str
    severity: str  # "error" stops the run, "warning" is recorded
    success: bool
    statement: str  # what the expectation requires, in GX's words
    observed: str
    unexpected_count: int | None = None
    element_count: int | None = None
    examples: list[str] = field(default_factory=list)
    advice: str | None = None  # what failed, in the words of validation/report.json
    error: str | None = None  # GX could not evaluate the expectation


def _filled(content: Any) -> str:
    """Fill one of GX's rendered string templates (``$name`` placeholders) with its parameters."""
    value = content.value
    params = {
        name: _text(p.get("value") if isinstance(p, dict) else getattr(p, "value", p))
        for name, p in (value.params or {}).items()
    }
    return string.Template(value.template or "").safe_substitute(params)


def _text(value: Any) -> str:
    """A short plain-text form of a value GX observed or was given."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()  # numpy and pandas scalars
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "null"
    if isinstance(value, (list, tuple)):
        return ", ".join(_text(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, default=str)
    return str(value)


def _gx_wording(result: Any) -> tuple[str | None, str | None]:
    """GX's own sentence for the expectation and for its observed value (None where it has none)."""
    try:
        result.render()
    except Exception:  # noqa: BLE001 - a renderer bug must not lose the report; the raw values remain
        return None, None
    found: dict[str, str] = {}
    for content in [
        *(result.expectation_config.rendered_content or []),
        *(result.rendered_content or []),
    ]:
        if content.value_type == "StringValueType" and content.name not in found:
            found[content.name] = _filled(content)
    return found.get("atomic.prescriptive.summary"), found.get("atomic.diagnostic.observed_value")


def _example(item: Any, column: str) -> str:
    """One unexpected row (index columns and the value) or one unexpected value."""
    if isinstance(item, dict):
        keys = [k for k in item if k != column] + ([column] if column in item else [])
        return ", ".join(f"{k}: {_text(item[k])}" for k in keys)
    return _text(item)


def expectation_row(
    suite: str, result: Any, severity: str, advice: str | None = None
) -> ExpectationRow:
    """Describe one GX ExpectationValidationResult (validated with result_format COMPLETE)."""
    config = result.expectation_config
    column = str(config.kwargs.get("column") or "")
    statement, observed = _gx_wording(result)
    kwargs = {k: v for k, v in config.kwargs.items() if k != "batch_id"}
    res = result.result or {}
    info = result.exception_info or {}
    examples = res.get("partial_unexpected_index_list") or res.get("partial_unexpected_list") or []
    if observed is None:
        observed = _text(res.get("observed_value", res.get("unexpected_percent", "")))
    return ExpectationRow(
        suite=suite,
        expectation=config.type,
        column=column,
        severity=severity,
        success=bool(result.success),
        statement=statement or _text(kwargs),
        observed=observed,
        unexpected_count=res.get("unexpected_count"),
        element_count=res.get("element_count"),
        examples=[_example(e, column) for e in examples[:MAX_EXAMPLES]],
        advice=advice,
        error=info.get("exception_message") if info.get("raised_exception") else None,
    )


def _verdict(report: ValidationReport) -> tuple[str, str]:
    """The headline and its CSS class."""
    st = report.statistics
    if not report.success:
        return f"FAILED: {st.get('n_errors', 0)} error(s), {st.get('n_warnings', 0)} warning(s)", (
            "failed"
        )
    if st.get("n_warnings"):
        return f"PASSED with {st['n_warnings']} warning(s)", "warned"
    return "PASSED", "passed"


def _row_html(row: ExpectationRow) -> str:
    """One table row; every value is escaped."""
    e = html.escape
    if row.error is not None:
        outcome, css = "could not be evaluated", "fail"
    elif row.success:
        outcome, css = "passed", "pass"
    else:
        outcome, css = "failed", "fail" if row.severity == "error" else "warn"
    unexpected = "" if row.unexpected_count is None else str(row.unexpected_count)
    if row.unexpected_count is not None and row.element_count is not None:
        unexpected += f" of {row.element_count}"
    examples = "".join(f"<li><code>{e(x)}</code></li>" for x in row.examples)
    if row.unexpected_count and row.unexpected_count > len(row.examples):
        examples += f'<li class="muted">first {len(row.examples)} shown</li>'
    notes = "".join(
        f'<div class="muted">{e(text)}</div>'
        for text in (row.advice, row.error and f"GX error: {row.error}")
        if text
    )
    return (
        f'<tr class="{css}"><td><code>{e(row.expectation)}</code></td><td>{e(row.column)}</td>'
        f"<td>{e(row.statement)}{notes}</td><td>{e(row.severity)}</td>"
        f'<td class="result">{e(outcome)}</td><td>{e(row.observed)}</td><td>{e(unexpected)}</td>'
        f'<td><ul class="examples">{examples}</ul></td></tr>'
    )


def _quality_html(st: dict) -> str:
    """The data-quality policy's table (one row per minority problem) and the classes dropped."""
    e = html.escape
    problems = st.get("quality") or []
    if not problems:
        return ""
    rows = []
    for p in problems:
        limit = "never" if p["threshold"] is None else f"{100 * p['threshold']:g}%"
        setting = f" ({p['setting']})" if p.get("setting") else ""
        css = {"error": "fail", "warning": "warn"}.get(p["severity"], "pass")
        rows.append(
            f'<tr class="{css}"><td>{e(p["title"])}</td><td>{p["count"]} of {p["total"]} '
            f"{e(p['unit'])}</td><td>{100 * p['share']:.1f}%</td><td>{e(limit + setting)}</td>"
            f'<td class="severity">{e(p["severity"])}</td><td>{e(p["action"])}</td></tr>'
        )
    dropped = "".join(
        f"<li><code>{e(why)}</code></li>" for why in (st.get("dropped_classes") or {}).values()
    )
    return (
        "<h2>Data quality</h2><p>Each problem below its threshold is left out and reported; above "
        "it, the run stops.</p><table class='quality'><tr><th>problem</th><th>count</th><th>share</th>"
        "<th>stops the run above</th><th>severity</th><th>below the threshold</th></tr>"
        f"{''.join(rows)}</table>"
        + (f"<p>Classes dropped from this model version:</p><ul>{dropped}</ul>" if dropped else "")
    )


def render_validation_html(report: ValidationReport, rows: Sequence[ExpectationRow]) -> str:
    """The whole page: the verdict, the figures, and every expectation of every suite."""
    e = html.escape
    st = report.statistics
    headline, css = _verdict(report)
    figures = (
        f"{st.get('n_images', 0)} images, {st.get('n_classes', 0)} classes, "
        f"{st.get('successful_expectations', 0)} of {st.get('evaluated_expectations', 0)} "
        "expectations met. Errors stop the run; warnings are recorded and the run goes on."
    )
    head = (
        "<tr><th>expectation</th><th>column</th><th>requires</th><th>severity</th>"
        "<th>result</th><th>observed</th><th>unexpected</th><th>examples</th></tr>"
    )
    sections = []
    for suite in dict.fromkeys(r.suite for r in rows):
        mine = [r for r in rows if r.suite == suite]
        met = sum(r.success for r in mine)
        sections.append(
            f"<h2>Suite <code>{e(suite)}</code></h2><p>{met} of {len(mine)} expectations met.</p>"
            f"<table>{head}{''.join(_row_html(r) for r in mine)}</table>"
        )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        "<title>visionops data validation</title>"
        f"<style>{_CSS}</style></head><body>"
        "<h1>Data validation</h1>"
        f'<p><span class="verdict {css}">{e(headline)}</span></p><p>{e(figures)}</p>'
        f"{_quality_html(st)}"
        f"{''.join(sections)}"
        '<p class="muted">Rendered from the Great Expectations validation results. More offending '
        "rows: validation/report.json (the first 20 of each failed expectation) and GX's Data Docs "
        "under data_docs/ (all of them).</p></body></html>\n"
    )


def write_validation_html(
    path: Path, report: ValidationReport, rows: Sequence[ExpectationRow]
) -> Path:
    """Write the page to ``path`` (parent folders created); returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_validation_html(report, rows), encoding="utf-8")
    return path
