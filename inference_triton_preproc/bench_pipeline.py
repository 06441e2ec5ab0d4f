"""Frames per second of the user's real pipeline, per switch configuration.

    python -m inference_triton_preproc.bench pipeline [--video PATH] [--model-path DIR | --model-id ID]
        [--frames N] [--configs off,preproc,postproc,both] [--repeat 3] [--level adapter|workflow]
        [--json FILE] [--out DIR]

Each configuration sets both switches of the package in a fresh process that runs
``inference``'s real ``InferencePipeline`` over the video (the ``adapter`` or
``workflow`` level of ``validate video``, see :mod:`.validate.arm`):

* ``off``: ``RFDETR_USE_TRITON_PREPROC=0 RFDETR_TRITON_FULLPOSTPROC=0`` (stock);
* ``preproc``: the preprocessing kernel only; ``postproc``: the post-processing only;
* ``both``: both switches on;
* ``both+freeze``: both switches and ``RFDETR_TRITON_GC_FREEZE=1`` (asked for by name).

Configurations run one after the other and alternate, ``--repeat`` times (off,
preproc, ..., off, preproc, ...), so that a host whose speed drifts shows it as
spread. Per configuration the JSON and the table give, over the runs: pipeline fps
after the warm-up frames (median, min, max), per-frame latency (frame taken by the
pipeline's inference step until ``on_prediction`` receives it; median of the runs'
medians and of their p99), host CPU per frame (every thread of the arm process, less
its own dumping), the time per frame Python's cyclic garbage collector ran (and its
full collections in the JSON), the median per call of the model's ``pre_process``,
``forward``, ``post_process`` and the rest of ``adapter.infer`` (response building), and
``model.forward`` alone on a preprocessed frame of the clip, timed in the same
process after the pipeline finished: the floor no pipeline around this model can
beat. Every configuration's detections of its first run are also compared with
``off``'s (``agrees_with_off``: boxes, masks, confidences and polygons identical).
``on_prediction`` only keeps what it receives while the pipeline runs; the
conversion and dumping for that comparison happen after the pipeline has stopped,
so that they neither take CPU and GIL time from the pipeline nor slow its fps.

On the CPU the Triton kernels run under ``TRITON_INTERPRET=1`` (a tiny clip and a
few frames keep such a run short, which is how CI exercises it).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import platform
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .validate.arm import (
    PLUGIN_FLAG,
    ArmProgress,
    ArmRequest,
    ArmResult,
    ValidateError,
    arm_env,
    cuda_available,
    host_env,
    resolve_model,
    run_arm,
)
from .validate.speed import summarise_runs

POSTPROC_FLAG = "RFDETR_TRITON_FULLPOSTPROC"
GC_FREEZE_FLAG = "RFDETR_TRITON_GC_FREEZE"
#: Configuration name -> the switches.
CONFIGS: dict[str, dict[str, str]] = {
    "off": {PLUGIN_FLAG: "0", POSTPROC_FLAG: "0"},
    "preproc": {PLUGIN_FLAG: "1", POSTPROC_FLAG: "0"},
    "postproc": {PLUGIN_FLAG: "0", POSTPROC_FLAG: "1"},
    "both": {PLUGIN_FLAG: "1", POSTPROC_FLAG: "1"},
    "both+freeze": {PLUGIN_FLAG: "1", POSTPROC_FLAG: "1", GC_FREEZE_FLAG: "1"},
}
#: What ``--configs`` runs when not given (``both+freeze`` is asked for by name).
DEFAULT_CONFIGS = ("off", "preproc", "postproc", "both")
PIPELINE_LEVELS = ("adapter", "workflow")
SCHEMA = 1
_VERSIONED = ("inference-triton-preproc", "inference", "inference-models", "roboflow-workflows", "supervision", "torch", "triton")
#: Table columns: (header, dotted key in a configuration's summary, format).
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("fps", "fps", "{:.3g}"),
    ("latency median ms", "latency_ms_median", "{:.4g}"),
    ("latency p99 ms", "latency_ms_p99", "{:.4g}"),
    ("host CPU ms/frame", "cpu_ms_per_frame", "{:.4g}"),
    ("GC ms/frame", "gc_ms_per_frame", "{:.3g}"),
    ("pre_process ms", "stages.pre_process_ms", "{:.4g}"),
    ("forward ms", "stages.forward_ms", "{:.4g}"),
    ("post_process ms", "stages.post_process_ms", "{:.4g}"),
    ("response ms", "stages.response_ms", "{:.4g}"),
    ("forward alone ms", "floor.forward_ms_median", "{:.4g}"),
)


class BenchPipelineError(Exception):
    """Bad input or a failed configuration run; the message is one line (exit status 2)."""


def parse_configs(text: str) -> list[str]:
    """argparse type of ``--configs``: known names, comma-separated, each once."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if not names or unknown or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"expected distinct names among {','.join(CONFIGS)}, got {text!r}")
    return names


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m inference_triton_preproc.bench pipeline",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[2:]),
    )
    parser.add_argument("--video", help="video file (default: the sample clip shipped with the package)")
    model = parser.add_mutually_exclusive_group()
    model.add_argument("--model-path", type=Path, help="local model package (default: the embedded random-weight one)")
    model.add_argument("--model-id", help="Roboflow model id (with ROBOFLOW_API_KEY in the environment)")
    parser.add_argument("--frames", type=_positive, default=100, help="frames per run (default 100)")
    parser.add_argument("--warmup-frames", type=_positive, default=5, help="frames left out of fps, CPU and stage medians (default 5)")
    parser.add_argument(
        "--configs", type=parse_configs, default=list(DEFAULT_CONFIGS), help=f"among {','.join(CONFIGS)}; default {','.join(DEFAULT_CONFIGS)}"
    )
    parser.add_argument("--repeat", type=_positive, default=3, help="alternating rounds over the configurations (default 3)")
    parser.add_argument("--level", choices=PIPELINE_LEVELS, default="adapter", help="default adapter")
    parser.add_argument("--forward-iters", type=_positive, default=20, help="timed calls of model.forward alone per run (default 20)")
    parser.add_argument("--confidence", type=float, default=0.4, help="model confidence threshold (default 0.4)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON to this file")
    parser.add_argument("--out", type=Path, help="directory for the runs' dumps and logs (default: a temporary one)")
    parser.add_argument("--arm-timeout", type=float, default=None, help="kill a run after this many seconds")
    return parser


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def _device(cuda: bool) -> dict[str, Any]:
    if cuda:
        import torch

        return {"type": "cuda", "name": torch.cuda.get_device_name(), "interpreted": False}
    return {"type": "cpu", "name": platform.processor() or platform.machine(), "interpreted": True}


