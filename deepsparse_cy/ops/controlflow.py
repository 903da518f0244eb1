"""Control flow: If, Loop, Scan, SequenceMap. Bodies are compiled once into Programs.

The enclosing node receives the body's outer-scope values as implicit inputs, after its declared
inputs (see graph.ir: Node.implicit_inputs), in the order of node.implicit_inputs.
"""
import numpy as np

from ..errors import ShapeError
from .registry import Op, register


def _implicit(op, inputs):
    n = len(op.node.inputs)
    return dict(zip(op.node.implicit_inputs, inputs[n:])), inputs[:n]


def _scalar_bool(x, what):
    a = np.asarray(x)
    if a.size != 1:
        raise ShapeError(f"{what} must hold one element, got shape {list(a.shape)}")
    return bool(a.reshape(-1)[0])


@register("If", since=1)
class If(Op):
    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.then_ = ctx.compile_subgraph(node.attrs["then_branch"])
        self.else_ = ctx.compile_subgraph(node.attrs["else_branch"])

    def run(self, inputs, outs):
        outer, (cond,) = _implicit(self, inputs)
        branch = self.then_ if _scalar_bool(cond, "If condition") else self.else_
        return branch(outer)


def _stack(items, body_out_info):
    if items:
        return np.stack([np.asarray(x) for x in items])
    dt = body_out_info.dtype if body_out_info is not None and body_out_info.dtype is not None \
        else np.float32
    shp = body_out_info.shape if body_out_info is not None and body_out_info.shape else ()
    shp = tuple(d if isinstance(d, int) else 0 for d in shp)
    return np.zeros((0,) + shp, dtype=dt)


@register("Loop", since=1)
class Loop(Op):
    max_iterations = 1 << 31

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.body_graph = node.attrs["body"]
        self.body = ctx.compile_subgraph(self.body_graph)
        self.body_inputs = self.body_graph.input_names
        self.n_carried = len(self.body_inputs) - 2

    def run(self, inputs, outs):
        outer, declared = _implicit(self, inputs)
        m, cond = declared[0], declared[1] if len(declared) > 1 else None
        carried = list(declared[2:])
        if len(carried) != self.n_carried:
            raise ShapeError(f"Loop has {len(carried)} loop-carried inputs, body expects {self.n_carried}")
        trip = int(np.asarray(m).reshape(-1)[0]) if m is not None else None
        keep_going = _scalar_bool(cond, "Loop condition") if cond is not None else True
        scans = None
        i = 0
        while keep_going and (trip is None or i < trip):
            if trip is None and i >= self.max_iterations:
                raise ShapeError("Loop exceeded the iteration limit without its condition turning false")
            feeds = dict(outer)
            feeds[self.body_inputs[0]] = np.array(i, dtype=np.int64)
            feeds[self.body_inputs[1]] = np.array(keep_going)
            for nm, v in zip(self.body_inputs[2:], carried):
                feeds[nm] = v
            res = self.body(feeds)
            keep_going = _scalar_bool(res[0], "Loop body condition output") if cond is not None or True else True
            carried = list(res[1: 1 + self.n_carried])
            sc = res[1 + self.n_carried:]
            if scans is None:
                scans = [[] for _ in sc]
            for lst, v in zip(scans, sc):
                lst.append(v)
            i += 1
        n_scan = len(self.body_graph.outputs) - 1 - self.n_carried
        if scans is None:
            scans = [[] for _ in range(n_scan)]
        infos = self.body_graph.outputs[1 + self.n_carried:]
        return carried + [_stack(s, info) for s, info in zip(scans, infos)]


@register("Scan", since=9)
class Scan(Op):
    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        a = node.attrs
        self.body_graph = a["body"]
        self.body = ctx.compile_subgraph(self.body_graph)
        self.m = int(a["num_scan_inputs"])
        self.in_axes = list(a.get("scan_input_axes", [0] * self.m))
        self.in_dirs = list(a.get("scan_input_directions", [0] * self.m))
        self.n_state = len(self.body_graph.inputs) - self.m
        k = len(self.body_graph.outputs) - self.n_state
        self.out_axes = list(a.get("scan_output_axes", [0] * k))
        self.out_dirs = list(a.get("scan_output_directions", [0] * k))

    def run(self, inputs, outs):
        outer, declared = _implicit(self, inputs)
        return self.scan(outer, declared)

    def scan(self, outer, declared):
        state = list(declared[: self.n_state])
        xs = declared[self.n_state:]
        seqs = []
        for x, ax, d in zip(xs, self.in_axes, self.in_dirs):
            ax = ax + x.ndim if ax < 0 else ax
            x = np.moveaxis(x, ax, 0)
            seqs.append(x[::-1] if d else x)
        lengths = {s.shape[0] for s in seqs}
        if len(lengths) > 1:
            raise ShapeError(f"Scan inputs have different sequence lengths {sorted(lengths)}")
        n = lengths.pop() if lengths else 0
        names = self.body_graph.input_names
        collected = [[] for _ in self.out_axes]
        for t in range(n):
            feeds = dict(outer)
            feeds.update(zip(names[: self.n_state], state))
            feeds.update(zip(names[self.n_state:], [s[t] for s in seqs]))
            res = self.body(feeds)
            state = list(res[: self.n_state])
            for lst, v in zip(collected, res[self.n_state:]):
                lst.append(v)
        results = list(state)
        infos = self.body_graph.outputs[self.n_state:]
        for lst, ax, d, info in zip(collected, self.out_axes, self.out_dirs, infos):
            if d:
                lst = lst[::-1]
            y = _stack(lst, info)
            ax = ax + y.ndim if ax < 0 else ax
            results.append(np.moveaxis(y, 0, ax))
        return results


@register("Scan", since=8)
class Scan8(Scan):
    """Scan-8: a leading batch axis on states and scan inputs, optional sequence_lens."""

    def __init__(self, node, ctx):
        Op.__init__(self, node, ctx)
        a = node.attrs
        self.body_graph = a["body"]
        self.body = ctx.compile_subgraph(self.body_graph)
        self.m = int(a["num_scan_inputs"])
        self.in_axes = [0] * self.m
        self.in_dirs = list(a.get("directions", [0] * self.m))
        self.n_state = len(self.body_graph.inputs) - self.m
        k = len(self.body_graph.outputs) - self.n_state
        self.out_axes = [0] * k
        self.out_dirs = [0] * k

    def run(self, inputs, outs):
        outer, declared = _implicit(self, inputs)
        seq_lens, rest = declared[0], declared[1:]
        batch = rest[0].shape[0]
        per = []
        for b in range(batch):
            items = [x[b] for x in rest]
            if seq_lens is not None:
                L = int(seq_lens[b])
                items = items[: self.n_state] + [x[:L] for x in items[self.n_state:]]
            per.append(self.scan(outer, items))
        return [np.stack([p[j] for p in per]) for j in range(len(per[0]))]


@register("SequenceMap", since=17, seq_output=False)
class SequenceMap(Op):
    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.body_graph = node.attrs["body"]
        self.body = ctx.compile_subgraph(self.body_graph)

    def run(self, inputs, outs):
        outer, declared = _implicit(self, inputs)
        seq = declared[0]
        extra = declared[1:]
        names = self.body_graph.input_names
        results = [[] for _ in self.body_graph.outputs]
        for i in range(len(seq)):
            feeds = dict(outer)
            feeds[names[0]] = seq[i]
            for nm, e in zip(names[1:], extra):
                feeds[nm] = e[i] if isinstance(e, list) else e
            for lst, v in zip(results, self.body(feeds)):
                lst.append(v)
        return results
