"""Serving the champion: ``visionops predict``, the ``batch_predict`` DAG through ``dag.test()``, and
``mlflow models serve`` answering a real HTTP request with images."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from testkit import model_server, post_json
from visionops.cli.main import main
from visionops.core.constants import CHAMPION
from visionops.release import registry
from visionops.serving.batch import parse_model_ref, resolve_model

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def served(sqlite_store: dict[str, Any], helpers, trained_nets, tmp_path_factory) -> dict[str, Any]:
    """A model whose champion is the good classifier (v2; v1 is the bad one), and a folder of PNGs.

    ``proba``: the champion's class probabilities for ``x``, computed here from the trained network
    itself (softmax of its logits), independently of the logged model and of serving.
    """
    import torch

    name = f"serve-{uuid.uuid4().hex[:6]}"
    for kind in ("bad", "good"):
        m = sqlite_store["models"][kind]
        registry.register_version(name, m["model_uri"], m["run_id"], {}, kind)
    registry.set_alias(name, CHAMPION, "2")
    folder = tmp_path_factory.mktemp("inbox")
    x, y = helpers.images(10, seed=21)
    with torch.no_grad():
        proba = torch.softmax(trained_nets["good"](torch.from_numpy(x)), dim=1).numpy()
    expected, probability = {}, {}
    for i, (img, label) in enumerate(zip(x[:, 0], y)):
        sub = folder / ("a" if i < 5 else "b")  # nested folders are searched too
        sub.mkdir(exist_ok=True)
        Image.fromarray(img).save(sub / f"img{i}.png")
        expected[str(sub / f"img{i}.png")] = helpers.labels[label]
        probability[str(sub / f"img{i}.png")] = float(proba[i].max())
    return {
        "name": name,
        "folder": folder,
        "expected": expected,
        "probability": probability,
        "proba": proba,
        "x": x,
        "y": y,
    }


def test_parse_model_ref() -> None:
    assert parse_model_ref("m") == ("m", "champion", None)
    assert parse_model_ref("m@challenger") == ("m", "challenger", None)
    assert parse_model_ref("models:/m/3") == ("m", None, "3")
    with pytest.raises(Exception, match="numeric version"):
        parse_model_ref("m/x")


def test_resolve_model_pins_the_alias_to_a_version(served: dict[str, Any]) -> None:
    assert resolve_model(served["name"]).uri == f"models:/{served['name']}/2"
    with pytest.raises(Exception, match="has no alias 'nope'"):
        resolve_model(f"{served['name']}@nope")


def _check_csv(path: Path, served: dict[str, Any], version: str) -> pd.DataFrame:
    frame = pd.read_csv(path, dtype={"model_version": str})
    assert list(frame.columns) == [
        "path",
        "label",
        "probability",
        "box",
        "status",
        "error",
        "model_version",
    ]
    assert set(frame["status"]) <= {"ok", "unknown"} and frame["box"].isna().all()
    assert dict(zip(frame["path"], frame["label"])) == served["expected"]
    assert version == "2"  # served["probability"]: the champion's, computed from its network
    np.testing.assert_allclose(
        frame["probability"], [served["probability"][p] for p in frame["path"]], atol=1e-5
    )
    assert set(frame["model_version"]) == {version}
    return frame


def test_a_pixel_model_has_no_embeddings_to_return(served: dict[str, Any], tmp_path: Path) -> None:
    import mlflow

    model = mlflow.pyfunc.load_model(f"models:/{served['name']}/2")
    with pytest.raises(Exception, match="return_embeddings needs an embedding model"):
        model.predict(served["x"][:2, 0], params={"return_embeddings": True})
    # Batch scoring asks only an embedding model for them: a pixel model's batch has no such file.
    from visionops.serving.batch import score_folder

    ref = resolve_model(f"{served['name']}/2")
    scored = score_folder(ref, str(served["folder"]), str(tmp_path / "pred.csv"))
    assert scored.embeddings is None and not (tmp_path / "pred.embeddings.npz").exists()


def test_predict_cli_writes_csv(served: dict[str, Any], tmp_path: Path, capsys) -> None:
    out = tmp_path / "out" / "pred.csv"
    assert (
        main(
            [
                "predict",
                "--model",
                served["name"],
                "--input",
                str(served["folder"]),
                "--output",
                str(out),
            ]
        )
        == 0
    )
    assert "10 images scored" in capsys.readouterr().out
    _check_csv(out, served, "2")
    out1 = tmp_path / "v1.csv"
    assert (
        main(
            [
                "predict",
                "--model",
                f"{served['name']}/1",
                "--input",
                str(served["folder"]),
                "--output",
                str(out1),
            ]
        )
        == 0
    )
    assert set(pd.read_csv(out1, dtype=str)["model_version"]) == {"1"}
    assert (
        main(
            [
                "predict",
                "--model",
                served["name"],
                "--input",
                str(tmp_path / "missing"),
                "--output",
                str(out1),
            ]
        )
        == 2
    )
    assert "input folder not found" in capsys.readouterr().err


def test_batch_predict_dag_writes_csv_and_logs_to_mlflow(
    served: dict[str, Any], sqlite_store, tmp_path: Path
) -> None:
    from airflow.dag_processing.dagbag import DagBag

    import mlflow

    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    migrate = subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), "db", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    dag = DagBag(dag_folder=str(REPO / "dags" / "batch_predict.py")).dags["batch_predict"]
    run = dag.test(
        run_conf={
            "model_name": served["name"],
            "alias": "champion",
            "input_dir": str(served["folder"]),
        }
    )
    assert str(run.state) in ("success", "DagRunState.SUCCESS"), run.state
    out = next(
        (Path(os.environ["VISIONOPS_HOME"]) / "data" / "predictions" / served["name"] / "v2").glob(
            "*.csv"
        )
    )
    _check_csv(out, served, "2")
    runs = mlflow.search_runs(
        experiment_names=["visionops-batch-predict"],
        output_format="list",
        filter_string=f"tags.`visionops.model_name` = '{served['name']}'",
    )
    assert runs and runs[0].data.tags["visionops.model_version"] == "2"
    assert runs[0].data.tags["visionops.output"] == str(out)
    assert [a.path for a in mlflow.tracking.MlflowClient().list_artifacts(runs[0].info.run_id)] == [
        "predictions.csv"
    ]


def _encode(img: np.ndarray, fmt: str) -> str:
    import base64
    import io

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return base64.b64encode(buf.getvalue()).decode()


def test_mlflow_models_serve_answers_image_requests(served: dict[str, Any], tmp_path: Path) -> None:
    with model_server(f"models:/{served['name']}@champion", tmp_path) as port:
        # The README's payload: {"inputs": [image, ...]}, each image rows of uint8 pixels.
        rows = post_json(port, {"inputs": served["x"][:6, 0].tolist()})
        labels = [row["label"] for row in rows]
        assert labels == ["left", "right", "left", "right", "left", "right"]
        # The probability of the label given, as the network itself computes it (not a 2-class
        # model's floor of 0.5, which any answer meets).
        np.testing.assert_allclose(
            [row["probability"] for row in rows], served["proba"][:6].max(axis=1), atol=1e-5
        )
        rows = post_json(
            port, {"inputs": served["x"][:2, 0].tolist(), "params": {"return_probabilities": True}}
        )
        assert np.isclose(rows[0]["proba_left"] + rows[0]["proba_right"], 1.0)
        # Encoded photos of different sizes and formats in one request (the README's curl), as a
        # dataframe_split and as {"inputs": {"image": [...]}}; a broken one answers on its own row.
        encoded = [
            _encode(served["x"][0, 0], "PNG"),
            _encode(
                np.asarray(Image.fromarray(served["x"][1, 0]).resize((24, 24), Image.NEAREST)),
                "PNG",
            ),
            _encode(
                np.asarray(Image.fromarray(served["x"][2, 0]).resize((32, 32), Image.NEAREST)),
                "JPEG",
            ),
        ]
        for body in (
            {
                "dataframe_split": {
                    "columns": ["image"],
                    "data": [[e] for e in encoded] + [["bad"]],
                },
                "params": {"return_probabilities": True},
            },
            {"inputs": {"image": encoded + ["bad"]}, "params": {"return_probabilities": True}},
        ):
            rows = post_json(port, body)
            assert [r["label"] for r in rows] == ["left", "right", "left", None]
            assert [r["status"] for r in rows] == [
                "ok",
                "ok",
                "ok",
                "invalid",
            ] and "base64" in rows[3]["error"]
            assert np.isclose(rows[0]["proba_left"] + rows[0]["proba_right"], 1.0)
