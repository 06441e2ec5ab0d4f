"""One validation arm: a model over a video or a list of images, in a fresh process.

Preprocessing flags (``RFDETR_USE_TRITON_PREPROC``, inference-models'
``INFERENCE_MODELS_RFDETR_TRITON_PREPROC_ENABLED``, ...) are read when the
libraries are imported, so every arm runs in its own interpreter::

    python -m inference_triton_preproc.validate.arm --name a --model REF --dump a.jsonl
        --confidence 0.4 [--level model|adapter|workflow]
        (--video SOURCE [--max-frames N] | --images MANIFEST.json)

The child (:func:`main`) runs the model at one of three levels:

* ``model``: loads it with ``inference_models.AutoModel.from_pretrained`` and calls
  it the way ``inference``'s instance-segmentation adapter does (a list of BGR uint8
  frames, ``input_color_format="bgr"``, default pre-processing overrides, RLE masks
  when the model offers them) from ``InferencePipeline.init_with_custom_logic``; the
  dump holds the model's own masks. Image manifests are read with OpenCV and always
  run at this level.
* ``adapter``: ``inference``'s ``InferencePipeline.init(model_id=REF)``; the dump holds
  what ``on_prediction`` receives: per detection the class, confidence, the polygon
  points and, as ``sv.Detections.from_inference`` gives them, the box and the mask
  filled from the polygon.
* ``workflow``: ``InferencePipeline.init_with_workflow`` running a one-step workflow
  with ``roboflow_core/roboflow_instance_segmentation_model@v3`` at its defaults (dense
  masks, see :func:`workflow_specification`); the dump holds the ``sv.Detections``
  ``on_prediction`` receives.

Every frame becomes one line of a :mod:`.dumps` JSONL dump; the sidecar records
the model (with ``random_weights``), the source, the level, the environment the
parent set for the arm, whether ``inference_triton_preproc.plugin`` was active,
all its call counters (``preprocessing_calls``, pre- and post-processing) and the
arm's speed (:mod:`.speed`).

Protocol: the child's stdout carries only JSON lines (whatever libraries print
there is moved to stderr), one object per event::

    {"event": "start", "pid": int}
    {"event": "model", "model_class": str, "random_weights": bool, "plugin_installed": bool | null}
    {"event": "frame", "n": int, "frame_id": int, "detections": int}
    {"event": "done", "frames": int, "elapsed_s": float, "preprocessing_calls": {str: int} | null,
     "speed": {...}}
    {"event": "error", "message": str}          (then exit status 1)

The parent side (:func:`run_arm`) starts the child, sends its stderr to a log
file, feeds the events to a callback (progress bars) and returns an
:class:`ArmResult` with a one-line reason when the arm failed. The other
helpers here are shared by the ``video`` and ``coco`` commands.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import json
import logging
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from .dumps import DumpWriter, build_metadata, frame_record, sidecar_path
from .speed import SpeedRecorder, StageTimer, forward_floor

if TYPE_CHECKING:
    import numpy as np
    import supervision as sv
    from rich.console import Console
    from rich.progress import TaskID

logger = logging.getLogger(__name__)

ARM_MODULE = "inference_triton_preproc.validate.arm"
PLUGIN_MODULE = "inference_triton_preproc.plugin"
#: The plugin's switch; arm A of ``validate video`` sets it to 0, arm B to 1.
PLUGIN_FLAG = "RFDETR_USE_TRITON_PREPROC"
#: Environment variables whose values in the arm are copied into the sidecar.
_RECORDED_FLAG_PREFIXES = ("RFDETR_", "INFERENCE_MODELS_RFDETR_")
#: Where the arm's pipeline comes from (see the module docstring).
LEVELS = ("model", "adapter", "workflow")
#: What inference needs to load a local model package directory (``--model-path``) by its path.
LOCAL_PACKAGE_ENV = {
    "ALLOW_INFERENCE_MODELS_DIRECTLY_ACCESS_LOCAL_PACKAGES": "True",
    "ALLOW_INFERENCE_MODELS_UNTRUSTED_PACKAGES": "True",
}
WORKFLOW_BLOCK = "roboflow_core/roboflow_instance_segmentation_model@v3"
_RECORDED_FLAGS = ("TRITON_INTERPRET", "DISABLE_VERSION_CHECK", "DEFAULT_DEVICE", *LOCAL_PACKAGE_ENV)
_API_KEY_ENV = "ROBOFLOW_API_KEY"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MESSAGE_LIMIT = 400  # characters of a one-line error message

EXIT_ARM_FAILED = 1


class ValidateError(Exception):
    """Bad input or a failed arm; the message is one line meant for the user (exit status 2)."""


# --------------------------------------------------------------------------- #
# Shared parent-side helpers
# --------------------------------------------------------------------------- #


def parse_env_assignment(text: str) -> tuple[str, str]:
    """argparse type of ``--a-env NAME=VALUE``: ``(NAME, VALUE)``; VALUE may be empty."""
    name, sep, value = text.partition("=")
    if not sep or not _ENV_NAME.fullmatch(name):
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE with a valid variable name, got {text!r}")
    return name, value


def cuda_available() -> bool:
    """Whether torch sees a CUDA device (imports torch, about a second)."""
    import torch

    return bool(torch.cuda.is_available())


def arm_env(flags: Mapping[str, str], overrides: Sequence[tuple[str, str]] = (), *, interpret: bool) -> dict[str, str]:
    """Environment an arm runs with, on top of the parent's own.

    Args:
        flags: the arm's preprocessing switches, e.g. ``{"RFDETR_USE_TRITON_PREPROC": "0"}``.
        overrides: ``(name, value)`` pairs from the command line; they win over ``flags``.
        interpret: add ``TRITON_INTERPRET=1`` (no CUDA device: the Triton
            kernels then run on the CPU instead of failing to launch).

    Returns:
        The variables to set; ``DISABLE_VERSION_CHECK=True`` always, since
        importing ``inference`` would otherwise query GitHub for its latest release.
    """
    env = {"TRITON_INTERPRET": "1"} if interpret else {}
    env.update(flags)
    env.update(overrides)
    env["DISABLE_VERSION_CHECK"] = "True"
    return env


def resolve_model(model_id: str | None, model_path: Path | None) -> str:
    """Model reference handed to the arms: a local package directory or a model id.

    Without either, the embedded random-weight RF-DETR Nano segmentation
    package is built (about 10 s, once) and cached.

    Raises:
        ValidateError: ``model_path`` does not exist.
    """
    if model_id is not None:
        return model_id
    if model_path is not None:
        if not model_path.exists():
            raise ValidateError(f"model path {model_path} does not exist")
        return str(model_path.resolve())
    from .default_model import default_model_path

    return str(default_model_path("torch"))


def host_env(level: str, model: str) -> dict[str, str]:
    """Variables ``inference`` needs at ``level`` to load ``model`` offline (none for a model id).

    ``inference`` loads a local package directory only with
    :data:`LOCAL_PACKAGE_ENV` set; the ``model`` level loads it with inference-models
    directly and needs nothing.
    """
    return dict(LOCAL_PACKAGE_ENV) if level != "model" and Path(model).is_dir() else {}


def create_out_dir(out: Path | None) -> Path:
    """``out``, or a fresh ``./validate-out/<YYYYmmdd-HHMMSS>`` directory; created if missing.

    Raises:
        ValidateError: the directory cannot be created.
    """
    if out is None:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = Path("validate-out") / stamp
        suffix = 1
        while out.exists():
            suffix += 1
            out = Path("validate-out") / f"{stamp}-{suffix}"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValidateError(f"cannot create output directory {out}: {exc.strerror}") from None
    return out


def parse_source(text: str) -> str | int:
    """A video source from the command line: a camera index for a plain integer, else the text."""
    return int(text) if text.isdigit() else text


def classify_source(source: str | int) -> str:
    """``"camera"`` (an int index), ``"stream"`` (a URL such as ``rtsp://...``) or ``"file"`` (anything else)."""
    if isinstance(source, int):
        return "camera"
    return "stream" if "://" in source else "file"


def describe_plugin(state: bool | None) -> str:
    """Words for the plugin state an arm reports (``is_installed()``, or ``None`` when the module is missing)."""
    return {True: "active", False: "not active", None: "not installed"}[state]


def one_line(text: str, limit: int = _MESSAGE_LIMIT) -> str:
    """Collapse ``text`` to one line of at most ``limit`` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


# --------------------------------------------------------------------------- #
# Parent side: run one arm
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class ArmRequest:
    """What one arm runs.

    Attributes:
        name: short id used in file names and the sidecar ("a", "reference", ...).
        label: human description shown in progress bars and messages.
        env: variables set for the arm on top of the parent's environment;
            recorded in the sidecar (see :func:`arm_env`).
        model: model package directory or model id.
        dump: JSONL dump to write (its sidecar goes next to it).
        log: file receiving the arm's stderr.
        confidence: model confidence threshold in [0, 1].
        video: video file, stream URL or camera index (exclusive with ``images``).
        images: JSON manifest ``[{"id": int, "path": str}, ...]`` (exclusive with ``video``).
        max_frames: stop the pipeline after this many frames (video only).
        api_key: Roboflow API key, passed through the environment, never recorded.
        level: ``"model"``, ``"adapter"`` or ``"workflow"`` (see the module docstring; video only).
        warmup_frames: frames left out of the fps, host CPU and stage medians.
        forward_floor_iters: after the run, time ``model.forward`` alone this many
            times on a preprocessed frame of the source (0: not measured).
        defer_dump: keep what ``on_prediction`` receives and convert and dump it after
            the pipeline has stopped (video only), so the dumping's CPU and GIL time
            stays out of the pipeline's speed; memory grows with ``max_frames``.
    """

    name: str
    label: str
    env: Mapping[str, str]
    model: str
    dump: Path
    log: Path
    confidence: float
    video: str | int | None = None
    images: Path | None = None
    max_frames: int | None = None
    api_key: str | None = field(default=None, repr=False)
    level: str = "model"
    warmup_frames: int = 1
    forward_floor_iters: int = 0
    defer_dump: bool = False

    def argv(self) -> list[str]:
        """Arguments of the child process after ``-m ARM_MODULE``."""
        args = [
            "--name", self.name,
            "--label", self.label,
            "--model", self.model,
            "--dump", str(self.dump),
            "--confidence", repr(self.confidence),
            "--arm-env", json.dumps(dict(self.env), sort_keys=True),
        ]  # fmt: skip
        if self.video is not None:
            args += ["--video", str(self.video)]
        if self.images is not None:
            args += ["--images", str(self.images)]
        if self.max_frames is not None:
            args += ["--max-frames", str(self.max_frames)]
        args += ["--level", self.level, "--warmup-frames", str(self.warmup_frames)]
        if self.forward_floor_iters:
            args += ["--forward-floor", str(self.forward_floor_iters)]
        if self.defer_dump:
            args.append("--defer-dump")
        return args


@dataclass
class ArmResult:
    """Outcome of :func:`run_arm`.

    Attributes:
        request: what ran.
        returncode: exit status of the child (negative: killed by that signal).
        frames: frames the arm reported as dumped.
        elapsed_s: wall time of the child in seconds.
        error: one-line reason when the arm failed, else ``None``.
        model: the child's ``model`` event (model_class, random_weights, plugin_installed), if it got that far.
        preprocessing_calls: pre_process calls the kernel served (``"kernel"``) and fell
            back (one entry per reason), as the plugin counted them; None without the plugin.
        speed: the arm's speed record (see :mod:`.speed`), None if it did not finish.
    """

    request: ArmRequest
    returncode: int | None = None
    frames: int = 0
    elapsed_s: float = 0.0
    error: str | None = None
    model: dict[str, Any] | None = None
    preprocessing_calls: dict[str, int] | None = None
    speed: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        """The child exited 0 without reporting an error."""
        return self.returncode == 0 and self.error is None

    def failure_message(self) -> str:
        """One line naming the arm, the reason, the partial dump (if any) and the log."""
        dump = f"partial dump kept at {self.request.dump}" if self.request.dump.exists() else "no dump written"
        failure = f"{self.request.label} failed after {self.frames} frame(s): {self.error}"
        return f"{failure}; {dump}; log: {self.request.log}"


def child_command(request: ArmRequest) -> list[str]:
    """Command line of the child process for ``request``."""
    return [sys.executable, "-m", ARM_MODULE, *request.argv()]


def _last_log_line(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else None


def _exit_reason(returncode: int, log: Path) -> str:
    if returncode < 0:
        try:
            reason = f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            reason = f"killed by signal {-returncode}"
    else:
        reason = f"exited with status {returncode}"
    # A crash outside the arm's own error handling usually ends its stderr with the exception line.
    last = _last_log_line(log)
    return reason + (f" ({one_line(last, 200)})" if last else "")


def _read_events(stream: IO[str], sink: queue.Queue[dict[str, Any] | None]) -> None:
    for line in stream:
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            logger.debug("ignoring non-protocol line from arm: %r", line)
            continue
        if isinstance(event, dict) and isinstance(event.get("event"), str):
            sink.put(event)
    sink.put(None)


def run_arm(
    request: ArmRequest,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    timeout_s: float | None = None,
) -> ArmResult:
    """Run one arm in a fresh interpreter and wait for it.

    Args:
        request: the arm.
        on_event: called in this thread with every protocol event.
        timeout_s: kill the arm after this many seconds (``None``: no limit).

    Returns:
        The outcome; a failure is described in :attr:`ArmResult.error`, never raised.
        A dump left at ``request.dump`` by an earlier run is removed first, so
        whatever is there afterwards was written by this arm.
    """
    result = ArmResult(request)
    env = {**os.environ, **request.env}
    if request.api_key is not None:
        env[_API_KEY_ENV] = request.api_key
    request.dump.parent.mkdir(parents=True, exist_ok=True)
    for stale in (request.dump, sidecar_path(request.dump)):
        stale.unlink(missing_ok=True)
    events: queue.Queue[dict[str, Any] | None] = queue.Queue()
    started = time.monotonic()
    with request.log.open("w", encoding="utf-8") as log:
        proc = subprocess.Popen(
            child_command(request),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            env=env,
            text=True,
            encoding="utf-8",
            errors="replace",
        )
        assert proc.stdout is not None
        reader = threading.Thread(target=_read_events, args=(proc.stdout, events), daemon=True)
        reader.start()
        timed_out = False
        try:
            while True:
                try:
                    event = events.get(timeout=0.2)
                except queue.Empty:
                    if not timed_out and timeout_s is not None and time.monotonic() - started > timeout_s:
                        timed_out = True
                        proc.kill()
                        result.error = f"timed out after {timeout_s:g} s"
                    continue
                if event is None:
                    break
                kind = event["event"]
                if kind == "frame":
                    result.frames = int(event.get("n", result.frames))
                elif kind == "model":
                    result.model = event
                elif kind == "done":
                    result.preprocessing_calls = event.get("preprocessing_calls")
                    result.speed = event.get("speed")
                elif kind == "error" and result.error is None:
                    result.error = one_line(str(event.get("message", "unknown error")))
                if on_event is not None:
                    on_event(event)
            result.returncode = proc.wait()
        except BaseException:
            # Ctrl-C or a failing callback: never leave an orphaned arm behind.
            proc.kill()
            proc.wait()
            raise
        finally:
            reader.join(timeout=5)
    result.elapsed_s = time.monotonic() - started
    if result.returncode != 0 and result.error is None:
        result.error = _exit_reason(result.returncode, request.log)
    return result


class ArmProgress:
    """Rich progress bars, one per arm, driven by the arms' protocol events.

    Use as a context manager; :meth:`callback` returns the ``on_event`` for :func:`run_arm`.
    """

    def __init__(self, console: Console) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress: Progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            console=console,
        )

    def __enter__(self) -> ArmProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def add(self, label: str, total: int | None) -> TaskID:
        """A bar for one arm, waiting to start; ``total`` frames if known."""
        return self._progress.add_task(label, total=total, status="waiting", start=False)

    def callback(self, task: TaskID) -> Callable[[dict[str, Any]], None]:
        """``on_event`` for :func:`run_arm` that moves bar ``task``."""
        progress = self._progress

        def on_event(event: dict[str, Any]) -> None:
            kind = event["event"]
            if kind == "start":
                progress.start_task(task)
                progress.update(task, status="importing")
            elif kind == "model":
                progress.update(task, status=f"running (plugin {describe_plugin(event.get('plugin_installed'))})")
            elif kind == "frame":
                progress.update(task, completed=int(event["n"]))
            elif kind == "done":
                total = int(event["frames"])
                progress.update(task, total=total, completed=total, status=f"done in {event['elapsed_s']:.1f} s")
            elif kind == "error":
                progress.update(task, status="[red]failed")

        return on_event


def run_arms(
    requests: Sequence[ArmRequest], total: int | None, timeout_s: float | None, console: Console
) -> list[ArmResult]:
    """Run arms one after the other (each uses the whole CPU) with a progress bar each.

    Args:
        requests: the arms, in order.
        total: frames each arm is expected to process, if known.
        timeout_s: per-arm limit in seconds (``None``: no limit).
        console: where the bars are drawn.

    Returns:
        One result per arm, all successful.

    Raises:
        ValidateError: an arm failed; later arms are not started.
    """
    results: list[ArmResult] = []
    with ArmProgress(console) as progress:
        tasks = [progress.add(r.label, total) for r in requests]
        for request, task in zip(requests, tasks):
            results.append(run_arm(request, progress.callback(task), timeout_s))
            if not results[-1].ok:
                raise ValidateError(results[-1].failure_message())
    return results


# --------------------------------------------------------------------------- #
# Child side
# --------------------------------------------------------------------------- #


class ArmError(Exception):
    """A failure of the child that is reported as one line (bad model, unreadable source)."""


class _Protocol:
    """The child's event channel: a private copy of the original stdout."""

    def __init__(self) -> None:
        sys.stdout.flush()
        self._out = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
        # Libraries print progress and banners to stdout; send fd 1 to stderr (the log) so
        # only protocol lines reach the parent.
        os.dup2(2, 1)

    def emit(self, event: str, **fields: Any) -> None:
        self._out.write(json.dumps({"event": event, **fields}, allow_nan=False) + "\n")
        self._out.flush()


def _plugin_module() -> Any | None:
    """The plugin module, to ask for its state; ``None`` when it is not installed.

    The plugin activates itself (through its start-up hook, from the flags)
    when inference-models' adapters are imported; importing it here changes nothing.
    """
    try:
        return importlib.import_module(PLUGIN_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name != PLUGIN_MODULE:
            raise
        return None


def _preprocessing_calls() -> dict[str, int] | None:
    """How many calls each fused path served and why others fell back (None: no plugin)."""
    if PLUGIN_MODULE + ".fallbacks" not in sys.modules:
        return None if _plugin_module() is None else {}
    return sys.modules[PLUGIN_MODULE + ".fallbacks"].call_counts()


def _plugin_installed(plugin: Any | None) -> bool | None:
    is_installed = getattr(plugin, "is_installed", None)
    return bool(is_installed()) if callable(is_installed) else None


def _recorded_flags() -> dict[str, str]:
    return {
        k: v
        for k, v in sorted(os.environ.items())
        if k.startswith(_RECORDED_FLAG_PREFIXES) or k in _RECORDED_FLAGS
    }


def _load_model(reference: str) -> Any:
    from inference_models import AutoModel

    try:
        return AutoModel.from_pretrained(reference, api_key=os.environ.get(_API_KEY_ENV))
    except Exception as exc:
        logger.exception("loading %s failed", reference)
        raise ArmError(f"cannot load model {reference!r}: {type(exc).__name__}: {exc}") from exc


def _model_metadata(reference: str, model: Any | None, plugin_installed: bool | None) -> dict[str, Any]:
    """The sidecar's ``model``; ``class`` and ``class_names`` are None until the model is known."""
    from .default_model import random_weights_info

    label = random_weights_info(reference) if Path(reference).is_dir() else None
    return {
        "ref": reference,
        "class": type(model).__name__ if model is not None else None,
        "class_names": [str(name) for name in model.class_names] if model is not None else None,
        "random_weights": bool(label and label.get("random_weights") is True),
        "random_weights_build_key": label.get("build_key") if label else None,
        "preprocessing": {"plugin_installed": plugin_installed, "flags": _recorded_flags()},
    }


def workflow_specification(model: str, confidence: float) -> dict[str, Any]:
    """A one-step workflow: :data:`WORKFLOW_BLOCK` on the input image, its ``predictions`` as output.

    Every option of the block keeps its default (dense masks included) except
    ``confidence``, which the arms of one comparison share.
    """
    return {
        "version": "1.0",
        "inputs": [{"type": "WorkflowImage", "name": "image"}],
        "steps": [
            {
                "type": WORKFLOW_BLOCK,
                "name": "model",
                "images": "$inputs.image",
                "model_id": model,
                "confidence": confidence,
            }
        ],
        "outputs": [{"type": "JsonField", "name": "predictions", "selector": "$steps.model.predictions"}],
    }


class _Detector:
    """Calls the model the way ``inference``'s instance-segmentation adapter does."""

    def __init__(self, model: Any, confidence: float) -> None:
        from inference_models import PreProcessingOverrides

        self._model = model
        self._class_names = [str(name) for name in model.class_names]
        self._kwargs: dict[str, Any] = {
            "input_color_format": "bgr",
            "confidence": confidence,
            "pre_processing_overrides": PreProcessingOverrides(),
            "masks_resolution_factor": 1.0,
        }
        if "rle" in getattr(model, "supported_mask_formats", ()):
            self._kwargs["mask_format"] = "rle"

    def __call__(self, images: list[np.ndarray]) -> list[sv.Detections]:
        """Detections per BGR uint8 image, with ``data["class_name"]`` and full-frame bool masks."""
        import numpy as np

        detections = []
        for prediction in self._model(images, **self._kwargs):
            dets = prediction.to_supervision()
            dets.data["class_name"] = np.array(
                [self._class_names[int(c)] for c in dets.class_id], dtype=object
            )
            detections.append(dets)
        return detections


Converted = tuple["sv.Detections", "list[list[tuple[float, float]]] | None"]


def _from_model(prediction: Any) -> Converted:
    return prediction, None


def _from_adapter(prediction: Mapping[str, Any]) -> Converted:
    """The adapter's response dict: supervision's boxes and filled masks, and the polygons as sent."""
    import supervision as sv

    polygons = [[(float(p["x"]), float(p["y"])) for p in d.get("points") or ()] for d in prediction["predictions"]]
    return sv.Detections.from_inference(prediction), polygons


def _from_workflow(prediction: Mapping[str, Any]) -> Converted:
    return prediction["predictions"], None


_CONVERTERS: dict[str, Callable[[Any], Converted]] = {
    "model": _from_model,
    "adapter": _from_adapter,
    "workflow": _from_workflow,
}


class _Sink:
    """``on_prediction`` of the pipeline at every level: time, convert, dump, stop after ``max_frames``.

    The pipeline logs and swallows exceptions raised here, so the first one is kept
    in :attr:`error` and the pipeline is stopped instead.
    """

    def __init__(
        self,
        level: str,
        writer: DumpWriter,
        protocol: _Protocol,
        max_frames: int | None,
        speed: SpeedRecorder,
        on_first: Callable[[], None],
        defer: bool = False,
    ) -> None:
        self.convert = _CONVERTERS[level]
        # (frame_id, prediction, width, height) kept for :meth:`drain` when dumping is deferred.
        self.pending: list[tuple[int, Any, int, int]] | None = [] if defer else None
        self.writer = writer
        self.protocol = protocol
        self.max_frames = max_frames
        self.speed = speed
        self.on_first = on_first
        self.pipeline: Any = None  # set once the pipeline exists; it needs the sink first
        self.frames = 0
        self.first_image: np.ndarray | None = None  # for the forward floor
        self.error: BaseException | None = None

    def finished(self) -> bool:
        return self.error is not None or (self.max_frames is not None and self.frames >= self.max_frames)

    def __call__(self, prediction: Any, video_frame: Any) -> None:
        if self.finished() or prediction is None or video_frame is None:
            return
        self.speed.arrived(video_frame.frame_id)
        cpu_started = time.thread_time()
        try:
            if self.frames == 0:
                self.first_image = video_frame.image
                self.on_first()
            height, width = video_frame.image.shape[:2]
            self.frames += 1
            # The pipeline numbers frames from 1; dumps and OpenCV count from 0.
            if self.pending is not None:
                self.pending.append((video_frame.frame_id - 1, prediction, width, height))
                detections = prediction["predictions"] if isinstance(prediction, Mapping) else prediction
                self.protocol.emit("frame", n=self.frames, frame_id=video_frame.frame_id - 1, detections=len(detections))
            else:
                detections = self._dump(video_frame.frame_id - 1, prediction, width, height)
                self.protocol.emit("frame", n=self.frames, frame_id=video_frame.frame_id - 1, detections=detections)
        except Exception as exc:  # re-raised after join(); the pipeline would only log it
            self.error = exc
        self.speed.sink_cpu(time.thread_time() - cpu_started)
        if self.finished():
            self.pipeline.terminate()

    def _dump(self, frame_id: int, prediction: Any, width: int, height: int) -> int:
        """Write one frame's record; returns its number of detections."""
        dets, polygons = self.convert(prediction)
        self.writer.write(frame_record(frame_id, dets, width, height, polygons=polygons))
        return len(dets)

    def drain(self) -> None:
        """Convert and dump the predictions kept while dumping was deferred (a no-op otherwise)."""
        pending, self.pending = self.pending or [], None
        for frame_id, prediction, width, height in pending:
            self._dump(frame_id, prediction, width, height)


class _TimedInferenceStep:
    """The pipeline's ``on_video_frame``, noting when each frame is taken; skips frames past ``max_frames``.

    Attributes the pipeline looks up on its handler (``flush``, ``close``) are the handler's own.
    """

    def __init__(self, handler: Callable[[list[Any]], Any], speed: SpeedRecorder, max_frames: int | None) -> None:
        self._handler = handler
        self._speed = speed
        self._max_frames = max_frames
        self._taken = 0

    def __call__(self, video_frames: list[Any]) -> Any:
        if self._max_frames is not None and self._taken >= self._max_frames:
            return [None] * len(video_frames)  # the sink has what it needs and stops the pipeline
        self._taken += len(video_frames)
        self._speed.taken([f.frame_id for f in video_frames])
        return self._handler(video_frames)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handler, name)


def _instrument_adapter(stages: StageTimer) -> None:
    """Time ``adapter.infer`` of inference's instance-segmentation adapter and its model's stages."""
    try:
        from inference.core.models.inference_models_adapters import InferenceModelsInstanceSegmentationAdapter
    except ImportError as exc:  # the stage breakdown is left out, the run is not affected
        logger.warning("no stage breakdown: %s", exc)
        return
    infer = InferenceModelsInstanceSegmentationAdapter.infer

    def timed_infer(self: Any, *args: Any, **kwargs: Any) -> Any:
        stages.attach(self._model)
        return timed(self, *args, **kwargs)

    timed = stages.outer(infer)
    InferenceModelsInstanceSegmentationAdapter.infer = timed_infer  # type: ignore[method-assign]


def _build_pipeline(args: argparse.Namespace, sink: _Sink, stages: StageTimer, on_status: Callable[[Any], None]) -> Any:
    common: dict[str, Any] = {"video_reference": args.video, "on_prediction": sink, "status_update_handlers": [on_status]}
    if args.level == "model":
        from streamvision.stream.pipeline import InferencePipeline as NeutralPipeline

        model = _load_model(args.model)
        stages.attach(model)
        detect = stages.outer(_Detector(model, args.confidence))
        return NeutralPipeline.init_with_custom_logic(
            on_video_frame=lambda frames: detect([f.image for f in frames]), **common
        )
    _instrument_adapter(stages)
    from inference import InferencePipeline

    api_key = os.environ.get(_API_KEY_ENV)
    try:
        if args.level == "adapter":
            return InferencePipeline.init(model_id=args.model, api_key=api_key, confidence=args.confidence, **common)
        return InferencePipeline.init_with_workflow(
            workflow_specification=workflow_specification(args.model, args.confidence), api_key=api_key, **common
        )
    except Exception as exc:
        logger.exception("building the %s pipeline failed", args.level)
        raise ArmError(f"cannot start the {args.level} pipeline for {args.model!r}: {type(exc).__name__}: {exc}") from exc


def _run_video(
    args: argparse.Namespace, writer: DumpWriter, protocol: _Protocol, on_first: Callable[[Any], None]
) -> tuple[int, dict[str, Any], Any, dict[str, int] | None]:
    """Run the pipeline of ``args.level`` over ``args.video``.

    Returns:
        Frames dumped, the speed record (see :mod:`.speed`), the inference-models
        model the pipeline ran (``None`` if no call reached it) and the plugin's call
        counts of the pipeline's calls (see :func:`_preprocessing_calls`).
    """
    from streamvision.camera.entities import UpdateSeverity

    speed = SpeedRecorder(args.warmup_frames)
    stages = StageTimer(args.warmup_frames)
    sink = _Sink(args.level, writer, protocol, args.max_frames, speed, lambda: on_first(stages.model), args.defer_dump)
    pipeline_errors: list[str] = []

    def on_status(update: Any) -> None:
        if update.severity is UpdateSeverity.ERROR:
            payload = update.payload or {}
            kind = payload.get("error_type", update.event_type)
            pipeline_errors.append(f"{kind}: {payload.get('error_message', '')}")
            if sink.pipeline is not None:
                sink.pipeline.terminate()  # a failing model fails every frame: stop at the first

    sink.pipeline = _build_pipeline(args, sink, stages, on_status)
    try:
        sink.pipeline._on_video_frame = _TimedInferenceStep(sink.pipeline._on_video_frame, speed, args.max_frames)
    except AttributeError:  # latency is then left out; nothing else depends on it
        logger.warning("the pipeline has no on_video_frame attribute: per-frame latency not measured")
    sink.pipeline.start(use_main_thread=True)
    sink.pipeline.join()
    speed.close()
    if sink.error is not None:
        raise sink.error
    sink.drain()
    if pipeline_errors:
        raise ArmError(f"{args.level} pipeline over {args.video!r}: {one_line(pipeline_errors[0], 300)}")
    record: dict[str, Any] = {"level": args.level, **speed.summary(), "stages": stages.summary(), "floor": None}
    calls = _preprocessing_calls()  # the pipeline's calls, before the floor's own pre_process
    if args.forward_floor and stages.model is not None and sink.first_image is not None:
        record["floor"] = forward_floor(stages.model, stages.originals["forward"], sink.first_image, args.forward_floor)
    return sink.frames, record, stages.model, calls


def _run_images(manifest: Path, detector: _Detector, writer: DumpWriter, protocol: _Protocol) -> int:
    import cv2

    entries = json.loads(manifest.read_text(encoding="utf-8"))
    for n, entry in enumerate(entries, start=1):
        image = cv2.imread(entry["path"], cv2.IMREAD_COLOR)
        if image is None:
            raise ArmError(f"cannot read image {entry['path']}")
        height, width = image.shape[:2]
        dets = detector([image])[0]
        writer.write(frame_record(int(entry["id"]), dets, width, height))
        protocol.emit("frame", n=n, frame_id=int(entry["id"]), detections=len(dets))
    return len(entries)


def build_parser() -> argparse.ArgumentParser:
    """Parser of the child process (internal; the validate commands build its arguments)."""
    parser = argparse.ArgumentParser(prog=f"python -m {ARM_MODULE}", description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", required=True, help="arm id recorded in the sidecar")
    parser.add_argument("--label", default="", help="human description recorded in the sidecar")
    parser.add_argument("--model", required=True, help="model package directory or model id")
    parser.add_argument("--dump", type=Path, required=True, help="JSONL dump to write")
    parser.add_argument("--confidence", type=float, required=True, help="model confidence threshold in [0, 1]")
    parser.add_argument("--arm-env", type=json.loads, default={}, help="JSON object: env the parent set (recorded)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--video", type=parse_source, help="video file, stream URL or camera index")
    source.add_argument("--images", type=Path, help='JSON manifest [{"id": int, "path": str}, ...]')
    parser.add_argument("--max-frames", type=int, default=None, help="stop the pipeline after N frames")
    parser.add_argument("--level", choices=LEVELS, default="model", help="where the pipeline comes from (video only)")
    parser.add_argument("--warmup-frames", type=int, default=1, help="frames left out of fps, CPU and stage medians")
    parser.add_argument("--forward-floor", type=int, default=0, help="time model.forward alone N times after the run")
    parser.add_argument("--defer-dump", action="store_true", help="dump the predictions after the pipeline has stopped")
    return parser


def _run(args: argparse.Namespace, protocol: _Protocol) -> int:
    started = time.monotonic()
    if args.video is not None:
        source: dict[str, Any] = {
            "reference": args.video,
            "kind": classify_source(args.video),
            "max_frames": args.max_frames,
        }
    else:
        source = {"kind": "images", "manifest": str(args.images)}
    level = args.level if args.video is not None else "model"
    model = _load_model(args.model) if args.video is None else None
    meta = build_metadata(
        model=_model_metadata(args.model, model, _plugin_installed(_plugin_module())),
        source=source,
        arm={"name": args.name, "label": args.label, "env": args.arm_env},
        confidence=args.confidence,
        level=level,
    )
    speed = None
    with DumpWriter(args.dump, meta) as writer:

        def on_first(loaded: Any) -> None:
            # The model is loaded (and the plugin, if any, active) by the time a result arrives.
            known = _model_metadata(args.model, loaded, _plugin_installed(_plugin_module()))
            protocol.emit(
                "model",
                model_class=known["class"],
                random_weights=known["random_weights"],
                plugin_installed=known["preprocessing"]["plugin_installed"],
            )

        if args.video is not None:
            frames, speed, model, calls = _run_video(args, writer, protocol, on_first)
        else:
            on_first(model)
            frames = _run_images(args.images, _Detector(model, args.confidence), writer, protocol)
            calls = _preprocessing_calls()
        writer.update_meta(model=_model_metadata(args.model, model, _plugin_installed(_plugin_module())))
        writer.update_meta(preprocessing_calls=calls, speed=speed)
    protocol.emit(
        "done",
        frames=frames,
        elapsed_s=round(time.monotonic() - started, 3),
        preprocessing_calls=calls,
        speed=speed,
    )
    return frames


def main(argv: Sequence[str] | None = None) -> int:
    """Child entry point; returns 0, or 1 after an ``error`` event (details in stderr)."""
    args = build_parser().parse_args(argv)
    protocol = _Protocol()
    protocol.emit("start", pid=os.getpid())
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        _run(args, protocol)
    except ArmError as exc:
        logger.error("arm %s failed: %s", args.name, exc)
        protocol.emit("error", message=one_line(str(exc)))
        return EXIT_ARM_FAILED
    except Exception as exc:
        logger.exception("arm %s crashed", args.name)
        protocol.emit("error", message=one_line(f"{type(exc).__name__}: {exc}"))
        return EXIT_ARM_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
