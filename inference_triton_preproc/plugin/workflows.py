"""Surface ``workflows``: the instance-segmentation block's ``sv.Detections``, built fast, for RF-DETR.

roboflow-workflows' ``roboflow_core/roboflow_instance_segmentation_model@v3`` block
(``RoboflowInstanceSegmentationModelBlockV3``) turns each response of the model into
``sv.Detections`` in ``_post_process_result``, through its module's
``convert_inference_detections_batch_to_sv_detections``: polygons with fewer than 3
points are dropped, then ``sv.Detections.from_inference`` fills every polygon into a
full-frame canvas from a per-point list (most of the block's time at 1080p).

Under the post-processing switch (``RFDETR_TRITON_FULLPOSTPROC``) three things of that
module are wrapped:

* ``RoboflowInstanceSegmentationModelBlockV3._post_process_result``: it is the one
  place where the block's model is at hand (its ``model_id`` and the block's model
  manager). When the step runs locally and that model is an inference-models RF-DETR
  instance-segmentation model (one of the classes of ``_hook.MODEL_TARGETS``, found
  through inference's adapter), the call runs with this thread marked as serving
  that model; any other model, and remote steps, run the host's code untouched.
* the module's ``convert_inference_detections_batch_to_sv_detections`` (the name the
  block calls): unmarked calls go to the host's function as they are. Marked calls
  drop short polygons with the host's own ``filter_out_invalid_polygons``, fill the
  masks with :func:`.polygons.fill_polygon_masks` (same OpenCV call, same canvas
  size, vertex array built once per frame, no per-detection canvas or copy), and let
  the host's function build everything else from the predictions without their
  ``points`` (boxes, confidences, classes, class names, tracker ids, detection and
  parent ids, image dimensions, inference ids): those come out of the host's code,
  so they equal the stock ones by construction. The masks are then set on the
  returned ``sv.Detections`` (None for an empty frame, as stock).
* ``RoboflowInstanceSegmentationModelBlockV3._finalize_prediction_responses``, where the
  block dumps the adapter's response objects to the dicts it converts: the objects are
  noted for the call, so that the conversion can fill each frame from the int32 polygons
  the adapter surface kept beside its response (:func:`.polygons.kept_polygons`) rather
  than read the dumped vertices back. They are used only when the frame's response is
  that very object, each prediction still holds the very ``points`` list the polygon was
  kept with, and every dumped polygon has the kept one's length; the points are the
  polygon's vertices as floats, which supervision rounds back to the same integers. Any
  other frame is filled from its dumped points.
* ``RoboflowInstanceSegmentationModelBlockV3.run_locally``, where the block asks its model
  for the responses and converts them: when the step's model is already an RF-DETR seg
  model served here and nothing but the block can read the responses
  (:func:`_responses_private`), the call runs inside :func:`.polygons.polygons_suffice`,
  so the adapter surface keeps the polygons *instead of* making ``Point`` objects and
  each prediction's ``points`` is left empty. The block's dump then carries ``"points":
  []``; the conversion lets the host's filter see each polygon's length through a
  stand-in of that length and fills the masks from the polygons. A frame that it does
  not serve for any reason (unmarked, unresolved, or a fallback) gets its points back
  first, as :func:`.polygons.vertex_dicts` rebuilds them: exactly the dicts the block
  would have dumped, so the host's function sees the stock input.

A frame the fast path cannot reproduce exactly goes through the host's function
unchanged, counted as ``"workflows:<reason>"`` (:data:`FALLBACK_REASONS`) and logged
once per model and reason; strict mode (``RFDETR_TRITON_PREPROC_STRICT=1``) raises
:class:`~inference_triton_preproc.plugin.fallbacks.FallbackError` instead. Every
frame served counts ``"workflows"``.

Besides roboflow-workflows (the owner of the patched functions, :data:`HOST`), the
surface relies on supervision's ``from_inference`` semantics and on inference's
model manager and adapter to find the model: both ranges of
:mod:`.package` are checked before anything is patched.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from types import ModuleType
from typing import Any

from . import _hook
from .config import Settings
from .fallbacks import count, fall_back
from .package import unsupported_reason
from .polygons import NonFiniteVertex, fill_polygon_masks, fill_polygons, kept_polygons, polygons_suffice, vertex_dicts

HOST = "roboflow-workflows"
# Hosts whose behaviour the surface relies on without patching them.
READ_HOSTS = ("supervision", "inference")

MODULE = "roboflow_workflows.core_steps.models.roboflow.instance_segmentation.v3"
BLOCK = "RoboflowInstanceSegmentationModelBlockV3"
CONVERT = "convert_inference_detections_batch_to_sv_detections"
FINALIZE = "_finalize_prediction_responses"
RUN_LOCALLY = "run_locally"
UTILS = "roboflow_workflows.core_steps.common.utils"

SERVED = "workflows"
# Why a frame goes to the host's conversion; the counter key is "workflows:<reason>".
FALLBACK_REASONS = {
    "model-unresolved": "the block's model manager does not say which model serves the step",
    "not-a-list": "the response's predictions are not a list",
    "rle": "a prediction carries an RLE mask (supervision decodes it instead of the polygon)",
    "box-only": "a prediction has no polygon (supervision then drops every mask of the frame)",
    "vertices": "a polygon's vertices are not x/y numbers",
    "non-finite": "a polygon vertex is not finite (supervision raises on it)",
    "image-size": "the response has no usable image width/height",
}

logger = logging.getLogger(__name__)

# inference's models provider, and the model managers (inference 1.8) that hand a workflow
# request's responses to nobody but the caller: active learning registers only requests its
# caller marks eligible, which the provider never does; the model-monitoring cache keeps
# each prediction's class and confidence only (while inference's TINY_CACHE is on).
_PROVIDER = ("inference.core.interfaces.workflows_models_provider", "ModelManagerModelsProvider")
_PRIVATE_MANAGERS = frozenset(
    {
        ("inference.core.managers.base", "ModelManager"),
        ("inference.core.managers.decorators.fixed_size_cache", "WithFixedSizeCache"),
        ("inference.core.managers.active_learning", "ActiveLearningManager"),
        ("inference.core.managers.active_learning", "BackgroundTaskActiveLearningManager"),
    }
)
_MONITORING = "inference.core.cache.serializers"

# On this thread: ``model``, the model id a block call serves (unset outside marked
# calls); ``responses``, the response objects the block is converting (unset outside).
_serving = threading.local()
_logged: set[tuple[str, str]] = set()


def patch(module: ModuleType, settings: Settings, current: Callable[[], Settings]) -> list[tuple[Any, str, Callable]]:
    """The block's ``_post_process_result`` and the module's conversion, wrapped, when ``settings`` switch them on."""
    if not settings.postprocess:
        return []
    for host in READ_HOSTS:
        reason = unsupported_reason(host=host)
        if reason is not None:
            logger.warning("inference-triton-preproc leaves %s unpatched: %s", module.__name__, reason)
            return []
    block = getattr(module, BLOCK)
    utils = importlib.import_module(UTILS)
    local = module.StepExecutionMode.LOCAL
    post_process = _wrap_post_process(block.__dict__["_post_process_result"], local)
    finalize = _wrap_finalize(block.__dict__[FINALIZE])
    run_locally = _wrap_run_locally(block.__dict__[RUN_LOCALLY], local)
    convert = _wrap_convert(module.__dict__[CONVERT], utils.filter_out_invalid_polygons, current)
    return [
        (block, "_post_process_result", post_process),
        (block, FINALIZE, finalize),
        (block, RUN_LOCALLY, run_locally),
        (module, CONVERT, convert),
    ]


def _served_model(block: Any, model_id: Any, local_mode: Any) -> str | None:
    """``""`` when ``block`` serves ``model_id`` with an RF-DETR seg model here, None when not, else a fallback reason.

    The block keeps its models provider in ``_model_manager``; inference's provider
    wraps the server's ``ModelManager`` (``_model_manager`` again), whose item is
    inference's adapter, whose ``_model`` is the inference-models model.
    """
    if getattr(block, "_step_execution_mode", None) is not local_mode:
        return None
    provider = getattr(block, "_model_manager", None)
    try:
        if provider is None or model_id not in provider:
            return None
        manager = getattr(provider, "_model_manager", provider)
        adapter = manager[model_id]
    except Exception:  # noqa: BLE001 - any provider that cannot name its model
        return "model-unresolved"
    return "" if _hook.is_rfdetr_segmentation(getattr(adapter, "_model", None)) else None


def _qualified(obj: Any) -> tuple[str, str]:
    return type(obj).__module__, type(obj).__qualname__


def _responses_private(block: Any) -> bool:
    """Whether nothing between ``block`` and its model can read the model's responses.

    True when the block's models provider is inference's, every model manager behind it
    is one of :data:`_PRIVATE_MANAGERS` (decorators are followed through their
    ``model_manager``), and the model-monitoring cache keeps condensed responses.
    """
    provider = getattr(block, "_model_manager", None)
    if _qualified(provider) != _PROVIDER:
        return False
    manager = getattr(provider, "_model_manager", None)
    if manager is None:
        return False
    while manager is not None:
        if _qualified(manager) not in _PRIVATE_MANAGERS:
            return False
        manager = manager.__dict__.get("model_manager")
    return getattr(sys.modules.get(_MONITORING), "TINY_CACHE", False) is True


def _wrap_run_locally(original: Callable[..., Any], local_mode: Any) -> Callable[..., Any]:
    signature = inspect.signature(original)

    @functools.wraps(original)
    def run_locally(self: Any, *args: Any, **kwargs: Any) -> Any:
        model_id = signature.bind(self, *args, **kwargs).arguments.get("model_id")
        # Before the block's first call its model is not loaded yet: that frame keeps its points.
        if _served_model(self, model_id, local_mode) != "" or not _responses_private(self):
            return original(self, *args, **kwargs)
        with polygons_suffice():
            return original(self, *args, **kwargs)

    return run_locally


def _wrap_post_process(original: Callable[..., Any], local_mode: Any) -> Callable[..., Any]:
    signature = inspect.signature(original)

    @functools.wraps(original)
    def _post_process_result(self: Any, *args: Any, **kwargs: Any) -> Any:
        model_id = signature.bind(self, *args, **kwargs).arguments.get("model_id")
        served = _served_model(self, model_id, local_mode)
        if served is None:
            return original(self, *args, **kwargs)
        previous = getattr(_serving, "model", None)
        # An unresolved model still goes through the conversion wrapper, which records the reason.
        _serving.model = (str(model_id), served)
        try:
            return original(self, *args, **kwargs)
        finally:
            _serving.model = previous

    return _post_process_result


def _wrap_finalize(original: Callable[..., Any]) -> Callable[..., Any]:
    signature = inspect.signature(original)

    @functools.wraps(original)
    def _finalize_prediction_responses(self: Any, *args: Any, **kwargs: Any) -> Any:
        responses = signature.bind(self, *args, **kwargs).arguments.get("predictions")
        previous = getattr(_serving, "responses", None)
        _serving.responses = responses if isinstance(responses, list) else None
        try:
            return original(self, *args, **kwargs)
        finally:
            _serving.responses = previous

    return _finalize_prediction_responses


def _kept_frame_polygons(response: Any, predictions: Any) -> tuple[list[Any], bool] | None:
    """The adapter's int32 polygons of a frame, one per dumped prediction, when they still hold.

    ``response`` is the object the block dumped into the frame whose ``predictions``
    are given. Returns the polygons in order and whether the points were left out of
    the response (then every dumped ``points`` is an empty list); None when any check
    of the module docstring fails.
    """
    kept = kept_polygons(response)
    objects = getattr(response, "predictions", None)
    if kept is None or not isinstance(objects, list) or not isinstance(predictions, list):
        return None
    if not len(kept.pairs) == len(objects) == len(predictions):
        return None
    for prediction, dumped, (points, polygon) in zip(objects, predictions, kept.pairs):
        dumped_points = dumped.get("points") if isinstance(dumped, Mapping) else None
        if getattr(prediction, "points", None) is not points or not isinstance(dumped_points, list):
            return None
        expected = 0 if kept.points_omitted else len(polygon)
        if not len(points) == len(dumped_points) == expected:
            return None
    return [polygon for _, polygon in kept.pairs], kept.points_omitted


def _with_points(frame: Mapping[str, Any], key: str, polygons: list[Any]) -> dict[str, Any]:
    """``frame`` with each prediction's left-out points rebuilt: the stock dump of the frame."""
    return {**frame, key: [{**p, "points": vertex_dicts(polygon)} for p, polygon in zip(frame[key], polygons)]}


