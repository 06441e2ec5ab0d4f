from __future__ import annotations

import base64
import io
import logging
import re
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from rich.console import Console

from inference_triton_preproc.validate.compare import compare
from inference_triton_preproc.validate.dumps import Dump, DumpWriter, FrameRecord, build_metadata, read_dump
from inference_triton_preproc.validate.report import AGREE_EXACTLY, print_summary, write_report


def _write(path: Path, d: Dump, random_weights: bool = False) -> Path:
    with DumpWriter(path, build_metadata(model={"id": "rfdetr-seg-test", "random_weights": random_weights})) as w:
        for frame in d.frames.values():
            w.write(frame.to_dict())
    return path


def _report(out: Path, a: Path, b: Path, **kwargs: Any):
    result = compare(read_dump(a), read_dump(b))
    return result, write_report(out, result, a, b, **kwargs)


def _embedded_pngs(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)]


def test_report_of_mutated_dumps_with_crops(tmp_path: Path, mutated: dict) -> None:
    a = _write(tmp_path / "A.jsonl", mutated["a"], random_weights=True)
    b = _write(tmp_path / "B.jsonl", mutated["b"])
    images = mutated["images"]
    result, files = _report(tmp_path / "report", a, b, frames_source=images.get)

    for path in (files.json, files.markdown, files.html, *files.figures, *files.crops):
        assert path.is_file() and path.stat().st_size > 0, path
    assert len(files.figures) == 3
    # Every worst entry is in a frame the source knows (frame 10 is a copy of frame 0's size).
    assert len(files.crops) == len([w for w in result["worst"] if w["frame_id"] in images])

    html = files.html.read_text(encoding="utf-8")
    pngs = _embedded_pngs(html)
    assert len(pngs) == len(files.figures) + len(files.crops)
    for png in pngs:
        image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
        assert image is not None and image.ndim == 3
    assert '<img src="figures/' not in html  # self-contained

    md = files.markdown.read_text(encoding="utf-8")
    for rel in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert (files.markdown.parent / rel).is_file(), rel
    for text in (md, html):
        assert "RANDOM WEIGHTS" in text and "Arm A" in text and "Arm B ran" not in text
        assert "FAILED" in text and "matched_fraction" in text
        assert AGREE_EXACTLY not in text
        assert "frame(s) only in dump B" in text

    crop = cv2.imread(str(files.crops[0]))
    assert crop.shape[1] > crop.shape[0]  # two halves side by side


def test_report_says_arms_agree_exactly(tmp_path: Path, realistic: dict) -> None:
    a = _write(tmp_path / "A.jsonl", realistic["dump"])
    b = _write(tmp_path / "B.jsonl", realistic["dump"])
    _, files = _report(tmp_path / "report", a, b, frames_source=realistic["images"].get)
    assert files.crops == ()
    for path in (files.markdown, files.html):
        text = path.read_text(encoding="utf-8")
        assert AGREE_EXACTLY in text and "PASSED" in text
        assert "RANDOM WEIGHTS" not in text
        assert "No disagreements to show" in text


def test_report_of_dumps_without_detections(tmp_path: Path) -> None:
    a = _write(tmp_path / "A.jsonl", Dump(frames={0: FrameRecord(0, 16, 16)}))
    b = _write(tmp_path / "B.jsonl", Dump(frames={0: FrameRecord(0, 16, 16)}))
    _, files = _report(tmp_path / "report", a, b)
    html = files.html.read_text(encoding="utf-8")
    assert len(_embedded_pngs(html)) == 3
    assert "vacuously" in html


def test_crops_are_skipped_when_frames_are_unavailable(
    tmp_path: Path, mutated: dict, caplog: pytest.LogCaptureFixture
) -> None:
    a = _write(tmp_path / "A.jsonl", mutated["a"])
    b = _write(tmp_path / "B.jsonl", mutated["b"])

    def broken(frame_id: int) -> np.ndarray | None:
        if frame_id == 0:
            raise OSError("video ended")
        if frame_id == 1:
            return np.zeros((7, 7, 3), np.uint8)  # wrong size
        return None

    with caplog.at_level(logging.WARNING):
        _, files = _report(tmp_path / "report", a, b, frames_source=broken)
    assert files.crops == ()
    assert "video ended" in caplog.text and "does not match" in caplog.text
    assert "No crops" in files.markdown.read_text(encoding="utf-8")

    _, no_source = _report(tmp_path / "report2", a, b)
    assert no_source.crops == () and no_source.html.is_file()


def test_print_summary(mutated: dict) -> None:
    buf = io.StringIO()
    result = compare(mutated["a"], mutated["b"])
    print_summary(result, Console(file=buf, width=120, color_system=None))
    out = buf.getvalue()
    assert "FAIL" in out and "matched_fraction" in out and f"(top 10 of {len(result['worst'])})" in out

    buf = io.StringIO()
    print_summary(compare(mutated["a"], mutated["a"]), Console(file=buf, width=120, color_system=None))
    assert AGREE_EXACTLY in buf.getvalue()


def test_report_refuses_a_result_from_other_dumps(tmp_path: Path, mutated: dict) -> None:
    a = _write(tmp_path / "A.jsonl", mutated["a"])
    b = _write(tmp_path / "B.jsonl", mutated["b"])
    with pytest.raises(ValueError, match="not computed from"):
        write_report(tmp_path / "report", compare(mutated["a"], mutated["a"]), a, b)
