"""Render a bench JSON (``python -m inference_triton_preproc.bench [pipeline] --json``) as a Markdown table.

    python benchmarks/table.py benchmarks/h100_bench_1080p_pil_targets.json [--kernel-only]
    python benchmarks/table.py benchmarks/h200_bench_pipeline.json      (a ``bench pipeline`` run)
"""

from __future__ import annotations

import argparse
import json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("json")
    parser.add_argument("--kernel-only", action="store_true", help="only the kernel rows, one column per size")
    args = parser.parse_args()
    report = json.load(open(args.json))
    if report.get("kind") == "pipeline":
        from inference_triton_preproc.bench_pipeline import markdown_table

        print(markdown_table(report))
        return
    rows = report["rows"]
    print(f"{report['device']['name']}, source {report['config']['source']}, torch {report['versions']['torch']}, triton {report['versions']['triton']}")
    print()
    if args.kernel_only:
        sizes = sorted({r["size"] for r in rows if r["path"].startswith("floor kernel")})
        print("| kernel | " + " | ".join(str(s) for s in sizes) + " |")
        print("|---|" + "---|" * len(sizes))
        for path in ("floor kernel", "floor kernel CUDA graph", "floor kernel back-to-back"):
            cells = {r["size"]: r["median_ms"] * 1000 for r in rows if r["path"] == path}
            print(f"| {path[6:]} (µs) | " + " | ".join(f"{cells[s]:.1f}" for s in sizes) + " |")
        kinds = {r["size"]: r["note"].split(" kernel")[0] for r in rows if r["path"] == "floor kernel"}
        print("| kernel used | " + " | ".join(kinds[s] for s in sizes) + " |")
        return
    print("| path | strategy | size | median ms | p99 ms | host CPU ms | max abs diff |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if r["status"] != "ok":
            continue
        cpu = "-" if r["cpu_ms"] is None else f"{r['cpu_ms']:.3f}"
        diff = "-" if r["max_abs_diff"] is None else f"{r['max_abs_diff']:.2g}"
        print(f"| {r['path']} | {r['strategy'] or ''} | {r['size'] or ''} | {r['median_ms']:.3f} | {r['p99_ms']:.3f} | {cpu} | {diff} |")


if __name__ == "__main__":
    main()
