"""Tests of the random-weight RF-DETR Nano segmentation package and the sample clip (CPU)."""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inference_triton_preproc.validate import default_model

# Frames between the calibration frames (which are 0, 8, 16, ...), so the test
# also shows that the calibrated bias generalises to frames it did not see.
_EVAL_FRAMES = (4, 12, 20, 28)


class _NetworkAttempted(RuntimeError):
    """Raised when code under test opens an internet socket."""


@contextlib.contextmanager
def _no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Make every AF_INET / AF_INET6 connection attempt fail loudly; yield the attempts."""
    attempts: list[Any] = []
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def guarded_connect(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            attempts.append(address)
            raise _NetworkAttempted(f"network access attempted: {address!r}")
        return real_connect(self, address)

    def guarded_connect_ex(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            attempts.append(address)
            raise _NetworkAttempted(f"network access attempted: {address!r}")
        return real_connect_ex(self, address)

    def guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        attempts.append(host)
        raise _NetworkAttempted(f"DNS lookup attempted: {host!r}")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", guarded_connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
    yield attempts


@pytest.fixture(scope="session")
def torch_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Torch package freshly built (offline) in a session cache directory."""
    cache_dir = tmp_path_factory.mktemp("model-cache")
    with (
        pytest.MonkeyPatch.context() as monkeypatch,
        _no_network(monkeypatch) as attempts,
    ):
        path = default_model.default_model_path("torch", cache_dir=cache_dir)
    assert attempts == []
    return path


@pytest.fixture(scope="session")
def torch_model(torch_package: Path) -> Any:
    """The torch package loaded through ``AutoModel.from_pretrained`` (offline, CPU)."""
    with (
        pytest.MonkeyPatch.context() as monkeypatch,
        _no_network(monkeypatch) as attempts,
    ):
        from inference_models import AutoModel

        model = AutoModel.from_pretrained(str(torch_package), device="cpu")
    assert attempts == []
    return model


@pytest.fixture(scope="session")
def eval_frames() -> list[np.ndarray]:
    """Four sample frames that were not used for calibration."""
    frames = default_model.load_sample_frames()
    return [frames[i] for i in _EVAL_FRAMES]


def _run(model: Any, frames: list[np.ndarray], confidence: float) -> list[Any]:
    """pre_process -> forward -> post_process on a batch of BGR frames."""
    pre_processed, metadata = model.pre_process(frames, input_color_format="bgr")
    raw = model.forward(pre_processed)
    return model.post_process(raw, metadata, confidence=confidence)


def test_sample_clip_is_small_and_readable() -> None:
    path = default_model.sample_video_path()
    assert path.suffix == ".mp4"
    assert path.stat().st_size < 1_500_000
    frames = default_model.load_sample_frames()
    assert len(frames) == default_model.SAMPLE_NUM_FRAMES
    assert all(f.shape == (576, 768, 3) and f.dtype == np.uint8 for f in frames)
    assert (path.parent / "README.md").is_file()


def test_package_layout_and_random_weights_label(torch_package: Path) -> None:
    for name in (
        "model_config.json",
        "inference_config.json",
        "class_names.txt",
        "model_type.json",
        "weights.pth",
        default_model.RANDOM_WEIGHTS_FILE,
    ):
        assert (torch_package / name).is_file(), name
    model_config = json.loads((torch_package / "model_config.json").read_text())
    assert model_config == {
        "backend_type": "torch",
        "model_architecture": "rfdetr",
        "task_type": "instance-segmentation",
    }
    assert (
        json.loads((torch_package / "inference_config.json").read_text())[
            "random_weights"
        ]
        is True
    )
    assert default_model.is_random_weights_package(torch_package)
    info = default_model.random_weights_info(torch_package)
    assert info is not None and info["random_weights"] is True
    assert "RANDOM WEIGHTS" in info["warning"]
    assert info["build_spec"]["seed"] == default_model.DEFAULT_SEED
    assert torch_package.name.endswith(info["build_key"][:16])
    calibration = info["calibration"]
    assert (
        min(calibration["detections_per_calibration_frame"])
        >= default_model.TARGET_DETECTIONS_PER_FRAME
    )
    assert default_model.random_weights_info(torch_package.parent) is None


