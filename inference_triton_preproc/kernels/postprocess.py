"""Post-processing kernels: RF-DETR mask logits to the user's masks, network boxes to the user's grid.

Two Triton kernels, each beside the PyTorch computation it reproduces:

* :func:`resize_masks` — the selected detections' mask logits, letterbox padding
  cropped, resized with antialiased bilinear filtering, thresholded at ``> 0`` and pasted
  on the output canvas, in one pass from the ``(Q, h, w)`` logits to the ``(N, H, W)``
  bool canvas. The reference is ``torchvision.transforms.functional.resize(...,
  BILINEAR)`` (antialias on) followed by ``.gt_(0)`` (:func:`resize_masks_torch`).
  PyTorch's antialiased bilinear filters each source row first into a float32 buffer,
  then the column, and accumulates each axis as ``t = x0 * w0`` then ``t = fma(xk, wk, t)``
  (CUDA's compiler contracts the ``t += x * w`` of that loop; so does the vectorised CPU
  build). The kernel does the same with the same per-axis weights, which
  :func:`axis_taps` reads off the device's own resize of an identity basis, so its values
  are the reference's bit for bit. fp16 logits are resized in float32 and rounded to
  fp16 before the threshold, as the reference does. Under ``TRITON_INTERPRET=1`` the
  fused multiply-add is computed exactly in float64 with round-to-odd (the interpreter's
  own ``tl.fma`` rounds twice).
* :func:`select_detections` — which (query, class) pairs of the flat top-k survive the
  class rule and the strict threshold, compacted in top-k order with their output
  classes and their boxes, in one program: ``cxcywh`` (normalised) to ``xyxy`` on the
  mask canvas in the stock op order and dtype (``c -/+ 0.5 * wh``, times the network
  size, minus the padding, IEEE division by the scale, plus the canvas offset, clamped,
  rounded half to even to int32 when the canvas is the original image), each operation
  rounded to the dtype the stock path computes it in (float16 engines stay float16
  until the stock path casts to float32), compiled without floating-point contraction.
  It also reports whether two kept scores are equal, the only case in which the stock
  sort can reorder them (reference: :func:`select_detections_torch`). Its ranked form
  replaces the top-k: every passing score of the flat Q x C compacted and ranked among
  themselves, the top-k's order unless two are equal or the top-k would cut some (which
  it reports).

COCO RLE encoding is its own family, :mod:`.rle`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
import triton
import triton.language as tl

from .resize import interpreted

@dataclass(frozen=True)
class AxisTaps:
    """One axis of the antialiased bilinear resize, as the device computes it.

    ``first``: int32 ``(out,)``, the first source index with a non-zero weight;
    ``weight``: float32 ``(out, taps)``, the weights of sources ``first + k`` (zero past
    the window, and the source index is clamped there).
    """

    first: torch.Tensor
    weight: torch.Tensor

    @property
    def taps(self) -> int:
        return int(self.weight.shape[1])


@functools.lru_cache(maxsize=256)
def axis_taps(in_size: int, out_size: int, device: torch.device) -> AxisTaps:
    """The per-output source window and weights of one axis, read off the device's resize.

    Resizing a one-hot basis returns each weight exactly (``1 * w`` plus zeros). The
    other axis is 2 -> 2 (an identity; a length-1 axis returns zeros on the CPU).

    Args:
        in_size: source length in pixels (>= 1).
        out_size: output length in pixels (>= 1).
        device: where the reference resize runs; weights come back on it.
    """
    from torchvision.transforms import functional

    basis = torch.eye(in_size, dtype=torch.float32, device=device)[:, None, None, :].expand(in_size, 1, 2, in_size)
    resized = functional.resize(basis.contiguous(), [2, out_size], interpolation=functional.InterpolationMode.BILINEAR)
    dense = resized[:, 0, 0, :].T.cpu().numpy()  # (out, in)
    nonzero = dense != 0
    first = nonzero.argmax(axis=1)
    last = in_size - 1 - nonzero[:, ::-1].argmax(axis=1)
    taps = int((last - first).max()) + 1
    columns = first[:, None] + np.arange(taps)[None, :]
    weight = np.where(columns < in_size, dense[np.arange(out_size)[:, None], np.minimum(columns, in_size - 1)], 0.0)
    return AxisTaps(
        first=torch.from_numpy(first.astype(np.int32)).to(device),
        weight=torch.from_numpy(weight.astype(np.float32)).to(device),
    )


@dataclass(frozen=True)
class MaskGeometry:
    """Where the selected masks go: crop of the logits grid, resize target, canvas placement.

    All in pixels: ``crop`` = (top, left, height, width) of the unpadded logits,
    ``target`` = (height, width) of the resize, ``canvas`` = (height, width) of the
    output, ``offset`` = (y, x) of the resized mask on the canvas.
    """

    crop: tuple[int, int, int, int]
    target: tuple[int, int]
    canvas: tuple[int, int]
    offset: tuple[int, int]


@triton.jit
def _fma(a, b, c, EMULATE: tl.constexpr):
    """float32 ``a * b + c`` rounded once."""
    if EMULATE:
        # The float64 product of two float32 is exact; the float64 sum rounded to odd
        # (TwoSum error, then the last bit set when inexact) rounds to float32 exactly
        # as a fused multiply-add does (53 >= 2 * 24 + 2 bits).
        p = a.to(tl.float64) * b.to(tl.float64)
        c64 = c.to(tl.float64)
        s = p + c64
        bb = s - p
        err = (p - (s - bb)) + (c64 - bb)
        bits = s.to(tl.int64, bitcast=True)
        adjust = (err != 0) & ((bits & 1) == 0)
        away = (err > 0) == (s > 0)
        bits = tl.where(adjust, tl.where(away, bits + 1, bits - 1), bits)
        return bits.to(tl.float64, bitcast=True).to(tl.float32)
    else:
        return tl.fma(a, b, c)


@triton.jit
def _resize_threshold_kernel(
    logits_ptr,
    index_ptr,
    out_ptr,
    first_y_ptr,
    weight_y_ptr,
    first_x_ptr,
    weight_x_ptr,
    stride_q,
    stride_h,
    stride_w,
    crop_top,
    crop_left,
    crop_h,
    crop_w,
    target_h,
    target_w,
    canvas_h,
    canvas_w,
    offset_y,
    offset_x,
    out_stride_y,
    out_stride_x,
    num_rows,
    count_ptr,
    TAPS_Y: tl.constexpr,
    TAPS_X: tl.constexpr,
    HALF: tl.constexpr,
    BINARIZE: tl.constexpr,
    EMULATE_FMA: tl.constexpr,
    BOUNDED: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_W: tl.constexpr,
):
    # One program per output tile, over every mask: the tile's taps are computed once,
    # and a graph's fixed launch has no programs for the rows past the count.
    cy = tl.program_id(0) * BLOCK_H + tl.arange(0, BLOCK_H)
    cx = tl.program_id(1) * BLOCK_W + tl.arange(0, BLOCK_W)
    y = cy - offset_y
    x = cx - offset_x
    in_y = (y >= 0) & (y < target_h)
    in_x = (x >= 0) & (x < target_w)
    y = tl.where(in_y, y, 0)
    x = tl.where(in_x, x, 0)
    first_y = tl.load(first_y_ptr + y)
    first_x = tl.load(first_x_ptr + x)
    inside = in_y[:, None] & in_x[None, :]
    on_canvas = (cy < canvas_h)[:, None] & (cx < canvas_w)[None, :]
    tile = cy.to(tl.int64)[:, None] * out_stride_y + cx.to(tl.int64)[None, :] * out_stride_x
    rows = num_rows
    if BOUNDED:
        # Rows past the device-side count (a graph launches for a fixed number) are left as they are.
        rows = tl.minimum(rows, tl.load(count_ptr))
    # The first two taps' weights of each axis (all of them when upscaling), loaded once:
    # the compiler cannot move loads past the stores of the loop over masks. A one-tap
    # axis loads no second weight.
    weight_x0 = tl.load(weight_x_ptr + x * TAPS_X)[None, :]
    weight_x1 = tl.load(weight_x_ptr + x * TAPS_X + 1, mask=x * 0 + 1 < TAPS_X, other=0.0)[None, :]
    weight_y0 = tl.load(weight_y_ptr + y * TAPS_Y)[:, None]
    weight_y1 = tl.load(weight_y_ptr + y * TAPS_Y + 1, mask=y * 0 + 1 < TAPS_Y, other=0.0)[:, None]
    for n in range(0, rows):
        query = tl.load(index_ptr + n).to(tl.int64)
        base = logits_ptr + query * stride_q
        # Source row first_y + ky, filtered horizontally, then the rows combined: the
        # reference's order, with its rounding at every step.
        value = tl.zeros((BLOCK_H, BLOCK_W), dtype=tl.float32)
        for ky in tl.static_range(TAPS_Y):
            row = tl.minimum(first_y + ky, crop_h - 1) + crop_top
            row_ptr = base + row.to(tl.int64)[:, None] * stride_h
            col = tl.minimum(first_x, crop_w - 1) + crop_left
            logit = tl.load(row_ptr + col.to(tl.int64)[None, :] * stride_w).to(tl.float32)
            horizontal = logit * weight_x0
            for kx in tl.static_range(1, TAPS_X):
                col = tl.minimum(first_x + kx, crop_w - 1) + crop_left
                logit = tl.load(row_ptr + col.to(tl.int64)[None, :] * stride_w).to(tl.float32)
                if kx == 1:
                    weight_x = weight_x1
                else:
                    weight_x = tl.load(weight_x_ptr + x * TAPS_X + kx)[None, :]
                horizontal = _fma(logit, weight_x, horizontal, EMULATE_FMA)
            if ky == 0:
                weight_y = weight_y0
            elif ky == 1:
                weight_y = weight_y1
            else:
                weight_y = tl.load(weight_y_ptr + y * TAPS_Y + ky)[:, None]
            if ky == 0:
                value = horizontal * weight_y
            else:
                value = _fma(horizontal, weight_y, value, EMULATE_FMA)
        if HALF:
            value = value.to(tl.float16)
        out = out_ptr + tl.cast(n, tl.int64) * canvas_h * canvas_w + tile
        if BINARIZE:
            tl.store(out, (inside & (value > 0)).to(tl.int8), mask=on_canvas)
        else:
            tl.store(out, tl.where(inside, value, 0.0).to(out_ptr.dtype.element_ty), mask=on_canvas)


def _mask_blocks(canvas: tuple[int, int], column_major: bool) -> tuple[int, int]:
    """Output tile (rows, columns): small tiles on the GPU, long along the output's
    contiguous axis; few large ones under the interpreter (which pays per program instance)."""
    if interpreted():
        return min(triton.next_power_of_2(canvas[0]), 128), min(triton.next_power_of_2(canvas[1]), 256)
    return (128, 8) if column_major else (8, 128)


def resize_masks(
    logits: torch.Tensor,
    index: torch.Tensor,
    geometry: MaskGeometry,
    *,
    binarize: bool = True,
    column_major: bool = False,
    out: torch.Tensor | None = None,
    count: torch.Tensor | None = None,
) -> torch.Tensor:
    """Masks of the selected detections, from logits to the canvas, in one kernel.

    Args:
        logits: ``(Q, h, w)`` float32 or float16 mask logits of one frame (any strides).
        index: ``(N,)`` integer query index of each detection (repeats allowed); with
            ``out``, at least ``out.shape[0]`` entries.
        geometry: crop, resize target and canvas placement.
        binarize: return ``resized > 0`` (bool); else the resized values themselves
            (logits' dtype; what the checks compare bit for bit).
        column_major: lay each mask out column by column (strides ``(H*W, 1, H)``, the
            order COCO RLE reads), else row by row (contiguous).
        out: a ``(K, H, W)`` buffer to write into (bool when binarizing, laid out as
            ``column_major`` says), instead of a new one: masks of ``index[:K]``.
        count: a one-element int32 device tensor; rows at or past ``count[0]`` are left
            as they are (the launch does not read the count on the host, so it can be
            captured in a CUDA graph).

    Returns:
        ``(N, H, W)`` (``H, W = geometry.canvas``) on the logits' device:
        ``resize(logits[index], target)`` (``> 0`` when binarizing) placed at
        ``geometry.offset``, False (0) elsewhere; ``out`` when given.
    """
    if logits.dtype not in (torch.float32, torch.float16):
        raise TypeError(f"logits must be float32 or float16; got {logits.dtype}")
    canvas_h, canvas_w = geometry.canvas
    dtype = torch.bool if binarize else logits.dtype
    if out is not None:
        n = int(out.shape[0])
        strides = (canvas_h * canvas_w, 1, canvas_h) if column_major else (canvas_h * canvas_w, canvas_w, 1)
        if out.dtype != dtype or tuple(out.shape[1:]) != (canvas_h, canvas_w) or out.stride() != strides:
            raise ValueError(f"out must be a ({n}, {canvas_h}, {canvas_w}) {dtype} buffer with strides {strides}")
        if int(index.shape[0]) < n:
            raise ValueError(f"index must have at least {n} entries (out's rows); got {int(index.shape[0])}")
    elif column_major:
        n = int(index.shape[0])
        out = torch.empty((n, canvas_w, canvas_h), dtype=dtype, device=logits.device).transpose(1, 2)
    else:
        n = int(index.shape[0])
        out = torch.empty((n, canvas_h, canvas_w), dtype=dtype, device=logits.device)
    if n == 0:
        return out
    top, left, crop_h, crop_w = geometry.crop
    target_h, target_w = geometry.target
    taps_y = axis_taps(crop_h, target_h, logits.device)
    taps_x = axis_taps(crop_w, target_w, logits.device)
    block_h, block_w = _mask_blocks(geometry.canvas, column_major)
    grid = (triton.cdiv(canvas_h, block_h), triton.cdiv(canvas_w, block_w))
    _resize_threshold_kernel[grid](
        logits,
        index,
        out.view(torch.int8) if binarize else out,
        taps_y.first,
        taps_y.weight,
        taps_x.first,
        taps_x.weight,
        logits.stride(0),
        logits.stride(1),
        logits.stride(2),
        top,
        left,
        crop_h,
        crop_w,
        target_h,
        target_w,
        canvas_h,
        canvas_w,
        geometry.offset[0],
        geometry.offset[1],
        out.stride(1),
        out.stride(2),
        n,
        index if count is None else count,  # read only when BOUNDED
        TAPS_Y=taps_y.taps,
        TAPS_X=taps_x.taps,
        HALF=logits.dtype == torch.float16,
        BINARIZE=binarize,
        EMULATE_FMA=interpreted(),
        BOUNDED=count is not None,
        BLOCK_H=block_h,
        BLOCK_W=block_w,
    )
    return out


def resize_masks_torch(
    logits: torch.Tensor, index: torch.Tensor, geometry: MaskGeometry, *, binarize: bool = True
) -> torch.Tensor:
    """What :func:`resize_masks` computes, with torchvision's resize: its reference."""
    from torchvision.transforms import functional

    top, left, crop_h, crop_w = geometry.crop
    dtype = torch.bool if binarize else logits.dtype
    canvas = torch.zeros((int(index.shape[0]), *geometry.canvas), dtype=dtype, device=logits.device)
    if index.numel() == 0:
        return canvas
    selected = logits[index.long(), top : top + crop_h, left : left + crop_w]
    resized = functional.resize(selected, list(geometry.target), interpolation=functional.InterpolationMode.BILINEAR)
    (oy, ox), (th, tw) = geometry.offset, geometry.target
    canvas[:, oy : oy + th, ox : ox + tw] = resized > 0 if binarize else resized
    return canvas


# --------------------------------------------------------------------------------------
# Selection: which (query, class) pairs of the flat top-k survive the class filter and
# the confidence threshold, compacted in top-k order with their classes and boxes. Where
# scores tie, top-k and the final sort stay PyTorch operations: their tie order is what
# the stock path returns.
# --------------------------------------------------------------------------------------

# Class rules, as the stock functions apply them.
CLASSES_NAMED = 0  # no remapping: keep classes below the number of class names
CLASSES_REMAINING = 1  # dense path with remapping: keep isin(remaining ids), then map
CLASSES_MAPPED = 2  # RLE path with remapping: map (missing -> -1), keep mapped >= 0

# The most top-k slots one program compacts (RF-DETR has at most 300 queries).
MAX_CANDIDATES = 8192
# Flat scores the ranked selection scans at a time, and pairs of scores it compares at a time.
_SCAN = 1024
_PAIRS = 8192


@dataclass(frozen=True)
class ClassRule:
    """How one frame's top-k classes are filtered and renumbered.

    ``kind``: one of :data:`CLASSES_NAMED`, :data:`CLASSES_REMAINING`, :data:`CLASSES_MAPPED`;
    ``num_classes``: class names (for :data:`CLASSES_NAMED`); ``keep``: int8 ``(C,)``,
    whether each network class is kept (:data:`CLASSES_REMAINING`); ``mapping``: int32
    ``(C,)``, each network class's output class (-1: dropped, for :data:`CLASSES_MAPPED`).
    """

    kind: int
    num_classes: int = 0
    keep: torch.Tensor | None = None
    mapping: torch.Tensor | None = None


@dataclass(frozen=True)
class BoxGeometry:
    """The stock box arithmetic's constants for one frame.

    ``network``: (width, height) the normalised boxes are multiplied by; ``pad``: (left,
    top) letterbox padding; ``scale``: (width, height) image-to-network ratio, already
    adjusted to the mask grid; ``offset``: (x, y) canvas offset (``None``: not added);
    ``canvas``: (width, height) the boxes are clamped to; ``to_float``: the stock path
    casts the boxes to float32 before aligning them; ``integer``: round to int32 at the
    end (the canvas is the original image), else float32.
    """

    network: tuple[int, int]
    pad: tuple[int, int]
    scale: tuple[float, float]
    offset: tuple[int, int] | None
    canvas: tuple[int, int]
    to_float: bool
    integer: bool


@dataclass(frozen=True)
class Selection:
    """One frame's detections in top-k order; the first ``summary[0]`` rows are valid.

    ``confidence``: ``(K,)`` in the scores' dtype, descending; ``class_id``: int32 ``(K,)``
    (output classes); ``query``: int64 ``(K,)``; ``xyxy``: ``(K, 4)`` on the mask canvas,
    int32 when the canvas is the original image, else float32; ``summary``: int32 ``(2,)``
    on the device, the number of detections and whether two of them have equal scores
    (then the stock sort may reorder them).
    """

    confidence: torch.Tensor
    class_id: torch.Tensor
    query: torch.Tensor
    xyxy: torch.Tensor
    summary: torch.Tensor


@triton.jit
def _round_to(x, HALF: tl.constexpr):
    """x (float32) rounded to float16 and back when the stock op computes in float16."""
    if HALF:
        return x.to(tl.float16).to(tl.float32)
    else:
        return x


@triton.jit
def _align_coordinate(c, half_extent, sign: tl.constexpr, network, pad, scale, offset, limit,
                      BOX_HALF: tl.constexpr, ALIGN_HALF: tl.constexpr, OFFSET: tl.constexpr):
    edge = _round_to(c + sign * half_extent, BOX_HALF)
    edge = _round_to(edge * network, BOX_HALF)
    edge = _round_to(edge - pad, ALIGN_HALF)
    edge = _round_to(tl.math.div_rn(edge, scale), ALIGN_HALF)
    if OFFSET:
        edge = _round_to(edge + offset, ALIGN_HALF)
    return tl.minimum(tl.maximum(edge, 0.0), limit)


@triton.jit
def _store_edge(ptr, edge, valid, INTEGER: tl.constexpr):
    if INTEGER:
        # Round half to even in [0, 2**23): adding and removing 2**23 leaves the
        # nearest integer (the sum is rounded to nearest-even).
        tl.store(ptr, ((edge + 8388608.0) - 8388608.0).to(tl.int32), mask=valid)
    else:
        tl.store(ptr, edge, mask=valid)


@triton.jit
def _kept(flat, valid, confidence, keep_table_ptr, mapping_ptr, threshold_ptr, threshold_value, num_logit_classes,
          num_classes, num_thresholds, RULE: tl.constexpr, PER_CLASS: tl.constexpr):
    """(kept, query, output class) of flat (query, class) indices with float32 scores ``confidence``."""
    query = flat // num_logit_classes
    classes = flat % num_logit_classes
    if RULE == 0:
        keep = classes < num_classes
        index = tl.where(keep, classes, 0)
    elif RULE == 1:
        keep = tl.load(keep_table_ptr + classes, mask=valid, other=0) != 0
        classes = tl.load(mapping_ptr + tl.where(keep, classes, 0), mask=valid, other=0).to(tl.int64)
        # A kept class indexes the thresholds as a PyTorch index would (-1 is the last).
        index = tl.where(keep, tl.where(classes < 0, classes + num_thresholds, classes), 0)
    else:
        classes = tl.load(mapping_ptr + classes, mask=valid, other=-1).to(tl.int64)
        keep = classes >= 0
        index = tl.minimum(tl.maximum(classes, 0), num_thresholds - 1)
    if PER_CLASS:
        threshold = tl.load(threshold_ptr + index, mask=valid, other=0.0).to(tl.float32)
    else:
        threshold = threshold_value
    return valid & keep & (confidence > threshold), query, classes


@triton.jit
def _select_kernel(
    confidence_ptr,
    flat_ptr,
    boxes_ptr,
    keep_table_ptr,
    mapping_ptr,
    threshold_ptr,
    confidence_out_ptr,
    class_out_ptr,
    query_out_ptr,
    box_out_ptr,
    summary_ptr,
    threshold_value,
    num_candidates,
    num_scores,
    num_logit_classes,
    num_classes,
    num_thresholds,
    stride_q,
    stride_c,
    network_w,
    network_h,
    pad_x,
    pad_y,
    scale_x,
    scale_y,
    offset_x,
    offset_y,
    limit_x,
    limit_y,
    RULE: tl.constexpr,
    PER_CLASS: tl.constexpr,
    RANKED: tl.constexpr,
    BOX_HALF: tl.constexpr,
    ALIGN_HALF: tl.constexpr,
    OFFSET: tl.constexpr,
    INTEGER: tl.constexpr,
    BLOCK: tl.constexpr,
    SCAN: tl.constexpr,
    RANK: tl.constexpr,
):
    # One program: the compaction is a prefix sum over all candidates.
    i = tl.arange(0, BLOCK)
    if RANKED:
        # Every flat score that passes, compacted in flat order into the outputs (as
        # scratch), then ranked among themselves.
        count = 0
        lowest = float("inf")
        for start in range(0, num_scores, SCAN):
            j = start + tl.arange(0, SCAN)
            inside = j < num_scores
            s = tl.load(confidence_ptr + j, mask=inside, other=0.0)
            passes, _, _ = _kept(j.to(tl.int64), inside, s.to(tl.float32), keep_table_ptr, mapping_ptr, threshold_ptr,
                                 threshold_value, num_logit_classes, num_classes, num_thresholds, RULE, PER_CLASS)
            passed = passes.to(tl.int32)
            slot = count + tl.cumsum(passed, 0) - passed
            written = passes & (slot < num_candidates)
            tl.store(confidence_out_ptr + slot, s, mask=written)
            tl.store(query_out_ptr + slot, j.to(tl.int64), mask=written)
            count += tl.sum(passed, 0)
            lowest = tl.minimum(lowest, tl.min(tl.where(passes, s.to(tl.float32), float("inf")), 0))
        # The top-k keeps every passing score when at most k scores are at least the lowest
        # of them (NaN, which the top-k ranks first, counts as at least everything).
        above = 0
        for start in range(0, num_scores, SCAN):
            j = start + tl.arange(0, SCAN)
            s = tl.load(confidence_ptr + j, mask=j < num_scores, other=0.0).to(tl.float32)
            above += tl.sum(((j < num_scores) & ((s >= lowest) | (s != s))).to(tl.int32), 0)
        count = tl.minimum(count, num_candidates)
        tl.debug_barrier()
        flat_source, score_source, rows = query_out_ptr, confidence_out_ptr, count
    else:
        flat_source, score_source, rows = flat_ptr, confidence_ptr, num_candidates
    valid = i < rows
    flat = tl.load(flat_source + i, mask=valid, other=0)
    score = tl.load(score_source + i, mask=valid, other=0.0)
    confidence = score.to(tl.float32)
    keep, query, classes = _kept(flat, valid, confidence, keep_table_ptr, mapping_ptr, threshold_ptr,
                                 threshold_value, num_logit_classes, num_classes, num_thresholds, RULE, PER_CLASS)
    if RANKED:
        # Rank: how many passing scores are greater (a permutation when none are equal).
        position = tl.zeros((BLOCK,), dtype=tl.int32)
        equal = tl.zeros((BLOCK,), dtype=tl.int32)
        for start in range(0, count, RANK):
            j = start + tl.arange(0, RANK)
            other = tl.load(confidence_out_ptr + j, mask=j < count, other=0.0).to(tl.float32)
            pair = keep[:, None] & (j < count)[None, :]
            position += tl.sum((pair & (other[None, :] > confidence[:, None])).to(tl.int32), 1)
            equal += tl.sum((pair & (other[None, :] == confidence[:, None]) & (j[None, :] != i[:, None])).to(tl.int32), 1)
        tl.debug_barrier()
        tl.store(confidence_out_ptr + position, score, mask=keep)
        status = (tl.max(equal, 0) > 0).to(tl.int32) + 2 * (above > num_candidates).to(tl.int32)
    else:
        kept = keep.to(tl.int32)
        position = tl.cumsum(kept, 0) - kept
        count = tl.sum(kept, 0)
        tl.store(confidence_out_ptr + position, score, mask=keep)
        # Kept scores stay descending, so two are equal only as neighbours in the output.
        tl.debug_barrier()
        following = tl.load(confidence_out_ptr + position + 1, mask=keep & (position + 1 < count), other=0.0)
        status = tl.max((keep & (position + 1 < count) & (following == score)).to(tl.int32), 0)
    tl.store(summary_ptr, count)
    tl.store(summary_ptr + 1, status)
    tl.store(class_out_ptr + position, classes.to(tl.int32), mask=keep)
    tl.store(query_out_ptr + position, query, mask=keep)

    row = boxes_ptr + query * stride_q
    cx = tl.load(row, mask=keep, other=0.0).to(tl.float32)
    cy = tl.load(row + stride_c, mask=keep, other=0.0).to(tl.float32)
    half_w = _round_to(0.5 * tl.load(row + 2 * stride_c, mask=keep, other=0.0).to(tl.float32), BOX_HALF)
    half_h = _round_to(0.5 * tl.load(row + 3 * stride_c, mask=keep, other=0.0).to(tl.float32), BOX_HALF)
    x1 = _align_coordinate(cx, half_w, -1.0, network_w, pad_x, scale_x, offset_x, limit_x, BOX_HALF, ALIGN_HALF, OFFSET)
    y1 = _align_coordinate(cy, half_h, -1.0, network_h, pad_y, scale_y, offset_y, limit_y, BOX_HALF, ALIGN_HALF, OFFSET)
    x2 = _align_coordinate(cx, half_w, 1.0, network_w, pad_x, scale_x, offset_x, limit_x, BOX_HALF, ALIGN_HALF, OFFSET)
    y2 = _align_coordinate(cy, half_h, 1.0, network_h, pad_y, scale_y, offset_y, limit_y, BOX_HALF, ALIGN_HALF, OFFSET)
    out = box_out_ptr + position * 4
    _store_edge(out, x1, keep, INTEGER)
    _store_edge(out + 1, y1, keep, INTEGER)
    _store_edge(out + 2, x2, keep, INTEGER)
    _store_edge(out + 3, y2, keep, INTEGER)


def _in_dtype(value: float, dtype: torch.dtype) -> float:
    """``value`` as a tensor of ``dtype`` holds it (the stock path's ``new_tensor``), rounded to nearest-even."""
    return float(np.float16(value)) if dtype == torch.float16 else float(np.float32(value))


@functools.lru_cache(maxsize=64)
def _box_constants(geometry: BoxGeometry, box_dtype: torch.dtype) -> tuple[float, ...]:
    """The kernel's scalar arguments for one geometry: network size, padding, scale, offset,
    canvas, each rounded to the dtype the stock operation computes in (cached: a stream
    keeps one geometry)."""
    align_dtype = torch.float32 if geometry.to_float else box_dtype
    (network_w, network_h), (pad_x, pad_y) = geometry.network, geometry.pad
    offset_x, offset_y = geometry.offset or (0, 0)
    return (
        _in_dtype(network_w, box_dtype),
        _in_dtype(network_h, box_dtype),
        *(_in_dtype(v, align_dtype) for v in (pad_x, pad_y, *geometry.scale, offset_x, offset_y, *geometry.canvas)),
    )


def selection_buffers(k: int, dtype: torch.dtype, integer: bool, device: torch.device) -> Selection:
    """New output buffers of :func:`select_detections` for ``k`` top-k slots of ``dtype``
    scores (int32 boxes when ``integer``), on ``device``."""
    return Selection(
        confidence=torch.empty(k, dtype=dtype, device=device),
        class_id=torch.empty(k, dtype=torch.int32, device=device),
        query=torch.empty(k, dtype=torch.int64, device=device),
        xyxy=torch.empty((k, 4), dtype=torch.int32 if integer else torch.float32, device=device),
        summary=torch.empty(2, dtype=torch.int32, device=device),
    )


@dataclass(frozen=True)
class SelectionLayout:
    """The outputs of :func:`select_detections` for ``k`` slots of ``dtype`` scores (int32
    boxes when ``integer``) laid out in one uint8 buffer of :attr:`nbytes`, so that one
    copy of the buffer copies all of them. Widest elements first: query, xyxy, class_id,
    summary, confidence, each starting at a multiple of its element size."""

    k: int
    dtype: torch.dtype
    integer: bool

    @property
    def nbytes(self) -> int:
        return 28 * self.k + 8 + self.dtype.itemsize * self.k

    def summary(self, packed: torch.Tensor) -> torch.Tensor:
        """The int32 ``(2,)`` summary inside ``packed`` (a view)."""
        return packed[28 * self.k : 28 * self.k + 8].view(torch.int32)

    def views(self, packed: torch.Tensor) -> Selection:
        """The outputs as views of ``packed`` (uint8, :attr:`nbytes` long), all ``k`` slots."""
        if packed.dtype != torch.uint8 or packed.shape != (self.nbytes,):
            raise ValueError(f"packed must be uint8 of shape ({self.nbytes},); got {packed.dtype} {tuple(packed.shape)}")
        confidence, class_id, query, xyxy = self.rows(packed, self.k)
        return Selection(confidence=confidence, class_id=class_id, query=query, xyxy=xyxy, summary=self.summary(packed))

    def rows(self, packed: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Views of the first ``n`` slots of confidence, class_id, query and xyxy in a
        ``packed`` buffer of this layout (unchecked: the per-frame path)."""
        k, size = self.k, self.dtype.itemsize
        # One split makes every piece (a call per slice costs microseconds on the host).
        query, _, xyxy, _, class_id, _, confidence, _ = packed.split(
            (8 * n, 8 * (k - n), 16 * n, 16 * (k - n), 4 * n, 4 * (k - n) + 8, size * n, size * (k - n))
        )
        return (
            confidence.view(self.dtype),
            class_id.view(torch.int32),
            query.view(torch.int64),
            xyxy.view(torch.int32 if self.integer else torch.float32).view(n, 4),
        )


def select_detections(
    confidence: torch.Tensor,
    flat_index: torch.Tensor | None,
    boxes: torch.Tensor,
    num_logit_classes: int,
    rule: ClassRule,
    threshold: float | torch.Tensor,
    geometry: BoxGeometry,
    *,
    out: Selection | None = None,
) -> Selection:
    """The top-k slots that survive the class rule and the threshold, with their boxes
    (in the stock op order and dtype), in one kernel.

    Two forms. Given the top-k (``flat_index``), the kernel compacts its slots in top-k
    order. Given ``flat_index=None``, ``confidence`` holds every flat score and the kernel
    replaces the top-k: it compacts the passing scores and ranks them, which is the
    top-k's order whenever no two of them are equal and at most ``K`` scores are at least
    the lowest passing one (then the top-k keeps them all); ``summary[1]`` says when not.

    Args:
        confidence: ``(K,)`` top-k scores (float32 or float16), descending; or, with
            ``flat_index=None``, the ``(Q * C,)`` flat scores (any order; ``K = Q`` is
            ``boxes``' first dimension). ``K <=`` :data:`MAX_CANDIDATES`.
        flat_index: ``(K,)`` int64 flat (query, class) indices from the same top-k, or None.
        boxes: ``(Q, 4)`` float32 or float16 normalised ``cxcywh`` of the frame (any strides).
        num_logit_classes: classes per query in the network output (C).
        rule: the class filter and renumbering.
        threshold: a Python float (compared in the scores' dtype, as PyTorch compares a
            tensor with a scalar) or a per-class tensor in the scores' dtype.
        geometry: the frame's box constants.
        out: buffers to write into (as :func:`selection_buffers` or
            :meth:`SelectionLayout.views` make them for these arguments), else new ones.

    Returns:
        The detections in top-k order, without synchronising. ``summary`` holds their
        number and a status: bit 0, two kept scores are equal (the stock sort may reorder
        them; ranked, their order is undefined); bit 1 (ranked only), the top-k may not
        keep every passing score. Ranked with a nonzero status, only the count's bound
        (``<= K``) holds: take the top-k form.
    """
    if boxes.dtype not in (torch.float32, torch.float16):
        raise TypeError(f"boxes must be float32 or float16; got {boxes.dtype}")
    ranked = flat_index is None
    k = int(boxes.shape[0]) if ranked else int(confidence.shape[0])
    if k > MAX_CANDIDATES:
        raise ValueError(f"confidence has {k} top-k slots; at most {MAX_CANDIDATES} are compacted in one program")
    if ranked and (confidence.dim() != 1 or confidence.shape[0] != k * num_logit_classes):
        raise ValueError(f"confidence must hold the {k} x {num_logit_classes} flat scores; got shape {tuple(confidence.shape)}")
    selection = selection_buffers(k, confidence.dtype, geometry.integer, confidence.device) if out is None else out
    per_class = isinstance(threshold, torch.Tensor)
    dummy = selection.query  # pointer arguments a rule or form does not read
    _select_kernel[(1,)](
        confidence,
        dummy if ranked else flat_index,
        boxes,
        rule.keep if rule.keep is not None else dummy,
        rule.mapping if rule.mapping is not None else dummy,
        threshold if per_class else dummy,
        selection.confidence,
        selection.class_id,
        selection.query,
        selection.xyxy,
        selection.summary,
        0.0 if per_class else _in_dtype(float(threshold), confidence.dtype),
        k,
        int(confidence.shape[0]),
        num_logit_classes,
        rule.num_classes,
        int(threshold.shape[0]) if per_class else 1,
        boxes.stride(0),
        boxes.stride(1),
        *_box_constants(geometry, boxes.dtype),
        RULE=rule.kind,
        PER_CLASS=per_class,
        RANKED=ranked,
        BOX_HALF=boxes.dtype == torch.float16,
        ALIGN_HALF=not geometry.to_float and boxes.dtype == torch.float16,
        OFFSET=geometry.offset is not None,
        INTEGER=geometry.integer,
        BLOCK=triton.next_power_of_2(max(k, 1)),
        SCAN=_SCAN,
        RANK=max(1, min(64, _PAIRS // triton.next_power_of_2(max(k, 1)))),
        # The stock path rounds every product before the next operation.
        enable_fp_fusion=False,
    )
    return selection


def select_detections_torch(
    confidence: torch.Tensor,
    flat_index: torch.Tensor,
    boxes: torch.Tensor,
    num_logit_classes: int,
    rule: ClassRule,
    threshold: float | torch.Tensor,
    geometry: BoxGeometry,
) -> Selection:
    """What :func:`select_detections` computes, as the stock PyTorch operations: its reference
    (with exactly ``summary[0]`` rows)."""
    query = flat_index // num_logit_classes
    classes = flat_index % num_logit_classes
    if rule.kind == CLASSES_NAMED:
        keep = classes < rule.num_classes
        index = torch.where(keep, classes, 0)
    elif rule.kind == CLASSES_REMAINING:
        keep = rule.keep[classes] != 0
        classes = rule.mapping[torch.where(keep, classes, 0)].long()
        index = torch.where(keep, classes, 0)
    else:
        classes = rule.mapping[classes].long()
        keep = classes >= 0
        index = classes.clamp(min=0, max=threshold.shape[0] - 1) if isinstance(threshold, torch.Tensor) else classes
    keep = keep & (confidence > (threshold[index] if isinstance(threshold, torch.Tensor) else threshold))
    kept_confidence = confidence[keep]
    tied = bool((kept_confidence[1:] == kept_confidence[:-1]).any())
    return Selection(
        confidence=kept_confidence,
        class_id=classes[keep].int(),
        query=query[keep],
        xyxy=align_boxes_torch(boxes, query[keep], geometry),
        summary=torch.tensor([int(keep.sum()), int(tied)], dtype=torch.int32, device=confidence.device),
    )


def align_boxes_torch(boxes: torch.Tensor, index: torch.Tensor, geometry: BoxGeometry) -> torch.Tensor:
    """The stock box arithmetic for the queries ``index``, as PyTorch tensor operations in the stock order."""
    selected = boxes[index.long()]
    centre, extent = selected[:, :2], selected[:, 2:]
    xyxy = torch.cat([centre - 0.5 * extent, centre + 0.5 * extent], dim=-1)
    network_w, network_h = geometry.network
    xyxy = xyxy * torch.tensor([network_w, network_h, network_w, network_h], device=boxes.device)
    if geometry.to_float:
        xyxy = xyxy.float()
    (pad_x, pad_y), (scale_x, scale_y), (limit_x, limit_y) = geometry.pad, geometry.scale, geometry.canvas
    xyxy = xyxy.sub(xyxy.new_tensor([pad_x, pad_y, pad_x, pad_y])).div(xyxy.new_tensor([scale_x, scale_y, scale_x, scale_y]))
    if geometry.offset is not None:
        offset_x, offset_y = geometry.offset
        xyxy = xyxy.add(xyxy.new_tensor([offset_x, offset_y, offset_x, offset_y]))
    limit = xyxy.new_tensor([limit_x, limit_y, limit_x, limit_y])
    xyxy = xyxy.clamp(min=torch.zeros_like(limit), max=limit)
    return xyxy.round().int() if geometry.integer else xyxy.float()
