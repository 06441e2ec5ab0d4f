from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inference_triton_preproc.validate.compare import (
    CompareInputError,
    box_iou_matrix,
    compare,
    main,
    pair_detections,
)
from inference_triton_preproc.validate.dumps import (
    DetectionRecord,
    Dump,
    DumpWriter,
    FrameRecord,
    build_metadata,
    encode_mask,
    read_dump,
)


def det(class_id: int, confidence: float, xyxy: tuple[float, ...], mask: np.ndarray | None = None) -> DetectionRecord:
    return DetectionRecord(
        class_id=class_id,
        class_name=f"class{class_id}",
        confidence=confidence,
        xyxy=tuple(float(v) for v in xyxy),  # type: ignore[arg-type]
        mask=None if mask is None else encode_mask(mask),
    )


def dump(frames: dict[int, list[DetectionRecord]], width: int = 16, height: int = 16) -> Dump:
    return Dump(frames={fid: FrameRecord(fid, width, height, tuple(d)) for fid, d in frames.items()})


def strict_json(result: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(result, allow_nan=False))


# --- box IoU -----------------------------------------------------------------


def test_box_iou_matrix_hand_values() -> None:
    a = np.array([[0, 0, 2, 1], [0, 0, 4, 4], [5, 5, 5, 5], [3, 3, 1, 1]])
    b = np.array([[0, 0, 1, 1], [2, 2, 6, 6], [5, 5, 5, 5]])
    ious = box_iou_matrix(a, b)
    assert ious.shape == (4, 3) and ious.dtype == np.float64
    assert ious[0, 0] == 0.5
    assert ious[1, 1] == pytest.approx(4 / 28)
    assert ious[1, 0] == 1 / 16
    assert ious[2, 2] == 1.0  # identical zero-area boxes
    assert ious[2, 0] == 0.0
    assert np.all(ious[3] == 0.0)  # inverted corners have no area
    assert box_iou_matrix(np.zeros((0, 4)), b).shape == (0, 3)


# --- pairing rules -------------------------------------------------------------


def test_iou_exactly_at_threshold_pairs() -> None:
    a = [det(0, 0.9, (0, 0, 2, 1))]
    b = [det(0, 0.9, (0, 0, 1, 1))]  # IoU 1/2, exactly representable
    assert pair_detections(a, b, iou=0.5) == [(0, 0)]
    assert pair_detections(a, b, iou=float(np.nextafter(0.5, 1.0))) == []


def test_class_mismatch_never_pairs() -> None:
    a = [det(0, 0.9, (0, 0, 4, 4))]
    b = [det(1, 0.9, (0, 0, 4, 4))]
    assert pair_detections(a, b) == []
    result = compare(dump({0: a}), dump({0: b}))
    assert (result["matched"], result["unmatched_a"], result["unmatched_b"]) == (0, 1, 1)
    (entry_b,) = [w for w in result["worst"] if w["kind"] == "unmatched_b"]
    assert entry_b["nearest"]["arm"] == "a" and entry_b["nearest"]["class_id"] == 0
    assert entry_b["nearest"]["box_iou"] == 1.0


def test_higher_confidence_chooses_first_regardless_of_dump_order() -> None:
    a = [det(0, 0.5, (0, 0, 4, 4)), det(0, 0.9, (0, 0, 4, 3))]
    b = [det(0, 0.8, (0, 0, 4, 4))]
    assert pair_detections(a, b) == [(1, 0)]


def test_equal_confidences_keep_dump_order() -> None:
    a = [det(0, 0.7, (0, 0, 4, 3)), det(0, 0.7, (0, 0, 4, 4))]
    b = [det(0, 0.7, (0, 0, 4, 4))]
    # A[1] is the better box, but A[0] comes first in the dump and takes B[0].
    assert pair_detections(a, b) == [(0, 0)]
    assert pair_detections(a[::-1], b) == [(0, 0)]


def test_best_iou_wins_and_iou_ties_go_to_first_in_b() -> None:
    a = [det(0, 0.9, (0, 0, 4, 2))]
    left, right, best = det(0, 0.9, (0, 0, 2, 2)), det(0, 0.9, (2, 0, 4, 2)), det(0, 0.9, (0, 0, 4, 2))
    assert pair_detections(a, [left, right]) == [(0, 0)]  # both IoU 0.5
    assert pair_detections(a, [right, left]) == [(0, 0)]
    assert pair_detections(a, [left, best, right]) == [(0, 1)]