def _with_all_points(predictions: list[Any], key: str) -> list[Any]:
    """``predictions`` with the points of every frame that left them out rebuilt (:func:`_with_points`)."""
    responses = getattr(_serving, "responses", None)
    if responses is None or len(responses) != len(predictions):
        return predictions
    frames = []
    for response, frame in zip(responses, predictions):
        handed = _kept_frame_polygons(response, frame.get(key) if isinstance(frame, Mapping) else None)
        frames.append(_with_points(frame, key, handed[0]) if handed is not None and handed[1] else frame)
    return frames


def _fallback(model_id: str, reason: str, strict: bool) -> None:
    text = FALLBACK_REASONS[reason]
    fall_back(
        f"{SERVED}:{reason}",
        strict=strict,
        logged=_logged,
        once=(model_id, reason),
        logger=logger,
        message=f"{model_id}: stock sv.Detections conversion used: {text}",
        error_message=f"workflows conversion for {model_id}: {text}",
    )


def _polygons(predictions: Any) -> list[Sequence[Mapping[str, Any]]] | str:
    """Each prediction's ``points`` when the frame can be served, else the fallback reason."""
    if not isinstance(predictions, list):
        return "not-a-list"
    polygons = []
    for prediction in predictions:
        if not isinstance(prediction, Mapping):
            return "vertices"
        # Any RLE key, valid or not, leaves the frame to supervision's own rules.
        if prediction.get("rle") is not None or prediction.get("rle_mask") is not None:
            return "rle"
        points = prediction.get("points")
        if points is None:
            return "box-only"
        # The host's filter has removed shorter lists; anything else it kept is not a polygon we serve.
        if not isinstance(points, (list, tuple)) or len(points) < 3:
            return "box-only"
        polygons.append(points)
    return polygons


