"""``python -m inference_triton_preproc.validate`` (video, compare, probe): end to end and on bad input.

The end-to-end tests start real arm processes (each pays ~10 s of imports, then
~0.35 s per frame, more with the Triton interpreter), so they use few frames.
Failures the real model cannot produce on demand (an arm killed mid-line, a
dropped frame, a gate failure, a hang) come from ``fake_arm.py``, swapped in
for the arm process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch

from inference_triton_preproc.validate import arm as arm_module
from inference_triton_preproc.validate import cli
from inference_triton_preproc.validate.compare import EXIT_GATE_FAILED, EXIT_OK, EXIT_USAGE
from inference_triton_preproc.validate.default_model import default_model_path, load_sample_frames, sample_video_path
from inference_triton_preproc.validate.dumps import DumpWriter, build_metadata, read_dump, read_sidecar

FAKE_ARM = Path(__file__).with_name("fake_arm.py")


@pytest.fixture(scope="session")
def default_package() -> Path:
    """The embedded random-weight package, from the shared cache (built once if missing)."""
    return default_model_path("torch")


@pytest.fixture
def fake_arms(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run ``fake_arm.py`` instead of the real arm process."""
    monkeypatch.setattr(
        arm_module, "child_command", lambda request: [sys.executable, str(FAKE_ARM), *request.argv()]
    )


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# --------------------------------------------------------------------------- #
# Real arms
# --------------------------------------------------------------------------- #


