"""The ``inference_adapter`` surface in inference's real instance-segmentation adapter (CPU).

Flag off vs on through ``InferenceModelsInstanceSegmentationAdapter`` with the embedded
random-weight RF-DETR seg package: responses ``==`` and ``model_dump()``-equal (polygons
and RLE), contours on crops against ``masks2poly``, every fallback with its reason,
strict mode, the version gate, pipelining, and ``InferencePipeline.init(model_id=...)``
off vs on in fresh processes.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import adapter_helpers as helpers
import inference_triton_preproc as itp
from inference_triton_preproc.plugin import call_counts, package
from inference_triton_preproc.plugin.fallbacks import FallbackError
from inference_triton_preproc.plugin.inference_adapter import _LOGGED_ATTRIBUTE as LOGGED_ATTRIBUTE
from inference_triton_preproc.plugin.inference_adapter import FALLBACK_REASONS
from inference_triton_preproc.runtime.contours import foreground_boxes
from inference_triton_preproc.validate.default_model import load_sample_frames

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="CPU tests; see test_inference_adapter_gpu.py")

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def adapter():
    return helpers.make_adapter("cpu")


@pytest.fixture(scope="module")
def frames(photos) -> list[np.ndarray]:
    clip = load_sample_frames(limit=2, stride=7)
    return [clip[0], photos["coffee"][::2, ::2].copy(), clip[1][:301, 17:600]]


@pytest.fixture(autouse=True)
def _uninstalled():
    itp.uninstall()
    yield
    itp.uninstall()


def _delta(before: dict, key: str) -> int:
    return call_counts().get(key, 0) - before.get(key, 0)


# ------------------------------------------------------------------ contours on crops


def _hand_made(height: int = 40, width: int = 56) -> np.ndarray:
    masks = []

    def new() -> np.ndarray:
        masks.append(np.zeros((height, width), bool))
        return masks[-1]

    new()[8:30, 10:40] = True
    masks[-1][14:20, 16:24] = False  # a hole
    new()[0:4, 0:6] = True
    masks[-1][30:, 44:] = True  # two pieces, both touching the frame border
    new()  # empty
    new()[height // 2, width // 2] = True  # one pixel
    new()[5:10, 5:10] = True
    masks[-1][5:10, 20:25] = True  # two pieces with equal point counts (first wins)
    new()[:, :] = True  # the whole frame
    new()[0, :] = True  # a row on the border
    new()[:, width - 1] = True  # a column on the border
    ring = new()
    cv2.circle(ring.view(np.uint8), (width // 2, height // 2), max(height, width) // 4, 1, thickness=3)  # a ring: outer contour only
    diagonal = new()
    np.fill_diagonal(diagonal[:, :height], True)  # 8-connected, one pixel wide
    rng = np.random.default_rng(7)
    for density in (0.05, 0.5, 0.9):
        masks.append(rng.random((height, width)) < density)  # many pieces and ties
    return np.stack(masks)


def test_contours_on_crops_equal_masks2poly_on_hand_made_masks() -> None:
    helpers.assert_contours_equal(_hand_made())
    helpers.assert_contours_equal(_hand_made(1, 1))
    helpers.assert_contours_equal(_hand_made(1, 9))
    helpers.assert_contours_equal(_hand_made(9, 1))
    helpers.assert_contours_equal(np.zeros((0, 5, 7), bool))


def test_packed_crops_equal_sliced_crops() -> None:
    """The one-transfer packing CUDA masks take, run on CPU masks against plain slices."""
    from inference_triton_preproc.runtime.contours import _crops

    masks = torch.from_numpy(_hand_made())
    boxes = foreground_boxes(masks).numpy()
    indices = [5, 0, 2, 3, 11]
    sliced, packed = _crops(masks, boxes, indices, pack=False), _crops(masks, boxes, indices, pack=True)
    assert [c is None for c in packed] == [c is None for c in sliced] == [False, False, True, False, False]
    for a, b in zip(sliced, packed):
        assert a is None or (a.dtype == b.dtype == np.uint8 and np.array_equal(a, b))


def test_foreground_boxes_are_inclusive_and_mark_empty_masks() -> None:
    masks = torch.zeros(3, 6, 9, dtype=torch.bool)
    masks[0, 2:4, 3:8] = True
    masks[2, 5, 0] = True
    assert foreground_boxes(masks).tolist() == [[3, 2, 7, 3], [9, 6, -1, -1], [0, 5, 0, 5]]


def test_contours_on_crops_equal_masks2poly_on_model_masks(adapter, frames) -> None:
    model = adapter._model
    for frame in frames:
        (detections,) = model(frame, mask_format="dense", confidence=0.05)
        assert len(detections) > 0
        helpers.assert_contours_equal(detections.mask)


# -------------------------------------------------------------- flag off vs flag on


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"response_mask_format": "rle"},
        {"enforce_dense_masks_in_inference_models": True},
        {"confidence": 0.05, "class_filter": ["random-1", "random-3"]},
        {"confidence": 0.05, "response_mask_format": "rle", "class_filter": ["random-2"]},
        {"confidence": 0.99},
    ],
    ids=["polygons", "rle", "dense-enforced", "class-filter", "rle-class-filter", "no-detections"],
)
def test_responses_equal_stock(adapter, frames, kwargs) -> None:
    before = call_counts()
    want, got = helpers.stock_and_ours(adapter, frames, **kwargs)
    helpers.assert_same_responses(want, got)
    assert _delta(before, "adapter") == len(frames)
    if kwargs.get("confidence") != 0.99:
        assert helpers.count_predictions(want) > 0
    if kwargs.get("response_mask_format") == "rle":
        assert all(p.mask_format == "rle" for rs in got for r in rs for p in r.predictions)


def _fields_sets(responses: list) -> set[int]:
    return {id(pt.__pydantic_fields_set__) for rs in responses for r in rs for p in r.predictions for pt in p.points}


def test_points_built_directly_or_validated_when_the_point_model_is_not_buildable(adapter, frames, monkeypatch) -> None:
    from inference_triton_preproc.plugin import inference_adapter

    with helpers.surface():
        built = helpers.infer_all(adapter, frames)
    assert helpers.count_predictions(built) > 0 and len(_fields_sets(built)) == 1  # made by plugin.points
    monkeypatch.setattr(inference_adapter, "point_builder", lambda prediction_class: None)
    want, got = helpers.stock_and_ours(adapter, frames)
    helpers.assert_same_responses(want, got)
    assert len(_fields_sets(got)) > 1  # validated points, each with its own fields set


def test_batch_of_frames_equals_stock(adapter, frames) -> None:
    batch = frames[:2]
    before = call_counts()
    want, got = helpers.stock_and_ours(adapter, [batch])
    helpers.assert_same_responses(want, got)
    assert len(got[0]) == 2 and _delta(before, "adapter") == 1


@pytest.mark.parametrize("model_postprocess", [False, True], ids=["stock-model", "fused-model"])
def test_served_with_and_without_the_model_level_path(adapter, frames, model_postprocess) -> None:
    want, got = helpers.stock_and_ours(adapter, frames[:1], model_postprocess=model_postprocess, confidence=0.05)
    helpers.assert_same_responses(want, got)


@pytest.mark.parametrize("mask_format", ["polygon", "rle"])
def test_http_request_path_equals_stock(adapter, frames, mask_format) -> None:
    from inference.core.entities.requests.inference import InstanceSegmentationInferenceRequest

    ok, png = cv2.imencode(".png", frames[1])
    assert ok
    request = InstanceSegmentationInferenceRequest(
        model_id="local",
        image={"type": "base64", "value": base64.b64encode(png.tobytes()).decode("ascii")},
        confidence=0.05,
        response_mask_format=mask_format,
    )

    def serve() -> list:
        with helpers.deterministic_ids():
            responses = adapter.infer_from_request(request)
        responses = responses if isinstance(responses, list) else [responses]
        for response in responses:
            response.time = None  # wall time, not an output
        return [responses]

    want = serve()
    with helpers.surface():
        before = call_counts()
        got = serve()
        assert _delta(before, "adapter") == 1
    helpers.assert_same_responses(want, got)
    assert helpers.count_predictions(want) > 0


# -------------------------------------------------------------------------- fallbacks


def _frame_and_raw(adapter, frame):
    """(pre-processed input, metadata, raw network output) of one frame, computed once."""
    image, meta = adapter.preprocess(frame)
    return image, meta, adapter.predict(image)


@pytest.mark.parametrize(
    ("reason", "kwargs"),
    [
        ("mask-grid-opt-in", {"allow_reduced_mask_resolution": True, "mask_decode_mode": "fast"}),
        ("mask-grid-opt-in", {"allow_reduced_mask_resolution": True, "response_mask_format": "rle"}),
        ("rle-from-dense", {"response_mask_format": "rle", "enforce_dense_masks_in_inference_models": True}),
    ],
)
def test_request_fallbacks_equal_stock_with_reason(adapter, frames, caplog, monkeypatch, reason, kwargs) -> None:
    monkeypatch.delitem(adapter.__dict__, LOGGED_ATTRIBUTE, raising=False)  # logged once per adapter
    before = call_counts()
    with caplog.at_level(logging.INFO, logger="inference_triton_preproc.plugin.inference_adapter"):
        want, got = helpers.stock_and_ours(adapter, frames[:1], confidence=0.05, **kwargs)
        with helpers.surface():
            adapter.infer(frames[0], confidence=0.05, **kwargs)
    helpers.assert_same_responses(want, got)
    assert _delta(before, f"adapter:{reason}") == 2 and _delta(before, "adapter") == 0
    assert caplog.text.count(FALLBACK_REASONS[reason]) == 1


def test_upstream_triton_flag_falls_back(adapter, frames, monkeypatch) -> None:
    module = helpers.adapter_module()
    monkeypatch.setattr(module, "INFERENCE_MODELS_RFDETR_TRITON_POSTPROC_ENABLED", True)
    before = call_counts()
    want, got = helpers.stock_and_ours(adapter, frames[:1], confidence=0.05)
    helpers.assert_same_responses(want, got)
    assert _delta(before, "adapter:upstream-triton") == 1
    # RLE responses keep the model's RLE, whoever made it: still served.
    want, got = helpers.stock_and_ours(adapter, frames[:1], confidence=0.05, response_mask_format="rle")
    helpers.assert_same_responses(want, got)
    assert _delta(before, "adapter") == 1


def test_no_dense_masks_falls_back(adapter, frames, monkeypatch) -> None:
    model_class = type(adapter._model)
    monkeypatch.setattr(model_class, "supported_mask_formats", property(lambda self: ["rle"]))
    before = call_counts()
    want, got = helpers.stock_and_ours(adapter, frames[:1], confidence=0.05)
    helpers.assert_same_responses(want, got)
    assert _delta(before, "adapter:no-dense-masks") == 1


@pytest.mark.parametrize(
    "source, workflows",
    [("workflow-execution", True), ("workflow-execution", False), (None, True)],
    ids=["workflow", "workflow-surface-unpatched", "not-a-workflow"],
)
def test_workflow_responses_keep_their_polygons_beside_them(adapter, frames, source, workflows) -> None:
    from inference_triton_preproc.plugin.polygons import kept_polygons

    image, meta, raw = _frame_and_raw(adapter, frames[0])
    kwargs = {"confidence": 0.05, "class_filter": ["random-1", "random-3"], **({"source": source} if source else {})}
    with helpers.deterministic_ids():
        want = adapter.postprocess(raw, meta, **kwargs)
    with helpers.surface(workflows=workflows), helpers.deterministic_ids():
        got = adapter.postprocess(raw, meta, **kwargs)
    helpers.assert_same_responses([want], [got])
    predictions = got[0].predictions
    assert len(predictions) > 0
    kept = kept_polygons(got[0])
    if source is None or not workflows:  # nothing would read them
        assert kept is None
        return
    assert kept is not None and len(kept.pairs) == len(predictions) and not kept.points_omitted
    for prediction, (points, polygon) in zip(predictions, kept.pairs):
        assert points is prediction.points
        assert polygon.dtype == np.int32 and polygon.shape == (len(points), 2)
        assert polygon.astype(np.float64).tolist() == [[p.x, p.y] for p in points]


@pytest.mark.parametrize("visualize", [False, True], ids=["block-call", "visualised"])
def test_workflow_responses_inside_polygons_suffice_keep_polygons_instead_of_points(
    adapter, frames, visualize
) -> None:
    from inference_triton_preproc.plugin.polygons import kept_polygons, polygons_suffice, vertex_dicts

    image, meta, raw = _frame_and_raw(adapter, frames[0])
    kwargs = {"confidence": 0.05, "source": "workflow-execution", "visualize_predictions": visualize}
    with helpers.deterministic_ids():
        want = adapter.postprocess(raw, meta, **kwargs)
    with helpers.surface(workflows=True), helpers.deterministic_ids(), polygons_suffice():
        got = adapter.postprocess(raw, meta, **kwargs)
    kept = kept_polygons(got[0])
    assert kept is not None and len(kept.pairs) == len(want[0].predictions) > 0
    if visualize:  # a visualisation draws the points: they are made as usual
        helpers.assert_same_responses([want], [got])
        assert not kept.points_omitted
        return
    assert kept.points_omitted
    # Everything but the points is the stock response; the polygons stand for the stock points.
    for stock, ours, (points, polygon) in zip(want[0].predictions, got[0].predictions, kept.pairs):
        assert ours.points == [] and points is ours.points
        assert ours.model_dump(exclude={"points"}) == stock.model_dump(exclude={"points"})
        assert vertex_dicts(polygon) == stock.model_dump()["points"]
    assert got[0].model_dump(exclude={"predictions"}) == want[0].model_dump(exclude={"predictions"})


def test_dataclass_responses_fall_back(adapter, frames, monkeypatch) -> None:
    image, meta, raw = _frame_and_raw(adapter, frames[0])
    monkeypatch.setattr(adapter, "_pipeline_depth", 2)

    def run() -> list:
        with helpers.deterministic_ids():
            return adapter.postprocess(raw, meta, source="workflow-execution", confidence=0.05)

    want = run()
    before = call_counts()
    with helpers.surface():
        got = run()
    assert got == want and len(want[0].predictions) > 0
    assert type(got[0]).__name__ == "InstanceSegmentationInferenceResponseDC"
    assert _delta(before, "adapter:dataclass-responses") == 1


def _altered_post_process(monkeypatch, adapter, alter):
    """The model's post_process followed by ``alter(detections, kwargs)``, for both arms."""
    original = adapter._model.post_process

    def post_process(*args, **kwargs):
        detections = original(*args, **kwargs)
        for det in detections:
            alter(det, kwargs)
        return detections

    monkeypatch.setattr(adapter._model, "post_process", post_process)


