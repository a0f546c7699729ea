"""Continuous training's data side: noticing a changed source cheaply, and adding photos to it only
after each one passed the checks (none lands when one is bad)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from testkit import YALE, needs_shared
from visionops.core.config import PipelineConfig, build_config
from visionops.core.errors import InputError
from visionops.data.add import add_photos
from visionops.data.watch import compare, snapshot, watch_source


def _png(path: Path, value: int, size: int = 8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    Image.fromarray(rng.integers(0, 255, (size, size), dtype=np.uint8), mode="L").save(path)
    return path


def _folder_config(root: Path, **overrides: object) -> PipelineConfig:
    return build_config(
        PipelineConfig().to_dict(),
        {"data.source": "imagefolder", "data.path": str(root), **overrides},
        source="test",
    )


@pytest.fixture()
def source(tmp_path: Path) -> Path:
    # Fixed seeds, distinct and apart from every other seed in this module (0-5, 77, 78, 500, 501,
    # 601, 900): the same seed makes the same bytes, and data add rightly refuses a photo already in
    # the source. (``hash((label, i))`` is salted per process, so it sometimes gave a source photo
    # the seed of one a test adds, or two source photos the same seed.)
    root = tmp_path / "source"
    for k, label in enumerate(("a", "b")):
        for i in range(3):
            _png(root / label / f"{i}.png", value=100 + 10 * k + i)
    return root


def test_a_watch_records_first_then_reports_added_changed_and_removed(source, tmp_path):
    cfg = _folder_config(source)
    config_file = str(tmp_path / "my.yaml")
    first = watch_source(config_file, cfg.data)
    assert first.first_seen and not first.changed and first.n_files == 6
    assert not watch_source(config_file, cfg.data).changed  # nothing happened

    _png(source / "a" / "new.png", value=77)
    (source / "b" / "2.png").unlink()
    _png(source / "b" / "0.png", value=78, size=9)  # rewritten: another size
    change = watch_source(config_file, cfg.data)
    assert change.changed and not change.first_seen
    assert (change.added, change.modified, change.removed, change.n_files) == (1, 1, 1, 6)
    assert change.examples == ["added new.png", "changed 0.png", "removed 2.png"]
    assert "1 added, 1 changed, 1 removed" in change.message()
    assert not watch_source(config_file, cfg.data).changed  # the new snapshot is kept


def test_a_manifest_source_changes_when_its_manifest_does(tmp_path):
    for i in range(2):
        _png(tmp_path / "img" / f"{i}.png", value=i)
    manifest = tmp_path / "labels.csv"
    manifest.write_text("path,label\nimg/0.png,x\n")
    cfg = build_config(
        PipelineConfig().to_dict(), {"data.source": "csv", "data.path": str(manifest)}, source="t"
    )
    before = snapshot(cfg.data)
    manifest.write_text("path,label\nimg/0.png,x\nimg/1.png,y\n")
    diff = compare(before, snapshot(cfg.data))
    assert diff["changed"] == [str(manifest)] and len(diff["added"]) == 1


def test_data_add_copies_checked_photos_into_the_image_folder(source, tmp_path):
    cfg = _folder_config(source)
    new = [_png(tmp_path / "in" / f"n{i}.png", value=500 + i) for i in range(2)]
    added = add_photos(cfg, new, "a")
    assert [Path(t).parent.name for _, _, t in added.files] == ["a", "a"]
    assert all(Path(t).is_file() for _, _, t in added.files)
    assert all(p.is_file() for p in new)  # copied, the originals stay
    # A folder of class sub-folders takes the sub-folders' names; a name clash gets the hash.
    batch = tmp_path / "batch"
    _png(batch / "c" / "0.png", value=900)
    (target,) = [t for _, _, t in add_photos(cfg, [batch], None).files]
    assert Path(target).parent.name == "c"


def test_one_bad_photo_refuses_the_whole_batch_naming_each_reason(source, tmp_path):
    cfg = _folder_config(source, **{"validate.classes": ["a", "b"]})
    good = _png(tmp_path / "in" / "good.png", value=601)
    broken = tmp_path / "in" / "broken.png"
    broken.write_bytes(good.read_bytes()[:30])
    copy = tmp_path / "in" / "copy.png"
    shutil.copy(source / "a" / "0.png", copy)
    before = sorted(p.name for p in source.rglob("*"))
    with pytest.raises(InputError) as err:
        add_photos(cfg, [good, broken, copy], "a")
    text = str(err.value)
    assert "2 of 3 photos refused, none added" in text
    assert f"{broken}: cannot be decoded" in text
    assert f"{copy}: already in the source as {source / 'a' / '0.png'}" in text
    assert sorted(p.name for p in source.rglob("*")) == before  # nothing landed
    with pytest.raises(InputError, match="class 'z' is not among validate.classes"):
        add_photos(cfg, [good], "z")
    with pytest.raises(InputError, match="needs --label"):
        add_photos(cfg, [good], None)
    digits = build_config(PipelineConfig().to_dict(), {}, source="t")
    with pytest.raises(InputError, match="imagefolder or csv source"):
        add_photos(digits, [good], "a")


def test_data_add_appends_manifest_rows_in_the_face_layout(tmp_path):
    _png(tmp_path / "p" / "0.png", value=1)
    manifest = tmp_path / "labels.csv"
    manifest.write_text("path,name,int_label\np/0.png,alice,0\n")
    cfg = build_config(
        PipelineConfig().to_dict(), {"data.source": "csv", "data.path": str(manifest)}, source="t"
    )
    photo = _png(tmp_path / "in" / "bob.png", value=2)
    add_photos(cfg, [photo], "bob")
    rows = list(csv.DictReader(manifest.open()))
    assert rows[-1] == {"path": "added/bob/bob.png", "name": "bob", "int_label": "1"}
    assert (tmp_path / "added" / "bob" / "bob.png").is_file()
    manifest.write_text("path,label,split\np/0.png,alice,train\n")
    with pytest.raises(InputError, match="split column"):
        add_photos(cfg, [_png(tmp_path / "in" / "c.png", value=3)], "carol")


@needs_shared(YALE)
def test_a_face_source_refuses_a_photo_without_a_face(tmp_path):
    cfg = build_config(
        PipelineConfig().to_dict(),
        {
            "data.source": "imagefolder",
            "data.path": str(tmp_path / "people"),
            "faces.enabled": True,
            "data.channels": 3,
        },
        source="t",
    )
    person = tmp_path / "people" / "someone"
    person.mkdir(parents=True)
    face = next(p for p in sorted((YALE / "images").rglob("*")) if p.is_file())
    shutil.copy(face, person / "known.gif")
    no_face = _png(tmp_path / "in" / "noise.png", value=5, size=200)
    with pytest.raises(InputError, match=r"noise.png: no usable face: no face"):
        add_photos(cfg, [no_face], "someone")


@pytest.mark.parametrize(
    ("label", "why"),
    [
        ("../../escaped", "holds a path separator"),
        ("/tmp/absolute", "holds a path separator"),
        ("a\\b", "holds a path separator"),
        ("..", "is a relative path"),
        (".", "is a relative path"),
        (" cat", "has whitespace around it"),
        ("cat ", "has whitespace around it"),
        ("", "is empty"),
        ("a\x00b", "holds a control character"),
    ],
)
def test_a_label_that_is_not_one_folder_name_is_refused_and_nothing_lands(
    source, tmp_path, label, why
):
    cfg = _folder_config(source)
    photo = _png(tmp_path / "in" / "new.png", value=501)
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    with pytest.raises(InputError) as err:
        add_photos(cfg, [photo], label)
    assert str(err.value) == f"--label {label!r} {why}: a label names one class folder"
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before  # nothing written anywhere


def test_the_command_refuses_an_escaping_label_and_a_class_folder_that_leads_outside(
    source, tmp_path, capsys
):
    from visionops.cli.main import main

    config = tmp_path / "my.yaml"
    config.write_text(f"data:\n  source: imagefolder\n  path: {source}\n")
    photo = _png(tmp_path / "in" / "new.png", value=501)
    assert main(["data", "add", "--config", str(config), "--label", "../../x", str(photo)]) == 1
    assert "error: --label '../../x' holds a path separator" in capsys.readouterr().err
    assert not (source.parent.parent / "x").exists()  # where source/../../x would be
    # A class folder that is a link to elsewhere: the photo would land outside the source.
    outside = tmp_path / "outside"
    outside.mkdir()
    (source / "linked").symlink_to(outside, target_is_directory=True)
    assert main(["data", "add", "--config", str(config), "--label", "linked", str(photo)]) == 1
    assert "resolves outside the source" in capsys.readouterr().err
    assert list(outside.iterdir()) == []
