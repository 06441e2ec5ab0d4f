"""One frame's detection selection (and its dense masks), replayed as a CUDA graph once its geometry repeats.

The selection of a frame (sigmoid of the class logits, the flat top-k over queries x
classes, :func:`~inference_triton_preproc.kernels.postprocess.select_detections`) is three
launches whose device work takes about 37 µs on an NVIDIA H200 (mostly the top-k's
kernels), while issuing them from Python takes about a hundred (a Triton launch of thirty
arguments alone about 25 µs there; the mask kernel's launch about 50).
A stream repeats the same shapes, class rule, threshold and box geometry on every frame,
so the second time a combination is seen it is captured as graphs that read the same
fixed input buffers and write the same packed output buffer: the first runs the sigmoid
and the ranked form of the selection kernel, which needs no top-k (the passing scores
ranked among themselves); the second, the stock sigmoid and top-k and the top-k form. Later
frames copy their inputs in, replay the first, read the detection count and status (into
page-locked host memory), and replay the second only when the ranking cannot stand for
the top-k (two passing scores equal, or more scores than slots at least the lowest
passing one); then they copy the kept rows out. For dense masks a third graph runs the
mask kernel over a fixed number of rows (:func:`mask_rows`), stopping at the device-side
count, into a fixed mask buffer; it is replayed after the count is read (so the
synchronisation waits for the selection alone, and the host issues the copies out while
the masks are made), and the kept rows are then copied out.
Either selection graph gives the direct launches' results bit for bit: the first whenever it
stands (the same scores, kept and in the same order), the second always.

A graph's buffers are shared by every caller of the same key, possibly on different
streams: a lock serialises the callers. Each synchronises its stream once (it needs the
count anyway; twice when the second graph runs) before it copies the masks out; a caller
on another stream than the last one first waits for that stream, so no copy out is
overtaken by the next replay.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Hashable
from typing import NamedTuple

import torch

from ..kernels import postprocess as kernels
from .graphs import LruCache, capture_graph, graphs_enabled

logger = logging.getLogger(__name__)

# The most bytes of masks one captured graph makes (1080p: 32 masks; 4K: 8); a frame
# with more detections gets its masks from a direct launch.
MASK_BUFFER_BYTES = 64 << 20


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
    of the scores are equal (the stock sort may then reorder them); ``masks``: when asked
    for and made by the graph, the bool ``(min(N, limit), H, W)`` masks of the first rows
    (a new tensor), else None (the caller makes them).
    """

    confidence: torch.Tensor
    class_id: torch.Tensor
    query: torch.Tensor
    xyxy: torch.Tensor
    tied: bool
    masks: torch.Tensor | None = None


def _counted(selection: kernels.Selection) -> Selected:
    # The call's one synchronisation.
    count, tied = selection.summary.tolist()
    return Selected(selection.confidence[:count], selection.class_id[:count], selection.query[:count], selection.xyxy[:count], bool(tied))