def _as_rle(det, kwargs):
    from inference_models.models.base.types import InstancesRLEMasks
    from inference_models.models.common.rle_utils import torch_mask_to_coco_rle

    if isinstance(det.mask, torch.Tensor):
        rles = [torch_mask_to_coco_rle(mask=m) for m in det.mask]
        det.mask = InstancesRLEMasks.from_coco_rle_masks(image_size=tuple(det.mask.shape[1:]), masks=rles)


def _as_dense(det, kwargs):
    from pycocotools import mask as mask_utils

    rles = det.mask.to_coco_rle_masks()
    height, width = det.mask.mask_size
    dense = np.stack([mask_utils.decode(r) for r in rles]) if rles else np.zeros((0, height, width), np.uint8)
    det.mask = torch.from_numpy(dense.astype(bool))


@pytest.mark.parametrize(
    ("reason", "alter", "kwargs"),
    [
        ("handoff", lambda det, kw: setattr(det, "_mask_cpu", det.mask.numpy()) if isinstance(det.mask, torch.Tensor) else None, {}),
        ("mask-type", _as_rle, {}),
        ("mask-type", _as_dense, {"response_mask_format": "rle"}),
        ("dtypes", lambda det, kw: setattr(det, "class_id", det.class_id.long()), {}),
        ("mask-grid", lambda det, kw: setattr(det, "mask_size", (det.mask_size[0] - 1, det.mask_size[1])), {}),
    ],
    ids=["handoff", "rle-masks-for-polygons", "dense-masks-for-rle", "dtypes", "mask-grid"],
)
def test_detection_fallbacks_use_the_stock_builder(adapter, frames, monkeypatch, reason, alter, kwargs) -> None:
    _altered_post_process(monkeypatch, adapter, alter)
    before = call_counts()
    want, got = helpers.stock_and_ours(adapter, frames[:1], confidence=0.05, **kwargs)
    helpers.assert_same_responses(want, got)
    assert _delta(before, f"adapter:{reason}") == 1 and _delta(before, "adapter") == 0


