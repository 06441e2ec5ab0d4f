"""One run for ``targets.py``: the bench's rows and, in the same process, the hand-written CUDA kernel's.

The bench (``python -m inference_triton_preproc.bench``) on a 1080p frame into 312 and 624,
pil, batch 1, followed by a ``floor CUDA C++ kernel back-to-back`` row per size: the exact
CUDA C++ kernel of ``kernel_cuda_floor.py`` (fastest exact tile of its sweep), timed
like the bench's ``floor kernel back-to-back`` row, on the same frame and GPU. CUDA only.

    python benchmarks/targets_run.py --json FILE [--iters 300]
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kernel_cuda_floor import floor_row  # noqa: E402  (a script beside this one)

from inference_triton_preproc.bench import Config, load_frames, print_report, run_bench  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--iters", type=int, default=300)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("error: targets_run.py needs a CUDA device", file=sys.stderr)
        return 2
    cfg = Config(source="1080x1920", sizes=[312, 624], modes=["pil"], batches=[1], iters=args.iters)
    report = run_bench(cfg)
    frame = load_frames(cfg.source, 1)[0][0]
    report["rows"] += [asdict(floor_row(frame, size)) for size in cfg.sizes]
    print_report(report)
    args.json.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
