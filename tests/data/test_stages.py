"""The data stages as the pipeline runs them (real MLflow store, real GX): a stop leaves the registry
as it was; warnings are recorded and the run goes on; the champion's label map and data profile are
the reference for schema-change and drift checks. The tests that use the MLflow store are marked
``integration``; PSI and the schema-change and drift checks on their own are not."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mlflow
from visionops.core.config import ValidateConfig
from visionops.data.drift import build_profile, psi
from visionops.data.validate import DataValidationError, validate_manifest
from visionops.pipeline import stages as pipeline
from visionops.release.lineage import champion_reference

CONF = Path(__file__).resolve().parents[2] / "conf" / "digits.yaml"


class _Constant(mlflow.pyfunc.PythonModel):
    """A stand-in network is enough here: only the registry entry and its artifacts are read."""

    def predict(self, context, model_input: pd.DataFrame, params=None):  # noqa: ANN001, ANN201
        return model_input


def _dataset(root: Path, corpus, per_class: int = 6, classes: tuple[str, ...] = ("a", "b")) -> Path:
    lines = ["path,label"]
    for c, label in enumerate(classes):
        for i in range(per_class):
            corpus.save(root / label / f"{i}.png", corpus.textured(100 * c + i))
            lines.append(f"{label}/{i}.png,{label}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root / "labels.csv"


def _start(manifest: Path, run: str, **overrides) -> dict:
    params = {
        "config": str(CONF),
        "overrides": {
            "data.source": "csv",
            "data.path": str(manifest),
            "validate.min_images_per_class": 3,
            **overrides,
        },
    }
    return pipeline.start(params, dag_id="data_tests", airflow_run_id=run)


def _registry_state() -> list[tuple[str, str]]:
    client = mlflow.tracking.MlflowClient()
    return sorted(
        (m.name, v.version)
        for m in client.search_registered_models()
        for v in client.search_model_versions(f"name = '{m.name}'")
    )


def _register_champion(name: str, tmp_path: Path, labels: list[str]) -> str:
    from visionops.core import tracking

    meta = tmp_path / "champion" / "preprocessing.json"
    meta.parent.mkdir(parents=True, exist_ok=True)
    meta.write_text(json.dumps({"labels": labels, "image_size": 8, "channels": 1}))
    with mlflow.start_run(experiment_id=tracking.experiment_id(f"{name}-champion")):
        info = mlflow.pyfunc.log_model(
            name="model", python_model=_Constant(), artifacts={"preprocessing": str(meta)}
        )
    version = mlflow.register_model(info.model_uri, name).version
    mlflow.tracking.MlflowClient().set_registered_model_alias(name, "champion", version)
    return str(version)


@pytest.mark.integration  # the stages, on an MLflow store
def test_a_stop_in_validate_leaves_registry_and_outputs_unchanged(
    store: Path, tmp_path: Path, corpus
) -> None:
    manifest = _dataset(tmp_path / "data", corpus)
    (tmp_path / "data" / "a" / "0.png").write_bytes(b"")  # one zero-byte file
    champion = _register_champion("stop-test", tmp_path, ["a", "b", "gone"])
    before = _registry_state()
    ctx = _start(manifest, "broken", **{"registry.model_name": "stop-test"})
    ingested = pipeline.ingest(ctx)
    with pytest.raises(DataValidationError) as info:
        pipeline.validate(ctx, ingested)
    message = str(info.value)
    assert str(tmp_path / "data" / "a" / "0.png") in message
    assert "WARNING" in message and "gone" in message  # the champion's class the data lacks
    assert _registry_state() == before
    client = mlflow.tracking.MlflowClient()
    assert str(client.get_model_version_by_alias("stop-test", "champion").version) == champion
    assert not list(Path(ctx["data_root"]).rglob("preprocess"))
    parent = mlflow.tracking.MlflowClient().get_run(ctx["parent_run_id"])
    assert (
        parent.info.status == "FAILED" and parent.data.tags["visionops.failed_stage"] == "validate"
    )


@pytest.mark.integration  # the stages, on an MLflow store
def test_warnings_are_recorded_and_the_run_goes_on(store: Path, tmp_path: Path, corpus) -> None:
    manifest = _dataset(tmp_path / "data", corpus)
    ctx = _start(manifest, "warned", **{"validate.modes": ["RGB"]})  # the grey files are converted
    ingested = pipeline.ingest(ctx)
    assert ingested["meta"]["n_reread"] == 12
    result = pipeline.validate(ctx, ingested)
    assert result["success"] and result["statistics"]["n_warnings"] == 1
    assert "mode" in result["warnings"][0]
    preprocessed = pipeline.preprocess(ctx, ingested)
    assert (Path(preprocessed["uri"]) / "data_profile.json").is_file()

    # The same source again: nothing is re-read, and one new file is the only one read.
    corpus.save(tmp_path / "data" / "a" / "new.png", corpus.textured(4242))
    with open(manifest, "a") as fh:
        fh.write("a/new.png,a\n")
    again = pipeline.ingest(_start(manifest, "incremental"))
    assert again["meta"]["n_reread"] == 1 and again["meta"]["n_images"] == 13


def _manifest_with(mean: float, n: int = 40, side: int = 32) -> pd.DataFrame:
    rng = np.random.default_rng(int(mean))
    return pd.DataFrame(
        {
            "path": [f"/d/{mean}_{i}.png" for i in range(n)],
            "label": ["a", "b"] * (n // 2),
            "sha256": [f"{mean}-{i}" for i in range(n)],
            "decode_error": [None] * n,
            "mean_intensity": rng.normal(mean, 5.0, n),
            "std_intensity": np.random.default_rng(0).normal(30, 2, n),  # unchanged
            "width": [side] * n,
            "height": [side] * n,
        }
    )


def test_psi_is_zero_for_same_data_and_large_for_shifted() -> None:
    ref = build_profile(_manifest_with(100.0), ["a", "b"])
    assert psi(ref["features"]["mean_intensity"], _manifest_with(100.0)["mean_intensity"]) < 0.1
    assert psi(ref["features"]["mean_intensity"], _manifest_with(160.0)["mean_intensity"]) > 1.0
    # Constant features (every image 32 px wide) still show a change of size.
    assert psi(ref["features"]["width"], np.full(40, 32.0)) == pytest.approx(0.0)
    assert psi(ref["features"]["width"], np.full(40, 64.0)) > 1.0


def test_schema_change_and_drift_against_a_reference(tmp_path: Path) -> None:
    reference = {
        "version": "3",
        "labels": ["a", "c"],
        "profile": build_profile(_manifest_with(100.0), ["a", "c"]),
    }
    report = validate_manifest(
        _manifest_with(160.0, side=64),
        config=ValidateConfig(min_images_per_class=2),
        docs_dir=tmp_path / "docs",
        reference=reference,
    )
    assert report.success  # warnings by default
    schema = next(i for i in report.issues if i.column == "change")
    assert {r["label"]: r["observed"] for r in schema.offending} == {"b": "added", "c": "removed"}
    drift = next(i for i in report.issues if i.column == "psi")
    assert {r["feature"] for r in drift.offending} == {"mean_intensity", "width", "height"}
    assert report.statistics["champion_version"] == "3"
    strict = ValidateConfig(
        min_images_per_class=2, drift_severity="error", schema_change_severity="error"
    )
    failed = validate_manifest(
        _manifest_with(160.0), config=strict, docs_dir=tmp_path / "d2", reference=reference
    )
    assert not failed.success and {i.column for i in failed.issues} == {"change", "psi"}
    same = validate_manifest(
        _manifest_with(100.0),
        config=strict,
        docs_dir=tmp_path / "d3",
        reference={**reference, "labels": ["a", "b"]},
    )
    assert same.success and same.issues == []


@pytest.mark.integration  # the stages, on an MLflow store
def test_champion_reference_reads_label_map_and_profile_from_the_registry(
    store: Path, tmp_path: Path
) -> None:
    assert champion_reference("nobody") is None
    (tmp_path / "preprocessing.json").write_text(
        json.dumps({"labels": ["x", "y"], "image_size": 8, "channels": 1})
    )
    profile = build_profile(_manifest_with(50.0), ["x", "y"])
    (tmp_path / "data_profile.json").write_text(json.dumps(profile))
    from visionops.core import tracking

    # An explicit experiment: an earlier test may have left another store's experiment active.
    with mlflow.start_run(experiment_id=tracking.experiment_id("champion-reference")):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=_Constant(),
            artifacts={
                "preprocessing": str(tmp_path / "preprocessing.json"),
                "data_profile": str(tmp_path / "data_profile.json"),
            },
        )
    version = mlflow.register_model(info.model_uri, "faces-test")
    mlflow.tracking.MlflowClient().set_registered_model_alias(
        "faces-test", "champion", version.version
    )
    ref = champion_reference("faces-test")
    assert ref == {"version": str(version.version), "labels": ["x", "y"], "profile": profile}


@pytest.mark.integration  # the stages, on an MLflow store
def test_url_manifest_with_face_rectangles_through_the_stages(
    store: Path, tmp_path: Path, corpus
) -> None:
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    site = tmp_path / "site"
    rows = ["name,url,x1,y1,x2,y2"]
    for c, person in enumerate(("ada", "bob")):
        for i in range(7):
            grey = corpus.textured(300 * c + i, 64)
            corpus.save(site / person / f"{i}.png", np.stack([grey, grey // 2, grey], -1))
            box = "8,8,56,56" if i else "20,20,30,30"  # the first photo of each: a 10 px face
            rows.append(f"{person},{{url}}/{person}/{i}.png,{box}")
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *a: None
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        manifest = tmp_path / "people.csv"
        url = f"http://127.0.0.1:{httpd.server_address[1]}"
        manifest.write_text("\n".join(rows).replace("{url}", url) + "\n")
        ctx = _start(
            manifest,
            "faces",
            **{
                "data.source": "urls",
                "data.allow_private_hosts": ["127.0.0.1"],  # the test's own server
                "data.image_size": 32,
                "data.channels": 3,
                "faces.enabled": True,
                "faces.balance": "downsample",
                "faces.size": 48,
                "validate.min_side": 48,
                "validate.max_side": 48,
            },
        )
        ingested = pipeline.ingest(ctx)
    finally:
        httpd.shutdown()
    folder = Path(ingested["uri"])
    report = json.loads((folder / "ingest_report.json").read_text())
    assert report["urls"]["downloaded"] == 14 and report["urls"]["rejected"] == []
    assert (
        sorted(r["reason"] for r in report["faces"]["rejected"])
        == ["face too small (10 px: the 48 px chip would enlarge it 3.2x > faces.max_upscale=3)"]
        * 2
    )
    crops = pd.read_parquet(folder / "manifest.parquet")
    assert len(crops) == 12 and set(crops["width"]) == {48}
    assert all(Path(p).is_relative_to(Path(ctx["data_root"]) / "faces") for p in crops["path"])
    assert pipeline.validate(ctx, ingested)["success"]
    preprocessed = pipeline.preprocess(ctx, ingested)
    assert sum(preprocessed["meta"]["counts"].values()) == 12


@pytest.mark.integration  # the stages, on an MLflow store
def test_champion_profile_found_through_its_pipeline_run(store: Path, tmp_path: Path) -> None:
    """Models logged without a profile: the one the preprocess stage of the same pipeline run logged."""
    from visionops.core import tracking

    exp = tracking.experiment_id("profile-fallback")
    parent = tracking.start_parent_run(exp, "pipeline", {})
    profile = build_profile(_manifest_with(70.0), ["p", "q"])
    (tmp_path / "data_profile.json").write_text(json.dumps(profile))
    (tmp_path / "preprocessing.json").write_text(json.dumps({"labels": ["p", "q"]}))
    with tracking.stage_run(parent, "preprocess"):
        mlflow.log_artifact(str(tmp_path / "data_profile.json"))
    with tracking.stage_run(parent, "train"):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=_Constant(),
            artifacts={"preprocessing": str(tmp_path / "preprocessing.json")},
        )
    tracking.end_parent_run(parent, "FINISHED")
    version = mlflow.register_model(info.model_uri, "fallback-test")
    mlflow.tracking.MlflowClient().set_registered_model_alias(
        "fallback-test", "champion", version.version
    )
    ref = champion_reference("fallback-test")
    assert ref["labels"] == ["p", "q"] and ref["profile"] == profile
