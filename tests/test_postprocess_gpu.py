"""The post-processing switch on a CUDA device: 0 differing values or pixels against the stock CUDA path.

* The mask kernel against torchvision's CUDA resize, value for value: every RF-DETR mask
  grid into 1080p and 4K frames, odd sizes, fp32 and fp16, random logits including
  near-zero ones.
* The real Torch model (embedded random-weight package) on real photos and clip frames
  scaled to 1080p and 4K: fused vs stock ``post_process``, dense and RLE, batch 2, fp16.
* Random-logit sweeps with every RF-DETR size's grid and query count (and tied scores)
  through the stock functions the models call.
* The selection replayed from a CUDA graph against the direct launches, over repeated
  frames, on two threads with their own streams, and results kept across later frames.
"""

from __future__ import annotations

import sys

import cv2
import numpy as np
import pytest
import torch

import inference_triton_preproc as itp
from detections import assert_same_results, metadata
from inference_triton_preproc.kernels import postprocess as pp
from inference_triton_preproc.plugin import call_counts
from inference_triton_preproc.plugin import postprocess as plugin_pp
from inference_triton_preproc.runtime import selection as graphs
from photos import photo_at

pytestmark = pytest.mark.gpu
pytest.importorskip("inference_models")

from inference_triton_preproc.validate.default_model import default_model_path, load_sample_frames  # noqa: E402

CUDA = torch.device("cuda")
MODULE = "inference_models.models.rfdetr.rfdetr_instance_segmentation_pytorch"
DENSE, RLE = plugin_pp.FUNCTIONS
# RF-DETR seg sizes: (input, mask grid, queries), nano to 2xlarge.
SIZES = [(312, 78, 100), (384, 96, 100), (432, 108, 200), (504, 126, 200), (624, 156, 300), (768, 192, 300)]
FRAMES = [(1080, 1920), (2160, 3840), (720, 1280), (577, 771)]