def test_strict_mode_raises_on_fallback_and_serves_the_rest(adapter, frames) -> None:
    with helpers.surface(strict=True):
        with pytest.raises(FallbackError, match="reduced mask resolution"):
            adapter.infer(frames[0], allow_reduced_mask_resolution=True)
        before = call_counts()
        adapter.infer(frames[0])
        assert _delta(before, "adapter") == 1


def test_every_fallback_reason_is_tested_and_documented() -> None:
    source = Path(__file__).read_text(encoding="utf-8")
    readme = (HERE.parent / "README.md").read_text(encoding="utf-8")
    for reason in FALLBACK_REASONS:
        assert f'"{reason}"' in source or f'"adapter:{reason}"' in source, reason
        assert f"`adapter:{reason}`" in readme, reason


# ------------------------------------------------------------------ activation gates


def test_unsupported_inference_version_leaves_the_adapter_unpatched(monkeypatch, caplog) -> None:
    module = helpers.adapter_module()
    cls = module.InferenceModelsInstanceSegmentationAdapter
    stock = cls.__dict__["_postprocess_sync"]
    real = package.host_version
    monkeypatch.setattr(package, "host_version", lambda host="inference-models": "1.9.0" if host == "inference" else real(host))
    with caplog.at_level(logging.WARNING):
        with helpers.surface():
            assert cls.__dict__["_postprocess_sync"] is stock
    assert "inference 1.9.0 is outside the supported range" in caplog.text


