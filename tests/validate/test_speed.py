"""``validate.speed``: what the arm-side recorder counts, on a scripted frame sequence."""

from __future__ import annotations

import gc

from inference_triton_preproc.validate.speed import SpeedRecorder


def test_garbage_collections_are_counted_inside_the_window_only() -> None:
    recorder = SpeedRecorder(warmup=1)
    try:
        gc.collect()  # before the window: not counted
        recorder.taken([1])
        recorder.arrived(1)  # the warm-up frame opens the window
        for frame_id in (2, 3):
            recorder.taken([frame_id])
            gc.collect()
            gc.collect(0)
            recorder.arrived(frame_id)
        recorder.close()
        summary = recorder.summary()
    finally:
        recorder.close()
    assert summary["frames"] == 3 and summary["fps"] > 0
    assert summary["gc_full_collections"] == 2
    assert summary["gc_ms_per_frame"] > 0 and summary["gc_frozen_objects"] == gc.get_freeze_count() == 0
    assert recorder.gc._on_gc not in gc.callbacks


def test_no_frame_after_the_warm_up_gives_no_gc_figures() -> None:
    recorder = SpeedRecorder(warmup=2)
    recorder.taken([1])
    recorder.arrived(1)
    recorder.close()
    summary = recorder.summary()
    assert summary["gc_ms_per_frame"] is None and summary["gc_full_collections"] is None
