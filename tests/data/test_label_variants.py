"""One label rule for every source, and a warning for classes that are one class written twice.

``cat`` and ``cat `` are the same class in an image folder, a CSV manifest and a URL manifest
(surrounding whitespace removed, Unicode NFC); ``Cat`` stays a class of its own, and validation says
that it looks like ``cat`` (a warning, an error with ``validate.label_variant_severity: error``).
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from visionops.core.config import ValidateConfig
from visionops.data.ingest import build_manifest
from visionops.data.sources import list_csv, list_imagefolder, normalize_label
from visionops.data.urls import read_url_manifest
from visionops.data.validate import validate_manifest


def _photos(folder: Path, n: int, seed: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        img = Image.effect_noise((16, 16), 40 + seed + i)  # distinct content per image
        paths.append(folder / f"{i}.png")
        img.save(paths[-1])
    return paths


def test_an_image_folder_merges_whitespace_variants_and_keeps_case_apart(tmp_path: Path) -> None:
    _photos(tmp_path / "src" / "cat", 3, 0)
    _photos(tmp_path / "src" / "cat ", 2, 10)
    _photos(tmp_path / "src" / "Cat", 2, 20)
    _photos(tmp_path / "src" / unicodedata.normalize("NFD", "café"), 2, 30)
    _photos(tmp_path / "src" / "café", 2, 40)
    labels = Counter(i.label for i in list_imagefolder(tmp_path / "src"))
    assert labels == {"cat": 5, "Cat": 2, "café": 4}


def test_a_csv_and_a_url_manifest_apply_the_same_rule(tmp_path: Path) -> None:
    paths = _photos(tmp_path / "img", 3, 0)
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "path,label\n"
        + "\n".join(f"img/{p.name},{lab}" for p, lab in zip(paths, ["cat ", " cat", "Cat"]))
    )
    assert [i.label for i in list_csv(manifest)] == ["cat", "cat", "Cat"]
    urls = tmp_path / "u.csv"
    urls.write_text("name,url\n cat ,http://example.org/a.png\nCat,http://example.org/b.png\n")
    rows, _ = read_url_manifest(urls)
    assert [r.name for r in rows] == ["cat", "Cat"]
    assert normalize_label("  \t ") is None and normalize_label(None) is None


@pytest.mark.parametrize("severity", ["warning", "error"])
def test_case_variants_are_reported_naming_both_spellings(tmp_path: Path, severity: str) -> None:
    for label, seed in (("cat", 0), ("Cat", 100), ("dog", 200)):
        _photos(tmp_path / "src" / label, 3, seed)
    manifest = build_manifest(list_imagefolder(tmp_path / "src"))
    report = validate_manifest(
        manifest,
        min_images_per_class=2,
        docs_dir=tmp_path / "docs",
        config=ValidateConfig(label_variant_severity=severity),
    )
    (issue,) = [i for i in report.issues if i.column == "variant_of"]
    assert issue.severity == severity
    assert {(r["label"], r["observed"]) for r in issue.offending} == {
        ("cat", "Cat"),
        ("Cat", "cat"),
    }
    assert "differs from another class's only in case" in issue.description
    assert report.success is (severity == "warning")
