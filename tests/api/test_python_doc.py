"""docs/python.md runs as it is written: its python blocks, in order, in one namespace, from a
folder that holds the repository's recipes (as the repository's root does)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "python.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.M | re.S)


def test_the_doc_has_examples() -> None:
    blocks = python_blocks(DOC.read_text())
    assert len(blocks) >= 4
    assert any("retinacli.train(" in b for b in blocks) and any("Detector.load(" in b for b in blocks)


@pytest.mark.slow
def test_docs_python_md_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("onnxruntime", reason="the example exports to ONNX (the `onnx` extra)")
    (tmp_path / "recipes").symlink_to(REPO / "recipes")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RETINA_CACHE", str(tmp_path / "cache"))
    namespace: dict[str, object] = {}
    for number, block in enumerate(python_blocks(DOC.read_text()), start=1):
        exec(compile(block, f"docs/python.md block {number}", "exec"), namespace)  # noqa: S102 (our own doc)
    assert (tmp_path / "output" / "shapes_api" / "model_final.pth").is_file()
    assert (tmp_path / "output" / "shapes_api" / "model.onnx").is_file()
    assert (tmp_path / "circle_detected.png").is_file()
    metrics = json.loads((tmp_path / "output" / "shapes_api" / "test_eval" / "metrics.json").read_text())
    assert metrics["AP_ci"][0] <= metrics["AP"] <= metrics["AP_ci"][1]
