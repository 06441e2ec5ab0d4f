"""The bench CLI on tiny sizes: every path runs, is exact, and lands in the JSON report."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from inference_triton_preproc.bench import Row, format_table, load_frames, main
from inference_triton_preproc.runtime import STRATEGIES


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    path = tmp_path_factory.mktemp("bench") / "bench.json"
    argv = ["--source", "24x32", "--sizes", "8", "--modes", "pil", "--batch", "1,2"]
    argv += ["--iters", "1", "--warmup", "0", "--baseline-iters", "1", "--distinct", "2", "--json", str(path)]
    assert main(argv) == 0
    return json.loads(path.read_text())


def test_report_has_its_sections(report) -> None:
    assert report["schema"] == 1
    assert {"type", "name"} <= set(report["device"])
    assert {"python", "torch", "triton", "numpy", "opencv", "pillow"} <= set(report["versions"])
    assert report["config"]["source_hw"] == [24, 32]
    assert report["config"]["sizes"] == [8] and report["config"]["batches"] == [1, 2]
    fields = {f.name for f in dataclasses.fields(Row)}
    assert report["rows"] and all(set(row) == fields for row in report["rows"])


def test_every_path_is_timed_and_exact(report) -> None:
    rows = report["rows"]
    cpu = report["device"]["type"] == "cpu"
    for batch in (1, 2):
        ours = {r["strategy"]: r for r in rows if r["kind"] == "ours" and r["batch"] == batch}
        assert set(ours) == {"auto", *STRATEGIES}
        baseline = [r for r in rows if r["kind"] in ("stock", "reference") and r["batch"] == batch]
        kernel = [r for r in rows if r["path"] == "floor kernel" and r["batch"] == batch]
        assert len(baseline) == 1 and len(kernel) == 1
        for row in [*ours.values(), *baseline, *kernel]:
            assert row["status"] == "ok"
            assert row["median_ms"] > 0 and row["p99_ms"] >= row["median_ms"]
            assert row["max_abs_diff"] == 0
        assert all(r["cpu_ms"] > 0 for r in [*ours.values(), *baseline])
    cuda_only = [r for r in rows if r["path"].startswith(("upstream", "floor HtoD", "floor kernel CUDA"))]
    assert cuda_only
    if cpu:
        assert all(r["status"] == "skipped" and "CUDA only" in r["note"] for r in cuda_only)
        assert any("CUDA only" in note for note in report["notes"])


def test_table_lists_every_row(report) -> None:
    table = format_table(report)
    assert len(table.splitlines()) == len(report["rows"]) + 2
    assert "max |diff|" in table.splitlines()[0]


def test_frames_are_distinct_real_footage() -> None:
    frames, description = load_frames("24x32", 4)
    assert "24x32" in description
    assert all(f.shape == (24, 32, 3) and f.dtype == np.uint8 for f in frames)
    assert len({f.tobytes() for f in frames}) == 4


@pytest.mark.parametrize("source", ["0x32", "missing-clip.mp4"])
def test_bad_source_exits_2(source, capsys) -> None:
    assert main(["--source", source, "--sizes", "8", "--iters", "1"]) == 2
    assert "error:" in capsys.readouterr().err


def test_bad_lists_are_rejected_by_the_parser() -> None:
    with pytest.raises(SystemExit):
        main(["--sizes", "0"])
    with pytest.raises(SystemExit):
        main(["--modes", "bicubic"])
