"""The project's end-to-end targets, judged on bench JSONs, one column per run.

Each run is judged only against rows of the same run (upstream's runtime and the copy
floors move with the host and between runs), for 1080p -> 312 and 624, pil, batch 1:

* page-locked frame (``pinned``): median <= 0.2 ms, >= 4x faster than upstream's
  runtime, host CPU <= 0.05 ms;
* pageable frame (``auto``): median within 10 % of the faster of the pageable-copy and
  chunked-staging floors, and >= 1.5x (312) / >= 2.5x (624) faster than upstream.

    python benchmarks/targets.py RUN.json [RUN.json ...]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

Rows = list[dict]


def _median(rows: Rows, path: str, strategy: str | None = None, size: int | None = None) -> float:
    for r in rows:
        if r["path"] == path and r["strategy"] == strategy and r["size"] == size and r["batch"] == 1:
            return r["median_ms"]
    raise KeyError(f"no row {path!r} strategy={strategy} size={size} in the run")


def _cpu(rows: Rows, strategy: str, size: int) -> float:
    for r in rows:
        if r["path"] == "ours preprocess" and r["strategy"] == strategy and r["size"] == size and r["batch"] == 1:
            return r["cpu_ms"]
    raise KeyError(f"no row 'ours preprocess' strategy={strategy} size={size} in the run")


def _pageable_floor(rows: Rows) -> float:
    return min(_median(rows, "floor HtoD pageable"), _median(rows, "floor HtoD via chunked", "chunked"))


def _upstream(rows: Rows, size: int) -> float:
    return _median(rows, "upstream FastPreprocessRuntime", size=size)


def _ours(rows: Rows, strategy: str, size: int) -> float:
    return _median(rows, "ours preprocess", strategy, size)


# (target, value of a run, whether the value meets it, how the value is printed)
Target = tuple[str, Callable[[Rows], float], Callable[[float], bool], str]


def _targets(size: int) -> list[Target]:
    speedup = 1.5 if size == 312 else 2.5
    return [
        (f"{size} page-locked median ms (<= 0.2)", lambda r: _ours(r, "pinned", size), lambda v: v <= 0.2, "{:.3f}"),
        (
            f"{size} page-locked vs upstream (>= 4x)",
            lambda r: _upstream(r, size) / _ours(r, "pinned", size),
            lambda v: v >= 4,
            "{:.2f}x",
        ),
        (f"{size} page-locked host CPU ms (<= 0.05)", lambda r: _cpu(r, "pinned", size), lambda v: v <= 0.05, "{:.3f}"),
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", metavar="RUN.json")
    args = parser.parse_args()
    runs = []
    for path in args.runs:
        with open(path) as f:
            runs.append(json.load(f)["rows"])
    print("| target | " + " | ".join(f"run {i + 1}" for i in range(len(runs))) + " | met in |")
    print("|---|" + "---|" * (len(runs) + 1))
    for size in (312, 624):
        for name, value, meets, fmt in _targets(size):
            values = [value(rows) for rows in runs]
            cells = [fmt.format(v) + (" ✓" if meets(v) else " ✗") for v in values]
            print(f"| {name} | " + " | ".join(cells) + f" | {sum(map(meets, values))} of {len(runs)} |")


if __name__ == "__main__":
    main()
