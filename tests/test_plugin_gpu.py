"""The plugin on a CUDA device (skipped on CPU-only machines).

* The real Torch adapter end to end (pre_process -> forward -> post_process), flag off
  vs flag on: identical detections.
* The real TRT adapter class (placeholder tensorrt/pycuda, no engine): the event
  hand-off to the inference stream, no buffer overwritten while a consumer still
  reads it, several threads sharing one model.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

import inference_triton_preproc as itp
from inference_triton_preproc.reference import preprocess_reference

pytestmark = pytest.mark.gpu
pytest.importorskip("inference_models")

from inference_triton_preproc.validate.default_model import default_model_path, load_sample_frames  # noqa: E402

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return load_sample_frames(limit=8)


@pytest.fixture(scope="module")
def torch_model():
    from inference_models import AutoModel

    return AutoModel.from_pretrained(str(default_model_path("torch")), device=torch.device("cuda"))


def detections(model, frames):
    tensor, meta = model.pre_process(frames, input_color_format="bgr")
    raw = model.forward(tensor)
    return model.post_process(raw, meta, confidence=0.4)


def test_torch_adapter_end_to_end_identical_detections(torch_model, frames) -> None:
    # Batched and single-frame forwards may differ on the GPU (other kernels), so each
    # is compared with its own flag-off run.
    def run_all():
        inputs = torch_model.pre_process(frames, input_color_format="bgr")[0]
        return inputs, [detections(torch_model, [f])[0] for f in frames] + detections(torch_model, frames[:4])

    itp.uninstall()
    want_inputs, want = run_all()
    assert itp.install(mode="auto")
    try:
        got_inputs, got = run_all()
    finally:
        itp.uninstall()
    assert torch.equal(want_inputs, got_inputs)
    assert sum(len(d.confidence) for d in want) > 0
    for a, b in zip(want, got):
        assert torch.equal(a.xyxy, b.xyxy)
        assert torch.equal(a.class_id, b.class_id)
        assert torch.equal(a.confidence, b.confidence)
        assert torch.equal(a.mask, b.mask)


@pytest.fixture(scope="module")
def trt_class():
    from trt_stubs import install_stubs

    install_stubs()
    from inference_models.models.rfdetr.rfdetr_instance_segmentation_trt import RFDetrForInstanceSegmentationTRT

    return RFDetrForInstanceSegmentationTRT


def trt_instance(cls, torch_model):
    model = object.__new__(cls)
    model._device = torch.device("cuda", torch.cuda.current_device())
    model._inference_config = torch_model._inference_config
    model._fast_preprocess_enabled = False
    model._stream_pipeline_enabled = False
    model._inference_stream = torch.cuda.Stream()
    return model


def reference(frame: np.ndarray) -> torch.Tensor:
    return preprocess_reference(frame, 312, mode="pil", mean=MEAN, std=STD)


def test_trt_hand_off_is_an_event_not_a_host_sync(trt_class, torch_model, frames) -> None:
    assert itp.install(mode="pil")
    try:
        model = trt_instance(trt_class, torch_model)
        tensor, meta = model.pre_process(frames[0], input_color_format="bgr")
        assert isinstance(model._fast_preproc_event, torch.cuda.Event)
        assert tensor._trt_ready_event is model._fast_preproc_event
        assert tensor._pre_processing_meta == meta
        with torch.cuda.stream(model._inference_stream):
            seen = tensor.clone()
        torch.cuda.synchronize()
        assert torch.equal(seen.cpu(), reference(frames[0]))
    finally:
        itp.uninstall()


def test_trt_buffers_not_overwritten_before_the_engine_read_them(trt_class, torch_model, frames) -> None:
    """A slow consumer on the inference stream still reads what it was handed."""
    assert itp.install(mode="pil")
    try:
        model = trt_instance(trt_class, torch_model)
        seen = []
        for frame in frames:
            tensor, _ = model.pre_process(frame, input_color_format="bgr")
            with torch.cuda.stream(model._inference_stream):
                torch.cuda._sleep(2_000_000)  # a slow engine: ~1 ms of spinning
                seen.append(tensor.clone())
            del tensor
        torch.cuda.synchronize()
        for frame, got in zip(frames, seen):
            assert torch.equal(got.cpu(), reference(frame))
    finally:
        itp.uninstall()


def test_trt_several_threads_share_one_model(trt_class, torch_model, frames) -> None:
    assert itp.install(mode="pil")
    errors: list[str] = []
    try:
        model = trt_instance(trt_class, torch_model)
        wanted = [reference(f) for f in frames]

        def worker(offset: int) -> None:
            for i in range(12):
                k = (i + offset) % len(frames)
                tensor, _ = model.pre_process(frames[k], input_color_format="bgr")
                with torch.cuda.stream(model._inference_stream):
                    torch.cuda._sleep(200_000)
                    copy = tensor.clone()
                del tensor
                model._inference_stream.synchronize()
                if not torch.equal(copy.cpu(), wanted[k]):
                    errors.append(f"thread {offset} call {i}")

        threads = [threading.Thread(target=worker, args=(o,)) for o in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        itp.uninstall()
    assert not errors
