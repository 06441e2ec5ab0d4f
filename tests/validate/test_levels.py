"""``validate video`` at the adapter and workflow levels, through the real InferencePipeline, and its speed fields.

Each level runs both arms as real subprocesses over two frames of the sample clip
(one warm-up frame, one timed). A module-scoped run per level feeds several tests.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from inference_triton_preproc.validate import cli
from inference_triton_preproc.validate.arm import LOCAL_PACKAGE_ENV
from inference_triton_preproc.validate.compare import EXIT_OK, EXIT_USAGE, compare
from inference_triton_preproc.validate.default_model import default_model_path, sample_video_path
from inference_triton_preproc.validate.dumps import Dump, read_dump

FRAMES = 2


def _run_level(out: Path, level: str) -> tuple[int, str]:
    import contextlib
    import io

    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        rc = cli.main(
            ["video", "--level", level, "--video", str(sample_video_path()), "--max-frames", str(FRAMES), "--out", str(out)]
        )
    return rc, stdout.getvalue()


@pytest.fixture(scope="module", params=["adapter", "workflow"])
def level_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    default_model_path("torch")  # built once, outside the arms' time
    out = tmp_path_factory.mktemp(f"level-{request.param}")
    rc, stdout = _run_level(out, request.param)
    return {"level": request.param, "out": out, "rc": rc, "stdout": stdout}


@pytest.mark.slow
def test_level_end_to_end_agrees_and_records_speed(level_run: dict[str, Any]) -> None:
    out, level = level_run["out"], level_run["level"]
    assert level_run["rc"] == EXIT_OK, level_run["stdout"]
    dump_a, dump_b = read_dump(out / "a.jsonl"), read_dump(out / "b.jsonl")
    assert sorted(dump_a.frames) == sorted(dump_b.frames) == list(range(FRAMES))
    assert dump_a.frames == dump_b.frames  # what on_prediction received is identical, polygons included
    detections = [d for f in dump_a.frames.values() for d in f.detections]
    assert detections and all(d.mask is not None for d in detections)
    # The adapter sends polygons (and supervision fills the masks from them); workflows hand over sv.Detections.
    assert all((d.polygon is not None and len(d.polygon) >= 3) is (level == "adapter") for d in detections)

    for name, flag in (("a", "0"), ("b", "1")):
        meta = dump_a.meta if name == "a" else dump_b.meta
        assert meta is not None and meta["level"] == level and meta["complete"] is True
        for variable, value in LOCAL_PACKAGE_ENV.items():  # what inference needs for a local package
            assert meta["arm"]["env"][variable] == value
            assert meta["model"]["preprocessing"]["flags"][variable] == value
        assert meta["model"]["class"] == "RFDetrForInstanceSegmentationTorch"
        assert meta["preprocessing_calls"] == ({"kernel": FRAMES} if flag == "1" else {})
        speed = meta["speed"]
        assert speed["level"] == level and speed["frames"] == FRAMES and len(speed["latency_ms"]) == FRAMES
        for key in ("fps", "latency_ms_median", "latency_ms_p99", "cpu_ms_per_frame"):
            assert speed[key] > 0, key
        for stage in ("pre_process_ms", "forward_ms", "post_process_ms", "response_ms"):
            assert speed["stages"][stage] > 0, stage
        assert speed["stages"]["calls"] == FRAMES

    result = json.loads((out / "compare.json").read_text())
    assert result["agree_exactly"] is True
    if level == "adapter":
        assert result["polygons_identical"] == result["matched"] > 0 and result["all_polygons_identical"] is True
    else:
        assert result["polygons_identical"] is None
    metrics = {m["key"]: m for m in result["speed"]["metrics"]}
    assert metrics["fps"]["a"]["median"] > 0 and metrics["fps"]["ratio"] > 0
    assert len(result["speed"]["latency_ms"]["b"]) == FRAMES
    assert (out / "figures" / "latency.png").is_file()
    report = (out / "report.md").read_text()
    assert "Speed, A beside B" in report and "B / A" in report and "latency.png" in report
    stdout = " ".join(level_run["stdout"].split())
    assert f"Level: {level}" in stdout and "Speed, A beside B" in stdout and "Report:" in stdout
    # Libraries' messages go to the arm logs, not the terminal.
    assert "DINOv2" not in stdout and "DINOv2" in (out / "arm-a.log").read_text()


@pytest.mark.slow
def test_polygons_moved_by_a_known_amount_are_reported_exactly(level_run: dict[str, Any]) -> None:
    if level_run["level"] != "adapter":
        pytest.skip("polygons come from the adapter level")
    a = read_dump(level_run["out"] / "a.jsonl")
    moves = {0: (3.0, 4.0), 1: (-6.0, 8.0)}  # 5 and 10 pixels
    frame = a.frames[0]
    assert len(frame.detections) >= 2
    dets = list(frame.detections)
    for k, (dx, dy) in moves.items():
        dets[k] = dataclasses.replace(dets[k], polygon=tuple((x + dx, y + dy) for x, y in dets[k].polygon))
    b = Dump(frames={**a.frames, 0: dataclasses.replace(frame, detections=tuple(dets))})

    result = compare(a, b)
    matched = result["matched"]
    assert result["polygons_identical"] == matched - 2 and result["all_polygons_identical"] is False
    assert result["polygons"]["point_count_differs"] == 0
    assert result["polygons"]["shift_px"]["max"] == 10.0
    assert result["polygons"]["shift_px"]["mean"] == 15.0 / matched
    # Only the polygons moved: boxes, masks and confidences still agree, exact agreement does not.
    assert result["boxes_identical"] == result["masks_identical"] == matched
    assert result["agree_exactly"] is False


@pytest.mark.slow
def test_unknown_workflow_model_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    rc = cli.main(["--level", "workflow", "--model-id", "no-such-project/999", "--max-frames", "1", "--out", str(out)])
    assert rc == EXIT_USAGE
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "arm A" in lines[0] and "workflow pipeline" in lines[0] and str(out / "arm-a.log") in lines[0]
    kept = read_dump(out / "a.jsonl")  # the partial (empty) dump and its sidecar are kept
    assert kept.frames == {} and kept.complete is False


@pytest.mark.slow
def test_workflow_pipeline_that_dies_keeps_arm_a(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    rc = cli.main(
        ["--level", "workflow", "--max-frames", "1", "--out", str(out), "--b-env", "RFDETR_USE_TRITON_PREPROC=maybe"]
    )
    assert rc == EXIT_USAGE
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "arm B" in lines[0] and str(out / "arm-b.log") in lines[0]
    kept = read_dump(out / "a.jsonl")
    assert kept.complete is True and sorted(kept.frames) == [0]


@pytest.mark.parametrize("level", ["model", "adapter", "workflow"])
def test_missing_video_exits_2_at_every_level(level: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.main(["--level", level, "--video", str(tmp_path / "missing.mp4"), "--out", str(tmp_path / "out")])
    assert rc == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "does not exist" in err


def test_repeat_alternates_the_arms(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    captured: list[Any] = []

    def stop(requests: Any, total: Any, timeout_s: Any, console: Any) -> Any:
        captured.extend(requests)
        raise cli.ValidateError("stopped by the test")

    monkeypatch.setattr(cli, "run_arms", stop)
    assert cli.main(["--repeat", "3", "--level", "workflow", "--out", str(tmp_path)]) == EXIT_USAGE
    assert [r.name for r in captured] == ["a", "b", "a-2", "b-2", "a-3", "b-3"]
    assert [r.env["RFDETR_USE_TRITON_PREPROC"] for r in captured] == ["0", "1"] * 3
    assert {r.level for r in captured} == {"workflow"}


@pytest.mark.slow
def test_a_deferred_dump_holds_what_the_inline_dump_holds(level_run: dict[str, Any], tmp_path: Path) -> None:
    # bench pipeline defers the dumping until the pipeline has stopped; the records must not change.
    from inference_triton_preproc.validate.arm import ArmRequest, arm_env, host_env, run_arm

    level, out = level_run["level"], level_run["out"]
    assert level_run["rc"] == EXIT_OK, level_run["stdout"]
    inline = read_dump(out / "a.jsonl")
    model = str(default_model_path("torch"))
    flags = {"RFDETR_USE_TRITON_PREPROC": "0", "RFDETR_TRITON_FULLPOSTPROC": "0"}
    request = ArmRequest(
        name="deferred", label="deferred", env=arm_env({**host_env(level, model), **flags}, interpret=True),
        model=model, dump=tmp_path / "deferred.jsonl", log=tmp_path / "deferred.log", confidence=cli.DEFAULT_CONFIDENCE,
        video=str(sample_video_path()), max_frames=FRAMES, level=level, defer_dump=True,
    )  # fmt: skip
    result = run_arm(request)
    assert result.ok and result.frames == FRAMES, result.failure_message()
    deferred = read_dump(request.dump)
    assert deferred.frames == inline.frames and sum(len(f.detections) for f in deferred.frames.values()) > 0
