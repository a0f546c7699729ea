"""The parent run's description in MLflow (``mlflow.note.content``, Markdown): the run summary, written
once by the finish task, with links to the registered version and to the Airflow run."""

from __future__ import annotations

import os
from urllib.parse import quote

from visionops.core.constants import MAX_TAG_CHARS, MLFLOW_ML_VIEW_QUERY
from visionops.core.contracts import RunSummary, ensemble_description

NOTE_TAG = "mlflow.note.content"
AIRFLOW_UI_ENV = "VISIONOPS_AIRFLOW_UI_URL"
DEFAULT_AIRFLOW_UI = "http://127.0.0.1:8080"
CUT = "\n\n*(cut to what an MLflow tag holds: `summary.json` of this run has it all)*"


def airflow_run_url(dag_id: str, airflow_run_id: str, base: str | None = None) -> str:
    """The Airflow UI's page of a DAG run (``VISIONOPS_AIRFLOW_UI_URL``, as a browser reaches it)."""
    base = (base or os.environ.get(AIRFLOW_UI_ENV) or DEFAULT_AIRFLOW_UI).rstrip("/")
    return f"{base}/dags/{quote(dag_id, safe='')}/runs/{quote(airflow_run_id, safe='')}"


def version_link(name: str, version: str) -> str:
    """A Markdown link to a model version's page, relative to the MLflow UI that shows the note."""
    return f"[{name} v{version}](#/models/{quote(name, safe='')}/versions/{version}?{MLFLOW_ML_VIEW_QUERY})"


def experiment_link(experiment_id: str) -> str:
    """The experiment's training runs, in the UI's model-training view."""
    return f"#/experiments/{experiment_id}/runs?{MLFLOW_ML_VIEW_QUERY}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _figures(s: RunSummary) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    ensemble = ensemble_description(s.ensemble_members, s.oof_accuracy)
    if ensemble:
        rows.append(("model", ensemble))
    if s.tuning:
        rows.append(("tuning", s.tuning))
    if s.test_accuracy is not None:
        rows.append(("test accuracy", f"{s.test_accuracy:.4f}"))
    if s.test_macro_f1 is not None:
        rows.append(("test macro-F1", f"{s.test_macro_f1:.4f}"))
    if s.n_test_clean is not None and s.test_clean_accuracy is not None:
        rows.append(
            (
                "clean test subset",
                f"accuracy {s.test_clean_accuracy:.4f}, macro-F1 {s.test_clean_macro_f1 or 0:.4f} "
                f"on {int(s.n_test_clean)} images without a near-copy in training",
            )
        )
    if s.best_baseline and s.best_baseline_accuracy is not None:
        gain = s.gain_over_baseline_points
        rows.append(
            (
                "best simple baseline",
                f"{s.best_baseline} {s.best_baseline_accuracy:.4f}"
                + (f" (model {gain:+.2f} points)" if gain is not None else ""),
            )
        )
    return rows


def _registered(s: RunSummary) -> str:
    if s.model_version:
        aliases = ", ".join(f"`{a}`" for a in s.model_aliases) or "no alias"
        return f"**Registered:** {version_link(s.model_name, s.model_version)} ({aliases})"
    if s.unchanged_since:
        return f"**Not registered:** {s.changes or f'nothing changed since champion v{s.unchanged_since}'}"
    return "**Not registered**"


def run_note(summary: RunSummary, airflow_url: str | None = None) -> str:
    """The summary as the run's Markdown description: status, gate and reasons, the version and its
    aliases, headline figures, where the rest is."""
    s = summary
    started = f", started by {s.trigger}" if s.trigger else ""
    detail = ", ".join(f"{k} {v}" for k, v in s.trigger_detail.items() if k != "config")
    lines = [f"**Run {s.status}**{started}{f' ({detail})' if detail else ''}", ""]
    if s.failed_stage:
        lines += [f"**Failed at stage `{s.failed_stage}`:** {s.error or ''}", ""]
    if s.gate:
        lines += [f"**Gate: {s.gate.upper()}**", *[f"- {r}" for r in s.gate_reasons], ""]
    lines.append(_registered(s))
    if s.approval:
        lines.append(f"**Approval:** {s.approval}")
    if s.champion_version:
        champion = f"**Champion:** {version_link(s.model_name, s.champion_version)}"
        if s.replaced_version:
            champion += f" (replaced v{s.replaced_version}, now `previous_champion`)"
        lines.append(champion)
    if s.changes and not s.unchanged_since:
        lines.append(f"**Since the champion:** {s.changes}")
    lines.append("")
    figures = _figures(s)
    if figures:
        lines += ["| figure | value |", "|---|---|"]
        lines += [f"| {name} | {_cell(value)} |" for name, value in figures]
        lines.append("")
    if s.data_quality and s.data_quality != "clean":
        from visionops.data.quality import table_lines  # pandas: not at import (DAG parsing)

        lines += [f"**Data quality:** {s.data_quality}", ""]
        lines += [*table_lines([p for p in s.data_quality_table if p.get("count")]), ""]
    if s.dropped_classes:
        lines += [
            "**Classes not in this model:**",
            *[f"- {w}" for w in s.dropped_classes.values()],
            "",
        ]
    if s.validation_warnings:
        lines += ["**Data warnings:**", *[f"- {w}" for w in s.validation_warnings], ""]
    if airflow_url:
        lines.append(f"**Airflow run:** [{s.airflow_run_id or airflow_url}]({airflow_url})")
    artifacts = ["`config/config.json`", "`summary.json`"]
    if s.test_accuracy is not None:
        artifacts[:0] = ["`evaluation/confusion_matrix.png`", "`evaluation/report.md`"]
    if s.model_version:
        artifacts.insert(-2, "`model_card.md`")
    lines.append(f"**Artifacts of this run:** {', '.join(artifacts)}")
    lines.append(
        f"**Every run of {s.experiment}:** [training runs]({experiment_link(s.experiment_id)})"
    )
    return clip_note("\n".join(lines))


def clip_note(text: str, limit: int = MAX_TAG_CHARS) -> str:
    """``text`` cut at a line end to fit an MLflow tag, saying so."""
    if len(text) <= limit:
        return text
    head = text[: limit - len(CUT)]
    return head[: head.rfind("\n")] + CUT if "\n" in head else head + CUT
