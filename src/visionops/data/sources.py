"""Data sources: each lists ``(path, label)`` pairs of raw image files; nothing is modified."""

from __future__ import annotations

import csv
import json
import unicodedata
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from visionops.core.constants import IMAGE_SUFFIXES
from visionops.core.errors import InputError

SPLIT_NAMES = ("train", "val", "test")


class SourceError(InputError):
    """A data source is missing or malformed; the message names the file and row."""


@dataclass(frozen=True)
class Item:
    path: str  # absolute
    label: str | None
    box: tuple[int, int, int, int] | None = (
        None  # face rectangle x1, y1, x2, y2 when the source gives one
    )
    group: str | None = (
        None  # images of one group (a person's session, a burst) always share a split
    )
    split: str | None = (
        None  # a user-given split (train/val/test): used as given, leakage is then an error
    )
    # (name, value) of each slice the image belongs to (a CSV's slice_* columns, data.slices):
    # the evaluation reports, and the gate judges, each value of a slice on its own.
    slices: tuple[tuple[str, str], ...] = ()


SLICE_PREFIX = "slice_"


def with_slices(items: list[Item], patterns: dict[str, str]) -> list[Item]:
    """Each item with the slices ``data.slices`` finds in its path: per slice name a regular
    expression whose first group is the value (searched in the path; "other" when it does not
    match). Slices a CSV gave keep their values."""
    import re

    if not patterns:
        return items
    compiled = {name: re.compile(rx) for name, rx in patterns.items()}
    out = []
    for item in items:
        given = dict(item.slices)
        for name, rx in compiled.items():
            if name not in given:
                found = rx.search(item.path)
                given[name] = (found.group(1) if found and found.group(1) else "other").lower()
        out.append(replace(item, slices=tuple(sorted(given.items()))))
    return out


def normalize_label(raw: str | None) -> str | None:
    """The one rule every source applies to a label: Unicode NFC, surrounding whitespace removed;
    None when nothing is left. ``cat``, ``cat `` and ``cat`` written with a combining accent
    differently are one class; ``Cat`` stays another one, and validation warns that it looks like
    the same (``validate.label_variant_severity``)."""
    if raw is None:
        return None
    label = unicodedata.normalize("NFC", str(raw)).strip()
    return label or None


def label_key(label: str) -> str:
    """What two labels that differ only in case or Unicode form have in common."""
    return unicodedata.normalize("NFKC", label).casefold().strip()


def export_digits(target: Path) -> Path:
    """Write scikit-learn's 1,797 8x8 digits once as PNG files in class folders (``<label>/NNNN.png``).

    The images ship inside scikit-learn, so nothing is downloaded. Writing them as files makes the
    default pipeline exercise the same file path as a user's image folder.
    """
    marker = target / "_COMPLETE"
    if marker.exists():
        return target
    from sklearn.datasets import load_digits

    digits = load_digits()
    tmp = target.with_name(target.name + ".tmp")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    for i, (image, label) in enumerate(zip(digits.images, digits.target, strict=True)):
        folder = tmp / str(int(label))
        folder.mkdir(parents=True, exist_ok=True)
        pixels = np.clip(np.rint(image * (255.0 / 16.0)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels, mode="L").save(folder / f"{i:04d}.png")
    (tmp / "_COMPLETE").write_text(json.dumps({"images": len(digits.images)}))
    if target.exists():
        import shutil

        shutil.rmtree(target)
    tmp.rename(target)
    return target


def list_imagefolder(root: str | Path) -> list[Item]:
    """``root/<class>/*.{png,jpg,jpeg,pgm,bmp}``; the folder name is the label."""
    root = Path(root)
    if not root.is_dir():
        raise SourceError(f"image folder not found: {root}")
    base = root.resolve()
    items = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for path in sorted(class_dir.iterdir()):
            if not (path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES):
                continue
            resolved = path.resolve()
            if not resolved.is_relative_to(base):  # a symlink pointing out of the source
                raise SourceError(
                    f"{path}: resolves to {resolved}, outside the image folder {base}"
                )
            items.append(Item(str(resolved), normalize_label(class_dir.name)))
    if not items:
        raise SourceError(
            f"image folder {root} has no images in class sub-folders ({', '.join(IMAGE_SUFFIXES)})"
        )
    return items


def list_csv(manifest: str | Path) -> list[Item]:
    """A CSV with ``path,label`` (or the face-service layout ``path,name,int_label``) columns, and
    optionally ``group`` (rows of one group share a split), ``split`` (train/val/test on every row:
    the split is used as given) and ``slice_<name>`` columns (e.g. ``slice_lighting``: the value of
    that slice per image, "unknown" where empty).

    Paths are relative to the manifest's folder and must stay inside it (``../``, absolute paths
    elsewhere and symlinks out of the folder are rejected, naming the row).
    """
    manifest = Path(manifest)
    if not manifest.is_file():
        raise SourceError(f"manifest not found: {manifest}")
    base = manifest.parent.resolve()
    items: list[Item] = []
    with manifest.open(newline="", encoding="utf-8-sig") as fh:  # tolerate a byte-order mark
        reader = csv.DictReader(fh)
        fields = set(reader.fieldnames or [])
        label_column = (
            "name" if "label" not in fields and {"name", "int_label"} <= fields else "label"
        )
        missing = {"path", label_column} - fields
        if missing:
            raise SourceError(
                f"{manifest}: missing column(s) {sorted(missing)}; found {reader.fieldnames}"
            )
        for row_no, row in enumerate(reader, start=2):
            raw = (row.get("path") or "").strip()
            if not raw:
                raise SourceError(f"{manifest}:{row_no}: empty path")
            path = (base / raw).resolve()
            if not path.is_relative_to(base):
                raise SourceError(
                    f"{manifest}:{row_no}: path {raw!r} escapes the manifest folder {base}"
                )
            label = normalize_label(row.get(label_column))
            group = (row.get("group") or "").strip() or None
            split = (row.get("split") or "").strip().lower() or None
            if "split" in fields and split not in SPLIT_NAMES:
                raise SourceError(
                    f"{manifest}:{row_no}: split {row.get('split')!r} is not one of "
                    f"{list(SPLIT_NAMES)} (a split column must name the split of every row)"
                )
            slices = tuple(
                (name.removeprefix(SLICE_PREFIX), (row.get(name) or "").strip() or "unknown")
                for name in sorted(fields)
                if name.startswith(SLICE_PREFIX) and len(name) > len(SLICE_PREFIX)
            )
            items.append(Item(str(path), label, group=group, split=split, slices=slices))
    if not items:
        raise SourceError(f"manifest {manifest} has no rows")
    return items
