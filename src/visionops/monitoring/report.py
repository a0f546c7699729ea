"""The drift report: one self-contained HTML page (figures inlined as base64 PNG, no script, no link,
opens offline): the verdict, the checks, the input statistics, predicted classes and confidences of
the batch against the reference, and, where the batch has true labels, its accuracy next to the
reference's."""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from visionops.monitoring.drift import INPUT_PREFIX, DriftResult, Observations

REPORT_FILE = "drift_report.html"
_REF, _CUR = "#4c72b0", "#dd8452"

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { margin-bottom: 0.2em; } .sub { color: #666; margin-top: 0; }
.verdict { padding: 0.8em 1.2em; border-radius: 6px; font-size: 1.3em; font-weight: 600; }
.drift { background: #fde2e1; border: 2px solid #c0392b; color: #922b21; }
.ok { background: #e3f4e4; border: 2px solid #2e7d32; color: #1b5e20; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th { background: #f3f3f3; } td.l, th.l { text-align: left; }
tr.hit td { background: #fdecea; font-weight: 600; }
img { max-width: 100%; } .note { color: #555; font-size: 0.9em; }
"""


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> str:
    """The figure as an inline ``<img>`` (no metadata: the PNG carries no software URL)."""
    plt = _pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, metadata={"Software": None})
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="figure" src="data:image/png;base64,{data}">'


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float | int | np.floating | np.integer):
        v = float(value)
        if not math.isfinite(v):
            return "–"
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5):
            return f"{v:.2e}"
        return f"{v:.{digits}f}"
    return html.escape(str(value))


def _histograms(reference: Observations, current: Observations, names: list[str]) -> str:
    plt = _pyplot()
    cols = 4
    rows = max(1, math.ceil(len(names) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.5 * rows), squeeze=False)
    for ax in axes.ravel()[len(names) :]:
        ax.axis("off")
    for ax, name in zip(axes.ravel(), names):
        ref = reference.statistics[name].to_numpy(dtype=float)
        cur = current.statistics[name].to_numpy(dtype=float)
        both = np.concatenate([ref[np.isfinite(ref)], cur[np.isfinite(cur)]])
        low, high = (both.min(), both.max()) if len(both) else (0.0, 1.0)
        bins = np.linspace(low, high if high > low else low + 1.0, 26)
        ax.hist(ref, bins=bins, density=True, alpha=0.55, color=_REF, label="reference")
        ax.hist(cur, bins=bins, density=True, alpha=0.55, color=_CUR, label="batch")
        ax.set_title(name, fontsize=10)
        ax.tick_params(labelsize=8)
    axes.ravel()[0].legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def _classes(result: DriftResult) -> str:
    plt = _pyplot()
    ref, cur = result.class_distribution["reference"], result.class_distribution["current"]
    labels = sorted(
        set(ref) | set(cur), key=lambda s: (not s.isdigit(), int(s) if s.isdigit() else 0, s)
    )
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.45 * len(labels) + 2), 3.0))
    ax.bar(x - 0.2, [ref.get(lb, 0.0) for lb in labels], 0.4, color=_REF, label="reference")
    ax.bar(x + 0.2, [cur.get(lb, 0.0) for lb in labels], 0.4, color=_CUR, label="batch")
    ax.set_xticks(x, labels, rotation=45 if len(labels) > 12 else 0, fontsize=8)
    ax.set_ylabel("share of predictions")
    ax.set_title("predicted class")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def _confidence(reference: Observations, current: Observations) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.0, 3.0))
    bins = np.linspace(0.0, 1.0, 26)
    for obs, colour, name in ((reference, _REF, "reference"), (current, _CUR, "batch")):
        c = obs.confidence[np.isfinite(obs.confidence)]
        ax.hist(c, bins=bins, density=True, alpha=0.55, color=colour, label=name)
    ax.set_xlabel("confidence (probability of the answer)")
    ax.set_title("confidence")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def _embeddings(reference: Observations, current: Observations) -> str:
    """Both sides projected on the reference's first two principal components."""
    plt = _pyplot()
    ref, cur = reference.embeddings, current.embeddings
    assert ref is not None and cur is not None
    centre = ref.mean(axis=0)
    _, _, vt = np.linalg.svd(ref - centre, full_matrices=False)
    axes = vt[:2].T
    fig, ax = plt.subplots(figsize=(4.5, 4.0))
    for emb, colour, name in ((ref, _REF, "reference"), (cur, _CUR, "batch")):
        p = (emb - centre) @ axes
        ax.scatter(
            p[:, 0],
            p[:, 1] if p.shape[1] > 1 else np.zeros(len(p)),
            s=6,
            alpha=0.5,
            color=colour,
            label=name,
        )
    ax.set_title("embeddings (reference PCA)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def _checks_table(result: DriftResult) -> str:
    head = (
        "<tr><th class='l'>check</th><th class='l'>test</th><th>statistic</th><th>p</th>"
        "<th>p (Holm)</th><th>reference</th><th>batch</th><th class='l'>drift</th></tr>"
    )
    rows = []
    for c in sorted(result.checks, key=lambda c: (not c.drifted, c.p_adjusted)):
        ref, cur = c.detail.get("reference_mean"), c.detail.get("current_mean")
        if "largest_change" in c.detail:
            change = c.detail["largest_change"]
            ref, cur = change["reference_share"], change["current_share"]
            note = f" (largest change: {html.escape(str(change['label']))})"
        else:
            note = ""
        rows.append(
            f"<tr class='{'hit' if c.drifted else ''}'><td class='l'>{html.escape(c.name)}{note}</td>"
            f"<td class='l'>{html.escape(c.test)}</td><td>{_fmt(c.statistic)}</td>"
            f"<td>{_fmt(c.p_value)}</td><td>{_fmt(c.p_adjusted)}</td><td>{_fmt(ref)}</td>"
            f"<td>{_fmt(cur)}</td><td class='l'>{'DRIFT' if c.drifted else 'no'}</td></tr>"
        )
    return f"<table>{head}{''.join(rows)}</table>"


def drift_report_html(
    result: DriftResult,
    reference: Observations,
    current: Observations,
    *,
    title: str = "Drift report",
    model: str | None = None,
    batch: str | None = None,
) -> str:
    """The report as one HTML string. ``model`` (e.g. ``name v3``) and ``batch`` (where the batch came
    from) are shown under the title."""
    verdict = (
        f"<div class='verdict drift'>Drift found: {len(result.drifted_checks)} of "
        f"{len(result.checks)} checks</div>"
        if result.drifted
        else f"<div class='verdict ok'>No drift: 0 of {len(result.checks)} checks</div>"
    )
    sub = " · ".join(
        html.escape(s)
        for s in (
            f"model {model}" if model else "",
            f"batch {batch}" if batch else "",
            f"{result.n_current} images against {result.n_reference} reference images",
            f"family-wise alpha {result.alpha} ({result.correction})",
        )
        if s
    )
    acc_ref, acc_cur = result.accuracy.get("reference"), result.accuracy.get("current")
    summary = (
        "<table><tr><th class='l'></th><th>reference</th><th>batch</th></tr>"
        f"<tr><td class='l'>images</td><td>{result.n_reference}</td><td>{result.n_current}</td></tr>"
        f"<tr><td class='l'>mean confidence</td><td>{_fmt(result.confidence.get('reference'))}</td>"
        f"<td>{_fmt(result.confidence.get('current'))}</td></tr>"
        f"<tr><td class='l'>accuracy</td><td>{_fmt(acc_ref)}</td>"
        f"<td>{_fmt(acc_cur) if acc_cur is not None else 'no true labels'}</td></tr></table>"
    )
    tested = [c.name[len(INPUT_PREFIX) :] for c in result.checks if c.name.startswith(INPUT_PREFIX)]
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1><p class='sub'>{sub}</p>",
        verdict,
        f"<p>{html.escape(result.summary())}</p>",
        "<h2>Accuracy and confidence</h2>",
        summary,
        "<h2>Checks</h2>",
        _checks_table(result),
        "<p class='note'>input: two-sample Kolmogorov-Smirnov; predicted_class: chi-square test of "
        "homogeneity (rare classes pooled); confidence: one-sided Mann-Whitney U (batch lower), "
        "statistic P(batch &gt; reference); embedding: kernel MMD permutation test. The p-values "
        "are Holm-adjusted so that a batch like the reference alarms with probability at most "
        "alpha.</p>",
    ]
    if result.skipped:
        parts.append(
            f"<p class='note'>Not tested (constant and equal on both sides, or no data): "
            f"{html.escape(', '.join(result.skipped))}.</p>"
        )
    if tested:
        parts += ["<h2>Input statistics</h2>", _histograms(reference, current, tested)]
    parts += ["<h2>Predictions</h2>", _classes(result), _confidence(reference, current)]
    if reference.embeddings is not None and current.embeddings is not None:
        parts += ["<h2>Embeddings</h2>", _embeddings(reference, current)]
    parts.append("</body></html>")
    return "\n".join(parts)


def write_drift_report(
    path: str | Path,
    result: DriftResult,
    reference: Observations,
    current: Observations,
    **kwargs: Any,
) -> Path:
    """Write the report (``drift_report_html``) to ``path``; a folder gets ``REPORT_FILE`` in it."""
    path = Path(path)
    if path.is_dir():
        path = path / REPORT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(drift_report_html(result, reference, current, **kwargs), encoding="utf-8")
    return path
