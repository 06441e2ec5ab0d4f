"""The workflow pipeline end to end, switches off vs on in fresh processes: identical ``sv.Detections``.

Runs ``benchmarks/workflow_conversion.py`` (a real ``InferencePipeline.init_with_workflow``
with the instance-segmentation block on the embedded RF-DETR seg package): its ``off``
and ``on`` arms must give equal ``sv.Detections`` for every frame (fresh uuids by form),
its ``conversion`` arm the stock conversion's result on the same responses, and the
report must land in the JSON. On CPU over 3 frames of the bundled clip at its own size;
on a GPU over 1080p frames made from it.
"""

from __future__ import annotations

import json
import runpy
from pathlib import Path
from typing import Any

import pytest

BENCHMARK = Path(__file__).resolve().parent.parent / "benchmarks" / "workflow_conversion.py"



def _run(tmp_path: Path, size: str, frames: int, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    main = runpy.run_path(str(BENCHMARK))["main"]
    out = tmp_path / "report.json"
    rc = main(["--size", size, "--frames", str(frames), "--warmup", "1", "--runs", "1", "--json", str(out)])
    report = json.loads(out.read_text())
    assert rc == 0, report["parity"]["differences"] + report["conversion"]["differences"]
    capsys.readouterr()
    assert main(["--table", str(out)]) == 0
    table = capsys.readouterr().out
    assert "| arms identical (every frame, every field) | yes |" in table
    return report


def _check(report: dict[str, Any], frames: int, width: int, height: int) -> None:
    summary = report["summary"]
    assert report["parity"] == {**report["parity"], "frames": frames, "identical": True, "differences": []}
    assert report["parity"]["detections"] > 0
    assert summary["arms_identical"] and summary["conversion_identical"]
    assert report["config"]["size"] == [width, height]
    off, on = report["runs"]
    assert (off["arm"], on["arm"]) == ("off", "on")
    assert not any(key.startswith("workflows") for key in off["calls"])
    assert on["calls"].get("workflows") == frames, on["calls"]
    assert not any(key.startswith("workflows:") for key in on["calls"])
    assert off["detections_per_frame"] == on["detections_per_frame"]
    conversion = report["conversion"]
    # Every frame's masks came from the adapter's own polygons, none from dumped points.
    assert on["dumped_point_reads"] == conversion["dumped_point_reads"] == 0
    # The pipeline's managers keep the responses private: after the first frame (before it
    # the block's model is not loaded) no response made Point objects.
    assert on["point_less_frames"] == conversion["point_less_frames"] == summary["point_less_frames"] == frames - 1
    assert off["point_less_frames"] == 0
    assert len(conversion["stock_conversion_ms"]) == len(conversion["conversion_ms"]) == frames - 1
    for key in ("fps_off", "fps_on", "fps_ratio", "conversion_ms_stock", "conversion_ms_ours", "conversion_ratio", "fill_floor_ms"):
        assert summary[key] > 0, key


@pytest.mark.slow
def test_workflow_arms_identical_on_the_sample_clip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _check(_run(tmp_path, "768x576", 3, capsys), frames=3, width=768, height=576)


@pytest.mark.gpu
def test_workflow_arms_identical_at_1080p(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _check(_run(tmp_path, "1920x1080", 6, capsys), frames=6, width=1920, height=1080)
