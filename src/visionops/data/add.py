"""``visionops data add``: new photos into a configured source, checked before they land.

Every photo is checked first, with the rules ingest and validate would apply (it decodes, its size
and mode are accepted, its class is declared, it is not already in the source; with
``faces.enabled``, it holds exactly one usable face). If any photo is refused, none lands and the
error lists each refused photo with its reason: a half-added batch would be worse than none. The
photos land by copy (the originals are left alone), each written under a temporary name and then
renamed, so that a watch never sees half a file; a CSV manifest is rewritten the same way. The next
``watch_sources`` notices them.
"""

from __future__ import annotations

import csv
import io
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from visionops.core.config import PipelineConfig
from visionops.core.constants import IMAGE_FORMATS, IMAGE_SUFFIXES
from visionops.core.errors import InputError
from visionops.core.storage import file_sha256
from visionops.data.ingest import inspect_image, list_items

ADDED_FOLDER = "added"  # beside a CSV manifest: where added photos are copied


@dataclass
class Added:
    """What landed (or would land, ``dry_run``) and where."""

    source: str
    files: list[tuple[str, str, str]] = field(default_factory=list)  # (photo, label, copied to)
    manifest: str | None = None


def label_problem(label: str) -> str | None:
    """Why ``label`` cannot name a class folder (None: it can). A label becomes a folder under the
    source (``<source>/<label>/`` or ``added/<label>/`` beside a manifest), so it must be one plain
    path component: no separator, no ``.`` or ``..``, no surrounding whitespace, no control
    character, not empty."""
    if not label:
        return "is empty"
    if label != label.strip():
        return "has whitespace around it"
    if any(sep in label for sep in ("/", "\\")):
        return "holds a path separator"
    if label in (".", ".."):
        return "is a relative path"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in label):
        return "holds a control character"
    return None


def _inside(root: Path, target: Path) -> Path:
    """``target`` if it stays inside ``root`` once resolved (symlinks followed), else InputError."""
    if not target.resolve().is_relative_to(root.resolve()):
        raise InputError(f"{target}: resolves outside the source {root}; nothing added")
    return target


def photos_to_add(paths: list[Path], label: str | None) -> list[tuple[Path, str]]:
    """``(photo, label)`` pairs: files take ``label``; a folder gives its images ``label``, or without
    one its class sub-folders' images the sub-folder's name (the image-folder layout). A label that
    is not one plain path component (``label_problem``) is refused, naming it."""
    if label is not None and (why := label_problem(label)):
        raise InputError(f"--label {label!r} {why}: a label names one class folder")
    pairs: list[tuple[Path, str]] = []
    for path in paths:
        if path.is_file():
            if not label:
                raise InputError(f"{path}: a single photo needs --label")
            pairs.append((path, label))
        elif path.is_dir():
            if label:
                pairs += [(p, label) for p in sorted(path.iterdir()) if _is_image(p)]
            else:
                for sub in sorted(p for p in path.iterdir() if p.is_dir()):
                    if why := label_problem(sub.name):
                        raise InputError(f"{sub}: the folder name {sub.name!r} {why}")
                    pairs += [(p, sub.name) for p in sorted(sub.iterdir()) if _is_image(p)]
        else:
            raise InputError(f"{path}: no such file or folder")
    if not pairs:
        raise InputError(
            f"no photos found in {', '.join(map(str, paths))} ({', '.join(IMAGE_SUFFIXES)})"
        )
    return pairs


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def refusal(path: Path, label: str, cfg: PipelineConfig, known: dict[str, str]) -> str | None:
    """Why ``path`` cannot join the source as ``label`` (None: it can)."""
    v = cfg.validate_
    if v.classes is not None and label not in v.classes:
        return f"class {label!r} is not among validate.classes"
    record = inspect_image(str(path), cfg.data.max_pixels)
    if record["decode_error"]:
        return f"cannot be decoded: {record['decode_error']}"
    if record["sha256"] in known:
        return f"already in the source as {known[record['sha256']]}"
    if v.modes is not None and record["mode"] not in v.modes and not v.convert_modes:
        return f"mode {record['mode']} not in validate.modes {v.modes}"
    if cfg.faces.enabled:
        from visionops.data.faces import face_settings, photo_to_face

        with Image.open(path, formats=IMAGE_FORMATS) as img:
            rgb = np.asarray(img.convert("RGB"))
        face = photo_to_face(rgb, face_settings(cfg.faces))
        return None if face.reason is None else f"no usable face: {face.reason}"
    side_low, side_high = (
        min(record["width"], record["height"]),
        max(record["width"], record["height"]),
    )
    if side_low < v.min_side or side_high > v.max_side:
        return (
            f"{record['width']}x{record['height']} px outside validate.min_side {v.min_side} / "
            f"max_side {v.max_side}"
        )
    return None