def mask_rows(canvas: tuple[int, int], queries: int) -> int:
    """How many masks a captured graph makes: as many as fit in :data:`MASK_BUFFER_BYTES`
    of ``canvas`` (height, width) bool masks, at least 1, at most ``queries``."""
    return max(1, min(queries, MASK_BUFFER_BYTES // (canvas[0] * canvas[1])))


class _Captured:
    """The fixed buffers of one captured selection (and, for dense masks, the masks) and its graphs."""

    __slots__ = (
        "logits",
        "boxes",
        "threshold",
        "mask_logits",
        "masks",
        "packed",
        "summary",
        "layout",
        "rule",
        "graph",
        "topk_graph",
        "mask_graph",
        "lock",
        "device_index",
        "last_stream",
        "kept",
        "kept_masks",
    )

    def __init__(
        self,
        logits: torch.Tensor,
        boxes: torch.Tensor,
        rule: kernels.ClassRule,
        threshold: float | torch.Tensor,
        geometry: kernels.BoxGeometry,
        masks: tuple[torch.Tensor, kernels.MaskGeometry] | None,
    ) -> None:
        device = logits.device
        self.device_index = device.index if device.index is not None else torch.cuda.current_device()
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
        self.mask_logits: torch.Tensor | None = None
        self.masks: torch.Tensor | None = None
        mask_geometry = None
        if masks is not None:
            mask_logits, mask_geometry = masks
            self.mask_logits = mask_logits.clone(memory_format=torch.contiguous_format)
            rows = mask_rows(mask_geometry.canvas, int(logits.shape[0]))
            self.masks = torch.zeros((rows, *mask_geometry.canvas), dtype=torch.bool, device=device)

        def work(ranked: bool) -> None:
            if ranked:
                scores = torch.sigmoid(self.logits).reshape(-1)
                kernels.select_detections(scores, None, self.boxes, int(logits.shape[1]), rule, self.threshold, geometry, out=outputs)
            else:
                select_frame(self.logits, self.boxes, rule, self.threshold, geometry, out=outputs)

        self.graph = capture_graph(lambda: work(True), device)
        self.topk_graph = capture_graph(lambda: work(False), device)
        # The masks' own graph, replayed once the count is on the host (and only when the
        # frame's masks come from it): the synchronisation waits for the selection alone.
        self.mask_graph: torch.cuda.CUDAGraph | None = None
        if self.masks is not None:

            def mask_work(masks: torch.Tensor = self.masks, mask_logits: torch.Tensor = self.mask_logits) -> None:
                kernels.resize_masks(mask_logits, outputs.query, mask_geometry, out=masks, count=outputs.summary)

            self.mask_graph = capture_graph(mask_work, device)
        self.lock = threading.Lock()
        # (raw handle, stream) of the last caller: its copies of the buffers may still be queued.
        self.last_stream: tuple[int, torch.cuda.Stream] | None = None
        # Row count -> views of that many rows of the outputs, and of the masks: one copy each per frame.
        self.kept: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self.kept_masks: dict[int, torch.Tensor] = {}

    def run(
        self, logits: torch.Tensor, boxes: torch.Tensor, threshold: float | torch.Tensor, mask_logits: torch.Tensor | None, limit: int | None
    ) -> Selected:
        with self.lock:
            raw = torch._C._cuda_getCurrentRawStream(self.device_index)
            if self.last_stream is None or self.last_stream[0] != raw:
                # The last caller, on another stream, may still be copying its rows out: wait for it.
                stream = torch.cuda.current_stream(self.device_index)
                if self.last_stream is not None:
                    stream.wait_stream(self.last_stream[1])
                self.last_stream = (raw, stream)
            self.logits.copy_(logits)
            self.boxes.copy_(boxes)
            if isinstance(threshold, torch.Tensor):
                self.threshold.copy_(threshold)
            if self.mask_logits is not None:
                self.mask_logits.copy_(mask_logits)
            device_summary, host_summary = self.summary
            # The ranked graph, then the top-k's when the ranking cannot stand for it.
            for graph in (self.graph, self.topk_graph):
                graph.replay()
                # A blocking copy: the call's one synchronisation (of this stream). The
                # copies out are queued before the next caller's work on this stream, and a
                # caller on another stream waits for this one (above).
                host_summary.copy_(device_summary)
                count, tied = host_summary.tolist()
                if not tied:
                    break
            rows = count if limit is None else min(count, limit)
            views = self.kept.get(count)
            if views is None:
                views = self.kept[count] = self.layout.rows(self.packed, count)
            from_graph = self.mask_graph is not None and not tied and rows <= self.masks.shape[0]
            if from_graph:
                # Queued before the copies out, which the host then issues while the masks are made.
                self.mask_graph.replay()
            confidence, class_id, query, xyxy = (view.clone() for view in views)
            masks = None
            if from_graph:
                mask_view = self.kept_masks.get(rows)
                if mask_view is None:
                    mask_view = self.kept_masks[rows] = self.masks[:rows]
                masks = mask_view.clone()
        return Selected(confidence, class_id, query, xyxy, bool(tied), masks)


class SelectionGraphs:
    """:func:`select_frame` (and the dense masks), replayed from CUDA graphs for combinations seen before.

    A combination is the device, the logits' and boxes' shapes and dtypes, the class rule,
    the threshold (its value, or a per-class tensor's shape) and the box geometry, and
    for masks their logits' shape and dtype and the mask geometry. The first time one is
    seen it runs directly; the second time it is captured (:class:`_Captured`: the ranked
    graph and the top-k graph); later it is replayed. A combination whose capture fails
    (logged once) runs directly from then on. At most ``capacity`` combinations
    are kept (least recently used dropped). Off the GPU, or with
    ``RFDETR_TRITON_PREPROC_CUDA_GRAPHS=0``, every call runs directly.
    """

    def __init__(self, capacity: int = 16) -> None:
        self._graphs: LruCache[_Captured] = LruCache(capacity)
        # Losing a first-seen mark only delays a capture by a frame, so these may be dropped.
        self._seen: LruCache[bool] = LruCache(4 * capacity)
        # Refusals are kept for the process: a dropped one would be captured and logged again.
        self._refused: set[Hashable] = set()

    @staticmethod
    def key(
        logits: torch.Tensor,
        boxes: torch.Tensor,
        rule: kernels.ClassRule,
        threshold: float | torch.Tensor,
        geometry: kernels.BoxGeometry,
        masks: tuple[torch.Tensor, kernels.MaskGeometry] | None = None,
    ) -> tuple[object, ...] | None:
        """The combination :meth:`select` caches these arguments under, or None off the GPU
        (where every call runs directly). A caller that repeats a combination may compute
        it once and pass it to :meth:`select`."""
        if logits.device.type != "cuda":
            return None
        per_class = isinstance(threshold, torch.Tensor)
        return (
            logits.device,
            tuple(logits.shape),
            logits.dtype,
            tuple(boxes.shape),
            boxes.dtype,
            # Rules of remappings are cached with their tensors; a rule without tensors is its fields.
            (rule.kind, rule.num_classes, id(rule.keep), id(rule.mapping)),
            (tuple(threshold.shape), threshold.dtype) if per_class else float(threshold),
            geometry,
            None if masks is None else (tuple(masks[0].shape), masks[0].dtype, masks[1]),
        )

    def select(
        self,
        logits: torch.Tensor,
        boxes: torch.Tensor,
        rule: kernels.ClassRule,
        threshold: float | torch.Tensor,
        geometry: kernels.BoxGeometry,
        masks: tuple[torch.Tensor, kernels.MaskGeometry] | None = None,
        limit: int | None = None,
        key: tuple[object, ...] | None = None,
    ) -> Selected:
        """The kept rows of what :func:`select_frame` returns for these arguments (fresh
        tensors the caller owns), after the call's one synchronisation.

        Args:
            masks: ``(mask logits, mask geometry)`` of the frame, as
                :func:`~inference_triton_preproc.kernels.postprocess.resize_masks` takes
                them: a replayed graph also makes the bool masks of the first ``limit``
                (default all) rows, unless the scores are tied or the rows are more than
                :func:`mask_rows` (then :attr:`Selected.masks` is None).
            limit: how many rows' masks are wanted at most (``max_detections``).
            key: :meth:`key` of these arguments, when the caller has it; else computed.
        """
        if key is None:
            key = self.key(logits, boxes, rule, threshold, geometry, masks)
        if key is None or not graphs_enabled():
            return _counted(select_frame(logits, boxes, rule, threshold, geometry))
        captured = self._graphs.get(key)
        if captured is None:
            # Seen for the first time, or its capture failed before: run directly.
            if key in self._refused or self._seen.add(key, True):
                return _counted(select_frame(logits, boxes, rule, threshold, geometry))
            try:
                captured = self._graphs.put(key, _Captured(logits, boxes, rule, threshold, geometry, masks))
            except RuntimeError as error:
                # The direct launches still give the frame's result; only the replay is lost.
                self._refused.add(key)
                logger.warning("the detection selection could not be captured as a CUDA graph (%s); its frames run directly", error)
                return _counted(select_frame(logits, boxes, rule, threshold, geometry))
            logger.debug("captured the detection selection for %s", key)
        return captured.run(logits, boxes, threshold, None if masks is None else masks[0], limit)
