"""The ``pre_process`` wrapper installed on inference-models' RF-DETR segmentation adapters.

For every call it decides whether the fused kernel can produce exactly what the stock
path would (same tensor, same metadata). If so it runs the kernel; if not it calls the
original method and logs the reason once per model. Nothing of the host is copied: the
original method is kept and called for every case the kernel does not cover.

Routed to the kernel (numpy or uint8 tensor frames, any batch):
  numpy uint8 HWC 3-channel frames, lists of them, 4-D numpy batches, uint8 torch
  tensors (HWC, CHW as the host reads them, or NHWC), in BGR or RGB caller colour, with
  or without the package's static crop, ``image_size`` None or equal to the model's.
Everything else falls back to the stock path (see :data:`FALLBACK_REASONS`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .._env import ConfigurationError
from ..api import preprocess
from ..kernels.resize import interpreted
from ..runtime.buffers import OutputRing
from .config import Settings
from .detect import detect_mode
from .fallbacks import FallbackError, call_counts, count, fall_back

__all__ = ["FALLBACK_REASONS", "FallbackError", "call_counts", "make_wrapper", "state_of"]

logger = logging.getLogger(__name__)

STATE_ATTRIBUTE = "_triton_preproc_state"

# Why a call or a model goes to the stock path; each is logged once per model.
FALLBACK_REASONS = {
    "cpu-device": "the model runs on the CPU (the kernels need CUDA, or TRITON_INTERPRET=1 for tests)",
    "channels": "the network does not take 3-channel input",
    "two-step-resize": "dataset-version resize dimensions with a non-stretch resize mode",
    "scaling": "a scaling factor other than 255 without normalisation",
    "no-mode": "no kernel mode reproduces this inference-models' preprocessing exactly",
    "grayscale": "grayscale pre-processing is enabled",
    "contrast": "contrast enhancement is enabled",
    "image-size": "an image_size different from the model's input size",
    "input-type": "the input is not uint8 frames (numpy arrays or tensors)",
    "input-shape": "a frame is not a 3-channel image",
    "mixed-input": "the list mixes numpy arrays and tensors",
    "kernel-error": "the Triton kernel failed to compile or launch; the backend is off for this model",
}


@dataclass(frozen=True)
class ModelPlan:
    """What the kernel needs from a model's input definition (fixed per model)."""

    device: torch.device
    target_hw: tuple[int, int]
    network_color: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    mode: str


def _plan_model(model: Any, settings: Settings) -> ModelPlan | str:
    """A :class:`ModelPlan`, or the key of the reason this model cannot use the kernel."""
    device = torch.device(model._device)
    if device.type != "cuda" and not interpreted():
        return "cpu-device"
    network_input = model._inference_config.network_input
    if network_input.input_channels != 3:
        return "channels"
    if network_input.dataset_version_resize_dimensions is not None and network_input.resize_mode.value != "stretch":
        return "two-step-resize"
    if network_input.normalization:
        mean, std = (tuple(float(v) for v in values) for values in network_input.normalization)
    elif network_input.scaling_factor in (None, 255):
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    else:
        return "scaling"
    size = network_input.training_input_size
    target_hw = (int(size.height), int(size.width))
    network_color = network_input.color_mode.value
    mode = settings.mode
    if mode == "auto":
        mode = detect_mode(target_hw, network_color, mean, std)
        if mode is None:
            return "no-mode"
    return ModelPlan(device, target_hw, network_color, mean, std, mode)


@dataclass
class _Call:
    """One call the kernel will serve: HWC uint8 frames (views) and their crop offsets."""

    frames: list[np.ndarray | torch.Tensor]
    originals: list[tuple[int, int]]
    crops: list[tuple[int, int]]


def _as_frames(images: Any) -> list[Any] | str:
    """Split the host's accepted input forms into HWC uint8 frames, as the host reads them."""
    if isinstance(images, (list, tuple)):
        items = list(images)
    elif isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4:
        items = list(images)
    else:
        items = [images]
    if not items:
        return "input-shape"
    kinds = {type(i) for i in items}
    if not kinds <= {np.ndarray, torch.Tensor} or len(kinds) != 1:
        return "mixed-input" if kinds <= {np.ndarray, torch.Tensor} else "input-type"
    frames = []
    for item in items:
        if isinstance(item, np.ndarray):
            if item.dtype != np.uint8:
                return "input-type"
        else:
            if item.dtype != torch.uint8:
                return "input-type"
            # The host reads 3-D tensors with 1, 3 or 4 leading channels (and not a
            # trailing one) as CHW.
            if item.ndim == 3 and item.shape[0] in (1, 3, 4) and item.shape[-1] not in (1, 3, 4):
                item = item.permute(1, 2, 0)
        if item.ndim != 3 or item.shape[2] != 3 or item.shape[0] == 0 or item.shape[1] == 0:
            return "input-shape"
        frames.append(item)
    return frames


