"""JSONL detection dumps: writer, tolerant reader and sidecar metadata.

One line per frame::

    {"frame_id": int, "width": int, "height": int,
     "detections": [{"class_id": int, "class_name": str, "confidence": float,
                     "xyxy": [x1, y1, x2, y2],
                     "mask": {"size": [h, w], "counts": str} | null,
                     "polygon": [[x, y], ...]}]}          (polygon: optional)

Boxes are in pixels of the original frame (``width`` x ``height``). Masks are
COCO run-length encodings as produced by ``pycocotools.mask.encode`` (column
major, compressed counts decoded to ASCII text) and always cover the whole
frame, so ``size == [height, width]``. ``polygon``, present only when the arm
received polygons (``inference``'s adapter responses), lists the points in pixels
of the original frame, in the order they were received.

Every dump ``X.jsonl`` has a sidecar ``X.meta.json`` recording package
versions, environment, model and source, and whether the writer finished
(``complete``). The writer flushes after every frame so that a killed process
leaves a readable prefix; the reader keeps that prefix and reports a
truncated last line instead of failing.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import logging
import math
import numbers
import os
import platform
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

import numpy as np
from pycocotools import mask as mask_utils

if TYPE_CHECKING:
    import supervision as sv

logger = logging.getLogger(__name__)

FORMAT_NAME = "inference-triton-preproc.detections"
FORMAT_VERSION = 1

# Distributions whose versions decide whether two dumps are comparable.
_VERSIONED_DISTRIBUTIONS = (
    "inference-triton-preproc",
    "inference",
    "inference-models",
    "rfdetr",
    "torch",
    "torchvision",
    "triton",
    "numpy",
    "pillow",
    "opencv-python",
    "opencv-python-headless",
    "supervision",
    "pycocotools",
)
# Environment variables that change preprocessing or device selection.
_RECORDED_ENV_PREFIXES = ("INFERENCE_TRITON_PREPROC", "TRITON_", "CUDA_", "TORCH_")


class DumpFormatError(ValueError):
    """A dump or sidecar file is corrupt or does not follow the schema.

    Attributes:
        path: the offending file.
        line: 1-based line number, or ``None`` when the error is not tied to a line.
        reason: what is wrong, without the location.
    """

    def __init__(self, path: str | os.PathLike[str], line: int | None, reason: str) -> None:
        self.path = Path(path)
        self.line = line
        self.reason = reason
        where = f"{self.path}:{line}" if line is not None else str(self.path)
        super().__init__(f"{where}: {reason}")


class _SchemaError(ValueError):
    """Schema violation inside one record; the caller adds the location."""


@dataclass(frozen=True)
class DetectionRecord:
    """One detection of a frame.

    Attributes:
        class_id: model class index.
        class_name: human-readable class name.
        confidence: score in [0, 1] (float64 holding the model's value exactly).
        xyxy: box corners in pixels of the original frame.
        mask: COCO RLE ``{"size": [h, w], "counts": str}`` or ``None``.
        polygon: ``((x, y), ...)`` in pixels, or ``None`` when the dump carries no polygons.
    """

    class_id: int
    class_name: str
    confidence: float
    xyxy: tuple[float, float, float, float]
    mask: dict[str, Any] | None = None
    polygon: tuple[tuple[float, float], ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict in the dump schema."""
        return {
            "class_id": self.class_id,
            "class_name": self.class_name,
            "confidence": self.confidence,
            "xyxy": list(self.xyxy),
            "mask": None if self.mask is None else {"size": list(self.mask["size"]), "counts": self.mask["counts"]},
            **({} if self.polygon is None else {"polygon": [list(point) for point in self.polygon]}),
        }


@dataclass(frozen=True)
class FrameRecord:
    """All detections of one frame, in the order the model returned them."""

    frame_id: int
    width: int
    height: int
    detections: tuple[DetectionRecord, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict in the dump schema (one JSONL line)."""
        return {
            "frame_id": self.frame_id,
            "width": self.width,
            "height": self.height,
            "detections": [d.to_dict() for d in self.detections],
        }


@dataclass
class Dump:
    """A dump read back from disk (or built in memory).

    Attributes:
        frames: frame records keyed by ``frame_id``.
        path: the JSONL file, ``None`` for in-memory dumps.
        truncated_line: 1-based number of an unparseable, unterminated last
            line that was dropped (the writer was killed mid-line), else ``None``.
        meta: the sidecar JSON object, ``None`` when there is no sidecar.
    """

    frames: dict[int, FrameRecord] = field(default_factory=dict)
    path: Path | None = None
    truncated_line: int | None = None
    meta: dict[str, Any] | None = None

    @property
    def complete(self) -> bool | None:
        """Whether the writer closed the dump normally; ``None`` if unknown (no sidecar)."""
        if self.meta is None or "complete" not in self.meta:
            return None
        return bool(self.meta["complete"])

    @property
    def random_weights(self) -> bool:
        """Whether the sidecar says the model ran with random weights."""
        model = (self.meta or {}).get("model")
        return isinstance(model, Mapping) and model.get("random_weights") is True


def sidecar_path(dump_path: str | os.PathLike[str]) -> Path:
    """Sidecar path of a dump: ``A.jsonl`` -> ``A.meta.json``."""
    return Path(dump_path).with_suffix(".meta.json")


def encode_mask(mask: np.ndarray) -> dict[str, Any]:
    """Encode a boolean mask as COCO RLE with text counts.

    Args:
        mask: ``(H, W)`` array of dtype ``bool``, any memory order.

    Returns:
        ``{"size": [H, W], "counts": str}`` (compressed pycocotools counts).
    """
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.dtype != np.bool_:
        raise TypeError(f"mask must be a 2-D bool array, got shape {mask.shape} dtype {mask.dtype}")
    rle = mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def decode_mask(rle: Mapping[str, Any]) -> np.ndarray:
    """Decode an RLE dict from :func:`encode_mask` into an ``(H, W)`` bool array."""
    counts = rle["counts"]
    raw = {"size": list(rle["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    return mask_utils.decode(raw).astype(bool)


def frame_record(
    frame_id: int,
    detections: sv.Detections,
    width: int,
    height: int,
    include_masks: bool = True,
    polygons: Sequence[Sequence[tuple[float, float]]] | None = None,
) -> dict[str, Any]:
    """Build one dump line from a ``supervision.Detections``.

    Args:
        frame_id: index of the frame in its source.
        detections: needs ``xyxy`` (pixels), ``confidence`` and ``class_id``;
            ``data["class_name"]`` is used when present (else the class id as
            text); ``mask`` (N x height x width, bool) is encoded when present.
        width: frame width in pixels.
        height: frame height in pixels.
        include_masks: write ``null`` masks even if ``detections.mask`` is set.
        polygons: per detection its ``(x, y)`` points in pixels, aligned with ``detections``
            (written as ``polygon``); ``None`` writes none.

    Returns:
        A JSON-ready dict following the dump schema.
    """
    class_ids, confidences = detections.class_id, detections.confidence
    if class_ids is None or confidences is None:
        if len(detections):
            raise ValueError("detections need both confidence and class_id to be dumped")
        class_ids, confidences = np.zeros(0, dtype=np.int64), np.zeros(0)
    names = detections.data.get("class_name") if detections.data else None
    masks = detections.mask if include_masks else None
    records = []
    for i in range(len(detections)):
        mask = None
        if masks is not None:
            # Indexing one mask works for dense arrays and supervision's CompactMask alike.
            dense = np.asarray(masks[i], dtype=bool)
            if dense.shape != (height, width):
                raise ValueError(f"mask {i} has shape {dense.shape}, expected frame size {(height, width)}")
            mask = encode_mask(dense)
        class_id = int(class_ids[i])
        records.append(
            {
                "class_id": class_id,
                "class_name": str(names[i]) if names is not None else str(class_id),
                "confidence": float(confidences[i]),
                "xyxy": [float(v) for v in detections.xyxy[i]],
                "mask": mask,
                **({} if polygons is None else {"polygon": [[float(x), float(y)] for x, y in polygons[i]]}),
            }
        )
    return {"frame_id": int(frame_id), "width": int(width), "height": int(height), "detections": records}


def _require_int(obj: Mapping[str, Any], key: str, where: str, minimum: int | None = None) -> int:
    if key not in obj:
        raise _SchemaError(f"{where}missing key {key!r}")
    value = obj[key]
    # bool is an Integral; a JSON true where a number belongs is a schema error.
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise _SchemaError(f"{where}{key!r} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise _SchemaError(f"{where}{key!r} must be >= {minimum}, got {value}")
    return int(value)


def _require_finite(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise _SchemaError(f"{what} must be a finite number, got {value!r}")
    return float(value)


def _parse_mask(value: Any, where: str, height: int, width: int) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise _SchemaError(f"{where}'mask' must be an object or null")
    size = value.get("size")
    if (
        not isinstance(size, (list, tuple))
        or len(size) != 2
        or any(isinstance(v, bool) or not isinstance(v, numbers.Integral) for v in size)
    ):
        raise _SchemaError(f"{where}mask 'size' must be [h, w], got {size!r}")
    if [int(size[0]), int(size[1])] != [height, width]:
        raise _SchemaError(f"{where}mask size {list(size)} differs from frame size [{height}, {width}]")
    counts = value.get("counts")
    if not isinstance(counts, str):
        raise _SchemaError(f"{where}mask 'counts' must be a string (compressed RLE)")
    covered = rle_length(counts)
    if covered is None:
        raise _SchemaError(f"{where}mask 'counts' is not a compressed RLE")
    if covered != height * width:
        raise _SchemaError(f"{where}mask 'counts' covers {covered} pixels, its size [{height}, {width}] has {height * width}")
    return {"size": [height, width], "counts": counts}


# Compressed RLE text (pycocotools' format): each run length is a little-endian series
# of 5-bit groups, one character each (chr(48 + group), bit 0x20 set while more groups
# follow; the last group's bit 0x10 is the sign), and from the third run on each is
# stored as its difference from the run two before.
_RLE_FIRST, _RLE_LAST = 48, 48 + 63


def rle_length(counts: str) -> int | None:
    """How many pixels compressed RLE ``counts`` covers, or None when it is not valid
    RLE text: a character outside the alphabet, a run cut off in mid-value (on which
    pycocotools reads past the end of the text and never returns) or a negative run.

    Checking ``rle_length(counts) == h * w`` before decoding is what keeps a corrupt
    mask from being scored or hanging the decoder.
    """
    runs: list[int] = []
    value = shift = 0
    for char in counts:
        group = ord(char) - _RLE_FIRST
        if not 0 <= group <= _RLE_LAST - _RLE_FIRST:
            return None
        value |= (group & 0x1F) << shift
        shift += 5
        if group & 0x20:
            continue
        if group & 0x10:
            value -= 1 << shift
        if len(runs) > 2:
            value += runs[-2]
        if value < 0:
            return None
        runs.append(value)
        value = shift = 0
    if shift:
        return None
    return sum(runs)


def _parse_polygon(value: Any, where: str) -> tuple[tuple[float, float], ...] | None:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or any(not isinstance(p, (list, tuple)) or len(p) != 2 for p in value):
        raise _SchemaError(f"{where}'polygon' must be a list of [x, y] points")
    return tuple((_require_finite(x, f"{where}polygon x"), _require_finite(y, f"{where}polygon y")) for x, y in value)


def _parse_detection(obj: Any, index: int, height: int, width: int) -> DetectionRecord:
    where = f"detections[{index}]: "
    if not isinstance(obj, Mapping):
        raise _SchemaError(f"{where}must be an object")
    class_name = obj.get("class_name")
    if not isinstance(class_name, str):
        raise _SchemaError(f"{where}'class_name' must be a string, got {class_name!r}")
    xyxy = obj.get("xyxy")
    if not isinstance(xyxy, (list, tuple)) or len(xyxy) != 4:
        raise _SchemaError(f"{where}'xyxy' must be a list of 4 numbers, got {xyxy!r}")
    x1, y1, x2, y2 = (_require_finite(v, f"{where}'xyxy' entry") for v in xyxy)
    if x2 < x1 or y2 < y1:
        raise _SchemaError(f"{where}'xyxy' must have x1 <= x2 and y1 <= y2, got {list(xyxy)!r}")
    confidence = _require_finite(obj.get("confidence"), f"{where}'confidence'")
    if not 0.0 <= confidence <= 1.0:
        raise _SchemaError(f"{where}'confidence' must be within [0, 1], got {confidence!r}")
    return DetectionRecord(
        class_id=_require_int(obj, "class_id", where, minimum=0),
        class_name=class_name,
        confidence=confidence,
        xyxy=(x1, y1, x2, y2),
        mask=_parse_mask(obj.get("mask"), where, height, width),
        polygon=_parse_polygon(obj.get("polygon"), where),
    )


def parse_frame(obj: Any) -> FrameRecord:
    """Validate one decoded JSON line against the schema.

    Unknown keys are ignored so that newer writers stay readable.

    Raises:
        ValueError: the object does not follow the schema.
    """
    if not isinstance(obj, Mapping):
        raise _SchemaError(f"a frame must be a JSON object, got {type(obj).__name__}")
    frame_id = _require_int(obj, "frame_id", "", minimum=0)
    width = _require_int(obj, "width", "", minimum=0)
    height = _require_int(obj, "height", "", minimum=0)
    detections = obj.get("detections")
    if not isinstance(detections, (list, tuple)):
        raise _SchemaError("'detections' must be a list")
    return FrameRecord(
        frame_id=frame_id,
        width=width,
        height=height,
        detections=tuple(_parse_detection(d, i, height, width) for i, d in enumerate(detections)),
    )


def _distribution_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for dist in _VERSIONED_DISTRIBUTIONS:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    return versions


def _device_info() -> dict[str, Any]:
    # Only describe torch if the caller already imported it: importing torch
    # here would cost seconds and could initialise CUDA in a process that
    # does not use it.
    torch = sys.modules.get("torch")
    if torch is None:
        return {}
    info: dict[str, Any] = {"torch_cuda": getattr(torch.version, "cuda", None)}
    if torch.cuda.is_available():
        index = torch.cuda.current_device()
        info["cuda_device"] = torch.cuda.get_device_name(index)
        info["cuda_capability"] = list(torch.cuda.get_device_capability(index))
    return info


def build_metadata(
    model: Mapping[str, Any] | None = None,
    source: str | Mapping[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Sidecar content describing how a dump was produced.

    Args:
        model: e.g. ``{"id": ..., "random_weights": bool, "preprocessing": ...}``;
            the report warns when ``random_weights`` is ``True``.
        source: the video / image folder the frames came from.
        **extra: further JSON-serialisable fields, stored at the top level.

    Returns:
        A JSON-ready dict with ``format``, ``format_version``, ``created_utc``,
        ``versions``, ``platform``, ``device``, ``env``, ``model``, ``source``
        and the extras. ``complete``/``frames`` are filled in by :class:`DumpWriter`.
    """
    env = {k: v for k, v in sorted(os.environ.items()) if k.startswith(_RECORDED_ENV_PREFIXES)}
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": _distribution_versions(),
        "platform": {"system": platform.system(), "machine": platform.machine(), "release": platform.release()},
        "device": _device_info(),
        "env": env,
        "model": dict(model) if model is not None else None,
        "source": dict(source) if isinstance(source, Mapping) else source,
        **extra,
    }


def _write_json_atomically(path: Path, obj: Any) -> None:
    # Replace rather than rewrite in place so a reader never sees half a sidecar.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_sidecar(dump_path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The sidecar object of a dump, or ``None`` when there is none.

    Raises:
        DumpFormatError: the sidecar is not a JSON object.
    """
    path = sidecar_path(dump_path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DumpFormatError(path, exc.lineno, f"invalid JSON in sidecar: {exc.msg}") from None
    if not isinstance(meta, dict):
        raise DumpFormatError(path, None, "sidecar must be a JSON object")
    return meta


class DumpWriter:
    """Write a dump one frame per call, flushing every line.

    Use as a context manager::

        with DumpWriter("A.jsonl", build_metadata(model=..., source=...)) as w:
            for frame_id, frame in enumerate(frames):
                w.write(frame_record(frame_id, model(frame), width, height))

    The sidecar is written when the writer opens (``complete: false``) and
    updated on close with ``complete`` (false if the block raised) and the
    number of ``frames`` written, so a dump cut at a line boundary is still
    recognisable as incomplete.
    """

    def __init__(self, path: str | os.PathLike[str], meta: Mapping[str, Any] | None = None) -> None:
        """Open ``path`` for writing (truncating it) and write its sidecar.

        Args:
            path: the JSONL file.
            meta: sidecar content; defaults to :func:`build_metadata` with no model or source.
        """
        self.path = Path(path)
        self._meta = dict(meta) if meta is not None else build_metadata()
        self._meta.update(complete=False, frames=0)
        self.frames_written = 0
        _write_json_atomically(sidecar_path(self.path), self._meta)
        self._file: IO[str] | None = self.path.open("w", encoding="utf-8")

    def write(self, record: Mapping[str, Any]) -> None:
        """Validate ``record`` (see :func:`frame_record`) and append it as one flushed line.

        Raises:
            ValueError: the record does not follow the schema.
            RuntimeError: the writer is closed.
        """
        if self._file is None:
            raise RuntimeError(f"{self.path}: writer is closed")
        # Serialising the parsed record normalises numpy scalars to plain JSON numbers.
        line = json.dumps(parse_frame(record).to_dict(), separators=(",", ":"), allow_nan=False)
        self._file.write(line + "\n")
        self._file.flush()
        self.frames_written += 1

    def update_meta(self, **fields: Any) -> None:
        """Add fields to the sidecar (written when the dump is closed)."""
        self._meta.update(fields)

    def close(self, complete: bool = True) -> None:
        """Close the file and record ``complete`` and the frame count in the sidecar."""
        if self._file is None:
            return
        self._file.close()
        self._file = None
        self._meta.update(complete=complete, frames=self.frames_written)
        _write_json_atomically(sidecar_path(self.path), self._meta)

    def __enter__(self) -> DumpWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(complete=exc_type is None)


def read_dump(path: str | os.PathLike[str]) -> Dump:
    """Read a dump and its sidecar.

    A last line that is not newline-terminated and does not parse is the
    trace of a killed writer: it is dropped, logged as a warning and reported
    in :attr:`Dump.truncated_line`; all complete lines before it are kept.
    Blank lines are ignored.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        DumpFormatError: a corrupt line anywhere else, a schema violation,
            a duplicate ``frame_id`` or a corrupt sidecar.
    """
    path = Path(path)
    frames: dict[int, FrameRecord] = {}
    truncated_line = None
    with path.open("rb") as fh:
        for line_no, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                # Only the final line can lack its newline, so this is the tail of a killed writer.
                if not raw.endswith(b"\n"):
                    truncated_line = line_no
                    logger.warning("%s: last line %d is truncated and was dropped", path, line_no)
                    break
                raise DumpFormatError(path, line_no, f"invalid JSON: {exc}") from None
            try:
                frame = parse_frame(obj)
            except _SchemaError as exc:
                raise DumpFormatError(path, line_no, str(exc)) from None
            if frame.frame_id in frames:
                raise DumpFormatError(path, line_no, f"duplicate frame_id {frame.frame_id}")
            frames[frame.frame_id] = frame
    return Dump(frames=frames, path=path, truncated_line=truncated_line, meta=read_sidecar(path))
