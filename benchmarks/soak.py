"""Soak: many frames of changing sizes and batch sizes through the backend on a GPU.

    python benchmarks/soak.py [--frames 10000] [--json FILE]

Cycles source sizes (576x768 to 4K), batch sizes (1, 2, 4), modes, ingest paths
(pageable numpy, frames from a page-locked pool, CUDA tensors) and outputs (a new
tensor per call, or a ring of 3 preallocated buffers per batch size as the plugin's
TRT path uses, which takes the CUDA-graph paths), and checks that

* GPU memory (allocated and reserved) and page-locked host memory stop growing after
  the warm-up round (every size/batch/mode combination seen once), and
* sampled calls equal the CPU reference exactly (pil, cv2) or within 2e-6 (torch).

Exit code 0 when both hold, 1 otherwise. Needs a CUDA device.
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import sys
import time

import cv2
import numpy as np
import torch

from inference_triton_preproc import preprocess
from inference_triton_preproc.reference import preprocess_reference
from inference_triton_preproc.runtime.pinned import PinnedFramePool

SOURCES = [(576, 768), (720, 1280), (1080, 1920), (2160, 3840)]
BATCHES = [1, 2, 4]
MODES = ["pil", "cv2", "torch"]
INGESTS = ["pageable", "pinned", "cuda"]
OUTPUTS = ["new", "ring"]
RING = 3
SIZE = 432
TOLERANCE = {"pil": 0.0, "cv2": 0.0, "torch": 2e-6}


def photo(height: int, width: int, seed: int) -> np.ndarray:
    """A real photo (scikit-image's coffee) at the given size, shifted so frames differ."""
    from skimage import data

    bgr = np.ascontiguousarray(data.coffee()[..., ::-1])
    return np.roll(cv2.resize(bgr, (width, height), interpolation=cv2.INTER_LINEAR), seed * 7, axis=1)


def host_pinned_bytes() -> int | None:
    stats = getattr(torch.cuda, "host_memory_stats", None)
    if stats is None:
        return None
    return int(stats().get("allocated_bytes.current", stats().get("reserved_bytes.current", 0)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--sample-every", type=int, default=97)
    parser.add_argument("--json")
    args = parser.parse_args(argv)

    frames = {hw: [photo(*hw, seed) for seed in range(4)] for hw in SOURCES}
    pools = {hw: PinnedFramePool(shape=(*hw, 3), capacity=8) for hw in SOURCES}
    combos = list(itertools.product(SOURCES, BATCHES, MODES, INGESTS, OUTPUTS))
    rings = {b: [torch.empty((b, 3, SIZE, SIZE), device="cuda") for _ in range(RING)] for b in BATCHES}
    done = calls = checked = mismatches = 0
    samples = []
    baseline = None
    start = time.perf_counter()
    for step in itertools.count():
        if done >= args.frames:
            break
        hw, batch, mode, ingest, output = combos[step % len(combos)]
        chosen = [frames[hw][(step + i) % 4] for i in range(batch)]
        if ingest == "pinned":
            held = []
            for frame in chosen:
                buffer = pools[hw].acquire(timeout=5)
                buffer[...] = frame
                held.append(buffer)
            images = held
        elif ingest == "cuda":
            images = torch.from_numpy(np.stack(chosen)).cuda()
        else:
            images = chosen
        if output == "ring":
            out = preprocess(images, SIZE, mode=mode, out=rings[batch][calls % RING])
        else:
            out = preprocess(images, SIZE, mode=mode)
        done += batch
        calls += 1
        if calls % args.sample_every == 0:
            torch.cuda.synchronize()
            want = preprocess_reference(chosen, SIZE, mode=mode)
            checked += 1
            if (out.cpu() - want).abs().max().item() > TOLERANCE[mode]:
                mismatches += 1
        del out, images
        if step == len(combos) - 1:
            torch.cuda.synchronize()
            baseline = (torch.cuda.memory_allocated(), torch.cuda.memory_reserved(), host_pinned_bytes())
        if baseline is not None and calls % 250 == 0:
            torch.cuda.synchronize()
            samples.append(
                {
                    "frames": done,
                    "gpu_allocated": torch.cuda.memory_allocated(),
                    "gpu_reserved": torch.cuda.memory_reserved(),
                    "host_pinned": host_pinned_bytes(),
                    "max_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                }
            )
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    final = (torch.cuda.memory_allocated(), torch.cuda.memory_reserved(), host_pinned_bytes())
    grew = baseline is None or final[0] > baseline[0] or final[1] > baseline[1] or (final[2] or 0) > (baseline[2] or 0)
    report = {
        "device": torch.cuda.get_device_name(),
        "frames": done,
        "calls": calls,
        "seconds": elapsed,
        "sampled_calls_checked": checked,
        "mismatches": mismatches,
        "after_warmup": {"gpu_allocated": baseline[0], "gpu_reserved": baseline[1], "host_pinned": baseline[2]} if baseline else None,
        "final": {"gpu_allocated": final[0], "gpu_reserved": final[1], "host_pinned": final[2]},
        "memory_grew_after_warmup": grew,
        "samples": samples,
    }
    print(json.dumps({k: v for k, v in report.items() if k != "samples"}, indent=2))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)
    return 0 if not grew and mismatches == 0 and checked > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
