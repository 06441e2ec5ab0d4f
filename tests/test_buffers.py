"""OutputRing hands a buffer out again only after its user dropped it."""

from __future__ import annotations

import torch

from inference_triton_preproc.runtime.buffers import OutputRing

CPU = torch.device("cpu")


def test_ring_fills_to_depth_then_reuses_released_buffers_in_turn() -> None:
    ring = OutputRing(depth=3)
    ptrs = []
    for _ in range(6):
        t = ring.acquire((2, 3), torch.float32, CPU)
        ptrs.append(t.data_ptr())
        del t
    assert len(set(ptrs[:3])) == 3 and ptrs[3:] == ptrs[:3]
    assert len(ring) == 3


def test_held_buffers_are_never_handed_out_again() -> None:
    ring = OutputRing(depth=2, warn_above=3)
    held = [ring.acquire((4,), torch.float32, CPU) for _ in range(5)]
    assert len({t.data_ptr() for t in held}) == 5
    del held[1]
    again = ring.acquire((4,), torch.float32, CPU)
    assert again.data_ptr() not in {t.data_ptr() for t in held}
    assert len(ring) == 5


def test_shapes_and_dtypes_have_separate_slots() -> None:
    ring = OutputRing(depth=1)
    a = ring.acquire((1, 3, 4, 4), torch.float32, CPU)
    b = ring.acquire((2, 3, 4, 4), torch.float32, CPU)
    c = ring.acquire((1, 3, 4, 4), torch.float16, CPU)
    assert len({a.data_ptr(), b.data_ptr(), c.data_ptr()}) == 3
