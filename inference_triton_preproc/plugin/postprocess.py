"""The post-processing switch at the model level: the fused path behind the RF-DETR segmentation models.

The ``post_process`` of inference-models' three RF-DETR instance-segmentation classes
(TRT, ONNX, Torch) differ only around two functions of ``inference_models.models.rfdetr.common``,
which each model module imports by name: one builds dense masks, the other COCO RLE masks.
This module wraps those two names inside each model module, so every ``post_process``
keeps its own contract (the TRT class's post-processing stream, its produce/consumed
events, its deferred synchronisation) and only the work after the network changes.

For each call the wrapper either serves it with the fused path, which returns exactly
what the stock function returns (same ``InstanceDetections``: types, dtypes, devices,
order, boxes, confidences, classes, masks pixel for pixel, RLE bytes), or calls the stock
function and logs why once per model module (:data:`FALLBACK_REASONS`). What a call
derives from its shapes, metadata and arguments alone (geometry, class rule, the checks,
the selection graph's key) is planned once per combination: a stream repeats them frame
after frame. The fused path:

* selection: sigmoid and the flat top-k over queries x classes are the stock path's
  PyTorch calls on the same values and device, so ties come out in the same order; the
  class filter, the strict confidence threshold, the compaction and the boxes are one
  kernel (:func:`~inference_triton_preproc.kernels.postprocess.select_detections`) and
  one synchronisation (the stock path has several); the kept scores are already
  descending, so the stock sort runs, on the same values, only when two of them are
  equal; then ``max_detections``. A replayed graph ranks the passing scores in the
  kernel instead of the top-k, and runs the top-k when that ranking cannot stand for it
  (:mod:`~inference_triton_preproc.runtime.selection`);
* masks with :func:`~inference_triton_preproc.kernels.postprocess.resize_masks`, straight
  from the selected queries' logits to the canvas; each new mask geometry is first checked
  once against the device's own resize, value for value, and goes to the stock path if
  it differs (PyTorch's CPU downscale accumulates differently, for instance); on CUDA,
  once a frame's combination repeats, the selection and the dense masks replay as CUDA
  graphs (:mod:`~inference_triton_preproc.runtime.selection`);
* RLE with :func:`~inference_triton_preproc.kernels.rle.coco_rle`: the masks resized
  column by column, all of a frame's masks encoded at once on the device into
  pycocotools' strings, which reach the host in one transfer (plus their lengths).
"""

from __future__ import annotations

import inspect
import logging
import sys
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any, NamedTuple

import torch

from ..kernels import postprocess as kernels
from ..kernels import rle as rle_kernels
from ..kernels.resize import interpreted
from ..runtime.graphs import LruCache
from ..runtime.selection import SelectionGraphs
from .config import Settings
from .fallbacks import count, fall_back

logger = logging.getLogger(__name__)

COMMON_MODULE = "inference_models.models.rfdetr.common"
ALIGN_MODULE = "inference_models.models.common.roboflow.post_processing"
# The stock functions each model module calls by these names -> the mask format they build.
FUNCTIONS = {
    "post_process_instance_segmentation_results": "dense",
    "post_process_instance_segmentation_results_to_rle_masks": "rle",
}

# Why a post-processing call goes to the stock path; each is logged once per model module.
FALLBACK_REASONS = {
    "cpu-device": "the model runs on the CPU (the kernels need CUDA, or TRITON_INTERPRET=1 for tests)",
    "dtype": "network outputs are neither float32 nor float16",
    "upstream-triton": "inference-models' own INFERENCE_MODELS_RFDETR_TRITON_POSTPROC_ENABLED path is on "
    "(the stock RLE result is that path's)",
    "many-queries": f"more than {kernels.MAX_CANDIDATES} queries (the selection compacts them in one program)",
    "negative-padding": "the mask grid has negative letterbox padding",
    "remapping": "the class remapping does not cover every remaining class (the stock path raises an IndexError)",
    "resize-mismatch": "the kernel's mask resize differs from this device's resize for this geometry "
    "(checked once per geometry)",
    "kernel-error": "a Triton kernel failed to compile or launch; the fused post-processing is off from now on",
}

