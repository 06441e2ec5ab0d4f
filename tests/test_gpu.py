"""Compiled kernels on a CUDA device (skipped on CPU-only machines).

The interpreter-run tests in test_kernels.py run compiled on a GPU as well; these add
what only a GPU can check or afford: PyTorch's CUDA interpolation as the torch-mode
reference, a full sweep of RF-DETR squares from 1080p and 4K photos, and CUDA tensor
input.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from parity import TOLERANCE
from photos import photo_at

from inference_triton_preproc import IMAGENET_MEAN, IMAGENET_STD, preprocess
from inference_triton_preproc.kernels.resize import MODES
from inference_triton_preproc.reference import preprocess_reference

pytestmark = pytest.mark.gpu
SQUARES = [312, 384, 432, 504, 576, 624, 768]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("src", [(1080, 1920), (2160, 3840), (720, 1280), (1079, 1921)])
def test_rfdetr_squares_from_large_photos(mode: str, src) -> None:
    frame = photo_at("coffee", *src)
    for size in SQUARES:
        got = preprocess(frame, size, mode=mode).cpu()
        want = preprocess_reference(frame, size, mode=mode)
        assert (got - want).abs().max().item() <= TOLERANCE[mode], (src, size)


def test_torch_mode_against_cuda_interpolate(photos) -> None:
    mean = torch.tensor(IMAGENET_MEAN, device="cuda")[:, None, None]
    std = torch.tensor(IMAGENET_STD, device="cuda")[:, None, None]
    for frame in [photos["rocket"], photo_at("chelsea", 1080, 1920)]:
        rgb = torch.from_numpy(np.ascontiguousarray(frame[..., ::-1])).cuda()
        for size in SQUARES:
            x = F.interpolate(rgb.permute(2, 0, 1)[None].float(), size=(size, size), mode="bilinear", align_corners=False)
            want = (x / 255.0 - mean) / std
            got = preprocess(frame, size, mode="torch")
            assert (got - want).abs().max().item() <= 2e-6


@pytest.mark.parametrize("mode", MODES)
def test_random_shape_sweep(mode: str) -> None:
    rng = np.random.default_rng(1234)
    for _ in range(300):
        src = tuple(int(v) for v in rng.integers(1, 700, 2))
        dst = tuple(int(v) for v in rng.integers(1, 700, 2))
        frame = rng.integers(0, 256, (*src, 3), dtype=np.uint8)
        got = preprocess(frame, dst, mode=mode).cpu()
        want = preprocess_reference(frame, dst, mode=mode)
        assert (got - want).abs().max().item() <= TOLERANCE[mode], (src, dst)


def test_cuda_tensor_batch_one_launch_and_device_kept(photos) -> None:
    frames = torch.from_numpy(np.stack([photos["coffee"]] * 4)).cuda()
    got = preprocess(frames, 312)
    assert got.device == frames.device and got.shape == (4, 3, 312, 312)
    want = preprocess_reference([photos["coffee"]] * 4, 312)
    assert torch.equal(got.cpu(), want)


@pytest.mark.parametrize("mode", MODES)
def test_pool_frame_into_out_replays_a_cuda_graph_exactly(photos, mode: str) -> None:
    from inference_triton_preproc import api
    from inference_triton_preproc.runtime.pinned import PinnedFramePool

    pool = PinnedFramePool(shape=(1080, 1920, 3), capacity=2)
    outs = [torch.empty((1, 3, 312, 312), device="cuda") for _ in range(3)]
    sources = [photo_at(name, 1080, 1920) for name in ("coffee", "rocket", "chelsea", "astronaut")]
    before = len(api._GRAPHS)
    for step in range(12):
        frame = pool.acquire()
        frame[...] = sources[step % 4]
        out = outs[step % 3]
        assert preprocess(frame, 312, mode=mode, out=out) is out
        del frame
        want = preprocess_reference(sources[step % 4], 312, mode=mode)
        assert (out.cpu() - want).abs().max().item() <= TOLERANCE[mode], step
    # At most one graph per (pool buffer, output buffer) pair.
    assert len(api._GRAPHS) - before <= 6


def test_graph_replay_hits_only_calls_with_equal_arguments(photos) -> None:
    """A replayed graph skips every check, so each argument must pick its own graph."""
    from inference_triton_preproc.runtime.pinned import PinnedFramePool

    pool = PinnedFramePool(shape=(1080, 1920, 3), capacity=2)
    source = photo_at("rocket", 1080, 1920)
    out = torch.empty((1, 3, 312, 312), device="cuda")
    out16 = torch.empty((1, 3, 312, 312), device="cuda", dtype=torch.float16)
    calls = [
        {},
        {"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)},
        {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},  # unhashable: the checked path
        {"input_color": "rgb"},
        {"mode": "cv2"},
    ]
    frame = pool.acquire()
    frame[...] = source
    for _ in range(2):  # the second round replays what the first captured
        for kwargs in calls:
            assert preprocess([frame], 312, out=out, **kwargs) is out
            assert torch.equal(out.cpu(), preprocess_reference(source, 312, **kwargs))
        assert preprocess(frame, 312, out=out16, out_dtype=torch.float16) is out16
        assert torch.equal(out16.cpu(), preprocess_reference(source, 312, out_dtype=torch.float16))
    # A wrong out is still refused on a call whose frame and size were replayed before.
    with pytest.raises(ValueError, match="out"):
        preprocess(frame, 312, out=torch.empty((1, 3, 300, 300), device="cuda"))


@pytest.mark.parametrize("in_graph", [True, False], ids=["read-recorded-by-the-graph", "read-recorded-after-replay"])
def test_graph_replay_marks_the_pool_frame_as_read(monkeypatch, in_graph: bool) -> None:
    from inference_triton_preproc import api
    from inference_triton_preproc.runtime import pinned

    if in_graph and not pinned.GRAPHS_RECORD_READS:
        pytest.skip("this torch has no external CUDA events")
    monkeypatch.setattr(pinned, "GRAPHS_RECORD_READS", in_graph)
    monkeypatch.setattr(api, "GRAPHS_RECORD_READS", in_graph)
    api._GRAPHS.clear()
    pool = pinned.PinnedFramePool(shape=(1080, 1920, 3), capacity=2)
    out = torch.empty((1, 3, 624, 624), device="cuda")
    frame = pool.acquire()
    frame[...] = 7
    preprocess(frame, 624, out=out)  # captures
    buffer = next(b for b in pool._buffers if b.leased)
    torch.cuda.synchronize()
    records = []
    record = torch.cuda.Event.record
    monkeypatch.setattr(torch.cuda.Event, "record", lambda self, *a: records.append(self) or record(self, *a))
    for _ in range(2):  # replays: each must leave the buffer marked busy until it ran
        torch.cuda._sleep(20_000_000)  # keep the stream busy well past the host's next lines
        preprocess(frame, 624, out=out)
        assert not buffer.gpu_idle()
        torch.cuda.synchronize()
        assert buffer.gpu_idle()
    # A replay that records the read inside the graph makes no host call for it.
    assert len(records) == (0 if in_graph else 2)


@pytest.mark.parametrize("strategy", ["pageable", "staging", "chunked"])
def test_host_frames_into_out_replay_kernel_graphs_exactly(monkeypatch, strategy: str) -> None:
    from inference_triton_preproc import api

    monkeypatch.setenv("RFDETR_TRITON_PREPROC_INGEST", strategy)
    api._GRAPHS.clear()  # count only this test's graphs
    sources = [photo_at(name, 1080, 1920) for name in ("coffee", "rocket", "chelsea", "astronaut")]
    outs = [torch.empty((1, 3, 432, 432), device="cuda") for _ in range(2)]
    for step in range(10):
        out = outs[step % 2]
        assert preprocess(sources[step % 4], 432, out=out) is out
        assert torch.equal(out.cpu(), preprocess_reference(sources[step % 4], 432)), step
    # One kernel graph per (ring slot, output buffer) pair at most.
    kernel_graphs = [k for k in api._GRAPHS.keys() if k[0] == "kernel"]
    assert 0 < len(kernel_graphs) <= 6
    # A batch into a given out, and frames from a tensor on the device, stay exact.
    batch = torch.empty((2, 3, 432, 432), device="cuda")
    preprocess(sources[:2], 432, out=batch)
    assert torch.equal(batch.cpu(), preprocess_reference(sources[:2], 432))
    on_device = torch.from_numpy(sources[2]).cuda()
    preprocess(on_device, 432, out=outs[0])
    assert torch.equal(outs[0].cpu(), preprocess_reference(sources[2], 432))


def test_pool_graphs_on_two_streams_keep_separate_copy_buffers() -> None:
    """Graphs replayed on one stream share a device copy of the frame; another stream
    running at the same time must get its own."""
    from inference_triton_preproc.runtime.pinned import PinnedFramePool

    pool = PinnedFramePool(shape=(1080, 1920, 3), capacity=2)
    sources = [photo_at("coffee", 1080, 1920), photo_at("rocket", 1080, 1920)]
    frames = [pool.acquire() for _ in sources]
    for frame, source in zip(frames, sources):
        frame[...] = source
    outs = [torch.empty((1, 3, 432, 432), device="cuda") for _ in sources]
    streams = [torch.cuda.Stream(), torch.cuda.Stream()]
    for _ in range(4):
        for i, stream in enumerate(streams):
            with torch.cuda.stream(stream):
                if i == 0:
                    torch.cuda._sleep(5_000_000)  # stream 0's replay runs while stream 1's does
                preprocess(frames[i], 432, out=outs[i])
    torch.cuda.synchronize()
    for out, source in zip(outs, sources):
        assert torch.equal(out.cpu(), preprocess_reference(source, 432))