def _frame_masks(
    frame: Mapping[str, Any], kept: list[Any], polygons: list[Sequence[Mapping[str, Any]]], handed: dict[int, Any] | None
) -> Any:
    """The frame's ``(N, H, W)`` bool masks, or the fallback reason.

    ``kept``: the frame's predictions the host's filter kept; ``polygons``: their points;
    ``handed``: the adapter's polygons by ``id`` of each prediction the filter saw.
    """
    try:
        image = frame["image"]
        width, height = int(image["width"]), int(image["height"])
    except (KeyError, TypeError, ValueError):
        return "image-size"
    if handed is not None and all(id(p) in handed for p in kept):
        return fill_polygons([handed[id(p)] for p in kept], width=width, height=height)
    try:
        return fill_polygon_masks(polygons, width=width, height=height)
    except NonFiniteVertex:
        return "non-finite"
    except (KeyError, TypeError, ValueError):
        return "vertices"


def _wrap_convert(
    original: Callable[..., Any], filter_polygons: Callable[..., Any], current: Callable[[], Settings]
) -> Callable[..., Any]:
    @functools.wraps(original)
    def convert(
        predictions: list[dict[str, Any]], predictions_key: str = "predictions", image_key: str = "image"
    ) -> Any:
        marked = getattr(_serving, "model", None)
        if marked is None:
            return original(_with_all_points(predictions, predictions_key), predictions_key, image_key)
        model_id, unresolved = marked
        strict = current().strict
        if unresolved:
            for _ in predictions:
                _fallback(model_id, unresolved, strict)
            return original(_with_all_points(predictions, predictions_key), predictions_key, image_key)
        prepared: list[dict[str, Any]] = []
        masks: dict[int, Any] = {}
        responses = getattr(_serving, "responses", None)
        if responses is not None and len(responses) != len(predictions):
            responses = None
        for index, frame in enumerate(predictions):
            dumped = frame[predictions_key]
            handed = None if responses is None else _kept_frame_polygons(responses[index], dumped)
            polygons_of_frame, omitted = handed if handed is not None else (None, False)
            if omitted:
                # The host's filter reads only a polygon's length: a stand-in of that length.
                dumped = [{**p, "points": (None,) * len(polygon)} for p, polygon in zip(dumped, polygons_of_frame)]
            by_id = None if handed is None else {id(p): polygon for p, polygon in zip(dumped, polygons_of_frame)}
            kept = filter_polygons(predictions=dumped)
            polygons = _polygons(kept)
            frame_masks = _frame_masks(frame, kept, polygons, by_id) if isinstance(polygons, list) else polygons
            if isinstance(frame_masks, str):
                _fallback(model_id, frame_masks, strict)
                prepared.append(_with_points(frame, predictions_key, polygons_of_frame) if omitted else frame)
                continue
            # Without points the host builds box-only detections: every other field, by its own code.
            prepared.append({**frame, predictions_key: [{k: v for k, v in p.items() if k != "points"} for p in kept]})
            masks[index] = frame_masks
        detections = original(prepared, predictions_key, image_key)
        for index, frame_masks in masks.items():
            if len(detections[index]):
                detections[index].mask = frame_masks
            count(SERVED)
        return detections

    return convert
