"""Compiled / CUDA-graphed callables of the fast path (``FastOptions.compile`` / ``cuda_graphs``)."""
from __future__ import annotations

from typing import Callable

import torch

from .options import FastOptions


class CallableCache(dict):
    """Compiled / graphed callables of one model. Copies and pickles start empty: compiled code and
    captured graphs belong to the original's tensors."""

    def __deepcopy__(self, memo):
        return CallableCache()

    def __reduce__(self):
        return (CallableCache, ())


class CUDAGraphed:
    """Replays one captured CUDA graph per input signature (shapes, dtypes, keyword names) of
    ``fn(*tensors, **tensors)``.

    Inputs are copied into static buffers, the graph is replayed and the static output cloned, so the
    result equals an eager call; the first call for a new signature warms up on a side stream, then captures.
    All graphs of one callable share one memory pool (safe: they never run at once, and each static output
    is cloned right after its replay, before another graph can reuse its memory). At most `max_graphs`
    signatures are captured; further ones run eagerly.
    """

    def __init__(self, fn: Callable, warmup: int = 2, max_graphs: int = 8):
        self.fn, self.warmup, self.graphs, self.max_graphs, self.pool = fn, warmup, {}, max_graphs, None

    def __call__(self, *args, **kw):
        names = sorted(kw)
        tensors = list(args) + [kw[n] for n in names]
        if not all(torch.is_tensor(a) and a.is_cuda for a in tensors):
            return self.fn(*args, **kw)
        key = (tuple((tuple(a.shape), a.dtype, a.device) for a in tensors), tuple(names), len(args),
               torch.is_autocast_enabled("cuda"))
        if key not in self.graphs and len(self.graphs) >= self.max_graphs:
            return self.fn(*args, **kw)
        if key not in self.graphs:
            static = [a.clone() for a in tensors]
            call = lambda: self.fn(*static[:len(args)], **dict(zip(names, static[len(args):])))  # noqa: E731
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(self.warmup):
                    call()
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            if self.pool is None:
                self.pool = torch.cuda.graph_pool_handle()
            with torch.cuda.graph(graph, pool=self.pool):
                static_out = call()
            self.graphs[key] = (graph, static, static_out)
        graph, static, static_out = self.graphs[key]
        for buf, a in zip(static, tensors):
            buf.copy_(a)
        graph.replay()
        return static_out.clone()


def wrap(fn: Callable, opts: FastOptions, device: torch.device) -> Callable:
    """fn, compiled and / or CUDA-graphed as the options say."""
    if opts.compile:
        backend = "inductor" if opts.compile is True else opts.compile
        fn = torch.compile(fn, backend=backend, dynamic=False)
    if opts.cuda_graphs and torch.device(device).type == "cuda":
        fn = CUDAGraphed(fn)
    return fn
