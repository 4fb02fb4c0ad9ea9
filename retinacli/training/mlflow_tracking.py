"""MLflow tracking of a training run: parameters, metrics by iteration, artifacts, one MLflow run
per run folder.

`MlflowTracker` talks to MLflow through `mlflow.MlflowClient` (no global active run, so nothing
else in the process is affected). The MLflow run's id is kept in the run folder
(`RUN_FILE`, `mlflow_run.json`) so that `retina train --resume` continues the same MLflow run,
with its metrics' steps going on from the checkpoint's iteration.

Connecting (`start`) fails loudly: a tracking URI that cannot be reached is a UsageError before
training begins. Later failures (the server goes away during a long run) do not stop training:
the first one is reported, tracking stops, and metrics.jsonl still holds everything.

MLflow's HTTP client retries a failed request up to 7 times with exponential backoff (minutes);
unless the user set them, `MLFLOW_HTTP_REQUEST_MAX_RETRIES` and `MLFLOW_HTTP_REQUEST_TIMEOUT` are
lowered to `HTTP_RETRIES` and `HTTP_TIMEOUT_S`, and MLflow's usage telemetry is turned off
(`MLFLOW_DISABLE_TELEMETRY`), as OpenVINO's is.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from retinacli.errors import UsageError
from retinacli.files import write_text

RUN_FILE = "mlflow_run.json"
HTTP_RETRIES = 2
HTTP_TIMEOUT_S = 30
MAX_PARAM_VALUE = 6000  # MLflow's limit on a parameter's value (characters)
MAX_PARAMS_PER_BATCH = 100  # MLflow's limit on parameters in one log_batch call
MAX_METRICS_PER_BATCH = 1000
_RUN_ID = re.compile(r"^[0-9a-zA-Z_-]{1,64}$")

Status = Literal["FINISHED", "FAILED", "KILLED"]


def _quiet_mlflow_environment() -> None:
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(HTTP_RETRIES))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(HTTP_TIMEOUT_S))
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


class MlflowTracker:
    """One run folder's MLflow run.

    tracking_uri: the tracking server or store (None: MLflow's default, `$MLFLOW_TRACKING_URI`).
    experiment: the experiment's name (created when missing). run_name: the MLflow run's name.
    run_dir: the run folder (`RUN_FILE` is read and written there).
    resume: continue the MLflow run `RUN_FILE` names (when it names one of this tracking URI);
        otherwise a new MLflow run starts.
    warn: called once with a sentence when tracking fails during training and stops.
    """

    def __init__(
        self,
        *,
        tracking_uri: str | None,
        experiment: str,
        run_name: str | None,
        run_dir: Path,
        resume: bool,
        warn: Callable[[str], None],
    ) -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.run_name = run_name
        self.run_dir = Path(run_dir)
        self.resume = resume
        self.warn = warn
        self.run_id: str | None = None
        self.continued = False
        self._client: Any = None

    @property
    def where(self) -> str:
        return self.tracking_uri or "MLflow's default tracking URI"

    def start(self, params: Mapping[str, Any]) -> str:
        """Open the MLflow run (a new one, or the one a resumed run folder names) and log
        `params` (dotted recipe key -> value) that it does not hold yet. Returns the run id.
        Raises UsageError when MLflow is not installed or the tracking URI cannot be used."""
        try:
            _quiet_mlflow_environment()
            from mlflow import MlflowClient
        except ImportError:
            raise UsageError(
                "tracking.mlflow is set but MLflow is not installed: pip install 'retinacli[mlflow]', "
                "or remove tracking.mlflow (and --mlflow)"
            ) from None
        try:
            self._client = MlflowClient(tracking_uri=self.tracking_uri)
            self.run_id = self._continued_run() if self.resume else None
            if self.run_id is not None:
                self._client.update_run(self.run_id, status="RUNNING")
                self.continued = True
            else:
                self.run_id = self._new_run()
            self._log_params(params)
        except UsageError:
            raise
        except Exception as exc:  # MLflow raises its own, requests' and sqlalchemy's errors
            raise UsageError(
                f"MLflow at {self.where}: {_first_line(exc)}; start the tracking server or fix "
                "tracking.mlflow.tracking_uri (--mlflow), or train without tracking.mlflow"
            ) from None
        return self.run_id

    def _new_run(self) -> str:
        client = self._client
        found = client.get_experiment_by_name(self.experiment)
        experiment_id = found.experiment_id if found is not None else client.create_experiment(self.experiment)
        run = client.create_run(
            experiment_id, run_name=self.run_name or self.run_dir.name, tags={"retinacli.run_dir": str(self.run_dir)}
        )
        run_id = run.info.run_id
        write_text(
            self.run_dir / RUN_FILE,
            json.dumps({"tracking_uri": self.tracking_uri, "experiment_id": experiment_id, "run_id": run_id}, indent=1)
            + "\n",
        )
        return run_id

    def _continued_run(self) -> str | None:
        """The run id `RUN_FILE` names for this tracking URI, or None (no file, another URI)."""
        path = self.run_dir / RUN_FILE
        if not path.is_file():
            return None
        try:
            with path.open("rb") as handle:
                stored = json.loads(handle.read(64 * 1024).decode("utf-8"))
        except (OSError, ValueError):
            stored = None
        run_id = stored.get("run_id") if isinstance(stored, dict) else None
        if not isinstance(run_id, str) or not _RUN_ID.match(run_id):
            raise UsageError(
                f"{path}: not a run id file written by retina train (expected "
                '{"tracking_uri", "experiment_id", "run_id"}); delete it to start a new MLflow run'
            )
        if stored.get("tracking_uri") != self.tracking_uri:
            return None
        return run_id

    def _log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        held = self._client.get_run(self.run_id).data.params if self.continued else {}
        todo = [
            Param(key[:250], _param_text(value))
            for key, value in params.items()
            if key[:250] not in held
        ]
        for first in range(0, len(todo), MAX_PARAMS_PER_BATCH):
            self._client.log_batch(self.run_id, params=todo[first : first + MAX_PARAMS_PER_BATCH])

    # ------------------------------------------------------------------ during training

    def log_metrics(self, iteration: int, values: Mapping[str, float]) -> None:
        """Log the finite `values` at step `iteration` (MLflow keeps every step of a metric)."""
        if self._client is None:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [
            Metric(name, float(value), now, int(iteration))
            for name, value in values.items()
            if math.isfinite(float(value))
        ]
        for first in range(0, len(metrics), MAX_METRICS_PER_BATCH):
            self._call(lambda part=metrics[first : first + MAX_METRICS_PER_BATCH]: self._client.log_batch(
                self.run_id, metrics=part
            ))

    def log_artifacts(self, paths: Iterable[Path]) -> list[Path]:
        """Upload the files of `paths` that exist (each at the artifact root, by its name);
        returns those uploaded."""
        logged = []
        for path in paths:
            if self._client is not None and path.is_file() and self._call(
                lambda p=path: self._client.log_artifact(self.run_id, str(p))
            ):
                logged.append(path)
        return logged

    def finish(self, status: Status) -> None:
        """Close the MLflow run with `status` (FINISHED, FAILED, KILLED)."""
        if self._client is not None:
            self._call(lambda: self._client.set_terminated(self.run_id, status=status))
            self._client = None

    def _call(self, action: Callable[[], object]) -> bool:
        """Run one MLflow call; on failure warn once and stop tracking (training goes on)."""
        try:
            action()
            return True
        except Exception as exc:  # any failure of the tracking server must not end the training
            self._client = None
            self.warn(
                f"MLflow at {self.where}: {_first_line(exc)}; tracking stopped for this run "
                f"(metrics.jsonl and TensorBoard still have everything; run id {self.run_id})"
            )
            return False


def flat_params(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested recipe dict as dotted keys (`solver.base_lr`); empty sections are left out."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            flat.update(flat_params(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _param_text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= MAX_PARAM_VALUE else text[: MAX_PARAM_VALUE - 3] + "..."


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:500]
