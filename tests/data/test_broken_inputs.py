"""A corpus of broken inputs, made here, through ingest's inspection and the real GX suite.

Each case ends as documented in the README's data section: an error that names the file (and the
run stops), or a warning that is recorded while the run goes on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from visionops.core.config import ValidateConfig
from visionops.data.ingest import build_manifest, inspect_image
from visionops.data.preprocess import load_image
from visionops.data.sources import Item, SourceError, list_csv, list_imagefolder
from visionops.data.validate import ValidationReport, validate_manifest


def _issues(report: ValidationReport, column: str) -> list:
    return [i for i in report.issues if i.column == column]


def _paths(issue) -> set[str]:
    return {row["path"] for row in issue.offending}


@pytest.fixture
def clean(tmp_path: Path, corpus) -> list[Item]:
    """Three classes of four distinct, decodable 32x32 grey images."""
    items = []
    for c, label in enumerate(["a", "b", "c"]):
        for i in range(4):
            path = corpus.save(tmp_path / "src" / label / f"{i}.png", corpus.textured(10 * c + i))
            items.append(Item(str(path), label))
    return items


def _check(items: list[Item], tmp_path: Path, **cfg) -> ValidationReport:
    rules = ValidateConfig(**{"min_images_per_class": 4, "min_side": 4, **cfg})
    return validate_manifest(build_manifest(items), config=rules, docs_dir=tmp_path / "docs")


def test_clean_corpus_passes(clean, tmp_path: Path) -> None:
    report = _check(clean, tmp_path, modes=["L"], classes=["a", "b", "c"])
    assert report.success and report.issues == []


def test_undecodable_files_are_errors_naming_each(clean, tmp_path: Path, corpus) -> None:
    src = tmp_path / "src" / "a"
    jpeg = corpus.jpeg_bytes(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8))
    (src / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (src / "zero.png").write_bytes(b"")
    (src / "text.png").write_text("this is a text file, not a PNG\n")
    bomb = src / "bomb.png"
    bomb.write_bytes(corpus.png_claiming(100_000, 100_000))
    broken = [src / n for n in ("truncated.jpg", "zero.png", "text.png", "bomb.png")]

    # The bomb is refused from its header: decoding 10^10 pixels would not fit in memory.
    report = _check([*clean, *(Item(str(p), "a") for p in broken)], tmp_path)

    assert not report.success
    (issue,) = _issues(report, "decode_error")
    assert issue.severity == "error"
    assert _paths(issue) == {str(p) for p in broken}
    observed = {Path(row["path"]).name: row["observed"] for row in issue.offending}
    assert (
        "DecompressionBombError" in observed["bomb.png"] and "10000000000" in observed["bomb.png"]
    )
    assert "UnidentifiedImageError" in observed["text.png"]
    summary = report.summary()
    assert all(str(p) in summary for p in broken) and "ERROR" in summary


def test_pil_bomb_limit_does_not_decide_alone(tmp_path: Path, corpus) -> None:
    path = tmp_path / "big.png"
    corpus.save(path, np.zeros((64, 64), np.uint8))
    assert inspect_image(str(path), max_pixels=64 * 64)["decode_error"] is None
    assert (
        "DecompressionBombError" in inspect_image(str(path), max_pixels=64 * 64 - 1)["decode_error"]
    )


def test_one_pixel_image_is_out_of_bounds(clean, tmp_path: Path, corpus) -> None:
    dot = corpus.save(tmp_path / "src" / "a" / "dot.png", np.full((1, 1), 7, np.uint8))
    report = _check([*clean, Item(str(dot), "a")], tmp_path)
    assert not report.success
    for column in ("width", "height"):
        (issue,) = _issues(report, column)
        assert issue.offending == [{"path": str(dot), "observed": 1.0}]


@pytest.mark.parametrize("convert", [True, False])
def test_cmyk_rgba_and_16_bit_modes(clean, tmp_path: Path, corpus, convert: bool) -> None:
    grey = corpus.textured(99)
    odd = {
        "cmyk.jpg": Image.fromarray(np.stack([grey] * 3, -1)).convert("CMYK"),
        "rgba.png": Image.fromarray(np.dstack([grey, grey, grey, np.full_like(grey, 200)]), "RGBA"),
        "deep.png": Image.fromarray(grey.astype(np.uint16) * 257),
    }
    paths = [corpus.save(tmp_path / "src" / "b" / name, img) for name, img in odd.items()]
    report = _check(
        [*clean, *(Item(str(p), "b") for p in paths)], tmp_path, modes=["L"], convert_modes=convert
    )

    (issue,) = _issues(report, "mode")
    assert {row["observed"] for row in issue.offending} == {"CMYK", "RGBA", "I;16"}
    assert issue.severity == ("warning" if convert else "error")
    assert report.success is convert
    if convert:  # converted the way training and serving convert: grey, scaled, not clipped
        for path in paths:
            x = load_image(str(path), 32, 1)
            assert x.shape == (1, 32, 32) and abs(float(x.mean()) - float(grey.mean())) < 4


def test_unknown_label_and_empty_declared_class(clean, tmp_path: Path, corpus) -> None:
    stray = corpus.save(tmp_path / "src" / "zebra" / "0.png", corpus.textured(500))
    report = _check(
        [*clean, Item(str(stray), "zebra")],
        tmp_path,
        classes=["a", "b", "c", "d"],
        min_images_per_class=1,
    )
    assert not report.success
    (labels,) = _issues(report, "label")
    assert labels.offending == [{"path": str(stray), "observed": "zebra"}]
    (count,) = _issues(report, "count")
    assert count.offending == [
        {
            "label": "d",
            "why": "d: 0 usable of 0 images; needs validate.min_images_per_class=1",
            "observed": 0,
        }
    ]


def test_empty_class_folder_is_not_a_class_but_a_declared_one_is_missing(
    tmp_path: Path, corpus
) -> None:
    for i in range(4):
        corpus.save(tmp_path / "f" / "a" / f"{i}.png", corpus.textured(i))
    (tmp_path / "f" / "empty").mkdir()
    items = list_imagefolder(tmp_path / "f")
    assert {i.label for i in items} == {"a"}
    report = _check(items, tmp_path, classes=["a", "empty"])
    (count,) = _issues(report, "count")
    assert count.offending == [
        {
            "label": "empty",
            "why": "empty: 0 usable of 0 images; needs validate.min_images_per_class=4",
            "observed": 0,
        }
    ]


def test_imbalance_is_a_warning_or_an_error_per_config(clean, tmp_path: Path, corpus) -> None:
    extra = [
        Item(str(corpus.save(tmp_path / "src" / "a" / f"x{i}.png", corpus.textured(900 + i))), "a")
        for i in range(8)
    ]
    warn = _check([*clean, *extra], tmp_path, max_imbalance=2.0)
    assert warn.success
    (issue,) = _issues(warn, "imbalance")
    assert issue.severity == "warning"
    assert {r["label"]: r["observed"] for r in issue.offending} == {"b": 3.0, "c": 3.0}
    assert "WARNING" in warn.summary()
    err = _check([*clean, *extra], tmp_path, max_imbalance=2.0, imbalance_severity="error")
    assert not err.success


def _leak_setup(
    clean: list[Item], tmp_path: Path, corpus, copy_kind: str
) -> tuple[list[Item], list[str], Path, Path]:
    items = list(clean)
    splits = (["train"] * 2 + ["val", "test"]) * 3
    original = Path(items[0].path)  # class a, train
    pixels = np.asarray(Image.open(original))
    if copy_kind == "exact":
        copy = tmp_path / "src" / "a" / "copy.png"
        copy.write_bytes(original.read_bytes())
    else:  # re-encoded at another size: a different file, the same picture
        copy = corpus.save(
            tmp_path / "src" / "a" / "copy.jpg",
            np.asarray(Image.fromarray(pixels).resize((48, 48))),
            quality=70,
        )
    items[3] = Item(str(copy), "a")  # the test image of class a becomes the copy
    return items, splits, original, copy


@pytest.mark.parametrize("copy_kind", ["exact", "near"])
def test_copy_of_a_training_image_in_test_is_leakage(
    clean, tmp_path: Path, corpus, copy_kind: str
) -> None:
    items, splits, original, copy = _leak_setup(clean, tmp_path, corpus, copy_kind)
    rules = ValidateConfig(min_images_per_class=4, near_duplicate_bits=6)
    manifest = build_manifest(items)
    report = validate_manifest(manifest, config=rules, docs_dir=tmp_path / "docs", splits=splits)
    assert not report.success
    (leak,) = _issues(report, "leak_pixel_diff")
    assert leak.severity == "error"
    assert len(leak.offending) == 1
    row = leak.offending[0]
    assert (
        row["path"] == str(copy)
        and row["split"] == "test"
        and row["leaks_train_file"] == str(original)
    )
    assert row["dhash_bits"] <= 6
    assert row["observed"] <= 5.0  # mean pixel difference of the thumbnails
    assert str(original) in report.summary() and str(copy) in report.summary()
    # Copies across a user-given split are kept (one per split) so that the leak shows, not dropped.
    assert not _issues(report, "duplicate_of")
    # Without a split: an exact copy with the same label is dropped with a warning; a near-copy is
    # silent. (Dropping the copy leaves class a 3 usable images: 3 are asked for here.)
    no_split = validate_manifest(
        manifest,
        config=rules.model_copy(update={"min_images_per_class": 3}),
        docs_dir=tmp_path / "docs2",
    )
    assert no_split.success
    assert bool(_issues(no_split, "duplicate_of")) is (copy_kind == "exact")


def test_manifest_paths_escaping_the_source_name_the_row(tmp_path: Path, corpus) -> None:
    base = tmp_path / "data"
    corpus.save(base / "ok.png", corpus.textured(1))
    outside = corpus.save(tmp_path / "secret.png", corpus.textured(2))
    (base / "link.png").symlink_to(outside)
    for row, needle in (
        ("../secret.png", "'../secret.png'"),
        (str(outside), str(outside)),
        ("link.png", "'link.png'"),
    ):
        manifest = base / "m.csv"
        manifest.write_text(f"path,label\nok.png,a\n{row},a\n")
        with pytest.raises(SourceError, match="escapes") as info:
            list_csv(manifest)
        assert f"{manifest}:3:" in str(info.value) and needle in str(info.value)
    folder = tmp_path / "folder"
    corpus.save(folder / "a" / "ok.png", corpus.textured(3))
    (folder / "a" / "out.png").symlink_to(outside)
    with pytest.raises(SourceError, match="outside the image folder") as info:
        list_imagefolder(folder)
    assert "out.png" in str(info.value)


def test_face_service_csv_layout(tmp_path: Path, corpus) -> None:
    corpus.save(tmp_path / "p" / "1.png", corpus.textured(1))
    manifest = tmp_path / "faces.csv"
    manifest.write_text("path,name,int_label\np/1.png,Ada Lovelace,0\n")
    (item,) = list_csv(manifest)
    assert item.label == "Ada Lovelace" and item.path == str((tmp_path / "p" / "1.png").resolve())


def test_incremental_reingest_reads_only_new_and_changed_files(
    clean, tmp_path: Path, corpus
) -> None:
    first = build_manifest(clean, now=1000.0)
    assert first.attrs["reread"] == len(clean) and (first["first_seen"] == 1000.0).all()

    added = Item(str(corpus.save(tmp_path / "src" / "a" / "new.png", corpus.textured(777))), "a")
    changed, touched = Path(clean[1].path), Path(clean[2].path)
    corpus.save(changed, corpus.textured(778))
    stat = touched.stat()
    import os

    os.utime(touched, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # same bytes, new mtime

    again = build_manifest([*clean, added], previous=first, now=2000.0)
    assert again.attrs["reread"] == 3  # the new, the changed and the touched file only
    seen = dict(zip(again["path"], again["first_seen"], strict=True))
    assert seen[added.path] == 2000.0 and seen[str(changed)] == 2000.0
    assert seen[str(touched)] == 1000.0  # content hash confirmed unchanged
    assert seen[clean[0].path] == 1000.0
    row = again.set_index("path").loc[str(changed)]
    assert row["sha256"] != first.set_index("path").loc[str(changed), "sha256"]
    assert build_manifest([*clean, added], previous=again).attrs["reread"] == 0
    pd.testing.assert_frame_equal(
        build_manifest([*clean, added], previous=again, now=3000.0), again
    )
