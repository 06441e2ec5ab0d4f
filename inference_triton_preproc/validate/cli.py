"""Command line of ``python -m inference_triton_preproc.validate``: argument parsing, dispatch, the video command.

Subcommands: ``video`` (the default when the first argument is an option or
there is none), ``compare``, ``coco`` and ``probe``. Every command returns 0
when the results are within the gates, 1 when a gate failed and 2 on bad input
or a failed arm, after printing one ``error:`` line on stderr.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.text import Text

from .arm import (
    LEVELS,
    LOCAL_PACKAGE_ENV,
    PLUGIN_FLAG,
    WORKFLOW_BLOCK,
    ArmRequest,
    ArmResult,
    ValidateError,
    arm_env,
    classify_source,
    create_out_dir,
    cuda_available,
    describe_plugin,
    host_env,
    parse_env_assignment,
    parse_source,
    resolve_model,
    run_arms,
)
from .compare import (
    DEFAULT_CONFIDENCE,
    DEFAULT_IOU,
    EXIT_GATE_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    CompareInputError,
    add_compare_arguments,
    bounded_float,
    compare,
    int_at_least,
    run_compare,
)
from .dumps import DumpFormatError, read_dump
from .speed import compare_speeds

logger = logging.getLogger(__name__)

PROG = "python -m inference_triton_preproc.validate"
SUBCOMMANDS = ("video", "compare", "coco", "probe")
#: Frames of the embedded sample clip processed when --video and --max-frames are both omitted
#: (both arms, each importing inference, take well under a minute on a 2-core CPU, the Triton kernels interpreted).
DEFAULT_SAMPLE_MAX_FRAMES = 4
#: The level ``video`` runs at when --level is not given.
DEFAULT_LEVEL = "adapter"
#: Frames the probe subcommand reads when --frames is not given.
DEFAULT_PROBE_FRAMES = 4

_TOP_DESCRIPTION = f"""\
Validate inference-triton-preproc against the stock preprocessing (flag off vs flag on).

  {PROG} [video] [--video PATH] [options]     the default command
  {PROG} compare A.jsonl B.jsonl [options]
  {PROG} coco --images DIR --annotations FILE [options]
  {PROG} probe [--video PATH] [--frames N] [options]

With no arguments, `video` runs on the sample clip shipped with the package with
the embedded random-weight RF-DETR Nano segmentation model, {DEFAULT_SAMPLE_MAX_FRAMES} frames.
Exit status: 0 within the gates, 1 a gate failed, 2 bad input or a failed arm.
Run `{PROG} COMMAND --help` for the options of a command."""

_ARM_ENV_HELP = """\
Each arm runs in a fresh Python process (the flags are read at import), with
these variables set on top of the current environment:
  DISABLE_VERSION_CHECK=True   always (importing inference would otherwise query GitHub)
  TRITON_INTERPRET=1           when torch sees no CUDA device, so that the Triton
                               kernels run on the CPU (slow, but exact)"""

_VIDEO_EPILOG = f"""\
{_ARM_ENV_HELP}
  arm A: {PLUGIN_FLAG}=0   the stock preprocessing
  arm B: {PLUGIN_FLAG}=1   the plugin (RFDETR_TRITON_PREPROC_MODE and
         RFDETR_TRITON_PREPROC_STRICT are inherited from the environment)
--a-env / --b-env NAME=VALUE add or override variables of one arm, e.g. to compare
inference-models' own Triton path (TRT models on CUDA only) with this plugin:
  --a-env INFERENCE_MODELS_RFDETR_TRITON_PREPROC_ENABLED=True
--api-key is passed to the arms as ROBOFLOW_API_KEY and never written to the outputs.

Levels (--level, default {DEFAULT_LEVEL}); video files: every frame, no drops:
  adapter    inference's InferencePipeline.init(model_id=...): the dump holds what
             on_prediction receives (class, confidence, polygon points) with the box
             and mask as sv.Detections.from_inference makes them from it
  workflow   InferencePipeline.init_with_workflow with one {WORKFLOW_BLOCK}
             step at its defaults (dense masks): the dump holds the sv.Detections
             on_prediction receives
  model      InferencePipeline.init_with_custom_logic calling the inference-models
             model like inference's adapter does: the model's own masks
With --model-path at the adapter and workflow levels the arms also get
{' '.join(f"{k}={v}" for k, v in LOCAL_PACKAGE_ENV.items())}
(inference loads local packages only then). Arms run one after the other (with
--repeat N: A, B, A, B, ...); a live source (stream, camera) therefore shows them
different frames.

