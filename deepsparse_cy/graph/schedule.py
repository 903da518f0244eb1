"""Deterministic topological order: Kahn's algorithm, ties broken by original node index."""
from __future__ import annotations

import heapq

from ..errors import ModelLoadError


def node_reads(node):
    return [x for x in node.inputs if x] + list(node.implicit_inputs)


def topological_order(nodes, available):
    """Order `nodes` so every input is produced first. `available`: names defined outside
    (graph inputs, initializers, outer scope). Raises ModelLoadError on undefined names,
    values produced twice, or cycles."""
    producer = {}
    for n in nodes:
        for o in n.outputs:
            if not o:
                continue
            if o in producer or o in available:
                raise ModelLoadError(f"value {o!r} is produced more than once "
                                     f"({n.describe()} and another definition)")
            producer[o] = n
    indeg = {}
    users = {}
    for n in nodes:
        deps = set()
        for x in node_reads(n):
            if x in producer:
                deps.add(id(producer[x]))
            elif x not in available:
                raise ModelLoadError(f"{n.describe()} reads {x!r}, which no node, input or "
                                     "initializer defines")
        indeg[id(n)] = len(deps)
        for d in deps:
            users.setdefault(d, []).append(n)
    heap = [(n.index, i, n) for i, n in enumerate(nodes) if indeg[id(n)] == 0]
    heapq.heapify(heap)
    order = []
    seq = len(nodes)
    while heap:
        _, _, n = heapq.heappop(heap)
        order.append(n)
        for u in users.get(id(n), []):
            indeg[id(u)] -= 1
            if indeg[id(u)] == 0:
                seq += 1
                heapq.heappush(heap, (u.index, seq, u))
    if len(order) != len(nodes):
        stuck = [n.describe() for n in nodes if indeg[id(n)] > 0][:5]
        raise ModelLoadError("graph has a cycle; nodes involved include: " + ", ".join(stuck))
    return order
