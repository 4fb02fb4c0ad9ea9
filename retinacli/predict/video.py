"""`retina predict` on a video: every frame detected, an annotated copy of the video and the
detections of every frame in JSON.

Decoding and encoding use PyAV (FFmpeg's libraries through their Python binding: its wheels
bundle FFmpeg, so nothing else is installed, and it reads every container and codec FFmpeg
reads; OpenCV would bring a GUI stack and fewer codecs, imageio an FFmpeg subprocess). Frames
are decoded as RGB, passed to the detector as the images of `retina predict` are (channel
order of the model, the recipe's test resize) in batches of `images_per_batch` frames (frames
of one video have one size, so batching does not change a detection), drawn, and encoded again
with H.264 (`libx264`, or MPEG-4 part 2 where the FFmpeg build lacks it) at the source's frame
rate; frames of odd width or height are padded by one pixel (the encoders need even sizes).

Outputs in `out_dir`: `<video stem>.mp4` (written to a temporary file and renamed, so a reader
never sees half a video) and `<video stem>.json`:

    {"video": str, "fps": float, "width": int, "height": int, "score_thresh": float,
     "classes": [name, ...],
     "frames": [{"frame": int, "time": seconds, "detections": [...as in predictions.json]}]}
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

from retinacli.data.augment.resize_flip import resize_for_inference, to_chw_tensor
from retinacli.data.images import InputFormat, rgb_to_input_format
from retinacli.errors import DatasetError, UsageError
from retinacli.evaluation.detectors import ImageDetector
from retinacli.files import atomic_write, output_file, write_json

VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"})
PYAV_MISSING = 'PyAV is not installed; pip install av (or pip install -e ".[video]") to predict on videos'


@dataclass(frozen=True)
class VideoReport:
    """What `predict_video` wrote and found."""

    video: Path
    annotated: Path
    json_path: Path
    frames: int
    num_detections: int
    seconds: float


def is_video(path: Path | str) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def predict_video(
    detector: ImageDetector,
    video: Path,
    *,
    out_dir: Path,
    class_names: Sequence[str],
    class_dataset_ids: Sequence[int],
    input_format: InputFormat,
    short_size: int,
    max_size: int,
    images_per_batch: int = 1,
    progress: Callable[[int, int], None] | None = None,
    stem: str | None = None,
) -> VideoReport:
    """Detect objects in every frame of `video` with `detector` (a model file's or an exported
    file's) and write
    the annotated video and the per-frame JSON (module docstring) as `<stem>.mp4` and
    `<stem>.json` (default stem: the video's), checked to stay inside `out_dir`.

    Raises:
        UsageError: PyAV is missing, or an output name would leave `out_dir`.
        DatasetError: the file is not a video FFmpeg can decode (nothing of it is written).
    """
    from retinacli.predict.images import detection_dicts, draw_detections

    av = _import_av()
    out_dir.mkdir(parents=True, exist_ok=True)
    name = video.stem if stem is None else stem
    annotated = output_file(out_dir, f"{name}.mp4")
    json_out = output_file(out_dir, f"{name}.json")
    start = time.perf_counter()
    try:
        source = av.open(str(video))
    except (av.error.FFmpegError, OSError) as exc:  # type: ignore[attr-defined]
        raise DatasetError(f"{video}: not a video FFmpeg can read ({exc}); pass a video file or images") from None
    frames_out: list[dict[str, Any]] = []
    num_detections = 0
    size = [0, 0]  # (height, width) of the frames
    with source:
        if not source.streams.video:
            raise DatasetError(f"{video}: has no video stream; pass a video file or images")
        stream = source.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or Fraction(25)
        total = int(stream.frames or 0)
        with atomic_write(annotated) as handle:
            sink = av.open(handle, mode="w", format="mp4")
            encoder = None
            batch: list[tuple[int, float, np.ndarray]] = []

            def flush() -> None:
                nonlocal encoder, num_detections
                if not batch:
                    return
                tensors, sizes = [], []
                for _, _, rgb in batch:
                    h, w = rgb.shape[:2]
                    tensors.append(frame_tensor(rgb, input_format=input_format, short_size=short_size, max_size=max_size))
                    sizes.append((h, w))
                    size[:] = [h, w]
                for (index, when, rgb), dets in zip(batch, detector.detect(tensors, sizes), strict=True):
                    detections = detection_dicts(dets, class_names=class_names, class_dataset_ids=class_dataset_ids)
                    num_detections += len(detections)
                    frames_out.append({"frame": index, "time": when, "detections": detections})
                    drawn = np.asarray(draw_detections(rgb, detections))
                    if encoder is None:
                        encoder = _encoder(sink, av, rate=rate, height=drawn.shape[0], width=drawn.shape[1])
                    for packet in encoder.encode(av.VideoFrame.from_ndarray(_even(drawn), format="rgb24")):
                        sink.mux(packet)
                batch.clear()
                if progress is not None:
                    progress(len(frames_out), max(total, len(frames_out)))

            try:
                for index, frame in enumerate(source.decode(stream)):
                    when = float(frame.time) if frame.time is not None else index / float(rate)
                    batch.append((index, when, frame.to_ndarray(format="rgb24")))
                    if len(batch) == images_per_batch:
                        flush()
                flush()
            except av.error.FFmpegError as exc:  # type: ignore[attr-defined]
                raise DatasetError(f"{video}: cannot decode frame {len(frames_out)} ({exc}); the file may be damaged") from None
            if encoder is None:
                raise DatasetError(f"{video}: has no frame to decode; pass a video with frames")
            for packet in encoder.encode():
                sink.mux(packet)
            sink.close()
    json_path = write_json(
        json_out,
        {
            "video": str(video),
            "fps": float(rate),
            "width": size[1],
            "height": size[0],
            "score_thresh": detector.score_thresh,
            "classes": list(class_names),
            "frames": frames_out,
        },
    )
    return VideoReport(video, annotated, json_path, len(frames_out), num_detections, time.perf_counter() - start)


def frame_tensor(rgb: np.ndarray, *, input_format: InputFormat, short_size: int, max_size: int) -> torch.Tensor:
    """The detector's input for one decoded (H, W, 3) RGB frame: the model's channel order, the
    test resize, (3, h, w) uint8: what `retina predict` makes of the same picture as a file."""
    pixels = rgb_to_input_format(rgb, input_format=input_format)
    return to_chw_tensor(resize_for_inference(pixels, short_size=short_size, max_size=max_size))


def require_av() -> None:
    """Raise UsageError when PyAV is missing (checked before any input is run)."""
    _import_av()


def _import_av() -> Any:
    try:
        import av
    except ImportError:
        raise UsageError(PYAV_MISSING) from None
    return av


def _encoder(sink: Any, av: Any, *, rate: Fraction, height: int, width: int) -> Any:
    codecs = av.codecs_available
    stream = sink.add_stream("libx264" if "libx264" in codecs else "mpeg4", rate=rate)
    stream.width, stream.height = width + width % 2, height + height % 2
    stream.pix_fmt = "yuv420p"
    return stream


def _even(rgb: np.ndarray) -> np.ndarray:
    """Pad a frame by repeating its last row / column to even height and width."""
    pad_h, pad_w = rgb.shape[0] % 2, rgb.shape[1] % 2
    if pad_h or pad_w:
        rgb = np.pad(rgb, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return np.ascontiguousarray(rgb)
