"""Memory budget seen by operators: refuse a tensor before allocating it, not after.

A hostile model can ask for a tensor far larger than the machine (ConstantOfShape of 10**15
elements, an Expand/Tile/Pad/Range to absurd sizes, a broadcast of [n,1] against [1,n]).
numpy would either fail with a bare MemoryError or, under memory overcommit, start filling pages
and take the host process down. Ops that create tensors whose size comes from *values* (not
from the size of their inputs) call :func:`check_alloc` / :func:`check_shape` first.

The budget is per engine (``Engine(memory_budget=...)``); the engine makes it current with
:func:`memory_budget` while it compiles and runs. Outside an engine (ops called directly) the
default applies: 80% of the memory available when this module was imported.
"""
from __future__ import annotations

import contextlib
import contextvars
import math
import os

from .errors import ResourceError, ShapeError


def default_budget():
    """80% of currently available physical memory (16 GiB when the OS does not say)."""
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") * 0.8)
    except (ValueError, OSError, AttributeError):
        return 16 << 30


_DEFAULT = default_budget()
# A ContextVar, not a global: engines with different budgets may run in different threads.
_BUDGET = contextvars.ContextVar("deepsparse_cy_memory_budget", default=None)


def current_budget():
    b = _BUDGET.get()
    return _DEFAULT if b is None else b


@contextlib.contextmanager
def memory_budget(nbytes):
    """Make `nbytes` the budget for ops run inside the block (this thread / context only)."""
    token = _BUDGET.set(int(nbytes))
    try:
        yield
    finally:
        _BUDGET.reset(token)


def check_alloc(nbytes, what):
    """Raise ResourceError if one allocation of `nbytes` would exceed the current budget."""
    budget = current_budget()
    if nbytes > budget:
        raise ResourceError(f"{what} needs {_fmt_bytes(nbytes)}, over the memory budget of "
                            f"{_fmt_bytes(budget)}; refused")


def check_shape(shape, itemsize, what):
    """check_alloc for a tensor of `shape` (ints; negative dims refused) and element size.

    Exact Python integers: no int64 overflow can turn a huge shape into a small product."""
    dims = [int(d) for d in shape]
    if any(d < 0 for d in dims):
        raise ShapeError(f"{what}: negative dimension in shape {dims}")
    check_alloc(math.prod(dims) * int(itemsize), f"{what} of shape {dims}")


def _fmt_bytes(n):
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
