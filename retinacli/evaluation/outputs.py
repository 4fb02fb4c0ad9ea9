"""The files of one evaluation: `coco_results.json` (the COCO results list) and `metrics.json`
(the metrics), written atomically into an output folder the caller has prepared; and the
results read back (for the diagnostics of an evaluation written earlier)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retinacli.files import write_json

RESULTS_NAME = "coco_results.json"
METRICS_NAME = "metrics.json"


@dataclass(frozen=True)
class EvaluationFiles:
    """Where `write_evaluation` wrote the results list and the metrics."""

    results: Path
    metrics: Path


def write_evaluation(
    output_dir: Path | str, *, results: Sequence[Mapping[str, Any]], metrics: Mapping[str, Any]
) -> EvaluationFiles:
    """Write `results` to coco_results.json and `metrics` to metrics.json in `output_dir`
    (created if needed), each replaced atomically."""
    out = Path(output_dir)
    return EvaluationFiles(
        results=write_json(out / RESULTS_NAME, list(results)),
        metrics=write_json(out / METRICS_NAME, dict(metrics)),
    )


def read_results(output_dir: Path | str) -> list[dict[str, Any]]:
    """The coco_results.json of an evaluation `write_evaluation` wrote into `output_dir`."""
    return json.loads((Path(output_dir) / RESULTS_NAME).read_text(encoding="utf-8"))
