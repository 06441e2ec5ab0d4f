"""One frame's detection selection, replayed as a CUDA graph once its geometry repeats.

The selection of a frame (sigmoid of the class logits, the flat top-k over queries x
classes, :func:`~inference_triton_preproc.kernels.postprocess.select_detections`) is three
launches whose device work takes about 37 µs on an NVIDIA H200 (mostly the top-k's
kernels), while issuing them from Python takes about a hundred (a Triton launch of thirty
arguments alone about 25 µs there).
A stream repeats the same shapes, class rule, threshold and box geometry on every frame,
so the second time a combination is seen, the three launches are captured as a graph that
reads fixed input buffers and writes one packed output buffer; later frames copy their
inputs in, replay it, and copy the packed outputs out (and the detection count into
page-locked host memory). The graph runs the same operations on the same values, so its
results are the direct launches' bit for bit.

A graph's buffers are shared by every caller of the same key, possibly on different
streams: a lock serialises the callers, each synchronising its stream (the call's one
synchronisation, which it needs anyway for the count) before the next may enqueue work on
the buffers.
"""

from __future__ import annotations

import logging
import threading
from typing import NamedTuple

import torch

from ..kernels import postprocess as kernels
from .graphs import LruCache, capture_graph, graphs_enabled

logger = logging.getLogger(__name__)


def select_frame(
    logits: torch.Tensor,
    boxes: torch.Tensor,
    rule: kernels.ClassRule,
    threshold: float | torch.Tensor,
    geometry: kernels.BoxGeometry,
    *,
    out: kernels.Selection | None = None,
) -> kernels.Selection:
    """One frame's detections as the stock path selects them, in top-k order, without synchronising.

    Args:
        logits: ``(Q, C)`` float32 or float16 class logits.
        boxes: ``(Q, 4)`` normalised ``cxcywh`` in the logits' dtype.
        rule, threshold, geometry: as :func:`~inference_triton_preproc.kernels.postprocess.select_detections`
            takes them (a per-class threshold in the logits' dtype).
        out: buffers to write into, else new ones.
    """
    num_queries, num_classes = logits.shape
    # The stock path's own calls on the same values: equal scores come out in its order.
    confidence, flat_index = torch.topk(torch.sigmoid(logits).reshape(-1), num_queries)
    return kernels.select_detections(confidence, flat_index, boxes, num_classes, rule, threshold, geometry, out=out)


class Selected(NamedTuple):
    """One frame's detections in top-k order: exactly as many rows as were kept.

    ``confidence``: ``(N,)`` in the scores' dtype, descending; ``class_id``: int32 ``(N,)``;
    ``query``: int64 ``(N,)``; ``xyxy``: ``(N, 4)`` int32 or float32 (see
    :class:`~inference_triton_preproc.kernels.postprocess.Selection`); ``tied``: whether two
    of the scores are equal (the stock sort may then reorder them).
    """

    confidence: torch.Tensor
    class_id: torch.Tensor
    query: torch.Tensor
    xyxy: torch.Tensor
    tied: bool


def _counted(selection: kernels.Selection) -> Selected:
    # The call's one synchronisation.
    count, tied = selection.summary.tolist()
    return Selected(selection.confidence[:count], selection.class_id[:count], selection.query[:count], selection.xyxy[:count], bool(tied))


class _Captured:
    """The fixed buffers of one captured selection and its graph."""

    __slots__ = ("logits", "boxes", "threshold", "packed", "summary", "layout", "rule", "graph", "lock")

    def __init__(
        self,
        logits: torch.Tensor,
        boxes: torch.Tensor,
        rule: kernels.ClassRule,
        threshold: float | torch.Tensor,
        geometry: kernels.BoxGeometry,
    ) -> None:
        device = logits.device
        self.layout = kernels.SelectionLayout(int(logits.shape[0]), logits.dtype, geometry.integer)
        self.logits = logits.clone(memory_format=torch.contiguous_format)
        self.boxes = boxes.clone(memory_format=torch.contiguous_format)
        self.threshold = threshold.clone() if isinstance(threshold, torch.Tensor) else threshold
        self.packed = torch.zeros(self.layout.nbytes, dtype=torch.uint8, device=device)
        # The rule's tensors are read by address: kept alive with the graph.
        self.rule = rule
        outputs = self.layout.views(self.packed)
        # (device summary, its page-locked host copy): read without a new host tensor per frame.
        self.summary = (outputs.summary, torch.zeros(2, dtype=torch.int32, pin_memory=True))
        self.graph = capture_graph(
            lambda: select_frame(self.logits, self.boxes, rule, self.threshold, geometry, out=outputs), device
        )
        self.lock = threading.Lock()

    def run(self, logits: torch.Tensor, boxes: torch.Tensor, threshold: float | torch.Tensor) -> Selected:
        stream = torch.cuda.current_stream(logits.device)
        with self.lock:
            self.logits.copy_(logits)
            self.boxes.copy_(boxes)
            if isinstance(threshold, torch.Tensor):
                self.threshold.copy_(threshold)
            self.graph.replay()
            packed = self.packed.clone()
            device_summary, host_summary = self.summary
            host_summary.copy_(device_summary, non_blocking=True)
            # The call's one synchronisation, before the next caller (on any stream) may
            # overwrite the buffers: its work is enqueued after this replay and copy out ended.
            stream.synchronize()
            count, tied = host_summary.tolist()
        # Views of the kept rows only.
        confidence, class_id, query, xyxy = self.layout.rows(packed, count)
        return Selected(confidence, class_id, query, xyxy, bool(tied))


class SelectionGraphs:
    """:func:`select_frame`, replayed from a CUDA graph for combinations seen before.

    A combination is the device, the logits' and boxes' shapes and dtypes, the class rule,
    the threshold (its value, or a per-class tensor's shape) and the box geometry. The
    first time one is seen it runs directly; the second time it is captured; later it is
    replayed. At most ``capacity`` graphs are kept (least recently used dropped). Off the
    GPU, or with ``RFDETR_TRITON_PREPROC_CUDA_GRAPHS=0``, every call runs directly.
    """

    def __init__(self, capacity: int = 16) -> None:
        self._graphs: LruCache[_Captured] = LruCache(capacity)
        self._seen: LruCache[bool] = LruCache(4 * capacity)

    def select(
        self,
        logits: torch.Tensor,
        boxes: torch.Tensor,
        rule: kernels.ClassRule,
        threshold: float | torch.Tensor,
        geometry: kernels.BoxGeometry,
    ) -> Selected:
        """The kept rows of what :func:`select_frame` returns for these arguments (fresh
        tensors the caller owns), after the call's one synchronisation."""
        if logits.device.type != "cuda" or not graphs_enabled():
            return _counted(select_frame(logits, boxes, rule, threshold, geometry))
        per_class = isinstance(threshold, torch.Tensor)
        key = (
            logits.device,
            tuple(logits.shape),
            logits.dtype,
            tuple(boxes.shape),
            boxes.dtype,
            # Rules of remappings are cached with their tensors; a rule without tensors is its fields.
            (rule.kind, rule.num_classes, id(rule.keep), id(rule.mapping)),
            (tuple(threshold.shape), threshold.dtype) if per_class else float(threshold),
            geometry,
        )
        captured = self._graphs.get(key)
        if captured is None:
            if self._seen.add(key, True):
                return _counted(select_frame(logits, boxes, rule, threshold, geometry))
            captured = self._graphs.put(key, _Captured(logits, boxes, rule, threshold, geometry))
            logger.debug("captured the detection selection for %s", key)
        return captured.run(logits, boxes, threshold)
