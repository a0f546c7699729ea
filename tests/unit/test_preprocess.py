"""visionops.data.preprocess and visionops.data.images: splits, arrays, train-only statistics, conversions."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from visionops.data.images import to_model_array
from visionops.data.preprocess import (
    load_groups,
    load_labels,
    load_split,
    load_stats,
    preprocess_to,
    stratified_split,
)


def test_stratified_split_proportions_per_class() -> None:
    labels = ["a"] * 20 + ["b"] * 40 + ["c"] * 20
    split = stratified_split(labels, val_fraction=0.2, test_fraction=0.25, seed=1)
    assert set(split) == {"train", "val", "test"}
    counts = Counter(zip(labels, split, strict=True))
    # test: 25% of each class (4 group folds, one taken); val: about 20% of the whole, per class
    # (whole folds of the rest: 1 of 4 = 18.75%, the closest with few folds).
    assert {lab: counts[(lab, "test")] for lab in "abc"} == {"a": 5, "b": 10, "c": 5}
    for lab, n in (("a", 20), ("b", 40), ("c", 20)):
        assert abs(counts[(lab, "val")] - 0.2 * n) <= 1
        assert counts[(lab, "train")] == n - counts[(lab, "test")] - counts[(lab, "val")]


def test_stratified_split_is_reproducible_for_a_seed() -> None:
    labels = [str(i % 4) for i in range(80)]
    a = stratified_split(labels, 0.15, 0.15, seed=7)
    b = stratified_split(labels, 0.15, 0.15, seed=7)
    c = stratified_split(labels, 0.15, 0.15, seed=8)
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()


TRAIN_VALUES = {"b": 40, "a": 120}  # train images per label: solid grey of this value
HELD_OUT_VALUE = 250  # every val/test image


def _dataset(tmp_path: Path, write_png, seed: int, channels: int = 1) -> pd.DataFrame:
    """Images whose pixel value depends on the split they will land in, so train statistics are known."""
    labels = ["b", "a"] * 10  # 10 per class, deliberately not sorted
    split = stratified_split(labels, 0.2, 0.2, seed)
    rows = []
    for i, (label, part) in enumerate(zip(labels, split, strict=True)):
        value = TRAIN_VALUES[label] if part == "train" else HELD_OUT_VALUE
        shape = (12, 10) if channels == 1 else (12, 10, 3)
        path = write_png(tmp_path / "src" / label / f"{i}.png", np.full(shape, value, np.uint8))
        rows.append({"path": str(path), "label": label, "sha256": f"h{i}"})
    return pd.DataFrame(rows)


def test_preprocess_to_writes_arrays_labels_and_train_only_stats(tmp_path: Path, write_png) -> None:
    manifest = _dataset(tmp_path, write_png, seed=3)
    out = tmp_path / "out"
    out.mkdir()
    result = preprocess_to(
        manifest, out, size=8, channels=1, val_fraction=0.2, test_fraction=0.2, seed=3
    )

    assert result.labels == ["a", "b"]
    assert load_labels(out) == ["a", "b"]
    assert json.loads((out / "label_map.json").read_text()) == {"labels": ["a", "b"]}
    assert result.counts == {"train": 12, "val": 4, "test": 4}

    for name, n in result.counts.items():
        split = load_split(out, name)
        assert split.x.dtype == np.uint8 and split.x.shape == (n, 1, 8, 8)
        assert split.y.dtype == np.int64 and split.y.shape == (n,)
        assert sorted(Counter(split.y.tolist()).values()) == [n // 2, n // 2]

    train = load_split(out, "train", mmap=False)
    # x and y stay aligned: each train image has its label's value.
    for x, y in zip(train.x, train.y, strict=True):
        assert np.all(x == TRAIN_VALUES[result.labels[y]])
    assert np.all(load_split(out, "test").x == HELD_OUT_VALUE)

    # Train only: half the images at 40, half at 120 -> mean 80/255, std 40/255. Val/test (250) are ignored.
    assert result.mean == pytest.approx([80 / 255])
    assert result.std == pytest.approx([40 / 255])
    stats = load_stats(out)
    assert stats["mean"] == result.mean and stats["std"] == result.std
    assert stats["image_size"] == 8 and stats["channels"] == 1
    assert stats["counts"] == result.counts

    splits = pd.read_parquet(out / "splits.parquet")
    assert list(splits.columns) == [
        "path",
        "label",
        "sha256",
        "split",
        "class_index",
        "group",
        "near_copy_in_train",
    ]
    assert not splits[
        "near_copy_in_train"
    ].any()  # solid images carry no dHash here: no near-copies known
    assert np.load(out / "test_clean.npy").tolist() == [True] * 4
    assert len(splits) == 20
    assert (splits["class_index"] == splits["label"].map({"a": 0, "b": 1})).all()
    assert Counter(splits["split"]) == {"train": 12, "val": 4, "test": 4}
    # Each split's rows keep their near-copy group (train.folds keeps groups whole by it).
    for name in ("train", "val"):
        y = load_split(out, name).y
        rows = splits[splits["split"] == name]
        assert load_groups(out, name, y).tolist() == rows["group"].tolist()
    with pytest.raises(ValueError, match=r"splits\.parquet.*train rows \(12\).*train_y\.npy \(11"):
        load_groups(out, "train", load_split(out, "train").y[:11])


def test_preprocess_to_rgb_and_constant_train_std_is_floored(tmp_path: Path, write_png) -> None:
    manifest = _dataset(tmp_path, write_png, seed=5, channels=3)
    manifest = manifest.assign(label="same")  # one class: every train image differs only by value
    out = tmp_path / "out"
    out.mkdir()
    result = preprocess_to(
        manifest, out, size=4, channels=3, val_fraction=0.2, test_fraction=0.2, seed=5
    )
    assert result.labels == ["same"]
    x = load_split(out, "train").x
    assert x.shape == (12, 3, 4, 4) and x.dtype == np.uint8
    assert len(result.mean) == 3 and len(result.std) == 3
    assert result.mean[0] == pytest.approx(result.mean[1]) == pytest.approx(result.mean[2])
    assert min(result.std) >= 1e-6


def test_preprocess_streams_each_split_by_chunks_with_the_arrays_and_statistics_of_one_decode(
    tmp_path: Path, write_png, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With chunks of at most 3 images, every split is written chunk by chunk into its file and the
    training statistics are summed chunk by chunk; the arrays are those of decoding every image at
    once and the statistics those of a float64 pass over the whole training split."""
    import visionops.data.preprocess as preprocess

    rng = np.random.default_rng(0)
    rows = []
    for i in range(30):
        label = "ab"[i % 2]
        pixels = rng.integers(0, 256, (9 + i % 4, 11, 3), dtype=np.uint8)  # sizes vary: resized
        path = write_png(tmp_path / "src" / label / f"{i}.png", pixels)
        rows.append({"path": str(path), "label": label, "sha256": f"h{i}"})
    manifest = pd.DataFrame(rows)
    chunks: list[int] = []
    decode = preprocess._load_chunk

    def spy(args: tuple[list[str], int, int]) -> np.ndarray:
        chunks.append(len(args[0]))
        return decode(args)

    monkeypatch.setattr(preprocess, "CHUNK_BYTES", 3 * 3 * 8 * 8)
    monkeypatch.setattr(preprocess, "_load_chunk", spy)
    out = tmp_path / "out"
    out.mkdir()
    result = preprocess_to(manifest, out, size=8, channels=3, seed=1)
    assert max(chunks) == 3 and sum(chunks) == 30 and len(chunks) >= 10
    splits = pd.read_parquet(out / "splits.parquet")
    for name in ("train", "val", "test"):
        paths = splits.loc[splits["split"] == name, "path"].tolist()
        whole = np.stack([preprocess.load_image(p, 8, 3) for p in paths])
        assert np.array_equal(load_split(out, name).x, whole)
    train = load_split(out, "train").x.astype(np.float64) / 255.0
    assert result.mean == pytest.approx(train.mean(axis=(0, 2, 3)).tolist(), abs=1e-12)
    assert result.std == pytest.approx(train.std(axis=(0, 2, 3)).tolist(), abs=1e-12)


