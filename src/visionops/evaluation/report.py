"""Human-readable documents: the evaluation report and the model card (Markdown)."""

from __future__ import annotations

from typing import Any

BASELINE_TITLES = {
    "logistic_regression": "logistic regression on standardised pixels",
    "pca_svm": "PCA + RBF SVM",
}


def baseline_table(baselines: list[dict[str, Any]]) -> list[str]:
    """The model beside the simple baselines on the same test images, with the paired evidence
    (Markdown lines; empty when no baseline was configured)."""
    if not baselines:
        return []
    lines = [
        "| model | accuracy | macro-F1 | model minus it (points) | model alone right | "
        "it alone right | McNemar p | CI of the difference |",
        "|---|---|---|---|---|---|---|---|",
    ]
    notes = []
    for b in baselines:
        title = BASELINE_TITLES.get(b["name"], b["name"])
        if b.get("skipped"):
            lines.append(f"| {title} | skipped: {b['skipped']} | | | | | | |")
            continue
        p = b["paired"]
        level = f"{100 * p['ci_level']:.0f}%"
        lines.append(
            f"| {title} ({', '.join(f'{k} {v}' for k, v in b['params'].items())}) | "
            f"{b['accuracy']:.4f} | {b['macro_f1']:.4f} | "
            f"{100 * p['accuracy_delta']:+.2f} | {p['candidate_only_correct']} | "
            f"{p['champion_only_correct']} | {p['mcnemar_p_two_sided']:.4g} | "
            f"{level} [{100 * p['ci_low']:+.2f}, {100 * p['ci_high']:+.2f}] |"
        )
        if b.get("note"):
            notes.append(f"{title}: {b['note']}.")
    return [
        *lines,
        "",
        "Fitted on the same training split (their setting chosen on the validation split) and "
        "scored on the same test images; the paired columns count the images only one of the two "
        "gets right. " + " ".join(notes),
    ]


def slice_table(name: str, rows: list[dict[str, Any]]) -> list[str]:
    """One slice of the data (``data.slices``, a CSV's ``slice_*`` column): accuracy per value,
    lowest first, the champion's beside it on the same images."""
    champion = any("champion_accuracy" in r for r in rows)
    lines = [
        f"## Slice `{name}`",
        "",
        "| value | test images | accuracy |" + (" champion |" if champion else ""),
        "|---|---|---|" + ("---|" if champion else ""),
    ]
    for r in rows:
        theirs = r.get("champion_accuracy")
        extra = (f" {theirs:.4f} |" if theirs is not None else " - |") if champion else ""
        lines.append(f"| {r['value']} | {r['n']} | {r['accuracy']:.4f} |{extra}")
    return lines


def unknown_lines(unknown: dict[str, Any] | None, accuracy: float) -> list[str]:
    """The model's answers with and without ``unknown`` (Markdown lines; empty without a threshold)."""
    if not unknown:
        return []
    estimate = unknown.get("strangers_unknown_estimate")
    strangers = (
        f" Strangers answered `unknown`, estimated at train time from the enrolled people (each in "
        f"turn a stranger to the rest): {estimate:.1%}."
        if estimate is not None
        else ""
    )
    return [
        "",
        f"`unknown` (a {unknown['score']} threshold of {unknown['threshold']:.4f}): accuracy "
        f"{accuracy:.4f} as served, {unknown['accuracy_unknown_off']:.4f} with `unknown` off; "
        f"test images of enrolled classes answered `unknown`: {unknown['n_answered_unknown']}. "
        f"The gate judges the served answers.{strangers}",
    ]


