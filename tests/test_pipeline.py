"""The ``pipeline`` surface: ``InferencePipeline.init(model_id=...)``'s per-frame function (CPU).

The host's real ``default_process_frame`` with inference's real adapter and the embedded
random-weight RF-DETR seg package, stock vs wrapped: the dicts the pipeline's sinks get
are equal, key order and leaf types included, and every frame was dumped without
``Point`` objects. The contract checks of :func:`complete_dumps` on real responses.
(The whole pipeline, off vs on in fresh processes: ``test_inference_adapter.py``.)
"""

from __future__ import annotations

import datetime
import importlib
import json

import numpy as np
import pytest
import torch

import adapter_helpers as helpers
import inference_triton_preproc as itp
from inference_triton_preproc.plugin import _hook, call_counts, pipeline
from inference_triton_preproc.plugin.polygons import kept_polygons, polygons_suffice
from inference_triton_preproc.validate.default_model import load_sample_frames

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="CPU tests")


@pytest.fixture(scope="module")
def adapter():
    return helpers.make_adapter("cpu")


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    clip = load_sample_frames(limit=3, stride=5)
    return [clip[0], clip[1][:301, 17:600].copy(), clip[2]]


@pytest.fixture(autouse=True)
def _uninstalled():
    itp.uninstall()
    yield
    itp.uninstall()


def _video_frames(images: list[np.ndarray]) -> list:
    from streamvision.camera.entities import VideoFrame

    now = datetime.datetime(2026, 1, 1)
    return [VideoFrame(image=image, frame_id=i, frame_timestamp=now, fps=25.0) for i, image in enumerate(images)]


def _process(images: list[np.ndarray], adapter, positional: bool = False) -> list[dict]:
    """The pipeline module's ``default_process_frame`` (whatever is bound now), as ``init``
    calls it (the model by keyword), or with every argument positional."""
    from streamvision.stream.entities import ModelConfig

    module = importlib.import_module(_hook.PIPELINE_TARGET)
    config = ModelConfig.init(confidence=0.05)
    with helpers.deterministic_ids():
        if positional:
            return module.default_process_frame(_video_frames(images), adapter, config)
        return module.default_process_frame(_video_frames(images), model=adapter, inference_config=config)


@pytest.mark.parametrize(("batch", "positional"), [(1, False), (3, False), (1, True)])
def test_dumps_equal_stock_without_points_made(adapter, frames, batch, positional) -> None:
    images = frames[:batch]
    want = _process(images, adapter)
    with helpers.surface(pipeline=True):
        before = call_counts()
        got = _process(images, adapter, positional)
        served = call_counts().get("pipeline", 0) - before.get("pipeline", 0)
    assert sum(len(d["predictions"]) for d in want) > 0
    assert got == want
    assert json.dumps(got) == json.dumps(want)
    assert helpers.leaf_types(got) == helpers.leaf_types(want)
    assert served == batch


def test_host_function_untouched_without_the_adapter_surface(adapter, frames, monkeypatch) -> None:
    want = _process(frames[:1], adapter)
    # Only the pipeline's module patched: the adapter makes its points, nothing is completed.
    monkeypatch.setattr(_hook, "TARGETS", {_hook.PIPELINE_TARGET: "pipeline"})
    assert itp.install(postprocess=True, preprocess=False)
    importlib.import_module(_hook.PIPELINE_TARGET)
    assert not pipeline.serves(adapter)
    before = call_counts()
    assert _process(frames[:1], adapter) == want
    assert call_counts().get("pipeline", 0) == before.get("pipeline", 0)


def test_served_models(adapter) -> None:
    assert not pipeline.serves(adapter)  # nothing installed
    with helpers.surface(pipeline=True):
        assert pipeline.serves(adapter)
        assert not pipeline.serves(adapter._model)  # the model itself is not the adapter
        assert not pipeline.serves(None)


def test_uninstall_restores_the_host_function() -> None:
    module = importlib.import_module(_hook.PIPELINE_TARGET)
    original = module.default_process_frame
    with helpers.surface(pipeline=True):
        assert module.default_process_frame is not original
        assert module.default_process_frame.__wrapped__ is original
    assert module.default_process_frame is original


def _point_less(adapter, frames) -> tuple[list, list[dict]]:
    """Real responses without points, and their dumps as the host makes them."""
    with helpers.surface(pipeline=True), helpers.deterministic_ids(), polygons_suffice():
        responses = adapter.infer(frames[:2], confidence=0.05)
    assert all(kept_polygons(r).points_omitted for r in responses)
    return responses, [r.model_dump(by_alias=True, exclude_none=True) for r in responses]


def test_complete_dumps_fills_every_left_out_point(adapter, frames) -> None:
    responses, dumps = _point_less(adapter, frames)
    assert pipeline.complete_dumps(dumps, responses) is dumps
    for response, dump in zip(responses, dumps):
        for (_, polygon), prediction in zip(kept_polygons(response).pairs, dump["predictions"]):
            assert prediction["points"] == [{"x": float(x), "y": float(y)} for x, y in polygon.tolist()]


def test_complete_dumps_leaves_responses_with_points_alone(adapter, frames) -> None:
    with helpers.deterministic_ids():
        responses = adapter.infer(frames[:1], confidence=0.05)
    dumps = [r.model_dump(by_alias=True, exclude_none=True) for r in responses]
    copy = json.dumps(dumps)
    assert pipeline.complete_dumps(dumps, responses) is dumps and json.dumps(dumps) == copy
    assert pipeline.complete_dumps("anything", responses) == "anything"


@pytest.mark.parametrize(
    "alter",
    [
        lambda dumps: dumps[0],  # not a list
        lambda dumps: dumps[:1],  # one dump missing
        lambda dumps: [dumps[0], {**dumps[1], "predictions": dumps[1]["predictions"][:-1]}],  # a prediction missing
        lambda dumps: [dumps[0], {k: v for k, v in dumps[1].items() if k != "predictions"}],  # no predictions
        lambda dumps: [dumps[0], {**dumps[1], "predictions": [{**p, "points": [{"x": 1.0, "y": 2.0}]} for p in dumps[1]["predictions"]]}],
    ],
    ids=["not-a-list", "dump-missing", "prediction-missing", "no-predictions", "points-not-empty"],
)
def test_complete_dumps_refuses_dumps_it_cannot_complete(adapter, frames, alter) -> None:
    responses, dumps = _point_less(adapter, frames)
    assert all(len(d["predictions"]) for d in dumps)
    with pytest.raises(pipeline.PipelineContractError):
        pipeline.complete_dumps(alter(dumps), responses)
    # Nothing filled before the refusal: the first response's dump is as the host made it.
    assert all(p["points"] == [] for p in dumps[0]["predictions"])
