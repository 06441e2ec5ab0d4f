"""Preprocess frames of a video with the fused kernel and check them against Pillow.

    python examples/preprocess_frames.py [VIDEO] [--size 312]

Without a CUDA device, run it with TRITON_INTERPRET=1 (the kernels then run on the CPU).
"""

from __future__ import annotations

import argparse

import torch

from inference_triton_preproc import preprocess
from inference_triton_preproc._assets import sample_video_path
from inference_triton_preproc._video import read_frames
from inference_triton_preproc.reference import preprocess_reference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("video", nargs="?", default=str(sample_video_path()))
    parser.add_argument("--size", type=int, default=312)
    parser.add_argument("--frames", type=int, default=4)
    args = parser.parse_args()

    frames = read_frames(args.video, limit=args.frames)  # BGR uint8, as OpenCV decodes
    batch = preprocess(frames, args.size, mode="pil", input_color="bgr")  # one launch for equal sizes
    reference = preprocess_reference(frames, args.size, mode="pil", input_color="bgr")
    diff = (batch.cpu() - reference).abs().max().item()
    print(f"{len(frames)} frames -> {tuple(batch.shape)} {batch.dtype} on {batch.device}; max |diff| vs Pillow: {diff}")
    assert torch.equal(batch.cpu(), reference)


if __name__ == "__main__":
    main()