Speed, per arm (sidecar "speed"): latency per frame from when the pipeline's
inference step takes it until on_prediction receives its result; pipeline fps and
host CPU per frame (every thread of the arm, less the arm's own dumping) after
the first frame; median time per call of the model's pre_process, forward,
post_process and the rest of the call around them (response building).

Written to --out: a.jsonl, b.jsonl (+ .meta.json sidecars: model, random_weights,
source, level, arm env, whether the plugin was active, its call counters, speed),
arm-a.log, arm-b.log (the arms' stderr: every library's messages go there), with
--repeat also a-2.jsonl, b-2.jsonl, ...; compare.json (with "speed"), report.md,
report.html, figures/ and crops/."""

_COCO_EPILOG = f"""\
{_ARM_ENV_HELP}
Variants (each in its own process):
  reference      {PLUGIN_FLAG}=0
  triton-pil     {PLUGIN_FLAG}=1 RFDETR_TRITON_PREPROC_MODE=pil
  triton-cv2     {PLUGIN_FLAG}=1 RFDETR_TRITON_PREPROC_MODE=cv2
  triton-torch   {PLUGIN_FLAG}=1 RFDETR_TRITON_PREPROC_MODE=torch
`reference` always runs (first); the others are compared with it. triton-cv2 and
triton-torch reproduce OpenCV's and PyTorch's resizes instead of the host's
Pillow one, so they may legitimately fall outside the gates.

Detections are matched to ground-truth categories by class NAME; detections of
classes missing from the annotations are dropped and counted. Every variant is
scored on all image ids of the annotations (images without detections included)
with pycocotools COCOeval, bbox and segm (segm only when every annotation has a
segmentation; annotations need `area`, `iscrowd` defaults to 0). --confidence is
the deployment threshold by default; lower it (e.g. 0.01) for a conventional mAP
(slower, larger dumps).

Written to --out: <variant>.jsonl (+ sidecar), <variant>.bbox.json and
<variant>.segm.json (COCO results), arm-<variant>.log, pairs/reference-vs-<variant>/
(comparison report) and coco.json (all metrics, deltas and comparisons).
Exit status: 0 when every variant agrees with the reference within the gates, 1 when
one does not, 2 on bad input or a failed variant."""

_PROBE_HELP = (
    "tensor parity of every kernel mode against every reference library "
    f"(inference_triton_preproc.probe; --frames defaults to {DEFAULT_PROBE_FRAMES} here; "
    "TRITON_INTERPRET=1 is set when there is no CUDA device)"
)


def _positive_float(text: str) -> float:
    value = bounded_float(0.0, None)(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Model, thresholds and output options shared by ``video`` and ``coco``."""
    unit = bounded_float(0.0, 1.0)
    model = parser.add_mutually_exclusive_group()
    model.add_argument("--model-id", help="Roboflow model id, loaded with inference_models.AutoModel")
    model.add_argument(
        "--model-path",
        type=Path,
        help="local model package directory (default: the embedded random-weight RF-DETR Nano "
        "segmentation package, built once and cached)",
    )
    parser.add_argument("--api-key", help="Roboflow API key for --model-id (default: $ROBOFLOW_API_KEY)")
    parser.add_argument(
        "--confidence",
        type=unit,
        default=DEFAULT_CONFIDENCE,
        help=f"model confidence threshold, also used when pairing detections (default {DEFAULT_CONFIDENCE})",
    )
    parser.add_argument(
        "--iou", type=unit, default=DEFAULT_IOU, help=f"minimum box IoU to pair two detections (default {DEFAULT_IOU})"
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="output directory (default: ./validate-out/<YYYYmmdd-HHMMSS>); existing files are overwritten",
    )
    parser.add_argument(
        "--arm-timeout",
        type=_positive_float,
        metavar="SECONDS",
        help="kill an arm that runs longer than this (default: no limit)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details to stderr")


def _add_video_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--video",
        help="video file, stream URL (rtsp://, http://, ...) or camera index (an integer); "
        "default: the sample clip shipped with the package",
    )
    parser.add_argument(
        "--max-frames",
        type=int_at_least(1),
        metavar="N",
        help=f"stop each arm's pipeline after N frames (default: {DEFAULT_SAMPLE_MAX_FRAMES} for the "
        "sample clip, every frame of a file; required for streams and cameras)",
    )
    parser.add_argument(
        "--level",
        choices=LEVELS,
        default=DEFAULT_LEVEL,
        help=f"what the arms run and dump: inference's adapter pipeline, a workflow, or the model "
        f"called directly (default {DEFAULT_LEVEL}; see below)",
    )
    parser.add_argument(
        "--repeat",
        type=int_at_least(1),
        default=1,
        metavar="N",
        help="run the arms N times, alternating A, B, A, B, ...; speed is reported as median and "
        "spread over the runs, parity on the first pair (default 1)",
    )
    for arm in ("a", "b"):
        parser.add_argument(
            f"--{arm}-env",
            type=parse_env_assignment,
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help=f"set a variable for arm {arm.upper()} only (repeatable)",
        )
    _add_run_arguments(parser)


