"""The current CUDA stream, cheaply.

``torch.cuda.current_stream()`` builds a new Python ``Stream`` object on every call,
which cost ~6 µs per frame on the measured H100 host; the hot paths need the current
stream's handle for every frame (a graph's key holds it) and, with torch before 2.8,
the stream itself (to record the event that says a frame has been read). The raw
handle of the current stream is cheap to get (the call Triton itself makes before
every launch), and a stream object per distinct handle is built once.
"""

from __future__ import annotations

import threading

import torch

_raw_stream = getattr(torch._C, "_cuda_getCurrentRawStream", None)
_streams: dict[tuple[int, int], torch.cuda.Stream] = {}
_lock = threading.Lock()
_MAX_STREAMS = 256  # a process that creates streams without end rebuilds the map


def current_raw_stream(device_index: int) -> int:
    """The handle (``cudaStream_t`` as an int) of the current stream of a device."""
    if _raw_stream is None:
        return torch.cuda.current_stream(device_index).cuda_stream
    return _raw_stream(device_index)


def current_stream(device_index: int) -> torch.cuda.Stream:
    """``torch.cuda.current_stream(device_index)``, reusing one object per stream."""
    if _raw_stream is None:
        return torch.cuda.current_stream(device_index)
    key = (device_index, _raw_stream(device_index))
    stream = _streams.get(key)
    if stream is None:
        stream = torch.cuda.current_stream(device_index)
        with _lock:
            if len(_streams) >= _MAX_STREAMS:
                _streams.clear()
            _streams[key] = stream
    return stream
