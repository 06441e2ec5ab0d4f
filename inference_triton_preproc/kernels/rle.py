"""COCO run-length encoding of a frame's masks on the GPU, byte for byte pycocotools' strings.

The stock path encodes one mask at a time: ``unique_consecutive`` over the column-major
mask, a host synchronisation and a Python list per mask, then pycocotools' compression
on the host (:func:`coco_rle_torch`, the reference). Here every mask of a frame is
encoded at once on its device, and only the finished strings travel:

1. :func:`run_lengths` — where the column-major value changes (one kernel, which also
   counts the changes per mask), their positions (one ``nonzero``), and the runs
   between them, COCO's way: each mask starts with a run of zeros (0 when its first
   pixel is set) and its runs sum to ``H * W``.
2. :func:`compress_runs` — pycocotools' ``rleToString``: each run minus the run two
   before it (from the fourth run of a mask on), written 5 bits a character with a
   continuation bit, plus 48; the character counts are summed once, then every
   character is written in place.
3. :func:`coco_rle` — the strings' ends and the characters in two small transfers,
   split into one ``bytes`` per mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import triton
import triton.language as tl

from .resize import interpreted

# At most this many pixels per nonzero call (PyTorch's limit for one tensor).
_MAX_PIXELS = 2**31 - 1


@dataclass(frozen=True)
class RunLengths:
    """COCO's uncompressed counts of N masks, concatenated, on their device.

    ``runs``: int64 ``(R,)``, every mask's counts in mask order; ``local``: int32 ``(R,)``,
    each run's index within its mask; ``tails``: int64 ``(N,)``, the index in ``runs`` of
    each mask's last run.
    """

    runs: torch.Tensor
    local: torch.Tensor
    tails: torch.Tensor

    def counts(self) -> list[list[int]]:
        """Each mask's counts as Python ints (one host transfer)."""
        runs, tails = self.runs.cpu().tolist(), self.tails.cpu().tolist()
        return [runs[start : end + 1] for start, end in zip([0, *(t + 1 for t in tails[:-1])], tails)]


def _block() -> int:
    """Elements per program: few large programs under the interpreter (it pays per program)."""
    return 16384 if interpreted() else 1024


@triton.jit
def _changes_kernel(masks_ptr, flags_ptr, changes_ptr, length, BLOCK: tl.constexpr):
    mask_id = tl.program_id(0).to(tl.int64)
    p = tl.program_id(1).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    valid = p < length
    base = mask_id * length
    value = tl.load(masks_ptr + base + p, mask=valid, other=0)
    # Before the first pixel COCO counts zeros, as if a 0 preceded it.
    before = tl.load(masks_ptr + base + p - 1, mask=valid & (p > 0), other=0)
    flag = valid & (value != before)
    tl.store(flags_ptr + base + p, flag.to(tl.int8), mask=valid)
    tl.atomic_add(changes_ptr + mask_id, tl.sum(flag.to(tl.int64), 0))


