"""The parity probe CLI on the shipped sample clip and on a real photo."""

from __future__ import annotations

import json

import cv2

from inference_triton_preproc.probe import main


def test_probe_on_sample_clip_writes_table_and_json(tmp_path, capsys) -> None:
    out = tmp_path / "probe.json"
    assert main(["--size", "40", "56", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "pil     pil        R" in table
    report = json.loads(out.read_text())
    assert report["size"] == [40, 56] and report["frames"] == 1
    by_pair = {(r["mode"], r["reference"]): r["channels"] for r in report["results"]}
    assert len(by_pair) == 9
    for mode in ("pil", "cv2"):
        assert all(c["max_abs"] == 0 and c["n_diff"] == 0 for c in by_pair[mode, mode].values())
    assert all(c["max_abs"] <= 2e-6 for c in by_pair["torch", "torch"].values())
    # The references really differ from one another on real footage.
    assert all(c["n_diff"] > 0 for c in by_pair["pil", "cv2"].values())


def test_probe_on_image(photos, tmp_path, capsys) -> None:
    path = tmp_path / "coffee.png"
    cv2.imwrite(str(path), photos["coffee"])
    assert main(["--image", str(path), "--size", "24"]) == 0
    assert "24x24" in capsys.readouterr().out


def test_probe_bad_input_exits_2(tmp_path, capsys) -> None:
    assert main(["--image", str(tmp_path / "missing.png")]) == 2
    assert "cannot read image" in capsys.readouterr().err
    assert main(["--video", str(tmp_path / "missing.mp4")]) == 2
    assert main(["--size", "0"]) == 2