def summarise(results: Sequence[ArmResult]) -> dict[str, Any]:
    """One configuration over its runs: every metric's median, min, max and per-run values."""
    return summarise_runs([r.speed for r in results])


def _agrees(reference: ArmResult, other: ArmResult) -> bool | str:
    """Whether ``other``'s first run dumped exactly what ``off``'s did, or why they cannot be compared."""
    from .validate.compare import CompareInputError, compare
    from .validate.dumps import read_dump

    try:
        return bool(compare(read_dump(reference.request.dump), read_dump(other.request.dump))["agree_exactly"])
    except CompareInputError as exc:  # e.g. a switch that served no call: that is the finding
        return str(exc)


def run_configs(
    args: argparse.Namespace, video: str, model: str, out: Path, on_run: Callable[[dict[str, Any]], None] | None = None
) -> dict[str, Any]:
    """Run every configuration ``args.repeat`` times, alternating; returns the JSON report.

    ``on_run`` gets the report so far after each run (``"complete": False`` until the
    last), so a run that is killed part way still leaves the runs it finished.

    Raises:
        BenchPipelineError: a run failed (the report so far is in the exception's ``partial``).
    """
    from rich.console import Console

    cuda = cuda_available()
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "kind": "pipeline",
        "device": _device(cuda),
        "versions": _versions(),
        "config": {
            "video": video,
            "model": model,
            "level": args.level,
            "frames": args.frames,
            "warmup_frames": args.warmup_frames,
            "repeat": args.repeat,
            "forward_iters": args.forward_iters,
            "confidence": args.confidence,
            "configs": list(args.configs),
        },
        "configs": [],
        "complete": False,
    }
    results: dict[str, list[ArmResult]] = {name: [] for name in args.configs}
    entries = {name: {"name": name, "env": dict(CONFIGS[name]), "runs": []} for name in args.configs}
    report["configs"] = list(entries.values())
    with ArmProgress(Console(stderr=True)) as progress:
        for rep in range(1, args.repeat + 1):
            for name in args.configs:
                label = f"{name} run {rep}"
                request = ArmRequest(
                    name=f"{name}-{rep}",
                    label=label,
                    env=arm_env({**host_env(args.level, model), **CONFIGS[name]}, interpret=not cuda),
                    model=model,
                    dump=out / f"{name}-{rep}.jsonl",
                    log=out / f"{name}-{rep}.log",
                    confidence=args.confidence,
                    video=video,
                    max_frames=args.frames,
                    level=args.level,
                    warmup_frames=args.warmup_frames,
                    forward_floor_iters=args.forward_iters,
                    # The dumps only serve the agreement check: their conversion stays out of the timed run.
                    defer_dump=True,
                )
                result = run_arm(request, progress.callback(progress.add(label, args.frames)), args.arm_timeout)
                if not result.ok or result.frames == 0:
                    error = BenchPipelineError(result.failure_message() if not result.ok else f"{label} processed no frame; log: {request.log}")
                    error.partial = report  # type: ignore[attr-defined]
                    raise error
                results[name].append(result)
                entries[name]["runs"].append({**(result.speed or {}), "plugin_calls": result.preprocessing_calls})
                entries[name]["summary"] = summarise(results[name])
                if on_run is not None:
                    on_run(report)
    reference = results.get("off")
    for name in args.configs:
        entries[name]["agrees_with_off"] = None if reference is None else _agrees(reference[0], results[name][0])
    report["complete"] = True
    return report