@triton.jit
def _runs_kernel(
    positions_ptr,
    changes_ptr,
    through_ptr,
    runs_ptr,
    local_ptr,
    tails_ptr,
    num_positions,
    num_masks,
    length,
    change_programs,
    BLOCK: tl.constexpr,
):
    program = tl.program_id(0)
    if program < change_programs:
        # A run ends at each change: it is the distance from the mask's previous change
        # (or from its first pixel). Mask m's runs start after the m runs that end masks 0..m-1.
        j = program.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        valid = j < num_positions
        position = tl.load(positions_ptr + j, mask=valid, other=0)
        mask_id = position // length
        previous = tl.load(positions_ptr + j - 1, mask=valid & (j > 0), other=0)
        same_mask = (j > 0) & (previous // length == mask_id)
        start = tl.where(same_mask, previous - mask_id * length, 0)
        first = tl.load(through_ptr + mask_id, mask=valid, other=0) - tl.load(changes_ptr + mask_id, mask=valid, other=0)
        tl.store(runs_ptr + j + mask_id, position - mask_id * length - start, mask=valid)
        tl.store(local_ptr + j + mask_id, (j - first).to(tl.int32), mask=valid)
    else:
        # Each mask's last run: from its last change (or its first pixel) to its end.
        m = (program - change_programs).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        valid = m < num_masks
        changes = tl.load(changes_ptr + m, mask=valid, other=0)
        through = tl.load(through_ptr + m, mask=valid, other=0)
        last = tl.load(positions_ptr + through - 1, mask=valid & (changes > 0), other=0)
        start = tl.where(changes > 0, last - m * length, 0)
        tail = through + m
        tl.store(runs_ptr + tail, length - start, mask=valid)
        tl.store(local_ptr + tail, changes.to(tl.int32), mask=valid)
        tl.store(tails_ptr + m, tail, mask=valid)


def run_lengths(masks: torch.Tensor) -> RunLengths:
    """COCO's counts of each mask, read column by column, on the masks' device.

    Args:
        masks: ``(N, H, W)`` bool, N >= 1, ``N * H * W`` below 2**31; fastest laid out
            column by column (strides ``(H*W, 1, H)``), else transposed first.

    Returns:
        The counts of all masks (one synchronisation: the number of changes).
    """
    n, height, width = masks.shape
    if masks.dtype != torch.bool or n == 0 or n * height * width > _MAX_PIXELS:
        raise ValueError(f"masks must be (N, H, W) bool with 0 < N*H*W < 2**31; got {masks.dtype} {tuple(masks.shape)}")
    columns = masks.transpose(1, 2)
    if not columns.is_contiguous():
        columns = columns.contiguous()
    length = height * width
    device = masks.device
    flags = torch.empty((n, length), dtype=torch.int8, device=device)
    changes = torch.zeros(n, dtype=torch.int64, device=device)
    block = _block()
    _changes_kernel[(n, triton.cdiv(length, block))](columns.view(torch.int8), flags, changes, length, BLOCK=block)
    positions = torch.nonzero(flags.view(-1)).view(-1)
    through = torch.cumsum(changes, 0)
    total = int(positions.shape[0]) + n
    runs = torch.empty(total, dtype=torch.int64, device=device)
    local = torch.empty(total, dtype=torch.int32, device=device)
    tails = torch.empty(n, dtype=torch.int64, device=device)
    change_programs = triton.cdiv(int(positions.shape[0]), block)
    _runs_kernel[(change_programs + triton.cdiv(n, block),)](
        positions,
        changes,
        through,
        runs,
        local,
        tails,
        int(positions.shape[0]),
        n,
        length,
        change_programs,
        BLOCK=block,
    )
    return RunLengths(runs=runs, local=local, tails=tails)


@triton.jit
def _compress_kernel(runs_ptr, local_ptr, sizes_ptr, through_ptr, chars_ptr, num_runs, WRITE: tl.constexpr, BLOCK: tl.constexpr):
    r = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    valid = r < num_runs
    local = tl.load(local_ptr + r, mask=valid, other=0)
    value = tl.load(runs_ptr + r, mask=valid, other=0)
    value -= tl.load(runs_ptr + r - 2, mask=valid & (local > 2), other=0)
    if WRITE:
        offset = tl.load(through_ptr + r, mask=valid, other=0) - tl.load(sizes_ptr + r, mask=valid, other=0)
    size = tl.zeros((BLOCK,), dtype=tl.int32)
    more = valid
    # At most 7 characters: a difference of two counts below 2**32 needs 34 bits with its sign.
    for _ in tl.static_range(7):
        char = value & 0x1F
        value = value >> 5  # arithmetic: negative differences end at -1
        follows = tl.where((char & 0x10) != 0, value != -1, value != 0)
        if WRITE:
            byte = (tl.where(follows, char | 0x20, char) + 48).to(tl.uint8)
            tl.store(chars_ptr + offset + size, byte, mask=more)
        size += more.to(tl.int32)
        more = more & follows
    if not WRITE:
        tl.store(sizes_ptr + r, size.to(tl.int64), mask=valid)


def compress_runs(runs: RunLengths) -> tuple[torch.Tensor, torch.Tensor]:
    """pycocotools' compressed strings of the masks, on the device.

    Args:
        runs: the masks' counts (:func:`run_lengths`).

    Returns:
        ``chars``: uint8, every mask's string in mask order (followed by unused bytes);
        ``ends``: int64 ``(N,)``, where each mask's string ends in ``chars``.
    """
    num_runs = int(runs.runs.shape[0])
    device = runs.runs.device
    sizes = torch.empty(num_runs, dtype=torch.int64, device=device)
    chars = torch.empty(7 * num_runs, dtype=torch.uint8, device=device)
    block = _block()
    grid = (triton.cdiv(num_runs, block),)
    _compress_kernel[grid](runs.runs, runs.local, sizes, sizes, chars, num_runs, WRITE=False, BLOCK=block)
    through = torch.cumsum(sizes, 0)
    _compress_kernel[grid](runs.runs, runs.local, sizes, through, chars, num_runs, WRITE=True, BLOCK=block)
    return chars, through[runs.tails]


def coco_rle(masks: torch.Tensor) -> list[dict[str, Any]]:
    """Each mask as the compressed COCO RLE dict pycocotools builds: ``{"size": [H, W], "counts": bytes}``.

    Args:
        masks: ``(N, H, W)`` bool on any device (under 2**31 pixels per mask).
    """
    n, height, width = masks.shape
    if n == 0:
        return []
    out: list[dict[str, Any]] = []
    per_call = max(1, _MAX_PIXELS // max(1, height * width))
    for first in range(0, n, per_call):
        chars, ends = compress_runs(run_lengths(masks[first : first + per_call]))
        ends = ends.cpu().tolist()
        data = chars[: ends[-1]].cpu().numpy().tobytes()
        out.extend({"size": [height, width], "counts": data[start:end]} for start, end in zip([0, *ends[:-1]], ends))
    return out


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
