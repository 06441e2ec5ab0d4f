from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import supervision as sv
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from inference_triton_preproc.validate.dumps import (
    DetectionRecord,
    Dump,
    DumpFormatError,
    DumpWriter,
    FrameRecord,
    build_metadata,
    decode_mask,
    encode_mask,
    frame_record,
    read_dump,
    read_sidecar,
    sidecar_path,
)


def _write_lines(path: Path, lines: list[str], terminated: bool = True) -> None:
    path.write_text("\n".join(lines) + ("\n" if terminated else ""), encoding="utf-8")


def _line(frame_id: int, detections: list[dict] | None = None, width: int = 8, height: int = 6) -> str:
    # ensure_ascii=False: other tools may write raw UTF-8.
    record = {"frame_id": frame_id, "width": width, "height": height, "detections": detections or []}
    return json.dumps(record, ensure_ascii=False)


DET = {"class_id": 1, "class_name": "x", "confidence": 0.5, "xyxy": [0, 0, 2, 2], "mask": None}


@settings(max_examples=60, deadline=None)
@given(arrays(np.bool_, st.tuples(st.integers(1, 17), st.integers(1, 17))))
def test_mask_rle_round_trip(mask: np.ndarray) -> None:
    rle = encode_mask(mask)
    assert rle["size"] == list(mask.shape)
    assert isinstance(rle["counts"], str)
    json.dumps(rle)
    decoded = decode_mask(rle)
    assert decoded.dtype == np.bool_
    np.testing.assert_array_equal(decoded, mask)


def test_encode_mask_accepts_any_memory_order_and_rejects_non_bool() -> None:
    mask = np.zeros((5, 7), dtype=bool)
    mask[1:3, 2:6] = True
    assert encode_mask(mask) == encode_mask(np.asfortranarray(mask)) == encode_mask(mask.T.T)
    with pytest.raises(TypeError):
        encode_mask(mask.astype(np.uint8))
    with pytest.raises(TypeError):
        encode_mask(np.zeros((2, 2, 2), dtype=bool))


def _sv_detections(with_masks: bool, with_names: bool) -> sv.Detections:
    masks = np.zeros((2, 6, 8), dtype=bool)
    masks[0, 1:4, 1:3] = True
    masks[1, 2:6, 4:8] = True
    return sv.Detections(
        xyxy=np.array([[1, 1, 3, 4], [4, 2, 8, 6]], dtype=np.float32),
        mask=masks if with_masks else None,
        confidence=np.array([0.9, 0.41], dtype=np.float32),
        class_id=np.array([3, 5]),
        data={"class_name": np.array(["cat", "dog"])} if with_names else {},
    )


def test_frame_record_from_supervision() -> None:
    dets = _sv_detections(with_masks=True, with_names=True)
    record = frame_record(7, dets, width=8, height=6)
    assert record["frame_id"] == 7 and record["width"] == 8 and record["height"] == 6
    first, second = record["detections"]
    assert first["class_id"] == 3 and first["class_name"] == "cat"
    assert first["confidence"] == float(np.float32(0.9))  # the float32 value, exactly
    assert first["xyxy"] == [1.0, 1.0, 3.0, 4.0]
    np.testing.assert_array_equal(decode_mask(second["mask"]), dets.mask[1])
    json.dumps(record, allow_nan=False)


def test_frame_record_defaults_and_options() -> None:
    no_names = frame_record(0, _sv_detections(with_masks=False, with_names=False), width=8, height=6)
    assert [d["class_name"] for d in no_names["detections"]] == ["3", "5"]
    assert all(d["mask"] is None for d in no_names["detections"])
    masks_dropped = frame_record(0, _sv_detections(True, True), width=8, height=6, include_masks=False)
    assert all(d["mask"] is None for d in masks_dropped["detections"])
    assert frame_record(0, sv.Detections.empty(), width=8, height=6)["detections"] == []


def test_frame_record_rejects_inconsistent_detections() -> None:
    with pytest.raises(ValueError, match="frame size"):
        frame_record(0, _sv_detections(True, True), width=9, height=6)
    dets = _sv_detections(False, True)
    dets.class_id = None
    with pytest.raises(ValueError, match="class_id"):
        frame_record(0, dets, width=8, height=6)


