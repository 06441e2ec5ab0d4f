"""Post-processing kernels against their PyTorch references, bit for bit, over many shapes (CPU, interpreter)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from inference_triton_preproc.kernels import postprocess as pp
from inference_triton_preproc.kernels import rle
from inference_triton_preproc.kernels.resize import interpreted

pytestmark = pytest.mark.skipif(not interpreted() and not torch.cuda.is_available(), reason="needs CUDA or TRITON_INTERPRET=1")

DEVICE = torch.device("cuda" if torch.cuda.is_available() and not interpreted() else "cpu")

# (logits (Q, h, w), crop (top, left, h, w), target (h, w), canvas (h, w), offset (y, x)): upsampling
# of the RF-DETR grids to odd frame sizes, letterbox crops, pasted canvases, a 1:1 axis; and a
# downscale (small masks_resolution_factor), whose axes take more than two taps: CUDA only, as
# PyTorch's CPU downscale accumulates in another order (the plugin checks each geometry and
# falls back there).
MASK_GEOMETRIES = [
    ((6, 78, 78), (0, 0, 78, 78), (120, 160), (120, 160), (0, 0)),
    ((5, 96, 96), (3, 0, 90, 96), (97, 161), (110, 170), (5, 9)),
    ((4, 78, 78), (0, 11, 78, 56), (78, 133), (78, 133), (0, 0)),
    ((3, 108, 108), (0, 0, 108, 108), (109, 255), (140, 255), (31, 0)),
    pytest.param(
        ((3, 78, 78), (2, 0, 74, 78), (23, 31), (23, 31), (0, 0)),
        marks=pytest.mark.skipif(DEVICE.type != "cuda", reason="PyTorch's CPU downscale accumulates in another order"),
    ),
]


def _logits(shape: tuple[int, int, int], dtype: torch.dtype, scale: float, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=generator) * scale).to(device=DEVICE, dtype=dtype)


@pytest.mark.parametrize("geometry", MASK_GEOMETRIES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_resized_values_equal_torchvision(geometry, dtype) -> None:
    shape, crop, target, canvas, offset = geometry
    logits = _logits(shape, dtype, 4.0, seed=shape[1])
    index = torch.tensor([2, 0, 0, shape[0] - 1], device=DEVICE)
    g = pp.MaskGeometry(crop, target, canvas, offset)
    ours = pp.resize_masks(logits, index, g, binarize=False)
    assert ours.dtype == dtype and ours.shape == (4, *canvas)
    assert torch.equal(ours, pp.resize_masks_torch(logits, index, g, binarize=False))


@pytest.mark.parametrize("scale", [1e-4, 1.0])
def test_thresholded_masks_equal_torchvision_near_zero(scale) -> None:
    # Tiny logits put many interpolated values next to the threshold, where a rounding
    # difference would flip a pixel.
    shape, crop, target, canvas, offset = MASK_GEOMETRIES[1]
    logits = _logits(shape, torch.float32, scale, seed=7)
    logits[0, :10] = 0.0
    index = torch.arange(shape[0], device=DEVICE)
    g = pp.MaskGeometry(crop, target, canvas, offset)
    ours = pp.resize_masks(logits, index, g)
    assert ours.dtype == torch.bool
    assert torch.equal(ours, pp.resize_masks_torch(logits, index, g))
    columns = pp.resize_masks(logits, index, g, column_major=True)
    assert columns.stride() == (canvas[0] * canvas[1], 1, canvas[0]) and torch.equal(columns, ours)


def test_strided_logits_and_empty_selection() -> None:
    base = _logits((4, 80, 90), torch.float32, 3.0, seed=3)
    logits = base[:, 1:79, 5:83].transpose(1, 2)  # a non-contiguous (Q, 78, 78) view
    g = pp.MaskGeometry((0, 0, 78, 78), (100, 90), (100, 90), (0, 0))
    index = torch.tensor([3, 1], device=DEVICE)
    assert torch.equal(pp.resize_masks(logits, index, g), pp.resize_masks_torch(logits, index, g))
    empty = pp.resize_masks(logits, index[:0], g)
    assert empty.shape == (0, 100, 90) and empty.dtype == torch.bool


@pytest.mark.parametrize("count", [0, 2, 5])
def test_bounded_launch_into_a_buffer_writes_only_the_counted_rows(count) -> None:
    # What a captured graph runs: a fixed grid over out's rows, the count read on the device.
    shape, crop, target, canvas, offset = MASK_GEOMETRIES[1]
    logits = _logits(shape, torch.float32, 2.0, seed=11)
    index = torch.tensor([4, 0, 2, 2, 1, 3, 0], device=DEVICE)
    g = pp.MaskGeometry(crop, target, canvas, offset)
    out = torch.ones((5, *canvas), dtype=torch.bool, device=DEVICE)
    counted = torch.tensor([count, 0], dtype=torch.int32, device=DEVICE)
    assert pp.resize_masks(logits, index, g, out=out, count=counted) is out
    assert torch.equal(out[:count], pp.resize_masks_torch(logits, index[:count], g))
    assert bool(out[count:].all())  # untouched
    unbounded = torch.zeros_like(out)
    pp.resize_masks(logits, index, g, out=unbounded)
    assert torch.equal(unbounded, pp.resize_masks_torch(logits, index[:5], g))


def test_rejects_a_buffer_of_another_shape_or_too_few_indices() -> None:
    g = pp.MaskGeometry((0, 0, 8, 8), (16, 16), (16, 16), (0, 0))
    logits = torch.zeros(2, 8, 8, device=DEVICE)
    index = torch.zeros(3, dtype=torch.long, device=DEVICE)
    for out in (torch.zeros(3, 16, 15, dtype=torch.bool), torch.zeros(3, 16, 16, dtype=torch.int8), torch.zeros(3, 16, 16, dtype=torch.bool).transpose(1, 2)):
        with pytest.raises(ValueError, match="out must be"):
            pp.resize_masks(logits, index, g, out=out.to(DEVICE))
    with pytest.raises(ValueError, match="index must have at least 4"):
        pp.resize_masks(logits, index, g, out=torch.zeros(4, 16, 16, dtype=torch.bool, device=DEVICE))


def test_axis_taps_reproduce_the_resize_of_a_basis() -> None:
    taps = pp.axis_taps(78, 131, DEVICE)
    assert taps.first.shape == (131,) and taps.weight.shape == (131, taps.taps) and taps.taps == 2
    assert bool((taps.weight.sum(dim=1) > 0.99).all())


def test_rejects_other_dtypes() -> None:
    g = pp.MaskGeometry((0, 0, 8, 8), (16, 16), (16, 16), (0, 0))
    with pytest.raises(TypeError, match="logits"):
        pp.resize_masks(torch.zeros(1, 8, 8, dtype=torch.float64, device=DEVICE), torch.zeros(1, dtype=torch.long), g)
    score, flat = torch.ones(1, device=DEVICE), torch.zeros(1, dtype=torch.long, device=DEVICE)
    rule = pp.ClassRule(pp.CLASSES_NAMED, num_classes=1)
    with pytest.raises(TypeError, match="boxes"):
        pp.select_detections(score, flat, torch.zeros(1, 4, dtype=torch.float64), 1, rule, 0.5, BOX_GEOMETRIES[0])
    many = torch.ones(pp.MAX_CANDIDATES + 1, device=DEVICE)
    with pytest.raises(ValueError, match="confidence"):
        pp.select_detections(many, many.long(), torch.zeros(1, 4, device=DEVICE), 1, rule, 0.5, BOX_GEOMETRIES[0])


BOX_GEOMETRIES = [
    # stretch to the original frame: integer boxes
    pp.BoxGeometry((312, 312), (0, 0), (312 / 1920, 312 / 1080), None, (1920, 1080), False, True),
    # letterbox, static crop pasted on a canvas, float boxes on a reduced grid
    pp.BoxGeometry((432, 432), (5, 11), (0.37, 0.41), (3, 7), (641, 377), True, False),
    # odd canvas sizes above float16's exact integers
    pp.BoxGeometry((384, 384), (0, 24), (0.2, 0.2), (0, 13), (2161, 1377), False, True),
]


def _assert_selection_equal(got: pp.Selection, want: pp.Selection) -> int:
    """The kernel's valid rows equal the reference's (which has exactly that many); their number."""
    count, tied = got.summary.tolist()
    assert [count, tied] == want.summary.tolist()
    for name in ("confidence", "class_id", "query", "xyxy"):
        ours, reference = getattr(got, name)[:count], getattr(want, name)
        assert ours.dtype == reference.dtype and torch.equal(ours, reference), name
    return count


@pytest.mark.parametrize("geometry", BOX_GEOMETRIES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_boxes_equal_the_stock_op_order(geometry, dtype) -> None:
    generator = torch.Generator().manual_seed(11)
    # Some boxes reach past the frame (clamped), some are degenerate.
    boxes = (torch.rand(60, 4, generator=generator) * 1.4 - 0.2).to(device=DEVICE, dtype=dtype)
    boxes[0] = torch.tensor([0.5, 0.5, 0.0, 0.0])
    boxes = boxes.T.contiguous().T  # column-major strides
    # Every candidate kept (one class, threshold below every score): a box per query listed.
    query = torch.tensor([0, 5, 5, 59, 2, 17, 33], device=DEVICE)
    score = torch.linspace(0.9, 0.3, query.numel(), device=DEVICE).to(dtype)
    rule = pp.ClassRule(pp.CLASSES_NAMED, num_classes=1)
    args = (score, query, boxes, 1, rule, 0.1, geometry)
    assert _assert_selection_equal(pp.select_detections(*args), pp.select_detections_torch(*args)) == query.numel()
    none = pp.select_detections(score, query, boxes, 1, rule, 0.95, geometry)
    assert none.summary.tolist() == [0, 0]


def _hand_made_masks() -> torch.Tensor:
    masks = torch.zeros(7, 13, 9, dtype=torch.bool)
    masks[1] = True
    masks[2, 0, 0] = True  # starts with a foreground pixel
    masks[3, -1, -1] = True  # ends with one
    masks[4, ::2, ::2] = True  # many short runs
    masks[5, 4:9, 2:7] = True
    masks[5, 6, 4] = False  # a hole
    masks[6] = torch.rand(13, 9, generator=torch.Generator().manual_seed(5)) > 0.5
    return masks


def test_rle_counts_start_with_a_run_of_zeros() -> None:
    masks = _hand_made_masks().to(DEVICE)
    counts = rle.run_lengths(masks).counts()
    assert counts[0] == [13 * 9] and counts[1] == [0, 13 * 9] and counts[2][:2] == [0, 1]
    assert all(sum(c) == 13 * 9 for c in counts)
    assert rle.coco_rle(masks[:0]) == []
    with pytest.raises(ValueError, match="masks"):
        rle.run_lengths(masks[:0])


def test_coco_rle_equals_pycocotools_byte_for_byte() -> None:
    masks = _hand_made_masks().to(DEVICE)
    assert rle.coco_rle(masks) == rle.coco_rle_torch(masks)
    # Long runs and large differences between runs two apart (multi-group values, negative deltas).
    big = torch.zeros(3, 300, 2000, dtype=torch.bool, device=DEVICE)
    big[0, :, 1500:] = True
    big[1, 7:9, :] = True
    big[2, ::37, ::3] = True
    want = rle.coco_rle_torch(big)
    assert rle.coco_rle(big) == want
    # Laid out column by column (as the RLE path resizes them): the same strings, no copy.
    assert rle.coco_rle(big.transpose(1, 2).contiguous().transpose(1, 2)) == want


@settings(max_examples=40, deadline=None)
@given(
    # Totals stay below 2**31, the largest frame pycocotools accepts.
    st.lists(st.lists(st.integers(min_value=1, max_value=2**24), min_size=1, max_size=40), min_size=1, max_size=3),
    st.booleans(),
)
def test_compression_equals_pycocotools_for_any_runs(masks_runs, starts_true) -> None:
    from pycocotools import mask as coco_mask

    counts = [[0, *runs] if starts_true else runs for runs in masks_runs]
    flat = [c for mask in counts for c in mask]
    tails = np.cumsum([len(mask) for mask in counts]) - 1
    runs = rle.RunLengths(
        runs=torch.tensor(flat, dtype=torch.int64, device=DEVICE),
        local=torch.tensor([i for mask in counts for i in range(len(mask))], dtype=torch.int32, device=DEVICE),
        tails=torch.from_numpy(tails).to(DEVICE),
    )
    chars, ends = rle.compress_runs(runs)
    data, ends = chars.cpu().numpy().tobytes(), ends.cpu().tolist()
    got = [data[start:end] for start, end in zip([0, *ends[:-1]], ends)]
    want = [coco_mask.frPyObjects({"counts": c, "size": [1, sum(c)]}, 1, sum(c))["counts"] for c in counts]
    assert got == want


def _rules(num_logit_classes: int) -> list[pp.ClassRule]:
    generator = torch.Generator().manual_seed(2)
    mapping = torch.randint(-1, 5, (num_logit_classes,), generator=generator).to(torch.int32).to(DEVICE)
    keep = (torch.rand(num_logit_classes, generator=generator) > 0.4).to(torch.int8).to(DEVICE)
    return [
        pp.ClassRule(pp.CLASSES_NAMED, num_classes=num_logit_classes - 1),
        pp.ClassRule(pp.CLASSES_REMAINING, keep=keep, mapping=mapping),
        pp.ClassRule(pp.CLASSES_MAPPED, mapping=mapping),
    ]


@pytest.mark.parametrize("rule_index", [0, 1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("per_class", [False, True])
def test_selection_equals_the_stock_rules(rule_index, dtype, per_class) -> None:
    queries, classes = 300, 9
    generator = torch.Generator().manual_seed(rule_index)
    scores = torch.rand(queries * classes, generator=generator).to(device=DEVICE, dtype=dtype)
    scores[::7] = 0.5  # equal to the threshold: strictly greater is required
    boxes = torch.rand(queries, 4, generator=generator).to(device=DEVICE, dtype=dtype)
    confidence, flat = torch.topk(scores, queries)
    threshold = torch.linspace(0.2, 0.8, classes - 1).to(device=DEVICE, dtype=dtype) if per_class else 0.5
    rule = _rules(classes)[rule_index]
    args = (confidence, flat, boxes, classes, rule, threshold, BOX_GEOMETRIES[1])
    assert 0 < _assert_selection_equal(pp.select_detections(*args), pp.select_detections_torch(*args)) < queries


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("geometry", BOX_GEOMETRIES[:2])
def test_selection_into_packed_buffers(dtype, geometry) -> None:
    # The buffers a captured selection writes: views of one byte buffer, so one copy of it
    # copies every output; the values are those of separate buffers.
    queries, classes = 50, 3
    generator = torch.Generator().manual_seed(5)
    confidence, flat = torch.topk(torch.rand(queries * classes, generator=generator).to(device=DEVICE, dtype=dtype), queries)
    boxes = torch.rand(queries, 4, generator=generator).to(device=DEVICE, dtype=dtype)
    args = (confidence, flat, boxes, classes, pp.ClassRule(pp.CLASSES_NAMED, num_classes=2), 0.3, geometry)
    layout = pp.SelectionLayout(queries, dtype, geometry.integer)
    packed = torch.full((layout.nbytes,), 255, dtype=torch.uint8, device=DEVICE)
    out = layout.views(packed)
    got = pp.select_detections(*args, out=out)
    assert got is out
    start, end = packed.data_ptr(), packed.data_ptr() + packed.numel()
    for name in ("confidence", "class_id", "query", "xyxy", "summary"):
        view = getattr(out, name)
        assert start <= view.data_ptr() and view.data_ptr() + view.numel() * view.element_size() <= end, name
    count = _assert_selection_equal(got, pp.select_detections_torch(*args))
    assert 0 < count < queries
    rows = layout.rows(packed, count)
    for name, row in zip(("confidence", "class_id", "query", "xyxy"), rows):
        assert torch.equal(row, getattr(out, name)[:count]), name
    with pytest.raises(ValueError, match="packed must be uint8"):
        layout.views(packed[1:])


@pytest.mark.parametrize("tie", ["kept", "one-kept", "none"])
def test_selection_reports_equal_kept_scores(tie) -> None:
    # Descending scores; an equal pair among the kept (even with a dropped class between
    # them) is reported, an equal pair that the threshold or the class rule splits is not.
    confidence = torch.tensor([0.9, 0.8, 0.7, 0.7, 0.7, 0.6, 0.3], device=DEVICE)
    classes = {"kept": [0, 0, 0, 1, 0, 0, 0], "one-kept": [0, 0, 0, 1, 1, 0, 0], "none": [0, 0, 1, 1, 0, 0, 0]}[tie]
    flat = torch.tensor([q * 2 + c for q, c in enumerate(classes)], device=DEVICE)
    boxes = torch.rand(len(classes), 4, device=DEVICE)
    args = (confidence, flat, boxes, 2, pp.ClassRule(pp.CLASSES_NAMED, num_classes=1), 0.5, BOX_GEOMETRIES[0])
    want = pp.select_detections_torch(*args)
    assert want.summary.tolist()[1] == (tie == "kept")
    _assert_selection_equal(pp.select_detections(*args), want)


def _ranked_and_top_k(scores: torch.Tensor, boxes: torch.Tensor, classes: int, rule, threshold, geometry):
    """(the ranked form's selection, its count and status; the stock reference on the top-k of the same scores)."""
    confidence, flat = torch.topk(scores, int(boxes.shape[0]))
    ranked = pp.select_detections(scores, None, boxes, classes, rule, threshold, geometry)
    count, status = ranked.summary.tolist()
    return ranked, count, status, pp.select_detections_torch(confidence, flat, boxes, classes, rule, threshold, geometry)


@pytest.mark.parametrize("rule_index", [0, 1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("per_class", [False, True])
@pytest.mark.parametrize(("queries", "classes"), [(100, 4), (300, 9), (30, 91)])
def test_ranked_selection_equals_the_top_k_where_it_stands(rule_index, dtype, per_class, queries, classes) -> None:
    # Without the top-k: the passing scores of all Q x C, ranked. Where the status is 0
    # the outputs are the reference's on the top-k; where two passing scores are equal
    # (float16 has few values) bit 0 says so, as the reference's tie flag does.
    generator = torch.Generator().manual_seed(queries + rule_index)
    # Fewer passing scores than slots (the top-k then keeps them all).
    logits = torch.randn(queries, classes, generator=generator) * 2 - (5 if classes > 50 else 3)
    scores = torch.sigmoid(logits.to(DEVICE, dtype)).reshape(-1)
    boxes = torch.rand(queries, 4, generator=generator).to(device=DEVICE, dtype=dtype)
    threshold = torch.linspace(0.5, 0.7, max(classes - 1, 5)).to(device=DEVICE, dtype=dtype) if per_class else 0.6
    ranked, count, status, want = _ranked_and_top_k(scores, boxes, classes, _rules(classes)[rule_index], threshold, BOX_GEOMETRIES[1])
    want_count, want_tied = want.summary.tolist()
    assert not status & 2
    assert (count, status) == (want_count, want_tied)
    if not status:
        assert _assert_selection_equal(ranked, want) > 0
    else:
        assert dtype == torch.float16


def test_ranked_selection_flags_scores_the_top_k_would_cut() -> None:
    # Passing scores the top-k does not keep: removed classes (and NaN, which the top-k
    # ranks first) scoring above the lowest passing one fill the slots; bit 1, and the
    # count stays within the slots.
    queries, classes = 10, 3
    rule = pp.ClassRule(pp.CLASSES_NAMED, num_classes=2)
    boxes = torch.rand(queries, 4, device=DEVICE)
    scores = torch.full((queries, classes), 0.1, device=DEVICE)
    scores[:, 0] = torch.linspace(0.5, 0.6, queries, device=DEVICE)
    cases = {
        "removed class above": (2, 0.9),
        "NaN": (2, float("nan")),
        "kept scores fill the slots": (1, 0.45),
    }
    for name, (column, value) in cases.items():
        case = scores.clone()
        case[:, column] = value
        case[0, column] = 0.0 if column == 1 else value
        _, count, status, want = _ranked_and_top_k(case.reshape(-1), boxes, classes, rule, 0.4, BOX_GEOMETRIES[0])
        assert status & 2 and count <= queries, name
        assert want.summary.tolist()[0] < (2 * queries - 1 if column == 1 else queries), name
    # No score above the lowest passing one beyond the slots: bit 1 clear.
    _, count, status, want = _ranked_and_top_k(scores.reshape(-1), boxes, classes, rule, 0.4, BOX_GEOMETRIES[0])
    assert (count, status) == (queries, 0) == tuple(want.summary.tolist())


def test_ranked_selection_rejects_scores_of_another_size() -> None:
    rule = pp.ClassRule(pp.CLASSES_NAMED, num_classes=2)
    with pytest.raises(ValueError, match="flat scores"):
        pp.select_detections(torch.rand(29, device=DEVICE), None, torch.rand(10, 4, device=DEVICE), 3, rule, 0.5, BOX_GEOMETRIES[0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_frame_selection_equals_the_stock_ops(dtype) -> None:
    # Sigmoid, flat top-k and the selection kernel, counted: the stock ops' kept rows
    # (off the GPU the selection is never captured as a graph).
    from inference_triton_preproc.runtime.selection import SelectionGraphs

    queries, classes = 100, 5
    generator = torch.Generator().manual_seed(9)
    logits = (torch.randn(queries, classes, generator=generator) * 3).to(device=DEVICE, dtype=dtype)
    boxes = torch.rand(queries, 4, generator=generator).to(device=DEVICE, dtype=dtype)
    rule = pp.ClassRule(pp.CLASSES_NAMED, num_classes=4)
    confidence, flat = torch.topk(torch.sigmoid(logits).reshape(-1), queries)
    want = pp.select_detections_torch(confidence, flat, boxes, classes, rule, 0.6, BOX_GEOMETRIES[1])
    runner = SelectionGraphs()
    for _ in range(3):
        got = runner.select(logits, boxes, rule, 0.6, BOX_GEOMETRIES[1])
        assert got.tied == bool(want.summary[1])
        for name in ("confidence", "class_id", "query", "xyxy"):
            assert torch.equal(getattr(got, name), getattr(want, name)), name
        assert 0 < got.confidence.shape[0] < queries
    if DEVICE.type == "cpu":
        assert not runner._graphs


@pytest.mark.skipif(DEVICE.type == "cuda", reason="the refused capture on CUDA is in test_postprocess_gpu.py")
def test_a_refused_capture_is_not_tried_again_after_many_other_combinations(monkeypatch, caplog) -> None:
    # Off the GPU no call has a key of its own (nothing is captured there): each call is
    # given one, as the plugin gives its planned keys, and the capture is made to fail.
    from inference_triton_preproc.runtime import selection

    attempts = []

    def refused(logits, boxes, rule, threshold, *rest):
        attempts.append(threshold)
        raise RuntimeError("capture refused")

    monkeypatch.setattr(selection, "_Captured", refused)
    generator = torch.Generator().manual_seed(4)
    logits = (torch.randn(40, 3, generator=generator) * 3).to(DEVICE)
    boxes = torch.rand(40, 4, generator=generator).to(DEVICE)
    rule = pp.ClassRule(pp.CLASSES_NAMED, num_classes=3)
    runner = selection.SelectionGraphs(capacity=1)
    # The refused combination, then more others than the first-seen marks keep, then it again.
    thresholds = [0.5, 0.5, *(0.55 + 0.05 * k for k in range(2 * runner._seen.capacity)), 0.5, 0.5]
    with caplog.at_level("WARNING", logger=selection.__name__):
        for threshold in thresholds:
            got = runner.select(logits, boxes, rule, threshold, BOX_GEOMETRIES[1], key=("combination", threshold))
            want = selection.select_frame(logits, boxes, rule, threshold, BOX_GEOMETRIES[1])
            assert torch.equal(got.confidence, want.confidence[: int(want.summary[0])])
    # Tried on its second call only; the others were each seen once.
    assert attempts == [0.5] and caplog.text.count("could not be captured") == 1
