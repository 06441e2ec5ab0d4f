"""The post-processing switch at the model level: fused vs stock ``post_process``, exactly (CPU, interpreter).

The real Torch and ONNX RF-DETR segmentation models (the embedded random-weight package)
produce the network outputs; the stock functions inference-models' ``post_process``
calls are the reference. Metadata variants (letterbox padding, static crops pasted on a
canvas, reduced mask resolution) are built by hand around the same outputs.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator

import numpy as np
import pytest
import torch

import inference_triton_preproc as itp
from detections import assert_same_results, metadata
from inference_triton_preproc.plugin import call_counts, package
from inference_triton_preproc.plugin import postprocess as plugin_pp
from inference_triton_preproc.plugin.fallbacks import FallbackError
from inference_triton_preproc.validate.default_model import default_model_path
from photos import photo_at

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="CPU-interpreter tests; the CUDA paths are in test_postprocess_gpu.py")

CPU = torch.device("cpu")
MODULE = "inference_models.models.rfdetr.rfdetr_instance_segmentation_pytorch"
DENSE, RLE = plugin_pp.FUNCTIONS


@pytest.fixture(scope="module")
def torch_model():
    from inference_models import AutoModel

    return AutoModel.from_pretrained(str(default_model_path("torch")), device=CPU)


@pytest.fixture(scope="module")
def outputs(torch_model):
    """Network outputs and metadata of a batch of two real photos (96x128 and 80x60)."""
    frames = [photo_at("astronaut", 96, 128), photo_at("coffee", 80, 60)]
    itp.uninstall()
    tensor, meta = torch_model.pre_process(frames, input_color_format="bgr")
    with torch.no_grad():
        return torch_model.forward(tensor), meta


@pytest.fixture(autouse=True)
def _uninstalled_after() -> Iterator[None]:
    """No test leaves the plugin installed for the files after this one."""
    yield
    itp.uninstall()


@pytest.fixture
def fused():
    # Uninstalled after the test by _uninstalled_after.
    itp.uninstall()
    assert itp.install(preprocess=False, postprocess=True, strict=False)


def _counts_delta(before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in call_counts().items() if v != before.get(k, 0)}


def stock_and_fused(model, results, meta, **kwargs):
    itp.uninstall()
    want = model.post_process(results, meta, **kwargs)
    assert itp.install(preprocess=False, postprocess=True, strict=True)
    before = call_counts()
    got = model.post_process(results, meta, **kwargs)
    return got, want, _counts_delta(before)


@pytest.mark.parametrize("mask_format", ["dense", "rle"])
@pytest.mark.parametrize("confidence", ["default", 0.2, 0.97])
def test_model_post_process_is_exact(torch_model, outputs, mask_format, confidence) -> None:
    results, meta = outputs
    got, want, served = stock_and_fused(torch_model, results, meta, mask_format=mask_format, confidence=confidence)
    assert_same_results(got, want)
    assert served == {"postprocess": 1}
    if confidence == 0.97:
        assert all(len(d) == 0 for d in want)  # zero detections is covered
    if confidence == 0.2:
        assert all(len(d) > 5 for d in want)


def test_max_detections_and_reduced_mask_resolution(torch_model, outputs) -> None:
    results, meta = outputs
    for kwargs in ({"max_detections": 3}, {"masks_resolution_factor": 0.5}, {"masks_resolution_factor": 0.0}):
        for mask_format in ("dense", "rle"):
            got, want, _ = stock_and_fused(torch_model, results, meta, mask_format=mask_format, confidence=0.2, **kwargs)
            assert_same_results(got, want)


def test_onnx_model_and_fp16_outputs(outputs) -> None:
    from inference_models import AutoModel

    onnx_model = AutoModel.from_pretrained(
        str(default_model_path("onnx")), device=CPU, onnx_execution_providers=["CPUExecutionProvider"]
    )
    results, meta = outputs
    # The ONNX model's forward returns (boxes, logits, masks), the Torch model's a dict.
    results = tuple(results[k] for k in ("pred_boxes", "pred_logits", "pred_masks"))
    for mask_format in ("dense", "rle"):
        got, want, served = stock_and_fused(onnx_model, results, meta, mask_format=mask_format, confidence=0.2)
        assert_same_results(got, want)
        assert served == {"postprocess": 1}
    half = tuple(v.half() for v in results)
    for mask_format in ("dense", "rle"):
        got, want, _ = stock_and_fused(onnx_model, half, meta, mask_format=mask_format, confidence=0.2)
        assert_same_results(got, want)
        assert want[0].confidence.dtype == torch.float16


# Letterbox padding (two-step preprocessing), a static crop pasted on the original frame.
METAS = {
    "letterbox": [metadata((90, 160), (90, 160), pad=(0, 69, 0, 68)), metadata((150, 100), (150, 100), pad=(52, 0, 52, 0))],
    "static-crop": [metadata((120, 200), (96, 128), crop_xy=(41, 13)), metadata((80, 70), (80, 60), crop_xy=(0, 0))],
}


def _module_call(name: str, results, meta, **kwargs):
    module = sys.modules[MODULE]
    return getattr(module, name)(
        bboxes=results["pred_boxes"],
        logits=results["pred_logits"],
        masks=results["pred_masks"],
        pre_processing_meta=meta,
        **kwargs,
    )


def _stock_and_fused_function(name, results, meta, **kwargs):
    itp.uninstall()
    want = _module_call(name, results, meta, **kwargs)
    assert itp.install(preprocess=False, postprocess=True, strict=True)
    before = call_counts()
    got = _module_call(name, results, meta, **kwargs)
    assert _counts_delta(before) == {"postprocess": 1}
    return got, want


@pytest.mark.parametrize("name", [DENSE, RLE])
@pytest.mark.parametrize("variant", sorted(METAS))
def test_padding_and_canvas_paste(torch_model, outputs, name, variant) -> None:
    results, _ = outputs
    kwargs = {"threshold": 0.2, "num_classes": len(torch_model.class_names), "classes_re_mapping": None}
    got, want = _stock_and_fused_function(name, results, METAS[variant], **kwargs)
    assert_same_results(got, want)
    assert any(len(d) for d in want)


@pytest.mark.parametrize("name", [DENSE, RLE])
def test_per_class_thresholds_and_class_remapping(torch_model, outputs, name) -> None:
    from inference_models.models.rfdetr.class_remapping import ClassesReMapping

    results, meta = outputs
    num_logit_classes = results["pred_logits"].shape[-1]
    num_classes = len(torch_model.class_names)
    thresholds = torch.linspace(0.1, 0.6, num_classes)
    # Drop every third class and renumber the rest, as a package's class_names_operations would.
    remaining = [c for c in range(num_classes) if c % 3]
    mapping = torch.full((num_logit_classes,), -1, dtype=torch.long)
    mapping[remaining] = torch.arange(len(remaining))
    remapping = ClassesReMapping(remaining_class_ids=torch.tensor(remaining), class_mapping=mapping)
    for threshold, remap in ((thresholds, None), (0.2, remapping), (thresholds[: len(remaining)], remapping)):
        got, want = _stock_and_fused_function(
            name, results, meta, threshold=threshold, num_classes=num_classes, classes_re_mapping=remap, max_detections=50
        )
        assert_same_results(got, want)


@pytest.mark.parametrize("name", [DENSE, RLE])
def test_tied_and_saturated_scores(torch_model, outputs, name) -> None:
    results, meta = outputs
    tied = {k: results[k].clone() for k in ("pred_boxes", "pred_logits", "pred_masks")}
    # Saturated sigmoids: many (query, class) pairs score exactly 1.0, so top-k and the
    # unstable sort decide the order and which pair takes the last slot.
    tied["pred_logits"][:, ::3, :4] = 40.0
    tied["pred_logits"][:, 1::7, 2] = 0.0
    got, want = _stock_and_fused_function(
        name, tied, meta, threshold=0.4, num_classes=len(torch_model.class_names), classes_re_mapping=None, max_detections=40
    )
    assert_same_results(got, want)
    assert (want[0].confidence == 1.0).sum() > 10


def test_fallbacks_give_the_stock_result_with_their_reason(torch_model, outputs, monkeypatch, caplog) -> None:
    results, meta = outputs
    kwargs = {"threshold": 0.3, "num_classes": len(torch_model.class_names), "classes_re_mapping": None}
    itp.uninstall()
    want = _module_call(DENSE, results, meta, **kwargs)
    want_rle = _module_call(RLE, results, meta, **kwargs)
    common = sys.modules[plugin_pp.COMMON_MODULE]
    cases = {
        "dtype": lambda: {"results": {k: results[k].double() for k in ("pred_boxes", "pred_logits", "pred_masks")}},
        "negative-padding": lambda: {"meta": [metadata((96, 128), (96, 128), pad=(-8, 0, 0, 0)), meta[1]]},
        "upstream-triton": lambda: monkeypatch.setattr(common, "_TRITON_POSTPROC_ENABLED", True, raising=False),
        "resize-mismatch": lambda: monkeypatch.setattr(plugin_pp, "_resize_matches", lambda *a: False),
        "cpu-device": lambda: monkeypatch.setattr(plugin_pp, "interpreted", lambda: False),
        "many-queries": lambda: monkeypatch.setattr(plugin_pp.kernels, "MAX_CANDIDATES", 8),
    }
    for reason, arrange in cases.items():
        with monkeypatch.context() as patch_context:
            monkeypatch = patch_context
            # Plans of earlier calls were made without the change each case arranges.
            monkeypatch.setattr(plugin_pp, "_plans", plugin_pp.LruCache(plugin_pp._plans.capacity))
            change = arrange() or {}
            call_results, call_meta = change.get("results", results), change.get("meta", meta)
            name = RLE if reason == "upstream-triton" else DENSE
            itp.uninstall()
            stock = _module_call(name, call_results, call_meta, **kwargs)
            assert itp.install(preprocess=False, postprocess=True, strict=False)
            before = call_counts()
            with caplog.at_level(logging.INFO, logger=plugin_pp.__name__):
                got = _module_call(name, call_results, call_meta, **kwargs)
            assert_same_results(got, stock)
            assert _counts_delta(before) == {f"postprocess:{reason}": 1}, reason
            assert plugin_pp.FALLBACK_REASONS[reason] in caplog.text
            itp.uninstall()
            assert itp.install(preprocess=False, postprocess=True, strict=True)
            with pytest.raises(FallbackError, match=plugin_pp.FALLBACK_REASONS[reason].split(" (")[0]):
                _module_call(name, call_results, call_meta, **kwargs)
    assert want and want_rle


def test_kernel_error_turns_the_fused_path_off(torch_model, outputs, monkeypatch) -> None:
    results, meta = outputs
    kwargs = {"threshold": 0.3, "num_classes": len(torch_model.class_names), "classes_re_mapping": None}
    itp.uninstall()
    want = _module_call(DENSE, results, meta, **kwargs)
    assert itp.install(preprocess=False, postprocess=True, strict=False)

    def broken(*args, **kw):
        raise RuntimeError("no launch")

    working = plugin_pp.kernels.resize_masks
    monkeypatch.setattr(plugin_pp.kernels, "resize_masks", broken)
    before = call_counts()
    try:
        assert_same_results(_module_call(DENSE, results, meta, **kwargs), want)
        monkeypatch.setattr(plugin_pp.kernels, "resize_masks", working)
        # The kernels work again, but the fused path stays off for the process.
        assert_same_results(_module_call(DENSE, results, meta, **kwargs), want)
        assert _counts_delta(before) == {"postprocess:kernel-error": 2}
    finally:
        plugin_pp._disabled = None


def test_switch_alone_patches_only_post_processing(torch_model) -> None:
    module = sys.modules[MODULE]
    cls = type(torch_model)
    itp.uninstall()
    stock_pre, stock_dense = cls.__dict__["pre_process"], module.__dict__[DENSE]
    assert itp.install(preprocess=False, postprocess=True)
    assert cls.__dict__["pre_process"] is stock_pre
    assert module.__dict__[DENSE].__wrapped__ is stock_dense
    assert itp.install(postprocess=True)  # both switches
    assert cls.__dict__["pre_process"].__wrapped__ is stock_pre and module.__dict__[DENSE].__wrapped__ is stock_dense
    assert itp.install(postprocess=False)  # preprocessing alone
    assert module.__dict__[DENSE] is stock_dense
    itp.uninstall()
    assert cls.__dict__["pre_process"] is stock_pre and module.__dict__[DENSE] is stock_dense


def test_env_variable_is_read_and_checked(monkeypatch) -> None:
    itp.uninstall()
    monkeypatch.setenv("RFDETR_TRITON_FULLPOSTPROC", "1")
    monkeypatch.delenv("RFDETR_USE_TRITON_PREPROC", raising=False)
    from inference_triton_preproc.plugin import install_from_env

    assert install_from_env()
    assert sys.modules[MODULE].__dict__[DENSE].__wrapped__ is not None
    itp.uninstall()
    monkeypatch.setenv("RFDETR_TRITON_FULLPOSTPROC", "sometimes")
    with pytest.raises(ValueError, match="RFDETR_TRITON_FULLPOSTPROC='sometimes' is not valid"):
        install_from_env()
    assert not itp.is_installed()


def test_unsupported_inference_models_leaves_post_processing_alone(monkeypatch, caplog) -> None:
    itp.uninstall()
    stock = sys.modules[MODULE].__dict__[DENSE]
    monkeypatch.setattr(package, "host_version", lambda host=package.HOST: "0.40.1")
    with caplog.at_level(logging.WARNING):
        assert itp.install(preprocess=False, postprocess=True) is False
    assert "outside the supported range" in caplog.text
    assert sys.modules[MODULE].__dict__[DENSE] is stock


def test_batch_results_keep_their_frames(torch_model, outputs, fused) -> None:
    results, meta = outputs
    got = torch_model.post_process(results, meta, mask_format="dense", confidence=0.2)
    assert [tuple(d.mask.shape[1:]) for d in got] == [(96, 128), (80, 60)]
    assert np.all([d.xyxy.dtype == torch.int32 for d in got])


class _UnhashableMeta(tuple):
    """Metadata that cannot be a key (inference-models' own is a hashable named tuple)."""

    __hash__ = None  # type: ignore[assignment]

    def __getattr__(self, name):
        return getattr(self[0], name)


def test_a_call_is_planned_once_per_combination(torch_model, outputs, monkeypatch, fused) -> None:
    results, meta = outputs
    monkeypatch.setattr(plugin_pp, "_plans", plugin_pp.LruCache(plugin_pp._plans.capacity))
    planned = []
    plan = plugin_pp._plan
    monkeypatch.setattr(plugin_pp, "_plan", lambda args, rle, upstream: planned.append(rle) or plan(args, rle, upstream))
    shifted = [meta[0]._replace(pad_left=meta[0].pad_left + 2), meta[1]]
    unhashable = [_UnhashableMeta((m,)) for m in meta]
    itp.uninstall()
    want = {c: torch_model.post_process(results, meta, confidence=c) for c in (0.2, 0.3)}
    want_shifted = torch_model.post_process(results, shifted, confidence=0.2)
    assert itp.install(preprocess=False, postprocess=True, strict=True)
    for confidence in (0.2, 0.2, 0.3, 0.2, 0.3):
        assert_same_results(torch_model.post_process(results, meta, confidence=confidence), want[confidence])
    # One plan per threshold, reused while the installation lasts.
    assert planned == [False, False]
    assert_same_results(torch_model.post_process(results, shifted, confidence=0.2), want_shifted)
    assert len(planned) == 3
    itp.uninstall()
    assert itp.install(preprocess=False, postprocess=True, strict=True)
    assert_same_results(torch_model.post_process(results, meta, confidence=0.2), want[0.2])
    assert len(planned) == 3  # plans outlive an installation (the benchmark reinstalls per call)
    # Metadata that cannot be a key is planned for each call.
    for _ in range(2):
        assert_same_results(torch_model.post_process(results, unhashable, confidence=0.2), want[0.2])
    assert len(planned) == 5


def test_dense_and_rle_calls_with_the_same_arguments_keep_their_own_plans(torch_model, outputs, monkeypatch) -> None:
    # One process may serve both formats with the same arguments (a server answering dense
    # and RLE requests). With this remapping they select differently: the mapping numbers
    # every class, which RLE keeps, while dense keeps only the remaining ones.
    from inference_models.models.rfdetr.class_remapping import ClassesReMapping

    monkeypatch.setattr(plugin_pp, "_plans", plugin_pp.LruCache(plugin_pp._plans.capacity))
    results, meta = outputs
    num_logit_classes = results["pred_logits"].shape[-1]
    num_classes = len(torch_model.class_names)
    remaining = [c for c in range(num_classes) if c % 2]
    remapping = ClassesReMapping(remaining_class_ids=torch.tensor(remaining), class_mapping=torch.arange(num_logit_classes))
    kwargs = {"threshold": 0.2, "num_classes": num_classes, "classes_re_mapping": remapping, "max_detections": 50}
    classes = {}
    for name in (DENSE, RLE, DENSE, RLE):
        got, want = _stock_and_fused_function(name, results, meta, **kwargs)
        assert_same_results(got, want)
        classes[name] = {int(c) for d in want for c in d.class_id}
    assert classes[DENSE] != classes[RLE]