def test_patched_only_by_the_postprocessing_switch(monkeypatch) -> None:
    from inference_triton_preproc.plugin import _hook

    cls = helpers.adapter_module().InferenceModelsInstanceSegmentationAdapter
    stock = cls.__dict__["_postprocess_sync"], cls.__dict__["_finalize_future"]
    monkeypatch.setattr(_hook, "TARGETS", {helpers.ADAPTER_MODULE: "inference_adapter"})
    assert itp.install(postprocess=False)
    assert (cls.__dict__["_postprocess_sync"], cls.__dict__["_finalize_future"]) == stock
    itp.uninstall()
    with helpers.surface():
        assert cls.__dict__["_postprocess_sync"] is not stock[0]
        assert cls.__dict__["_finalize_future"] is not stock[1]
    assert (cls.__dict__["_postprocess_sync"], cls.__dict__["_finalize_future"]) == stock


# ----------------------------------------------------------------------- pipelining


def test_torch_adapter_keeps_depth_one_with_depth_two_requested(adapter, frames, monkeypatch) -> None:
    monkeypatch.setenv("RFDETR_PIPELINE_DEPTH", "2")
    assert adapter._resolve_pipeline_depth() == 1
    before = call_counts()
    want, got = helpers.stock_and_ours(adapter, frames[:1])
    helpers.assert_same_responses(want, got)
    assert _delta(before, "adapter") == 1


