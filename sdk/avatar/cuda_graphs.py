"""Replaying a render as one CUDA graph: the cost of a frame at batch 1 on a GPU is launching kernels.

On a lent H200 a cached frame took 5–7 ms at batch 1 whatever its size (12 or 24 layers, 256² or 512²),
and a batch of 64 frames 10–20 ms: the height-field search, the upsampling, the lookups and the
per-layer compositing are a few hundred small kernels, each waiting on Python and the dispatcher. A
CUDA graph records those launches once per input shape and replays them in one call.

``GraphedCall(fn)`` wraps a function of one tensor that returns a tuple of tensors, with no host
synchronisation inside (``render_cache`` has none: its loops are static). The first call with a new
shape runs ``fn`` twice on a side stream (lazy initialisation and allocator warm-up must not be
captured), captures a third call and keeps its input and output buffers; later calls copy the input
in, replay, and return copies of the outputs. Where capturing fails (an operation that cannot be
captured on this torch or driver), it says so once in the log and runs ``fn`` eagerly from then on:
the output is the same, only slower.
"""
from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Callable

import torch
from torch import Tensor

log = logging.getLogger(__name__)

__all__ = ["GraphedCall"]


class _Graph:
    def __init__(self, graph, static_in: Tensor, static_out: tuple[Tensor, ...]):
        self.graph, self.static_in, self.static_out = graph, static_in, static_out
        self.lock = threading.Lock()


class GraphedCall:
    """``fn(x) -> tuple of tensors`` replayed from CUDA graphs, one per input shape and dtype
    (at most ``max_graphs``, least recently used dropped: each holds its own memory pool)."""

    def __init__(self, fn: Callable[[Tensor], tuple[Tensor, ...]], max_graphs: int = 8):
        self.fn = fn
        self.max_graphs = max_graphs
        self._graphs: OrderedDict[tuple, _Graph] = OrderedDict()
        self._lock = threading.Lock()      # the table of graphs, and capturing
        self.disabled_reason: str | None = None

    @property
    def num_graphs(self) -> int:
        return len(self._graphs)

    def __call__(self, x: Tensor) -> tuple[Tensor, ...]:
        if self.disabled_reason is not None or x.device.type != "cuda":
            return self.fn(x)
        key = (tuple(x.shape), x.dtype, x.device)
        with self._lock:
            entry = self._graphs.get(key)
            if entry is None:
                entry = self._capture(key, x)
            else:
                self._graphs.move_to_end(key)
        if entry is None:
            return self.fn(x)
        with entry.lock:
            entry.static_in.copy_(x)
            entry.graph.replay()
            # copies: the next replay overwrites the static outputs (same stream, so ordered after these)
            return tuple(t.clone() for t in entry.static_out)

    def _capture(self, key: tuple, x: Tensor) -> _Graph | None:
        try:
            static_in = x.clone()
            side = torch.cuda.Stream(device=x.device)
            side.wait_stream(torch.cuda.current_stream(x.device))
            with torch.cuda.stream(side):
                for _ in range(2):
                    self.fn(static_in)
            torch.cuda.current_stream(x.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            # thread_local: other threads may replay their graphs meanwhile
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                static_out = tuple(self.fn(static_in))
        except Exception as exc:  # whatever the capture refuses, the eager call still renders
            self.disabled_reason = f"{type(exc).__name__}: {exc}"
            log.warning("CUDA graph capture failed (%s); rendering without graphs", self.disabled_reason)
            return None
        entry = _Graph(graph, static_in, static_out)
        self._graphs[key] = entry
        while len(self._graphs) > self.max_graphs:
            self._graphs.popitem(last=False)
        return entry
