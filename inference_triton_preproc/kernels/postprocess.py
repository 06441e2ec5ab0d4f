"""Post-processing kernels: RF-DETR mask logits to the user's masks, network boxes to the user's grid.

Two Triton kernels and one GPU encoder, each beside the PyTorch computation it reproduces:

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
* :func:`align_boxes` — ``cxcywh`` (normalised) to ``xyxy`` on the mask canvas, in the
  stock op order and dtype: ``c -/+ 0.5 * wh``, times the network size, minus the
  padding, IEEE division by the scale, plus the canvas offset, clamped to the canvas,
  then rounded half to even to int32 when the canvas is the original image (reference:
  :func:`align_boxes_torch`). Each operation is rounded to the dtype the stock path
  computes it in (float16 engines stay float16 until the stock path casts to float32),
  and the kernel is compiled without floating-point contraction.
* :func:`coco_rle` — COCO's compressed RLE of every mask of a frame: the run ends from
  one ``nonzero`` on the GPU and one copy to the host (instead of one host
  synchronisation per mask), the runs of all masks assembled at once with numpy, and
  pycocotools' compression fed arrays instead of Python lists (reference:
  :func:`coco_rle_torch`, the stock recipe).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

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


# --------------------------------------------------------------------------------------
# Selection: which (query, class) pairs of the flat top-k survive the class filter and
# the confidence threshold. Top-k and the final sort stay PyTorch operations (their tie
# order is what the stock path returns); the element-wise rules between them run here.
# --------------------------------------------------------------------------------------

# Class rules, as the stock functions apply them.
CLASSES_NAMED = 0  # no remapping: keep classes below the number of class names
CLASSES_REMAINING = 1  # dense path with remapping: keep isin(remaining ids), then map
CLASSES_MAPPED = 2  # RLE path with remapping: map (missing -> -1), keep mapped >= 0


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


@triton.jit
def _candidates_kernel(
    confidence_ptr,
    flat_ptr,
    keep_out_ptr,
    class_out_ptr,
    query_out_ptr,
    keep_table_ptr,
    mapping_ptr,
    threshold_ptr,
    threshold_value,
    num_queries,
    num_logit_classes,
    num_classes,
    num_thresholds,
    RULE: tl.constexpr,
    PER_CLASS: tl.constexpr,
    BLOCK: tl.constexpr,
):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    valid = i < num_queries
    flat = tl.load(flat_ptr + i, mask=valid, other=0)
    confidence = tl.load(confidence_ptr + i, mask=valid, other=0.0).to(tl.float32)
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
    keep = keep & (confidence > threshold)
    tl.store(keep_out_ptr + i, keep.to(tl.int8), mask=valid)
    tl.store(class_out_ptr + i, classes.to(tl.int32), mask=valid)
    tl.store(query_out_ptr + i, query, mask=valid)


def select_candidates(
    confidence: torch.Tensor, flat_index: torch.Tensor, num_logit_classes: int, rule: ClassRule, threshold: float | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Which top-k slots survive, their output class and their query, in one kernel.

    Args:
        confidence: ``(K,)`` top-k scores (float32 or float16), descending.
        flat_index: ``(K,)`` int64 flat (query, class) indices from the same top-k.
        num_logit_classes: classes per query in the network output (C).
        rule: the class filter and renumbering.
        threshold: a Python float (compared in the scores' dtype, as PyTorch compares a
            tensor with a scalar) or a per-class tensor in the scores' dtype.

    Returns:
        ``keep`` bool ``(K,)``, ``classes`` int32 ``(K,)`` (meaningful where kept),
        ``query`` int64 ``(K,)``.
    """
    k = int(confidence.shape[0])
    device = confidence.device
    keep = torch.empty(k, dtype=torch.bool, device=device)
    classes = torch.empty(k, dtype=torch.int32, device=device)
    query = torch.empty(k, dtype=torch.int64, device=device)
    per_class = isinstance(threshold, torch.Tensor)
    scalar = 0.0 if per_class else _in_dtype(float(threshold), confidence.dtype)
    dummy = flat_index  # pointer arguments a rule does not read
    block = min(triton.next_power_of_2(max(k, 1)), 1024)
    _candidates_kernel[(triton.cdiv(max(k, 1), block),)](
        confidence,
        flat_index,
        keep.view(torch.int8),
        classes,
        query,
        rule.keep if rule.keep is not None else dummy,
        rule.mapping if rule.mapping is not None else dummy,
        threshold if per_class else dummy,
        scalar,
        k,
        num_logit_classes,
        rule.num_classes,
        int(threshold.shape[0]) if per_class else 1,
        RULE=rule.kind,
        PER_CLASS=per_class,
        BLOCK=block,
    )
    return keep, classes, query


