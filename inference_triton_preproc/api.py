"""``preprocess``: uint8 frames to the normalised NCHW tensor a detector consumes, on the GPU."""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ._env import check_environment
from ._validation import Frame, Images, check_request
from .kernels.resize import (
    Mode,
    ResizeTables,
    interpreted,
    resize_normalize,
    resize_tables,
    row_schedule,
)
from .reference import IMAGENET_MEAN, IMAGENET_STD
from .runtime.graphs import GraphCache, graphs_enabled
from .runtime.ingest import default_ingest, row_bounds
from .runtime.pinned import (
    GRAPHS_RECORD_READS,
    PinnedFramePool,
    any_pool_frames,
    pool_of,
)
from .runtime.streams import current_raw_stream, current_stream

_NO_DEVICE = (
    "no CUDA device is available and the Triton interpreter is off. To run the kernels on "
    "the CPU (slowly, as the test suite does), set TRITON_INTERPRET=1 in the environment "
    "before importing inference_triton_preproc."
)


@functools.lru_cache(maxsize=1)
def _cuda_available() -> bool:
    # Asked once: the answer does not change within a process, and asking costs
    # ~10 µs per frame.
    return torch.cuda.is_available()


def _as_device(device: object) -> torch.device:
    """``device`` (a ``torch.device``, a string such as ``"cuda:1"``, or a CUDA index)
    parsed; raises naming ``device``."""
    if isinstance(device, torch.device):
        return device
    if isinstance(device, bool) or not isinstance(device, (str, int)):
        raise TypeError(f"device must be a torch.device, a string or a CUDA index, got {type(device).__name__}")
    try:
        return torch.device(device)
    except (RuntimeError, ValueError):
        raise ValueError(f"device must name a CUDA device (e.g. 'cuda:0') or 'cpu', got {device!r}") from None


def resolve_device(device: str | int | torch.device | None, frames: Sequence[Frame] = ()) -> torch.device:
    """The device the kernels run on.

    ``None`` means: the device of CUDA tensor input, else the CPU when the kernels run
    under the Triton interpreter, else the current CUDA device.

    Raises:
        TypeError, ValueError: ``device`` is not a device, or names one that is not
            usable here (the message names ``device``).
        RuntimeError: ``device`` is None and there is neither CUDA nor the interpreter.
    """
    if device is None:
        on_cuda = [f.device for f in frames if isinstance(f, torch.Tensor) and f.is_cuda]
        if on_cuda:
            return on_cuda[0]
        if interpreted():
            # The interpreter runs kernels on host tensors, GPU present or not.
            return torch.device("cpu")
        if _cuda_available():
            return torch.device("cuda", torch.cuda.current_device())
        raise RuntimeError(_NO_DEVICE)
    resolved = _as_device(device)
    if resolved.type == "cpu":
        if not interpreted():
            raise ValueError(f"device={device!r}: {_NO_DEVICE}")
        return resolved
    if resolved.type != "cuda":
        raise ValueError(f"device must be a CUDA device (or the CPU under TRITON_INTERPRET=1), got {resolved}")
    # Asked before torch.cuda is touched, which would fail with the driver's message.
    if not _cuda_available():
        hint = "use device='cpu' (or None) under TRITON_INTERPRET=1" if interpreted() else _NO_DEVICE
        raise ValueError(f"device={device!r}: no CUDA device is available; {hint}")
    if resolved.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    if resolved.index >= torch.cuda.device_count():
        raise ValueError(f"device={device!r}: there are {torch.cuda.device_count()} CUDA device(s)")
    return resolved


def check_out(out: torch.Tensor, shape: tuple[int, int, int, int], dtype: torch.dtype, device: torch.device) -> None:
    """``out`` must be a contiguous ``shape`` tensor of ``dtype`` on ``device``."""
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"out must be a torch.Tensor, got {type(out).__name__}")
    if tuple(out.shape) != shape:
        raise ValueError(f"out must have shape {shape} (N, 3, H, W), got {tuple(out.shape)}")
    if out.dtype != dtype:
        raise ValueError(f"out must have dtype {dtype} (out_dtype), got {out.dtype}")
    if out.device != device:
        raise ValueError(f"out must be on {device}, got {out.device}")
    if not out.is_contiguous():
        raise ValueError("out must be contiguous")


def _upload(frames: list[Frame], device: torch.device) -> tuple[torch.Tensor, bool]:
    """Equal-size HWC frames as one NHWC uint8 tensor on ``device``, and whether that
    tensor is an ingest ring buffer (a fixed address a CUDA graph may read).

    Delegates to this thread's :func:`~inference_triton_preproc.runtime.ingest.default_ingest`:
    a lone tensor already on the device is used as is (any strides: the kernel reads
    them); host frames are copied asynchronously on the current stream with the
    strategy ``RFDETR_TRITON_PREPROC_INGEST`` selects (``auto`` by default) into a ring
    buffer that the kernel, queued next on the same stream, reads in stream order.
    """
    upload = default_ingest(device).upload(frames)
    return upload.wait(), upload.in_ring