def test_pipelined_frames_keep_the_stock_deferred_contract(adapter, frames, monkeypatch) -> None:
    """Depth 2 as a stream-pipeline model runs it (responses one frame late, then flush())."""
    monkeypatch.setattr(adapter, "_pipeline_depth", 2)
    monkeypatch.setattr(adapter, "_response_delay", 1)

    def run() -> list:
        with helpers.deterministic_ids():
            responses = [adapter.infer(frame, confidence=0.05) for frame in frames[:2]]
            responses.append(adapter.flush())
        return responses

    want = run()
    before = call_counts()
    with helpers.surface():
        got = run()
    helpers.assert_same_responses(want, got)
    assert [len(r) for r in got] == [1, 1, 1] and got[0][0].predictions == []  # the priming frame
    assert _delta(before, "adapter:pipelined") == 2 and _delta(before, "adapter") == 0
    adapter.shutdown_pipeline()


# ----------------------------------------------------------- InferencePipeline.init


def _pipeline_arm(arm: str, max_frames: int) -> dict:
    env = {**os.environ, **helpers.LOCAL_PACKAGE_ENV, "PYTHONPATH": os.pathsep.join([str(HERE.parent), str(HERE)])}
    for name in ("RFDETR_USE_TRITON_PREPROC", "RFDETR_TRITON_FULLPOSTPROC"):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, str(HERE / "inference_pipeline_arm.py"), arm, str(max_frames)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_inference_pipeline_init_off_vs_on() -> None:
    off = _pipeline_arm("off", 2)
    on = _pipeline_arm("on", 2)
    assert len(off["predictions"]) == 2 and sum(len(p["predictions"]) for p in off["predictions"]) > 0
    assert on["predictions"] == off["predictions"]
    # Key order too: the sinks' dicts serialise to the same bytes.
    assert json.dumps(on["predictions"]) == json.dumps(off["predictions"])
    assert on["counts"].get("adapter", 0) >= 2 and "adapter" not in off["counts"]
    # Every frame was dumped without Point objects and completed from its polygons.
    assert on["counts"].get("pipeline", 0) >= 2 and "pipeline" not in off["counts"]


