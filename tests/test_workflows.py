"""The workflows surface: RF-DETR responses to ``sv.Detections``, fast and equal to the host's.

CPU, in this process, against the real host functions: supervision's
``Detections.from_inference`` for the masks of hand-made polygons, roboflow-workflows'
``convert_inference_detections_batch_to_sv_detections`` for whole responses, and the
block's own ``_post_process_result`` for which models are served. The pipeline end to
end (switch off vs on, in fresh processes) is in test_workflows_pipeline.py.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import supervision as sv

import inference_triton_preproc as itp
from inference_triton_preproc.plugin import _hook, fallbacks, workflows
from inference_triton_preproc.plugin.config import Settings
from inference_triton_preproc.plugin.fallbacks import FallbackError
from inference_triton_preproc.plugin import polygons as polygons_module
from inference_triton_preproc.plugin.polygons import (
    NonFiniteVertex,
    fill_polygon_masks,
    fill_polygons,
    keep_polygons,
    kept_polygons,
    polygon_slices,
    polygon_vertices,
)
from inference_triton_preproc.runtime import threads

from inference_triton_preproc.validate.sv_detections import detections_differences
from adapter_helpers import leaf_types

W, H = 64, 48


def assert_detections_equal(a: Any, b: Any, fresh_ids: bool = False) -> None:
    assert detections_differences(a, b, fresh_ids) == []


def _points(vertices: Any) -> list[dict[str, float]]:
    return [{"x": float(x), "y": float(y)} for x, y in vertices]


def _stock_masks(polygons: list[list[dict[str, float]]], width: int = W, height: int = H) -> np.ndarray:
    """supervision's own masks for these polygons."""
    predictions = [
        {"x": 1.0, "y": 1.0, "width": 2.0, "height": 2.0, "confidence": 0.5, "class": "a", "class_id": 0, "points": p}
        for p in polygons
    ]
    mask = sv.Detections.from_inference({"image": {"width": width, "height": height}, "predictions": predictions}).mask
    assert mask is not None
    return mask


def _contours(mask: np.ndarray, mode: int) -> list[list[dict[str, float]]]:
    contours, _ = cv2.findContours(mask.astype(np.uint8), mode, cv2.CHAIN_APPROX_SIMPLE)
    return [_points(c[:, 0, :]) for c in contours if len(c) >= 3]


def _hand_made() -> dict[str, list[list[dict[str, float]]]]:
    rng = np.random.default_rng(7)
    ring = np.zeros((H, W), np.uint8)
    cv2.circle(ring, (30, 24), 18, 1, -1)
    cv2.circle(ring, (30, 24), 8, 0, -1)  # a hole
    blobs = (rng.random((H, W)) > 0.55).astype(np.uint8)
    radii = [30 if k % 2 else 12 for k in range(10)]
    angles = np.linspace(0, 2 * math.pi, 11)[:-1]
    star = [(32 + r * math.cos(a), 24 + r * math.sin(a)) for r, a in zip(radii, angles)]
    return {
        "triangle": [_points([(3, 3), (20, 5), (8, 30)])],
        "half-to-even": [_points([(0.5, 0.5), (10.5, 1.5), (2.5, 12.5)]), _points([(1.49, 2.51), (9.5, 9.5), (-0.5, 7.5)])],
        "touching-borders": [_points([(0, 0), (W - 1, 0), (W - 1, H - 1), (0, H - 1)])],
        "beyond-borders": [_points([(-20, -7), (W + 30, 3), (W + 5, H + 40), (-3, H + 2)])],
        "negative-only": [_points([(-30, -30), (-2, -40), (-10, -1)])],
        "far-outside": [_points([(W + 10, H + 10), (W + 50, H + 12), (W + 20, H + 60)])],
        "degenerate-line": [_points([(2, 2), (20, 20), (40, 40)])],
        "degenerate-point": [_points([(5, 5), (5, 5), (5, 5)])],
        "self-intersecting": [_points(star), _points([(0, 0), (40, 40), (40, 0), (0, 40)])],
        "outer-contour-of-a-ring": _contours(ring, cv2.RETR_EXTERNAL),
        "every-contour-of-a-ring": _contours(ring, cv2.RETR_LIST),
        "noise-contours": _contours(blobs, cv2.RETR_LIST),
        "big-coordinates": [_points([(-1e6, -1e6), (1e6, -5e5), (3e5, 1e6)])],
    }


