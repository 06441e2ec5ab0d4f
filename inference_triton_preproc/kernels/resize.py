"""Fused resize + normalise: uint8 HWC frames in, normalised float NCHW planes out.

One Triton kernel serves the three reference resizes. All three are separable filters
that can be written as "for every output coordinate, a first source index and a short
list of tap weights" per axis; they differ only in the weights (host tables, built here
to the reference's own arithmetic) and in how the horizontal and vertical sums are
rounded (``MODE``, a compile-time switch inside the kernel):

* ``pil``   Pillow's antialiased bilinear: int32 weights with 22 fractional bits, the
            horizontal result rounded to uint8 before the vertical pass.
* ``cv2``   OpenCV ``INTER_LINEAR`` on uint8: 11-bit weights, the horizontal sum shifted
            right by 4, each vertical term shifted by 16, a final rounding shift by 2.
* ``torch`` ``F.interpolate(bilinear, align_corners=False, antialias=False)`` on floats.

The kernel then divides by 255 and normalises per channel with IEEE-rounded divisions,
in the order the references use, so ``pil`` and ``cv2`` are bit-exact and ``torch``
agrees to a few float32 ULP.

:func:`resize_normalize_torch` is the same arithmetic written with PyTorch tensor ops on
the same tables: the readable reference of the kernel, and a fast way to check the
tables against the real libraries over many shapes.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import triton
import triton.language as tl

from ._normalize import normalize, normalize_args, normalize_torch
from .pil_band import BandTables, band_layout_ok, band_tables, resize_normalize_band

Mode = Literal["pil", "cv2", "torch"]
MODES: tuple[Mode, ...] = ("pil", "cv2", "torch")
_MODE_ID = {"pil": 0, "cv2": 1, "torch": 2}

_PIL_BITS = 22  # Pillow's PRECISION_BITS for 8-bit images: 32 - 8 - 2
_CV2_COEF_SCALE = 2048  # OpenCV's INTER_RESIZE_COEF_SCALE (1 << 11)


# --------------------------------------------------------------------------------------
# Host tables: one axis at a time, in the reference's own arithmetic.
# Each returns (first source index per output, weights [out, taps]); the kernel reads
# source index clamp(first + k, 0, in - 1) with weight weights[o, k].
# --------------------------------------------------------------------------------------


def _pil_axis(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pillow's ``precompute_coeffs`` + ``normalize_coeffs_8bpc`` for the bilinear filter.

    Plain Python floats are IEEE doubles, so this follows Pillow's C arithmetic
    operation for operation (including the sequential weight sum and the truncating
    ``(int)`` casts).
    """
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 1.0 * filterscale  # bilinear filter support is 1
    inv_filterscale = 1.0 / filterscale
    starts = np.empty(out_size, dtype=np.int32)
    rows: list[list[float]] = []
    for o in range(out_size):
        center = (o + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size)
        weights = []
        total = 0.0
        for j in range(xmax - xmin):
            t = abs(((j + xmin) - center + 0.5) * inv_filterscale)
            w = 1.0 - t if t < 1.0 else 0.0
            weights.append(w)
            total += w
        if total != 0.0:
            weights = [w / total for w in weights]
        starts[o] = xmin
        rows.append(weights)
    taps = max(len(r) for r in rows)
    fixed = np.zeros((out_size, taps), dtype=np.int32)
    one = float(1 << _PIL_BITS)
    for o, weights in enumerate(rows):
        for j, w in enumerate(weights):
            fixed[o, j] = int(0.5 + w * one) if w >= 0 else int(-0.5 + w * one)
    return starts, fixed


