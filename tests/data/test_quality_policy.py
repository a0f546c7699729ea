"""The data-quality policy on a glyph-like set: two classes drawn identically are quarantined and
named in one line, the run goes on; the same problem over its threshold stops the run.

The set is scikit-learn's real handwritten digits (ten classes, ~180 each) written out as image files,
plus a class ``O`` whose images are copies of some ``0`` images: the same drawing under two labels,
as in a letters-and-digits set where ``0`` and ``O`` are drawn alike.
"""

from __future__ import annotations

from pathlib import Path

from testkit import glyph_folder
from visionops.core.config import PreprocessConfig, ValidateConfig
from visionops.data.grouping import find_duplicates
from visionops.data.ingest import build_manifest
from visionops.data.quality import class_loss, conflict_lines, quarantine, summary_line
from visionops.data.sources import list_imagefolder
from visionops.data.split import plan_split, usable_rows
from visionops.data.validate import validate_manifest

PAIR = (
    "classes '0' and 'O' share {n} of their {n} images: the labels cannot be told apart by the "
    "pixels; consider merging them"
)


def test_two_classes_drawn_alike_are_quarantined_named_in_one_line_and_the_run_goes_on(
    tmp_path: Path,
) -> None:
    manifest = build_manifest(list_imagefolder(glyph_folder(tmp_path / "glyphs", 39)))
    cfg = ValidateConfig()  # the defaults: what the shipped configs use
    report = validate_manifest(manifest, config=cfg, docs_dir=tmp_path / "docs")

    assert report.success, report.summary()
    problems = {p["kind"]: p for p in report.statistics["quality"]}
    conflicts = problems["label_conflicts"]
    assert (conflicts["count"], conflicts["severity"], conflicts["threshold"]) == (
        78,
        "warning",
        0.1,
    )
    assert conflicts["total"] == len(manifest)
    small = problems["small_classes"]
    assert (small["count"], small["total"], small["names"]) == (1, 11, ["O"])
    why = "O: 0 usable of 39 images (39 label conflicts); needs validate.min_images_per_class=10"
    assert report.statistics["dropped_classes"] == {"O": why}
    # One line for the pair, not 78 lines of files.
    (issue,) = [i for i in report.issues if i.column == "label_conflict"]
    assert PAIR.format(n=39) in issue.description and issue.offending == []
    assert (
        issue.severity == "warning"
        and "validate.max_label_conflict_fraction=0.1" in issue.description
    )
    line = summary_line(report.statistics["quality"])
    assert line.startswith("1 class dropped (O), 78 images quarantined (label conflicts)"), line
    page = Path(report.html_report).read_text()
    assert "Data quality" in page and why in page

    # Preprocess leaves out the same rows: no copy of the pair anywhere, no class O.
    plan = plan_split(manifest, PreprocessConfig(), cfg)
    kept = manifest[plan.kept]
    assert "O" not in set(kept["label"])
    copied = set(manifest.loc[manifest["label"] == "O", "sha256"])
    assert not copied & set(kept["sha256"])
    assert plan.stats["dropped_classes"] == ["O"] and plan.stats["n_quarantined"] == 78 + 0


def test_the_same_problem_over_its_threshold_stops_the_run_naming_it(tmp_path: Path) -> None:
    # Every zero copied under O: 356 of ~1,975 images (18%) conflict, over the 10% allowed.
    manifest = build_manifest(list_imagefolder(glyph_folder(tmp_path / "glyphs", 178)))
    report = validate_manifest(manifest, config=ValidateConfig(), docs_dir=tmp_path / "docs")
    assert not report.success
    (issue,) = [i for i in report.issues if i.column == "label_conflict"]
    assert issue.severity == "error" and PAIR.format(n=178) in issue.description
    assert "more than validate.max_label_conflict_fraction=0.1" in issue.description
    # ... and a user who wants strictness sets the threshold to 0: one conflict stops the run.
    strict = validate_manifest(
        build_manifest(list_imagefolder(glyph_folder(tmp_path / "few", 1))),
        config=ValidateConfig(max_label_conflict_fraction=0),
        docs_dir=tmp_path / "docs2",
    )
    assert not strict.success
    assert {p["kind"]: p["severity"] for p in strict.statistics["quality"]}["label_conflicts"] == (
        "error"
    )


def test_a_class_loses_its_images_for_several_reasons_said_in_one_line(tmp_path: Path) -> None:
    manifest = build_manifest(list_imagefolder(glyph_folder(tmp_path / "glyphs", 2)))
    dups = find_duplicates(manifest)
    faces = {"per_class": {"0": {"photos": 180, "kept": 178, "lost": {"no face found": 2}}}}
    assert class_loss("O", manifest, dups, 10) == (
        "O: 0 usable of 2 images (2 label conflicts); needs validate.min_images_per_class=10"
    )
    assert class_loss("0", manifest, dups, 200, faces) == (
        "0: 176 usable of 180 photos (2 no face found, 2 label conflicts); "
        "needs validate.min_images_per_class=200"
    )
    assert conflict_lines(manifest, dups) == [PAIR.format(n=2)]


def test_dropped_classes_stop_the_run_only_past_their_share_and_never_all(tmp_path: Path) -> None:
    manifest = build_manifest(list_imagefolder(glyph_folder(tmp_path / "glyphs", 0)))
    dups = find_duplicates(manifest)
    usable = quarantine(manifest, ValidateConfig(), dups, usable_rows(manifest)).usable_per_class
    # Ten digit classes; the two smallest made too small by asking for what the third one holds.
    need = sorted(usable.values())[2]
    assert sorted(usable.values())[1] < need
    cfg = ValidateConfig(min_images_per_class=need)
    held = quarantine(manifest, cfg, find_duplicates(manifest), usable_rows(manifest))
    assert len(held.dropped_classes) == 2
    report = validate_manifest(manifest, config=cfg, docs_dir=tmp_path / "docs")
    assert report.success is True  # 2 of 10 is not more than 20%
    tighter = cfg.model_copy(update={"max_dropped_class_fraction": 0.1})
    assert not validate_manifest(manifest, config=tighter, docs_dir=tmp_path / "d2").success
    everything = cfg.model_copy(update={"min_images_per_class": 10_000})
    all_small = quarantine(manifest, everything, find_duplicates(manifest), usable_rows(manifest))
    assert all_small.dropped_classes == {}  # never all: nothing would be left to learn
    assert not validate_manifest(manifest, config=everything, docs_dir=tmp_path / "d3").success
