"""Pillow-mode resize + normalise as two banded matrix products on tensor cores.

For large downscales (a 1080p or 4K frame into an RF-DETR square) Pillow's filter is
wide: 14-26 horizontal taps. The gather kernel in :mod:`.resize` then spends its time
on one-byte loads, several per tap and output pixel. This kernel reads the frame as
contiguous byte rows instead (wide, coalesced loads) and writes both filter passes
as dense products with banded weight matrices, which tensor cores evaluate fast
enough that the wasted zeros cost less than the gathers they replace:

* A program owns ``BLOCK_Y`` output rows by ``COLS`` output columns. It loads the
  ``ROWS`` source rows those output rows need, each as the contiguous run of
  interleaved B, G, R bytes that its columns need (``[ROWS, K]`` uint8).
* Horizontal pass: ``[ROWS, K] @ [K, LANES]``. Lane ``c * COLS + j`` of the band
  matrix holds output column ``j``'s weights at the bytes of channel ``c``; the
  ``LANES - 3 * COLS`` lanes left over (the width is a power of two) are all zeros.
  The result is rounded to uint8 exactly as Pillow does between its passes.
* Vertical pass: ``[BLOCK_Y, ROWS] @ [ROWS, LANES]``, rounded the same way, then
  scaled and normalised (:mod:`._normalize`).

Exactness: Pillow's weights are 22-bit integers; each is split into two 11-bit halves
(``hi * 2048 + lo``), both exact in float16, and each pass is two float16 products
with float32 accumulation. Every product and partial sum is an integer below 2**24, so
the float32 sums are exact and the combined integer equals Pillow's int32 sum.

The band matrices are built on the host, once per (source size, target size), from
the same per-axis tables the gather kernel uses. :func:`resize_normalize_band_torch`
evaluates the same matrices with PyTorch integer matmuls: the readable reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import triton
import triton.language as tl

from ._normalize import normalize, normalize_args, normalize_torch

_PIL_BITS = 22
_HALF_BITS = 11  # the 22-bit weights are split into two halves exact in float16

# Tile shape: measured on an H100 (1080p and 4K sources into RF-DETR squares; see
# benchmarks/kernel_band_variants_h100.txt). 16 output rows by 10 output columns per
# program (30 of 32 lanes busy), 32 bytes of a row per product step, source row tiles
# of 64 or 128 rows.
BLOCK_Y = 16
COLS = 10
LANES = 32
BLOCK_K = 32
ROW_TILES = (64, 128)
NUM_WARPS = 4
NUM_STAGES = 3
# The gather kernel wins when the horizontal filter is narrow: below a 4x horizontal
# downscale (1080p into 504-768 squares) it measured as fast or faster.
MIN_HORIZONTAL_SCALE = 4.0
_ALIGN = 16  # bytes: the first byte each column tile loads is aligned down to this


@dataclass(frozen=True)
class BandTables:
    """Dense band matrices for one (source size, target size), on one device.

    ``col_start``: int32 ``[tiles_x]``, first source byte (in a row of interleaved
    channels) each tile of ``cols`` output columns reads. ``x_hi``/``x_lo``: float16
    ``[tiles_x, k_span, lanes]``, the horizontal weights' halves.
    ``row_start``: int32 ``[tiles_y]``, first source row of each row tile.
    ``y_hi``/``y_lo``: float16 ``[tiles_y, block_y, rows]``, the vertical weights' halves.
    """

    src_hw: tuple[int, int]
    dst_hw: tuple[int, int]
    block_y: int
    cols: int
    lanes: int
    rows: int
    k_span: int
    col_start: torch.Tensor
    x_hi: torch.Tensor
    x_lo: torch.Tensor
    row_start: torch.Tensor
    y_hi: torch.Tensor
    y_lo: torch.Tensor


def _columns(
    first: np.ndarray, weight: np.ndarray, cols: int, lanes: int, block_k: int
) -> tuple[np.ndarray, np.ndarray]:
    """(first byte per column tile, int64 band matrices [tiles, k_span, lanes])."""
    w_out, taps = weight.shape
    tiles = triton.cdiv(w_out, cols)
    o = np.arange(w_out)
    used = np.where(weight != 0, np.arange(taps)[None, :] + 1, 0).max(axis=1)
    tile_first = first[np.arange(tiles) * cols]
    start = (3 * tile_first) // _ALIGN * _ALIGN
    end = np.zeros(tiles, dtype=np.int64)
    np.maximum.at(end, o // cols, 3 * (first + used))
    k_span = triton.cdiv(int((end - start).max()), block_k) * block_k
    band = np.zeros((tiles, k_span, lanes), dtype=np.int64)
    tile = (o // cols)[:, None, None]
    k = 3 * (first[:, None, None] + np.arange(taps)[None, :, None]) + np.arange(3)[None, None, :] - start[tile]
    n = np.arange(3)[None, None, :] * cols + (o % cols)[:, None, None]
    w = np.broadcast_to(weight[:, :, None], k.shape)
    keep = w != 0
    tile, k, n = (np.broadcast_to(a, k.shape)[keep] for a in (tile, k, n))
    band[tile, k, n] = w[keep]
    return start.astype(np.int32), band


def _rows(first: np.ndarray, weight: np.ndarray, block_y: int, rows: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(first source row per row tile, int64 band matrices [tiles, block_y, rows]), or
    None when some tile needs more than ``rows`` source rows."""
    h_out, taps = weight.shape
    tiles = triton.cdiv(h_out, block_y)
    start = first[np.arange(tiles) * block_y].astype(np.int64)
    o = np.arange(h_out)[:, None]
    r = first[:, None] + np.arange(taps)[None, :] - start[o // block_y]
    keep = weight != 0
    if r[keep].max() >= rows:
        return None
    band = np.zeros((tiles, block_y, rows), dtype=np.int64)
    tile, row = (np.broadcast_to(a, r.shape)[keep] for a in (o // block_y, o % block_y))
    band[tile, row, r[keep]] = weight[keep]
    return start.astype(np.int32), band


def band_tables(
    src_hw: tuple[int, int],
    dst_hw: tuple[int, int],
    y_axis: tuple[np.ndarray, np.ndarray],
    x_axis: tuple[np.ndarray, np.ndarray],
    device: torch.device,
    *,
    force: bool = False,
) -> BandTables | None:
    """Band matrices for Pillow's per-axis tables (``(first, int32 weights [out, taps])``
    per axis, as :func:`.resize._pil_axis` builds them), or None when this kernel should
    not serve the resize: the horizontal downscale is below :data:`MIN_HORIZONTAL_SCALE`
    (unless ``force``), or an output row tile would need more than 128 source rows.
    """
    (_, w_in), (_, w_out) = src_hw, dst_hw
    if not force and w_in < MIN_HORIZONTAL_SCALE * w_out:
        return None
    if min(y_axis[1].min(), x_axis[1].min()) < 0:
        return None  # the halves below assume non-negative weights (bilinear's are)
    for rows in ROW_TILES:
        vertical = _rows(*y_axis, BLOCK_Y, rows)
        if vertical is not None:
            break
    else:
        return None
    row_start, y_band = vertical
    col_start, x_band = _columns(*x_axis, COLS, LANES, BLOCK_K)

    def halves(band: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        hi = torch.from_numpy((band >> _HALF_BITS).astype(np.float16)).to(device)
        lo = torch.from_numpy((band & ((1 << _HALF_BITS) - 1)).astype(np.float16)).to(device)
        return hi, lo

    x_hi, x_lo = halves(x_band)
    y_hi, y_lo = halves(y_band)
    return BandTables(
        src_hw,
        dst_hw,
        BLOCK_Y,
        COLS,
        LANES,
        rows,
        x_band.shape[1],
        torch.from_numpy(col_start).to(device),
        x_hi,
        x_lo,
        torch.from_numpy(row_start).to(device),
        y_hi,
        y_lo,
    )


@triton.jit
def _pil_band_kernel(
    src_ptr,
    out_ptr,
    col_start_ptr,
    x_hi_ptr,
    x_lo_ptr,
    row_start_ptr,
    y_hi_ptr,
    y_lo_ptr,
    h_in,
    row_bytes,
    h_out,
    w_out,
    stride_sn,
    stride_sh,
    stride_on,
    stride_oc,
    stride_oh,
    stride_ow,
    k_span,
    tile_y0,
    mean0,
    mean1,
    mean2,
    std0,
    std1,
    std2,
    BGR: tl.constexpr,
    BLOCK_Y: tl.constexpr,
    COLS: tl.constexpr,
    N: tl.constexpr,
    ROWS: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    tile_x = tl.program_id(0)
    tile_y = tl.program_id(1) + tile_y0
    n = tl.program_id(2).to(tl.int64)

    first_byte = tl.multiple_of(tl.load(col_start_ptr + tile_x), 16)
    rows = tl.load(row_start_ptr + tile_y) + tl.arange(0, ROWS)
    row_ok = rows < h_in
    # Offsets within one frame fit int32 (the wrapper checks).
    row_ptr = src_ptr + n * stride_sn + (rows * stride_sh)[:, None]
    kk = tl.arange(0, BLOCK_K)
    nn = tl.arange(0, N)

    h_hi = tl.zeros((ROWS, N), dtype=tl.float32)
    h_lo = tl.zeros((ROWS, N), dtype=tl.float32)
    band = x_hi_ptr + tile_x * k_span * N + nn[None, :]
    band_lo = x_lo_ptr + tile_x * k_span * N + nn[None, :]
    for k in range(0, k_span, BLOCK_K):
        cols = first_byte + k + kk
        # Rows past the frame and bytes past the row read 0 (their weights are 0 too).
        a = tl.load(row_ptr + cols[None, :], mask=row_ok[:, None] & (cols < row_bytes)[None, :], other=0)
        a = a.to(tl.float16)
        offset = (k + kk)[:, None] * N
        h_hi = tl.dot(a, tl.load(band + offset), h_hi)
        h_lo = tl.dot(a, tl.load(band_lo + offset), h_lo)
    # Pillow keeps the horizontal pass as uint8.
    h = (h_hi.to(tl.int32) * (1 << 11) + h_lo.to(tl.int32) + (1 << 21)) >> 22
    h = tl.minimum(tl.maximum(h, 0), 255).to(tl.float16)

    yy = tl.arange(0, BLOCK_Y)
    weights = (tile_y * BLOCK_Y + yy)[:, None] * ROWS + tl.arange(0, ROWS)[None, :]
    v_hi = tl.dot(tl.load(y_hi_ptr + weights), h)
    v_lo = tl.dot(tl.load(y_lo_ptr + weights), h)
    q = (v_hi.to(tl.int32) * (1 << 11) + v_lo.to(tl.int32) + (1 << 21)) >> 22
    q = tl.minimum(tl.maximum(q, 0), 255).to(tl.float32)

    c = nn // COLS  # channel of the source bytes this lane filtered (3: a spare lane)
    plane = 2 - c if BGR else c
    y = normalize(q, plane[None, :], mean0, mean1, mean2, std0, std1, std2)

    oy = tile_y * BLOCK_Y + yy
    ox = tile_x * COLS + nn % COLS
    out = out_ptr + n * stride_on + (oy * stride_oh)[:, None] + (plane * stride_oc + ox * stride_ow)[None, :]
    mask = (oy < h_out)[:, None] & ((ox < w_out) & (c < 3))[None, :]
    tl.store(out, y.to(out_ptr.dtype.element_ty), mask=mask)


def band_layout_ok(src: torch.Tensor) -> bool:
    """Whether ``src`` (uint8 ``[N, H, W, 3]``) stores each row as contiguous B, G, R
    bytes, which this kernel reads as byte runs (crops do; flips and transposes don't)."""
    return src.stride(3) == 1 and src.stride(2) == 3 and src.stride(1) > 0


def resize_normalize_band(
    src: torch.Tensor,
    out: torch.Tensor,
    band: BandTables,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    *,
    bgr: bool,
    row_tiles: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Launch the band kernel once for a batch of equal-size frames.

    Args:
        src: uint8 ``[N, H_in, W_in, 3]`` on the kernel's device, rows of contiguous
            interleaved channels (:func:`band_layout_ok`).
        out: float32/float16 ``[N, 3, H_out, W_out]`` on the same device; written.
        band: from :func:`band_tables` for this source/target size.
        mean, std: per output channel (RGB order), in units of the [0, 1] scaled input.
        bgr: the source's channel order is B, G, R (output planes are always R, G, B).
        row_tiles: compute only row tiles ``[first, end)`` of ``band.block_y`` output
            rows; None: all of them.

    Returns:
        ``out``.
    """
    n, h_in, w_in, _ = src.shape
    _, _, h_out, w_out = out.shape
    first_tile, end_tile = row_tiles or (0, band.row_start.shape[0])
    grid = (band.col_start.shape[0], end_tile - first_tile, n)
    _pil_band_kernel[grid](
        src,
        out,
        band.col_start,
        band.x_hi,
        band.x_lo,
        band.row_start,
        band.y_hi,
        band.y_lo,
        h_in,
        3 * w_in,
        h_out,
        w_out,
        src.stride(0),
        src.stride(1),
        out.stride(0),
        out.stride(1),
        out.stride(2),
        out.stride(3),
        band.k_span,
        first_tile,
        *normalize_args(mean, std),
        BGR=bgr,
        BLOCK_Y=band.block_y,
        COLS=band.cols,
        N=band.lanes,
        ROWS=band.rows,
        BLOCK_K=BLOCK_K,
        num_warps=NUM_WARPS,
        num_stages=NUM_STAGES,
    )
    return out


def resize_normalize_band_torch(
    src: torch.Tensor,
    band: BandTables,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    *,
    bgr: bool,
    out_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """What :func:`resize_normalize_band` computes, with int64 PyTorch matmuls."""
    n, h_in, w_in, _ = src.shape
    h_out, w_out = band.dst_hw
    cols = band.cols
    x_band = band.x_hi.long().cpu() * (1 << _HALF_BITS) + band.x_lo.long().cpu()
    y_band = band.y_hi.long().cpu() * (1 << _HALF_BITS) + band.y_lo.long().cpu()
    rows = src.reshape(n, h_in, 3 * w_in).long().cpu()
    # Pad the row bytes and rows so every tile's window lies inside.
    rows = torch.nn.functional.pad(rows, (0, band.k_span, 0, band.rows))
    # Pillow's uint8 result per output pixel, RGB planes; tiles past the edge are cut.
    q = torch.empty((n, 3, h_out, w_out), dtype=torch.float32)
    for ty, r0 in enumerate(band.row_start.tolist()):
        for tx, k0 in enumerate(band.col_start.tolist()):
            window = rows[:, r0 : r0 + band.rows, k0 : k0 + band.k_span]
            h = ((window @ x_band[tx] + (1 << 21)) >> _PIL_BITS).clamp_(0, 255)
            v = ((y_band[ty] @ h + (1 << 21)) >> _PIL_BITS).clamp_(0, 255).float()
            v = v[..., : 3 * cols].reshape(n, band.block_y, 3, cols).permute(0, 2, 1, 3)  # [n, c, y, x]
            y0, x0 = ty * band.block_y, tx * cols
            q[:, :, y0 : y0 + band.block_y, x0 : x0 + cols] = v[:, :, : h_out - y0, : w_out - x0]
    return normalize_torch(q.flip(1) if bgr else q, mean, std, out_dtype)