def _static_crop(frame: Any, crop: Any) -> tuple[Any, tuple[int, int]]:
    """The package's static crop (percentages of width/height, truncated) as a view."""
    height, width = frame.shape[0], frame.shape[1]
    x_min, y_min = int(crop.x_min / 100 * width), int(crop.y_min / 100 * height)
    x_max, y_max = int(crop.x_max / 100 * width), int(crop.y_max / 100 * height)
    return frame[y_min:y_max, x_min:x_max], (x_min, y_min)


def _plan_call(model: Any, plan: ModelPlan, images: Any, image_size: Any, overrides: Any) -> _Call | str:
    """A :class:`_Call`, or the key of the reason this call goes to the stock path."""
    pre = model._inference_config.image_pre_processing
    if pre.grayscale is not None and pre.grayscale.enabled and not (overrides and overrides.disable_grayscale):
        return "grayscale"
    if pre.contrast is not None and pre.contrast.enabled and not (overrides and overrides.disable_contrast_enhancement):
        return "contrast"
    if image_size is not None:
        wh = (int(image_size), int(image_size)) if isinstance(image_size, (int, float)) else tuple(image_size)
        if wh != plan.target_hw[::-1]:
            return "image-size"
    frames = _as_frames(images)
    if isinstance(frames, str):
        return frames
    crop = pre.static_crop
    cropping = crop is not None and crop.enabled and not (overrides and overrides.disable_static_crop)
    originals = [(int(f.shape[0]), int(f.shape[1])) for f in frames]
    offsets = [(0, 0)] * len(frames)
    if cropping:
        cropped = [_static_crop(f, crop) for f in frames]
        frames = [f for f, _ in cropped]
        offsets = [o for _, o in cropped]
        if any(f.shape[0] == 0 or f.shape[1] == 0 for f in frames):
            return "input-shape"
    return _Call(frames, originals, offsets)


def _metadata(call: _Call, target_hw: tuple[int, int]) -> list[Any]:
    """One ``PreProcessingMetadata`` per frame, as the host's stretch path builds it."""
    from inference_models.entities import ImageDimensions
    from inference_models.models.common.roboflow.model_packages import (
        PreProcessingMetadata,
        StaticCropOffset,
    )

    target = ImageDimensions(height=target_hw[0], width=target_hw[1])
    out = []
    for frame, (h0, w0), (x0, y0) in zip(call.frames, call.originals, call.crops):
        h, w = int(frame.shape[0]), int(frame.shape[1])
        out.append(
            PreProcessingMetadata(
                pad_left=0,
                pad_top=0,
                pad_right=0,
                pad_bottom=0,
                original_size=ImageDimensions(height=h0, width=w0),
                size_after_pre_processing=ImageDimensions(height=h, width=w),
                inference_size=target,
                scale_width=target.width / w,
                scale_height=target.height / h,
                static_crop_offset=StaticCropOffset(offset_x=x0, offset_y=y0, crop_width=w, crop_height=h),
            )
        )
    return out


