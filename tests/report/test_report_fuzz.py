"""Fuzzing `retina report` with run folders (`pytest -m fuzz`): any string or JSON value in the
fields of metrics.json and diagnostics.json (class names, error kinds, size keys, per-class
fields, picture names: traversal, absolute, links, control characters) gives a page whose markup
is ours alone, embeds nothing from outside the run folder, and never a traceback."""

from __future__ import annotations

import base64
import io
import json
import re
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from retinacli.commands.report import report
from retinacli.report.page import Evaluation, Picture, ReportData, render_report
from tests.fuzzing import FUZZ, expect_clean, opened_outside, tried, watch_opens
from tests.report.test_hostile_run import markup_problems

pytestmark = pytest.mark.fuzz

MARKUP = ("<", ">", '"', "'")
hostile_text = st.one_of(
    st.text(max_size=24),
    st.text(alphabet=st.sampled_from(list("<>\"'&=/ ;`\x00\x1b\x07\u202e\n\r\tabc")), max_size=24),
    st.sampled_from(["<script>window.pwned=1</script>", '"><img src=x onerror=alert(1)>', "</td></tr><tr>", "&amp;", "&#x3c;"]),
)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True), hostile_text)
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(hostile_text, inner, max_size=3), max_leaves=8
)
per_class_entry = st.one_of(
    values, st.fixed_dictionaries({}, optional={k: values for k in ("threshold", "precision", "recall", "f1", "ground_truth")})
)
diagnostics = st.fixed_dictionaries(
    {},
    optional={
        "errors": st.one_of(
            values,
            st.fixed_dictionaries(
                {},
                optional={
                    "false_positives": st.dictionaries(hostile_text, values, max_size=4),
                    "ap50_gain": st.dictionaries(hostile_text, values, max_size=4),
                    "missed": st.dictionaries(
                        hostile_text, st.one_of(values, st.fixed_dictionaries({"touched": values, "untouched": values})), max_size=4
                    ),
                },
            ),
        ),
        "per_class": st.one_of(values, st.dictionaries(hostile_text, per_class_entry, max_size=4)),
        "pr_curves": st.one_of(values, st.fixed_dictionaries({"classes": st.dictionaries(hostile_text, values, max_size=3)})),
    },
)
metrics = st.fixed_dictionaries(
    {"per_category": st.one_of(values, st.dictionaries(hostile_text, values, max_size=5))},
    optional={name: values for name in ("AP", "AP50", "AP75", "APs", "APm", "APl")},
)


FIELDS = {  # the keys the page looks up: kept as they are, every other string replaced
    "per_category", "AP", "AP50", "AP75", "APs", "APm", "APl", "errors", "false_positives", "ap50_gain",
    "missed", "touched", "untouched", "per_class", "threshold", "precision", "recall", "f1", "ground_truth",
    "pr_curves", "classes", "metric", "value", "iteration",
}


def _benign(value: Any, names: dict[str, str]) -> Any:
    """`value` with every string (keys too) replaced by a distinct plain word, the same string by
    the same word: the page of it has the same structure if nothing from the data is markup."""
    if isinstance(value, str):  # "" stays "" (it is false where the page asks "is there any?")
        if value in FIELDS:
            return value
        return names.setdefault(value, f"s{len(names)}" if value else "")
    if isinstance(value, list):
        return [_benign(v, names) for v in value]
    if isinstance(value, dict):
        return {_benign(k, names): _benign(v, names) for k, v in value.items()}
    return value


def _data(diag: dict[str, Any], final: dict[str, Any], caption: str, split: str) -> ReportData:
    return ReportData(
        title=caption,
        status=caption,
        generated_at=caption,
        recipe_changes=[(caption, caption, None)],
        recipe_text=caption,
        evaluations=[Evaluation(split, 3, final)],
        final=Evaluation(split, None, final),
        best={"metric": caption, "value": caption, "iteration": caption},
        diagnostics=diag,
        worst_images=[Picture(b"\x89PNG", caption)],
        log_tail=[caption, caption],
        missing={"curves": caption},
        left_out=[caption],
    )