HAND_MADE = _hand_made()


@pytest.mark.parametrize("name", sorted(HAND_MADE))
def test_fill_equals_supervision_on_hand_made_polygons(name: str) -> None:
    polygons = HAND_MADE[name]
    expected = _stock_masks(polygons)
    got = fill_polygon_masks(polygons, width=W, height=H)
    assert got.dtype == expected.dtype == np.bool_
    assert got.shape == expected.shape == (len(polygons), H, W)
    assert got.flags.c_contiguous
    assert np.array_equal(got, expected)


def test_fill_equals_supervision_at_odd_and_tiny_sizes() -> None:
    for width, height in ((1, 1), (1, 9), (9, 1), (3, 2), (1921, 1081)):
        polygons = [
            _points([(0, 0), (width * 0.7, 0.2), (width * 0.3, height)]),
            _points([(-1, -1), (width, -1), (width, height)]),
        ]
        got = fill_polygon_masks(polygons, width=width, height=height)
        assert np.array_equal(got, _stock_masks(polygons, width, height))


def test_fill_of_no_polygon_is_an_empty_stack() -> None:
    masks = fill_polygon_masks([], width=W, height=H)
    assert masks.shape == (0, H, W) and masks.dtype == np.bool_


def test_vertices_are_rounded_like_supervision_and_split_per_polygon() -> None:
    polygons = HAND_MADE["half-to-even"]
    vertices, ends = polygon_vertices(polygons)
    assert vertices.dtype == np.int32 and ends.tolist() == [3, 6]
    for got, polygon in zip(np.split(vertices, ends[:-1]), polygons):
        expected = np.round(np.array([[p["x"], p["y"]] for p in polygon], dtype=np.float64)).astype(np.int32)
        assert np.array_equal(got, expected)


def _integer_polygons() -> list[np.ndarray]:
    """Every hand-made polygon with integer vertices (as the adapter traces them), as int32 arrays."""
    arrays = [np.array([[p["x"], p["y"]] for p in polygon]) for name in sorted(HAND_MADE) for polygon in HAND_MADE[name]]
    return [a.astype(np.int32) for a in arrays if np.array_equal(a, np.round(a)) and np.abs(a).max() < 2**31]


@pytest.mark.parametrize("parallel", [False, True], ids=["inline", "pool"])
def test_int32_polygons_fill_like_supervision(monkeypatch: pytest.MonkeyPatch, parallel: bool) -> None:
    # The pool is used on hosts with enough cores; force either way here.
    monkeypatch.setattr(threads, "MIN_CORES", 1 if parallel else 10**6)
    arrays = _integer_polygons()
    assert len(arrays) >= threads.PARALLEL_FROM
    got = fill_polygons(arrays, width=W, height=H)
    assert got.dtype == np.bool_ and got.flags.c_contiguous
    assert np.array_equal(got, _stock_masks([_points(a) for a in arrays]))
    vertices, ends = polygon_vertices([_points(a) for a in arrays])
    assert all(np.array_equal(a, b) for a, b in zip(polygon_slices(vertices, ends), arrays))


def test_bad_int32_polygons_are_refused() -> None:
    triangle = np.array([[1, 1], [9, 2], [4, 8]], np.int32)
    with pytest.raises(ValueError, match="polygons: polygon 1 has fewer than 3"):
        fill_polygons([triangle, triangle[:2]], width=W, height=H)
    for bad in (triangle.astype(np.float64), triangle.astype(np.int64), triangle[:, :1], triangle.tolist()):
        with pytest.raises(ValueError, match="polygons: polygon 0 is not an int32"):
            fill_polygons([bad], width=W, height=H)


def test_bad_polygons_are_refused() -> None:
    with pytest.raises(ValueError, match="polygon 1 has fewer than 3"):
        fill_polygon_masks([HAND_MADE["triangle"][0], _points([(1, 1), (2, 2)])], width=W, height=H)
    with pytest.raises(NonFiniteVertex):
        fill_polygon_masks([_points([(1, 1), (2, float("nan")), (3, 1)])], width=W, height=H)
    with pytest.raises(KeyError):
        fill_polygon_masks([[{"x": 1.0}, {"x": 2.0, "y": 1.0}, {"x": 3.0, "y": 1.0}]], width=W, height=H)