@pytest.mark.slow
def test_video_end_to_end_on_the_sample_clip(
    tmp_path: Path, default_package: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    # The bare form: no subcommand, no model (the embedded default).
    rc = cli.main(["--video", str(sample_video_path()), "--max-frames", "3", "--out", str(out), "--level", "model"])
    stdout = capsys.readouterr().out
    assert rc == EXIT_OK, stdout

    dump_a, dump_b = read_dump(out / "a.jsonl"), read_dump(out / "b.jsonl")
    assert sorted(dump_a.frames) == sorted(dump_b.frames) == [0, 1, 2]
    assert dump_a.frames == dump_b.frames  # identical detections, boxes, masks and confidences
    assert sum(len(f.detections) for f in dump_a.frames.values()) > 0
    # frame_id 0 is the clip's first frame: the pipeline's numbering is shifted to OpenCV's.
    first = load_sample_frames(limit=1)[0]
    assert (dump_a.frames[0].height, dump_a.frames[0].width) == first.shape[:2]

    interpret = not torch.cuda.is_available()
    for name, flag in (("a", "0"), ("b", "1")):
        meta = read_sidecar(out / f"{name}.jsonl")
        assert meta is not None and meta["complete"] is True and meta["frames"] == 3
        assert meta["arm"]["name"] == name
        assert meta["arm"]["env"]["RFDETR_USE_TRITON_PREPROC"] == flag
        assert meta["arm"]["env"]["DISABLE_VERSION_CHECK"] == "True"
        assert (meta["arm"]["env"].get("TRITON_INTERPRET") == "1") is interpret
        assert meta["model"]["random_weights"] is True
        assert meta["model"]["ref"] == str(default_package)
        assert meta["model"]["preprocessing"]["flags"]["RFDETR_USE_TRITON_PREPROC"] == flag
        assert meta["source"] == {"reference": str(sample_video_path()), "kind": "file", "max_frames": 3}
        assert meta["model"]["preprocessing"]["plugin_installed"] is (flag == "1")
        # Arm B's frames really went through the kernel (3 frames, one call each).
        assert meta["preprocessing_calls"] == ({"kernel": 3} if flag == "1" else {})
        assert (out / f"arm-{name}.log").is_file()

    result = json.loads((out / "compare.json").read_text())
    assert result["agree_exactly"] is True and result["passed"] is True
    for name in ("report.md", "report.html", "figures/conf_delta.png", "figures/iou.png", "figures/counts.png"):
        assert (out / name).is_file(), name
    assert "RANDOM WEIGHTS" in stdout
    assert "the two arms agree exactly" in stdout
    assert "kernel served 3 calls, 0 fell back" in " ".join(stdout.split())


@pytest.mark.slow
def test_arm_rejected_by_the_plugin_fails_cleanly_and_keeps_arm_a(
    tmp_path: Path, default_package: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    rc = cli.main(
        ["video", "--max-frames", "1", "--out", str(out), "--model-path", str(default_package)]
        + ["--b-env", "RFDETR_USE_TRITON_PREPROC=maybe"]
    )
    assert rc == EXIT_USAGE
    line = _error_line(capsys)
    assert "arm B" in line and "RFDETR_USE_TRITON_PREPROC" in line and str(out / "arm-b.log") in line
    assert "RFDETR_USE_TRITON_PREPROC" in (out / "arm-b.log").read_text()
    kept = read_dump(out / "a.jsonl")
    assert kept.complete is True and sorted(kept.frames) == [0]


def test_unloadable_model_package_fails_in_the_arm(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    package = tmp_path / "not-a-model"
    package.mkdir()
    (package / "model_config.json").write_text('{"model_architecture": "nope", "task_type": "nothing"}')
    out = tmp_path / "out"
    rc = cli.main(["--max-frames", "1", "--out", str(out), "--model-path", str(package), "--level", "model"])
    assert rc == EXIT_USAGE
    line = _error_line(capsys)
    assert line.startswith("error: arm A") and "cannot load model" in line and str(out / "arm-a.log") in line
    assert "Traceback" in (out / "arm-a.log").read_text()  # the details are in the log, not on the terminal
    assert not (out / "b.jsonl").exists()  # arm B is not started after arm A failed


# --------------------------------------------------------------------------- #
# Bad input caught before any arm starts
# --------------------------------------------------------------------------- #


def test_missing_video_through_python_m(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "inference_triton_preproc.validate", "--video", str(tmp_path / "missing.mp4")]
        + ["--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == EXIT_USAGE
    assert proc.stderr.strip() == f"error: video {tmp_path / 'missing.mp4'} does not exist"
    assert not out.exists()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_text("not a video"), "OpenCV does not recognise it as a video"),
        (lambda p: cv2.VideoWriter(str(p), cv2.VideoWriter.fourcc(*"MJPG"), 10, (64, 48)).release(), "zero frames"),
        (lambda p: p.mkdir(), "is not a file"),
    ],
    ids=["not-a-video", "zero-frames", "directory"],
)
def test_undecodable_video(tmp_path: Path, capsys: pytest.CaptureFixture[str], make: Any, message: str) -> None:
    video = tmp_path / "clip.avi"
    make(video)
    assert cli.main(["--video", str(video), "--out", str(tmp_path / "out")]) == EXIT_USAGE
    assert message in _error_line(capsys)


def test_missing_model_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.main(["--model-path", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")])
    assert rc == EXIT_USAGE
    assert _error_line(capsys) == f"error: model path {tmp_path / 'nowhere'} does not exist"


def test_live_source_needs_max_frames(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--video", "rtsp://camera.invalid/stream", "--out", str(tmp_path / "o")]) == EXIT_USAGE
    assert "--max-frames is required" in _error_line(capsys)


def test_bad_env_assignment_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--a-env", "NOEQUALS"]) == EXIT_USAGE
    assert "expected NAME=VALUE" in capsys.readouterr().err


def test_no_arguments_means_video_on_the_embedded_default(
    monkeypatch: pytest.MonkeyPatch, default_package: Path, tmp_path: Path
) -> None:
    captured: list[Any] = []

    def stop(requests: Any, total: Any, timeout_s: Any, console: Any) -> Any:
        captured.extend(requests)
        captured.append(total)
        raise arm_module.ValidateError("stopped by the test")

    monkeypatch.setattr(cli, "run_arms", stop)
    monkeypatch.chdir(tmp_path)  # the default output directory is relative
    assert cli.main([]) == EXIT_USAGE
    request_a, request_b, total = captured
    assert total == cli.DEFAULT_SAMPLE_MAX_FRAMES == 4
    for request, flag in ((request_a, "0"), (request_b, "1")):
        assert request.video == str(sample_video_path())
        assert request.max_frames == cli.DEFAULT_SAMPLE_MAX_FRAMES
        assert request.model == str(default_package)
        assert request.env["RFDETR_USE_TRITON_PREPROC"] == flag
        assert request.level == "adapter"
        assert request.env["ALLOW_INFERENCE_MODELS_DIRECTLY_ACCESS_LOCAL_PACKAGES"] == "True"
        assert request.dump.parent.parent == Path("validate-out")


def test_help_documents_the_arm_environment(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["video", "--help"]) == EXIT_OK
    text = capsys.readouterr().out
    for needle in ("TRITON_INTERPRET=1", "DISABLE_VERSION_CHECK=True", "RFDETR_USE_TRITON_PREPROC=1", "default: 4"):
        assert needle in text


# --------------------------------------------------------------------------- #
# Fake arms: failures of a running arm
# --------------------------------------------------------------------------- #


def _run_fake(tmp_path: Path, *extra: str) -> tuple[int, Path]:
    out = tmp_path / "out"
    rc = cli.main(["--video", str(sample_video_path()), "--max-frames", "4", "--out", str(out), *extra])
    return rc, out


def test_arm_killed_mid_line_keeps_its_partial_dump(
    fake_arms: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out = _run_fake(tmp_path, "--b-env", "FAKE_ARM_KILL_AFTER=2")
    assert rc == EXIT_USAGE
    line = _error_line(capsys)
    assert "arm B" in line and "killed by SIGKILL" in line and "after 2 frame(s)" in line
    assert f"partial dump kept at {out / 'b.jsonl'}" in line and f"log: {out / 'arm-b.log'}" in line
    partial = read_dump(out / "b.jsonl")
    assert sorted(partial.frames) == [0, 1] and partial.truncated_line == 3 and partial.complete is False
    assert read_dump(out / "a.jsonl").complete is True


def test_frames_missing_from_one_arm(fake_arms: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = _run_fake(tmp_path, "--b-env", "FAKE_ARM_SKIP=1")
    assert rc == EXIT_USAGE
    line = _error_line(capsys)
    assert "arm B is missing 1 frame(s)" in line and "first: 1" in line
    assert (out / "report.html").is_file()  # the report is still written, for inspection


def test_arm_without_frames(fake_arms: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _ = _run_fake(tmp_path, "--a-env", "FAKE_ARM_FRAMES=0")
    assert rc == EXIT_USAGE
    assert "arm A (RFDETR_USE_TRITON_PREPROC=0) decoded no frame" in _error_line(capsys)


def test_gate_failure_exits_1_with_crops_from_the_video(
    fake_arms: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out = _run_fake(tmp_path, "--b-env", "FAKE_ARM_CONF_DELTA=0.1")
    assert rc == EXIT_GATE_FAILED
    assert "FAILED" in capsys.readouterr().out
    crops = sorted((out / "crops").glob("*.png"))
    assert crops  # the frames were read back from the clip for the side-by-side crops
    crop = cv2.imread(str(crops[0]))
    assert crop is not None and crop.std() > 0


def test_arm_timeout(fake_arms: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _ = _run_fake(tmp_path, "--a-env", "FAKE_ARM_SLEEP=60", "--arm-timeout", "2")
    assert rc == EXIT_USAGE
    assert "arm A" in (line := _error_line(capsys)) and "timed out after 2 s" in line


def test_video_frame_reader_matches_opencv_order() -> None:
    frames = load_sample_frames(limit=5)
    reader = cli.VideoFrameReader(str(sample_video_path()))
    try:
        for frame_id in (3, 0, 4, 4, 1):  # backwards requests reopen the file
            got = reader(frame_id)
            assert got is not None and np.array_equal(got, frames[frame_id])
        assert reader(10_000) is None and reader(-1) is None
    finally:
        reader.close()


# --------------------------------------------------------------------------- #
# compare and probe subcommands
# --------------------------------------------------------------------------- #


def _write(dump: Any, path: Path) -> Path:
    with DumpWriter(path, build_metadata()) as writer:
        for frame in dump.frames.values():
            writer.write(frame.to_dict())
    return path


def test_compare_subcommand_exit_codes(
    mutated: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = _write(mutated["a"], tmp_path / "a.jsonl")
    b = _write(mutated["b"], tmp_path / "b.jsonl")
    assert cli.main(["compare", str(a), str(a), "--json", str(tmp_path / "same.json")]) == EXIT_OK
    assert json.loads((tmp_path / "same.json").read_text())["agree_exactly"] is True
    assert cli.main(["compare", str(a), str(b)]) == EXIT_GATE_FAILED
    capsys.readouterr()
    assert cli.main(["compare", str(a), str(tmp_path / "missing.jsonl")]) == EXIT_USAGE
    assert _error_line(capsys) == f"error: {tmp_path / 'missing.jsonl'}: no such file"


def test_probe_subcommand_defaults_to_a_few_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    from inference_triton_preproc import probe

    seen: list[list[str]] = []
    monkeypatch.setattr(probe, "main", lambda argv: seen.append(list(argv)) or 0)
    assert cli.main(["probe"]) == 0
    assert cli.main(["probe", "--frames", "2"]) == 0
    assert cli.main(["probe", "--image", "x.png"]) == 0
    assert seen == [["--frames", str(cli.DEFAULT_PROBE_FRAMES)], ["--frames", "2"], ["--image", "x.png"]]


def test_probe_subcommand_runs_the_probe(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "probe.json"
    assert cli.main(["probe", "--frames", "1", "--size", "24", "--json", str(report)]) == 0
    rows = json.loads(report.read_text())["results"]
    modes = ("pil", "cv2", "torch")
    assert {(r["mode"], r["reference"]) for r in rows} == {(m, r) for m in modes for r in modes}
    assert cli.main(["probe", "--video", str(tmp_path / "missing.mp4")]) == EXIT_USAGE
