"""The post-processing benchmark runs end to end on the CPU (interpreter, tiny frames), as CI exercises it."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("inference_models")

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
CPU_RUN = pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU run; on a GPU the benchmark itself is the run")


def _run_script(name: str, *args: str) -> int:
    """Run ``benchmarks/<name>`` as a script with ``args``; its exit status."""
    argv = sys.argv
    sys.argv = [name, *args]
    try:
        with pytest.raises(SystemExit) as exit_info:
            runpy.run_path(str(BENCHMARKS / name), run_name="__main__")
    finally:
        sys.argv = argv
    return exit_info.value.code


@CPU_RUN
def test_postprocess_benchmark_runs_and_checks_equality(tmp_path, capsys) -> None:
    out = tmp_path / "pp.json"
    assert _run_script("postprocess.py", "--size", "72x96", "--frames", "1", "--iters", "1", "--json", str(out)) == 0
    report = json.loads(out.read_text())
    for name in ("dense", "rle", "dense after forward", "rle after forward"):
        row = report["rows"][name]
        assert row["identical"] and row["stock_ms"] > 0 and row["fused_ms"] > 0
    assert report["call_counts"]["postprocess"] == 8
    assert "| dense |" in capsys.readouterr().out


@CPU_RUN
def test_host_benchmark_runs(tmp_path) -> None:
    out = tmp_path / "host.json"
    assert _run_script("postprocess_host.py", "--number", "20", "--repeat", "1", "--json", str(out)) == 0
    report = json.loads(out.read_text())
    assert report["detections"] > 0
    assert report["fused_calls"] == 21
    # Timings only as numbers: their order on a shared machine is the benchmark's to report, not a test's.
    assert all(report[name] > 0 for name in ("fused_us", "stand_in_us", "host_model_code_us"))
    parts = report["fused_us"] - report["stand_in_us"] - report["host_model_code_us"]
    assert report["package_overhead_us"] == parts
