"""Dumps that are not what they claim, and arms that tested nothing: exit 2 naming the
file, the line and the field (or the arm and its fallbacks), never a score or a hang."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inference_triton_preproc.validate.compare import main as compare_main
from inference_triton_preproc.validate.dumps import encode_mask, rle_length

H, W = 6, 5


def _record(**detection: Any) -> dict[str, Any]:
    mask = np.zeros((H, W), bool)
    mask[1:3, 1:4] = True
    base = {"class_id": 0, "class_name": "a", "confidence": 0.9, "xyxy": [1, 1, 4, 3], "mask": encode_mask(mask)}
    return {"frame_id": 0, "width": W, "height": H, "detections": [{**base, **detection}]}


def _write(path: Path, records: list[dict[str, Any]], meta: dict[str, Any] | None = None) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    if meta is not None:
        path.with_suffix(".meta.json").write_text(json.dumps(meta))
    return path


def _compare(tmp_path: Path, a: Path, b: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = compare_main([str(a), str(b)])
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("confidence", {"confidence": 5.0}),
        ("confidence", {"confidence": -0.1}),
        ("xyxy", {"xyxy": [4, 1, 1, 3]}),
        ("xyxy", {"xyxy": [1, 3, 4, 1]}),
        ("class_id", {"class_id": -1}),
        ("counts", {"mask": {"size": [H, W], "counts": ""}}),
        ("counts", {"mask": {"size": [H, W], "counts": "garbage text!"}}),
        ("counts", {"mask": {"size": [H, W], "counts": "1"}}),
    ],
)
def test_out_of_range_fields_exit_2_naming_file_line_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], field: str, bad: dict[str, Any]
) -> None:
    good = _write(tmp_path / "a.jsonl", [_record()])
    broken = _write(tmp_path / "b.jsonl", [_record(**bad)])
    code, err = _compare(tmp_path, good, broken, capsys)
    assert code == 2 and f"{broken}:1:" in err and field in err


def test_negative_frame_id_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = _write(tmp_path / "a.jsonl", [_record()])
    broken = _write(tmp_path / "b.jsonl", [{**_record(), "frame_id": -1}])
    code, err = _compare(tmp_path, good, broken, capsys)
    assert code == 2 and f"{broken}:1:" in err and "frame_id" in err


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 40), st.integers(1, 8), st.integers(1, 8), st.data())
def test_every_prefix_and_mutation_of_counts_is_measured_without_decoding(
    cut: int, h: int, w: int, data: st.DataObject
) -> None:
    """rle_length is exact on valid masks and rejects every truncation that would
    send pycocotools past the end of the text."""
    mask = np.array(data.draw(st.lists(st.booleans(), min_size=h * w, max_size=h * w))).reshape(h, w)
    counts = encode_mask(mask)["counts"]
    assert rle_length(counts) == h * w
    prefix = counts[: min(cut, len(counts) - 1)]
    assert rle_length(prefix) != h * w or prefix == counts


def test_truncated_counts_do_not_hang(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The last character of this mask's counts continues the run, so pycocotools would read on forever.
    mask = np.zeros((H, W), bool)
    mask[0, 0] = True
    counts = encode_mask(mask)["counts"] + "a"
    broken = _write(tmp_path / "b.jsonl", [_record(mask={"size": [H, W], "counts": counts})])
    code, err = _compare(tmp_path, _write(tmp_path / "a.jsonl", [_record()]), broken, capsys)
    assert code == 2 and "counts" in err


@pytest.mark.parametrize("empty", ["empty", "devnull"])
def test_an_empty_dump_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], empty: str) -> None:
    real = _write(tmp_path / "a.jsonl", [_record()])
    nothing = _write(tmp_path / "e.jsonl", []) if empty == "empty" else Path("/dev/null")
    for a, b in ((nothing, nothing), (nothing, real), (real, nothing)):
        code, err = _compare(tmp_path, a, b, capsys)
        assert code == 2 and "no frame" in err and len(err.strip().splitlines()) == 1


def _arm_meta(flag: str, calls: dict[str, int] | None) -> dict[str, Any]:
    return {
        "arm": {"name": "b", "label": "arm B"},
        "model": {"preprocessing": {"flags": {"RFDETR_USE_TRITON_PREPROC": flag}}},
        "preprocessing_calls": calls,
    }


@pytest.mark.parametrize("calls", [{}, None, {"kernel-error": 3}, {"kernel": 0, "no-mode": 2}])
def test_an_arm_whose_switch_served_no_call_exits_2_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], calls: dict[str, int] | None
) -> None:
    a = _write(tmp_path / "a.jsonl", [_record()], _arm_meta("0", {}))
    b = _write(tmp_path / "b.jsonl", [_record()], _arm_meta("1", calls))
    code, err = _compare(tmp_path, a, b, capsys)
    assert code == 2 and "arm B" in err and "RFDETR_USE_TRITON_PREPROC" in err
    for reason in (calls or {}):
        if reason != "kernel":
            assert reason in err


def test_an_arm_that_asked_for_the_gc_freeze_but_never_froze_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flags = {"RFDETR_TRITON_FULLPOSTPROC": "1", "RFDETR_TRITON_GC_FREEZE": "1"}
    a = _write(tmp_path / "a.jsonl", [_record()], _arm_meta("0", {}))
    for calls, code_wanted in (({"postprocess": 2, "adapter": 2}, 2), ({"postprocess": 2, "adapter": 2, "gc-freeze": 1}, 0)):
        meta = {**_arm_meta("0", calls), "model": {"preprocessing": {"flags": flags}}}
        b = _write(tmp_path / "b.jsonl", [_record()], meta)
        code, err = _compare(tmp_path, a, b, capsys)
        assert code == code_wanted, err
        if code_wanted:
            assert "RFDETR_TRITON_GC_FREEZE" in err and "arm B" in err


def test_an_arm_that_served_calls_compares(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = _write(tmp_path / "a.jsonl", [_record()], _arm_meta("0", {}))
    b = _write(tmp_path / "b.jsonl", [_record()], _arm_meta("1", {"kernel": 1}))
    assert _compare(tmp_path, a, b, capsys)[0] == 0