def test_writer_reader_round_trip(tmp_path: Path, realistic: dict) -> None:
    source: Dump = realistic["dump"]
    path = tmp_path / "A.jsonl"
    meta = build_metadata(model={"id": "rfdetr-seg", "random_weights": True}, source="coins.mp4", arm="A")
    with DumpWriter(path, meta) as writer:
        for frame in source.frames.values():
            writer.write(frame.to_dict())
    dump = read_dump(path)
    assert dump.frames == source.frames
    assert dump.truncated_line is None
    assert dump.complete is True and dump.random_weights is True
    assert dump.meta["frames"] == len(source.frames)
    assert dump.meta["source"] == "coins.mp4" and dump.meta["arm"] == "A"
    assert dump.meta["versions"]["numpy"] == np.__version__
    for frame in dump.frames.values():
        for det in frame.detections:
            assert decode_mask(det.mask).shape == (frame.height, frame.width)
    # One line per frame, each newline-terminated.
    assert path.read_bytes().count(b"\n") == len(source.frames)


def test_writer_accepts_numpy_scalars_and_supervision_records(tmp_path: Path) -> None:
    path = tmp_path / "A.jsonl"
    with DumpWriter(path) as writer:
        writer.write(frame_record(np.int64(4), _sv_detections(True, True), width=np.int64(8), height=6))
    (frame,) = read_dump(path).frames.values()
    assert frame.frame_id == 4 and type(frame.width) is int
    assert frame.detections[0].confidence == float(np.float32(0.9))


def test_writer_flushes_every_line_and_marks_incomplete(tmp_path: Path) -> None:
    path = tmp_path / "A.jsonl"
    writer = DumpWriter(path)
    writer.write(json.loads(_line(0, [DET])))
    # A second reader sees the line before close, as after a kill.
    in_progress = read_dump(path)
    assert list(in_progress.frames) == [0]
    assert in_progress.complete is False
    writer.close()
    assert read_dump(path).complete is True
    with pytest.raises(RuntimeError):
        writer.write(json.loads(_line(1)))


def test_writer_marks_incomplete_when_the_block_raises(tmp_path: Path) -> None:
    path = tmp_path / "A.jsonl"
    with pytest.raises(KeyError), DumpWriter(path) as writer:
        writer.write(json.loads(_line(0)))
        raise KeyError("model crashed")
    meta = read_sidecar(path)
    assert meta is not None and meta["complete"] is False and meta["frames"] == 1


@pytest.mark.parametrize(
    "record",
    [
        {"frame_id": 0, "width": 8, "height": 6},
        {"frame_id": 0, "width": 8, "height": 6, "detections": [{**DET, "confidence": float("nan")}]},
        {"frame_id": 0, "width": 8, "height": 6, "detections": [{**DET, "class_id": None}]},
    ],
)
def test_writer_rejects_invalid_records(tmp_path: Path, record: dict) -> None:
    with DumpWriter(tmp_path / "A.jsonl") as writer, pytest.raises(ValueError):
        writer.write(record)
    assert (tmp_path / "A.jsonl").read_text() == ""


def test_sidecar_path() -> None:
    assert sidecar_path("out/A.jsonl") == Path("out/A.meta.json")
    assert sidecar_path("B") == Path("B.meta.json")