_lock = threading.Lock()
_logged: set[tuple[str, str]] = set()
_disabled: str | None = None
# (device, dtype, crop, target) -> whether the kernel reproduced the device's resize.
_calibrated: dict[tuple[Any, ...], bool] = {}
# (id of a class remapping, format, device, C) -> (the remapping, its selection rule).
_rules: dict[tuple[Any, ...], tuple[Any, kernels.ClassRule | str]] = {}
_selection = SelectionGraphs()
# _plan_key -> (the call's plan, the remapping it was made with).
_plans: LruCache[tuple[Any, Any]] = LruCache(64)


def _fallback(module: str, reason: str, strict: bool, stock: Callable[[], Any], error: BaseException | None = None) -> Any:
    text = FALLBACK_REASONS[reason]
    fall_back(
        f"postprocess:{reason}",
        strict=strict,
        logged=_logged,
        once=(module, reason),
        logger=logger,
        message=f"{module}: stock post-processing used: {text}",
        error_message=f"{module}: post-processing: {text}",
        error=error,
    )
    return stock()


def _resize_matches(logits: torch.Tensor, geometry: kernels.MaskGeometry) -> bool:
    """Whether the kernel reproduces the device's resize for this geometry (checked once, on random logits)."""
    key = (logits.device, logits.dtype, geometry.crop[2:], geometry.target)
    with _lock:
        known = _calibrated.get(key)
    if known is not None:
        return known
    generator = torch.Generator(device="cpu").manual_seed(0)
    probe = torch.randn((1, *geometry.crop[2:]), generator=generator).to(device=logits.device, dtype=logits.dtype)
    probe_geometry = kernels.MaskGeometry((0, 0, *geometry.crop[2:]), geometry.target, geometry.target, (0, 0))
    index = torch.zeros(1, dtype=torch.int64, device=logits.device)
    ours = kernels.resize_masks(probe, index, probe_geometry, binarize=False)
    stock = kernels.resize_masks_torch(probe, index, probe_geometry, binarize=False)
    matches = bool(torch.equal(ours, stock))
    with _lock:
        _calibrated[key] = matches
    return matches


def _class_rule(remapping: Any, num_classes: int, num_logit_classes: int, rle: bool, device: torch.device) -> kernels.ClassRule | str:
    """The selection's class rule for this model, or a fallback reason (built once per remapping)."""
    if remapping is None:
        return kernels.ClassRule(kernels.CLASSES_NAMED, num_classes=num_classes)
    key = (id(remapping), rle, device, num_logit_classes)
    with _lock:
        cached = _rules.get(key)
    if cached is not None:
        return cached[1]
    classes = torch.arange(num_logit_classes, device=device)
    mapping = remapping.class_mapping.to(device)
    size = int(mapping.shape[0])
    table = torch.where(classes < size, mapping[classes.clamp(max=size - 1)], -1).to(torch.int32)
    if rle:
        rule: kernels.ClassRule | str = kernels.ClassRule(kernels.CLASSES_MAPPED, mapping=table)
    else:
        keep = torch.isin(classes, remapping.remaining_class_ids.to(device))
        # The stock path would raise for a kept class the mapping does not cover.
        uncovered = bool((keep & (classes >= size)).any())
        rule = "remapping" if uncovered else kernels.ClassRule(kernels.CLASSES_REMAINING, keep=keep.to(torch.int8), mapping=table)
    with _lock:
        # The remapping is kept alive with its rule so that its id stays its own.
        _rules[key] = (remapping, rule)
    return rule


