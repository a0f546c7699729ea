"""visionops.data.sources and visionops.data.ingest: listing raw files and recording what each one is."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from visionops.core.config import DataConfig
from visionops.core.errors import InputError
from visionops.data.ingest import (
    MANIFEST_COLUMNS,
    build_manifest,
    inspect_image,
    list_items,
    source_fingerprint_parts,
)
from visionops.data.sources import Item, SourceError, export_digits, list_csv, list_imagefolder


def solid(value: int, channels: int = 1) -> np.ndarray:
    return np.full((8, 8) if channels == 1 else (8, 8, channels), value, dtype=np.uint8)


def _folder(tmp_path: Path, write_png) -> Path:
    root = tmp_path / "images"
    write_png(root / "cat" / "1.png", solid(10))
    write_png(root / "cat" / "2.PNG", solid(20))
    write_png(root / "dog" / "a.png", solid(30))
    Image.fromarray(solid(40, channels=3)).save(root / "dog" / "b.jpg")
    (root / "dog" / "notes.txt").write_text("not an image")
    (root / "dog" / "labels.csv").write_text("x,y\n")
    (root / "README.md").write_text("top-level files are not classes")
    write_png(root / ".hidden" / "h.png", solid(50))
    (root / "empty_class").mkdir()
    return root


def test_list_imagefolder_labels_by_folder_and_skips_non_images(tmp_path: Path, write_png) -> None:
    root = _folder(tmp_path, write_png)
    items = list_imagefolder(root)
    pairs = [(Path(i.path).relative_to(root.resolve()).as_posix(), i.label) for i in items]
    assert pairs == [
        ("cat/1.png", "cat"),
        ("cat/2.PNG", "cat"),
        ("dog/a.png", "dog"),
        ("dog/b.jpg", "dog"),
    ]
    assert all(Path(i.path).is_absolute() for i in items)


def test_list_imagefolder_missing_folder_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_folder"
    with pytest.raises(SourceError, match="image folder not found") as info:
        list_imagefolder(missing)
    assert str(missing) in str(info.value)
    assert isinstance(info.value, InputError)


def test_list_imagefolder_without_images_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "cls").mkdir()
    (tmp_path / "cls" / "x.txt").write_text("x")
    with pytest.raises(SourceError, match="has no images"):
        list_imagefolder(tmp_path)


def _manifest(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "data" / "manifest.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_list_csv_resolves_paths_relative_to_the_manifest(tmp_path: Path) -> None:
    manifest = _manifest(
        tmp_path, "path,label,extra\nimg/a.png,cat,1\n ./b.png , dog ,2\nc.png,,3\n"
    )
    items = list_csv(manifest)
    base = (tmp_path / "data").resolve()
    assert items == [
        Item(str(base / "img" / "a.png"), "cat"),
        Item(str(base / "b.png"), "dog"),
        Item(str(base / "c.png"), None),
    ]


def test_list_csv_rejects_parent_escape_naming_the_row(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, "path,label\nok.png,a\n../secret.png,b\n")
    with pytest.raises(SourceError) as info:
        list_csv(manifest)
    message = str(info.value)
    assert f"{manifest}:3:" in message  # header is line 1, so the second data row is line 3
    assert "'../secret.png'" in message
    assert "escapes" in message


def test_list_csv_rejects_absolute_paths_outside(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, "path,label\n/etc/passwd,a\n")
    with pytest.raises(SourceError, match=r"manifest\.csv:2: path '/etc/passwd' escapes"):
        list_csv(manifest)


def test_list_csv_names_missing_columns(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, "file,class\na.png,x\n")
    with pytest.raises(SourceError) as info:
        list_csv(manifest)
    assert "missing column(s) ['label', 'path']" in str(info.value)
    assert str(manifest) in str(info.value)


def test_list_csv_empty_path_names_the_row(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, "path,label\na.png,x\n,y\n")
    with pytest.raises(SourceError, match=r"manifest\.csv:3: empty path"):
        list_csv(manifest)


def test_list_csv_missing_manifest_and_no_rows(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="manifest not found"):
        list_csv(tmp_path / "nope.csv")
    with pytest.raises(SourceError, match="has no rows"):
        list_csv(_manifest(tmp_path, "path,label\n"))


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_digits(tmp_path_factory.mktemp("sources") / "digits")


def test_export_digits_writes_1797_pngs_in_10_folders(digits_dir: Path) -> None:
    folders = sorted(p.name for p in digits_dir.iterdir() if p.is_dir())
    assert folders == [str(d) for d in range(10)]
    pngs = list(digits_dir.glob("*/*.png"))
    assert len(pngs) == 1797
    with Image.open(digits_dir / "0" / "0000.png") as img:  # sample 0 of load_digits is a zero
        assert img.size == (8, 8) and img.mode == "L"
        pixels = np.asarray(img)
    from sklearn.datasets import load_digits

    expected = np.clip(np.rint(load_digits().images[0] * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(pixels, expected)
    assert not digits_dir.with_name("digits.tmp").exists()


def test_export_digits_second_call_does_not_rewrite(
    digits_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = sorted(digits_dir.glob("*/*.png"))[:50] + [digits_dir / "_COMPLETE"]
    before = {f: f.stat().st_mtime_ns for f in files}

    def no_reload() -> None:
        raise AssertionError("export_digits reloaded the data set although it was complete")

    import sklearn.datasets

    monkeypatch.setattr(sklearn.datasets, "load_digits", no_reload)
    assert export_digits(digits_dir) == digits_dir
    assert {f: f.stat().st_mtime_ns for f in files} == before


def test_list_items_digits_source_uses_the_exported_folder(digits_dir: Path) -> None:
    items = list_items(DataConfig(source="digits", path=str(digits_dir)))
    assert len(items) == 1797
    counts = pd.Series([i.label for i in items]).value_counts()
    assert sorted(counts.index) == [str(d) for d in range(10)]
    assert counts.min() >= 170


def test_list_items_imagefolder_and_csv(tmp_path: Path, write_png) -> None:
    root = _folder(tmp_path, write_png)
    assert len(list_items(DataConfig(source="imagefolder", path=str(root)))) == 4
    manifest = _manifest(tmp_path, "path,label\nx.png,a\n")
    assert list_items(DataConfig(source="csv", path=str(manifest)))[0].label == "a"


def _png_bytes(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def test_build_manifest_records_good_and_broken_files_without_raising(
    tmp_path: Path, write_png
) -> None:
    rng = np.random.default_rng(0)
    grey = write_png(tmp_path / "good_grey.png", rng.integers(0, 256, (6, 10), dtype=np.uint8))
    rgb = write_png(tmp_path / "good_rgb.png", rng.integers(0, 256, (5, 7, 3), dtype=np.uint8))
    # Noise compresses badly, so the image data spans the second half of the file.
    full = _png_bytes(rng.integers(0, 256, (64, 64), dtype=np.uint8))
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(full[: len(full) // 2])
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "text.png"
    text.write_text("this is not a PNG")
    missing = tmp_path / "missing.png"

    paths = [grey, rgb, truncated, empty, text, missing]
    frame = build_manifest([Item(str(p), "x") for p in paths])

    assert list(frame.columns) == MANIFEST_COLUMNS
    assert len(frame) == len(paths)
    rows = {Path(r.path).name: r for r in frame.itertuples()}

    for path, (w, h, mode) in ((grey, (10, 6, "L")), (rgb, (7, 5, "RGB"))):
        row = rows[path.name]
        assert row.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
        assert row.size_bytes == path.stat().st_size
        assert (row.width, row.height, row.mode) == (w, h, mode)
        assert pd.isna(row.decode_error)
        assert row.label == "x"

    t = rows["truncated.png"]
    assert t.decode_error  # the header is fine, the pixel data is not
    assert (t.width, t.height) == (64, 64)
    assert t.sha256 == hashlib.sha256(truncated.read_bytes()).hexdigest()

    for name in ("empty.png", "text.png"):
        row = rows[name]
        assert row.decode_error and "UnidentifiedImageError" in row.decode_error
        assert row.sha256 is not None
        assert pd.isna(row.width)

    assert rows["empty.png"].size_bytes == 0
    m = rows["missing.png"]
    assert m.decode_error.startswith("cannot read file")
    assert pd.isna(m.sha256) and pd.isna(m.size_bytes) and pd.isna(m.width)

    assert str(frame["width"].dtype) == "Int64"
    assert frame["decode_error"].notna().sum() == 4


def test_inspect_image_of_a_folder_is_a_decode_error(tmp_path: Path) -> None:
    record = inspect_image(str(tmp_path))
    assert record["decode_error"]


def test_source_fingerprint_parts_change_with_the_file(tmp_path: Path, write_png) -> None:
    path = write_png(tmp_path / "a" / "1.png", solid(1))
    items = [Item(str(path), "a"), Item(str(tmp_path / "gone.png"), "b")]
    before = source_fingerprint_parts(items)
    assert before[0][:3] == (str(path), "a", path.stat().st_size)
    assert before[1] == (str(tmp_path / "gone.png"), "b", -1, -1)
    write_png(path, np.arange(64, dtype=np.uint8).reshape(8, 8))
    assert source_fingerprint_parts(items)[0] != before[0]


def test_list_csv_reads_a_manifest_with_a_byte_order_mark(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.csv"
    manifest.write_bytes("path,label\na.png,cat\n".encode("utf-8-sig"))
    assert list_csv(manifest) == [Item(str(tmp_path.resolve() / "a.png"), "cat")]
