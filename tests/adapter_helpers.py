"""Shared by the tests of the ``inference_adapter`` surface: the real inference adapter, stock vs ours.

Stock and ours are the same adapter object with the surface uninstalled / installed. Each
prediction's ``detection_id`` comes from ``uuid4``; it is made deterministic (a counter
restarted for every arm) so that whole responses can be compared with ``==``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch

# inference reads these when it is first imported; the adapter module copies two of them.
LOCAL_PACKAGE_ENV = {
    "ALLOW_INFERENCE_MODELS_DIRECTLY_ACCESS_LOCAL_PACKAGES": "True",
    "ALLOW_INFERENCE_MODELS_UNTRUSTED_PACKAGES": "True",
    "DISABLE_VERSION_CHECK": "True",
}
for _name, _value in LOCAL_PACKAGE_ENV.items():
    os.environ.setdefault(_name, _value)

ADAPTER_MODULE = "inference.core.models.inference_models_adapters"


def adapter_module() -> Any:
    import inference.core.models.inference_models_adapters as module

    # Allow local packages even when inference was imported before the variables were set.
    module.ALLOW_INFERENCE_MODELS_DIRECTLY_ACCESS_LOCAL_PACKAGES = True
    module.ALLOW_INFERENCE_MODELS_UNTRUSTED_PACKAGES = True
    return module


def make_adapter(device: str = "cpu") -> Any:
    """The real ``InferenceModelsInstanceSegmentationAdapter`` over the embedded random-weight package."""
    from inference_triton_preproc.validate.default_model import default_model_path

    module = adapter_module()
    return module.InferenceModelsInstanceSegmentationAdapter(model_id=str(default_model_path("torch")), device=torch.device(device))


@contextlib.contextmanager
def surface(model_postprocess: bool = False, strict: bool = False, workflows: bool = False, pipeline: bool = False) -> Iterator[None]:
    """The post-processing switch on, with (``model_postprocess``) or without the model-level path.

    Without it only inference's adapter module is a target (and the workflows block's
    module with ``workflows``, InferencePipeline's with ``pipeline``), so the adapter is
    fed the stock model's dense/RLE masks.
    """
    import importlib

    import inference_triton_preproc as itp
    from inference_triton_preproc.plugin import _hook, surface_patched

    itp.uninstall()
    with pytest.MonkeyPatch.context() as patcher:
        if not model_postprocess:
            targets = {ADAPTER_MODULE: "inference_adapter"}
            if workflows:
                targets[_hook.WORKFLOWS_TARGET] = "workflows"
            if pipeline:
                targets[_hook.PIPELINE_TARGET] = "pipeline"
            patcher.setattr(_hook, "TARGETS", targets)
        assert itp.install(strict=strict, postprocess=True, preprocess=False)
        for wanted, name, target in ((workflows, "workflows", _hook.WORKFLOWS_TARGET), (pipeline, "pipeline", _hook.PIPELINE_TARGET)):
            if wanted:
                importlib.import_module(target)
                assert surface_patched(name)
        try:
            yield
        finally:
            itp.uninstall()


@contextlib.contextmanager
def deterministic_ids() -> Iterator[None]:
    """``detection_id`` = a counter from 0 (both the pydantic and the dataclass predictions)."""
    import inference.core.entities.responses.inference as dataclass_entities
    import roboflow_workflows.core_steps.common.segmentation_entities as entities

    counter = itertools.count()

    def ids() -> uuid.UUID:
        return uuid.UUID(int=next(counter))

    with pytest.MonkeyPatch.context() as patcher:
        patcher.setattr(entities, "uuid4", ids)
        patcher.setattr(dataclass_entities, "uuid4", ids)
        yield


def infer_all(adapter: Any, frames: list[Any], **kwargs: Any) -> list[Any]:
    """``adapter.infer(frame, **kwargs)`` for each frame, with deterministic detection ids."""
    with deterministic_ids():
        return [adapter.infer(frame, **kwargs) for frame in frames]


def stock_and_ours(adapter: Any, frames: list[Any], model_postprocess: bool = False, **kwargs: Any) -> tuple[list, list]:
    """Responses of the stock adapter and of the surface for the same frames and request."""
    import inference_triton_preproc as itp

    itp.uninstall()
    want = infer_all(adapter, frames, **kwargs)
    with surface(model_postprocess):
        got = infer_all(adapter, frames, **kwargs)
    return want, got


def leaf_types(value: Any) -> Any:
    """The structure of a dump with the type of every leaf (1 == 1.0, but int is not float)."""
    if isinstance(value, dict):
        return {key: leaf_types(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [leaf_types(item) for item in value]
    return type(value)


def assert_same_responses(want: list, got: list) -> None:
    """Equal response objects, equal ``model_dump()`` (with equal leaf types), equal field sets."""
    assert got == want
    dumps_want = [[r.model_dump() for r in rs] for rs in want]
    dumps_got = [[r.model_dump() for r in rs] for rs in got]
    assert dumps_got == dumps_want
    assert leaf_types(dumps_got) == leaf_types(dumps_want)
    assert [[r.model_dump_json() for r in rs] for rs in got] == [[r.model_dump_json() for r in rs] for rs in want]
    for responses_want, responses_got in zip(want, got):
        for a, b in zip(responses_want, responses_got):
            assert type(a) is type(b) and a.model_fields_set == b.model_fields_set
            for p, q in zip(a.predictions, b.predictions):
                assert type(p) is type(q) and p.model_fields_set == q.model_fields_set
                slots = ("__class__", "model_fields_set", "__pydantic_extra__", "__pydantic_private__")
                assert [[getattr(pt, s) for s in slots] for pt in getattr(p, "points", [])] == [
                    [getattr(pt, s) for s in slots] for pt in getattr(q, "points", [])
                ]


def assert_contours_equal(masks: np.ndarray | torch.Tensor) -> None:
    """largest_contours (crops, on the masks' device) == inference's masks2poly on the full host frames."""
    from inference.core.utils.postprocess import masks2poly

    from inference_triton_preproc.runtime.contours import largest_contours

    host = masks.cpu().numpy() if isinstance(masks, torch.Tensor) else masks
    want = masks2poly(host)
    got = largest_contours(torch.as_tensor(masks))
    assert len(got) == len(want)
    for a, b in zip(want, got):
        assert b.shape == a.shape and np.array_equal(b.astype(np.float32), a)


def count_predictions(responses: list) -> int:
    return sum(len(r.predictions) for rs in responses for r in rs)
