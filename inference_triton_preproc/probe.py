"""Tensor parity probe: each kernel mode against each reference library, per channel.

    python -m inference_triton_preproc.probe [--image PATH | --video PATH] [--frames N]
                                             [--size 312] [--json FILE]

Without ``--image``/``--video`` it reads the sample clip shipped with the package. For
every kernel mode (pil, cv2, torch) and every reference (Pillow, OpenCV, PyTorch) it
reports, per RGB channel, the largest and mean absolute difference (normalised units;
one uint8 level is about 0.0175) and how many values differ. A kernel mode should
match its own reference (zero, or within 2e-6 for torch) and differ from the others.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._assets import sample_video_path
from ._video import VideoReadError
from ._video import read_frames as decode_video
from ._paths import check_output_file
from .api import preprocess, resolve_device
from .kernels.resize import MODES
from .reference import preprocess_reference

logger = logging.getLogger(__name__)

CHANNELS = ("R", "G", "B")


class ProbeInputError(Exception):
    """The probe's input could not be read."""


def read_frames(image: str | None = None, video: str | None = None, frames: int = 1) -> tuple[list[np.ndarray], str]:
    """BGR uint8 frames from an image file, the first ``frames`` of a video, or the sample clip."""
    import cv2

    if image is not None:
        frame = cv2.imread(image, cv2.IMREAD_COLOR)
        if frame is None:
            raise ProbeInputError(f"cannot read image {image!r}")
        return [frame], image
    source = video if video is not None else str(sample_video_path())
    try:
        return decode_video(source, limit=frames), source
    except VideoReadError as error:
        raise ProbeInputError(str(error)) from None


def channel_stats(got: torch.Tensor, want: torch.Tensor) -> dict[str, dict[str, float | int]]:
    """Per-channel max/mean |got - want| and the count of differing values ([N, 3, H, W] inputs)."""
    diff = (got.float() - want.float()).abs()
    stats = {}
    for c, name in enumerate(CHANNELS):
        d = diff[:, c]
        stats[name] = {
            "max_abs": d.max().item(),
            "mean_abs": d.mean().item(),
            "n_diff": int((d != 0).sum().item()),
            "n": d.numel(),
        }
    return stats


def probe(frames: Sequence[np.ndarray], size: tuple[int, int], device: torch.device | None = None) -> list[dict[str, Any]]:
    """Compare every kernel mode against every reference on ``frames`` (BGR uint8)."""
    references = {ref: preprocess_reference(list(frames), size, mode=ref) for ref in MODES}
    rows = []
    for mode in MODES:
        got = preprocess(list(frames), size, mode=mode, device=device).cpu()
        for ref, want in references.items():
            rows.append({"mode": mode, "reference": ref, "channels": channel_stats(got, want)})
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    header = f"{'kernel':<7} {'reference':<10} {'ch':<3} {'max |diff|':>12} {'mean |diff|':>12} {'differing':>22}"
    lines = [header, "-" * len(header)]
    for row in rows:
        for name, s in row["channels"].items():
            share = f"{s['n_diff']}/{s['n']}"
            lines.append(
                f"{row['mode']:<7} {row['reference']:<10} {name:<3} {s['max_abs']:>12.3e} {s['mean_abs']:>12.3e} {share:>22}"
            )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m inference_triton_preproc.probe", description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--image", help="image file (decoded as BGR by OpenCV)")
    source.add_argument("--video", help="video file or stream URL; default: the sample clip shipped with the package")
    parser.add_argument("--frames", type=int, default=1, help="video frames to probe (default 1)")
    parser.add_argument("--size", type=int, nargs="+", default=[312], metavar="S", help="target size: S or H W (default 312)")
    parser.add_argument("--device", default=None, help="compute device (default: CUDA, else CPU under TRITON_INTERPRET=1)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON to this file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if len(args.size) not in (1, 2) or min(args.size) <= 0 or args.frames <= 0:
        print("error: --size takes one or two positive ints and --frames a positive int", file=sys.stderr)
        return 2
    size = (args.size[0], args.size[-1])
    unwritable = None if args.json is None else check_output_file(args.json, "--json")
    if unwritable is not None:
        print(f"error: {unwritable}", file=sys.stderr)
        return 2
    try:
        frames, source = read_frames(args.image, args.video, args.frames)
        device = resolve_device(args.device)
    except (ProbeInputError, RuntimeError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    rows = probe(frames, size, device)
    h, w = frames[0].shape[:2]
    print(f"source: {source} ({len(frames)} frame(s), {w}x{h}) -> {size[1]}x{size[0]} on {device}")
    print(format_table(rows))
    if args.json is not None:
        report = {"source": source, "frames": len(frames), "size": list(size), "device": str(device), "results": rows}
        args.json.write_text(json.dumps(report, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