def test_channel_statistics_do_not_depend_on_the_chunking() -> None:
    from visionops.data.preprocess import ChannelStats

    x = np.random.default_rng(1).integers(0, 256, (50, 2, 5, 5), dtype=np.uint8)
    one, many = ChannelStats(2), ChannelStats(2)
    one.add(x)
    for i in range(0, 50, 7):
        many.add(x[i : i + 7])
    assert one.mean_std() == many.mean_std()
    assert ChannelStats(3).mean_std() == ([0.0] * 3, [1.0] * 3)  # no training image


# -- to_model_array -------------------------------------------------------------------------------


def test_to_model_array_grey_hw() -> None:
    arr = np.arange(64, dtype=np.uint8).reshape(8, 8)
    out = to_model_array(arr, 8, 1)
    assert out.shape == (1, 8, 8) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0], arr)


def test_to_model_array_hw1_is_squeezed() -> None:
    arr = np.arange(64, dtype=np.uint8).reshape(8, 8, 1)
    np.testing.assert_array_equal(to_model_array(arr, 8, 1)[0], arr[:, :, 0])


def test_to_model_array_rgb_keeps_channels_first() -> None:
    arr = np.zeros((4, 4, 3), np.uint8)
    arr[..., 0], arr[..., 1], arr[..., 2] = 10, 20, 30
    out = to_model_array(arr, 4, 3)
    assert out.shape == (3, 4, 4)
    assert [int(out[c].max()) for c in range(3)] == [10, 20, 30]


