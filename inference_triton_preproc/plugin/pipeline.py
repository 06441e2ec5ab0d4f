"""Surface ``pipeline``: ``InferencePipeline.init(model_id=...)`` frames of RF-DETR seg, dumped without ``Point`` objects.

An InferencePipeline built with ``init(model_id=...)`` runs each batch of frames through
its module's ``default_process_frame``: the model's ``infer``, then each response dumped
with ``dict(by_alias=True, exclude_none=True)``. Its sinks (``on_prediction``, active
learning) get those dicts; the response objects are dropped. At 1080p a frame's
responses hold 10-30 thousand ``Point`` objects that exist only to be dumped.

Under the post-processing switch the module's ``default_process_frame`` (the name
``init`` binds) is wrapped. When its model is inference's
``InferenceModelsInstanceSegmentationAdapter`` serving an inference-models RF-DETR
instance-segmentation model, the host's function runs with a view of that model whose
``infer`` runs inside :func:`.polygons.polygons_suffice` and notes the responses it
returns. The adapter surface then keeps each response's int32 polygons *instead of* its
points (each ``points`` left an empty list), the host dumps those responses, and each
dumped prediction's ``points`` is set to :func:`.polygons.vertex_dicts` of its polygon:
exactly the dicts the stock points dump to, under the same key, so the sinks get dicts
equal to the stock ones, key order included. Responses that kept their points (any
adapter fallback, a pipelined frame's stock response) are dumped by the host as they
are. Any other model runs the host's function untouched.

Each frame completed this way counts ``"pipeline"``. The host's result must be one dict
per response, each with one prediction dict per kept polygon whose ``points`` is that
empty list; anything else would lose the points and raises :class:`PipelineContractError`
(the supported inference range of :mod:`.package` is where this holds).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from types import ModuleType
from typing import Any

from . import _hook, surface_patched
from .config import Settings
from .fallbacks import count
from .inference_adapter import ADAPTER_CLASS
from .polygons import kept_polygons, polygons_suffice, vertex_dicts

__all__ = ["FUNCTION", "HOST", "MODULE", "PipelineContractError", "patch"]

HOST = "inference"
MODULE = _hook.PIPELINE_TARGET
FUNCTION = "default_process_frame"
ADAPTER = (_hook.INFERENCE_ADAPTER_TARGET, ADAPTER_CLASS)
SERVED = "pipeline"


class PipelineContractError(RuntimeError):
    """The host's ``default_process_frame`` did not dump the responses the way the surface completes them."""


def patch(module: ModuleType, settings: Settings, current: Callable[[], Settings]) -> list[tuple[Any, str, Callable]]:
    """The module's ``default_process_frame``, wrapped, when ``settings`` switch post-processing on."""
    if not settings.postprocess:
        return []
    return [(module, FUNCTION, _wrap(module.__dict__[FUNCTION]))]


def serves(model: Any) -> bool:
    """Whether ``model`` is inference's instance-segmentation adapter over an RF-DETR seg model, with the adapter surface on."""
    adapter = any((cls.__module__, cls.__qualname__) == ADAPTER for cls in type(model).__mro__)
    return adapter and _hook.is_rfdetr_segmentation(getattr(model, "_model", None)) and surface_patched("inference_adapter")


class _Noting:
    """``model`` as the host's function sees it: its every attribute, with ``infer`` run
    inside :func:`.polygons.polygons_suffice` and its result noted in ``responses``."""

    def __init__(self, model: Any) -> None:
        self._model = model
        self.responses: Any = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def infer(self, *args: Any, **kwargs: Any) -> Any:
        with polygons_suffice():
            self.responses = self._model.infer(*args, **kwargs)
        return self.responses


def complete_dumps(dumps: Any, responses: Any) -> Any:
    """``dumps`` (the host's dicts of ``responses``, in order) with every left-out ``points`` filled in place.

    Args:
        dumps: what the host's function returned.
        responses: what the model's ``infer`` returned (a response or a list of them).

    Returns:
        ``dumps`` itself; each dumped prediction of a response whose points were left out
        now holds :func:`.polygons.vertex_dicts` of its kept polygon.

    Raises:
        PipelineContractError: a response left its points out, and ``dumps`` is not one
            dict per response with one prediction dict per kept polygon, each with an
            empty ``points`` list.
    """
    made = responses if isinstance(responses, list) else [responses]
    kept = [kept_polygons(response) for response in made]
    if not any(k is not None and k.points_omitted for k in kept):
        return dumps
    if not (isinstance(dumps, list) and len(dumps) == len(made)):
        raise PipelineContractError(f"{FUNCTION} returned {type(dumps).__name__}, not one dict per response ({len(made)})")
    # Every frame is checked before any is filled: a refused dump is left as the host made it.
    todo = []
    for index, (dump, frame) in enumerate(zip(dumps, kept)):
        if frame is None or not frame.points_omitted:
            continue
        predictions = dump.get("predictions") if isinstance(dump, dict) else None
        if not (
            isinstance(predictions, list)
            and len(predictions) == len(frame.pairs)
            and all(isinstance(p, dict) and p.get("points") == [] for p in predictions)
        ):
            raise PipelineContractError(f"{FUNCTION}: response {index} is not dumped with one empty 'points' per prediction")
        todo.append((predictions, frame.pairs))
    for predictions, pairs in todo:
        for prediction, (_points, polygon) in zip(predictions, pairs):
            prediction["points"] = vertex_dicts(polygon)
        count(SERVED)
    return dumps


def _wrap(original: Callable[..., Any]) -> Callable[..., Any]:
    signature = inspect.signature(original)

    @functools.wraps(original)
    def default_process_frame(*args: Any, **kwargs: Any) -> Any:
        if "model" in kwargs:
            # How ``init`` calls it: no binding needed.
            model = kwargs["model"]

            def call(view: _Noting) -> Any:
                return original(*args, **{**kwargs, "model": view})
        else:
            bound = signature.bind(*args, **kwargs)
            model = bound.arguments.get("model")

            def call(view: _Noting) -> Any:
                bound.arguments["model"] = view
                return original(*bound.args, **bound.kwargs)

        if not serves(model):
            return original(*args, **kwargs)
        noting = _Noting(model)
        return complete_dumps(call(noting), noting.responses)

    return default_process_frame
