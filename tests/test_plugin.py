"""The plugin inside the real inference-models adapters (CPU, kernels under the interpreter).

Flag off vs flag on is compared on the real Torch and ONNX RF-DETR segmentation adapters
loaded from the locally built random-weight package. The TRT adapter module is imported
for real with placeholder ``tensorrt``/``pycuda`` modules (see trt_stubs.py): its wiring
is tested, not an engine.
"""

from __future__ import annotations

import copy
import logging
import threading

import numpy as np
import pytest
import torch

import inference_triton_preproc as itp
from inference_triton_preproc.plugin import adapters, package
from inference_triton_preproc.plugin.adapters import STATE_ATTRIBUTE, FallbackError
from inference_triton_preproc.plugin.config import Settings
from inference_triton_preproc.validate.default_model import default_model_path, load_sample_frames

CPU = torch.device("cpu")

# These run the adapters on the CPU through the interpreter (how CI sees them); on a
# CUDA machine the kernels are compiled and CPU models fall back by design, so the
# CUDA paths are covered by test_plugin_gpu.py there instead.
pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="CPU-interpreter plugin tests; see test_plugin_gpu.py")


@pytest.fixture(scope="module")
def torch_model():
    from inference_models import AutoModel

    return AutoModel.from_pretrained(str(default_model_path("torch")), device=CPU)


@pytest.fixture(scope="module")
def onnx_model():
    from inference_models import AutoModel

    return AutoModel.from_pretrained(str(default_model_path("onnx")), device=CPU, onnx_execution_providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    full = load_sample_frames(limit=2)
    # Small odd-sized crops keep the interpreter fast and exercise strides.
    return [full[0][101:198, 37:168], full[1][:77, 5:260], full[0]]


@pytest.fixture
def installed():
    itp.uninstall()
    assert itp.install(mode="auto", strict=False)
    yield
    itp.uninstall()


def fresh(model, **config_changes):
    """A shallow copy of ``model`` with its own plugin state and a modified config."""
    clone = copy.copy(model)
    clone.__dict__.pop(STATE_ATTRIBUTE, None)
    config = model._inference_config.model_copy(deep=True)
    for path, value in config_changes.items():
        owner = config
        *parents, leaf = path.split("__")
        for name in parents:
            owner = getattr(owner, name)
        setattr(owner, leaf, value)
    clone._inference_config = config
    return clone


def stock_and_ours(model, images, **kwargs):
    itp.uninstall()
    want = type(model).pre_process(model, images, **kwargs)
    itp.install(mode="auto", strict=False)
    got = type(model).pre_process(model, images, **kwargs)
    return want, got


def assert_same(want, got) -> None:
    (tensor_a, meta_a), (tensor_b, meta_b) = want, got
    assert tensor_a.shape == tensor_b.shape and tensor_a.dtype == tensor_b.dtype
    assert tensor_a.device == tensor_b.device
    assert (tensor_a - tensor_b).abs().max().item() == 0
    assert list(meta_a) == list(meta_b)


# ---------------------------------------------------------------------- activation


@pytest.mark.parametrize("value", ["1", "true", "YES", " on "])
def test_enable_values(monkeypatch, value) -> None:
    monkeypatch.setenv("RFDETR_USE_TRITON_PREPROC", value)
    assert Settings.from_env().enabled


@pytest.mark.parametrize("value", ["0", "false", "No", "off", ""])
def test_disable_values(monkeypatch, value) -> None:
    monkeypatch.setenv("RFDETR_USE_TRITON_PREPROC", value)
    assert not Settings.from_env().enabled


@pytest.mark.parametrize(
    ("variable", "value"),
    [("RFDETR_USE_TRITON_PREPROC", "maybe"), ("RFDETR_TRITON_PREPROC_STRICT", "2"), ("RFDETR_TRITON_PREPROC_MODE", "bicubic")],
)
def test_bad_env_values_name_the_variable(monkeypatch, variable, value) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError, match=variable) as info:
        Settings.from_env()
    assert repr(value) in str(info.value)


