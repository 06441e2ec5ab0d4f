"""The project's preprocessing targets, judged on bench JSONs, one column per run.

Each run is judged only against rows of the same run (upstream's runtime, the copy floors
and the GPU clocks move with the host and between runs), for 1080p -> 312 and 624, pil,
batch 1. The targets are ratios to floors measured in that run:

* page-locked frame (``pinned``): median <= 1.3x the page-locked copy floor (the faster
  of the copy call and one replay of a CUDA graph of the copy);
* page-locked frame, host CPU <= 1.5x the copy graph's host CPU;
* pageable frame (``auto``): median <= 1.1x the chunked-staging copy floor;
* page-locked frame >= 4x faster than upstream's runtime;
* the kernel back to back <= 1.3x the exact hand-written CUDA C++ kernel
  (``floor CUDA C++ kernel back-to-back``, written by ``targets_run.py``; "n/a" in runs
  without that row).

A target holds when it is met in every run judged, and at least 3 runs are judged;
with fewer the verdict says so.

    python benchmarks/targets.py RUN.json [RUN.json ...]
    python benchmarks/targets.py --absolute RUN.json ...   (the earlier absolute targets)
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

import numpy as np

Rows = list[dict]
MIN_RUNS = 3


def _row(rows: Rows, path: str, strategy: str | None = None, size: int | None = None) -> dict:
    for r in rows:
        if r["path"] == path and r["strategy"] == strategy and r["size"] == size and r["batch"] == 1:
            if r.get("status", "ok") != "ok":
                break
            return r
    raise KeyError(f"no row {path!r} strategy={strategy} size={size} in the run")


def _median(rows: Rows, path: str, strategy: str | None = None, size: int | None = None) -> float:
    return _row(rows, path, strategy, size)["median_ms"]


def _cpu(rows: Rows, path: str, strategy: str | None = None, size: int | None = None) -> float:
    return _row(rows, path, strategy, size)["cpu_ms"]


def _pageable_floor(rows: Rows) -> float:
    return min(_median(rows, "floor HtoD pageable"), _median(rows, "floor HtoD via chunked", "chunked"))


def _pinned_floor(rows: Rows) -> float:
    return min(_median(rows, "floor HtoD page-locked"), _median(rows, "floor HtoD page-locked CUDA graph"))


def _upstream(rows: Rows, size: int) -> float:
    return _median(rows, "upstream FastPreprocessRuntime", size=size)


def _ours(rows: Rows, strategy: str, size: int) -> float:
    return _median(rows, "ours preprocess", strategy, size)


# (target, value of a run, whether the value meets it, how the value is printed)
Target = tuple[str, Callable[[Rows], float], Callable[[float], bool], str]


def ratio_targets(size: int) -> list[Target]:
    """The restated targets: ratios to floors of the same run."""
    return [
        (
            f"{size} page-locked / page-locked copy floor (<= 1.3x)",
            lambda r: _ours(r, "pinned", size) / _pinned_floor(r),
            lambda v: v <= 1.3,
            "{:.2f}x",
        ),
        (
            f"{size} page-locked host CPU / copy graph's (<= 1.5x)",
            lambda r: _cpu(r, "ours preprocess", "pinned", size) / _cpu(r, "floor HtoD page-locked CUDA graph"),
            lambda v: v <= 1.5,
            "{:.2f}x",
        ),
        (
            f"{size} pageable auto / chunked-staging floor (<= 1.1x)",
            lambda r: _ours(r, "auto", size) / _median(r, "floor HtoD via chunked", "chunked"),
            lambda v: v <= 1.1,
            "{:.2f}x",
        ),
        (
            f"{size} page-locked vs upstream (>= 4x)",
            lambda r: _upstream(r, size) / _ours(r, "pinned", size),
            lambda v: v >= 4,
            "{:.2f}x",
        ),
        (
            f"{size} kernel back-to-back / CUDA C++ kernel (<= 1.3x)",
            lambda r: _median(r, "floor kernel back-to-back", size=size)
            / _median(r, "floor CUDA C++ kernel back-to-back", size=size),
            lambda v: v <= 1.3,
            "{:.2f}x",
        ),
    ]


def absolute_targets(size: int) -> list[Target]:
    """The earlier absolute targets (the README's per-run table of H100 runs)."""
    speedup = 1.5 if size == 312 else 2.5
    return [
        (f"{size} page-locked median ms (<= 0.2)", lambda r: _ours(r, "pinned", size), lambda v: v <= 0.2, "{:.3f}"),
        (
            f"{size} page-locked vs upstream (>= 4x)",
            lambda r: _upstream(r, size) / _ours(r, "pinned", size),
            lambda v: v >= 4,
            "{:.2f}x",
        ),
        (
            f"{size} page-locked host CPU ms (<= 0.05)",
            lambda r: _cpu(r, "ours preprocess", "pinned", size),
            lambda v: v <= 0.05,
            "{:.3f}",
        ),
        (
            f"{size} pageable auto over the best pageable floor (<= +10 %)",
            lambda r: _ours(r, "auto", size) / _pageable_floor(r) - 1,
            lambda v: v <= 0.10,
            "{:+.1%}",
        ),
        (
            f"{size} pageable auto vs upstream (>= {speedup}x)",
            lambda r: _upstream(r, size) / _ours(r, "auto", size),
            lambda v: v >= speedup,
            "{:.2f}x",
        ),
    ]


def _value(value: Callable[[Rows], float], rows: Rows) -> float | None:
    try:
        return value(rows)
    except KeyError:  # a row this run does not have (e.g. no CUDA C++ floor)
        return None


def verdict(met: int, judged: int) -> str:
    """``holds`` when met in every judged run of at least :data:`MIN_RUNS`."""
    if judged == 0:
        return "not measured"
    if judged < MIN_RUNS:
        return f"met in {met} of {judged}; not judged (< {MIN_RUNS} runs)"
    if met == judged:
        return f"holds ({met} of {judged})"
    return f"does not hold ({met} of {judged})"


def table(runs: list[Rows], targets: Callable[[int], list[Target]], with_median: bool) -> list[str]:
    """Markdown lines: one row per target, one column per run, then the verdict."""
    extra = " median | verdict |" if with_median else " met in |"
    lines = ["| target | " + " | ".join(f"run {i + 1}" for i in range(len(runs))) + f" |{extra}"]
    lines.append("|---|" + "---|" * (len(runs) + 1 + with_median))
    for size in (312, 624):
        for name, value, meets, fmt in targets(size):
            values = [_value(value, rows) for rows in runs]
            judged = [v for v in values if v is not None]
            cells = ["n/a" if v is None else fmt.format(v) + (" ✓" if meets(v) else " ✗") for v in values]
            median = ""
            if with_median:
                median = " " + (fmt.format(float(np.median(judged))) if judged else "n/a") + " |"
            met = sum(map(meets, judged))
            result = verdict(met, len(judged)) if with_median else f"{met} of {len(runs)}"
            lines.append(f"| {name} | " + " | ".join(cells) + f" |{median} {result} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", metavar="RUN.json")
    parser.add_argument("--absolute", action="store_true", help="the earlier absolute targets instead of the ratios")
    args = parser.parse_args()
    runs = []
    for path in args.runs:
        with open(path) as f:
            runs.append(json.load(f)["rows"])
    if args.absolute:
        print("\n".join(table(runs, absolute_targets, with_median=False)))
    else:
        print("\n".join(table(runs, ratio_targets, with_median=True)))


if __name__ == "__main__":
    main()