# --------------------------------------------------------------------------- #
# The wrapped conversion against the host's
# --------------------------------------------------------------------------- #


_SETTINGS = {"strict": False}


def _current() -> Settings:
    return Settings(enabled=False, mode="auto", strict=_SETTINGS["strict"], postprocess=True)


@pytest.fixture
def v3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The block module with the workflows surface's wrappers applied (post-processing switch on).

    Applied directly rather than through ``install()``, so the test sees this surface
    alone. Whatever an earlier test left installed is removed first: these wrappers
    must wrap the host's own functions, not an installed copy of themselves.
    """
    import roboflow_workflows.core_steps.models.roboflow.instance_segmentation.v3 as module

    itp.uninstall()
    assert workflows.patch(module, dataclasses.replace(_current(), postprocess=False), _current) == []
    patches = workflows.patch(module, _current(), _current)
    assert {attribute for _, attribute, _ in patches} == {
        "_post_process_result", workflows.FINALIZE, workflows.RUN_LOCALLY, workflows.CONVERT
    }
    for owner, attribute, replacement in patches:
        monkeypatch.setattr(owner, attribute, replacement)
    monkeypatch.setitem(_SETTINGS, "strict", False)
    yield module


def _stock_convert() -> Any:
    from roboflow_workflows.core_steps.common import utils

    return utils.convert_inference_detections_batch_to_sv_detections


@pytest.fixture
def serving() -> Iterator[None]:
    """Mark this thread as inside an RF-DETR block call, as the block wrapper does."""
    workflows._serving.model = ("rfdetr-test", "")
    yield
    workflows._serving.model = None


def _prediction(polygon: list[dict[str, float]], k: int, **extra: Any) -> dict[str, Any]:
    xs, ys = [p["x"] for p in polygon] or [0.0], [p["y"] for p in polygon] or [0.0]
    x1, x2, y1, y2 = min(xs), max(xs), min(ys), max(ys)
    return {
        "x": (x1 + x2) / 2, "y": (y1 + y2) / 2, "width": x2 - x1, "height": y2 - y1,
        "confidence": float(np.float32(0.9 - 0.01 * k)), "class": f"c{k % 3}", "class_id": k % 3,
        "detection_id": str(uuid.uuid4()), "mask_format": "polygon", "points": polygon,
        **extra,
    }


def _frame(polygons: list[list[dict[str, float]]], **extra: Any) -> dict[str, Any]:
    return {"image": {"width": W, "height": H}, "predictions": [_prediction(p, k) for k, p in enumerate(polygons)], **extra}


def _responses() -> list[dict[str, Any]]:
    every = [p for name in sorted(HAND_MADE) for p in HAND_MADE[name]]
    short = [HAND_MADE["triangle"][0][:2], []]
    with_ids = _frame(HAND_MADE["noise-contours"][:5])
    for k, p in enumerate(with_ids["predictions"]):
        p.update(parent_id=f"parent-{k}", tracker_id=k + 10)
    without_ids = _frame(HAND_MADE["self-intersecting"])
    for p in without_ids["predictions"]:
        del p["detection_id"]
    return [
        _frame(every, inference_id="inf-1", time=0.5),
        _frame([]),
        _frame(short),  # every polygon too short: dropped by the host's filter, an empty frame
        _frame(HAND_MADE["triangle"] + short + HAND_MADE["half-to-even"]),
        with_ids,
        without_ids,
    ]


def test_conversion_equals_the_hosts_on_hand_made_responses(v3: Any, serving: None) -> None:
    responses = _responses()
    expected = _stock_convert()(copy.deepcopy(responses))
    before = fallbacks.call_counts().get("workflows", 0)
    got = v3.convert_inference_detections_batch_to_sv_detections(copy.deepcopy(responses))
    assert fallbacks.call_counts().get("workflows", 0) - before == len(responses)
    assert len(got) == len(expected)
    for frame, (a, b) in enumerate(zip(expected, got)):
        # Fresh uuids (predictions without detection_id) are compared by form only.
        assert_detections_equal(a, b, fresh_ids=frame == len(responses) - 1)
    assert got[0].mask is not None and got[0].mask.shape == (len(responses[0]["predictions"]), H, W)
    assert got[1].mask is None and got[2].mask is None


def test_unmarked_calls_are_the_hosts(v3: Any) -> None:
    before = fallbacks.call_counts()
    responses = _responses()[:1]
    expected = _stock_convert()(copy.deepcopy(responses))
    assert_detections_equal(expected[0], v3.convert_inference_detections_batch_to_sv_detections(copy.deepcopy(responses))[0])
    assert fallbacks.call_counts() == before


def _fallback_frames() -> dict[str, dict[str, Any]]:
    triangle = HAND_MADE["triangle"][0]
    rle = _frame([triangle, triangle])
    rle["predictions"][1]["rle"] = {"size": [H, W], "counts": "PPYo1"}
    box_only = _frame([triangle, triangle])
    del box_only["predictions"][0]["points"]
    not_numbers = _frame([triangle])
    not_numbers["predictions"][0]["points"] = [[1, 2], [3, 4], [5, 0]]
    no_size = _frame([triangle])
    del no_size["image"]["width"]
    return {"rle": rle, "box-only": box_only, "vertices": not_numbers, "image-size": no_size}


@pytest.mark.parametrize("reason", ["rle", "box-only", "vertices", "image-size"])
def test_fallback_frames_get_the_hosts_result_and_are_counted(v3: Any, serving: None, reason: str) -> None:
    frames = [_fallback_frames()[reason], _responses()[0]]
    try:
        expected: Any = _stock_convert()(copy.deepcopy(frames))
    except Exception as error:  # noqa: BLE001 - the host's own error must come out unchanged
        expected = error
    before = fallbacks.call_counts()
    try:
        got: Any = v3.convert_inference_detections_batch_to_sv_detections(copy.deepcopy(frames))
    except Exception as error:  # noqa: BLE001
        got = error
    after = fallbacks.call_counts()
    assert after.get(f"workflows:{reason}", 0) - before.get(f"workflows:{reason}", 0) == 1
    if isinstance(expected, Exception):
        assert type(got) is type(expected) and str(got) == str(expected)
    else:
        assert after.get("workflows", 0) - before.get("workflows", 0) == 1
        for a, b in zip(expected, got):
            assert_detections_equal(a, b)


def test_non_finite_vertex_raises_the_hosts_error(v3: Any, serving: None) -> None:
    frame = _frame([_points([(1, 1), (float("inf"), 3), (5, 1)])])
    with pytest.raises(ValueError) as stock:
        _stock_convert()(copy.deepcopy([frame]))
    with pytest.raises(ValueError) as ours:
        v3.convert_inference_detections_batch_to_sv_detections(copy.deepcopy([frame]))
    assert str(ours.value) == str(stock.value)
    assert fallbacks.call_counts().get("workflows:non-finite", 0) >= 1


def test_strict_mode_raises_instead_of_falling_back(v3: Any, serving: None) -> None:
    _SETTINGS["strict"] = True
    with pytest.raises(FallbackError, match="RLE"):
        v3.convert_inference_detections_batch_to_sv_detections(copy.deepcopy([_fallback_frames()["rle"]]))


def test_every_counter_key_is_documented() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for key in ("workflows", *(f"workflows:{reason}" for reason in workflows.FALLBACK_REASONS)):
        assert f"``\"{key}\"``" in (fallbacks.__doc__ or ""), key
        assert f"`{key}`" in readme, key


def test_install_patches_the_block_module_only_under_the_switch() -> None:
    import roboflow_workflows.core_steps.models.roboflow.instance_segmentation.v3 as module

    assert _hook.TARGETS[_hook.WORKFLOWS_TARGET] == "workflows"
    stock = _stock_convert()
    try:
        itp.uninstall()
        assert itp.install(postprocess=False)
        assert module.convert_inference_detections_batch_to_sv_detections is stock
        assert itp.install(postprocess=True, preprocess=False)
        assert module.convert_inference_detections_batch_to_sv_detections is not stock
    finally:
        itp.uninstall()
    assert module.convert_inference_detections_batch_to_sv_detections is stock


# --------------------------------------------------------------------------- #
# Which block calls are served
# --------------------------------------------------------------------------- #


class _Provider:
    """inference's models provider: membership, and the server's manager inside."""

    def __init__(self, models: dict[str, Any], broken: bool = False) -> None:
        self._model_manager = None if broken else models
        self._models = models

    def __contains__(self, model_id: str) -> bool:
        return model_id in self._models


class _Adapter:
    def __init__(self, model: Any) -> None:
        self._model = model


class _Block:
    def __init__(self, provider: _Provider, mode: Any) -> None:
        self._model_manager = provider
        self._step_execution_mode = mode


def _rfdetr_instance() -> Any:
    from inference_models.models.rfdetr.rfdetr_instance_segmentation_pytorch import RFDetrForInstanceSegmentationTorch

    class Subclass(RFDetrForInstanceSegmentationTorch):
        pass

    return object.__new__(Subclass)


def test_only_local_rfdetr_segmentation_models_are_served(v3: Any) -> None:
    local, remote = v3.StepExecutionMode.LOCAL, v3.StepExecutionMode.REMOTE
    models = {"rf": _Adapter(_rfdetr_instance()), "other": _Adapter(object())}
    assert _hook.is_rfdetr_segmentation(models["rf"]._model)
    assert workflows._served_model(_Block(_Provider(models), local), "rf", local) == ""
    assert workflows._served_model(_Block(_Provider(models), local), "other", local) is None
    assert workflows._served_model(_Block(_Provider(models), local), "missing", local) is None
    assert workflows._served_model(_Block(_Provider(models), remote), "rf", local) is None
    assert workflows._served_model(_Block(_Provider(models, broken=True), local), "rf", local) == "model-unresolved"


def test_the_block_marks_its_conversion_only_for_rfdetr(v3: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real ``_post_process_result`` (wrapped) calls the conversion marked for RF-DETR, unmarked otherwise."""
    seen: list[Any] = []

    def spy(predictions: Any, *args: Any) -> Any:
        seen.append(getattr(workflows._serving, "model", None))
        raise _Stop

    monkeypatch.setattr(v3, "convert_inference_detections_batch_to_sv_detections", spy)
    local = v3.StepExecutionMode.LOCAL
    models = {"rf": _Adapter(_rfdetr_instance()), "other": _Adapter(object())}
    for model_id in ("rf", "other"):
        with pytest.raises(_Stop):
            v3.RoboflowInstanceSegmentationModelBlockV3._post_process_result(
                _Block(_Provider(models), local), images=[], predictions=[], class_filter=None, model_id=model_id
            )
    assert seen == [("rf", ""), None]
    assert getattr(workflows._serving, "model", None) is None