def render_markdown(report: dict[str, Any]) -> str:
    """The evaluation report as Markdown (the JSON beside it holds the same numbers)."""
    m = report["metrics"]
    lines = [
        "# Evaluation report",
        "",
        f"Model: `{report['model_uri']}`  ",
        f"Test images: {report['test_size']}",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    for key in ("accuracy", "macro_f1", *[k for k in m if k.startswith("top_")], "ece"):
        if key in m:
            lines.append(f"| {key} | {m[key]:.4f} |")
    if "n_test_clean" in m:
        lines += [
            "",
            f"Clean test subset ({m['n_test_clean']} of {report['test_size']} images without a near-copy "
            f"in the training split): accuracy {m['clean_accuracy']:.4f}, macro-F1 "
            f"{m['clean_macro_f1']:.4f}. The full figures may be inflated by the rest.",
        ]
    lines += unknown_lines(report.get("unknown"), m["accuracy"])
    champion = report.get("champion")
    if champion:
        lines += [
            "",
            f"Champion v{champion['version']} on the same test images: accuracy "
            f"{champion['accuracy']:.4f}, macro-F1 {champion['macro_f1']:.4f}"
            + (
                f"; on the clean subset {champion['clean_accuracy']:.4f} and "
                f"{champion['clean_macro_f1']:.4f}."
                if "clean_accuracy" in champion
                else "."
            ),
        ]
    if report.get("baselines"):
        lines += [
            "",
            "## Against simple baselines",
            "",
            *baseline_table(report["baselines"]),
        ]
    for name, rows in report.get("slices", {}).items():
        lines += ["", *slice_table(name, rows)]
    lines += [
        "",
        "## Per class",
        "",
        "| class | precision | recall | F1 | support |",
        "|---|---|---|---|---|",
    ]
    for label, row in m["per_class"].items():
        lines.append(
            f"| {label} | {row['precision']:.3f} | {row['recall']:.3f} | {row['f1-score']:.3f} | "
            f"{int(row['support'])} |"
        )
    lines += [
        "",
        f"Misclassified test images: {report.get('misclassified', 0)} (see `misclassified.png`); "
        "calibration in `reliability.png`, confusion matrix in `confusion_matrix.png`.",
        "",
    ]
    return "\n".join(lines)


def model_card(
    *,
    name: str,
    version: str,
    cfg: dict[str, Any],
    metrics: dict[str, float],
    decision: dict[str, Any],
    lineage: dict[str, str],
    labels: list[str],
    n_test: int | None,
    baselines: list[dict[str, Any]] | None = None,
    quality: list[dict[str, Any]] | None = None,
    dropped: dict[str, str] | None = None,
    ensemble: str | None = None,
    accuracy_unknown_off: float | None = None,
) -> str:
    """The model card stored with each registered version: data, its quality (what was left out and
    why), metrics, intended use, limitations. ``ensemble``: how an ensemble was trained
    (``ensemble_description``), None for one network."""
    data = cfg.get("data", {})
    how = (
        f" A {ensemble}: train and val pooled and cut into folds by class that keep near-copies "
        "together; each member trained on all folds but one and early-stopped on that one, which "
        "it scores (out-of-fold). The served probability is the mean of the members'."
        if ensemble
        else ""
    )
    lines = [
        f"# Model card: {name} version {version}",
        "",
        "## Model",
        "",
        f"Architecture `{cfg.get('model', {}).get('name')}`, trained by the visionops pipeline. Input: uint8 "
        f"images, (N, H, W) grey or (N, H, W, 3) colour, any size (resized to {data.get('image_size')} px, "
        f"{data.get('channels')} channel(s)). Output: a label and its probability per image.{how}",
        "",
        "## Data",
        "",
        f"Source `{data.get('source')}`{' at ' + str(data['path']) if data.get('path') else ''}; "
        f"data fingerprint `{lineage.get('data_fingerprint', '')}`. Classes ({len(labels)}): "
        f"{', '.join(labels)}. Stratified train/val/test split (val {cfg.get('preprocess', {}).get('val_fraction')}, "
        f"test {cfg.get('preprocess', {}).get('test_fraction')}).",
        "",
        *quality_section(quality or [], dropped or {}),
        "## Metrics (held-out test split)",
        "",
        *[f"- {k}: {v:.4f}" for k, v in metrics.items()],
        *(
            [
                f"- accuracy with `unknown` off: {accuracy_unknown_off:.4f} (the figures above are "
                "the served answers, `unknown` on)"
            ]
            if accuracy_unknown_off is not None
            else []
        ),
        f"- test images: {n_test}" if n_test else "",
        "",
        *(["## Against simple baselines", "", *baseline_table(baselines), ""] if baselines else []),
        *decision_section(decision),
        "## Intended use",
        "",
        f"Classifying images like those of the training data into the {len(labels)} classes above, "
        f"through `models:/{name}@champion` once promoted.",
        "",
        "## Limitations",
        "",
        (
            "- It answers `unknown` for images too far from every enrolled one (a threshold chosen at "
            "train time); images of other classes close to an enrolled one still get a wrong label."
            if accuracy_unknown_off is not None
            else "- It always answers one of the known classes: images of other classes, or unlike "
            "the training data (other sensors, lighting, framing), get a confident-looking wrong label."
        ),
        "- Metrics come from one test split of a few hundred images: differences of a point or two are "
        "within noise (the gate records the confidence interval).",
        "- Probabilities are not guaranteed to be calibrated: see the evaluation run's reliability plot.",
        "",
        "## Lineage",
        "",
        *[f"- {k}: `{v}`" for k, v in lineage.items()],
        "",
    ]
    return "\n".join(lines)


def decision_section(decision: dict[str, Any]) -> list[str]:
    """The model card's gate part: the per-class table, one table per slice, the decision's reasons."""
    return [
        *group_table("## Per class, worst first", "class", decision.get("classes", [])),
        *[
            line
            for name, rows in decision.get("slices", {}).items()
            for line in group_table(f"## Slice `{name}`, worst first", "value", rows)
        ],
        "## Gate decision",
        "",
        f"{'Passed' if decision.get('passed') else 'Rejected'}:",
        *[f"- {r}" for r in decision.get("reasons", [])],
        "",
    ]


def group_table(title: str, what: str, rows: list[dict[str, Any]]) -> list[str]:
    """The gate's per-class (or per-slice) table: each group's test images and recall beside the
    champion's on the same images, the change in points, whether the rules judged it."""
    if not rows:
        return []
    champion = any("champion_recall" in r for r in rows)
    head = [what, "test images", "recall", *(["champion", "change"] if champion else []), "judged"]
    lines = [title, "", "| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for r in rows:
        cells = [str(r["group"]), str(r["support"]), f"{100 * r['recall']:.1f}%"]
        if champion:
            theirs = r.get("champion_recall")
            cells += (
                [f"{100 * theirs:.1f}%", f"{r['delta_points']:+.1f}"]
                if theirs is not None
                else ["-", "-"]
            )
        cells.append("yes" if r["judged"] else "no (too few)")
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def quality_section(quality: list[dict[str, Any]], dropped: dict[str, str]) -> list[str]:
    """The model card's data-quality section: the policy's table and the classes not enrolled."""
    from visionops.data.quality import summary_line, table_lines

    if not quality and not dropped:
        return []
    lines = ["## Data quality", "", f"Data quality: {summary_line(quality)}.", ""]
    if any(p.get("count") for p in quality):
        lines += [*table_lines(quality), ""]
    if dropped:
        lines += [
            f"Classes not enrolled ({len(dropped)}): this version does not know them and answers "
            "another class for them, or `unknown` where the served model has an unknown threshold "
            "(a face service's answer for a person it does not know).",
            "",
            *[f"- {why}" for why in dropped.values()],
            "",
        ]
    return lines