_GRAPHS = GraphCache()
_environment_checked = False


def _check_environment_once() -> None:
    """Parse the package's variables on the first call (see :func:`check_environment`)."""
    global _environment_checked
    check_environment()
    _environment_checked = True


def _graphs_usable() -> bool:
    return not interpreted() and _cuda_available() and graphs_enabled()


# Types whose instances cannot change after creation (torch.dtype and torch.device are
# immutable too): the only arguments a cache key may hold, since a key must be the
# argument's value, not an object whose value can change while its identity stays.
_VALUE_TYPES = frozenset((int, float, str, type(None), torch.dtype, torch.device))


def _is_value(arg: object) -> bool:
    """Whether ``arg`` is an immutable value: an instance of exactly one of
    :data:`_VALUE_TYPES`, or an exact tuple of them (subclasses may be mutable or hash
    by identity)."""
    if type(arg) is tuple:
        return all(type(v) in _VALUE_TYPES for v in arg)
    return type(arg) in _VALUE_TYPES


def _call_key(
    images: Images,
    size: object,
    mode: object,
    input_color: object,
    mean: object,
    std: object,
    out_dtype: object,
    out: torch.Tensor,
    device: object,
) -> tuple[np.ndarray, tuple[object, ...]] | None:
    """A lone numpy frame written into ``out``, and what the checked path decides for it,
    taken from the raw arguments; None for other calls, and for calls with an argument
    that is not an immutable value (a list, a tensor, a subclass: see :func:`_is_value`).

    The key holds every argument, the current CUDA device, the frame's shape, strides and
    dtype, and ``out``'s address, shape, strides and dtype: a call with the key of a call
    that passed the checks passes them too, resolves to the same device and reads the
    same tables, so it skips them (see :class:`_Plan`).
    """
    frame = images[0] if type(images) in (list, tuple) and len(images) == 1 else images
    if type(frame) is not np.ndarray or not isinstance(out, torch.Tensor):
        return None
    if not all(map(_is_value, (size, mode, input_color, mean, std, out_dtype, device))):
        return None
    key = (
        frame.shape,
        frame.strides,
        frame.dtype.str,
        type(images),
        size,
        mode,
        input_color,
        mean,
        std,
        out_dtype,
        device,
        # What "cuda" and None resolve to (at index _KEY_CUDA_DEVICE).
        torch.cuda.current_device() if _cuda_available() else None,
        # Unified addressing: the address also tells the device out lives on.
        out.data_ptr(),
        out.shape,
        out.stride(),
        out.dtype,
    )
    return frame, key


_KEY_CUDA_DEVICE = 11  # where _call_key puts the current CUDA device


def _graph_key(frame: np.ndarray, key: tuple[object, ...]) -> tuple[object, ...]:
    """The key of a pool frame's CUDA graph: the call's key, the frame's address and the
    current stream (graphs replayed on one stream share a device copy of the frame, see
    :func:`_staging`)."""
    return (*key, frame.__array_interface__["data"][0], current_raw_stream(key[_KEY_CUDA_DEVICE]))


@dataclass(frozen=True)
class _Plan:
    """What the checked path decided for frames of one size: the device, the tables and
    the checked channel constants (remembered per call key for lone numpy frames)."""

    device: torch.device
    tables: ResizeTables
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    bgr: bool


_PLANS: dict[tuple[object, ...], _Plan] = {}
_PLANS_KEEP = 64  # distinct (frame geometry, arguments, out) combinations remembered


def _remember(key: tuple[object, ...], plan: _Plan) -> None:
    if len(_PLANS) >= _PLANS_KEEP:
        _PLANS.clear()  # a caller cycling through many combinations re-checks them
    _PLANS[key] = plan


def _resize_into(
    batch: torch.Tensor,
    dst: torch.Tensor,
    plan: _Plan,
    *,
    replay: bool = False,
    row_tiles: tuple[int, int] | None = None,
) -> None:
    """``plan``'s resize of ``batch`` into ``dst`` (output row tiles ``row_tiles`` only,
    when given), launched from Python or, with ``replay``, replayed from a graph."""
    if replay:
        # A given out and a ring buffer: both addresses recur, so the launch is a graph
        # replay (cheaper than a Triton launch from Python).
        _replay_kernel(batch, dst, plan)
    else:
        resize_normalize(batch, dst, plan.tables, plan.mean, plan.std, bgr=plan.bgr, row_tiles=row_tiles)


GRAPH_COPY_CHUNKS = 4  # row chunks of a pool frame's copy in its graph

