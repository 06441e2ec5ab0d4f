"""Frame ingest strategies, the page-locked frame pool and the pinned video source.

CPU tests run the strategies' code paths on host tensors (the interpreter's device);
``gpu`` tests check what only CUDA can show: page-locked memory, asynchrony, events
guarding reuse, and no allocation after warm-up.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
import warnings

import cv2
import numpy as np
import pytest
import torch

from inference_triton_preproc import preprocess
from inference_triton_preproc._assets import sample_video_path
from inference_triton_preproc.api import resolve_device
from inference_triton_preproc.reference import preprocess_reference
from inference_triton_preproc.runtime import (
    CHUNKED_MIN_BYTES,
    INGEST_CHOICES,
    INGEST_ENV,
    STRATEGIES,
    FrameIngest,
    PinnedFramePool,
    PinnedVideoFrameProducer,
    PoolClosedError,
    PoolExhaustedError,
    auto_strategy,
    default_ingest,
    parse_ingest_strategy,
    pinned_video_source,
    pool_of,
)
from inference_triton_preproc.runtime import pinned as pinned_module

DEVICE = resolve_device(None)


def address(array: np.ndarray) -> int:
    return int(array.__array_interface__["data"][0])


def clip_frames(n: int | None = None) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(sample_video_path()))
    frames = []
    while n is None or len(frames) < n:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    """Three real frames, cropped to an odd size so row chunks are uneven."""
    return [np.ascontiguousarray(f[100:137, 200:253]) for f in clip_frames(3)]


VARIANTS = {
    "contiguous": lambda f: f,
    "columns reversed": lambda f: f[:, ::-1],
    "rows reversed": lambda f: f[::-1],
    "channels reversed": lambda f: f[..., ::-1],
    "roi": lambda f: f[3:30, 5:40],
    "tensor": lambda f: torch.from_numpy(f),
}


# --------------------------------------------------------------------------------------
# Strategy selection
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [*INGEST_CHOICES, " Chunked ", "PINNED"])
def test_parse_accepts_every_choice(value) -> None:
    assert parse_ingest_strategy(value) == value.strip().lower()


@pytest.mark.parametrize("value", [None, "", "  "])
def test_parse_defaults_to_auto(value) -> None:
    assert parse_ingest_strategy(value) == "auto"


def test_parse_rejects_unknown_naming_variable_and_choices() -> None:
    with pytest.raises(ValueError, match=INGEST_ENV) as error:
        parse_ingest_strategy("zero-copy")
    assert all(choice in str(error.value) for choice in INGEST_CHOICES)


def test_env_is_read_at_every_upload(monkeypatch, frames) -> None:
    ingest = FrameIngest("cpu")
    for strategy in STRATEGIES:
        monkeypatch.setenv(INGEST_ENV, strategy)
        assert ingest.upload(frames[:2]).strategies == (strategy, strategy)
    monkeypatch.setenv(INGEST_ENV, "fastest")
    with pytest.raises(ValueError, match=INGEST_ENV):
        ingest.upload(frames[:2])


def test_default_ingest_is_per_thread() -> None:
    mine = default_ingest(DEVICE)
    assert default_ingest(DEVICE) is mine
    other: list[FrameIngest] = []
    thread = threading.Thread(target=lambda: other.append(default_ingest(DEVICE)))
    thread.start()
    thread.join()
    assert other[0] is not mine and other[0].strategy is None


def test_invalid_env_fails_preprocess(monkeypatch, frames) -> None:
    monkeypatch.setenv(INGEST_ENV, "nope")
    with pytest.raises(ValueError, match=INGEST_ENV):
        preprocess(frames[0], 8, device=DEVICE)


def test_auto_policy() -> None:
    assert auto_strategy(10, page_locked=True) == "pinned"
    assert auto_strategy(CHUNKED_MIN_BYTES * 4, page_locked=True) == "pinned"
    assert auto_strategy(CHUNKED_MIN_BYTES - 1, page_locked=False) == "pageable"
    assert auto_strategy(CHUNKED_MIN_BYTES, page_locked=False) == "chunked"
    # 1080p goes chunked, 720p does not (the measured crossover lies in between).
    assert auto_strategy(1080 * 1920 * 3, page_locked=False) == "chunked"
    assert auto_strategy(720 * 1280 * 3, page_locked=False) == "pageable"


def test_read_only_frames_are_staged_without_warnings(frames) -> None:
    frame = frames[0].copy()
    frame.flags.writeable = False
    for strategy in ("staging", "chunked"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            got = FrameIngest("cpu", strategy=strategy).upload([frame, frames[1]]).tensor
        assert torch.equal(got[0], torch.from_numpy(frames[0]))


# --------------------------------------------------------------------------------------
# Ingest on the CPU device
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("strategy", INGEST_CHOICES)
def test_strategies_give_identical_batches(strategy, variant, frames) -> None:
    batch = [VARIANTS[variant](f) for f in frames]
    want = torch.from_numpy(np.stack([np.ascontiguousarray(np.asarray(f)) for f in batch]))
    ingest = FrameIngest("cpu", strategy=strategy)
    for _ in range(4):  # past one round of the ring
        assert torch.equal(ingest.upload(batch).wait(), want)
        assert torch.equal(ingest.upload(batch[:1]).wait(), want[:1])


@pytest.mark.parametrize("height", [1, 2, 3, 5])
def test_chunked_handles_frames_shorter_than_the_chunk_count(height) -> None:
    frame = np.arange(height * 4 * 3, dtype=np.uint8).reshape(height, 4, 3)
    got = FrameIngest("cpu", strategy="chunked").upload([frame, frame[::-1]]).tensor
    assert torch.equal(got, torch.from_numpy(np.stack([frame, frame[::-1].copy()])))


def test_lone_frame_is_viewed_not_copied_on_cpu(frames) -> None:
    ingest = FrameIngest("cpu", strategy="auto")
    result = ingest.upload([frames[0]])
    assert result.strategies == ("view",) and result.tensor.data_ptr() == address(frames[0])
    tensor = torch.from_numpy(frames[1])
    assert ingest.upload([tensor]).tensor.data_ptr() == tensor.data_ptr()


def test_ring_reuses_its_buffers_and_flags_stale_uploads(frames) -> None:
    ingest = FrameIngest("cpu", strategy="pageable", ring_size=3)
    uploads = [ingest.upload(frames[:2]) for _ in range(7)]
    assert len({u.tensor.data_ptr() for u in uploads}) == 3
    uploads[-1].wait()
    uploads[-1].record_consumed()
    with pytest.raises(RuntimeError, match="ring_size"):
        uploads[0].wait()


def test_rings_are_bounded_per_shape(frames) -> None:
    ingest = FrameIngest("cpu", strategy="staging", max_shapes=2)
    for height in (10, 11, 12, 13):
        ingest.upload([frames[0][:height], frames[1][:height]])
    assert len(ingest._rings) == 2


def test_upload_rejects_mixed_sizes(frames) -> None:
    with pytest.raises(ValueError, match="one size"):
        FrameIngest("cpu").upload([frames[0], frames[1][:10]])
    with pytest.raises(ValueError, match="at least one"):
        FrameIngest("cpu").upload([])


@pytest.mark.parametrize("strategy", INGEST_CHOICES)
def test_preprocess_stays_exact_with_every_strategy(monkeypatch, strategy, frames) -> None:
    monkeypatch.setenv(INGEST_ENV, strategy)
    images = [frames[0], frames[1][:, ::-1], frames[2]]
    got = preprocess(images, (12, 16), mode="pil", device=DEVICE)
    assert torch.equal(got.cpu(), preprocess_reference(images, (12, 16), mode="pil"))


# --------------------------------------------------------------------------------------
# PinnedFramePool
# --------------------------------------------------------------------------------------

SHAPE = (6, 10, 3)


def test_pool_hands_out_distinct_writable_frames() -> None:
    pool = PinnedFramePool(SHAPE, capacity=3)
    held = [pool.acquire() for _ in range(3)]
    for frame in held:
        assert frame.shape == SHAPE and frame.dtype == np.uint8
        assert frame.flags.c_contiguous and frame.flags.writeable
    assert len({address(f) for f in held}) == 3
    assert pool.in_use == 3 and pool_of(held[0]) is pool


def test_pool_recycles_a_frame_once_dropped() -> None:
    pool = PinnedFramePool(SHAPE, capacity=2, max_capacity=2, timeout=0.05)
    first, second = pool.acquire(), pool.acquire()
    where = address(first)
    del first
    assert address(pool.acquire()) == where
    del second


def test_pool_never_reuses_a_frame_a_view_still_references() -> None:
    pool = PinnedFramePool(SHAPE, capacity=2, max_capacity=2, timeout=0.05)
    first, _second = pool.acquire(), pool.acquire()
    view = first[1:, ::-1]
    where = address(first)
    del first
    gc.collect()
    assert pool_of(view) is pool
    with pytest.raises(PoolExhaustedError):
        pool.acquire()
    del view
    assert address(pool.acquire()) == where


def test_pool_grows_to_its_bound_with_one_warning_then_times_out(caplog) -> None:
    pool = PinnedFramePool(SHAPE, capacity=2, max_capacity=4, timeout=0.05)
    with caplog.at_level(logging.DEBUG, logger=pinned_module.__name__):
        held = [pool.acquire() for _ in range(4)]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "raise its capacity" in warnings[0].getMessage()
    assert pool.capacity == 4
    start = time.monotonic()
    with pytest.raises(PoolExhaustedError, match="4 frames"):
        pool.acquire()
    assert time.monotonic() - start >= 0.05
    assert len(held) == 4


def test_blocked_acquire_wakes_when_a_frame_is_released() -> None:
    pool = PinnedFramePool(SHAPE, capacity=2, max_capacity=2, timeout=10)
    held = [pool.acquire(), pool.acquire()]
    where = address(held[0])
    threading.Timer(0.1, held.pop, args=(0,)).start()
    start = time.monotonic()
    assert address(pool.acquire()) == where
    assert time.monotonic() - start < 5


def test_close_wakes_waiters_and_keeps_held_frames_valid() -> None:
    pool = PinnedFramePool(SHAPE, capacity=2, max_capacity=2, timeout=10)
    held = [pool.acquire(), pool.acquire()]
    held[0][:] = 7
    errors: list[BaseException] = []

    def wait() -> None:
        try:
            pool.acquire()
        except BaseException as error:  # noqa: BLE001 - handed to the main thread
            errors.append(error)

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.05)
    pool.close()
    waiter.join(5)
    assert not waiter.is_alive() and isinstance(errors[0], PoolClosedError)
    assert (held[0] == 7).all()
    with pytest.raises(PoolClosedError):
        pool.acquire()


def test_pool_thread_safety_smoke() -> None:
    pool = PinnedFramePool((32, 32, 3), capacity=2, max_capacity=4, timeout=10)
    failures: list[str] = []

    def worker(tag: int) -> None:
        for _ in range(200):
            frame = pool.acquire()
            frame[:] = tag
            time.sleep(0)
            if not (frame == tag).all():
                failures.append(f"frame of thread {tag} overwritten")
            del frame

    threads = [threading.Thread(target=worker, args=(tag,)) for tag in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures
    assert pool.in_use == 0 and pool.capacity <= 4


def test_pool_of_only_knows_open_pool_frames() -> None:
    pool = PinnedFramePool(SHAPE, capacity=2)
    frame = pool.acquire()
    assert pool_of(frame[2:, 3:]) is pool
    assert pool_of(frame.copy()) is None
    assert pool_of(np.zeros(SHAPE, np.uint8)) is None
    with pytest.raises(ValueError, match="not a frame of this pool"):
        pool.record_read(frame.copy(), stream=None)  # type: ignore[arg-type]
    del frame, pool
    gc.collect()
    orphan = PinnedFramePool(SHAPE, capacity=2).acquire()
    gc.collect()
    assert pool_of(orphan) is not None  # the frame keeps its pool alive


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"shape": (6, 10)}, "shape"),
        ({"shape": (6, 0, 3)}, "shape"),
        ({"shape": SHAPE, "capacity": 1}, "capacity"),
        ({"shape": SHAPE, "capacity": 4, "max_capacity": 3}, "max_capacity"),
        ({"shape": SHAPE, "timeout": -1}, "timeout"),
    ],
)
def test_pool_validates_arguments(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        PinnedFramePool(**kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA fallback")
def test_pool_without_cuda_uses_ordinary_memory_noted_once(monkeypatch, caplog) -> None:
    monkeypatch.setattr(pinned_module, "_fallback_logged", False)
    with caplog.at_level(logging.INFO, logger=pinned_module.__name__):
        pools = [PinnedFramePool(SHAPE, capacity=2) for _ in range(2)]
    assert not any(p.pinned for p in pools)
    assert len([r for r in caplog.records if "ordinary memory" in r.getMessage()]) == 1


# --------------------------------------------------------------------------------------
# The pinned video source
# --------------------------------------------------------------------------------------


def test_producer_yields_opencvs_frames_from_its_pool() -> None:
    pytest.importorskip("streamvision", reason="source properties are streamvision's type")
    producer = PinnedVideoFrameProducer(sample_video_path(), pool_capacity=2)
    assert producer.isOpened() and producer.connection_error_message() == ""
    props = producer.discover_source_properties()
    assert (props.width, props.height, props.total_frames, props.is_file) == (768, 576, 48, True)
    assert props.fps > 0 and props.timestamp_created is not None
    got = []
    while producer.grab():
        ok, frame = producer.retrieve()
        assert ok and pool_of(frame) is producer.pool
        got.append(frame.copy())
    producer.release()
    want = clip_frames()
    assert len(got) == len(want) == 48
    assert all(np.array_equal(a, b) for a, b in zip(got, want))
    assert producer.pool is not None and producer.pool.closed


def test_producer_reports_unopenable_source(tmp_path) -> None:
    producer = pinned_video_source(tmp_path / "missing.mp4")()
    assert not producer.isOpened()
    assert "missing.mp4" in producer.connection_error_message()
    producer.release()


def test_producer_interrupt_unblocks_a_waiting_retrieve() -> None:
    producer = PinnedVideoFrameProducer(sample_video_path(), pool_capacity=2, acquire_timeout=30)
    held = []
    for _ in range(2):
        assert producer.grab()
        held.append(producer.retrieve()[1])
    assert producer.grab()
    result: list[tuple[bool, object]] = []
    reader = threading.Thread(target=lambda: result.append(producer.retrieve()))
    reader.start()
    time.sleep(0.05)
    producer.interrupt()
    reader.join(5)
    assert not reader.is_alive() and result[0][0] is False
    assert not producer.grab()
    producer.release()


def test_pinned_video_source_validates_capacity() -> None:
    with pytest.raises(ValueError, match="pool_capacity"):
        pinned_video_source("clip.mp4", pool_capacity=1)


def test_producer_runs_inside_a_real_inference_pipeline(monkeypatch) -> None:
    monkeypatch.setenv("DISABLE_VERSION_CHECK", "True")
    pipeline_module = pytest.importorskip("streamvision.stream.pipeline")

    seen: dict[int, np.ndarray] = {}
    buffers: set[int] = set()
    foreign: list[int] = []

    def on_video_frame(video_frames):
        for video_frame in video_frames:
            if pool_of(video_frame.image) is None:
                foreign.append(video_frame.frame_id)
            buffers.add(address(video_frame.image))
            seen[video_frame.frame_id] = video_frame.image.copy()
        return [None] * len(video_frames)

    pipeline = pipeline_module.InferencePipeline.init_with_custom_logic(
        video_reference=pinned_video_source(sample_video_path(), pool_capacity=2, acquire_timeout=30),
        on_video_frame=on_video_frame,
    )
    pipeline.start()
    pipeline.join()
    want = clip_frames()
    assert sorted(seen) == list(range(1, len(want) + 1))
    assert all(np.array_equal(seen[i + 1], frame) for i, frame in enumerate(want))
    # Every frame came from the pool, and two buffers carried all 48 of them.
    assert not foreign and len(buffers) <= 2


# --------------------------------------------------------------------------------------
# GPU only
# --------------------------------------------------------------------------------------

LONG_KERNEL_CYCLES = 200_000_000  # torch.cuda._sleep: ~0.1 s on current GPUs


def allocation_counts(device: torch.device) -> tuple[int, int | None]:
    """Allocations so far (cumulative): blocks handed out by torch's device allocator,
    and page-locked blocks its host allocator obtained from CUDA (None where this torch
    does not report it)."""
    on_device = torch.cuda.memory_stats(device)["allocation.all.allocated"]
    host_stats = getattr(torch.cuda, "host_memory_stats", None)
    on_host = host_stats().get("allocations.allocated") if host_stats is not None else None
    return on_device, on_host


def cuda_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device())


@pytest.mark.gpu
def test_gpu_pool_frames_are_page_locked_and_auto_detects_them() -> None:
    ingest = FrameIngest(cuda_device())
    pool = PinnedFramePool((1080, 1920, 3), capacity=2)
    frame = pool.acquire()
    assert pool.pinned and torch.from_numpy(frame).is_pinned()
    assert ingest.choose(frame) == "pinned"
    foreign = torch.empty((720, 1280, 3), dtype=torch.uint8).pin_memory().numpy()
    assert ingest.choose(foreign) == "pinned"
    assert ingest.choose(np.zeros((1080, 1920, 3), np.uint8)) == "chunked"
    assert ingest.choose(np.zeros((720, 1280, 3), np.uint8)) == "pageable"
    assert ingest.choose(frame[:, ::-1]) == "chunked"  # needs a host copy: not a DMA source


@pytest.mark.gpu
@pytest.mark.parametrize("strategy", INGEST_CHOICES)
def test_gpu_strategies_give_identical_batches(strategy, frames) -> None:
    device = cuda_device()
    stream = torch.cuda.Stream(device)
    ingest = FrameIngest(device, strategy=strategy, stream=stream)
    pool = PinnedFramePool(frames[0].shape, capacity=6)
    for variant in VARIANTS.values():
        batch = [variant(f) for f in frames]
        want = torch.from_numpy(np.stack([np.ascontiguousarray(np.asarray(f)) for f in batch]))
        for _ in range(4):
            assert torch.equal(ingest.upload(batch).wait().cpu(), want)
    pooled = [pool.acquire() for _ in frames]
    for target, source in zip(pooled, frames):
        np.copyto(target, source)
    result = ingest.upload(pooled)
    assert torch.equal(result.wait().cpu(), torch.from_numpy(np.stack(frames)))
    if strategy in ("auto", "pinned"):
        assert result.strategies == ("pinned",) * 3


@pytest.mark.gpu
@pytest.mark.parametrize("strategy", INGEST_CHOICES)
def test_gpu_nothing_is_allocated_after_warm_up(strategy) -> None:
    device = cuda_device()
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (1080, 1920, 3), dtype=np.uint8) for _ in range(4)]
    pool = PinnedFramePool(frames[0].shape, capacity=4)
    ingest = FrameIngest(device, strategy=strategy)
    out = torch.empty((1, 3, 312, 312), device=device)

    def one_round(k: int) -> set[int]:
        if strategy == "pinned":
            frame = pool.acquire()
            np.copyto(frame, frames[k % 4])
        else:
            frame = frames[k % 4]
        result = ingest.upload([frame])
        preprocess(result.wait(), 312, out=out, device=device)
        result.record_consumed()
        return {result.tensor.data_ptr()}

    pointers = set()
    for k in range(ingest.ring_size):
        pointers |= one_round(k)
    torch.cuda.synchronize(device)
    bytes_before, counts_before = torch.cuda.memory_allocated(device), allocation_counts(device)
    for k in range(12):
        pointers |= one_round(k)
    torch.cuda.synchronize(device)
    assert torch.cuda.memory_allocated(device) == bytes_before
    assert allocation_counts(device) == counts_before
    assert len(pointers) == ingest.ring_size


@pytest.mark.gpu
def test_gpu_pinned_upload_is_asynchronous() -> None:
    device = cuda_device()
    stream = torch.cuda.Stream(device)
    pool = PinnedFramePool((1080, 1920, 3), capacity=2)
    frame = pool.acquire()
    frame[:] = 9
    ingest = FrameIngest(device, strategy="pinned", stream=stream)
    for _ in range(ingest.ring_size):  # warm-up: every ring slot allocated
        ingest.upload([frame])
    torch.cuda.synchronize(device)
    with torch.cuda.stream(stream):
        torch.cuda._sleep(LONG_KERNEL_CYCLES)
    start = time.perf_counter()
    result = ingest.upload([frame])
    assert time.perf_counter() - start < 0.02
    assert result.ready_event is not None and not result.ready_event.query()
    assert (result.wait().cpu() == 9).all()


@pytest.mark.gpu
@pytest.mark.parametrize("explicit", [True, False], ids=["record_consumed", "implicit"])
def test_gpu_ring_slot_waits_for_its_consumer(explicit) -> None:
    device = cuda_device()
    copy_stream, consumer = torch.cuda.Stream(device), torch.cuda.Stream(device)
    ingest = FrameIngest(device, strategy="pageable", stream=copy_stream, ring_size=3)
    frames = [np.full((64, 64, 3), value, np.uint8) for value in (1, 2, 3, 4)]
    first = ingest.upload([frames[0]])
    with torch.cuda.stream(consumer):
        tensor = first.wait()
        torch.cuda._sleep(LONG_KERNEL_CYCLES)  # the consumer reads late
        seen = tensor.clone()
        if explicit:
            first.record_consumed()
    for frame in frames[1:]:
        ingest.upload([frame])  # the last one reuses the first slot
    torch.cuda.synchronize(device)
    assert (seen == 1).all()


@pytest.mark.gpu
def test_gpu_pool_buffer_is_not_reused_while_a_copy_reads_it() -> None:
    device = cuda_device()
    stream = torch.cuda.Stream(device)
    pool = PinnedFramePool((1080, 1920, 3), capacity=2, max_capacity=2)
    ingest = FrameIngest(device, strategy="pinned", stream=stream)
    frame = pool.acquire()
    frame[:] = 1
    with torch.cuda.stream(stream):
        torch.cuda._sleep(LONG_KERNEL_CYCLES)  # the DMA from the frame starts late
    result = ingest.upload([frame])
    del frame
    others = [pool.acquire(), pool.acquire()]  # one of them is the dropped frame's buffer
    for other in others:
        other[:] = 2
    torch.cuda.synchronize(device)
    assert (result.tensor == 1).all()


@pytest.mark.gpu
def test_gpu_preprocess_of_pool_frames_is_exact() -> None:
    device = cuda_device()
    pool = PinnedFramePool((576, 768, 3), capacity=4)
    sources = clip_frames(4)
    for mode in ("pil", "cv2"):
        pooled = [pool.acquire() for _ in sources]
        for target, source in zip(pooled, sources):
            np.copyto(target, source)
        got = preprocess(pooled, 312, mode=mode, device=device).cpu()
        del pooled  # back to the pool before the next round acquires
        assert torch.equal(got, preprocess_reference(sources, 312, mode=mode))


def test_host_tensor_aliases_the_pool_buffer_without_holding_the_frame() -> None:
    import gc
    import weakref

    from inference_triton_preproc.runtime.pinned import PinnedFramePool

    pool = PinnedFramePool(shape=(4, 5, 3), capacity=2)
    frame = pool.acquire()
    frame[...] = 7
    host = pool.host_tensor(frame)
    assert host.shape == (4, 5, 3) and int(host.sum()) == 7 * 60
    frame[0, 0, 0] = 9
    assert int(host[0, 0, 0]) == 9
    alive = weakref.ref(frame)
    del frame
    gc.collect()
    assert alive() is None and pool.in_use == 0
    with pytest.raises(ValueError):
        pool.host_tensor(np.zeros((4, 5, 3), np.uint8))


def test_lru_cache_drops_the_least_recently_used() -> None:
    from inference_triton_preproc.runtime.graphs import LruCache

    cache: LruCache[str] = LruCache(2)
    assert cache.put("a", "A") == "A" and cache.put("b", "B") == "B"
    assert cache.get("a") == "A"  # "a" is now the most recently used
    cache.put("c", "C")
    assert cache.keys() == ["a", "c"] and cache.get("b") is None and len(cache) == 2
    assert cache.add("a", "other") is False and cache.get("a") == "A"
    assert cache.add("d", "D") is True and cache.keys() == ["a", "d"]
    cache.clear()
    assert len(cache) == 0 and cache.get("a") is None
