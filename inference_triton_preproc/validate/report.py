"""Human-readable output of a comparison: terminal summary and report files.

:func:`print_summary` prints the verdict and tables with rich.
:func:`write_report` writes ``compare.json``, ``report.md`` (figures as PNG
files next to it) and a self-contained ``report.html`` (the same figures
embedded as base64 PNG). The terminal, Markdown and HTML outputs are rendered
from one list of blocks so they always say the same thing.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .pairing import Pairing, pair_dumps, save_result
from .dumps import DetectionRecord, Dump, FrameRecord, decode_mask, read_dump

logger = logging.getLogger(__name__)

FramesSource = Callable[[int], np.ndarray | None]
"""``frames_source(frame_id)`` -> the frame as ``(H, W, 3)`` BGR uint8, or ``None`` if unavailable."""

AGREE_EXACTLY = "the two arms agree exactly"
_ARMS = ("a", "b")
_CROP_TARGET_PX = 320  # longer side of one half of a crop, so small objects stay visible
_LIST_PREVIEW = 20
_TERMINAL_WORST_ROWS = 10


@dataclass(frozen=True)
class ReportFiles:
    """Paths written by :func:`write_report`."""

    json: Path
    markdown: Path
    html: Path
    figures: tuple[Path, ...]
    crops: tuple[Path, ...]


@dataclass(frozen=True)
class _Notice:
    level: str  # "ok", "fail" or "warning"
    text: str


@dataclass(frozen=True)
class _Heading:
    text: str


@dataclass(frozen=True)
class _Table:
    title: str
    header: tuple[str, ...]
    rows: list[tuple[str, ...]]


@dataclass(frozen=True)
class _Image:
    relpath: str  # relative to the report directory
    png: bytes
    caption: str


_Block = _Notice | _Heading | _Table | _Image


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _preview(ids: Sequence[int]) -> str:
    shown = ", ".join(str(i) for i in ids[:_LIST_PREVIEW])
    more = len(ids) - _LIST_PREVIEW
    return shown + (f", ... (+{more} more)" if more > 0 else "")


def _notices(result: Mapping[str, Any], random_weights: Mapping[str, bool]) -> list[_Notice]:
    """Verdict first, then everything that qualifies it."""
    gates = result["gates"]
    failed = [name for name, g in gates.items() if not g["passed"]]
    notices = [
        _Notice("fail", f"FAILED: outside thresholds: {', '.join(failed)}.")
        if failed
        else _Notice("ok", "PASSED: every gate is within its threshold.")
    ]
    if result["agree_exactly"]:
        notices.append(
            _Notice(
                "ok",
                f"Verdict: {AGREE_EXACTLY}: all {result['matched']} detections matched "
                "with max |Δconf| 0, identical boxes and identical masks.",
            )
        )
    for arm in _ARMS:
        if random_weights[arm]:
            notices.append(
                _Notice(
                    "warning",
                    f"Arm {arm.upper()} ran a model with RANDOM WEIGHTS (sidecar model.random_weights: true): "
                    "agreement between the arms still checks preprocessing parity, "
                    "but the detections themselves are meaningless.",
                )
            )
    vacuous = [name for name, g in gates.items() if g["vacuous"]]
    if vacuous:
        notices.append(_Notice("warning", f"Passed vacuously (nothing to measure): {', '.join(vacuous)}."))
    for arm in _ARMS:
        info = result["inputs"][arm]
        label = f"Dump {arm.upper()}" + (f" ({info['path']})" if info["path"] else "")
        if info["truncated_line"] is not None:
            notices.append(
                _Notice(
                    "warning",
                    f"{label}: truncated last line {info['truncated_line']} was dropped (writer killed?).",
                )
            )
        if info["complete"] is False:
            notices.append(
                _Notice("warning", f"{label}: the writer did not finish (sidecar complete: false); it may be a prefix.")
            )
        only = result[f"frames_only_in_{arm}"]
        if only:
            notices.append(
                _Notice(
                    "warning",
                    f"{len(only)} frame(s) only in dump {arm.upper()}, their detections count as unmatched: "
                    f"{_preview(only)}.",
                )
            )
    return notices


def _stat_cells(stats: Mapping[str, Any], keys: Sequence[str]) -> tuple[str, ...]:
    return tuple(_fmt(stats.get(k)) if k in stats else "" for k in keys)


def _result_tables(result: Mapping[str, Any], terminal: bool = False) -> list[_Table]:
    counts = _Table(
        "Counts",
        ("", "value"),
        [
            ("frames (either dump)", _fmt(result["frames"])),
            ("frames in both dumps", _fmt(result["frames_common"])),
            ("frames only in A", _fmt(len(result["frames_only_in_a"]))),
            ("frames only in B", _fmt(len(result["frames_only_in_b"]))),
            ("detections A", _fmt(result["detections_a"])),
            ("detections B", _fmt(result["detections_b"])),
            ("matched", _fmt(result["matched"])),
            ("unmatched A", _fmt(result["unmatched_a"])),
            ("unmatched B", _fmt(result["unmatched_b"])),
            ("pairs with identical boxes", _fmt(result["boxes_identical"])),
            ("pairs with identical masks", _fmt(result["masks_identical"])),
        ],
    )
    stat_keys = ("count", "mean", "min", "p5", "p50", "p95", "p99", "max")
    stats = _Table(
        "Agreement over matched pairs",
        ("metric", *stat_keys),
        [
            ("|Δconf|", *_stat_cells(result["conf_delta"], stat_keys)),
            ("box IoU", *_stat_cells(result["box_iou"], stat_keys)),
            ("mask IoU", *_stat_cells(result["mask_iou"], stat_keys)),
        ],
    )
    gates = _Table(
        "Gates",
        ("gate", "value", "threshold", "result"),
        [
            (
                name,
                _fmt(g["value"]),
                f"{g['comparison']} {_fmt(g['threshold'])}",
                ("PASS" if g["passed"] else "FAIL") + (" (vacuous)" if g["vacuous"] else ""),
            )
            for name, g in result["gates"].items()
        ],
    )
    per_class = _Table(
        "Per class",
        ("class_id", "name", "det A", "det B", "matched", "unmatched A", "unmatched B", "max |Δconf|", "mean box IoU"),
        [
            (
                class_id,
                c["name"],
                _fmt(c["detections_a"]),
                _fmt(c["detections_b"]),
                _fmt(c["matched"]),
                _fmt(c["unmatched_a"]),
                _fmt(c["unmatched_b"]),
                _fmt(c["conf_delta_max"]),
                _fmt(c["box_iou_mean"]),
            )
            for class_id, c in result["per_class"].items()
        ],
    )
    return [counts, stats, gates, per_class, _worst_table(result["worst"], terminal)]


def _worst_table(worst: Sequence[Mapping[str, Any]], terminal: bool) -> _Table:
    # A terminal is too narrow for the free-text note and a long list.
    entries = worst[:_TERMINAL_WORST_ROWS] if terminal else worst
    header = ("#", "frame", "kind", "class", "conf A", "conf B", "box IoU", "mask IoU", "|Δconf|")
    rows: list[tuple[str, ...]] = []
    for rank, w in enumerate(entries, start=1):
        row = (
            str(rank),
            str(w["frame_id"]),
            w["kind"],
            f"{w['class_id']} {w['class_name']}",
            _fmt(w["a"]["confidence"]) if w["a"] else "-",
            _fmt(w["b"]["confidence"]) if w["b"] else "-",
            _fmt(w["box_iou"]),
            _fmt(w["mask_iou"]),
            _fmt(w["conf_delta"]),
        )
        rows.append(row if terminal else (*row, _nearest_note(w)))
    title = f"Worst disagreements (top {len(entries)} of {len(worst)})" if terminal else "Worst disagreements"
    return _Table(title, header if terminal else (*header, "note"), rows)


def _nearest_note(entry: Mapping[str, Any]) -> str:
    near = entry.get("nearest")
    if not near:
        return ""
    return (
        f"nearest in {near['arm'].upper()}: class {near['class_id']} {near['class_name']}, "
        f"conf {_fmt(near['confidence'])}, box IoU {_fmt(near['box_iou'])}"
    )


_RICH_STYLES = {"ok": "bold green", "fail": "bold red", "warning": "yellow"}


def _cell_level(text: str) -> str | None:
    """Notice level used to colour a gate result cell."""
    return {"PASS": "ok", "PASS (vacuous)": "warning", "FAIL": "fail", "FAIL (vacuous)": "fail"}.get(text)


def print_summary(result: Mapping[str, Any], console: Console | None = None) -> None:
    """Print the verdict, warnings and tables of a :func:`~.compare.compare` result."""
    console = console or Console()
    random_weights = {arm: bool(result["inputs"][arm]["random_weights"]) for arm in _ARMS}
    for table in _result_tables(result, terminal=True):
        if not table.rows:
            continue
        rich_table = Table(title=table.title, title_justify="left")
        for name in table.header:
            rich_table.add_column(name)
        for row in table.rows:
            # Text() keeps class names such as "[x]" from being read as rich markup.
            rich_table.add_row(*(Text(cell, style=_RICH_STYLES.get(_cell_level(cell) or "", "")) for cell in row))
        console.print(rich_table)
    for notice in _notices(result, random_weights):
        console.print(Text(notice.text, style=_RICH_STYLES[notice.level]))


def _speed_cell(summary: Mapping[str, Any], runs: int) -> str:
    """Median, and the min-max spread over the runs when there are several."""
    if summary["median"] is None:
        return "n/a"
    text = f"{summary['median']:.4g}"
    return text + (f" ({summary['min']:.4g}-{summary['max']:.4g})" if runs > 1 else "")


def _speed_table(speed: Mapping[str, Any]) -> _Table:
    """A beside B per speed metric, with B/A (see :func:`~.speed.compare_speeds`)."""
    runs = speed["runs"]
    title = "Speed, A beside B" + (f" (median over {runs} alternating runs, min-max in brackets)" if runs > 1 else "")
    rows = [
        (
            f"{m['label']} ({m['unit']})",
            _speed_cell(m["a"], runs),
            _speed_cell(m["b"], runs),
            "n/a" if m["ratio"] is None else f"{m['ratio']:.3f}x",
        )
        for m in speed["metrics"]
        if m["a"]["median"] is not None or m["b"]["median"] is not None
    ]
    return _Table(title, ("metric", "A", "B", "B / A"), rows)


def _speed_notices(speed: Mapping[str, Any]) -> list[_Notice]:
    if speed.get("repeats_identical") is False:
        return [_Notice("warning", "A later run of an arm did not dump exactly what its first run did.")]
    return []


def print_speed(speed: Mapping[str, Any], console: Console | None = None) -> None:
    """Print the speed table of :func:`~.speed.compare_speeds` (A beside B, ratio)."""
    console = console or Console()
    table = _speed_table(speed)
    rich_table = Table(title=table.title, title_justify="left")
    for name in table.header:
        rich_table.add_column(name, justify="left" if name == "metric" else "right")
    for row in table.rows:
        rich_table.add_row(*(Text(cell) for cell in row))
    console.print(rich_table)
    for notice in _speed_notices(speed):
        console.print(Text(notice.text, style=_RICH_STYLES[notice.level]))


def _plot_latency(latency_ms: Mapping[str, Sequence[float]]) -> bytes:
    fig = Figure(figsize=(9, 3.5), layout="constrained")
    ax = fig.add_subplot()
    ax.set_title("latency per frame, frame to on_prediction (first run of each arm)")
    if any(latency_ms.get(arm) for arm in _ARMS):
        for arm, style in zip(_ARMS, ("-", "--")):
            values = latency_ms.get(arm) or []
            ax.plot(np.arange(len(values)), values, style, marker=".", label=arm.upper())
        ax.set_xlabel("frame (arrival order)")
        ax.set_ylabel("ms")
        ax.legend()
    else:
        _placeholder(ax, "no latency measured")
    return _png(fig)


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def _placeholder(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _plot_conf_delta(deltas: np.ndarray) -> bytes:
    fig = Figure(figsize=(6, 3.5), layout="constrained")
    ax = fig.add_subplot()
    ax.set_title("|Δconf| over matched pairs")
    if deltas.size:
        # A constant sample (typically all zeros) still needs a visible bin.
        ax.hist(deltas, bins=50, range=None if np.ptp(deltas) > 0 else (deltas[0] - 0.5e-3, deltas[0] + 0.5e-3))
        ax.set_yscale("log")
        ax.set_xlabel("|confidence A - confidence B|")
        ax.set_ylabel("pairs")
    else:
        _placeholder(ax, "no matched pairs")
    return _png(fig)


def _plot_ious(box: np.ndarray, mask: np.ndarray) -> bytes:
    fig = Figure(figsize=(9, 3.5), layout="constrained")
    for k, (values, name) in enumerate(((box, "box IoU"), (mask, "mask IoU")), start=1):
        ax = fig.add_subplot(1, 2, k)
        ax.set_title(f"{name} over matched pairs")
        if values.size:
            ax.hist(values, bins=50, range=(0.0, 1.0))
            ax.set_yscale("log")
            ax.set_xlabel(name)
            ax.set_ylabel("pairs")
        else:
            _placeholder(ax, "no pairs with this measure")
    return _png(fig)


def _plot_counts(counts: Mapping[int, tuple[int | None, int | None]]) -> bytes:
    fig = Figure(figsize=(9, 5), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    top.set_title("kept detections per frame")
    if counts:
        ids = np.array(sorted(counts))
        # NaN leaves a gap where a frame is missing from one dump.
        per_arm = np.array([[np.nan if c is None else c for c in counts[i]] for i in ids], dtype=np.float64)
        top.step(ids, per_arm[:, 0], where="mid", label="A")
        top.step(ids, per_arm[:, 1], where="mid", label="B", linestyle="--")
        top.set_ylabel("detections")
        top.yaxis.set_major_locator(MaxNLocator(integer=True))
        bottom.yaxis.set_major_locator(MaxNLocator(integer=True))
        top.legend()
        bottom.bar(ids, per_arm[:, 1] - per_arm[:, 0], width=1.0)
        bottom.set_ylabel("B - A")
        bottom.set_xlabel("frame_id")
    else:
        _placeholder(top, "no frames")
        _placeholder(bottom, "no frames")
    return _png(fig)


def _figures(pairing: Pairing) -> list[_Image]:
    deltas = np.array([p.conf_delta for p in pairing.pairs], dtype=np.float64)
    box = np.array([p.box_iou for p in pairing.pairs], dtype=np.float64)
    mask = np.array([p.mask_iou for p in pairing.pairs if p.mask_iou is not None], dtype=np.float64)
    return [
        _Image("figures/conf_delta.png", _plot_conf_delta(deltas), "Histogram of |Δconf| over matched pairs."),
        _Image("figures/iou.png", _plot_ious(box, mask), "Box and mask IoU of matched pairs."),
        _Image(
            "figures/counts.png",
            _plot_counts(pairing.counts),
            "Detections kept per frame in A and B, and their difference.",
        ),
    ]


def _crop_region(boxes: Sequence[Sequence[float]], width: int, height: int) -> tuple[int, int, int, int]:
    """Integer pixel window around the union of ``boxes`` with a margin, clipped to the frame."""
    xy = np.array(boxes, dtype=np.float64)
    x0, y0 = xy[:, 0].min(), xy[:, 1].min()
    x1, y1 = xy[:, 2].max(), xy[:, 3].max()
    pad = max(16.0, 0.25 * max(x1 - x0, y1 - y0))
    return (
        int(np.clip(np.floor(x0 - pad), 0, max(width - 1, 0))),
        int(np.clip(np.floor(y0 - pad), 0, max(height - 1, 0))),
        int(np.clip(np.ceil(x1 + pad), 1, width)),
        int(np.clip(np.ceil(y1 + pad), 1, height)),
    )


def _annotated_crop(
    image: np.ndarray,
    detections: Sequence[DetectionRecord],
    region: tuple[int, int, int, int],
    scale: float,
) -> np.ndarray:
    """Crop ``image`` to ``region``, rescale by ``scale`` and draw ``detections`` on it."""
    # supervision takes ~0.5 s to import; only reports with crops need it.
    import supervision as sv

    x0, y0, x1, y1 = region
    size = (max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale)))
    interpolation = cv2.INTER_NEAREST if scale >= 1 else cv2.INTER_AREA
    canvas = np.asarray(
        cv2.resize(np.ascontiguousarray(image[y0:y1, x0:x1]), size, interpolation=interpolation), dtype=np.uint8
    )
    visible = [d for d in detections if d.xyxy[0] < x1 and d.xyxy[2] > x0 and d.xyxy[1] < y1 and d.xyxy[3] > y0]
    if not visible:
        return canvas
    masks = None
    if any(d.mask is not None for d in visible):
        masks = np.stack(
            [
                cv2.resize(
                    decode_mask(d.mask)[y0:y1, x0:x1].astype(np.uint8), size, interpolation=cv2.INTER_NEAREST
                ).astype(bool)
                if d.mask is not None
                else np.zeros((size[1], size[0]), dtype=bool)
                for d in visible
            ]
        )
    offset = np.array([x0, y0, x0, y0], dtype=np.float64)
    dets = sv.Detections(
        xyxy=((np.array([d.xyxy for d in visible]) - offset) * scale).astype(np.float32),
        mask=masks,
        confidence=np.array([d.confidence for d in visible], dtype=np.float32),
        class_id=np.array([d.class_id for d in visible], dtype=int),
        data={"class_name": np.array([d.class_name for d in visible])},
    )
    labels = [f"{d.class_name} {d.confidence:.3f}" for d in visible]
    canvas = sv.MaskAnnotator(opacity=0.4).annotate(canvas, dets)
    canvas = sv.BoxAnnotator(thickness=1).annotate(canvas, dets)
    return sv.LabelAnnotator(text_scale=0.4, text_padding=3).annotate(canvas, dets, labels=labels)


def _shown_detections(frame: FrameRecord | None, confidence: float, referenced: set[int]) -> list[DetectionRecord]:
    """Kept detections plus the ones the entry refers to, even below the threshold."""
    if frame is None:
        return []
    return [d for k, d in enumerate(frame.detections) if d.confidence >= confidence or k in referenced]


def _side_by_side(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    header, gap = 18, 4
    height = max(left.shape[0], right.shape[0]) + header
    out = np.full((height, left.shape[1] + gap + right.shape[1], 3), 255, dtype=np.uint8)
    out[header : header + left.shape[0], : left.shape[1]] = left
    out[header : header + right.shape[0], left.shape[1] + gap :] = right
    for text, x in (("A", 2), ("B", left.shape[1] + gap + 2)):
        cv2.putText(out, text, (x, header - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return out


def _crop_caption(rank: int, entry: Mapping[str, Any]) -> str:
    parts = [f"#{rank} frame {entry['frame_id']}: {entry['kind']}, class {entry['class_id']} {entry['class_name']}"]
    for arm in _ARMS:
        if entry[arm]:
            parts.append(f"conf {arm.upper()} {_fmt(entry[arm]['confidence'])}")
    for key, name in (("box_iou", "box IoU"), ("mask_iou", "mask IoU"), ("conf_delta", "|Δconf|")):
        if entry[key] is not None:
            parts.append(f"{name} {_fmt(entry[key])}")
    note = _nearest_note(entry)
    return "; ".join(parts + ([note] if note else [])) + ". Left: A, right: B."


def _crops(
    result: Mapping[str, Any],
    dumps: Mapping[str, Dump],
    frames_source: FramesSource,
) -> list[_Image]:
    confidence = result["params"]["confidence"]
    cache: dict[int, np.ndarray | None] = {}
    images = []
    for rank, entry in enumerate(result["worst"], start=1):
        frame_id = entry["frame_id"]
        if frame_id not in cache:
            try:
                cache[frame_id] = frames_source(frame_id)
            except Exception as exc:
                logger.warning("frame %d unavailable for crops: %s", frame_id, exc)
                cache[frame_id] = None
        image = cache[frame_id]
        if image is None:
            continue
        frames = {arm: dumps[arm].frames.get(frame_id) for arm in _ARMS}
        width, height = next((f.width, f.height) for f in frames.values() if f is not None)
        if image.ndim != 3 or image.shape[:2] != (height, width) or image.dtype != np.uint8:
            logger.warning(
                "frame %d: source image %s %s does not match the dump's %dx%d BGR uint8",
                frame_id,
                image.shape,
                image.dtype,
                width,
                height,
            )
            continue
        nearest = entry["nearest"]
        refs = [("a", entry["a"]), ("b", entry["b"]), (nearest["arm"] if nearest else "a", nearest)]
        referenced: dict[str, set[int]] = {arm: set() for arm in _ARMS}
        for arm, ref in refs:
            if ref:
                referenced[arm].add(ref["index"])
        boxes = [ref["xyxy"] for _, ref in refs if ref]
        region = _crop_region(boxes, width, height)
        scale = float(np.clip(_CROP_TARGET_PX / max(region[2] - region[0], region[3] - region[1]), 0.25, 8.0))
        halves = [
            _annotated_crop(image, _shown_detections(frames[arm], confidence, referenced[arm]), region, scale)
            for arm in _ARMS
        ]
        ok, png = cv2.imencode(".png", _side_by_side(*halves))
        if not ok:
            raise RuntimeError(f"PNG encoding failed for the crop of frame {frame_id}")
        images.append(_Image(f"crops/worst_{rank:03d}_frame_{frame_id}.png", png.tobytes(), _crop_caption(rank, entry)))
    return images


def _provenance(dumps: Mapping[str, Dump]) -> _Table:
    metas = {arm: dumps[arm].meta or {} for arm in _ARMS}

    def cell(value: Any) -> str:
        if isinstance(value, (dict, list)):
            return json.dumps(value, sort_keys=True)
        return _fmt(value)

    rows = [
        ("path", *(str(dumps[arm].path) for arm in _ARMS)),
        ("frames", *(str(len(dumps[arm].frames)) for arm in _ARMS)),
    ]
    for key in ("model", "source", "created_utc", "complete", "device", "platform"):
        rows.append((key, *(cell(metas[arm].get(key)) for arm in _ARMS)))
    versions = sorted({k for arm in _ARMS for k in (metas[arm].get("versions") or {})})
    for name in versions:
        rows.append((f"version {name}", *(cell((metas[arm].get("versions") or {}).get(name)) for arm in _ARMS)))
    return _Table("Provenance (sidecars)", ("", "A", "B"), rows)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _render_markdown(title: str, blocks: Sequence[_Block]) -> str:
    lines = [f"# {title}", ""]
    for block in blocks:
        if isinstance(block, _Notice):
            text = f"> **Warning:** {block.text}" if block.level == "warning" else f"**{block.text}**"
            lines += [text, ""]
        elif isinstance(block, _Heading):
            lines += [f"## {block.text}", ""]
        elif isinstance(block, _Table):
            lines += [f"## {block.title}", ""]
            if not block.rows:
                lines += ["(none)", ""]
                continue
            lines.append("| " + " | ".join(_md_cell(h) for h in block.header) + " |")
            lines.append("|" + "---|" * len(block.header))
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
            lines.append("")
        else:
            lines += [f"![{_md_cell(block.caption)}]({block.relpath})", "", f"*{block.caption}*", ""]
    return "\n".join(lines)


_CSS = """
body { font-family: sans-serif; margin: 2em; max-width: 1200px; }
table { border-collapse: collapse; margin-bottom: 1.5em; }
th, td { border: 1px solid #ccc; padding: 2px 8px; text-align: left; font-size: 90%; }
th { background: #f0f0f0; }
.ok { color: #176b2c; font-weight: bold; }
.fail { color: #b00020; font-weight: bold; }
.warning { background: #fff4ce; border-left: 4px solid #e0a800; padding: 4px 8px; }
figure { margin: 1em 0; }
figcaption { font-size: 90%; color: #444; }
img { max-width: 100%; }
"""


def _render_html(title: str, blocks: Sequence[_Block]) -> str:
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
    ]
    for block in blocks:
        if isinstance(block, _Notice):
            parts.append(f'<p class="{block.level}">{esc(block.text)}</p>')
        elif isinstance(block, _Heading):
            parts.append(f"<h2>{esc(block.text)}</h2>")
        elif isinstance(block, _Table):
            parts.append(f"<h2>{esc(block.title)}</h2>")
            if not block.rows:
                parts.append("<p>(none)</p>")
                continue
            head = "".join(f"<th>{esc(h)}</th>" for h in block.header)
            body = "".join(
                "<tr>" + "".join(f'<td class="{_cell_level(c) or ""}">{esc(c)}</td>' for c in row) + "</tr>"
                for row in block.rows
            )
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        else:
            data = base64.b64encode(block.png).decode("ascii")
            parts.append(
                f'<figure><img src="data:image/png;base64,{data}" alt="{esc(block.caption)}">'
                f"<figcaption>{esc(block.caption)}</figcaption></figure>"
            )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_report(
    out_dir: str | os.PathLike[str],
    compare_result: Mapping[str, Any],
    dump_a_path: str | os.PathLike[str],
    dump_b_path: str | os.PathLike[str],
    frames_source: FramesSource | None = None,
    speed: Mapping[str, Any] | None = None,
) -> ReportFiles:
    """Write ``compare.json``, ``report.md`` (+ ``figures/``, ``crops/``) and ``report.html`` into ``out_dir``.

    Args:
        out_dir: created if missing; existing report files are overwritten.
        compare_result: a :func:`~.compare.compare` result for these two dumps.
        dump_a_path, dump_b_path: the dumps (and their sidecars) the result
            came from; re-read for the per-pair distributions, masks and provenance.
        frames_source: ``frame_id -> (H, W, 3) BGR uint8 frame or None``; when
            given, each entry of ``compare_result["worst"]`` gets a side-by-side
            crop (A left, B right). Frames it cannot provide (``None``, an
            exception, or a size other than the dump's) are skipped with a warning.
        speed: a :func:`~.speed.compare_speeds` result: adds the speed table, a plot
            of per-frame latency and ``speed`` in ``compare.json``.

    Returns:
        The paths written.

    Raises:
        ValueError: ``compare_result`` does not match the two dumps.
    """
    out = Path(out_dir)
    dumps = {"a": read_dump(dump_a_path), "b": read_dump(dump_b_path)}
    params = compare_result["params"]
    pairing = pair_dumps(dumps["a"], dumps["b"], params["confidence"], params["iou"])
    if len(pairing.pairs) != compare_result["matched"] or len(pairing.counts) != compare_result["frames"]:
        raise ValueError(f"compare_result was not computed from {dump_a_path} and {dump_b_path}")

    figures = _figures(pairing)
    crops = _crops(compare_result, dumps, frames_source) if frames_source is not None else []
    random_weights = {
        arm: dumps[arm].random_weights or bool(compare_result["inputs"][arm]["random_weights"]) for arm in _ARMS
    }
    blocks: list[_Block] = [*_notices(compare_result, random_weights)]
    blocks.append(
        _Table(
            "Parameters",
            ("", "value"),
            [("confidence threshold (>=)", _fmt(params["confidence"])), ("pairing box IoU (>=)", _fmt(params["iou"]))],
        )
    )
    blocks += _result_tables(compare_result)
    if speed is not None:
        latency = _Image(
            "figures/latency.png", _plot_latency(speed["latency_ms"]), "Latency per frame, frame to on_prediction."
        )
        figures.append(latency)
        blocks += [*_speed_notices(speed), _speed_table(speed)]
    blocks.append(_provenance(dumps))
    blocks += [_Heading("Figures"), *figures]
    blocks.append(_Heading("Worst disagreements, side by side"))
    if crops:
        blocks += crops
    elif not compare_result["worst"]:
        blocks.append(_Notice("ok", "No disagreements to show."))
    else:
        blocks.append(_Notice("warning", "No crops: the frames were not available."))

    for image in (*figures, *crops):
        path = out / image.relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(image.png)
    title = "Detection dump comparison: A vs B"
    files = ReportFiles(
        json=out / "compare.json",
        markdown=out / "report.md",
        html=out / "report.html",
        figures=tuple(out / f.relpath for f in figures),
        crops=tuple(out / c.relpath for c in crops),
    )
    save_result({**compare_result, **({} if speed is None else {"speed": dict(speed)})}, files.json)
    files.markdown.write_text(_render_markdown(title, blocks), encoding="utf-8")
    files.html.write_text(_render_html(title, blocks), encoding="utf-8")
    logger.info("report written to %s", out)
    return files
