"""Surface ``inference_adapter``: inference's ``InferenceModelsInstanceSegmentationAdapter`` response building.

Switched on by the post-processing switch (``RFDETR_TRITON_FULLPOSTPROC``). The stock
``_postprocess_sync`` asks the model for RLE masks (when the request does not enforce
dense ones), then either returns them (``response_mask_format="rle"``) or decodes them
back to full-frame masks on the host, traces each full frame with ``cv2.findContours``
and validates one pydantic ``Point`` per polygon vertex. The wrapper returns the same
responses (``==``, and equal ``model_dump()``, field types included) with less work:

* polygon responses ask the model for dense masks, which stay on its device; the
  foreground bounding boxes are found there, the crops reach the host in one transfer
  (page-locked on CUDA) and are traced with offsets (:mod:`..runtime.contours`): no
  full-frame copy, no RLE round trip;
* boxes, confidences, class ids (and the crop boxes) come over in one small transfer;
  box centres and sizes are computed for all detections at once in float64, which is
  what the stock per-detection Python floats compute;
* the ``Point`` objects are made directly, sharing one fields set, instead of one
  validating ``Point(...)`` call per vertex from numpy scalars (:mod:`..points`: equal
  objects, half the objects the garbage collector tracks); point models whose
  validation could change a float are validated from plain dicts inside the prediction;
* for workflow requests (``source="workflow-execution"``), while the workflows surface
  is patched, the traced int32 polygons are kept beside each response
  (:func:`..polygons.keep_polygons`), so that the workflows surface fills the block's
  masks from them instead of reading the dumped points back. Inside
  :func:`..polygons.polygons_suffice` (opened by the workflows surface around the one
  block call whose conversion reads them, and by the pipeline surface around the
  ``infer`` whose responses are only dumped) the polygons are kept *instead of* the
  points: each prediction's ``points`` is left an empty list, and no ``Point`` is made.

RLE responses keep the model's RLE (whatever post-processing produced it) and only
build the responses. Whatever the wrapper does not reproduce exactly goes to the stock
method with a reason (:data:`FALLBACK_REASONS`), counted as ``"adapter:<reason>"`` in
:func:`~inference_triton_preproc.plugin.call_counts` and logged once per adapter
(``FallbackError`` in strict mode); served calls count ``"adapter"``.

With ``RFDETR_TRITON_GC_FREEZE`` on, the first call of either method (served or not)
ends with :func:`..runtime.heap.freeze_loaded_heap`, counted once as ``"gc-freeze"``.

Pipelining: at ``RFDETR_PIPELINE_DEPTH >= 2`` (models with the deferred hand-off, RF-DETR
TRT) the pipelined frames' responses are built by the stock ``_finalize_future``, whose
contract (futures, done-events, deferred finalizers) is left untouched; the wrapper of
``_finalize_future`` only counts and logs that fallback. Calls that still reach
``_postprocess_sync`` at that depth (batches) are served as at depth 1.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

import numpy as np

from ..runtime.heap import freeze_loaded_heap
from . import surface_patched
from .config import Settings
from .fallbacks import count, fall_back
from .points import point_builder
from .polygons import keep_polygons, points_needed, vertex_dicts, vertex_pairs

__all__ = ["ADAPTER_CLASS", "FALLBACK_REASONS", "HOST", "patch"]

HOST = "inference"
MODULE = "inference.core.models.inference_models_adapters"
ADAPTER_CLASS = "InferenceModelsInstanceSegmentationAdapter"

logger = logging.getLogger(__name__)

_LOGGED_ATTRIBUTE = "_triton_preproc_adapter_logged"

# Why a call goes to the stock method; counted as "adapter:<key>", logged once per adapter.
FALLBACK_REASONS = {
    "pipelined": "a frame pipelined at RFDETR_PIPELINE_DEPTH >= 2: the stock deferred hand-off builds its response",
    "mask-grid-opt-in": "the request opts in to reduced mask resolution (allow_reduced_mask_resolution): responses on the mask grid",
    "dataclass-responses": "a workflow request at pipeline depth >= 2 gets dataclass responses",
    "upstream-triton": "INFERENCE_MODELS_RFDETR_TRITON_POSTPROC_ENABLED is on: the stock polygons come from upstream's RLE masks",
    "rle-from-dense": "RLE responses from dense masks (dense masks enforced, or no RLE from the model): the stock path encodes them",
    "no-dense-masks": "the model does not offer dense masks",
    "handoff": "the detections carry a deferred GPU hand-off for the stock response builder",
    "mask-grid": "the masks are on a grid other than the image's (the stock path rescales polygons)",
    "mask-type": "the masks are neither (N, H, W) bool tensors (polygons) nor RLE masks (RLE responses)",
    "dtypes": "boxes, confidences or class ids have dtypes other than int32/float32, float32, int32",
}

# Attributes through which another code line hands GPU results to the stock builder.
_HANDOFF_ATTRIBUTES = ("_combined_gpu", "_mask_gpu", "_mask_packed_gpu", "_mask_cpu")


def _fall_back(adapter: Any, reason: str, current: Callable[[], Settings]) -> None:
    """Count ``reason``, log it once per adapter, or raise in strict mode."""
    name, text = type(adapter).__name__, FALLBACK_REASONS[reason]
    fall_back(
        f"adapter:{reason}",
        strict=current().strict,
        logged=adapter.__dict__.setdefault(_LOGGED_ATTRIBUTE, set()),
        once=reason,
        logger=logger,
        message=f"{name}: stock response building used: {text}",
        error_message=f"{name}: {text}",
    )


def _request_reason(adapter: Any, module: ModuleType, kwargs: dict) -> str | None:
    """Why the stock method must serve this request, or None (decided before the model runs)."""
    return_in_rle = kwargs.get("response_mask_format") == "rle"
    if kwargs.get("allow_reduced_mask_resolution", False):
        return "mask-grid-opt-in"
    if kwargs.get("source") == "workflow-execution" and not return_in_rle and getattr(adapter, "_pipeline_depth", 1) > 1:
        return "dataclass-responses"
    formats = adapter._model.supported_mask_formats
    if return_in_rle:
        enforce_dense = kwargs.get("enforce_dense_masks_in_inference_models", False) and not module.GCP_SERVERLESS
        if enforce_dense or "rle" not in formats:
            return "rle-from-dense"
        return None
    if "rle" in formats and module.INFERENCE_MODELS_RFDETR_TRITON_POSTPROC_ENABLED:
        return "upstream-triton"
    if "dense" not in formats:
        return "no-dense-masks"
    return None


def _detections_reason(module: ModuleType, detections: Sequence[Any], metadata: Sequence[Any], return_in_rle: bool) -> str | None:
    """Why the stock builder must turn these detections into responses, or None."""
    import torch

    from inference_models.models.base.async_handoff import get_deferred_postprocess_handoff
    from inference_models.models.base.types import InstancesRLEMasks

    for det, meta in zip(detections, metadata):
        if get_deferred_postprocess_handoff(det) is not None or any(
            getattr(det, name, None) is not None for name in _HANDOFF_ATTRIBUTES
        ):
            return "handoff"
        if return_in_rle:
            if not isinstance(det.mask, InstancesRLEMasks):
                return "mask-type"
        elif not (isinstance(det.mask, torch.Tensor) and det.mask.dtype == torch.bool and det.mask.ndim == 3):
            return "mask-type"
        size = (meta.original_size.height, meta.original_size.width)
        if det.mask_size is not None and tuple(det.mask_size) != size:
            return "mask-grid"
        if (
            det.xyxy.dtype not in (torch.int32, torch.float32)
            or det.confidence.dtype != torch.float32
            or det.class_id.dtype != torch.int32
        ):
            return "dtypes"
    return None


def _response(
    adapter: Any,
    module: ModuleType,
    det: Any,
    meta: Any,
    return_in_rle: bool,
    class_filter: Any,
    keep: bool = False,
    omit_points: bool = False,
) -> Any:
    """The stock response for one image's detections (see the module docstring for how).

    ``keep``: keep the polygons beside the response for the workflows surface;
    ``omit_points`` (with ``keep``): keep them instead of the points, left empty.
    """
    import torch

    from ..runtime.contours import foreground_boxes, largest_contours, to_host

    height, width = meta.original_size.height, meta.original_size.width
    predictions: list[Any] = []
    polygons: list[np.ndarray] = []
    n = len(det)
    if n:
        columns = [
            det.xyxy.view(torch.int32),
            det.confidence.view(torch.int32)[:, None],
            det.class_id[:, None],
        ]
        if not return_in_rle:
            columns.append(foreground_boxes(det.mask))
        host = to_host(torch.cat([c.to(det.xyxy.device) for c in columns], dim=1)).copy()
        xyxy = host[:, :4].view(np.float32) if det.xyxy.dtype == torch.float32 else host[:, :4]
        x1, y1, x2, y2 = xyxy.astype(np.float64).T
        centre_x, centre_y = ((x1 + x2) / 2.0).tolist(), ((y1 + y2) / 2.0).tolist()
        box_w, box_h = (x2 - x1).tolist(), (y2 - y1).tolist()
        confidences = host[:, 4].view(np.float32).astype(np.float64).tolist()
        class_ids = host[:, 5].tolist()
        names = adapter.class_names
        class_names = [names[c] if 0 <= c < len(names) else str(c) for c in class_ids]
        kept = [i for i, name in enumerate(class_names) if not (class_filter and name not in class_filter)]
        if return_in_rle:
            rles = det.mask.to_coco_rle_masks()
            shapes: list[Any] = []
            for i in kept:
                rle = rles[i]
                if isinstance(rle["counts"], bytes):
                    rle["counts"] = rle["counts"].decode("ascii")
                shapes.append(rle)
            prediction_class, shape_field = module.InstanceSegmentationRLEPrediction, "rle"
        else:
            polygons = largest_contours(det.mask, host[:, 6:10], kept)
            prediction_class, shape_field = module.InstanceSegmentationPrediction, "points"
            build = point_builder(prediction_class)
            if omit_points:
                # One list each: the reader checks each prediction's list by identity.
                shapes = [[] for _ in polygons]
            elif build is None:
                shapes = [vertex_dicts(polygon) for polygon in polygons]
            else:
                shapes = [build(vertex_pairs(polygon)) for polygon in polygons]
        for i, shape in zip(kept, shapes):
            predictions.append(
                prediction_class(
                    x=centre_x[i],
                    y=centre_y[i],
                    width=box_w[i],
                    height=box_h[i],
                    confidence=confidences[i],
                    class_id=class_ids[i],
                    **{"class": class_names[i], shape_field: shape},
                )
            )
    response = module.InstanceSegmentationInferenceResponse(
        predictions=predictions,
        image=module.InferenceResponseImage(width=width, height=height),
        original_image=None,
        mask_metadata=None,
    )
    if keep and not return_in_rle:
        pairs = [(p.points, polygon) for p, polygon in zip(response.predictions, polygons)]
        keep_polygons(response, pairs, points_omitted=omit_points)
    return response


def _freezing(call: Callable[..., Any]) -> Callable[..., Any]:
    """``call``, then the once-per-process heap freeze (``RFDETR_TRITON_GC_FREEZE``)."""

    @functools.wraps(call)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return call(*args, **kwargs)
        finally:
            if freeze_loaded_heap() is not None:
                count("gc-freeze")

    return wrapper


def _wrap_postprocess_sync(original: Callable[..., Any], module: ModuleType, current: Callable[[], Settings]) -> Callable[..., Any]:
    @functools.wraps(original)
    def _postprocess_sync(self: Any, predictions: Any, preprocess_return_metadata: Any, **kwargs: Any) -> Any:
        reason = _request_reason(self, module, kwargs)
        if reason is not None:
            _fall_back(self, reason, current)
            return original(self, predictions, preprocess_return_metadata, **kwargs)
        return_in_rle = kwargs.get("response_mask_format") == "rle"
        # The host's own mapping (it edits the dict it gets and returns it).
        mapped = self.map_inference_kwargs(dict(kwargs))
        mapped["defer_count_to_adapter"] = not return_in_rle
        if not return_in_rle:
            mapped["mask_format"] = "dense"
        detections = self._model.post_process(predictions, preprocess_return_metadata, **mapped)
        reason = _detections_reason(module, detections, preprocess_return_metadata, return_in_rle)
        if reason is not None:
            _fall_back(self, reason, current)
            return self._build_responses_from_detections(
                detections, preprocess_return_metadata, allow_reduced_mask_resolution=False, **mapped
            )
        # Inside polygons_suffice (opened by the workflows or the pipeline surface) the
        # polygons stand in for the points; a visualisation would draw the points.
        omit = not points_needed() and not kwargs.get("visualize_predictions")
        # Else kept polygons only serve the workflows surface's conversion.
        keep = omit or (kwargs.get("source") == "workflow-execution" and surface_patched("workflows"))
        class_filter = kwargs.get("class_filter")
        responses = [
            _response(self, module, det, meta, return_in_rle, class_filter, keep=keep, omit_points=omit)
            for meta, det in zip(preprocess_return_metadata, detections)
        ]
        count("adapter")
        return responses

    return _postprocess_sync


def _wrap_finalize_future(original: Callable[..., Any], current: Callable[[], Settings]) -> Callable[..., Any]:
    @functools.wraps(original)
    def _finalize_future(self: Any, *args: Any, **kwargs: Any) -> Any:
        _fall_back(self, "pipelined", current)
        return original(self, *args, **kwargs)

    return _finalize_future


def patch(module: ModuleType, settings: Settings, current: Callable[[], Settings]) -> list[tuple[type, str, Callable]]:
    """The wrappers for inference's instance-segmentation adapter when post-processing is switched on."""
    if not settings.postprocess:
        return []
    cls = getattr(module, ADAPTER_CLASS)
    postprocess_sync = _wrap_postprocess_sync(cls.__dict__["_postprocess_sync"], module, current)
    finalize_future = _wrap_finalize_future(cls.__dict__["_finalize_future"], current)
    # Other settings re-patch from the host's originals, so this choice holds as long as the wrappers do.
    if settings.gc_freeze:
        postprocess_sync, finalize_future = _freezing(postprocess_sync), _freezing(finalize_future)
    return [(cls, "_postprocess_sync", postprocess_sync), (cls, "_finalize_future", finalize_future)]