class _Stop(Exception):
    pass


def test_the_equality_check_sees_every_kind_of_difference() -> None:
    base = _stock_convert()([_responses()[4]])[0]
    assert detections_differences(base, copy.deepcopy(base)) == []

    def changed(change: Any) -> list[str]:
        other = copy.deepcopy(base)
        change(other)
        return detections_differences(base, other)

    assert changed(lambda d: d.mask.__setitem__((0, 0, 0), not d.mask[0, 0, 0])) == ["mask: values differ"]
    assert changed(lambda d: setattr(d, "confidence", d.confidence.astype(np.float32))) == [
        "confidence: float64(5,) vs float32(5,)"
    ]
    assert changed(lambda d: setattr(d, "tracker_id", None)) == ["tracker_id: ndarray vs NoneType"]
    assert changed(lambda d: d.data.pop("parent_id"))[0].startswith("data keys")
    assert changed(lambda d: d.data.__setitem__("class_name", d.data["class_name"][::-1])) == [
        "data['class_name']: values differ"
    ]
    fresh = copy.deepcopy(base)
    fresh.data["detection_id"] = np.array([str(uuid.uuid4()) for _ in range(len(fresh))])
    assert detections_differences(base, fresh) == ["data['detection_id']: values differ"]
    assert detections_differences(base, fresh, fresh_ids=True) == []
    fresh.data["detection_id"][0] = "not-a-uuid"
    assert detections_differences(base, fresh, fresh_ids=True) == ["data['detection_id']: 'not-a-uuid' is not a uuid"]