def test_to_model_array_rgba_drops_alpha() -> None:
    arr = np.zeros((4, 4, 4), np.uint8)
    arr[..., :3] = (200, 100, 50)
    arr[..., 3] = 7
    out = to_model_array(arr, 4, 3)
    assert out.shape == (3, 4, 4)
    assert out[:, 0, 0].tolist() == [200, 100, 50]


def test_to_model_array_rgb_to_grey_uses_luminance() -> None:
    arr = np.zeros((4, 4, 3), np.uint8)
    arr[..., 0] = 255  # pure red -> L = 0.299 * 255 = 76
    out = to_model_array(arr, 4, 1)
    assert out.shape == (1, 4, 4)
    assert int(out[0, 0, 0]) == 76


def test_to_model_array_grey_to_rgb_repeats() -> None:
    arr = np.full((4, 4), 99, np.uint8)
    out = to_model_array(arr, 4, 3)
    assert out.shape == (3, 4, 4)
    assert np.all(out == 99)


def test_to_model_array_resizes_and_accepts_pil_images() -> None:
    out = to_model_array(np.full((20, 10), 77, np.uint8), 8, 1)
    assert out.shape == (1, 8, 8) and np.all(out == 77)
    img = Image.new("RGB", (5, 9), (1, 2, 3))
    out = to_model_array(img, 6, 3)
    assert out.shape == (3, 6, 6)
    assert out[:, 3, 3].tolist() == [1, 2, 3]


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.uint16])
def test_to_model_array_rejects_non_uint8(dtype: type) -> None:
    with pytest.raises(ValueError, match="uint8"):
        to_model_array(np.zeros((8, 8), dtype=dtype), 8, 1)


@pytest.mark.parametrize("shape", [(8,), (8, 8, 2), (8, 8, 5), (2, 8, 8, 1), (1, 8, 8, 3)])
def test_to_model_array_rejects_bad_shapes(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="expected an image of shape"):
        to_model_array(np.zeros(shape, np.uint8), 8, 1)


def test_sixteen_bit_grey_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = (np.arange(64, dtype=np.uint32).reshape(8, 8) * 1000).astype(np.uint16)  # 0 .. 63,000
    path = tmp_path / "g16.png"
    Image.fromarray(values).save(path)
    with Image.open(path) as img:
        assert img.mode == "I;16"
        out = to_model_array(img, 8, 1)
    np.testing.assert_allclose(out[0].astype(int), values.astype(int) / 257, atol=1.5)
