"""A dispatch mode that records the aten/golden ops a block of code runs: the
tests use it to see which path (the custom op, or the body directly) a golden
call took."""

from __future__ import annotations

from torch.utils._python_dispatch import TorchDispatchMode


class RecordOps(TorchDispatchMode):
    """Passes every op through and records its name; while it is active, golden
    calls go through the custom op and torch.library's autograd kernel."""

    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(str(func))
        return func(*args, **(kwargs or {}))
