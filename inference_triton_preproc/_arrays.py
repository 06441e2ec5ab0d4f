"""Host numpy frames as torch tensors, read-only ones included."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


class _ReadableAlias:
    """Exposes a read-only array's memory through the array interface with the
    read-only bit cleared, and keeps the array (hence the memory) alive."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array
        interface: dict[str, Any] = dict(array.__array_interface__)
        interface["data"] = (interface["data"][0], False)
        self.__array_interface__ = interface


def host_tensor(array: np.ndarray) -> torch.Tensor:
    """``torch.from_numpy(array)``, without torch's "array is not writable" warning on
    read-only arrays.

    The package only ever reads frames, so a read-only frame (a decoded video frame,
    an ``np.broadcast_to`` view, a memory-mapped file) is viewed through a writable
    alias of the same memory instead of being copied or warned about on every call.
    Negative strides still raise, as in ``torch.from_numpy``.
    """
    if not array.flags.writeable:
        array = np.asarray(_ReadableAlias(array))
    return torch.from_numpy(array)
