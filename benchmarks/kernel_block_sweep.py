"""Time the fused kernel over tile shapes (CUDA-graph replay, frame already on the GPU).

    python benchmarks/kernel_block_sweep.py

Prints, per source size, mode and target square, the six fastest
(BLOCK_Y, BLOCK_X, num_warps) in microseconds per launch, after checking that every
tile shape produces the same tensor. Needs a CUDA device.
"""

from __future__ import annotations

import torch

from inference_triton_preproc import IMAGENET_MEAN, IMAGENET_STD
from inference_triton_preproc.kernels.resize import resize_normalize, resize_tables

BLOCKS = [(1, 32, 4), (1, 64, 2), (1, 64, 4), (1, 128, 4), (2, 32, 4), (2, 64, 4), (4, 16, 2), (4, 32, 4), (4, 64, 8), (8, 16, 4), (8, 32, 4), (8, 64, 8)]


def graph_time_us(fn, reps: int = 200) -> float:
    """Mean time of one ``fn`` launch replayed from a CUDA graph, in microseconds."""
    graph, stream = torch.cuda.CUDAGraph(), torch.cuda.Stream()
    with torch.cuda.stream(stream):
        fn()
    torch.cuda.synchronize()
    with torch.cuda.graph(graph):
        fn()
    for _ in range(20):
        graph.replay()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / reps * 1000


def main() -> None:
    device = torch.device("cuda")
    print(torch.cuda.get_device_name(device))
    for src in [(1080, 1920), (2160, 3840)]:
        frame = torch.randint(0, 256, (1, *src, 3), dtype=torch.uint8, device=device)
        for mode in ("pil", "cv2"):
            for size in (312, 624, 768):
                out = torch.empty((1, 3, size, size), device=device)
                tables = resize_tables(src, (size, size), mode, device)
                reference = None
                timings = []
                for block in BLOCKS:

                    def launch(block=block):
                        resize_normalize(frame, out, tables, IMAGENET_MEAN, IMAGENET_STD, bgr=True, block=block)

                    launch()
                    if reference is None:
                        reference = out.clone()
                    assert torch.equal(reference, out), block
                    timings.append((graph_time_us(launch), block))
                timings.sort()
                best = " ".join(f"{b}:{t:.1f}" for t, b in timings[:6])
                print(f"{src} {mode} {size}: {best}", flush=True)


if __name__ == "__main__":
    main()