GC_FREEZE_CHECK = """
import gc
import adapter_helpers as helpers
import inference_triton_preproc as itp
from inference_triton_preproc.plugin import call_counts
from inference_triton_preproc.runtime import heap
from inference_triton_preproc.validate.default_model import load_sample_frames

adapter = helpers.make_adapter("cpu")
frame = load_sample_frames(limit=1)[0]
assert itp.install(preprocess=False, postprocess=True)
before = gc.get_freeze_count()
adapter.infer(frame)
first = gc.get_freeze_count()
adapter.infer(frame)
print("RESULT", before, first, heap.freeze_loaded_heap(), call_counts().get("gc-freeze", 0))
"""


@pytest.mark.parametrize("flag", ["1", "0"])
def test_gc_freeze_once_after_the_first_adapter_call(flag) -> None:
    env = {**os.environ, **helpers.LOCAL_PACKAGE_ENV, "PYTHONPATH": os.pathsep.join([str(HERE.parent), str(HERE)])}
    env.update({"RFDETR_TRITON_FULLPOSTPROC": "1", "RFDETR_TRITON_GC_FREEZE": flag})
    env.pop("RFDETR_USE_TRITON_PREPROC", None)
    done = subprocess.run([sys.executable, "-c", GC_FREEZE_CHECK], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    _, before, first, again, counted = done.stdout.strip().splitlines()[-1].split()
    assert int(before) == 0
    if flag == "1":
        assert int(first) > 10_000 and again == "None" and counted == "1"  # the loaded heap, frozen once
    else:
        assert int(first) == 0 and int(again) > 0 and counted == "0"  # nothing frozen until asked


def test_gc_freeze_needs_the_post_processing_switch(monkeypatch) -> None:
    from inference_triton_preproc.plugin import install_from_env

    monkeypatch.setenv("RFDETR_TRITON_GC_FREEZE", "1")
    monkeypatch.setenv("RFDETR_USE_TRITON_PREPROC", "1")
    monkeypatch.delenv("RFDETR_TRITON_FULLPOSTPROC", raising=False)
    with pytest.raises(ValueError, match="RFDETR_TRITON_GC_FREEZE .* needs RFDETR_TRITON_FULLPOSTPROC"):
        install_from_env()
    with pytest.raises(ValueError, match="needs RFDETR_TRITON_FULLPOSTPROC"):
        itp.install(postprocess=False, gc_freeze=True)
    monkeypatch.setenv("RFDETR_TRITON_GC_FREEZE", "often")
    with pytest.raises(ValueError, match="RFDETR_TRITON_GC_FREEZE='often' is not valid"):
        itp.install(postprocess=True)
    assert not itp.is_installed()