def test_truncated_last_line_is_reported_and_prefix_kept(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "A.jsonl"
    full = [_line(0, [DET]), _line(1, [DET]), _line(2, [{**DET, "class_name": "café"}])]
    _write_lines(path, full)
    data = path.read_bytes()
    # Cut inside the multi-byte "é" too: a partial UTF-8 sequence is still a truncation.
    for cut in (len(data) - 2, data.rindex("é".encode()) + 1, len(data) - len(full[2]) // 2):
        path.write_bytes(data[:cut])
        with caplog.at_level(logging.WARNING):
            dump = read_dump(path)
        assert sorted(dump.frames) == [0, 1]
        assert dump.truncated_line == 3
        assert "truncated" in caplog.text


def test_kill_at_line_boundary_is_not_truncation(tmp_path: Path) -> None:
    path = tmp_path / "A.jsonl"
    _write_lines(path, [_line(0), _line(1)])
    dump = read_dump(path)
    assert sorted(dump.frames) == [0, 1] and dump.truncated_line is None
    assert dump.complete is None  # no sidecar: unknown


def test_last_line_without_newline_is_accepted_when_complete(tmp_path: Path) -> None:
    path = tmp_path / "A.jsonl"
    _write_lines(path, [_line(0), _line(1)], terminated=False)
    dump = read_dump(path)
    assert sorted(dump.frames) == [0, 1] and dump.truncated_line is None


def test_blank_lines_and_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "A.jsonl"
    _write_lines(path, [_line(0), "", "  ", _line(1), ""])
    assert sorted(read_dump(path).frames) == [0, 1]
    path.write_text("")
    empty = read_dump(path)
    assert empty.frames == {} and empty.truncated_line is None


def test_corrupt_middle_line_raises_with_line_number(tmp_path: Path) -> None:
    path = tmp_path / "A.jsonl"
    _write_lines(path, [_line(0), _line(1)[:-5], _line(2)])
    with pytest.raises(DumpFormatError) as info:
        read_dump(path)
    assert info.value.line == 2 and info.value.path == path
    assert f"{path}:2:" in str(info.value)


def test_corrupt_terminated_last_line_raises(tmp_path: Path) -> None:
    # A killed writer cannot leave a newline after a partial line.
    path = tmp_path / "A.jsonl"
    _write_lines(path, [_line(0), _line(1)[:-5]])
    with pytest.raises(DumpFormatError, match=":2:"):
        read_dump(path)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("[1, 2]", "JSON object"),
        (json.dumps({"width": 8, "height": 6, "detections": []}), "missing key 'frame_id'"),
        (json.dumps({"frame_id": True, "width": 8, "height": 6, "detections": []}), "frame_id"),
        (json.dumps({"frame_id": 1, "width": -1, "height": 6, "detections": []}), "width"),
        (json.dumps({"frame_id": 1, "width": 8, "height": 6, "detections": {}}), "detections"),
        (_line(1, [{**DET, "confidence": "high"}]), "confidence"),
        (_line(1, [{**DET, "xyxy": [0, 0, 1]}]), "xyxy"),
        (_line(1, [{**DET, "class_name": 3}]), "class_name"),
        (_line(1, [{**DET, "mask": {"size": [5, 8], "counts": "abc"}}]), "frame size"),
        (_line(1, [{**DET, "mask": {"size": [6, 8], "counts": [1, 2]}}]), "counts"),
        (_line(1, [{**DET, "mask": "rle"}]), "mask"),
        (
            '{"frame_id": 1, "width": 8, "height": 6, "detections": [{"class_id": 1, "class_name": "x", '
            '"confidence": NaN, "xyxy": [0, 0, 1, 1], "mask": null}]}',
            "finite",
        ),
    ],
)
def test_schema_errors_raise_with_line_number(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "A.jsonl"
    _write_lines(path, [_line(0), line, _line(2)])
    with pytest.raises(DumpFormatError, match=message) as info:
        read_dump(path)
    assert info.value.line == 2


def test_duplicate_frame_id_raises(tmp_path: Path) -> None:
    path = tmp_path / "A.jsonl"
    _write_lines(path, [_line(0), _line(1), _line(0)])
    with pytest.raises(DumpFormatError, match="duplicate frame_id 0") as info:
        read_dump(path)
    assert info.value.line == 3


def test_unknown_keys_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "A.jsonl"
    record = {"frame_id": 0, "width": 8, "height": 6, "timestamp": 1.5, "detections": [{**DET, "track_id": 4}]}
    _write_lines(path, [json.dumps(record)])
    (frame,) = read_dump(path).frames.values()
    assert frame == FrameRecord(0, 8, 6, (DetectionRecord(1, "x", 0.5, (0.0, 0.0, 2.0, 2.0), None),))


def test_corrupt_sidecar_raises(tmp_path: Path) -> None:
    path = tmp_path / "A.jsonl"
    _write_lines(path, [_line(0)])
    sidecar_path(path).write_text("{not json")
    with pytest.raises(DumpFormatError, match="sidecar"):
        read_dump(path)
    sidecar_path(path).write_text("[]")
    with pytest.raises(DumpFormatError, match="object"):
        read_dump(path)