def _select(
    logits: torch.Tensor,
    boxes: torch.Tensor,
    threshold: float | torch.Tensor,
    rule: kernels.ClassRule,
    max_detections: int | None,
    geometry: kernels.BoxGeometry,
    masks: tuple[torch.Tensor, kernels.MaskGeometry] | None,
    key: tuple[object, ...] | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(confidence, class int32, query, xyxy, masks or None) of one frame's detections,
    sorted, as the stock path selects them.

    ``logits``: ``(Q, C)`` class logits; ``boxes``: ``(Q, 4)`` network boxes; ``masks``:
    the mask logits and geometry when the dense masks may come from the selection's
    graph; ``key``: their :meth:`SelectionGraphs.key`. Sigmoid and flat top-k are the
    stock path's PyTorch calls on the same values, so ties come out in its order; the
    filters and the boxes are one kernel (once the frame's combination repeats, a CUDA
    graph with the dense masks, which ranks the passing scores instead of the top-k where
    that gives the same order), and the call's one synchronisation. The kept scores are
    already descending, so the stock sort can only reorder equal ones: it runs (on the same
    values) only when two kept scores are equal, and then the masks are left to the caller.
    """
    selected = _selection.select(logits, boxes, rule, threshold, geometry, masks, max_detections, key)
    confidence, classes, query, xyxy, tied, made = selected
    count = int(confidence.shape[0])
    if tied:
        confidence, order = torch.sort(confidence, descending=True)
        classes, query, xyxy = classes[order], query[order], xyxy[order]
    if max_detections is not None and count > max_detections:
        confidence, classes, query, xyxy = (t[:max_detections] for t in (confidence, classes, query, xyxy))
    return confidence, classes, query, xyxy, made


def _geometry(meta: Any, mask_hw: tuple[int, int], resolution_factor: float) -> tuple[kernels.MaskGeometry, kernels.BoxGeometry] | str:
    """The frame's mask and box geometry as the stock alignment computes it, or a fallback reason."""
    align = sys.modules[ALIGN_MODULE]
    network = meta.nonsquare_intermediate_size or meta.inference_size
    mask_h, mask_w = mask_hw
    scale_h, scale_w = mask_h / network.height, mask_w / network.width
    top, bottom = round(scale_h * meta.pad_top), round(scale_h * meta.pad_bottom)
    left, right = round(scale_w * meta.pad_left), round(scale_w * meta.pad_right)
    if min(top, bottom, left, right) < 0:
        return "negative-padding"
    crop = (top, left, mask_h - top - bottom, mask_w - left - right)
    after, original, crop_offset = meta.size_after_pre_processing, meta.original_size, meta.static_crop_offset
    target = tuple(
        align.resolve_mask_target_size(
            mask_height=crop[2], mask_width=crop[3], size_after_pre_processing=after, masks_resolution_factor=resolution_factor
        )
    )
    canvas, offset = target, (0, 0)
    if crop_offset.offset_x > 0 or crop_offset.offset_y > 0 or after != original:
        canvas_h_scale, canvas_w_scale = target[0] / after.height, target[1] / after.width
        offset = (round(crop_offset.offset_y * canvas_h_scale), round(crop_offset.offset_x * canvas_w_scale))
        canvas = (
            max(1, round(original.height * canvas_h_scale), offset[0] + target[0]),
            max(1, round(original.width * canvas_w_scale), offset[1] + target[1]),
        )
    to_float = target != tuple(after)
    box_scale_w, box_scale_h = meta.scale_width, meta.scale_height
    if to_float:
        box_scale_w *= after.width / target[1]
        box_scale_h *= after.height / target[0]
    boxes = kernels.BoxGeometry(
        network=(network.width, network.height),
        pad=(meta.pad_left, meta.pad_top),
        scale=(box_scale_w, box_scale_h),
        offset=(offset[1], offset[0]) if offset[0] or offset[1] else None,
        canvas=(canvas[1], canvas[0]),
        to_float=to_float,
        integer=tuple(canvas) == tuple(original),
    )
    return kernels.MaskGeometry(crop, target, canvas, offset), boxes


class _FramePlan(NamedTuple):
    """What one frame's fused call derives from its metadata and the call's arguments alone."""

    masks: kernels.MaskGeometry
    boxes: kernels.BoxGeometry
    rule: kernels.ClassRule
    # SelectionGraphs.key of the frame's selection (None off the GPU).
    selection: tuple[object, ...] | None
    image_size: tuple[int, int]
    mask_frame_size: tuple[int, int]


def _plan(args: dict[str, Any], rle: bool, upstream: bool) -> tuple[_FramePlan, ...] | str:
    """The plan of a call's frames, or the reason it goes to the stock path (the first that
    applies, in the order of :data:`FALLBACK_REASONS`); ``upstream``: whether upstream's own
    Triton RLE path is on."""
    boxes, logits, masks = args["bboxes"], args["logits"], args["masks"]
    device = boxes.device
    if device.type != "cuda" and not interpreted():
        return "cpu-device"
    if any(t.dtype not in (torch.float32, torch.float16) for t in (boxes, logits, masks)):
        return "dtype"
    if upstream:
        return "upstream-triton"
    if logits.shape[1] > kernels.MAX_CANDIDATES:
        return "many-queries"
    threshold = args["threshold"]
    if isinstance(threshold, torch.Tensor):
        threshold = threshold.to(device=device, dtype=logits.dtype)
    align = sys.modules[ALIGN_MODULE]
    mask_hw = (int(masks.shape[2]), int(masks.shape[3]))
    frames = []
    for frame_boxes, frame_logits, frame_masks, meta in zip(boxes.unbind(0), logits.unbind(0), masks.unbind(0), args["pre_processing_meta"]):
        geometry = _geometry(meta, mask_hw, args["masks_resolution_factor"])
        if isinstance(geometry, str):
            return geometry
        mask_geometry, box_geometry = geometry
        if not _resize_matches(frame_masks, mask_geometry):
            return "resize-mismatch"
        rule = _class_rule(args["classes_re_mapping"], args["num_classes"], int(logits.shape[2]), rle, device)
        if isinstance(rule, str):
            return rule
        # Dense masks may come out of the selection's graph; RLE reads masks column by column.
        graph_masks = None if rle else (frame_masks, mask_geometry)
        original = meta.original_size
        frames.append(
            _FramePlan(
                mask_geometry,
                box_geometry,
                rule,
                _selection.key(frame_logits, frame_boxes, rule, threshold, box_geometry, graph_masks),
                tuple(original),
                tuple(align.resolve_mask_frame_size(meta)),
            )
        )
    return tuple(frames)


def _plan_key(args: dict[str, Any], rle: bool, upstream: bool) -> tuple[object, ...]:
    """Everything :func:`_plan` derives its result from (the remapping by identity: a plan keeps it alive)."""
    boxes, logits, masks, threshold = args["bboxes"], args["logits"], args["masks"], args["threshold"]
    per_class = isinstance(threshold, torch.Tensor)
    return (
        boxes.device,
        boxes.dtype,
        logits.dtype,
        masks.dtype,
        boxes.shape,
        logits.shape,
        masks.shape,
        (threshold.shape, threshold.dtype, threshold.device) if per_class else threshold,
        args["num_classes"],
        id(args["classes_re_mapping"]),
        args["masks_resolution_factor"],
        # Both formats share the plans, and their class rules and selection keys differ.
        rle,
        upstream,
        *args["pre_processing_meta"],
    )


def _frame(boxes: torch.Tensor, class_logits: torch.Tensor, logits: torch.Tensor, plan: _FramePlan, args: dict[str, Any], rle: bool) -> Any:
    """One frame's ``InstanceDetections``."""
    common = sys.modules[COMMON_MODULE]
    graph_masks = None if rle else (logits, plan.masks)
    confidence, classes, query, xyxy, masks = _select(
        class_logits, boxes, args["threshold"], plan.rule, args["max_detections"], plan.boxes, graph_masks, plan.selection
    )
    if masks is None:
        masks = kernels.resize_masks(logits, query, plan.masks, column_major=rle)
    if rle:
        carrier = common.InstancesRLEMasks.from_coco_rle_masks(
            image_size=plan.image_size, masks=rle_kernels.coco_rle(masks), mask_size=plan.masks.canvas
        )
    else:
        carrier = masks
    return common.InstanceDetections(
        xyxy=xyxy,
        confidence=confidence,
        class_id=classes,
        mask=carrier,
        image_size=plan.image_size,
        mask_frame_size=plan.mask_frame_size,
    )


def _serve(args: dict[str, Any], rle: bool) -> list[Any] | str:
    """The fused result of a whole call, or the reason it goes to the stock path.

    A stream repeats its shapes, metadata and arguments frame after frame: what a call
    derives from them alone (:func:`_plan`) is computed once per combination.
    """
    # Read per call: tests and users may switch it at run time.
    upstream = rle and bool(getattr(sys.modules[COMMON_MODULE], "_TRITON_POSTPROC_ENABLED", False))
    key: tuple[object, ...] | None = _plan_key(args, rle, upstream)
    try:
        cached = _plans.get(key)
    except TypeError:
        # Unhashable metadata or arguments: planned for this call alone.
        key, cached = None, None
    if cached is not None:
        plan = cached[0]
    else:
        plan = _plan(args, rle, upstream)
        if key is not None:
            # The remapping is kept alive with the plan so that its id stays its own.
            _plans.put(key, (plan, args["classes_re_mapping"]))
    if isinstance(plan, str):
        return plan
    boxes, logits, masks, threshold = args["bboxes"], args["logits"], args["masks"], args["threshold"]
    if isinstance(threshold, torch.Tensor):
        args = {**args, "threshold": threshold.to(device=boxes.device, dtype=logits.dtype)}
    # unbind itself: iterating a tensor adds Python-level checks (microseconds a frame).
    frames = zip(boxes.unbind(0), logits.unbind(0), masks.unbind(0), plan)
    return [_frame(frame_boxes, frame_logits, frame_masks, frame_plan, args, rle) for frame_boxes, frame_logits, frame_masks, frame_plan in frames]


def make_wrapper(module: ModuleType, name: str, current: Callable[[], Settings]) -> Callable[..., Any]:
    """The replacement for ``module.<name>`` (one of :data:`FUNCTIONS`); the original stays the stock path."""
    original = module.__dict__[name]
    signature = inspect.signature(original)
    parameters = signature.parameters
    names = frozenset(parameters)
    defaults = {name: p.default for name, p in parameters.items() if p.default is not inspect.Parameter.empty}
    required = names - defaults.keys()
    rle = FUNCTIONS[name] == "rle"
    label = module.__name__.rsplit(".", 1)[-1]

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        global _disabled
        settings = current()

        def stock() -> Any:
            return original(*args, **kwargs)

        if _disabled is not None:
            return _fallback(label, _disabled, settings.strict, stock)
        if not args and required <= kwargs.keys() <= names:
            # The model classes pass every argument by name: no binding needed.
            arguments = {**defaults, **kwargs}
        else:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            arguments = dict(bound.arguments)
        try:
            result = _serve(arguments, rle)
        except Exception as error:  # noqa: BLE001 - a compile/launch failure must not lose the frame
            _disabled = "kernel-error"
            logger.warning("fused post-processing failed (%s: %s)", type(error).__name__, error)
            return _fallback(label, "kernel-error", settings.strict, stock, error)
        if isinstance(result, str):
            return _fallback(label, result, settings.strict, stock)
        count("postprocess")
        return result

    wrapper.__doc__ = original.__doc__
    wrapper.__name__ = original.__name__
    wrapper.__qualname__ = original.__qualname__
    wrapper.__wrapped__ = original  # type: ignore[attr-defined]
    return wrapper


def patches(module: ModuleType, current: Callable[[], Settings]) -> list[tuple[ModuleType, str, Callable[..., Any]]]:
    """The wrapped stock functions of one model module."""
    return [(module, name, make_wrapper(module, name, current)) for name in FUNCTIONS if name in module.__dict__]
