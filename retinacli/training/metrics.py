"""Training metrics: one JSON line per `write` in `metrics.jsonl`, and the same scalars in TensorBoard.

`metrics.jsonl` is appended to (a resumed run continues the file, as detectron2's JSONWriter
does). Each line is `{"iteration": int, "<name>": number, ...}`, flushed at once so that
`tail -f` and a crash both see every line written. Values that are not finite (NaN, inf) are
written as `null`, keeping every line valid JSON; TensorBoard gets the raw value.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any, Protocol

METRICS_FILE = "metrics.jsonl"


class MetricsSink(Protocol):
    """Another receiver of every `MetricsWriter.write` (an experiment tracker)."""

    def log_metrics(self, iteration: int, values: Mapping[str, float]) -> None: ...


class MetricsWriter:
    """Writes scalars to `<output_dir>/metrics.jsonl` and a TensorBoard event file in `output_dir`.

    Pass `enabled=False` on every process but rank 0 (and to turn logging off): then nothing is
    created and every method does nothing. `tensorboard=False` keeps only the JSON lines.
    `sink` (an experiment tracker such as `mlflow_tracking.MlflowTracker`) gets the same scalars.
    `close()` may be called any number of times; the writer is also a context manager.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike[str],
        *,
        enabled: bool,
        tensorboard: bool = True,
        sink: MetricsSink | None = None,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.enabled = enabled
        self.sink = sink
        self._jsonl: IO[str] | None = None
        self._tb: Any = None
        if not enabled:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(self.output_dir / METRICS_FILE, "a", encoding="utf-8")  # noqa: SIM115
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(self.output_dir))

    def write(self, iteration: int, scalars: Mapping[str, float]) -> None:
        """Record `scalars` (name -> number, e.g. "loss_cls", "lr") at 0-based `iteration`.

        Names must be strings other than "iteration"; values must be real numbers (python or
        0-d tensor/numpy values, converted with float()).
        """
        if not self.enabled or self._jsonl is None:
            return
        record: dict[str, Any] = {"iteration": int(iteration)}
        values: dict[str, float] = {}
        for name, value in scalars.items():
            if not isinstance(name, str) or name == "iteration":
                raise ValueError(f"metrics: invalid scalar name {name!r}")
            number = float(value)
            values[name] = number
            record[name] = number if math.isfinite(number) else None
        self._jsonl.write(json.dumps(record, allow_nan=False) + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            for name, number in values.items():
                self._tb.add_scalar(name, number, int(iteration))
            self._tb.flush()
        if self.sink is not None:
            self.sink.log_metrics(int(iteration), values)

    def close(self) -> None:
        """Flush and close both outputs; safe to call more than once."""
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
