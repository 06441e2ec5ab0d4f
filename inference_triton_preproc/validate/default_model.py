"""Deterministic random-weight RF-DETR instance-segmentation Nano model package.

The validation tools need an RF-DETR segmentation model that loads through
``inference_models.AutoModel.from_pretrained(<dir>)`` without an API key, a
download or pretrained weights. This module builds one on CPU from the model
code that ``inference-models`` ships (``RFDETRSegNanoConfig`` + ``build_model``)
and stores it as an ordinary local model package::

    <package>/
        model_config.json      architecture "rfdetr", task "instance-segmentation",
                               backend "torch" or "onnx"
        inference_config.json  312x312 stretch, RGB, /255 + ImageNet mean/std
                               (plus a top-level ``"random_weights": true``,
                               which the config parser ignores)
        class_names.txt        "random-0", "random-1", "random-2"
        model_type.json        {"model_type": "rfdetr-seg-nano"}   (torch only)
        weights.pth            {"model": state_dict}                (torch only)
        weights.onnx           opset 17, input "input" (1, 3, 312, 312) fp32,
                               outputs boxes (1, 100, 4), logits (1, 100, 4),
                               masks (1, 100, 78, 78)            (onnx only)
        random_weights.json    the label: the weights are random, how they were
                               made, and the calibration results

Every output produced with this model must be labelled as coming from random
weights; :func:`random_weights_info` reads the label back from a package.

How the model is made deterministic and still detects things
-------------------------------------------------------------
1. All parameters are initialised by ``build_model`` under
   ``torch.manual_seed(seed)`` inside a forked RNG state (the caller's global
   RNG is left untouched). The Nano config uses 12 px patches, so the DINOv2
   backbone is never fetched from the Hugging Face hub.
2. Random weights put every class score near ``sigmoid(-4.6) = 0.01`` (the
   focal-loss prior bias), so nothing passes a 0.4 threshold. The
   classification head's bias is therefore calibrated on real footage: every
   ``CALIBRATION_FRAME_STRIDE``-th frame of the bundled sample clip is
   preprocessed exactly as the loaded model will do it and run through the
   network with a zero class bias. The constant bias given to all three
   classes is the smallest multiple of 1/64 for which the
   ``TARGET_DETECTIONS_PER_FRAME``-th best (query, class) score of every
   calibration frame is above ``CONFIDENCE_THRESHOLD`` (0.4) by at least
   ``CALIBRATION_MARGIN`` in logit space. With the default seed (torch 2.14,
   inference-models 0.39.5) the bias is -1.40625 and every one of the 48
   frames of the sample clip gets 3 to 9 detections at confidence 0.4, all
   with non-empty masks; the per-calibration-frame counts are recorded in
   ``random_weights.json``. The DETR "no object" column gets a fixed bias of
   ``NO_OBJECT_LOGIT_BIAS`` so that it never takes a top-k slot.
3. The segmentation head's scalar mask-logit bias is set to minus the median
   mask logit of the selected queries on the calibration frames (again a
   multiple of 1/64), so masks cover about half of the frame and have long
   boundaries, which makes them sensitive to preprocessing differences.

Both biases are rounded to a 1/64 grid so that float noise between CPUs or
thread counts in the calibration forward pass does not change the weights.
The build is a pure function of :class:`BuildSpec` (seed, sizes, versions of
torch / inference-models and the SHA-256 of the sample clip); packages are
cached under a directory named after the hash of that spec and written
atomically (built in a temporary sibling directory, then renamed), so
concurrent test processes never see a half-written package.

Cache location: ``cache_dir`` argument, else ``$INFERENCE_TRITON_PREPROC_CACHE``,
else ``~/.cache/inference-triton-preproc``; packages live in its ``models/``
subdirectory.

The ONNX package is exported (legacy TorchScript exporter, opset 17, static
batch 1) from the weights of the torch package with the same seed, so both
backends carry identical parameters.

Cost on a 2-core CPU: the first build takes about 10 s (torch) plus 5-15 s
(ONNX export); a cache hit costs a few milliseconds (hashing the sample clip).
``pre_process`` + ``forward`` + ``post_process`` of one 768x576 frame takes
about 350 ms with either backend (pre ~4-7 ms, forward ~335 ms, post ~5-9 ms).
Packages take about 133 MB (torch) and 122 MB (ONNX) of disk.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import importlib.metadata
import json
import logging
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from .._host import stretch_network_input
from ..reference import IMAGENET_MEAN, IMAGENET_STD

if TYPE_CHECKING:
    import torch

try:  # POSIX only; on other systems concurrent builders just race to the rename.
    import fcntl
except ImportError:  # pragma: no cover - non-POSIX
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

__all__ = [
    "CACHE_ENV_VAR",
    "CLASS_NAMES",
    "CONFIDENCE_THRESHOLD",
    "DEFAULT_SEED",
    "INPUT_SIZE",
    "MODEL_TYPE",
    "RANDOM_WEIGHTS_FILE",
    "Backend",
    "BuildSpec",
    "default_cache_dir",
    "default_model_path",
    "encode_sample_clip",
    "is_random_weights_package",
    "load_sample_frames",
    "random_weights_info",
    "sample_video_path",
]

Backend = Literal["torch", "onnx"]

#: Seed of the parameter initialisation.
DEFAULT_SEED: int = 1
#: Environment variable overriding the cache root.
CACHE_ENV_VAR: str = "INFERENCE_TRITON_PREPROC_CACHE"
#: ``model_type.json`` value; selects ``RFDETRSegNanoConfig`` in inference-models.
MODEL_TYPE: str = "rfdetr-seg-nano"
#: Class names; they say what the classes are worth.
CLASS_NAMES: tuple[str, ...] = ("random-0", "random-1", "random-2")
#: Network input height and width in pixels (Nano's native size: 26 patches of 12 px).
INPUT_SIZE: int = 312
#: Confidence threshold the calibration targets (inference-models' default for RF-DETR).
CONFIDENCE_THRESHOLD: float = 0.4
#: Detections wanted on the worst calibration frame at ``CONFIDENCE_THRESHOLD``.
TARGET_DETECTIONS_PER_FRAME: int = 3
#: Every n-th frame of the sample clip is used for calibration.
CALIBRATION_FRAME_STRIDE: int = 8
#: Minimum logit margin of the target detection above the threshold.
CALIBRATION_MARGIN: float = 0.03
#: Grid (in logits) the calibrated biases are rounded to; a power of two, exact in fp32.
BIAS_GRID: float = 1.0 / 64.0
#: Bias of the DETR "no object" logit column.
NO_OBJECT_LOGIT_BIAS: float = -8.0
#: ONNX opset of the exported graph.
ONNX_OPSET: int = 17
#: Bump when the package layout or the build procedure changes.
BUILDER_VERSION: int = 1
#: Name of the label file inside a package.
RANDOM_WEIGHTS_FILE: str = "random_weights.json"
#: Sample clip: file name inside ``assets/`` and number of frames it holds.
SAMPLE_VIDEO_NAME: str = "sample.mp4"
SAMPLE_NUM_FRAMES: int = 48

_TASK_TYPE = "instance-segmentation"
_ARCHITECTURE = "rfdetr"
_ONNX_INPUT_NAME = "input"
_ONNX_OUTPUT_NAMES = ("boxes", "logits", "masks")
_REQUIRED_FILES: dict[str, tuple[str, ...]] = {
    "torch": (
        "model_config.json",
        "inference_config.json",
        "class_names.txt",
        "model_type.json",
        "weights.pth",
        RANDOM_WEIGHTS_FILE,
    ),
    "onnx": (
        "model_config.json",
        "inference_config.json",
        "class_names.txt",
        "weights.onnx",
        RANDOM_WEIGHTS_FILE,
    ),
}


# --------------------------------------------------------------------------- #
# Sample clip
# --------------------------------------------------------------------------- #


def sample_video_path() -> Path:
    """Return the path of the bundled sample clip.

    The clip is 48 frames of 768x576 (width x height) BGR pedestrian footage at
    10 fps, MPEG-4 Part 2 (``mp4v``) in an MP4 container, readable by
    ``cv2.VideoCapture``. See ``assets/README.md`` for its origin and licence.

    Thin wrapper of ``inference_triton_preproc._assets.sample_video_path`` that
    also checks that the file exists.

    Returns:
        Absolute path of ``inference_triton_preproc/assets/sample.mp4``.

    Raises:
        FileNotFoundError: If the package was installed without its assets.
    """
    from inference_triton_preproc._assets import sample_video_path as _asset_path

    path = _asset_path()
    if not path.is_file():
        raise FileNotFoundError(
            f"Sample clip {SAMPLE_VIDEO_NAME!r} is missing from the package assets "
            f"(looked at {path}); reinstall the package with its package data."
        )
    return path


def load_sample_frames(limit: int | None = None, stride: int = 1) -> list[np.ndarray]:
    """Decode frames of the sample clip.

    Args:
        limit: Maximum number of frames to return (after striding); ``None``
            returns all of them.
        stride: Keep every ``stride``-th frame, starting with frame 0.

    Returns:
        List of uint8 arrays of shape ``(576, 768, 3)`` in BGR order, as
        ``cv2.VideoCapture`` decodes them.

    Raises:
        ValueError: If ``stride`` < 1 or ``limit`` < 0.
        RuntimeError: If the clip cannot be opened or holds no frame.
    """
    from .._video import read_frames

    return read_frames(sample_video_path(), limit=limit, stride=stride)


def encode_sample_clip(
    source: str | os.PathLike[str],
    destination: str | os.PathLike[str],
    num_frames: int = SAMPLE_NUM_FRAMES,
    fps: float | None = None,
) -> int:
    """Re-encode the first frames of a video as an ``mp4v`` MP4 clip.

    This is how ``assets/sample.mp4`` was made (see ``assets/README.md``).

    Args:
        source: Any video ``cv2.VideoCapture`` reads.
        destination: Output ``.mp4`` path; overwritten if present.
        num_frames: Number of leading frames to keep.
        fps: Frame rate written to the container; defaults to the source's
            (or 10 fps when the source does not declare one).

    Returns:
        Number of frames written.

    Raises:
        RuntimeError: If the source cannot be read or the writer cannot open.
    """
    import cv2

    from .._video import read_frames

    if fps is None:
        capture = cv2.VideoCapture(os.fspath(source))
        fps = float(capture.get(cv2.CAP_PROP_FPS)) or 10.0
        capture.release()
    frames = read_frames(source, limit=num_frames)
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(
        os.fspath(destination), cv2.VideoWriter.fourcc(*"mp4v"), fps, (width, height)
    )
    if not writer.isOpened():
        raise RuntimeError(f"cv2.VideoWriter cannot open {destination} with mp4v")
    try:
        for frame in frames:
            writer.write(frame)
    finally:
        writer.release()
    logger.info(
        "wrote %d frames (%dx%d @ %.3g fps) to %s",
        len(frames),
        width,
        height,
        fps,
        destination,
    )
    return len(frames)


# --------------------------------------------------------------------------- #
# Build specification and cache
# --------------------------------------------------------------------------- #


@dataclasses.dataclass(frozen=True)
class BuildSpec:
    """Everything the package content depends on; its hash keys the cache.

    Attributes:
        backend: ``"torch"`` (``weights.pth``) or ``"onnx"`` (``weights.onnx``).
        seed: Seed of the parameter initialisation.
        model_type: inference-models model type (architecture size).
        class_names: Class names, in class-id order.
        input_size: Network input height = width, in pixels.
        confidence_threshold: Threshold the class bias is calibrated for.
        target_detections: Detections wanted on the worst calibration frame.
        calibration_frame_stride: Every n-th sample frame calibrates the heads.
        calibration_margin: Logit margin of the target detection.
        bias_grid: Rounding grid of the calibrated biases, in logits.
        no_object_bias: Bias of the "no object" logit column.
        onnx_opset: ONNX opset (``None`` for the torch backend).
        builder_version: Version of this build procedure.
        sample_sha256: SHA-256 of the calibration clip.
        torch_version: Version of torch doing the initialisation / export.
        inference_models_version: Version of inference-models providing the model code.
    """

    backend: str
    seed: int
    model_type: str
    class_names: tuple[str, ...]
    input_size: int
    confidence_threshold: float
    target_detections: int
    calibration_frame_stride: int
    calibration_margin: float
    bias_grid: float
    no_object_bias: float
    onnx_opset: int | None
    builder_version: int
    sample_sha256: str
    torch_version: str
    inference_models_version: str

    @classmethod
    def for_backend(cls, backend: Backend, seed: int = DEFAULT_SEED) -> BuildSpec:
        """Spec of the default package for ``backend`` in this environment.

        Args:
            backend: ``"torch"`` or ``"onnx"``.
            seed: Seed of the parameter initialisation.

        Returns:
            The build specification.

        Raises:
            ValueError: If ``backend`` is not supported.
        """
        if backend not in _REQUIRED_FILES:
            raise ValueError(
                f"backend must be one of {sorted(_REQUIRED_FILES)}, got {backend!r}"
            )
        return cls(
            backend=backend,
            seed=int(seed),
            model_type=MODEL_TYPE,
            class_names=CLASS_NAMES,
            input_size=INPUT_SIZE,
            confidence_threshold=CONFIDENCE_THRESHOLD,
            target_detections=TARGET_DETECTIONS_PER_FRAME,
            calibration_frame_stride=CALIBRATION_FRAME_STRIDE,
            calibration_margin=CALIBRATION_MARGIN,
            bias_grid=BIAS_GRID,
            no_object_bias=NO_OBJECT_LOGIT_BIAS,
            onnx_opset=ONNX_OPSET if backend == "onnx" else None,
            builder_version=BUILDER_VERSION,
            sample_sha256=_sha256_file(sample_video_path()),
            torch_version=_distribution_version("torch"),
            inference_models_version=_distribution_version("inference-models"),
        )

    def to_json_dict(self) -> dict[str, Any]:
        """Return the spec as a JSON-serialisable dict (tuples become lists)."""
        data = dataclasses.asdict(self)
        data["class_names"] = list(self.class_names)
        return data

    def key(self) -> str:
        """SHA-256 (hex) of the canonical JSON form of the spec."""
        canonical = json.dumps(
            self.to_json_dict(), sort_keys=True, separators=(",", ":")
        )
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def package_name(self) -> str:
        """Directory name of the package in the cache."""
        return (
            f"{self.model_type}-random-{self.backend}-seed{self.seed}-{self.key()[:16]}"
        )


def default_cache_dir() -> Path:
    """Cache root: ``$INFERENCE_TRITON_PREPROC_CACHE`` or ``~/.cache/inference-triton-preproc``."""
    configured = os.environ.get(CACHE_ENV_VAR)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "inference-triton-preproc"


def default_model_path(
    backend: Backend = "torch",
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    seed: int = DEFAULT_SEED,
) -> Path:
    """Return a local random-weight RF-DETR Nano segmentation package, building it once.

    The directory loads offline with
    ``inference_models.AutoModel.from_pretrained(str(path), device="cpu")``
    (the backend is fixed by the package's ``model_config.json``).

    Args:
        backend: ``"torch"`` (PyTorch module, ``weights.pth``) or ``"onnx"``
            (onnxruntime, ``weights.onnx`` exported from the torch package).
        cache_dir: Cache root; defaults to :func:`default_cache_dir`.
        seed: Seed of the parameter initialisation.

    Returns:
        Path of the package directory ``<cache_dir>/models/<name>``.

    Raises:
        ValueError: If ``backend`` is not supported.
        RuntimeError: If the build or the calibration fails.
    """
    spec = BuildSpec.for_backend(backend, seed)
    root = (
        Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    )
    models_dir = root / "models"
    final_dir = models_dir / spec.package_name()
    if _is_complete(final_dir, backend):
        logger.debug("random-weight %s package cache hit: %s", backend, final_dir)
        return final_dir
    models_dir.mkdir(parents=True, exist_ok=True)
    with _build_lock(models_dir / f".{spec.package_name()}.lock"):
        if _is_complete(final_dir, backend):
            return final_dir
        if final_dir.exists():
            logger.warning("removing incomplete model package %s", final_dir)
            shutil.rmtree(final_dir)
        torch_package = (
            default_model_path("torch", cache_dir=root, seed=seed)
            if backend == "onnx"
            else None
        )
        staging = Path(
            tempfile.mkdtemp(prefix=f".{spec.package_name()}.tmp-", dir=models_dir)
        )
        try:
            logger.info("building random-weight %s package %s", backend, final_dir.name)
            if torch_package is None:
                _build_torch_package(staging, spec)
            else:
                _build_onnx_package(staging, spec, torch_package)
            _publish(staging, final_dir)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
    if not _is_complete(final_dir, backend):  # pragma: no cover - defensive
        raise RuntimeError(f"model package {final_dir} is incomplete after the build")
    return final_dir


def random_weights_info(package_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Read the random-weights label of a model package.

    Args:
        package_dir: Model package directory.

    Returns:
        The content of ``random_weights.json`` (``"random_weights"`` is
        ``True``), or ``None`` when the package carries no such label.
    """
    label = Path(package_dir) / RANDOM_WEIGHTS_FILE
    if not label.is_file():
        return None
    with label.open("r", encoding="utf-8") as handle:
        data = json.load(handle)
    return data if isinstance(data, dict) else None


def is_random_weights_package(package_dir: str | os.PathLike[str]) -> bool:
    """Return ``True`` when the package declares random weights."""
    info = random_weights_info(package_dir)
    return bool(info and info.get("random_weights") is True)


# --------------------------------------------------------------------------- #
# Build internals
# --------------------------------------------------------------------------- #


def _distribution_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _is_complete(package_dir: Path, backend: str) -> bool:
    return package_dir.is_dir() and all(
        (package_dir / name).is_file() for name in _REQUIRED_FILES[backend]
    )


@contextlib.contextmanager
def _build_lock(lock_path: Path) -> Iterator[None]:
    """Serialise builders of one package across processes (advisory, POSIX)."""
    if fcntl is None:  # pragma: no cover - non-POSIX
        yield
        return
    with lock_path.open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _publish(staging: Path, final_dir: Path) -> None:
    """Atomically move a finished staging directory to its final name."""
    for entry in staging.iterdir():
        with entry.open("rb") as handle:
            os.fsync(handle.fileno())
    staging.chmod(0o755)  # mkdtemp creates 0700; the cache may be shared
    try:
        os.rename(staging, final_dir)
    except OSError as error:
        if error.errno in (errno.EEXIST, errno.ENOTEMPTY) and final_dir.is_dir():
            logger.info("another process published %s first; keeping it", final_dir)
            return
        raise


def _write_json(path: Path, content: Any) -> None:
    path.write_text(
        json.dumps(content, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )


def _inference_config_dict(spec: BuildSpec) -> dict[str, Any]:
    return {
        "image_pre_processing": {},
        "network_input": stretch_network_input(spec.input_size, spec.input_size, IMAGENET_MEAN, IMAGENET_STD),
        # Not part of inference-models' schema (pydantic ignores unknown keys);
        # duplicated from random_weights.json for readers of this file only.
        "random_weights": True,
    }


def _write_common_files(staging: Path, spec: BuildSpec) -> None:
    _write_json(
        staging / "model_config.json",
        {
            "model_architecture": _ARCHITECTURE,
            "task_type": _TASK_TYPE,
            "backend_type": spec.backend,
        },
    )
    _write_json(staging / "inference_config.json", _inference_config_dict(spec))
    (staging / "class_names.txt").write_text(
        "\n".join(spec.class_names) + "\n", encoding="utf-8"
    )


def _model_config(spec: BuildSpec) -> Any:
    import torch
    from inference_models.models.rfdetr.rfdetr_base_pytorch import RFDETRSegNanoConfig

    # pragma: no cover - BuildSpec.for_backend always sets MODEL_TYPE
    if spec.model_type != MODEL_TYPE:
        raise ValueError(f"unsupported model type {spec.model_type!r}")
    config = RFDETRSegNanoConfig(device=torch.device("cpu"))
    # build_model adds the "no object" column itself: logits have len(classes) + 1 columns.
    config.num_classes = len(spec.class_names)
    config.resolution = spec.input_size
    return config


def _new_network(spec: BuildSpec) -> torch.nn.Module:
    """Build the LW-DETR network with seeded random parameters, in eval mode."""
    import torch
    from inference_models.models.rfdetr.rfdetr_base_pytorch import build_model

    config = _model_config(spec)
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(spec.seed)
        network = build_model(config=config)
    return network.eval()


def _round_up(value: float, grid: float) -> float:
    return math.ceil(value / grid) * grid


def _round_nearest(value: float, grid: float) -> float:
    return round(value / grid) * grid


def _calibrate(network: torch.nn.Module, spec: BuildSpec) -> dict[str, Any]:
    """Set the class-logit and mask-logit biases from the sample clip (in place).

    Returns:
        Calibration record stored in ``random_weights.json``.
    """
    import torch
    from inference_models.models.common.roboflow.model_packages import InferenceConfig
    from inference_models.models.rfdetr.pre_processing import pre_process_network_input

    num_classes = len(spec.class_names)
    frames = load_sample_frames(stride=spec.calibration_frame_stride)
    inference_config = InferenceConfig.model_validate(_inference_config_dict(spec))
    batch, _ = pre_process_network_input(
        images=frames,
        image_pre_processing=inference_config.image_pre_processing,
        network_input=inference_config.network_input,
        target_device=torch.device("cpu"),
        input_color_format="bgr",
    )
    class_head: Any = network.class_embed
    mask_head: Any = network.segmentation_head
    with torch.no_grad():
        class_head.bias.zero_()
        class_head.bias[num_classes:] = spec.no_object_bias
        mask_head.bias.zero_()
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        outputs = network(batch)
    logits = outputs["pred_logits"][..., :num_classes].float()  # (F, Q, C), zero bias
    mask_logits = outputs["pred_masks"].float()  # (F, Q, H/4, W/4), zero bias
    flat = logits.flatten(1)
    k = spec.target_detections
    kth_best = flat.topk(k, dim=1).values[:, -1]  # (F,)
    p = spec.confidence_threshold
    threshold_logit = math.log(p / (1.0 - p))
    class_bias = _round_up(
        threshold_logit + spec.calibration_margin - float(kth_best.min()),
        spec.bias_grid,
    )
    top_indices = flat.topk(k, dim=1).indices // num_classes  # (F, k) query indices
    selected = torch.stack(
        [mask_logits[f, top_indices[f]] for f in range(flat.shape[0])]
    )
    mask_bias = -_round_nearest(float(selected.median()), spec.bias_grid)
    with torch.no_grad():
        class_head.bias[:num_classes] = class_bias
        mask_head.bias.fill_(mask_bias)
    counts = ((flat + class_bias) > threshold_logit).sum(dim=1).tolist()
    coverage = float(((selected + mask_bias) > 0).float().mean())
    logger.info(
        "calibrated class bias %.6f, mask bias %.6f; detections per calibration frame %s",
        class_bias,
        mask_bias,
        counts,
    )
    return {
        "calibration_frames": list(
            range(0, SAMPLE_NUM_FRAMES, spec.calibration_frame_stride)
        )[: len(frames)],
        "class_logit_bias": class_bias,
        "no_object_logit_bias": spec.no_object_bias,
        "mask_logit_bias": mask_bias,
        "detections_per_calibration_frame": [int(c) for c in counts],
        "mask_coverage_of_selected_queries": round(coverage, 4),
    }


def _label(spec: BuildSpec, calibration: dict[str, Any]) -> dict[str, Any]:
    return {
        "random_weights": True,
        "warning": (
            "RANDOM WEIGHTS: this RF-DETR model was never trained. Its detections and "
            "masks are meaningless and only exercise the inference pipeline; label every "
            "output produced with it accordingly."
        ),
        "builder": __name__,
        "build_key": spec.key(),
        "build_spec": spec.to_json_dict(),
        "calibration": calibration,
    }


def _build_torch_package(staging: Path, spec: BuildSpec) -> None:
    import torch

    network = _new_network(spec)
    calibration = _calibrate(network, spec)
    state_dict = {
        name: tensor.detach().cpu().contiguous()
        for name, tensor in network.state_dict().items()
    }
    torch.save({"model": state_dict}, staging / "weights.pth")
    _write_json(staging / "model_type.json", {"model_type": spec.model_type})
    _write_common_files(staging, spec)
    _write_json(staging / RANDOM_WEIGHTS_FILE, _label(spec, calibration))


def _build_onnx_package(staging: Path, spec: BuildSpec, torch_package: Path) -> None:
    import torch

    network: Any = _new_network(spec)
    checkpoint = torch.load(
        torch_package / "weights.pth", map_location="cpu", weights_only=True
    )
    network.load_state_dict(checkpoint["model"])
    network.export()  # switches to the tensor-only forward used for tracing
    dummy = torch.zeros(1, 3, spec.input_size, spec.input_size, dtype=torch.float32)
    assert spec.onnx_opset is not None
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            network,
            (dummy,),
            str(staging / "weights.onnx"),
            dynamo=False,
            opset_version=spec.onnx_opset,
            input_names=[_ONNX_INPUT_NAME],
            output_names=list(_ONNX_OUTPUT_NAMES),
            do_constant_folding=True,
        )
    _write_common_files(staging, spec)
    torch_label = random_weights_info(torch_package) or {}
    label = _label(spec, dict(torch_label.get("calibration", {})))
    label["exported_from"] = {
        "backend": "torch",
        "build_key": torch_label.get("build_key"),
    }
    _write_json(staging / RANDOM_WEIGHTS_FILE, label)
