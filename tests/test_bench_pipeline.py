"""``bench pipeline``: the real InferencePipeline per switch configuration on a tiny clip, and its bookkeeping."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import pytest

from inference_triton_preproc import bench, bench_pipeline
from inference_triton_preproc.validate.arm import ArmResult
from inference_triton_preproc.validate.default_model import load_sample_frames


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three real frames of the sample clip at 128x96."""
    path = tmp_path_factory.mktemp("clip") / "tiny.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (128, 96))
    for frame in load_sample_frames(limit=3):
        writer.write(cv2.resize(frame, (128, 96), interpolation=cv2.INTER_AREA))
    writer.release()
    return path


@pytest.mark.slow
def test_bench_pipeline_on_a_tiny_clip(tiny_clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "pipeline.json"
    argv = ["pipeline", "--video", str(tiny_clip), "--frames", "2", "--warmup-frames", "1", "--repeat", "1"]
    argv += ["--configs", "off,preproc,postproc", "--forward-iters", "1", "--json", str(path), "--out", str(tmp_path / "runs")]
    assert bench.main(argv) == 0
    report = json.loads(path.read_text())
    assert report["kind"] == "pipeline" and report["config"]["level"] == "adapter"
    assert [c["name"] for c in report["configs"]] == ["off", "preproc", "postproc"]
    calls = {c["name"]: c["runs"][0]["plugin_calls"] for c in report["configs"]}
    assert calls["off"] == {} and calls["preproc"] == {"kernel": 2}
    assert calls["postproc"].get("postprocess", 0) + sum(v for k, v in calls["postproc"].items() if k.startswith("postprocess:")) == 2
    for entry in report["configs"]:
        summary = entry["summary"]
        assert summary["runs"] == 1
        for key in ("fps", "latency_ms_median", "latency_ms_p99", "cpu_ms_per_frame", "stages.forward_ms"):
            assert summary[key]["median"] > 0, (entry["name"], key)
        assert entry["runs"][0]["floor"]["forward_ms_median"] > 0  # forward alone, same process
        assert summary["gc_ms_per_frame"]["median"] >= 0 and entry["runs"][0]["gc_full_collections"] >= 0
        assert entry["agrees_with_off"] is True
    table = bench_pipeline.markdown_table(report)
    assert len(table.splitlines()) == 4 + 3 and "forward alone ms" in table
    assert "| off |" in capsys.readouterr().out


def _fake_runs(monkeypatch: pytest.MonkeyPatch, fail_at: str | None = None) -> list[str]:
    order: list[str] = []

    def run_arm(request: Any, on_event: Any = None, timeout_s: Any = None) -> ArmResult:
        order.append(request.name)
        request.dump.parent.mkdir(parents=True, exist_ok=True)
        result = ArmResult(request, returncode=0, frames=request.max_frames)
        result.speed = {"fps": 10.0 + len(order), "latency_ms": [1.0], "latency_ms_median": 1.0}
        if request.name == fail_at:
            result.returncode, result.error, result.frames = 1, "boom", 0
        return result

    monkeypatch.setattr(bench_pipeline, "run_arm", run_arm)
    monkeypatch.setattr(bench_pipeline, "_agrees", lambda a, b: True)
    return order


def test_configurations_alternate_and_spread_is_kept(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    order = _fake_runs(monkeypatch)
    path = tmp_path / "p.json"
    argv = ["--configs", "off,both", "--repeat", "3", "--frames", "2", "--json", str(path), "--out", str(tmp_path)]
    assert bench_pipeline.main(argv) == 0
    assert order == ["off-1", "both-1", "off-2", "both-2", "off-3", "both-3"]
    report = json.loads(path.read_text())
    fps = report["configs"][1]["summary"]["fps"]
    assert fps["values"] == [12.0, 14.0, 16.0] and (fps["median"], fps["min"], fps["max"]) == (14.0, 12.0, 16.0)
    assert report["configs"][1]["env"] == {"RFDETR_USE_TRITON_PREPROC": "1", "RFDETR_TRITON_FULLPOSTPROC": "1"}


def test_a_failed_run_exits_2_and_keeps_the_partial_json(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _fake_runs(monkeypatch, fail_at="preproc-1")
    path = tmp_path / "p.json"
    assert bench_pipeline.main(["--configs", "off,preproc", "--repeat", "2", "--json", str(path), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "preproc run 1 failed" in err and "boom" in err
    report = json.loads(path.read_text())
    assert len(report["configs"][0]["runs"]) == 1 and report["configs"][1]["runs"] == []


def test_the_json_on_disk_holds_every_finished_run_while_the_bench_goes_on(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A bench killed part way (e.g. by a time limit) never reaches its final write.
    order = _fake_runs(monkeypatch)
    path = tmp_path / "p.json"
    seen: list[tuple[int, bool]] = []
    inner = bench_pipeline.run_arm

    def run_arm(request: Any, on_event: Any = None, timeout_s: Any = None) -> ArmResult:
        if path.exists():
            report = json.loads(path.read_text())
            seen.append((sum(len(entry["runs"]) for entry in report["configs"]), report["complete"]))
        return inner(request, on_event, timeout_s)

    monkeypatch.setattr(bench_pipeline, "run_arm", run_arm)
    argv = ["--configs", "off,both", "--repeat", "2", "--frames", "2", "--json", str(path), "--out", str(tmp_path)]
    assert bench_pipeline.main(argv) == 0
    assert len(order) == 4 and seen == [(1, False), (2, False), (3, False)]
    assert json.loads(path.read_text())["complete"] is True


@pytest.mark.parametrize(
    "argv, message",
    [(["--video", "no-such-clip.mp4"], "does not exist"), (["--configs", "off,turbo"], "expected distinct names")],
)
def test_bad_input_exits_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main(["pipeline", *argv]) == 2
    assert message in capsys.readouterr().err