def test_install_is_idempotent_reversible_and_thread_safe(torch_model) -> None:
    cls = type(torch_model)
    original = cls.__dict__["pre_process"]
    itp.uninstall()
    threads = [threading.Thread(target=itp.install) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert itp.is_installed()
    wrapped = cls.__dict__["pre_process"]
    assert wrapped is not original and wrapped.__wrapped__ is original
    assert itp.install() and cls.__dict__["pre_process"] is wrapped
    itp.uninstall()
    itp.uninstall()
    assert not itp.is_installed() and cls.__dict__["pre_process"] is original


@pytest.mark.parametrize("version", ["0.38.9", "0.40.0", "1.0.0"])
def test_refuses_unsupported_host_versions(monkeypatch, caplog, torch_model, version) -> None:
    itp.uninstall()
    monkeypatch.setattr(package, "host_version", lambda host=package.HOST: version)
    with caplog.at_level(logging.WARNING):
        assert itp.install() is False
    assert not itp.is_installed()
    assert "outside the supported range" in caplog.text and version in caplog.text
    assert not hasattr(type(torch_model).__dict__["pre_process"], "__wrapped__")


def test_install_rejects_bad_mode() -> None:
    with pytest.raises(ValueError, match="mode"):
        itp.install(mode="bilinear")


# ---------------------------------------------------------------------- exactness


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_flag_on_equals_flag_off(request, frames, backend) -> None:
    model = request.getfixturevalue(f"{backend}_model")
    try:
        cases = [
            (frames[0], {"input_color_format": "bgr"}),
            (frames[0], {"input_color_format": "rgb"}),
            (frames[0], {}),  # unspecified colour: the host swaps channels
            ([frames[0], frames[1]], {"input_color_format": "bgr"}),  # a list of odd sizes
            (np.stack([frames[1], frames[1][::-1]]), {"input_color_format": "bgr"}),  # 4-D batch
            (torch.from_numpy(np.ascontiguousarray(frames[0])), {"input_color_format": "bgr"}),  # HWC tensor
            (torch.from_numpy(np.ascontiguousarray(frames[1])).permute(2, 0, 1), {}),  # CHW tensor
            (frames[0], {"image_size": (312, 312)}),  # the model's own size
        ]
        for images, kwargs in cases:
            assert_same(*stock_and_ours(model, images, **kwargs))
    finally:
        itp.uninstall()


def test_full_frames_through_the_real_adapter(torch_model, frames) -> None:
    try:
        assert_same(*stock_and_ours(torch_model, [frames[2]], input_color_format="bgr"))
    finally:
        itp.uninstall()


def test_static_crop_is_served_exactly(torch_model, frames) -> None:
    from inference_models.models.common.roboflow.model_packages import StaticCrop

    model = fresh(torch_model, image_pre_processing__static_crop=StaticCrop(enabled=True, x_min=13, x_max=91, y_min=7, y_max=77))
    try:
        want, got = stock_and_ours(model, [frames[0], frames[1]], input_color_format="bgr")
        assert_same(want, got)
        assert got[1][0].static_crop_offset.offset_x > 0
        assert model.__dict__[STATE_ATTRIBUTE].logged == set()
    finally:
        itp.uninstall()


def test_auto_detects_pil_on_this_inference_models(torch_model, frames, installed) -> None:
    torch_model.pre_process(frames[1])
    assert torch_model.__dict__[STATE_ATTRIBUTE].plan(torch_model).mode == "pil"


def test_auto_picks_cv2_for_an_opencv_host(monkeypatch) -> None:
    """A host whose stock resize is OpenCV (inference-models <= 0.27) gets cv2 mode."""
    import inference_models.models.rfdetr.pre_processing as host

    from inference_triton_preproc.plugin.detect import detect_mode
    from inference_triton_preproc.reference import preprocess_reference

    def opencv_host(images, network_input, target_device, input_color_format=None, **_):
        size = network_input.training_input_size
        mean, std = network_input.normalization
        return preprocess_reference(images, (size.height, size.width), mode="cv2", mean=mean, std=std), None

    monkeypatch.setattr(host, "pre_process_network_input", opencv_host)
    detect_mode.cache_clear()
    try:
        assert detect_mode((64, 48), "rgb", (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)) == "cv2"
    finally:
        detect_mode.cache_clear()


# ---------------------------------------------------------------------- fallbacks


def _config(kind: str | None) -> dict:
    """Config changes (attribute path -> value) that the kernel does not serve."""
    from inference_models.models.common.roboflow.model_packages import (
        Contrast,
        ContrastType,
        Grayscale,
        ResizeMode,
        TrainingInputSize,
    )

    return {
        None: {},
        "grayscale": {"image_pre_processing__grayscale": Grayscale(enabled=True)},
        "contrast": {"image_pre_processing__contrast": Contrast(enabled=True, type=ContrastType.CONTRAST_STRETCHING)},
        "letterbox": {
            "network_input__dataset_version_resize_dimensions": TrainingInputSize(height=200, width=300),
            "network_input__resize_mode": ResizeMode.LETTERBOX,
        },
    }[kind]


def _images(kind: str | None, frame: np.ndarray):
    return {
        None: frame,
        "float-tensor": torch.from_numpy(frame.astype(np.float32) / 255).permute(2, 0, 1),
        "float-array": frame.astype(np.float32),
        "gray": np.ascontiguousarray(frame[..., 0]),
        "mixed": [frame, torch.from_numpy(np.ascontiguousarray(frame))],
    }[kind]


FALLBACKS = [
    ("grayscale", "grayscale", None, {}),
    ("contrast", "contrast", None, {}),
    ("two-step-resize", "letterbox", None, {}),
    ("image-size", None, None, {"image_size": (200, 200)}),
    ("input-type", None, "float-tensor", {}),
    ("input-type", None, "float-array", {}),
    ("input-shape", None, "gray", {}),
    ("mixed-input", None, "mixed", {}),
]


@pytest.mark.parametrize(("reason", "config", "images", "kwargs"), FALLBACKS, ids=[f"{f[0]}-{f[2]}" for f in FALLBACKS])
def test_unsupported_cases_fall_back_with_reason(torch_model, frames, caplog, reason, config, images, kwargs) -> None:
    model = fresh(torch_model, **_config(config))
    data = _images(images, frames[1])
    itp.uninstall()
    want = type(model).pre_process(model, data, **kwargs)
    itp.install(mode="auto", strict=False)
    try:
        with caplog.at_level(logging.INFO, logger="inference_triton_preproc"):
            got = type(model).pre_process(model, data, **kwargs)
            type(model).pre_process(model, data, **kwargs)
        assert torch.equal(want[0], got[0]) and list(want[1]) == list(got[1])
        assert model.__dict__[STATE_ATTRIBUTE].logged == {reason}
        assert caplog.text.count(adapters.FALLBACK_REASONS[reason]) == 1
        itp.install(mode="auto", strict=True)
        strict_model = fresh(model)
        with pytest.raises(FallbackError, match=adapters.FALLBACK_REASONS[reason].split(" (")[0]):
            type(strict_model).pre_process(strict_model, data, **kwargs)
    finally:
        itp.uninstall()


def test_kernel_failure_disables_backend_and_keeps_the_frame(torch_model, frames, monkeypatch, caplog) -> None:
    model = fresh(torch_model)
    itp.uninstall()
    want = type(model).pre_process(model, frames[1], input_color_format="bgr")
    itp.install(mode="auto", strict=False)
    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("PTX compilation failed")

    monkeypatch.setattr(adapters, "preprocess", broken)
    try:
        with caplog.at_level(logging.WARNING, logger="inference_triton_preproc"):
            for _ in range(3):
                got = type(model).pre_process(model, frames[1], input_color_format="bgr")
                assert torch.equal(want[0], got[0])
        assert len(calls) == 1
        assert "PTX compilation failed" in caplog.text
        assert model.__dict__[STATE_ATTRIBUTE].disabled == "kernel-error"
    finally:
        itp.uninstall()


def test_model_on_cpu_without_interpreter_falls_back(torch_model, frames, monkeypatch) -> None:
    monkeypatch.setattr(adapters, "interpreted", lambda: False)
    model = fresh(torch_model)
    try:
        want, got = stock_and_ours(model, frames[1], input_color_format="bgr")
        assert_same(want, got)
        assert model.__dict__[STATE_ATTRIBUTE].logged == {"cpu-device"}
    finally:
        itp.uninstall()


# ---------------------------------------------------------------------- TRT adapter wiring


@pytest.fixture(scope="module")
def trt_class():
    from trt_stubs import install_stubs

    install_stubs()
    from inference_models.models.rfdetr.rfdetr_instance_segmentation_trt import RFDetrForInstanceSegmentationTRT

    return RFDetrForInstanceSegmentationTRT


def trt_instance(cls, torch_model, upstream_runtime=None):
    """An adapter instance with the attributes pre_process reads (no engine: none can load here)."""
    model = object.__new__(cls)
    model._device = torch_model._device
    model._inference_config = torch_model._inference_config
    model._fast_preprocess_enabled = upstream_runtime is not None
    model._fast_preprocess_runtime = upstream_runtime
    model._stream_pipeline_enabled = False
    return model


def test_trt_adapter_is_wrapped_on_import_and_serves_exact_tensors(trt_class, torch_model, frames, installed) -> None:
    assert getattr(trt_class.__dict__["pre_process"], "_triton_preproc_backend", None) == "trt"
    model = trt_instance(trt_class, torch_model)
    tensor, meta = model.pre_process([frames[0], frames[1]], input_color_format="bgr")
    itp.uninstall()
    want_tensor, want_meta = type(torch_model).pre_process(torch_model, [frames[0], frames[1]], input_color_format="bgr")
    assert torch.equal(tensor, want_tensor) and list(meta) == list(want_meta)
    # Pipelined prediction reads the metadata from the tensor; on the CPU there is no
    # event to hand off (the GPU tests check the event path).
    assert tensor._pre_processing_meta == meta
    assert getattr(model, "_fast_preproc_event", None) is None


def test_ours_wins_over_upstreams_triton_flag(trt_class, torch_model, frames, installed, caplog) -> None:
    class UpstreamRuntime:
        calls = 0

        def try_preprocess(self, **kwargs):
            UpstreamRuntime.calls += 1
            return None

    with caplog.at_level(logging.WARNING, logger="inference_triton_preproc"):
        model = trt_instance(trt_class, torch_model, UpstreamRuntime())
        model.pre_process(frames[1], input_color_format="bgr")
        model.pre_process(frames[1], input_color_format="bgr")
    assert UpstreamRuntime.calls == 0
    assert caplog.text.count("INFERENCE_MODELS_RFDETR_TRITON_PREPROC_ENABLED") == 1
