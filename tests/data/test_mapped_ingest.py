"""Ingest mapped over chunks (train_pipeline's ingest_plan -> ingest_chunk -> ingest): the same
manifest and fingerprints as one task, whatever the chunks and the order they finish in; a chunk
read twice is read once; a merge without every chunk refuses; a later ingest reads only what
changed. On a real MLflow store (the merge records the stage)."""

from __future__ import annotations

import random
from pathlib import Path

import pandas as pd
import pytest

from visionops.core.errors import InputError
from visionops.data.ingest import build_manifest
from visionops.data.sources import list_csv
from visionops.pipeline import stages as pipeline

pytestmark = pytest.mark.integration

CONF = Path(__file__).resolve().parents[2] / "conf" / "digits.yaml"


def _source(root: Path, corpus) -> Path:  # noqa: ANN001
    """Three classes of 7 textured images, one truncated file among them."""
    lines = ["path,label"]
    for c, label in enumerate(("a", "b", "c")):
        for i in range(7):
            corpus.save(root / label / f"{i}.png", corpus.textured(100 * c + i))
            lines.append(f"{label}/{i}.png,{label}")
    broken = root / "b" / "3.png"
    broken.write_bytes(broken.read_bytes()[:200])
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root / "labels.csv"


def _start(manifest: Path, run: str, **overrides) -> dict:
    params = {
        "config": str(CONF),
        "overrides": {"data.source": "csv", "data.path": str(manifest), **overrides},
    }
    return pipeline.start(params, dag_id="ingest_tests", airflow_run_id=run)


def _manifest(output: dict) -> pd.DataFrame:
    return pd.read_parquet(Path(output["uri"]) / "manifest.parquet")


def _mapped(ctx: dict, seed: int) -> tuple[list[dict], dict]:
    """The three tasks as Airflow runs them; the chunks read and handed to the merge in an order of
    their own (mapped instances finish in any order)."""
    chunks = pipeline.ingest_plan(ctx)
    order = random.Random(seed).sample(chunks, len(chunks))
    done = [pipeline.ingest_chunk(ctx, chunk) for chunk in order]
    return done, pipeline.ingest_merge(ctx, done)


def test_chunks_give_the_manifest_and_fingerprints_of_one_task(
    store, corpus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    labels = _source(tmp_path / "src", corpus)
    one = pipeline.ingest(_start(labels, "one_task"))
    # A home of its own: nothing of the first ingest (its output, its catalog) is reused.
    monkeypatch.setenv("VISIONOPS_HOME", str(tmp_path / "second"))
    done, mapped = _mapped(_start(labels, "mapped", **{"data.ingest_chunk_files": 5}), seed=3)

    assert sorted(d["index"] for d in done) == [0, 1, 2, 3, 4]  # 21 files in chunks of 5
    assert [d["n_files"] for d in sorted(done, key=lambda d: d["index"])] == [5, 5, 5, 5, 1]
    assert mapped["meta"]["data_fingerprint"] == one["meta"]["data_fingerprint"]
    assert mapped["fingerprint"] == one["fingerprint"]
    assert (mapped["meta"]["n_images"], mapped["meta"]["n_reread"]) == (21, 21)
    a, b = _manifest(one), _manifest(mapped)
    assert b["path"].tolist() == [item.path for item in list_csv(labels)]  # the source's order
    pd.testing.assert_frame_equal(a.drop(columns="first_seen"), b.drop(columns="first_seen"))
    # And the in-memory manifest of the same files (after the same round trip through parquet).
    memory = build_manifest(list_csv(labels))
    memory.to_parquet(tmp_path / "memory.parquet", index=False)
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "memory.parquet").drop(columns="first_seen"),
        b.drop(columns="first_seen"),
    )
    assert b.loc[b["path"].str.endswith("b/3.png"), "decode_error"].notna().all()
    assert b["first_seen"].nunique() == 1  # one time for the whole ingest, not one per chunk


def test_a_chunk_read_again_is_reused_and_a_merge_needs_every_chunk(
    store, corpus, tmp_path: Path
) -> None:
    labels = _source(tmp_path / "src", corpus)
    ctx = _start(labels, "retried", **{"data.ingest_chunk_files": 8})
    chunks = pipeline.ingest_plan(ctx)
    assert [c["index"] for c in chunks] == [0, 1, 2]
    first = pipeline.ingest_chunk(ctx, chunks[1])
    again = pipeline.ingest_chunk(ctx, chunks[1])  # a retried mapped instance
    assert first["records"]["reused"] is False and again["records"]["reused"] is True
    assert again["records"]["fingerprint"] == first["records"]["fingerprint"]
    done = [pipeline.ingest_chunk(ctx, c) for c in (chunks[0], chunks[2])]
    with pytest.raises(InputError, match=r"do not make up one plan \(got \[0, 2\] of 3"):
        pipeline.ingest_merge(ctx, done)
    merged = pipeline.ingest_merge(ctx, [*done, again])
    assert merged["meta"]["n_images"] == 21
    # The same source again: the whole ingest is reused, one empty chunk keeps the mapping alive.
    (repeat,) = pipeline.ingest_plan(_start(labels, "repeat", **{"data.ingest_chunk_files": 8}))
    assert repeat["plan"] is None


def test_a_later_ingest_reads_only_the_files_that_changed(store, corpus, tmp_path: Path) -> None:
    labels = _source(tmp_path / "src", corpus)
    _, first = _mapped(_start(labels, "first", **{"data.ingest_chunk_files": 4}), seed=1)
    before = _manifest(first).set_index("path")
    changed = tmp_path / "src" / "c" / "6.png"
    corpus.save(changed, corpus.textured(999))
    done, merged = _mapped(_start(labels, "second", **{"data.ingest_chunk_files": 4}), seed=2)
    assert [d["n_files"] for d in done] == [1]
    assert merged["meta"]["n_reread"] == 1
    after = _manifest(merged).set_index("path")
    differs = after.index[after["sha256"] != before["sha256"]].tolist()
    assert differs == [str(changed)]
    # The rows kept from the last manifest keep what was found then (the broken file's error too).
    assert after.drop(index=str(changed)).equals(before.drop(index=str(changed)))
    assert after["decode_error"].notna().sum() == 1


def test_runs_that_cut_the_same_files_differently_do_not_share_a_plan(
    store, corpus, tmp_path: Path
) -> None:
    """Seen on the stack: a scheduled run planned one chunk, a run beside it four; the second found
    the first's plan for the same files and its chunks asked for files the plan did not have."""
    labels = _source(tmp_path / "src", corpus)
    (whole,) = pipeline.ingest_plan(_start(labels, "scheduled"))
    ctx = _start(labels, "manual", **{"data.ingest_chunk_files": 6})
    chunks = pipeline.ingest_plan(ctx)
    assert len(chunks) == 4 and chunks[0]["plan"]["uri"] != whole["plan"]["uri"]
    merged = pipeline.ingest_merge(ctx, [pipeline.ingest_chunk(ctx, c) for c in chunks])
    assert merged["meta"]["n_images"] == 21