def _add_coco_arguments(parser: argparse.ArgumentParser) -> None:
    from .coco import DEFAULT_VARIANTS, parse_variants

    parser.add_argument(
        "--images", type=Path, required=True, help="directory the annotations' file_name entries are in"
    )
    parser.add_argument(
        "--annotations", type=Path, required=True, help="COCO-format ground truth (instances JSON)"
    )
    parser.add_argument(
        "--variants",
        type=parse_variants,
        default=DEFAULT_VARIANTS,
        help=f"comma-separated preprocessing variants (default: {','.join(DEFAULT_VARIANTS)})",
    )
    _add_run_arguments(parser)


def build_parser() -> argparse.ArgumentParser:
    """The full parser with its subcommands (``probe`` only for its help: it is forwarded as is)."""
    parser = argparse.ArgumentParser(
        prog=PROG, description=_TOP_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    formatter = argparse.RawDescriptionHelpFormatter
    _add_video_arguments(
        commands.add_parser(
            "video",
            help="run the same InferencePipeline with the plugin off (arm A) and on (arm B), compare, report",
            description="Run the same InferencePipeline twice over a video, each arm in a fresh process: "
            f"arm A with {PLUGIN_FLAG}=0, arm B with {PLUGIN_FLAG}=1; compare their detections "
            "and write a report.",
            epilog=_VIDEO_EPILOG,
            formatter_class=formatter,
        )
    )
    add_compare_arguments(
        commands.add_parser(
            "compare",
            help="compare two detection dumps and gate on their agreement",
            description="Compare two detection dumps (JSONL) and gate on their agreement.",
        )
    )
    _add_coco_arguments(
        commands.add_parser(
            "coco",
            help="score each preprocessing variant on a COCO-format set and compare it with the reference",
            description="Run the model over a COCO-format image set once per preprocessing variant, score "
            "bbox and segm with pycocotools, show the deltas against the reference and compare every "
            "variant's detections with the reference's.",
            epilog=_COCO_EPILOG,
            formatter_class=formatter,
        )
    )
    commands.add_parser("probe", help=_PROBE_HELP, add_help=False)
    return parser


# --------------------------------------------------------------------------- #
# video
# --------------------------------------------------------------------------- #


class VideoFrameReader:
    """``frames_source`` for reports: frame ``N`` (0-based decode order) of a video file, via OpenCV.

    Reads forward from the last position and reopens the file to go back, so
    requests in increasing order cost one decode per frame.
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._capture: Any = None
        self._next = 0

    def __call__(self, frame_id: int) -> np.ndarray | None:
        import cv2

        if frame_id < 0:
            return None
        if self._capture is None or frame_id < self._next:
            self.close()
            self._capture = cv2.VideoCapture(self._path)
            self._next = 0
        while self._next <= frame_id:
            ok, frame = self._capture.read()
            if not ok:
                return None
            self._next += 1
        return frame

    def close(self) -> None:
        """Release the capture; the next call reopens the file."""
        if self._capture is not None:
            self._capture.release()
            self._capture = None


def check_video_file(path: str) -> int | None:
    """Check that OpenCV decodes at least one frame of ``path``.

    Returns:
        The frame count the container declares, or ``None`` when it declares none.

    Raises:
        ValidateError: missing, unreadable, or no frame decodes.
    """
    import cv2

    file = Path(path)
    if not file.exists():
        raise ValidateError(f"video {path} does not exist")
    if not file.is_file():
        raise ValidateError(f"video {path} is not a file")
    if not os.access(file, os.R_OK):
        raise ValidateError(f"video {path} is not readable (permission denied)")
    capture = cv2.VideoCapture(path)
    try:
        if not capture.isOpened():
            raise ValidateError(f"cannot open video {path}: OpenCV does not recognise it as a video")
        ok, _ = capture.read()
        if not ok:
            raise ValidateError(f"no frame could be decoded from video {path} (zero frames)")
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        capture.release()
    return count if count > 0 else None


def _describe_calls(calls: dict[str, int] | None) -> str:
    if not calls:
        return ""
    fallbacks = sum(n for reason, n in calls.items() if reason != "kernel")
    return f", kernel served {calls.get('kernel', 0)} calls, {fallbacks} fell back"


def _plugin_state(result: ArmResult) -> bool | None:
    return (result.model or {}).get("plugin_installed")


def _has_option(argv: Sequence[str], name: str) -> bool:
    return any(a == name or a.startswith(name + "=") for a in argv)


def _print_header(console: Console, source: str | int, kind: str, model: str, results: Sequence[ArmResult]) -> None:
    random_weights = any((r.model or {}).get("random_weights") for r in results)
    model_line = Text(f"Model: {model}")
    if random_weights:
        model_line.append("  [RANDOM WEIGHTS: detections are meaningless; only parity is checked]", style="bold yellow")
    console.print(f"Source: {source} ({kind})")
    console.print(model_line)
    for r in results:
        env = " ".join(f"{k}={v}" for k, v in sorted(r.request.env.items()))
        console.print(
            f"{r.request.label}: {r.frames} frames in {r.elapsed_s:.1f} s; "
            f"plugin {describe_plugin(_plugin_state(r))}{_describe_calls(r.preprocessing_calls)}; env {env}"
        )
        if _plugin_state(r) and r.preprocessing_calls is not None and not r.preprocessing_calls.get("kernel"):
            console.print(
                Text(
                    f"Warning: in {r.request.label} the plugin was installed but the kernel served no call "
                    f"(fallbacks: {r.preprocessing_calls or 'none recorded'}).",
                    style="yellow",
                )
            )
    states = {_plugin_state(r) for r in results}
    if len(states) == 1:
        console.print(
            Text(
                f"Warning: the plugin was {describe_plugin(states.pop())} in both arms, so they ran the same "
                "preprocessing code: their agreement says nothing about the Triton path.",
                style="yellow",
            )
        )
    if kind != "file":
        console.print(
            Text(
                "Warning: the arms read the live source one after the other and saw different frames; "
                "differences between them are expected.",
                style="yellow",
            )
        )


_LEVEL_WORDS = {
    "adapter": "InferencePipeline.init(model_id=...): what on_prediction receives",
    "workflow": f"InferencePipeline.init_with_workflow, {WORKFLOW_BLOCK}: what on_prediction receives",
    "model": "the inference-models model called from the pipeline: its own masks",
}


def video_requests(
    args: argparse.Namespace, source: str | int, model: str, out: Path, max_frames: int | None
) -> list[ArmRequest]:
    """The arms of ``video``: A then B, ``args.repeat`` times (runs after the first are named ``a-2``, ``b-2``, ...)."""
    interpret = not cuda_available()
    requests = []
    for run in range(1, args.repeat + 1):
        suffix = "" if run == 1 else f"-{run}"
        for arm, flag, overrides in (("a", "0", args.a_env), ("b", "1", args.b_env)):
            name = arm + suffix
            requests.append(
                ArmRequest(
                    name=name,
                    label=f"arm {arm.upper()}{'' if run == 1 else f' run {run}'} ({PLUGIN_FLAG}={flag})",
                    env=arm_env({**host_env(args.level, model), PLUGIN_FLAG: flag}, overrides, interpret=interpret),
                    model=model,
                    dump=out / f"{name}.jsonl",
                    log=out / f"arm-{name}.log",
                    confidence=args.confidence,
                    video=source,
                    max_frames=max_frames,
                    api_key=args.api_key,
                    level=args.level,
                )
            )
    return requests


def _repeats_identical(results: Sequence[ArmResult], first: tuple[Any, Any]) -> bool | None:
    """Whether every later run of each arm dumped exactly what its first run did (None with one run)."""
    if len(results) <= 2:
        return None
    return all(read_dump(r.request.dump).frames == first[k % 2].frames for k, r in enumerate(results[2:]))


def run_video(args: argparse.Namespace) -> int:
    """The ``video`` command on parsed arguments; returns the exit status (see module docstring).

    Raises:
        ValidateError: bad input or a failed arm (the caller prints it, exit 2).
    """
    started = time.monotonic()
    from .default_model import sample_video_path
    from .report import print_speed, print_summary, write_report

    if args.video is None:
        source: str | int = str(sample_video_path())
        max_frames = args.max_frames or DEFAULT_SAMPLE_MAX_FRAMES
    else:
        source = parse_source(args.video)
        max_frames = args.max_frames
    kind = classify_source(source)
    total = max_frames  # for the progress bars
    if kind == "file":
        declared = check_video_file(str(source))
        if declared is not None and (total is None or declared < total):
            total = declared
    elif max_frames is None:
        raise ValidateError(f"--max-frames is required for the live source {source!r}")
    model = resolve_model(args.model_id, args.model_path)
    out = create_out_dir(args.out)
    requests = video_requests(args, source, model, out, max_frames)
    results = run_arms(requests, total, args.arm_timeout, Console(stderr=True))
    for r in results:
        if r.frames == 0:
            raise ValidateError(f"{r.request.label} decoded no frame from {source}; log: {r.request.log}")

    first = results[:2]
    dump_a, dump_b = (read_dump(r.request.dump) for r in first)
    result = compare(dump_a, dump_b, args.confidence, args.iou)
    speed = compare_speeds([r.speed for r in results[0::2]], [r.speed for r in results[1::2]])
    speed["repeats_identical"] = _repeats_identical(results, (dump_a, dump_b))
    console = Console()
    console.print(f"Level: {args.level} ({_LEVEL_WORDS[args.level]})")
    _print_header(console, source, kind, model, first)
    print_summary(result, console)
    print_speed(speed, console)
    reader = VideoFrameReader(str(source)) if kind == "file" else None
    try:
        files = write_report(
            out, result, first[0].request.dump, first[1].request.dump, frames_source=reader, speed=speed
        )
    finally:
        if reader is not None:
            reader.close()
    elapsed = time.monotonic() - started
    console.print(f"Report: {files.html} (Markdown, JSON, dumps and arm logs in {out}); {elapsed:.0f} s in all")
    only = [(arm, result[f"frames_only_in_{arm}"]) for arm in ("a", "b") if result[f"frames_only_in_{arm}"]]
    if only:
        arm, ids = only[0]
        other = "B" if arm == "a" else "A"
        raise ValidateError(
            f"arm {other} is missing {len(ids)} frame(s) that arm {arm.upper()} has (first: {ids[0]}); "
            f"the arms did not see the same frames; report: {files.html}"
        )
    return EXIT_OK if result["passed"] else EXIT_GATE_FAILED


# --------------------------------------------------------------------------- #
# probe and dispatch
# --------------------------------------------------------------------------- #


def run_probe(argv: Sequence[str]) -> int:
    """Forward ``argv`` to ``inference_triton_preproc.probe``, defaulting ``--frames`` for videos."""
    argv = list(argv)
    if not _has_option(argv, "--frames") and not _has_option(argv, "--image"):
        argv += ["--frames", str(DEFAULT_PROBE_FRAMES)]
    # The interpreter must be chosen before the kernels are defined, i.e. before the import below.
    if not cuda_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")
    from inference_triton_preproc import probe

    try:
        return probe.main(argv)
    except SystemExit as exc:  # its argparse: --help or a usage error
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE


def _with_default_command(argv: Sequence[str]) -> list[str]:
    """Insert ``video`` when no subcommand is named (bare options or no arguments)."""
    argv = list(argv)
    if not argv or (argv[0] not in SUBCOMMANDS and argv[0] not in ("-h", "--help")):
        return ["video", *argv]
    return argv


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 within gates, 1 gate failed, 2 bad input or failed arm)."""
    argv = _with_default_command(sys.argv[1:] if argv is None else argv)
    if argv[0] == "probe":
        return run_probe(argv[1:])
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        # argparse exits 2 on usage errors and 0 after --help; return instead of exiting.
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if args.command == "compare":
        return run_compare(args)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "coco":
            from .coco import run_coco

            return run_coco(
                images=args.images,
                annotations=args.annotations,
                variants=args.variants,
                model_id=args.model_id,
                model_path=args.model_path,
                out=args.out,
                confidence=args.confidence,
                iou=args.iou,
                api_key=args.api_key,
                arm_timeout=args.arm_timeout,
            )
        return run_video(args)
    except (ValidateError, DumpFormatError, CompareInputError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("error: interrupted; partial results are kept in the output directory", file=sys.stderr)
        return 130