class ModelState:
    """Per-model backend state: the plan, reasons already logged, streams and buffers."""

    def __init__(self, model: Any, backend: str, settings: Settings) -> None:
        self.backend = backend
        self.settings = settings
        self.lock = threading.Lock()
        self.logged: set[str] = set()
        self.disabled: str | None = None
        self._plan: ModelPlan | str | None = None
        self._stream: torch.cuda.Stream | None = None
        self._ring = OutputRing(depth=3)
        if getattr(model, "_fast_preprocess_enabled", False):
            logger.warning(
                "both INFERENCE_MODELS_RFDETR_TRITON_PREPROC_ENABLED and RFDETR_USE_TRITON_PREPROC are on: "
                "inference-triton-preproc handles the calls it supports; upstream's path only sees the rest"
            )

    def plan(self, model: Any) -> ModelPlan | str:
        if self._plan is None:
            self._plan = _plan_model(model, self.settings)
            if isinstance(self._plan, ModelPlan):
                logger.info(
                    "inference-triton-preproc active for %s on %s: mode %s, input %dx%d",
                    type(model).__name__,
                    self._plan.device,
                    self._plan.mode,
                    self._plan.target_hw[1],
                    self._plan.target_hw[0],
                )
        return self._plan

    def fallback(self, model: Any, reason: str, stock: Callable[[], Any], error: BaseException | None = None) -> Any:
        name, text = type(model).__name__, FALLBACK_REASONS[reason]
        fall_back(
            reason,
            strict=self.settings.strict,
            logged=self.logged,
            once=reason,
            logger=logger,
            message=f"{name}: stock preprocessing used: {text}",
            error_message=f"{name}: {text}",
            error=error,
        )
        return stock()

    def run(self, model: Any, plan: ModelPlan, call: _Call, swap: bool) -> tuple[torch.Tensor, Any]:
        """Launch the kernel; returns the (N, 3, H, W) float32 tensor and its ready event.

        ``swap``: reverse the channel order (the kernel's ``input_color="bgr"``).
        """
        input_color = "bgr" if swap else "rgb"
        kwargs = {"mode": plan.mode, "input_color": input_color, "mean": plan.mean, "std": plan.std, "device": plan.device}
        shape = (len(call.frames), 3, *plan.target_hw)
        if plan.device.type != "cuda":
            return preprocess(call.frames, plan.target_hw, **kwargs), None
        with torch.cuda.device(plan.device):
            if self.backend != "trt":
                # Same stream as the host's forward: ordering needs no event.
                tensor = preprocess(call.frames, plan.target_hw, **kwargs)
                if self.backend == "onnx":
                    # onnxruntime reads the buffer outside torch's stream order; the
                    # stock path synchronises here too.
                    torch.cuda.current_stream(plan.device).synchronize()
                return tensor, None
            if self._stream is None:
                self._stream = torch.cuda.Stream(device=plan.device)
            stream = self._stream
            with self.lock:
                out = self._ring.acquire(shape, torch.float32, plan.device)
                # Never overwrite a buffer the engine may still read: wait for all
                # work queued on the inference stream, and for the CUDA-graph cache's
                # own "consumed" mark when it left one.
                inference_stream = getattr(model, "_inference_stream", None)
                if inference_stream is not None:
                    stream.wait_stream(inference_stream)
                consumed = getattr(out, "_trt_consumed_event", None)
                if consumed is not None:
                    stream.wait_event(consumed)
                stream.wait_stream(torch.cuda.current_stream(plan.device))
                with torch.cuda.stream(stream):
                    preprocess(call.frames, plan.target_hw, out=out, **kwargs)
                    ready = torch.cuda.Event()
                    ready.record(stream)
                if inference_stream is not None:
                    inference_stream.wait_event(ready)
            return out, ready

    def pre_process(
        self,
        original: Callable[..., Any],
        model: Any,
        images: Any,
        input_color_format: Any,
        image_size: Any,
        overrides: Any,
        kwargs: dict[str, Any],
    ) -> Any:
        def stock() -> Any:
            return original(model, images, input_color_format, image_size, overrides, **kwargs)

        if self.disabled is not None:
            return self.fallback(model, self.disabled, stock)
        plan = self.plan(model)
        if isinstance(plan, str):
            return self.fallback(model, plan, stock)
        call = _plan_call(model, plan, images, image_size, overrides)
        if isinstance(call, str):
            return self.fallback(model, call, stock)
        # The host swaps channels after the resize whenever the caller's colour differs
        # from the network's, and treats an unspecified colour as different.
        color = getattr(input_color_format, "value", input_color_format)
        swap = color is None or color != plan.network_color
        try:
            tensor, ready = self.run(model, plan, call, swap)
        except ConfigurationError:
            # A bad variable is the user's to fix, not a kernel failure to fall back from.
            raise
        except Exception as error:  # noqa: BLE001 - any compile/launch failure must not lose the frame
            self.disabled = "kernel-error"
            logger.warning("%s: Triton preprocessing failed (%s: %s)", type(model).__name__, type(error).__name__, error)
            return self.fallback(model, "kernel-error", stock, error)
        metadata = _metadata(call, plan.target_hw)
        _hand_off(model, tensor, ready, metadata)
        count("kernel")
        return tensor, metadata


def _hand_off(model: Any, tensor: torch.Tensor, ready: Any, metadata: Sequence[Any]) -> None:
    """Attach what the host's consumers read: the ready event and the metadata.

    The TRT adapter's forward waits on ``_fast_preproc_event`` and its CUDA-graph cache
    on the tensor's ``_trt_ready_event``; pipelined prediction
    (``RFDETR_PIPELINE_DEPTH=2``) reads ``_pre_processing_meta`` from the tensor.
    """
    tensor._pre_processing_meta = metadata  # type: ignore[attr-defined]
    if ready is not None:
        tensor._trt_ready_event = ready  # type: ignore[attr-defined]
        model._fast_preproc_event = ready


_STATE_LOCK = threading.Lock()


def state_of(model: Any, backend: str, settings: Settings) -> ModelState:
    """The model's :class:`ModelState`, created on first use."""
    state = model.__dict__.get(STATE_ATTRIBUTE)
    if state is None:
        with _STATE_LOCK:
            state = model.__dict__.get(STATE_ATTRIBUTE)
            if state is None:
                state = ModelState(model, backend, settings)
                model.__dict__[STATE_ATTRIBUTE] = state
    return state


def make_wrapper(original: Callable[..., Any], backend: str, settings: Callable[[], Settings]) -> Callable[..., Any]:
    """``pre_process`` replacement for an adapter class; ``original`` is the host's method."""

    def pre_process(
        self: Any,
        images: Any,
        input_color_format: Any = None,
        image_size: Any = None,
        pre_processing_overrides: Any = None,
        **kwargs: Any,
    ) -> Any:
        state = state_of(self, backend, settings())
        return state.pre_process(original, self, images, input_color_format, image_size, pre_processing_overrides, kwargs)

    pre_process.__doc__ = original.__doc__
    pre_process.__name__ = original.__name__
    pre_process.__qualname__ = original.__qualname__
    pre_process.__wrapped__ = original  # type: ignore[attr-defined]
    pre_process._triton_preproc_backend = backend  # type: ignore[attr-defined]
    return pre_process