# --------------------------------------------------------------------------- #
# The adapter's polygons, handed to the conversion beside its responses
# --------------------------------------------------------------------------- #


def _kept_responses(frames: list[list[np.ndarray]], omit_points: bool = False) -> list[Any]:
    """inference's response objects for these int32 polygons, with the polygons kept beside them.

    ``omit_points``: as the adapter makes them inside ``polygons_suffice``, each
    prediction's ``points`` an empty list of its own, the polygons kept instead.
    """
    from inference.core.entities.responses.inference import (
        InferenceResponseImage,
        InstanceSegmentationInferenceResponse,
        InstanceSegmentationPrediction,
    )

    responses = []
    for frame, polygons in enumerate(frames):
        predictions = [
            InstanceSegmentationPrediction(
                x=1.0, y=2.0, width=3.0, height=4.0, confidence=0.5, class_id=k, detection_id=f"{frame}-{k}",
                points=[] if omit_points else _points(polygon), **{"class": f"c{k}"},
            )
            for k, polygon in enumerate(polygons)
        ]
        response = InstanceSegmentationInferenceResponse(predictions=predictions, image=InferenceResponseImage(width=W, height=H))
        pairs = [(p.points, polygon) for p, polygon in zip(response.predictions, polygons)]
        keep_polygons(response, pairs, points_omitted=omit_points)
        responses.append(response)
    return responses