_STAGING: OrderedDict[tuple[tuple[int, ...], torch.device, int], torch.Tensor] = OrderedDict()
_STAGING_LOCK = threading.Lock()
_STAGING_KEEP = 16


def _staging(shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """The device buffer that pool-frame graphs replayed on the current stream copy
    ``shape`` frames into: ``[1, *shape]`` uint8.

    One per (frame shape, device, stream) rather than one per graph: replays on one
    stream run one after another, so they can share it, and a pool of 4 frames feeding
    a ring of 3 outputs holds one frame-sized buffer instead of twelve. The key of a
    graph holds its stream, so a graph is never replayed on another one. Graphs keep
    their buffer alive; this map only remembers the last few.
    """
    key = (tuple(shape), device, current_raw_stream(device.index))
    with _STAGING_LOCK:
        buffer = _STAGING.get(key)
        if buffer is None:
            buffer = _STAGING[key] = torch.empty((1, *shape), dtype=torch.uint8, device=device)
            while len(_STAGING) > _STAGING_KEEP:
                _STAGING.popitem(last=False)
        _STAGING.move_to_end(key)
        return buffer


def _pipelined_copy_and_kernel(
    host: torch.Tensor,
    staging: torch.Tensor,
    out: torch.Tensor,
    plan: _Plan,
    read: torch.cuda.Event | None,
) -> Callable[[], None]:
    """The work of a pool frame's graph: copy ``host`` (HWC, page-locked) into
    ``staging`` ([1, H, W, C] on the device) in row chunks on a side stream, and launch
    the kernel for each band of output rows as soon as the source rows it reads have
    landed, so the kernel runs while the rest of the frame is still in transit. ``read``
    is recorded once the last chunk has left ``host``."""
    chunks = row_bounds(host.shape[0], GRAPH_COPY_CHUNKS)
    schedule = row_schedule(staging, out, plan.tables, [b for _, b in chunks])
    copy_stream = torch.cuda.Stream(out.device)
    landed = [torch.cuda.Event() for _ in chunks]

    def work() -> None:
        stream = torch.cuda.current_stream(out.device)
        copy_stream.wait_stream(stream)
        with torch.cuda.stream(copy_stream):
            for (a, b), event in zip(chunks, landed):
                staging[0, a:b].copy_(host[a:b], non_blocking=True)
                event.record(copy_stream)
            if read is not None:
                read.record(copy_stream)
        for event, rows in zip(landed, schedule):
            stream.wait_event(event)
            _resize_into(staging, out, plan, row_tiles=rows)
        stream.wait_stream(copy_stream)

    return work


def _replay_kernel(src: torch.Tensor, dst: torch.Tensor, plan: _Plan) -> None:
    """The kernel from ``src`` into ``dst`` as a replay of a graph captured for these
    two addresses (captured on first use)."""
    key = (
        "kernel",
        src.data_ptr(),
        tuple(src.shape),
        src.stride(),
        dst.data_ptr(),
        tuple(dst.shape),
        dst.stride(),
        dst.dtype,
        plan.tables.mode,
        plan.tables.src_hw,
        plan.tables.dst_hw,
        plan.mean,
        plan.std,
        plan.bgr,
    )
    graph = _GRAPHS.get(key)
    if graph is None:
        graph = _GRAPHS.capture(key, lambda: _resize_into(src, dst, plan), src.device)
    graph.replay()


def _graphable_pool(frames: list[Frame], device: torch.device) -> PinnedFramePool | None:
    """The pool of a lone page-locked pool frame, when its work can be a CUDA-graph replay."""
    if len(frames) != 1 or device.type != "cuda":
        return None
    frame = frames[0]
    if not isinstance(frame, np.ndarray) or not frame.flags.c_contiguous:
        return None
    owner = pool_of(frame)
    return owner if owner is not None and owner.pinned else None


def preprocess(
    images: Images,
    size: int | tuple[int, int],
    *,
    mode: Mode = "pil",
    input_color: str = "bgr",
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    out_dtype: torch.dtype = torch.float32,
    out: torch.Tensor | None = None,
    device: str | int | torch.device | None = None,
) -> torch.Tensor:
    """Resize, reorder to RGB, scale to [0, 1] and normalise frames in one fused kernel.

    Produces exactly what :func:`inference_triton_preproc.reference.preprocess_reference`
    produces for the same ``mode``: bit-exact for ``"pil"`` and ``"cv2"`` (float32, and
    float16 as the float32 result rounded to nearest-even), within 2e-6 for ``"torch"``.

    Args:
        images: a uint8 HWC 3-channel numpy array, a list of them (sizes may differ), or
            a uint8 HWC / NHWC torch tensor. Any strides, negative ones included.
        size: target (height, width) in pixels, or one int for a square; each side
            at most :data:`~inference_triton_preproc._validation.MAX_SIZE`.
        mode: which reference resize to reproduce: ``"pil"`` (Pillow antialiased
            bilinear), ``"cv2"`` (OpenCV INTER_LINEAR on uint8) or ``"torch"``
            (``F.interpolate`` bilinear, ``align_corners=False``, no antialias).
        input_color: channel order of ``images``: ``"bgr"`` or ``"rgb"``.
        mean, std: per RGB channel, applied as ``(x / 255 - mean) / std``: 3 real
            numbers each, finite in float32, std nonzero, and the result for x in
            [0, 1] within ``out_dtype``'s range.
        out_dtype: ``torch.float32`` or ``torch.float16``.
        out: optional contiguous ``[N, 3, H, W]`` tensor of ``out_dtype`` on the compute
            device, written in place. Nothing is written when an argument is invalid.
        device: compute device. ``None``: the device of CUDA tensor input, else the
            CPU under ``TRITON_INTERPRET=1``, else the current CUDA device.

    Returns:
        ``[N, 3, H, W]`` tensor of ``out_dtype`` on the compute device, RGB planes
        (``out`` itself when given). Equal-size frames are processed in one launch.
        A lone frame from a :class:`~inference_triton_preproc.runtime.pinned.PinnedFramePool`
        written into a given ``out`` on CUDA replays a captured CUDA graph (copy and
        kernel in one call; ``RFDETR_TRITON_PREPROC_CUDA_GRAPHS=0`` turns this off).
        Any lone numpy frame written into a given ``out`` skips the argument checks
        when an earlier call with equal arguments, frame shape, strides and dtype, and
        the same ``out`` (address, shape, strides, dtype) passed them; only immutable
        arguments count as equal (tuples, ints, strings), so a list or a tensor for
        ``mean``, ``std`` or ``size`` is checked on every call.

    Raises:
        TypeError, ValueError: an argument is invalid (the message names it).
        RuntimeError: no CUDA device and no Triton interpreter.
    """
    if not _environment_checked:
        _check_environment_once()
    graphs = out is not None and _graphs_usable()
    call = _call_key(images, size, mode, input_color, mean, std, out_dtype, out, device) if out is not None else None
    if call is not None:
        frame, key = call
        pools = any_pool_frames()
        if graphs and pools:
            graph = _GRAPHS.get(_graph_key(frame, key))
            if graph is not None:
                graph.replay()
                return out
        plan = _PLANS.get(key)
        # A pool frame without a graph yet takes the checked path, which captures one.
        if plan is not None and not (pools and pool_of(frame) is not None):
            batch, in_ring = _upload([frame], plan.device)
            _resize_into(batch, out, plan, replay=graphs and in_ring)
            return out
    request = check_request(images, size, mode, input_color, mean, std, out_dtype)
    frames, size, mode, bgr = request.frames, request.size, request.mode, request.bgr
    mean, std, out_dtype = request.mean, request.std, request.out_dtype
    device = resolve_device(device, frames)
    shape = (len(frames), 3, size[0], size[1])
    if out is None:
        out = torch.empty(shape, dtype=out_dtype, device=device)
    else:
        check_out(out, shape, out_dtype, device)
        pool = _graphable_pool(frames, device) if call is not None and graphs else None
        if pool is not None:
            frame, key = call
            plan = _Plan(device, resize_tables(frame.shape[:2], size, mode, device), mean, std, bgr)
            host = pool.host_tensor(frame)
            staging = _staging(frame.shape, device)
            read = pool.read_event(frame, device.index)
            in_graph = GRAPHS_RECORD_READS
            work = _pipelined_copy_and_kernel(host, staging, out, plan, read if in_graph else None)
            index = device.index
            graph = _GRAPHS.capture(
                _graph_key(frame, key),
                work,
                device,
                keep=(staging, host, read),
                on_replay=None if in_graph else lambda: read.record(current_stream(index)),
            )
            graph.replay()
            _remember(key, plan)
            return out

    groups: dict[tuple[int, int], list[int]] = {}
    for i, frame in enumerate(frames):
        groups.setdefault((int(frame.shape[0]), int(frame.shape[1])), []).append(i)
    for src_hw, indices in groups.items():
        batch, in_ring = _upload([frames[i] for i in indices], device)
        plan = _Plan(device, resize_tables(src_hw, size, mode, device), mean, std, bgr)
        first = indices[0]
        if indices == list(range(first, first + len(indices))):
            _resize_into(batch, out[first : first + len(indices)], plan, replay=graphs and in_ring)
        else:
            # Sizes interleave in the list: fill a scratch batch, then scatter.
            scratch = torch.empty((len(indices), *shape[1:]), dtype=out_dtype, device=device)
            _resize_into(batch, scratch, plan)
            out.index_copy_(0, torch.tensor(indices, device=device), scratch)
    if call is not None:
        _remember(call[1], plan)
    return out