def add_photos(
    cfg: PipelineConfig, paths: list[Path], label: str | None, dry_run: bool = False
) -> Added:
    """Check every photo, then copy them all into the source (or none, naming each refused one)."""
    source = cfg.data.source
    if source not in ("imagefolder", "csv"):
        raise InputError(
            f"data add needs an imagefolder or csv source; this config reads data.source {source!r}"
        )
    pairs = photos_to_add(paths, label)
    known = {file_sha256(item.path): item.path for item in list_items(cfg.data)}
    refused, seen = [], {}
    for path, lab in pairs:
        reason = refusal(path, lab, cfg, known)
        digest = file_sha256(path)
        if reason is None and digest in seen:
            reason = f"the same file as {seen[digest]} in this batch"
        seen.setdefault(digest, str(path))
        if reason:
            refused.append(f"{path}: {reason}")
    if refused:
        raise InputError(
            f"{len(refused)} of {len(pairs)} photos refused, none added:\n  " + "\n  ".join(refused)
        )
    if source == "imagefolder":
        return _into_folder(Path(str(cfg.data.path)), pairs, dry_run)
    return _into_manifest(Path(str(cfg.data.path)), pairs, dry_run)


def _target(folder: Path, photo: Path) -> Path:
    """A free name in ``folder`` for ``photo`` (its own name, else with its hash)."""
    target = folder / photo.name
    if target.exists():
        target = folder / f"{photo.stem}-{file_sha256(photo)[:8]}{photo.suffix}"
    return target


def _copy(photo: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")  # hidden and not an image: never listed
    shutil.copyfile(photo, tmp)
    tmp.replace(target)


def _into_folder(root: Path, pairs: list[tuple[Path, str]], dry_run: bool) -> Added:
    added = Added(source=str(root))
    targets = [_inside(root, _target(root / label, photo)) for photo, label in pairs]
    for (photo, label), target in zip(pairs, targets, strict=True):
        if not dry_run:
            _copy(photo, target)
        added.files.append((str(photo), label, str(target)))
    return added


def _into_manifest(manifest: Path, pairs: list[tuple[Path, str]], dry_run: bool) -> Added:
    text = manifest.read_text(encoding="utf-8-sig")
    reader = csv.DictReader(io.StringIO(text))
    fields = list(reader.fieldnames or [])
    rows = list(reader)
    if "split" in fields:
        raise InputError(
            f"{manifest}: has a split column (a split given by hand); data add cannot choose a "
            "split for new photos: add their rows by hand"
        )
    face_layout = "label" not in fields and {"name", "int_label"} <= set(fields)
    ids = {r["name"]: r["int_label"] for r in rows} if face_layout else {}
    added = Added(source=str(manifest), manifest=str(manifest))
    new_rows = []
    for photo, label in pairs:
        target = _inside(manifest.parent, _target(manifest.parent / ADDED_FOLDER / label, photo))
        row = dict.fromkeys(fields, "")
        row["path"] = target.relative_to(manifest.parent).as_posix()
        if face_layout:
            if label not in ids:
                ids[label] = str(max((int(i) for i in ids.values()), default=-1) + 1)
            row["name"], row["int_label"] = label, ids[label]
        else:
            row["label"] = label
        new_rows.append(row)
        added.files.append((str(photo), label, str(target)))
    if dry_run:
        return added
    for (photo, _), (_, _, target) in zip(pairs, added.files, strict=True):
        _copy(photo, Path(target))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows([*rows, *new_rows])
    tmp = manifest.with_name(f".{manifest.name}.tmp")
    tmp.write_text(out.getvalue(), encoding="utf-8")
    tmp.replace(manifest)  # the photos are in place before the manifest names them
    return added