@FUZZ
@given(diag=diagnostics, final=metrics, caption=hostile_text, split=hostile_text)
def test_no_value_of_the_data_becomes_markup(diag, final, caption, split):
    tried("report: render_report with hostile values")
    page = render_report(_data(diag, final, caption, split))
    names: dict[str, str] = {}
    plain = render_report(_data(_benign(diag, names), _benign(final, names), _benign(caption, names), _benign(split, names)))
    # Escaped data holds none of < > " ': every one of them in the page is our markup.
    assert [page.count(c) for c in MARKUP] == [plain.count(c) for c in MARKUP]
    assert markup_problems(page) == []


def _png(color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), color).save(buffer, format="PNG")
    return buffer.getvalue()


OUTSIDE_PNG = _png((250, 0, 0))
INSIDE_PNG = _png((0, 0, 250))
leaving = st.sampled_from([  # names that leave the run folder, or its evaluation folder
    "../../outside.png", "{outside}", "worst_images/link.png", "worst_images/../../../outside.png",
    "worst_images/linkdir/outside.png", "C:\\outside.png", "\\\\server\\share\\x.png", "..", "/",
])
staying = st.sampled_from([
    "worst_images/inside.png", "./worst_images/inside.png", "worst_images/\x1b[2J.png", "worst_images/inside.png\x00", "", ".",
])
picture_names = st.one_of(leaving, staying, hostile_text)
entry = st.one_of(
    st.fixed_dictionaries({"file": st.one_of(picture_names, values)}, optional={"image_id": values, "errors": values}), values
)
# every example has one name that leaves, among entries of any shape
worst_images = st.tuples(st.fixed_dictionaries({"file": leaving}), st.lists(entry, max_size=3)).map(
    lambda parts: [parts[0], *parts[1]]
)


@FUZZ
@given(diag=diagnostics, final=metrics, worst=worst_images)
def test_a_run_folder_of_hostile_files_gives_a_page_and_nothing_from_outside(diag, final, worst):
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "outside.png").write_bytes(OUTSIDE_PNG)
        (root / "elsewhere").mkdir()
        (root / "elsewhere" / "outside.png").write_bytes(OUTSIDE_PNG)
        evaluation = root / "run" / "eval_test"
        (evaluation / "worst_images").mkdir(parents=True)
        (evaluation / "worst_images" / "inside.png").write_bytes(INSIDE_PNG)
        (evaluation / "worst_images" / "link.png").symlink_to(root / "outside.png")
        (evaluation / "worst_images" / "linkdir").symlink_to(root / "elsewhere")
        entries = [
            {**entry, "file": entry["file"].replace("{outside}", str(root / "outside.png"))}
            if isinstance(entry, dict) and isinstance(entry.get("file"), str)
            else entry
            for entry in worst
        ]
        (evaluation / "diagnostics.json").write_text(json.dumps({**diag, "worst_images": entries}))
        (evaluation / "metrics.json").write_text(json.dumps(final))
        with watch_opens() as opened:
            result = expect_clean(lambda: report(root / "run", gallery=0), test="report: run folder with hostile files")
        assert opened_outside(opened, root, root / "run") == []  # never read, not only never shown
        assert result is not None  # a page is always made
        page = result.path.read_text(encoding="utf-8")
        assert markup_problems(page) == []
        assert base64.b64encode(OUTSIDE_PNG).decode() not in page
        embedded = re.findall(r'src="data:image/jpeg;base64,([^"]*)"', page)
        assert len(embedded) <= len(entries) and page.count("<img ") == len(embedded)
        for data in embedded:  # worst images are re-encoded: each is the blue inside picture
            with Image.open(io.BytesIO(base64.b64decode(data))) as picture:
                red, _, blue = picture.convert("RGB").getpixel((8, 8))
            assert blue > 200 and red < 60, "a picture from outside the run folder"