def test_pairing_is_greedy_not_optimal() -> None:
    # A[0] (most confident) takes its best B, leaving A[1] without a partner
    # even though a global assignment could pair both.
    a = [det(0, 0.9, (0, 0, 4, 4)), det(0, 0.8, (0, 1, 4, 4))]
    b = [det(0, 0.9, (0, 0, 4, 3)), det(0, 0.9, (0, 0, 4, 2))]
    # IoUs: A0-B0 0.75, A0-B1 0.5, A1-B0 0.5, A1-B1 0.25.
    assert pair_detections(a, b) == [(0, 0)]


def test_confidence_threshold_is_inclusive_and_applies_to_both_sides() -> None:
    a = [det(0, 0.4, (0, 0, 4, 4)), det(1, 0.39, (8, 8, 12, 12))]
    b = [det(0, 0.6, (0, 0, 4, 4)), det(1, 0.9, (8, 8, 12, 12))]
    assert pair_detections(a, b, confidence=0.4) == [(0, 0)]
    result = compare(dump({0: a}), dump({0: b}), confidence=0.4)
    assert (result["detections_a"], result["detections_b"], result["matched"]) == (1, 2, 1)
    assert result["unmatched_b"] == 1
    (entry,) = [w for w in result["worst"] if w["kind"] == "unmatched_b"]
    # The partner below the threshold is reported as nearest: a confidence flicker.
    assert entry["nearest"]["confidence"] == 0.39 and entry["nearest"]["box_iou"] == 1.0


def test_several_classes_and_per_class_stats() -> None:
    a = [det(0, 0.9, (0, 0, 4, 4)), det(1, 0.8, (0, 0, 4, 4)), det(2, 0.7, (8, 8, 10, 10))]
    b = [det(1, 0.75, (0, 0, 4, 2)), det(0, 0.9, (0, 0, 4, 4)), det(3, 0.7, (8, 8, 10, 10))]
    assert sorted(pair_detections(a, b)) == [(0, 1), (1, 0)]
    result = compare(dump({0: a}), dump({0: b}))
    per_class = result["per_class"]
    assert list(per_class) == ["0", "1", "2", "3"]
    assert per_class["1"] == {
        "name": "class1",
        "detections_a": 1,
        "detections_b": 1,
        "matched": 1,
        "unmatched_a": 0,
        "unmatched_b": 0,
        "conf_delta_max": pytest.approx(0.05),
        "box_iou_mean": 0.5,
    }
    assert per_class["2"]["unmatched_a"] == 1 and per_class["2"]["conf_delta_max"] is None
    assert per_class["3"]["detections_a"] == 0 and per_class["3"]["unmatched_b"] == 1


# --- whole-dump results -----------------------------------------------------------


def test_an_empty_dump_is_an_input_error_not_a_vacuous_pass() -> None:
    for a, b in ((Dump(), Dump()), (Dump(), dump({0: []})), (dump({0: []}), Dump())):
        with pytest.raises(CompareInputError, match="holds no frame"):
            compare(a, b)


def test_empty_frames() -> None:
    result = strict_json(compare(dump({0: [], 1: []}), dump({0: [], 1: []})))
    assert result["frames"] == 2 and result["frames_common"] == 2
    assert result["detections_a"] == result["detections_b"] == 0
    assert result["gates"]["matched_fraction"]["vacuous"] is True and result["passed"] is True


def test_frames_only_in_one_dump_are_reported_and_count_as_unmatched() -> None:
    box = (0, 0, 4, 4)
    a = dump({0: [det(0, 0.9, box)], 1: [det(0, 0.9, box)], 2: []})
    b = dump({1: [det(0, 0.9, box)], 5: [det(0, 0.9, box), det(1, 0.9, box)]})
    result = compare(a, b)
    assert result["frames_only_in_a"] == [0, 2] and result["frames_only_in_b"] == [5]
    assert result["frames"] == 4 and result["frames_common"] == 1
    assert (result["matched"], result["unmatched_a"], result["unmatched_b"]) == (1, 1, 2)
    assert result["agree_exactly"] is False and result["passed"] is False


def test_frame_size_mismatch_is_an_input_error() -> None:
    with pytest.raises(CompareInputError, match="frame 0"):
        compare(dump({0: []}, width=16), dump({0: []}, width=32))


