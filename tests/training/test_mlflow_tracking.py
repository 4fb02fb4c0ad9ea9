"""MLflow tracking against a real MLflow tracking server (sqlite backend) started on 127.0.0.1.

What training logs is read back through MLflow's own client: the recipe as parameters, every
logged metric at its iteration, the evaluations, the artifacts; a resumed run continues the same
MLflow run."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from retinacli.commands.train import train_from_recipe
from retinacli.training import loop as loop_module
from retinacli.training.mlflow_tracking import RUN_FILE, flat_params
from tests.training.tiny import REPO, tiny_recipe

mlflow = pytest.importorskip("mlflow", reason="MLflow is not installed: pip install -e '.[mlflow]' (it is in dev)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """`mlflow server` on 127.0.0.1 with a sqlite store and a local artifact folder: its URI."""
    root = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    log = (root / "server.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "artifacts")],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert process.poll() is None, (root / "server.log").read_text()
            assert time.monotonic() < deadline, "the MLflow server did not start: " + (root / "server.log").read_text()
            time.sleep(0.5)
        yield uri
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
        log.close()


def test_flat_params_names_every_recipe_key_dotted() -> None:
    assert flat_params({"solver": {"base_lr": 0.01, "steps": [1, 2]}, "seed": 0, "tracking": {"mlflow": None}}) == {
        "solver.base_lr": 0.01, "solver.steps": [1, 2], "seed": 0, "tracking.mlflow": None,
    }


def test_training_logs_to_mlflow_and_a_resumed_run_continues_the_same_mlflow_run(tmp_path, server, monkeypatch):
    extra = ("eval_period=3", f"tracking.mlflow={{tracking_uri: '{server}', experiment: tiny, run_name: first}}")
    real_step = loop_module.Trainer._step
    calls = {"n": 0}

    def crash_on_fifth(self, batch):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt  # during iteration 4: the checkpoint and evaluation of 2 exist
        return real_step(self, batch)

    monkeypatch.setattr(loop_module.Trainer, "_step", crash_on_fifth)
    with pytest.raises(KeyboardInterrupt):
        train_from_recipe(tiny_recipe(tmp_path, *extra))
    monkeypatch.setattr(loop_module.Trainer, "_step", real_step)
    out = tmp_path / "run"
    stored = json.loads((out / RUN_FILE).read_text())
    client = mlflow.MlflowClient(tracking_uri=server)
    assert client.get_run(stored["run_id"]).info.status == "FAILED"

    result = train_from_recipe(tiny_recipe(tmp_path, *extra), resume=True)
    assert json.loads((out / RUN_FILE).read_text()) == stored  # the same MLflow run
    run = client.get_run(stored["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == "first"
    assert client.get_experiment(run.info.experiment_id).name == "tiny"
    assert len(client.search_runs([run.info.experiment_id])) == 1

    # the resolved recipe as parameters
    params = run.data.params
    assert params["solver.max_iter"] == "6" and params["model.fpn.out_channels"] == "32"
    assert params["data.train.resize.short_sizes"] == "[64, 80]" and params["tracking.mlflow.experiment"] == "tiny"

    # every logged metric at its iteration, both halves of the run, as metrics.jsonl has them
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = {line["iteration"]: line["loss_cls"] for line in logged if "loss_cls" in line}
    history = client.get_metric_history(stored["run_id"], "loss_cls")
    assert {m.step: m.value for m in history} == pytest.approx(losses)
    assert {1, 5} <= {m.step for m in history}
    evaluations = {m.step: m.value for m in client.get_metric_history(stored["run_id"], "test/AP")}
    assert sorted(evaluations) == [2, 5]
    assert evaluations[5] == pytest.approx(result.last_metrics["AP"])

    # the deployable files at the end
    names = {artifact.path for artifact in client.list_artifacts(stored["run_id"])}
    assert {"model_final.pth", "results.png", "report.html"} <= names
    fetched = Path(client.download_artifacts(stored["run_id"], "model_final.pth", str(tmp_path)))
    assert hashlib.sha256(fetched.read_bytes()).digest() == hashlib.sha256((out / "model_final.pth").read_bytes()).digest()
    assert "report.html" not in {p.name for p in out.iterdir()}  # the run folder gains no file


@pytest.mark.slow  # about 11 s: waits out MLflow's retries against a closed port
def test_an_unreachable_tracking_server_stops_before_training(tmp_path):
    port = _free_port()  # nothing listens there
    done = subprocess.run(
        [sys.executable, "-m", "retinacli", "train", str(REPO / "recipes" / "shapes.yaml"),
         "--set", "data.num_workers=0", "--set", "solver.max_iter=2",
         "--set", f"data.train.dataset={{kind: shapes, split: train, num_images: 4, image_size: [64, 96], cache_dir: '{tmp_path / 'cache'}'}}",
         "--output-dir", str(tmp_path / "run"), "--mlflow", f"http://127.0.0.1:{port}"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert done.returncode == 2, done.stderr
    assert f"MLflow at http://127.0.0.1:{port}" in done.stderr and "tracking.mlflow.tracking_uri" in done.stderr
    assert "Traceback" not in done.stderr
    assert not list((tmp_path / "run").glob("model_*.pth"))