@pytest.mark.parametrize("grid", [s[1] for s in SIZES])
@pytest.mark.parametrize("frame", FRAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_mask_values_equal_torchvision_on_cuda(grid, frame, dtype) -> None:
    generator = torch.Generator().manual_seed(grid + frame[0])
    logits = (torch.randn((8, grid, grid), generator=generator) * 3).to(CUDA, dtype)
    logits[1] *= 1e-4  # values next to the threshold
    index = torch.tensor([0, 1, 5, 5, 7], device=CUDA)
    geometry = pp.MaskGeometry((0, 0, grid, grid), frame, frame, (0, 0))
    values = pp.resize_masks(logits, index, geometry, binarize=False)
    stock = pp.resize_masks_torch(logits, index, geometry, binarize=False)
    assert int((values != stock).sum()) == 0
    assert torch.equal(pp.resize_masks(logits, index, geometry), stock > 0)


@pytest.fixture(scope="module")
def torch_model():
    from inference_models import AutoModel

    return AutoModel.from_pretrained(str(default_model_path("torch")), device=CUDA)


def _real_frames() -> list[np.ndarray]:
    clip = load_sample_frames(limit=40, stride=10)
    frames = [photo_at("astronaut", 1080, 1920), photo_at("coffee", 2160, 3840)]
    frames += [cv2.resize(f, (1920, 1080), interpolation=cv2.INTER_LINEAR) for f in clip[:2]]
    frames += [cv2.resize(clip[2], (3840, 2160), interpolation=cv2.INTER_LINEAR)]
    return frames


@pytest.fixture(scope="module")
def network_outputs(torch_model):
    itp.uninstall()
    out = []
    for frame in _real_frames():
        tensor, meta = torch_model.pre_process([frame], input_color_format="bgr")
        with torch.no_grad():
            out.append((torch_model.forward(tensor), meta))
    return out


def _stock_and_fused(call):
    itp.uninstall()
    want = call()
    torch.cuda.synchronize()
    assert itp.install(preprocess=False, postprocess=True, strict=True)
    before = call_counts().get("postprocess", 0)
    got = call()
    assert call_counts()["postprocess"] == before + 1
    itp.uninstall()
    return got, want


@pytest.mark.parametrize("mask_format", ["dense", "rle"])
@pytest.mark.parametrize("confidence", ["default", 0.3])
def test_model_post_process_on_real_frames(torch_model, network_outputs, mask_format, confidence) -> None:
    total = 0
    for results, meta in network_outputs:
        got, want = _stock_and_fused(lambda: torch_model.post_process(results, meta, mask_format=mask_format, confidence=confidence))
        assert_same_results(got, want)
        total += len(want[0])
    assert total > 0


def test_batch_of_two_and_fp16_outputs(torch_model, network_outputs) -> None:
    (first, meta1), (second, meta2) = network_outputs[0], network_outputs[2]
    keys = ("pred_boxes", "pred_logits", "pred_masks")
    batch = {k: torch.cat([first[k], second[k]]) for k in keys}
    half = {k: v.half() for k, v in batch.items()}
    for results in (batch, half):
        for mask_format in ("dense", "rle"):
            got, want = _stock_and_fused(
                lambda: torch_model.post_process(results, meta1 + meta2, mask_format=mask_format, confidence=0.3)
            )
            assert_same_results(got, want)


@pytest.mark.parametrize("size", SIZES, ids=[str(s[0]) for s in SIZES])
@pytest.mark.parametrize("name", [DENSE, RLE])
def test_random_logit_sweep_every_size(torch_model, size, name) -> None:
    side, grid, queries = size
    num_classes = len(torch_model.class_names)
    generator = torch.Generator().manual_seed(side)
    for trial, frame in enumerate([(1080, 1920), (2160, 3840)]):
        logits = torch.randn((1, queries, num_classes + 1), generator=generator) * 2 - 1
        logits[0, ::5, 1] = 30.0  # tied saturated scores
        masks = torch.randn((1, queries, grid, grid), generator=generator) * (1e-3 if trial else 4.0)
        boxes = torch.rand((1, queries, 4), generator=generator)
        kwargs = {
            "bboxes": boxes.to(CUDA),
            "logits": logits.to(CUDA),
            "masks": masks.to(CUDA),
            "pre_processing_meta": [metadata(frame, frame, inference=side)],
            "threshold": 0.5,
            "num_classes": num_classes,
            "classes_re_mapping": None,
            "max_detections": 60,
        }
        got, want = _stock_and_fused(lambda: getattr(sys.modules[MODULE], name)(**kwargs))
        assert_same_results(got, want)
        assert len(want[0]) > 10


def _direct(*args) -> list:
    selection = graphs.select_frame(*args)
    count, tied = selection.summary.tolist()
    return [getattr(selection, n)[:count] for n in ("confidence", "class_id", "query", "xyxy")] + [bool(tied)]


def _assert_fields_equal(got, want) -> None:
    *tensors, tied = got[:5]
    *references, reference_tied = want
    assert tied == reference_tied
    for ours, reference in zip(tensors, references, strict=True):
        assert ours.dtype == reference.dtype and torch.equal(ours, reference)


def _selection_inputs(queries: int, classes: int, dtype: torch.dtype, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn((queries, classes), generator=generator) * 3
    logits[::7, 1] = 30.0  # tied saturated scores
    boxes = torch.rand((queries, 4), generator=generator)
    return logits.to(CUDA, dtype), boxes.to(CUDA, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("per_class", [False, True])
@pytest.mark.parametrize("queries", [100, 300])
def test_selection_graph_replays_equal_direct_launches(dtype, per_class, queries) -> None:
    classes = 4
    runner = graphs.SelectionGraphs()
    mapping = torch.tensor([2, -1, 0, 1], dtype=torch.int32, device=CUDA)
    threshold = torch.tensor([0.3, 0.5, 0.7], device=CUDA, dtype=dtype) if per_class else 0.4
    geometry = pp.BoxGeometry((432, 432), (0, 54), (0.225, 0.225), None, (1920, 1080), False, True)
    for rule in (pp.ClassRule(pp.CLASSES_NAMED, num_classes=3), pp.ClassRule(pp.CLASSES_MAPPED, mapping=mapping)):
        kept, total = [], 0
        for seed in range(5):
            logits, boxes = _selection_inputs(queries, classes, dtype, seed)
            want = _direct(logits, boxes, rule, threshold, geometry)
            got = runner.select(logits, boxes, rule, threshold, geometry)
            _assert_fields_equal(got, want)
            kept.append((got, want))
            total += int(want[0].shape[0])
        # Captured on the second frame and replayed after: what earlier calls returned is theirs.
        for got, want in kept:
            _assert_fields_equal(got, want)
        assert total > 0
    assert len(runner._graphs) == 2


def test_a_failed_capture_runs_its_frames_directly(monkeypatch, caplog) -> None:
    runner = graphs.SelectionGraphs()
    rule = pp.ClassRule(pp.CLASSES_NAMED, num_classes=3)
    geometry = pp.BoxGeometry((432, 432), (0, 54), (0.225, 0.225), None, (1920, 1080), False, True)
    attempts = []

    def failing(work, device):
        attempts.append(device)
        raise RuntimeError("capture refused")

    monkeypatch.setattr(graphs, "capture_graph", failing)
    with caplog.at_level("WARNING", logger=graphs.__name__):
        for seed in range(4):
            logits, boxes = _selection_inputs(100, 4, torch.float32, seed)
            _assert_fields_equal(runner.select(logits, boxes, rule, 0.4, geometry), _direct(logits, boxes, rule, 0.4, geometry))
    # Tried once, on the second frame; logged once; the later frames ran directly.
    assert len(attempts) == 1 and len(runner._graphs) == 0
    assert caplog.text.count("could not be captured") == 1


@pytest.mark.parametrize("mask_bytes", [64 << 20, 3 * 1080 * 1920])
def test_selection_graph_masks_equal_the_direct_kernel(monkeypatch, mask_bytes) -> None:
    # Dense masks made inside the replayed graph (a fixed grid, the count read on the
    # device) against the kernel launched on the kept rows: equal, new tensors of exactly
    # those rows; none when the scores tie or the rows outnumber the graph's buffer.
    monkeypatch.setattr(graphs, "MASK_BUFFER_BYTES", mask_bytes)
    runner = graphs.SelectionGraphs()
    rule = pp.ClassRule(pp.CLASSES_NAMED, num_classes=3)
    geometry = pp.BoxGeometry((432, 432), (0, 0), (0.4, 0.4), None, (1920, 1080), False, True)
    mask_geometry = pp.MaskGeometry((0, 0, 108, 108), (1080, 1920), (1080, 1920), (0, 0))
    generator = torch.Generator().manual_seed(5)
    made, kept = 0, []
    for seed in range(8):
        logits, boxes = _selection_inputs(200, 4, torch.float32, seed)
        if seed % 2:
            logits[::7, 1] = torch.linspace(2, 6, logits[::7, 1].numel(), device=CUDA)  # no ties
        mask_logits = (torch.randn((200, 108, 108), generator=generator) * 2).to(CUDA)
        for limit in (None, 2):
            got = runner.select(logits, boxes, rule, 0.4, geometry, (mask_logits, mask_geometry), limit)
            _assert_fields_equal(got, _direct(logits, boxes, rule, 0.4, geometry))
            rows = int(got.query.shape[0]) if limit is None else min(limit, int(got.query.shape[0]))
            if seed == 0 and limit is None:  # first seen: run directly, captured on the next call
                assert got.masks is None
                continue
            if got.masks is None:
                assert got.tied or rows > graphs.mask_rows((1080, 1920), 200)
                continue
            assert not got.tied and got.masks.shape == (rows, 1080, 1920) and got.masks.is_contiguous()
            assert got.masks.untyped_storage().nbytes() == rows * 1080 * 1920
            kept.append((got.masks, pp.resize_masks(mask_logits, got.query[:rows], mask_geometry)))
            made += 1
    for ours, direct in kept:  # what earlier calls returned stays theirs
        assert torch.equal(ours, direct)
    assert made >= 4


class _Replays:
    """A captured graph that counts its replays."""

    def __init__(self, graph) -> None:
        self.graph, self.count = graph, 0

    def replay(self) -> None:
        self.count += 1
        self.graph.replay()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_selection_graph_ranked_first_then_the_top_k(dtype) -> None:
    # The ranked graph serves frames whose passing scores are distinct and within the
    # slots; the top-k graph (same buffers) the tied ones and those where removed
    # classes outscore the lowest passing one in more than Q slots. Equal to direct
    # launches either way, masks included.
    runner = graphs.SelectionGraphs()
    rule = pp.ClassRule(pp.CLASSES_NAMED, num_classes=3)
    geometry = pp.BoxGeometry((432, 432), (0, 0), (0.4, 0.4), None, (1920, 1080), False, True)
    mask_geometry = pp.MaskGeometry((0, 0, 108, 108), (1080, 1920), (1080, 1920), (0, 0))
    generator = torch.Generator().manual_seed(3)
    mask_logits = (torch.randn((100, 108, 108), generator=generator) * 2).to(CUDA)
    # Fewer passing scores than slots (and than the mask buffer's 32 rows), none above
    # sigmoid(5); then saturated ties; then a removed class scoring above every other in
    # every slot (the stock path keeps nothing).
    distinct = (torch.randn((100, 4), generator=generator) * 3 - 6).clamp(max=5.0)
    distinct[::7, 1] = torch.linspace(1, 3, distinct[::7, 1].numel())
    tied, cut = distinct.clone(), distinct.clone()
    tied[::7, 1] = 30.0
    cut[:, 3] = 12.0
    frames = {"distinct": distinct, "tied": tied, "cut by the top-k": cut}
    boxes = torch.rand((100, 4), generator=generator).to(CUDA, dtype)
    logits = {name: value.to(CUDA, dtype) for name, value in frames.items()}
    runner.select(logits["distinct"], boxes, rule, 0.4, geometry, (mask_logits, mask_geometry))
    runner.select(logits["distinct"], boxes, rule, 0.4, geometry, (mask_logits, mask_geometry))  # captured
    (key,) = runner._graphs.keys()
    captured = runner._graphs.get(key)
    captured.topk_graph = fallback = _Replays(captured.topk_graph)
    for name, frame in logits.items():
        before = fallback.count
        got = runner.select(frame, boxes, rule, 0.4, geometry, (mask_logits, mask_geometry))
        want = _direct(frame, boxes, rule, 0.4, geometry)
        _assert_fields_equal(got, want)
        if got.masks is not None:
            assert torch.equal(got.masks, pp.resize_masks(mask_logits, got.query, mask_geometry))
        tied = want[4]
        assert fallback.count - before == (1 if tied or name == "cut by the top-k" else 0), name
        if name == "cut by the top-k":
            assert want[0].numel() == 0
        elif name == "tied":
            assert tied and got.masks is None
        else:
            assert 0 < want[0].numel() and (tied or got.masks is not None)
            # float32 scores this far apart are distinct: the ranked graph served them.
            assert not tied or dtype == torch.float16


def test_selection_graph_shared_by_threads_on_their_own_streams() -> None:
    import threading

    runner = graphs.SelectionGraphs()
    rule = pp.ClassRule(pp.CLASSES_NAMED, num_classes=3)
    geometry = pp.BoxGeometry((432, 432), (0, 0), (0.4, 0.4), None, (1080, 1080), False, True)
    inputs = [_selection_inputs(300, 4, torch.float32, seed) for seed in range(16)]
    wants = [_direct(lg, bx, rule, 0.4, geometry) for lg, bx in inputs]
    runner.select(*inputs[0], rule, 0.4, geometry)
    runner.select(*inputs[0], rule, 0.4, geometry)  # captured
    torch.cuda.synchronize()
    failures: list[BaseException] = []

    def work(offset: int) -> None:
        try:
            with torch.cuda.stream(torch.cuda.Stream()):
                for round_ in range(10):
                    for i in range(offset, len(inputs), 2):
                        got = runner.select(*inputs[i], rule, 0.4, geometry)
                        _assert_fields_equal(got, wants[i])
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            failures.append(error)

    threads = [threading.Thread(target=work, args=(offset,)) for offset in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures
    assert len(runner._graphs) == 1


def test_selection_graphs_off_by_the_graphs_variable(monkeypatch) -> None:
    monkeypatch.setenv("RFDETR_TRITON_PREPROC_CUDA_GRAPHS", "0")
    runner = graphs.SelectionGraphs()
    rule = pp.ClassRule(pp.CLASSES_NAMED, num_classes=3)
    geometry = pp.BoxGeometry((432, 432), (0, 0), (0.4, 0.4), None, (1080, 1080), False, True)
    logits, boxes = _selection_inputs(100, 4, torch.float32, 0)
    want = _direct(logits, boxes, rule, 0.4, geometry)
    for _ in range(3):
        _assert_fields_equal(runner.select(logits, boxes, rule, 0.4, geometry), want)
    assert not runner._graphs