def test_masks_null_handling_and_identity_counts() -> None:
    m = np.zeros((16, 16), dtype=bool)
    m[0:4, 0:4] = True
    half = m.copy()
    half[0:2] = False
    empty = np.zeros_like(m)
    a = [
        det(0, 0.9, (0, 0, 4, 4), m),  # vs a missing mask: IoU 0
        det(1, 0.9, (0, 0, 4, 4)),  # both missing: skipped
        det(2, 0.9, (0, 0, 4, 4), m),  # vs half: IoU 0.5
        det(3, 0.9, (0, 0, 4, 4), empty),  # both empty: identical, IoU 1
    ]
    b = [
        det(0, 0.9, (0, 0, 4, 4)),
        det(1, 0.9, (0, 0, 4, 4)),
        det(2, 0.9, (0, 0, 4, 4), half),
        det(3, 0.9, (0, 0, 4, 4), empty),
    ]
    result = compare(dump({0: a}), dump({0: b}))
    assert result["matched"] == 4
    assert result["mask_iou"]["count"] == 3
    assert result["mask_iou"]["min"] == 0.0 and result["mask_iou"]["mean"] == pytest.approx(0.5)
    assert result["masks_identical"] == 2  # both missing, both empty
    assert result["all_masks_identical"] is False
    assert result["boxes_identical"] == 4


def test_statistics_use_linear_percentiles() -> None:
    deltas = [0.0, 0.125, 0.25, 0.375, 0.5]  # exact in binary
    a = [det(k, 1.0, (0, 0, 4, 4)) for k in range(5)]
    b = [det(k, 1.0 - d, (0, 0, 4, 4)) for k, d in enumerate(deltas)]
    result = compare(dump({0: a}), dump({0: b}), confidence=0.0)
    stats = result["conf_delta"]
    assert stats["count"] == 5
    assert stats["mean"] == 0.25 and stats["p50"] == 0.25 and stats["max"] == 0.5
    assert stats["p95"] == pytest.approx(0.475) and stats["p99"] == pytest.approx(0.495)


@pytest.mark.parametrize(("matched", "passed"), [(199, True), (198, False)])
def test_matched_gate_is_inclusive(matched: int, passed: bool) -> None:
    # 200 detections each; the unmatched ones use a class B does not have.
    a = [det(0 if k < matched else 1, 0.9, (k, 0, k + 1, 1)) for k in range(200)]
    b = [det(0 if k < matched else 2, 0.9, (k, 0, k + 1, 1)) for k in range(200)]
    gate = compare(dump({0: a}, width=256), dump({0: b}, width=256))["gates"]["matched_fraction"]
    assert gate["value"] == matched / 200 and gate["passed"] is passed


def test_conf_gate_threshold_is_inclusive_and_configurable() -> None:
    a = dump({0: [det(0, 0.75, (0, 0, 4, 4))]})
    b = dump({0: [det(0, 0.6875, (0, 0, 4, 4))]})  # |Δ| = 0.0625 exactly
    assert compare(a, b)["gates"]["max_conf_delta"]["passed"] is False
    gate = compare(a, b, max_conf_delta=0.0625)["gates"]["max_conf_delta"]
    assert gate == {"value": 0.0625, "threshold": 0.0625, "comparison": "<=", "passed": True, "vacuous": False}


def test_identical_realistic_dumps_agree_exactly(realistic: dict) -> None:
    d = realistic["dump"]
    result = strict_json(compare(d, d))
    total = sum(len(f.detections) for f in d.frames.values())
    assert total > 30
    assert result["matched"] == result["detections_a"] == result["detections_b"] == total
    assert result["conf_delta"]["max"] == 0.0 and result["box_iou"]["min"] == 1.0 and result["mask_iou"]["min"] == 1.0
    assert result["masks_identical"] == total and result["all_masks_identical"] is True
    assert result["agree_exactly"] is True and result["passed"] is True and result["worst"] == []