def _dumps(responses: list[Any]) -> list[dict[str, Any]]:
    return [r.model_dump(by_alias=True, exclude_none=True) for r in responses]


def _handed_frames() -> list[list[np.ndarray]]:
    arrays = _integer_polygons()
    short = np.array([[1, 1], [5, 5]], np.int32)
    return [arrays, [], [arrays[0], short, arrays[1]], [short]]


@pytest.fixture
def handed(v3: Any, serving: None) -> Iterator[list[Any]]:
    """Responses whose polygons are kept, noted for this thread as the block's wrapper notes them."""
    responses = _kept_responses(_handed_frames())
    workflows._serving.responses = responses
    yield responses
    workflows._serving.responses = None


def _dumped_point_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    reads: list[int] = []
    fill = workflows.fill_polygon_masks

    def counted(points: Any, *args: Any, **kwargs: Any) -> Any:
        reads.append(len(points))
        return fill(points, *args, **kwargs)

    monkeypatch.setattr(workflows, "fill_polygon_masks", counted)
    return reads


def test_kept_polygons_fill_the_masks_without_reading_the_dumped_points(
    v3: Any, handed: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = _dumped_point_reads(monkeypatch)
    dumps = _dumps(handed)
    expected = _stock_convert()(copy.deepcopy(dumps))
    got = v3.convert_inference_detections_batch_to_sv_detections(dumps)
    assert reads == []
    for a, b in zip(expected, got, strict=True):
        assert_detections_equal(a, b)
    assert got[0].mask is not None and len(got[0]) == len(handed[0].predictions)
    # The host's filter dropped the 2-point polygon; its neighbours keep their own polygons.
    assert len(got[2]) == 2 and got[3].mask is None


@pytest.mark.parametrize("change", ["points-replaced", "points-edited-in-dump", "other-responses", "no-responses", "fewer-frames"])
def test_polygons_no_longer_behind_a_frame_are_not_used(
    v3: Any, handed: list[Any], monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    dumps = _dumps(handed)
    if change == "points-replaced":
        handed[0].predictions[0].points = handed[0].predictions[0].points[:-1]
        dumps = _dumps(handed)
    elif change == "points-edited-in-dump":
        dumps[0]["predictions"][0]["points"].pop()
    elif change == "other-responses":
        workflows._serving.responses = _kept_responses([[a] for a in _integer_polygons()[:4]])
    elif change == "no-responses":
        workflows._serving.responses = None
    elif change == "fewer-frames":
        dumps = dumps[:3]
    reads = _dumped_point_reads(monkeypatch)
    expected = _stock_convert()(copy.deepcopy(dumps))
    got = v3.convert_inference_detections_batch_to_sv_detections(dumps)
    for a, b in zip(expected, got, strict=True):
        assert_detections_equal(a, b)
    assert reads, "the frames must be filled from their dumped points"


def test_kept_polygons_live_as_long_as_their_response() -> None:
    import gc

    (response,) = _kept_responses([_integer_polygons()[:2]])
    kept = kept_polygons(response)
    assert kept is not None and not kept.points_omitted
    assert [points for points, _ in kept.pairs] == [p.points for p in response.predictions]
    assert kept_polygons(copy.deepcopy(response)) is None
    key = id(response)
    assert key in polygons_module._kept
    del response, kept
    gc.collect()
    assert key not in polygons_module._kept


def test_the_block_notes_its_responses_for_the_conversion(v3: Any) -> None:
    """The real ``_finalize_prediction_responses`` (wrapped) runs with its response objects noted, then forgets them."""
    import roboflow_workflows.core_steps.models.roboflow.instance_segmentation.v3 as module

    seen: list[Any] = []

    class Block:
        def _post_process_result(self, images: Any, predictions: Any, class_filter: Any, model_id: Any) -> Any:
            seen.append((workflows._serving.responses, predictions))
            return "result"

    responses = _kept_responses([_integer_polygons()[:2]])
    context = module._StreamPredictionContext(images=[object()], class_filter=None, model_id="rf", context_id="c")
    result = module.RoboflowInstanceSegmentationModelBlockV3._finalize_prediction_responses(
        Block(), predictions=responses, stream_context=context
    )
    assert result == "result"
    assert seen[0][0] is responses and seen[0][1] == _dumps(responses)
    assert getattr(workflows._serving, "responses", None) is None


# --------------------------------------------------------------------------- #
# Responses whose points were left out (polygons_suffice)
# --------------------------------------------------------------------------- #


@pytest.fixture
def omitted(v3: Any) -> Iterator[tuple[list[Any], list[dict[str, Any]]]]:
    """Point-less responses noted for this thread, and the stock dumps of the same responses with points."""
    responses = _kept_responses(_handed_frames(), omit_points=True)
    workflows._serving.responses = responses
    yield responses, _dumps(_kept_responses(_handed_frames()))
    workflows._serving.responses = None


def test_rebuilt_points_are_the_stock_dump(omitted: tuple[list[Any], list[dict[str, Any]]]) -> None:
    responses, stock_dumps = omitted
    dumps = _dumps(responses)
    assert all(p["points"] == [] for frame in dumps for p in frame["predictions"])
    for response, dump, stock in zip(responses, dumps, stock_dumps, strict=True):
        kept = kept_polygons(response)
        assert kept is not None and kept.points_omitted
        rebuilt = workflows._with_points(dump, "predictions", [polygon for _, polygon in kept.pairs])
        assert rebuilt == stock and leaf_types(rebuilt) == leaf_types(stock)
    assert workflows._with_all_points(dumps, "predictions") == stock_dumps


def test_point_less_frames_convert_like_their_stock_dumps(
    omitted: tuple[list[Any], list[dict[str, Any]]], serving: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    responses, stock_dumps = omitted
    reads = _dumped_point_reads(monkeypatch)
    expected = _stock_convert()(copy.deepcopy(stock_dumps))
    before = fallbacks.call_counts().get("workflows", 0)
    got = v3_convert()(_dumps(responses))
    assert reads == [] and fallbacks.call_counts().get("workflows", 0) - before == len(responses)
    for a, b in zip(expected, got, strict=True):
        assert_detections_equal(a, b)
    # The host's filter dropped the 2-point polygons here too.
    assert len(got[0]) == len(responses[0].predictions) and len(got[2]) == 2 and got[3].mask is None


def v3_convert() -> Any:
    import roboflow_workflows.core_steps.models.roboflow.instance_segmentation.v3 as module

    return module.convert_inference_detections_batch_to_sv_detections


@pytest.mark.parametrize("call", ["unmarked", "unresolved", "rle", "image-size"])
def test_point_less_frames_not_served_get_their_points_back(
    omitted: tuple[list[Any], list[dict[str, Any]]], call: str
) -> None:
    responses, stock_dumps = omitted
    dumps = _dumps(responses)
    if call == "rle":
        for frame in (dumps[0], stock_dumps[0]):
            frame["predictions"][1]["rle"] = {"size": [H, W], "counts": "PPYo1"}
    elif call == "image-size":
        for frame in (dumps[2], stock_dumps[2]):
            frame["image"] = {"height": H}
    try:
        expected: Any = _stock_convert()(copy.deepcopy(stock_dumps))
    except Exception as error:  # noqa: BLE001 - the host's own error must come out unchanged
        expected = error
    workflows._serving.model = {"unmarked": None, "unresolved": ("rf", "model-unresolved")}.get(call, ("rf", ""))
    try:
        got: Any = v3_convert()(dumps)
    except Exception as error:  # noqa: BLE001
        got = error
    finally:
        workflows._serving.model = None
    if isinstance(expected, Exception):
        assert type(got) is type(expected) and str(got) == str(expected)
        return
    assert len(expected) == len(got) and len(expected[0]) > 0
    for a, b in zip(expected, got, strict=True):
        assert_detections_equal(a, b)


def _manager_stack(*, fixed_size: bool = True, active_learning: bool = True) -> Any:
    """inference's models provider over the model managers a pipeline or server builds."""
    from inference.core.cache import cache
    from inference.core.interfaces.workflows_models_provider import ModelManagerModelsProvider
    from inference.core.managers.active_learning import BackgroundTaskActiveLearningManager
    from inference.core.managers.base import ModelManager
    from inference.core.managers.decorators.fixed_size_cache import WithFixedSizeCache

    manager = BackgroundTaskActiveLearningManager(model_registry=None, cache=cache) if active_learning else ModelManager(None)
    manager._models["rf"] = _Adapter(_rfdetr_instance())
    return ModelManagerModelsProvider(WithFixedSizeCache(manager, max_size=2) if fixed_size else manager)


def test_responses_are_private_behind_inference_s_own_managers_only(monkeypatch: pytest.MonkeyPatch) -> None:
    import inference.core.cache.serializers as serializers

    def private(provider: Any) -> bool:
        block = _Block(provider, None)
        return workflows._responses_private(block)

    assert private(_manager_stack())
    assert private(_manager_stack(fixed_size=False, active_learning=False))

    class Manager:  # a manager of somebody else's, which may keep or forward the responses
        model_manager = None

    provider = _manager_stack()
    provider._model_manager.model_manager = Manager()
    assert not private(provider)
    assert not private(_Provider({"rf": _Adapter(_rfdetr_instance())}))
    assert not private(None)
    monkeypatch.setattr(serializers, "TINY_CACHE", False)
    assert not private(_manager_stack())


class _RunningBlock(_Block):
    """What the block's ``run_locally`` reads of itself, with the provider's inference spied on."""

    _api_key = None

    def __init__(self, provider: Any, mode: Any, seen: list[bool]) -> None:
        super().__init__(provider, mode)

        def run_instance_segmentation(**kwargs: Any) -> Any:
            seen.append(polygons_module.points_needed())
            raise _Stop

        provider.add_model = lambda **kwargs: None
        provider.run_instance_segmentation = run_instance_segmentation

    def _build_stream_context_id(self, images: Any) -> str:
        return "c"

    def stream_pipeline_depth(self) -> int:
        return 0


@pytest.mark.parametrize(
    "case, points_needed",
    [("served-private", False), ("other-model", True), ("remote", True), ("not-private", True)],
)
def test_the_block_call_lets_polygons_suffice_only_when_served_and_private(
    v3: Any, monkeypatch: pytest.MonkeyPatch, case: str, points_needed: bool
) -> None:
    provider = _manager_stack()
    provider._model_manager.model_manager._models["other"] = _Adapter(object())
    mode = v3.StepExecutionMode.REMOTE if case == "remote" else v3.StepExecutionMode.LOCAL
    if case == "not-private":
        import inference.core.cache.serializers as serializers

        monkeypatch.setattr(serializers, "TINY_CACHE", False)
    seen: list[bool] = []
    arguments = dict.fromkeys(
        ["class_agnostic_nms", "class_filter", "confidence", "iou_threshold", "max_detections", "max_candidates",
         "tradeoff_factor", "disable_active_learning", "active_learning_target_dataset"]
    )
    with pytest.raises(_Stop):
        v3.RoboflowInstanceSegmentationModelBlockV3.run_locally(
            _RunningBlock(provider, mode, seen), images=[], model_id="other" if case == "other-model" else "rf",
            mask_decode_mode="accurate", enforce_dense_masks_in_inference_models=False, **arguments,
        )
    assert seen == [points_needed] and polygons_module.points_needed()
