"""One problem found in a dataset, as reported by `coco.parse_coco` and `checks.check_coco`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "fixed"]
ProblemKind = Literal[
    "bad_json",  # a required key or value is missing or of the wrong type
    "duplicate_id",  # two images or two annotations share an id
    "unknown_category",  # an annotation's category_id is not in "categories"
    "missing_image",  # an annotation names an image id that "images" does not have
    "malformed_box",  # a bbox that is not 4 finite numbers
    "path_outside_folder",  # a file_name that leaves the image folder (absolute, `..`, a link out)
    "image_not_found",  # the image file does not exist
    "unreadable_image",  # the file exists but is not an image PIL can read
    "size_mismatch",  # the file's size differs from the json's width/height
    "box_outside_image",  # a box reaches outside its image (fixable: clipped)
    "degenerate_box",  # a box of zero or negative width or height (fixable: dropped)
]


@dataclass(frozen=True)
class Problem:
    """A problem with a dataset.

    severity: "error" (training cannot use the dataset as it is) or "fixed" (a box was clipped or
    dropped because fixing was allowed). `file` is the json or image file at fault;
    `image_id`/`annotation_id` are the COCO ids involved, None where they do not apply.
    `message` is the full `<where>: <what is wrong>; <what to do>` line.
    """

    severity: Severity
    kind: ProblemKind
    file: str
    image_id: int | None
    annotation_id: int | None
    message: str


def summarize_errors(problems: Sequence[Problem], *, limit: int = 10) -> str:
    """The error problems as one multi-line message: the first `limit` in full, then a count."""
    errors = [p for p in problems if p.severity == "error"]
    lines = [p.message for p in errors[:limit]]
    if len(errors) > limit:
        lines.append(
            f"... and {len(errors) - limit} more; run `retina data check` on the recipe for the "
            "full list"
        )
    return "\n".join(lines)
