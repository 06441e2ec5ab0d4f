"""benchmarks/adapter_response.py runs tiny on the CPU and writes its JSON (a smoke test, not a timing)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).parent.parent


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU smoke run; the GPU run is the benchmark itself")
def test_adapter_response_benchmark_runs_tiny_on_cpu(tmp_path) -> None:
    out = tmp_path / "adapter_response.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for name in ("RFDETR_USE_TRITON_PREPROC", "RFDETR_TRITON_FULLPOSTPROC"):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "adapter_response.py"), "--device", "cpu", "--size", "native",
         "--frames", "1", "--warmup", "0", "--arms", "stock,ours", "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(out.read_text(encoding="utf-8"))
    assert set(result["arms"]) == {"stock", "ours"} and result["frames"] == 1
    ours = result["arms"]["ours"]
    assert ours["responses_equal_stock"] is True and ours["call_counts"] == {"adapter": 1}
    for stage in ("pre_process", "forward", "post_process", "response_building", "infer"):
        assert ours[stage]["median_ms"] >= 0
    assert result["construction_floor"]["median_ms"] > 0 and result["construction_floor_vs_stock"] > 0
    assert result["tracing_floor"]["median_ms"] > 0
    both = result["construction_and_tracing_floor"]["median_ms"]
    assert both > result["construction_floor"]["median_ms"] and result["construction_and_tracing_floor_vs_stock"] > 0
