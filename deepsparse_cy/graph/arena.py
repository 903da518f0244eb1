"""Memory arena planner: value lifetimes -> byte offsets in one buffer.

Each planned value has [first, last] step indices (produced at `first`, last read at `last`).
Values are placed greedily, largest first, at the lowest offset that does not overlap any
already-placed value whose lifetime intersects (the classic "greedy by size" offset planner).
Setting DEEPSPARSE_CY_NO_ARENA=1 (or memory_planner=False) gives every value its own slot.
"""
from __future__ import annotations

ALIGN = 64


def _align(n, a=ALIGN):
    return (n + a - 1) // a * a


def plan_offsets(items, reuse=True):
    """items: list of (key, nbytes, first, last). Returns ({key: offset}, total_bytes)."""
    offsets = {}
    if not reuse:
        off = 0
        for key, nbytes, _, _ in items:
            offsets[key] = off
            off += _align(max(nbytes, 1))
        return offsets, off
    placed = []   # (offset, size, first, last)
    total = 0
    for key, nbytes, first, last in sorted(items, key=lambda t: (-t[1], t[2], str(t[0]))):
        size = _align(max(nbytes, 1))
        live = sorted((o, s) for o, s, f, l in placed if not (l < first or f > last))
        off = 0
        for o, s in live:
            if off + size <= o:
                break
            off = max(off, o + s)
        offsets[key] = off
        placed.append((off, size, first, last))
        total = max(total, off + size)
    return offsets, total


def peak_live(items):
    """Largest sum of sizes of values alive at the same step (a lower bound on any arena)."""
    events = {}
    for _, nbytes, first, last in items:
        events.setdefault(first, 0)
        events[first] += _align(max(nbytes, 1))
        events.setdefault(last + 1, 0)
        events[last + 1] -= _align(max(nbytes, 1))
    cur = peak = 0
    for t in sorted(events):
        cur += events[t]
        peak = max(peak, cur)
    return peak