def _cell(summary: dict[str, Any], key: str, fmt: str, spread: bool) -> str:
    entry = summary.get(key) or {}
    if entry.get("median") is None:
        return "-"
    text = fmt.format(entry["median"])
    if spread and entry["min"] is not None and entry["max"] != entry["min"]:
        text += f" ({fmt.format(entry['min'])}-{fmt.format(entry['max'])})"
    return text


def table_rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and one row per configuration: medians over the runs; fps with its min-max spread."""
    header = ["config", *(name for name, _, _ in COLUMNS), "same output as off"]
    rows = []
    for entry in report["configs"]:
        summary = entry.get("summary") or {}
        cells = [_cell(summary, key, fmt, key == "fps") for _, key, fmt in COLUMNS]
        agrees = entry.get("agrees_with_off")
        verdict = "not compared" if isinstance(agrees, str) else {None: "-", True: "yes", False: "NO"}[agrees]
        rows.append([entry["name"], *cells, verdict])
    return header, rows


def markdown_table(report: dict[str, Any]) -> str:
    """The README table of a report (also ``python benchmarks/table.py FILE``)."""
    config = report["config"]
    header, rows = table_rows(report)
    runs = config["repeat"]
    title = (
        f"{report['device']['name']}, {config['level']} level, {config['frames']} frames per run "
        f"({config['warmup_frames']} warm-up), {runs} alternating runs per configuration; medians over the runs, "
        "fps with min-max; inference-models "
        f"{report['versions'].get('inference-models')}, torch {report['versions'].get('torch')}"
    )
    lines = [title, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def print_table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:  # rich squeezes wide tables into 80 columns when the output is not a terminal
        print(markdown_table(report))
        return
    header, rows = table_rows(report)
    config = report["config"]
    table = Table(
        title=f"{report['device']['name']}: {config['level']} level, {config['frames']} frames x {config['repeat']} "
        "runs per configuration (medians; fps min-max)",
        title_justify="left",
    )
    for name in header:
        table.add_column(name, justify="left" if name == "config" else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)


def _write_json(path: Path, report: dict[str, Any]) -> None:
    # Through a temporary file, so a reader (or a kill) never sees half a report.
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    partial.replace(path)


def main(argv: Sequence[str] | None = None) -> int:
    """``bench pipeline``; returns 0, or 2 after one ``error:`` line (the JSON so far is still written)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    report: dict[str, Any] | None = None
    status = 0
    try:
        if args.video is None:
            from ._assets import sample_video_path

            video = str(sample_video_path())
        else:
            from .validate.cli import check_video_file

            check_video_file(args.video)
            video = args.video
        model = resolve_model(args.model_id, args.model_path)
        if args.out is None:
            out = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
        else:
            args.out.mkdir(parents=True, exist_ok=True)
            out = args.out
        report = run_configs(args, video, model, out, on_run=None if args.json is None else lambda so_far: _write_json(args.json, so_far))
    except BenchPipelineError as exc:
        report = getattr(exc, "partial", None)
        print(f"error: {exc}", file=sys.stderr)
        status = 2
    except (ValidateError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if status == 0:
        print_table(report)
        print(f"dumps and logs: {out}")
    if args.json is not None and report is not None:
        _write_json(args.json, report)
        print(f"wrote {args.json}" + (" (partial)" if status else ""))
    return status