def test_loads_offline_through_automodel(torch_model: Any) -> None:
    from inference_models.models.rfdetr.rfdetr_instance_segmentation_pytorch import (
        RFDetrForInstanceSegmentationTorch,
    )

    assert isinstance(torch_model, RFDetrForInstanceSegmentationTorch)
    assert list(torch_model.class_names) == list(default_model.CLASS_NAMES)


def test_detections_with_masks_at_confidence_04(
    torch_model: Any, eval_frames: list[np.ndarray]
) -> None:
    assert len(eval_frames) == 4
    results = _run(torch_model, eval_frames, default_model.CONFIDENCE_THRESHOLD)
    assert len(results) == len(eval_frames)
    frames_with_masks = 0
    for frame, detections in zip(eval_frames, results):
        count = len(detections)
        assert count <= 30, "the calibration should give a handful of detections"
        if count == 0:
            continue
        assert bool((detections.confidence > default_model.CONFIDENCE_THRESHOLD).all())
        assert set(detections.class_id.tolist()) <= {0, 1, 2}
        masks = detections.mask
        assert tuple(masks.shape) == (count, frame.shape[0], frame.shape[1])
        assert str(masks.dtype) == "torch.bool"
        if bool((masks.flatten(1).sum(dim=1) > 0).all()):
            frames_with_masks += 1
    assert frames_with_masks >= len(eval_frames) - 1


def test_second_call_is_a_cache_hit(
    torch_package: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("cache miss: the package was rebuilt")

    monkeypatch.setattr(default_model, "_build_torch_package", fail)
    cache_dir = torch_package.parent.parent
    assert (
        default_model.default_model_path("torch", cache_dir=cache_dir) == torch_package
    )


def test_rebuild_is_byte_identical(
    torch_package: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _no_network(monkeypatch) as attempts:
        rebuilt = default_model.default_model_path("torch", cache_dir=tmp_path)
    assert attempts == []
    assert rebuilt.name == torch_package.name
    assert sorted(p.name for p in rebuilt.iterdir()) == sorted(
        p.name for p in torch_package.iterdir()
    )
    for original in torch_package.iterdir():
        assert (rebuilt / original.name).read_bytes() == original.read_bytes(), (
            original.name
        )


def test_cache_dir_from_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(default_model.CACHE_ENV_VAR, str(tmp_path))
    assert default_model.default_cache_dir() == tmp_path
    monkeypatch.delenv(default_model.CACHE_ENV_VAR)
    assert default_model.default_cache_dir().name == "inference-triton-preproc"


def test_publish_keeps_the_package_of_a_concurrent_builder(tmp_path: Path) -> None:
    final_dir = tmp_path / "package"
    final_dir.mkdir()
    (final_dir / "weights.pth").write_bytes(b"first")
    staging = tmp_path / ".package.tmp-x"
    staging.mkdir()
    (staging / "weights.pth").write_bytes(b"second")
    default_model._publish(staging, final_dir)
    assert (final_dir / "weights.pth").read_bytes() == b"first"


def test_unknown_backend_is_rejected() -> None:
    with pytest.raises(ValueError):
        default_model.default_model_path("tensorrt")  # type: ignore[arg-type]


@pytest.mark.slow
def test_onnx_package_matches_torch(
    torch_package: Path, torch_model: Any, eval_frames: list[np.ndarray]
) -> None:
    pytest.importorskip("onnxruntime")
    cache_dir = torch_package.parent.parent
    with (
        pytest.MonkeyPatch.context() as monkeypatch,
        _no_network(monkeypatch) as attempts,
    ):
        onnx_package = default_model.default_model_path("onnx", cache_dir=cache_dir)
        from inference_models import AutoModel

        onnx_model = AutoModel.from_pretrained(str(onnx_package), device="cpu")
    assert attempts == []
    assert default_model.is_random_weights_package(onnx_package)
    frames = eval_frames[:1]
    expected = _run(torch_model, frames, default_model.CONFIDENCE_THRESHOLD)[0]
    actual = _run(onnx_model, frames, default_model.CONFIDENCE_THRESHOLD)[0]
    assert len(actual) == len(expected) > 0
    np.testing.assert_allclose(
        actual.confidence.numpy(), expected.confidence.numpy(), atol=1e-3
    )
    assert (actual.xyxy - expected.xyxy).abs().max() <= 1