def _cv2_axis(in_size: int, out_size: int, *, clamp_fraction: bool) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV ``resize`` INTER_LINEAR coefficients for uint8 (``clamp_fraction`` for columns).

    The source coordinate is computed in double and rounded once to float32; the
    fraction and ``1 - fraction`` are float32; weights are ``cvRound`` (half to even)
    of those times 2048. Columns clamp index and fraction at the borders, rows clamp
    only the index (the kernel's ``clamp(first + k)``).
    """
    scale = 1.0 / (out_size / in_size)
    d = np.arange(out_size, dtype=np.float64)
    f = ((d + 0.5) * scale - 0.5).astype(np.float32)
    first = np.floor(f)
    frac = (f - first).astype(np.float32)
    first = first.astype(np.int64)
    if clamp_fraction:
        low = first < 0
        first[low], frac[low] = 0, 0
        high = first >= in_size - 1
        first[high], frac[high] = in_size - 1, 0
    one = np.float32(1.0)
    w0 = np.rint((one - frac) * np.float32(_CV2_COEF_SCALE))
    w1 = np.rint(frac * np.float32(_CV2_COEF_SCALE))
    return first.astype(np.int32), np.stack([w0, w1], axis=1).astype(np.int32)


def _torch_axis(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """``upsample_bilinear2d`` (align_corners=False) source indices and lambdas in float32."""
    scale = np.float32(in_size) / np.float32(out_size)
    d = np.arange(out_size, dtype=np.float32) + np.float32(0.5)
    # Compilers contract ``scale * d - 0.5`` into one fused multiply-add in PyTorch's
    # CPU and CUDA kernels. The float32 product is exact in float64 and so is the
    # subtraction of 0.5, so one rounding to float32 reproduces the fused result.
    src = (scale.astype(np.float64) * d.astype(np.float64) - 0.5).astype(np.float32)
    src = np.maximum(src, np.float32(0.0))
    first = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    lam1 = np.clip(src - first.astype(np.float32), np.float32(0.0), np.float32(1.0))
    lam0 = np.float32(1.0) - lam1
    return first.astype(np.int32), np.stack([lam0, lam1], axis=1).astype(np.float32)


@dataclass(frozen=True)
class ResizeTables:
    """Per-axis tap tables for one (source size, target size, mode).

    ``y_first``/``x_first``: int32 ``[H_out]``/``[W_out]``, first source row/column.
    ``y_weight``/``x_weight``: ``[H_out, KY]``/``[W_out, KX]``, int32 fixed-point for
    ``pil``/``cv2``, float32 for ``torch``. The taps of the first pass (KX, or KY when
    ``vertical_first``) are padded with zero weights to a power of two.
    ``vertical_first``: the reference filters columns before rows (rounding in between).
    ``band``: for ``pil`` downscales that :mod:`.pil_band` serves faster, its matrices.
    """

    mode: Mode
    src_hw: tuple[int, int]
    dst_hw: tuple[int, int]
    y_first: torch.Tensor
    y_weight: torch.Tensor
    x_first: torch.Tensor
    x_weight: torch.Tensor
    vertical_first: bool = False
    band: BandTables | None = None

    def transposed(self) -> ResizeTables:
        """The same resize seen on the transposed image (rows and columns swapped; no
        band tables, which describe rows of the untransposed frame)."""
        return ResizeTables(
            self.mode,
            self.src_hw[::-1],
            self.dst_hw[::-1],
            self.x_first,
            self.x_weight,
            self.y_first,
            self.y_weight,
            not self.vertical_first,
        )


def _axis(mode: Mode, in_size: int, out_size: int, *, columns: bool) -> tuple[np.ndarray, np.ndarray]:
    if mode == "pil":
        return _pil_axis(in_size, out_size)
    if mode == "cv2":
        return _cv2_axis(in_size, out_size, clamp_fraction=columns)
    return _torch_axis(in_size, out_size)


@functools.lru_cache(maxsize=1)
def _pillow_filters_tall_images_vertically_first() -> bool:
    """Whether the installed Pillow resizes very tall images rows-first.

    Recent Pillow releases filter an image taller than 100x its width vertically
    first (when the height shrinks), which rounds to uint8 in a different place.
    Rather than guess the release that changed it, ask Pillow on a small tall image
    whose two pass orders give different pixels.
    """
    from PIL import Image

    tall = Image.fromarray(np.random.default_rng(0).integers(0, 256, (202, 2, 3), dtype=np.uint8))
    direct = np.asarray(tall.resize((3, 10), Image.Resampling.BILINEAR))
    rows_first = np.asarray(tall.resize((2, 10), Image.Resampling.BILINEAR).resize((3, 10), Image.Resampling.BILINEAR))
    return bool(np.array_equal(direct, rows_first))


def _pil_vertical_first(src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> bool:
    (h_in, w_in), (h_out, _) = src_hw, dst_hw
    return h_in > w_in * 100 and h_out < h_in and _pillow_filters_tall_images_vertically_first()


def _pad_taps(weight: np.ndarray) -> np.ndarray:
    taps = triton.next_power_of_2(weight.shape[1])
    return np.pad(weight, ((0, 0), (0, taps - weight.shape[1])))


@functools.lru_cache(maxsize=128)
def resize_tables(src_hw: tuple[int, int], dst_hw: tuple[int, int], mode: Mode, device: torch.device) -> ResizeTables:
    """Tap tables for resizing ``src_hw`` -> ``dst_hw`` (pixels, (H, W)) on ``device``.

    Cached per (source size, target size, mode, device): a stream of equal-size frames
    builds them once.
    """
    (h_in, w_in), (h_out, w_out) = src_hw, dst_hw
    y_first, y_weight = _axis(mode, h_in, h_out, columns=False)
    x_first, x_weight = _axis(mode, w_in, w_out, columns=True)

    vertical_first = mode == "pil" and _pil_vertical_first(src_hw, dst_hw)
    band = None
    if mode == "pil" and not vertical_first:
        band = band_tables(src_hw, dst_hw, (y_first, y_weight), (x_first, x_weight), device)
    # The kernel loads all taps of its first pass as one power-of-two vector; padded
    # taps weigh nothing.
    if vertical_first:
        y_weight = _pad_taps(y_weight)
    else:
        x_weight = _pad_taps(x_weight)

    def put(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).to(device)

    return ResizeTables(
        mode, src_hw, dst_hw, put(y_first), put(y_weight), put(x_first), put(x_weight), vertical_first, band
    )


# --------------------------------------------------------------------------------------
# The kernel.
# --------------------------------------------------------------------------------------


@triton.jit
def _resize_normalize_kernel(
    src_ptr,
    out_ptr,
    y_first_ptr,
    y_weight_ptr,
    x_first_ptr,
    x_weight_ptr,
    h_in,
    w_in,
    h_out,
    w_out,
    stride_sn,
    stride_sh,
    stride_sw,
    stride_sc,
    stride_on,
    stride_oc,
    stride_oh,
    stride_ow,
    taps_y,
    tile_y0,
    mean0,
    mean1,
    mean2,
    std0,
    std1,
    std2,
    MODE: tl.constexpr,
    BGR: tl.constexpr,
    TAPS_X: tl.constexpr,
    BLOCK_Y: tl.constexpr,
    BLOCK_X: tl.constexpr,
):
    pid_x = tl.program_id(0)
    pid_y = tl.program_id(1) + tile_y0
    n = tl.program_id(2).to(tl.int64)

    oy = pid_y * BLOCK_Y + tl.arange(0, BLOCK_Y)
    ox = pid_x * BLOCK_X + tl.arange(0, BLOCK_X)
    kx = tl.arange(0, TAPS_X)
    # A fourth channel lane keeps the tile a power of two; it is never stored.
    c = tl.arange(0, 4)
    mask_y = oy < h_out
    mask_x = ox < w_out
    src_c = 2 - c if BGR else c
    src_c = tl.where(c < 3, src_c, 0)

    # Lanes past the image edge read table entry 0, padded taps carry weight 0 and the
    # spare channel reads channel 0: every source address below is in bounds and the
    # tap loads need no mask.
    y0 = tl.load(y_first_ptr + oy, mask=mask_y, other=0)
    x0 = tl.load(x_first_ptr + ox, mask=mask_x, other=0)
    cols = tl.minimum(tl.maximum(x0[:, None] + kx[None, :], 0), w_in - 1)
    wx = tl.load(x_weight_ptr + ox[:, None] * TAPS_X + kx[None, :], mask=mask_x[:, None], other=0)
    # [1, BLOCK_X, TAPS_X, 4] offsets of every horizontal tap of every channel: all
    # taps of a row are loaded at once, which keeps many loads in flight.
    # Offsets within one frame fit int32 (the wrapper checks), which halves the
    # registers the address tensors take.
    offsets = (cols * stride_sw)[None, :, :, None] + (src_c * stride_sc)[None, None, None, :]
    src = src_ptr + n * stride_sn

    if MODE == 2:
        acc = tl.zeros((BLOCK_Y, BLOCK_X, 4), dtype=tl.float32)
    else:
        acc = tl.zeros((BLOCK_Y, BLOCK_X, 4), dtype=tl.int32)
    for ky in range(taps_y):
        row = tl.minimum(tl.maximum(y0 + ky, 0), h_in - 1)
        wy = tl.load(y_weight_ptr + oy * taps_y + ky, mask=mask_y, other=0)
        v = tl.load(src + (row * stride_sh)[:, None, None, None] + offsets)
        hsum = tl.sum(wx[None, :, :, None] * v.to(wx.dtype), axis=2)
        if MODE == 0:
            # Pillow stores the horizontal pass as uint8 before filtering vertically.
            hsum = tl.minimum(tl.maximum((hsum + (1 << 21)) >> 22, 0), 255)
            acc += wy[:, None, None] * hsum
        elif MODE == 1:
            acc += (wy[:, None, None] * (hsum >> 4)) >> 16
        else:
            acc += wy[:, None, None] * hsum

    if MODE == 0:
        q = tl.minimum(tl.maximum((acc + (1 << 21)) >> 22, 0), 255).to(tl.float32)
    elif MODE == 1:
        q = ((acc + 2) >> 2).to(tl.float32)
    else:
        q = acc
    y = normalize(q, c[None, None, :], mean0, mean1, mean2, std0, std1, std2)

    out = out_ptr + n * stride_on + c[None, None, :] * stride_oc + (oy * stride_oh)[:, None, None] + (ox * stride_ow)[None, :, None]
    mask = mask_y[:, None, None] & mask_x[None, :, None] & (c < 3)[None, None, :]
    tl.store(out, y.to(out_ptr.dtype.element_ty), mask=mask)


def interpreted() -> bool:
    """Whether the kernels were defined under ``TRITON_INTERPRET=1`` (they then run on CPU tensors).

    Triton reads the variable when a kernel is defined, so what counts is its value
    when this module was imported, not now.
    """
    return not isinstance(_resize_normalize_kernel, triton.runtime.JITFunction)


def _block_shape(taps_x: int) -> tuple[int, int, int]:
    """(BLOCK_Y, BLOCK_X, num_warps) for a kernel with ``taps_x`` horizontal taps.

    A program holds BLOCK_Y x BLOCK_X x taps_x x 4 source bytes at a time. On an H100,
    one output row per program was fastest for the wide Pillow filters and two rows
    for the 2-tap filters (1080p and 4K sources into 312-768 squares; see
    benchmarks/). The interpreter pays per program and per operation, so it gets
    large tiles.
    """
    if interpreted():
        return 32, max(8, 4096 // taps_x), 4
    if taps_x <= 4:
        return 2, 64, 4
    return 1, 128, 4


def _uses_band(src: torch.Tensor, tables: ResizeTables, block: tuple[int, int, int] | None) -> bool:
    return block is None and tables.band is not None and band_layout_ok(src)


def _kernel_view(
    src: torch.Tensor, out: torch.Tensor, tables: ResizeTables
) -> tuple[torch.Tensor, torch.Tensor, ResizeTables]:
    if tables.vertical_first:
        # The kernels filter along rows first; on the transposed views (free, strided)
        # that is the reference's column-first order.
        return src.transpose(1, 2), out.transpose(2, 3), tables.transposed()
    return src, out, tables


def row_schedule(
    src: torch.Tensor,
    out: torch.Tensor,
    tables: ResizeTables,
    landed_rows: list[int],
    *,
    block: tuple[int, int, int] | None = None,
) -> list[tuple[int, int]]:
    """Which output row tiles can be computed as the source's rows land in order.

    For a source copied in row chunks, ``landed_rows[k]`` is the number of leading
    source rows present once chunk ``k`` has landed (increasing, the last one
    ``H_in``). Returns, per chunk, the ``row_tiles`` range of :func:`resize_normalize`
    whose every tap with a nonzero weight reads a landed row; the ranges tile the output
    in order. Taps with zero weight may still read rows that have not landed: they
    contribute exactly 0 (the source is uint8, never NaN). Resizes filtered columns
    first (very tall Pillow images) get everything after the last chunk.
    """
    if not landed_rows or landed_rows[-1] != src.shape[1] or landed_rows != sorted(landed_rows):
        raise ValueError(f"landed_rows must increase to H_in={src.shape[1]}, got {landed_rows}")
    k_src, _, k_tables = _kernel_view(src, out, tables)
    h_out = k_tables.dst_hw[0]
    if _uses_band(k_src, k_tables, block):
        tile = k_tables.band.block_y
    else:
        tile = (block or _block_shape(k_tables.x_weight.shape[1]))[0]
    tiles = triton.cdiv(h_out, tile)
    if tables.vertical_first:
        return [(0, 0)] * (len(landed_rows) - 1) + [(0, tiles)]
    first = tables.y_first.cpu().numpy().astype(np.int64)
    weight = tables.y_weight.cpu().numpy()
    rows = np.clip(first[:, None] + np.arange(weight.shape[1])[None, :], 0, src.shape[1] - 1)
    need = np.where(weight != 0, rows, -1).max(axis=1)  # last source row each output row reads
    need = np.pad(need, (0, tiles * tile - h_out), mode="edge").reshape(tiles, tile).max(axis=1)
    need = np.maximum.accumulate(need)  # tiles are launched in order
    ranges, done = [], 0
    for landed in landed_rows[:-1]:
        ready = int(np.searchsorted(need, landed, side="left"))  # tiles whose last row < landed
        ranges.append((done, max(done, ready)))
        done = max(done, ready)
    ranges.append((done, tiles))
    return ranges


def resize_normalize(
    src: torch.Tensor,
    out: torch.Tensor,
    tables: ResizeTables,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    *,
    bgr: bool,
    block: tuple[int, int, int] | None = None,
    row_tiles: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Launch the fused kernel once for a batch of equal-size frames.

    Args:
        src: uint8 ``[N, H_in, W_in, 3]`` on the kernel's device; any strides.
        out: float32/float16 ``[N, 3, H_out, W_out]`` on the same device; written.
        tables: from :func:`resize_tables` for this source/target size and mode.
        mean, std: per output channel (RGB order), in units of the [0, 1] scaled input.
        bgr: the source's channel order is B, G, R (output planes are always R, G, B).
        block: (BLOCK_Y, BLOCK_X, num_warps) override of the gather kernel's tile, for
            tuning; BLOCK_* powers of two. Given, the gather kernel always runs.
        row_tiles: compute only output row tiles ``[first, end)`` (from
            :func:`row_schedule`); None: all of them. An empty range launches nothing.

    Returns:
        ``out``.

    Pillow-mode downscales with band tables (``tables.band``) run the tensor-core band
    kernel of :mod:`.pil_band` when ``src`` rows are contiguous B, G, R bytes; every
    other case runs the gather kernel below.
    """
    src, out, tables = _kernel_view(src, out, tables)
    n, h_in, w_in, _ = src.shape
    _, _, h_out, w_out = out.shape
    if (h_in - 1) * abs(src.stride(1)) + (w_in - 1) * abs(src.stride(2)) + 2 * abs(src.stride(3)) >= 2**31:
        raise ValueError(f"a frame of {h_in}x{w_in} with strides {src.stride()} spans more than 2 GiB")
    if row_tiles is not None and row_tiles[1] <= row_tiles[0]:
        return out
    if _uses_band(src, tables, block):
        return resize_normalize_band(src, out, tables.band, mean, std, bgr=bgr, row_tiles=row_tiles)
    taps_x = tables.x_weight.shape[1]
    block_y, block_x, num_warps = block or _block_shape(taps_x)
    first_tile, end_tile = row_tiles or (0, triton.cdiv(h_out, block_y))
    grid = (triton.cdiv(w_out, block_x), end_tile - first_tile, n)
    _resize_normalize_kernel[grid](
        src,
        out,
        tables.y_first,
        tables.y_weight,
        tables.x_first,
        tables.x_weight,
        h_in,
        w_in,
        h_out,
        w_out,
        src.stride(0),
        src.stride(1),
        src.stride(2),
        src.stride(3),
        out.stride(0),
        out.stride(1),
        out.stride(2),
        out.stride(3),
        tables.y_weight.shape[1],
        first_tile,
        *normalize_args(mean, std),
        MODE=_MODE_ID[tables.mode],
        BGR=bgr,
        TAPS_X=taps_x,
        BLOCK_Y=block_y,
        BLOCK_X=block_x,
        num_warps=num_warps,
    )
    return out


# --------------------------------------------------------------------------------------
# PyTorch reference of the kernel: same tables, same integer arithmetic, tensor ops.
# --------------------------------------------------------------------------------------


def _taps(first: torch.Tensor, weight: torch.Tensor, size: int) -> torch.Tensor:
    k = torch.arange(weight.shape[1], device=first.device)
    return (first.long()[:, None] + k[None, :]).clamp_(0, size - 1)


def resize_normalize_torch(
    src: torch.Tensor,
    tables: ResizeTables,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    *,
    bgr: bool,
    out_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """What :func:`resize_normalize` computes, with PyTorch ops (same shapes and dtypes)."""
    if tables.vertical_first:
        out = resize_normalize_torch(src.transpose(1, 2), tables.transposed(), mean, std, bgr=bgr, out_dtype=out_dtype)
        return out.transpose(2, 3).contiguous()
    n, h_in, w_in, _ = src.shape
    planes = src[..., [2, 1, 0]] if bgr else src[..., :3]
    integer = tables.mode != "torch"
    x = planes.long() if integer else planes.float()
    cols = _taps(tables.x_first, tables.x_weight, w_in)
    rows = _taps(tables.y_first, tables.y_weight, h_in)
    wx = tables.x_weight.long() if integer else tables.x_weight
    wy = tables.y_weight.long() if integer else tables.y_weight

    hsum = torch.zeros((n, h_in, cols.shape[0], 3), dtype=x.dtype, device=x.device)
    for k in range(cols.shape[1]):
        hsum += wx[None, None, :, k, None] * x[:, :, cols[:, k], :]
    if tables.mode == "pil":
        hsum = ((hsum + (1 << 21)) >> 22).clamp_(0, 255)
    elif tables.mode == "cv2":
        hsum = hsum >> 4
    acc = torch.zeros((n, rows.shape[0], cols.shape[0], 3), dtype=x.dtype, device=x.device)
    for k in range(rows.shape[1]):
        term = wy[None, :, k, None, None] * hsum[:, rows[:, k], :, :]
        acc += (term >> 16) if tables.mode == "cv2" else term
    if tables.mode == "pil":
        q = ((acc + (1 << 21)) >> 22).clamp_(0, 255).float()
    elif tables.mode == "cv2":
        q = ((acc + 2) >> 2).float()
    else:
        q = acc
    return normalize_torch(q.permute(0, 3, 1, 2), mean, std, out_dtype)