def test_mutations_are_reported_exactly(mutated: dict) -> None:
    expected = mutated["expected"]
    result = strict_json(compare(mutated["a"], mutated["b"], worst=100))
    for key in (
        "frames",
        "frames_only_in_a",
        "frames_only_in_b",
        "detections_a",
        "detections_b",
        "matched",
        "unmatched_a",
        "unmatched_b",
        "boxes_identical",
        "masks_identical",
    ):
        assert result[key] == expected[key], key
    assert result["conf_delta"]["max"] == pytest.approx(expected["conf_delta_max"], abs=1e-9)
    assert result["box_iou"]["min"] == pytest.approx(expected["box_iou_min"], abs=1e-9)
    assert result["mask_iou"]["min"] == pytest.approx(expected["mask_iou_min"], abs=1e-9)
    assert result["mask_iou"]["p5"] == pytest.approx(expected["mask_iou_p5"], abs=1e-9)
    assert result["mask_iou"]["count"] == expected["matched"]
    assert result["all_masks_identical"] is False and result["agree_exactly"] is False

    kinds = [w["kind"] for w in result["worst"]]
    assert kinds.count("unmatched_a") == expected["unmatched_a"]
    assert kinds.count("unmatched_b") == expected["unmatched_b"]
    assert kinds.count("conf") == expected["conf_changed"]
    assert kinds.count("low_iou") == 3  # two shifted boxes, one eroded mask
    # Unmatched detections outrank every matched pair, and scores never increase.
    assert kinds[: expected["unmatched_a"] + expected["unmatched_b"]].count("conf") == 0
    scores = [w["score"] for w in result["worst"]]
    assert scores == sorted(scores, reverse=True)
    relabelled = [w for w in result["worst"] if w["kind"] == "unmatched_b" and w["class_id"] == 7]
    assert len(relabelled) == 1 and relabelled[0]["nearest"]["box_iou"] == 1.0

    gates = result["gates"]
    assert gates["matched_fraction"]["passed"] is False
    assert gates["matched_fraction"]["value"] == expected["matched"] / expected["detections_a"]
    assert gates["max_conf_delta"]["passed"] is True
    assert result["passed"] is False
    assert len(compare(mutated["a"], mutated["b"], worst=5)["worst"]) == 5


def _write(path: Path, d: Dump) -> Path:
    with DumpWriter(path, build_metadata()) as writer:
        for frame in d.frames.values():
            writer.write(frame.to_dict())
    return path


def test_file_round_trip_gives_the_same_result(tmp_path: Path, mutated: dict) -> None:
    a = read_dump(_write(tmp_path / "A.jsonl", mutated["a"]))
    b = read_dump(_write(tmp_path / "B.jsonl", mutated["b"]))
    from_files = compare(a, b)
    in_memory = compare(mutated["a"], mutated["b"])
    assert from_files.pop("inputs")["a"]["complete"] is True
    in_memory.pop("inputs")
    assert from_files == in_memory


# --- CLI ---------------------------------------------------------------------------


@pytest.fixture()
def dump_files(tmp_path: Path, mutated: dict) -> dict[str, Path]:
    return {
        "a": _write(tmp_path / "A.jsonl", mutated["a"]),
        "b": _write(tmp_path / "B.jsonl", mutated["b"]),
    }


def test_cli_exit_0_when_identical(dump_files: dict, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(dump_files["a"]), str(dump_files["a"])]) == 0
    out = capsys.readouterr().out
    assert "agree exactly" in out and "PASS" in out


def test_cli_exit_1_when_a_gate_fails_and_writes_json(
    dump_files: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_json = tmp_path / "result.json"
    assert main([str(dump_files["a"]), str(dump_files["b"]), "--json", str(out_json)]) == 1
    assert "FAIL" in capsys.readouterr().out
    result = json.loads(out_json.read_text())
    assert result["passed"] is False and result["params"] == {"confidence": 0.4, "iou": 0.5, "worst": 20}


def test_cli_loosened_gates_pass(dump_files: dict) -> None:
    args = [
        str(dump_files["a"]),
        str(dump_files["b"]),
        "--min-matched",
        "0",
        "--max-conf-delta",
        "1",
        "--min-mask-iou-p5",
        "0",
        "--confidence",
        "0.5",
        "--iou",
        "0.3",
    ]
    assert main(args) == 0


def test_cli_exit_2_on_input_errors(dump_files: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.jsonl"
    assert main([str(dump_files["a"]), str(missing)]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "Traceback" not in err and err.count("\n") == 1

    corrupt = tmp_path / "corrupt.jsonl"
    lines = dump_files["a"].read_text().splitlines()
    corrupt.write_text("\n".join([lines[0], lines[1][:40], *lines[2:]]) + "\n")
    assert main([str(corrupt), str(dump_files["b"])]) == 2
    err = capsys.readouterr().err
    assert f"{corrupt}:2:" in err and "Traceback" not in err and err.count("\n") == 1

    other_size = Dump(frames={0: FrameRecord(0, 5, 5)})
    assert main([str(dump_files["a"]), str(_write(tmp_path / "C.jsonl", other_size))]) == 2
    assert "frame 0" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["only_one.jsonl"],
        ["A.jsonl", "B.jsonl", "--iou", "1.5"],
        ["A.jsonl", "B.jsonl", "--confidence", "x"],
        ["A.jsonl", "B.jsonl", "--max-conf-delta", "-1"],
        ["A.jsonl", "B.jsonl", "--bogus"],
    ],
)
def test_cli_exit_2_on_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "usage" in capsys.readouterr().err


def test_cli_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "--min-mask-iou-p5" in capsys.readouterr().out