def select_candidates_torch(
    confidence: torch.Tensor, flat_index: torch.Tensor, num_logit_classes: int, rule: ClassRule, threshold: float | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What :func:`select_candidates` computes, as PyTorch operations: its reference."""
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
    passed = confidence > (threshold[index] if isinstance(threshold, torch.Tensor) else threshold)
    return keep & passed, classes.int(), query


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
    TAPS_Y: tl.constexpr,
    TAPS_X: tl.constexpr,
    HALF: tl.constexpr,
    BINARIZE: tl.constexpr,
    EMULATE_FMA: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_W: tl.constexpr,
):
    n = tl.program_id(0)
    cy = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    cx = tl.program_id(2) * BLOCK_W + tl.arange(0, BLOCK_W)
    y = cy - offset_y
    x = cx - offset_x
    in_y = (y >= 0) & (y < target_h)
    in_x = (x >= 0) & (x < target_w)
    y = tl.where(in_y, y, 0)
    x = tl.where(in_x, x, 0)
    query = tl.load(index_ptr + n).to(tl.int64)
    base = logits_ptr + query * stride_q
    first_y = tl.load(first_y_ptr + y)
    first_x = tl.load(first_x_ptr + x)

    # Source row first_y + ky, filtered horizontally, then the rows combined: the
    # reference's order, with its rounding at every step.
    value = tl.zeros((BLOCK_H, BLOCK_W), dtype=tl.float32)
    for ky in tl.static_range(TAPS_Y):
        row = tl.minimum(first_y + ky, crop_h - 1) + crop_top
        row_ptr = base + row.to(tl.int64)[:, None] * stride_h
        col = tl.minimum(first_x, crop_w - 1) + crop_left
        logit = tl.load(row_ptr + col.to(tl.int64)[None, :] * stride_w).to(tl.float32)
        horizontal = logit * tl.load(weight_x_ptr + x * TAPS_X)[None, :]
        for kx in tl.static_range(1, TAPS_X):
            col = tl.minimum(first_x + kx, crop_w - 1) + crop_left
            logit = tl.load(row_ptr + col.to(tl.int64)[None, :] * stride_w).to(tl.float32)
            horizontal = _fma(logit, tl.load(weight_x_ptr + x * TAPS_X + kx)[None, :], horizontal, EMULATE_FMA)
        weight_y = tl.load(weight_y_ptr + y * TAPS_Y + ky)[:, None]
        if ky == 0:
            value = horizontal * weight_y
        else:
            value = _fma(horizontal, weight_y, value, EMULATE_FMA)
    if HALF:
        value = value.to(tl.float16)
    inside = in_y[:, None] & in_x[None, :]
    on_canvas = (cy < canvas_h)[:, None] & (cx < canvas_w)[None, :]
    out = out_ptr + n.to(tl.int64) * canvas_h * canvas_w + cy.to(tl.int64)[:, None] * canvas_w + cx[None, :]
    if BINARIZE:
        tl.store(out, (inside & (value > 0)).to(tl.int8), mask=on_canvas)
    else:
        tl.store(out, tl.where(inside, value, 0.0).to(out_ptr.dtype.element_ty), mask=on_canvas)


def _mask_blocks(canvas: tuple[int, int]) -> tuple[int, int]:
    """Output tile (rows, columns): small tiles on the GPU, few large ones under the interpreter
    (which pays per program instance)."""
    if interpreted():
        return min(triton.next_power_of_2(canvas[0]), 128), min(triton.next_power_of_2(canvas[1]), 256)
    return 8, 128


def resize_masks(
    logits: torch.Tensor,
    index: torch.Tensor,
    geometry: MaskGeometry,
    *,
    binarize: bool = True,
) -> torch.Tensor:
    """Masks of the selected detections, from logits to the canvas, in one kernel.

    Args:
        logits: ``(Q, h, w)`` float32 or float16 mask logits of one frame (any strides).
        index: ``(N,)`` integer query index of each detection (repeats allowed).
        geometry: crop, resize target and canvas placement.
        binarize: return ``resized > 0`` (bool); else the resized values themselves
            (logits' dtype; what the checks compare bit for bit).

    Returns:
        ``(N, H, W)`` (``H, W = geometry.canvas``) on the logits' device:
        ``resize(logits[index], target)`` (``> 0`` when binarizing) placed at
        ``geometry.offset``, False (0) elsewhere.
    """
    if logits.dtype not in (torch.float32, torch.float16):
        raise TypeError(f"logits must be float32 or float16; got {logits.dtype}")
    canvas_h, canvas_w = geometry.canvas
    n = int(index.shape[0])
    out = torch.empty((n, canvas_h, canvas_w), dtype=torch.bool if binarize else logits.dtype, device=logits.device)
    if n == 0:
        return out
    top, left, crop_h, crop_w = geometry.crop
    target_h, target_w = geometry.target
    taps_y = axis_taps(crop_h, target_h, logits.device)
    taps_x = axis_taps(crop_w, target_w, logits.device)
    block_h, block_w = _mask_blocks(geometry.canvas)
    grid = (n, triton.cdiv(canvas_h, block_h), triton.cdiv(canvas_w, block_w))
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
        TAPS_Y=taps_y.taps,
        TAPS_X=taps_x.taps,
        HALF=logits.dtype == torch.float16,
        BINARIZE=binarize,
        EMULATE_FMA=interpreted(),
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
def _align_boxes_kernel(
    boxes_ptr,
    index_ptr,
    out_ptr,
    n,
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
    BOX_HALF: tl.constexpr,
    ALIGN_HALF: tl.constexpr,
    OFFSET: tl.constexpr,
    INTEGER: tl.constexpr,
    BLOCK: tl.constexpr,
):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    valid = i < n
    query = tl.load(index_ptr + i, mask=valid, other=0).to(tl.int64)
    row = boxes_ptr + query * stride_q
    cx = tl.load(row, mask=valid, other=0.0).to(tl.float32)
    cy = tl.load(row + stride_c, mask=valid, other=0.0).to(tl.float32)
    half_w = _round_to(0.5 * tl.load(row + 2 * stride_c, mask=valid, other=0.0).to(tl.float32), BOX_HALF)
    half_h = _round_to(0.5 * tl.load(row + 3 * stride_c, mask=valid, other=0.0).to(tl.float32), BOX_HALF)
    x1 = _align_coordinate(cx, half_w, -1.0, network_w, pad_x, scale_x, offset_x, limit_x, BOX_HALF, ALIGN_HALF, OFFSET)
    y1 = _align_coordinate(cy, half_h, -1.0, network_h, pad_y, scale_y, offset_y, limit_y, BOX_HALF, ALIGN_HALF, OFFSET)
    x2 = _align_coordinate(cx, half_w, 1.0, network_w, pad_x, scale_x, offset_x, limit_x, BOX_HALF, ALIGN_HALF, OFFSET)
    y2 = _align_coordinate(cy, half_h, 1.0, network_h, pad_y, scale_y, offset_y, limit_y, BOX_HALF, ALIGN_HALF, OFFSET)
    out = out_ptr + i * 4
    _store_edge(out, x1, valid, INTEGER)
    _store_edge(out + 1, y1, valid, INTEGER)
    _store_edge(out + 2, x2, valid, INTEGER)
    _store_edge(out + 3, y2, valid, INTEGER)


def _in_dtype(value: float, dtype: torch.dtype) -> float:
    """``value`` as a tensor of ``dtype`` holds it (the stock path's ``new_tensor``), rounded to nearest-even."""
    return float(np.float16(value)) if dtype == torch.float16 else float(np.float32(value))


def align_boxes(boxes: torch.Tensor, index: torch.Tensor, geometry: BoxGeometry) -> torch.Tensor:
    """Boxes of the selected detections on the mask canvas, in the stock op order.

    Args:
        boxes: ``(Q, 4)`` float32 or float16 normalised ``cxcywh`` of one frame (any strides).
        index: ``(N,)`` integer query index of each detection.
        geometry: the frame's constants.

    Returns:
        ``(N, 4)`` ``xyxy``: int32 when ``geometry.integer``, else float32; on the boxes' device.
    """
    if boxes.dtype not in (torch.float32, torch.float16):
        raise TypeError(f"boxes must be float32 or float16; got {boxes.dtype}")
    n = int(index.shape[0])
    out = torch.empty((n, 4), dtype=torch.int32 if geometry.integer else torch.float32, device=boxes.device)
    if n == 0:
        return out
    box_dtype = boxes.dtype
    align_dtype = torch.float32 if geometry.to_float else box_dtype
    (network_w, network_h), (pad_x, pad_y) = geometry.network, geometry.pad
    offset_x, offset_y = geometry.offset or (0, 0)
    block = min(triton.next_power_of_2(n), 1024)
    _align_boxes_kernel[(triton.cdiv(n, block),)](
        boxes,
        index,
        out,
        n,
        boxes.stride(0),
        boxes.stride(1),
        _in_dtype(network_w, box_dtype),
        _in_dtype(network_h, box_dtype),
        _in_dtype(pad_x, align_dtype),
        _in_dtype(pad_y, align_dtype),
        _in_dtype(geometry.scale[0], align_dtype),
        _in_dtype(geometry.scale[1], align_dtype),
        _in_dtype(offset_x, align_dtype),
        _in_dtype(offset_y, align_dtype),
        _in_dtype(geometry.canvas[0], align_dtype),
        _in_dtype(geometry.canvas[1], align_dtype),
        BOX_HALF=box_dtype == torch.float16,
        ALIGN_HALF=align_dtype == torch.float16,
        OFFSET=geometry.offset is not None,
        INTEGER=geometry.integer,
        BLOCK=block,
        # The stock path rounds every product before the next operation.
        enable_fp_fusion=False,
    )
    return out


def align_boxes_torch(boxes: torch.Tensor, index: torch.Tensor, geometry: BoxGeometry) -> torch.Tensor:
    """What :func:`align_boxes` computes, as PyTorch tensor operations in the stock order: its reference."""
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


def _run_lengths(masks: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """All masks' run lengths, concatenated (int64), and how many belong to each mask.

    Runs are column-major and start with a run of zeros (0 when the mask starts with
    True), as COCO counts them. One ``nonzero`` over all masks on their device and one
    copy to the host; the runs are assembled without a loop over masks.
    """
    n, height, width = masks.shape
    flat = masks.transpose(1, 2).reshape(n, height * width)
    ends = torch.nonzero(flat[:, 1:] != flat[:, :-1]).to(torch.int32)
    payload = torch.cat([ends.reshape(-1), flat[:, 0].to(torch.int32)]).cpu().numpy().astype(np.int64)
    ends, first = payload[: payload.size - n].reshape(-1, 2), payload[payload.size - n :]
    mask_of_end = ends[:, 0]
    ends_per_mask = np.bincount(mask_of_end, minlength=n)
    # Per mask, the boundaries 0, [0 when it starts with True], each run end, h*w; the
    # runs are their differences within the mask.
    bounds_per_mask = ends_per_mask + first + 2
    start = np.concatenate(([0], np.cumsum(bounds_per_mask)[:-1]))
    bounds = np.empty(int(bounds_per_mask.sum()), dtype=np.int64)
    bounds[start] = 0
    bounds[start + first] = 0
    rank = np.arange(mask_of_end.size) - np.concatenate(([0], np.cumsum(ends_per_mask)[:-1]))[mask_of_end]
    bounds[start[mask_of_end] + 1 + first[mask_of_end] + rank] = ends[:, 1] + 1
    bounds[start + bounds_per_mask - 1] = height * width
    runs = np.delete(np.diff(bounds), start[1:] - 1)
    return runs, bounds_per_mask - 1


def rle_counts(masks: torch.Tensor) -> list[list[int]]:
    """COCO uncompressed run lengths of each mask, column-major, starting with a run of zeros.

    Args:
        masks: ``(N, H, W)`` bool.

    Returns:
        N lists of ints summing to ``H * W`` (the first is 0 when the mask starts with True).
    """
    if masks.shape[0] == 0:
        return []
    runs, lengths = _run_lengths(masks)
    return [part.tolist() for part in np.split(runs, np.cumsum(lengths)[:-1])]


def rle_compress(runs: np.ndarray, lengths: np.ndarray, height: int, width: int) -> list[bytes]:
    """COCO's compressed RLE strings of masks given as concatenated run lengths.

    pycocotools' own compression, handed each mask's runs as one uint32 array (the stock
    path hands it a Python list per mask, built from a host copy per mask).

    Args:
        runs: int64 run lengths of all masks, concatenated.
        lengths: number of runs of each mask.
        height, width: the masks' size in pixels.
    """
    from pycocotools import mask as coco_mask

    parts = np.split(runs.astype(np.uint32), np.cumsum(lengths)[:-1])
    encoded = coco_mask.frPyObjects([{"counts": part, "size": [height, width]} for part in parts], height, width)
    return [item["counts"] for item in encoded]


def coco_rle(masks: torch.Tensor) -> list[dict[str, Any]]:
    """Each mask as the compressed COCO RLE dict pycocotools builds: ``{"size": [H, W], "counts": bytes}``.

    Args:
        masks: ``(N, H, W)`` bool on any device.
    """
    n, height, width = masks.shape
    if n == 0:
        return []
    return [{"size": [height, width], "counts": counts} for counts in rle_compress(*_run_lengths(masks), height, width)]


def coco_rle_torch(masks: torch.Tensor) -> list[dict[str, Any]]:
    """What :func:`coco_rle` computes, one mask at a time with ``unique_consecutive`` and
    pycocotools' compression: its reference."""
    from pycocotools import mask as coco_mask

    out = []
    height, width = int(masks.shape[1]), int(masks.shape[2])
    for mask in masks:
        values, lengths = torch.unique_consecutive(mask.T.reshape(-1), return_counts=True)
        runs = lengths.cpu().tolist()
        counts = [0, *runs] if bool(values[0]) else runs
        out.append(coco_mask.frPyObjects({"counts": counts, "size": [height, width]}, height, width))
    return out
