"""Fuzz the loader and the compile + run path (issue 6, item 4).

Every case starts from one of a few small seed models (element-wise chain, CNN, MLP with
softmax, shape ops, an If subgraph, QLinearMatMul and a sparse float MatMul that fuse onto the
C kernels), mutates it — at the byte level (flips, inserts, truncation) or at the proto level
(attributes of random types and values, op types swapped, inputs rewired, initializer dims /
types / data broken, nodes reordered, duplicated or dropped, opset changed, shape inputs set to
large or negative values) — compiles it under a small memory budget and runs it on random inputs
(right shapes, wrong shapes, random dtypes, NaN/Inf, empty arrays).

The contract: compile/run may only raise a DeepSparseCyError. Anything else escaping, a crash of
the process, or a case running longer than --timeout seconds is a finding.

Two drivers share ``one_input(data: bytes)``:

* built-in (no dependency): random byte strings from a seeded numpy generator feed one_input::

      python tools/fuzz_engine.py --iterations 20000 --seed 1 --timeout 10

* atheris (coverage-guided libFuzzer; ``pip install atheris``), for long runs::

      python tools/fuzz_engine.py --atheris -- -max_total_time=3600 -timeout=20 corpus_dir/

A finding is saved as ``fuzz-crash-<n>.bin`` (built-in driver) or by libFuzzer; replay one with
``python tools/fuzz_engine.py --replay fuzz-crash-0.bin``.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import traceback
import warnings

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import deepsparse_cy as ds  # noqa: E402
from deepsparse_cy.errors import DeepSparseCyError  # noqa: E402
from deepsparse_cy.ops import registry as _registry  # noqa: E402

BUDGET = 64 << 20          # per-engine memory budget while fuzzing: keeps every case small


class Hang(Exception):
    pass


class Finding(Exception):
    """A non-DeepSparseCyError exception escaped (wraps it)."""


# --- byte source ----------------------------------------------------------------------------------

class Source:
    """Deterministic choices drawn from the fuzz input; zeros once it runs out."""

    def __init__(self, data):
        self.data = bytes(data)
        self.pos = 0

    def byte(self):
        if self.pos >= len(self.data):
            return 0
        b = self.data[self.pos]
        self.pos += 1
        return b

    def int(self, n):
        """0 <= value < n."""
        if n <= 1:
            return 0
        v = 0
        for _ in range(4 if n > 65536 else (2 if n > 256 else 1)):
            v = (v << 8) | self.byte()
        return v % n

    def pick(self, seq):
        return seq[self.int(len(seq))]

    def chance(self, k):
        """True with probability about 1/k."""
        return self.int(k) == 0

    def weird_int(self):
        return self.pick([0, 1, -1, 2, 3, -2, 7, 64, 2**31 - 1, -2**31, 2**62, -2**63, 10**15,
                          self.int(256) - 128, self.int(1 << 16)])

    def weird_float(self):
        return self.pick([0.0, -0.0, 1.0, -1.0, 0.5, 1e-45, 3e38, float("inf"), float("-inf"),
                          float("nan"), 1e10, (self.int(2000) - 1000) / 7.0])


# --- seed models ---------------------------------------------------------------------------------

def _vi(name, shape, t=T.FLOAT):
    return h.make_tensor_value_info(name, t, shape)


def _model(nodes, inputs, outputs, inits=(), opset=17):
    g = h.make_graph(nodes, "fuzz", inputs, outputs, initializer=list(inits))
    m = h.make_model(g, opset_imports=[h.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def _seeds():
    r = np.random.default_rng(0)
    f = lambda *s: r.standard_normal(s).astype(np.float32)  # noqa: E731
    seeds = []
    seeds.append(_model([h.make_node("Relu", ["x"], ["a"]), h.make_node("Mul", ["a", "x"], ["b"]),
                         h.make_node("Sigmoid", ["b"], ["c"]), h.make_node("Add", ["c", "k"], ["y"])],
                        [_vi("x", ["N", 4])], [_vi("y", None)], [nh.from_array(f(4), "k")]))
    seeds.append(_model([h.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], strides=[1, 1]),
                         h.make_node("Relu", ["c"], ["r"]),
                         h.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
                         h.make_node("Flatten", ["p"], ["fl"]),
                         h.make_node("Gemm", ["fl", "wg"], ["y"], transB=1)],
                        [_vi("x", [1, 3, 8, 8])], [_vi("y", None)],
                        [nh.from_array(f(4, 3, 3, 3), "w"), nh.from_array(f(4), "b"),
                         nh.from_array(f(5, 64), "wg")]))
    seeds.append(_model([h.make_node("MatMul", ["x", "w"], ["m"]), h.make_node("Add", ["m", "b"], ["a"]),
                         h.make_node("Softmax", ["a"], ["s"], axis=-1),
                         h.make_node("ReduceMean", ["s"], ["y"], axes=[1], keepdims=1)],
                        [_vi("x", ["B", "S", 8])], [_vi("y", None)],
                        [nh.from_array(f(8, 6), "w"), nh.from_array(f(6), "b")], opset=13))
    seeds.append(_model([h.make_node("Shape", ["x"], ["sh"]),
                         h.make_node("ConstantOfShape", ["sh"], ["z"], value=nh.from_array(np.array([2.0], np.float32))),
                         h.make_node("Add", ["x", "z"], ["a"]),
                         h.make_node("Reshape", ["a", "rs"], ["r"]),
                         h.make_node("Expand", ["r", "ex"], ["e"]),
                         h.make_node("Slice", ["e", "st", "en", "ax"], ["sl"]),
                         h.make_node("Concat", ["sl", "sl"], ["cc"], axis=0),
                         h.make_node("Transpose", ["cc"], ["t"], perm=[1, 0]),
                         h.make_node("Gather", ["t", "gi"], ["y"], axis=0)],
                        [_vi("x", [2, 6])], [_vi("y", None)],
                        [nh.from_array(np.array([3, 4], np.int64), "rs"),
                         nh.from_array(np.array([2, 3, 4], np.int64), "ex"),
                         nh.from_array(np.array([0], np.int64), "st"),
                         nh.from_array(np.array([2], np.int64), "en"),
                         nh.from_array(np.array([2], np.int64), "ax"),
                         nh.from_array(np.array([1, 0], np.int64), "gi")]))
    then = h.make_graph([h.make_node("Neg", ["x"], ["t"])], "then", [], [_vi("t", None)])
    els = h.make_graph([h.make_node("Abs", ["x"], ["e"])], "else", [], [_vi("e", None)])
    seeds.append(_model([h.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
                         h.make_node("Greater", ["s", "zero"], ["c"]),
                         h.make_node("If", ["c"], ["y"], then_branch=then, else_branch=els)],
                        [_vi("x", [3])], [_vi("y", None)], [nh.from_array(np.array(0, np.float32), "zero")]))
    wq = r.integers(-127, 128, (16, 8)).astype(np.int8)
    seeds.append(_model([h.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
                         h.make_node("QLinearMatMul", ["xq", "xs", "xz", "wq", "ws", "wz", "ys", "yz"], ["yq"]),
                         h.make_node("DequantizeLinear", ["yq", "ys", "yz"], ["y"])],
                        [_vi("x", ["M", 16])], [_vi("y", None)],
                        [nh.from_array(np.array(0.05, np.float32), "xs"), nh.from_array(np.array(128, np.uint8), "xz"),
                         nh.from_array(wq, "wq"), nh.from_array(np.array(0.02, np.float32), "ws"),
                         nh.from_array(np.array(0, np.int8), "wz"), nh.from_array(np.array(0.1, np.float32), "ys"),
                         nh.from_array(np.array(128, np.uint8), "yz")]))
    ws = f(16, 12)
    ws[r.random(ws.shape) < 0.8] = 0
    seeds.append(_model([h.make_node("MatMul", ["x", "ws"], ["y"])], [_vi("x", ["M", 16])], [_vi("y", None)],
                        [nh.from_array(ws, "ws")]))
    return seeds


SEEDS = _seeds()
SEED_BYTES = [m.SerializeToString() for m in SEEDS]
OPS = sorted({t for d, t, _ in _registry.registered_ops() if d == ""})
DTYPES = [T.FLOAT, T.INT64, T.INT32, T.INT8, T.UINT8, T.BOOL, T.DOUBLE, T.FLOAT16, T.STRING, 0, 999]


# --- mutations -----------------------------------------------------------------------------------

def _mutate_bytes(src, b):
    b = bytearray(b)
    for _ in range(1 + src.int(8)):
        k = src.int(5)
        if not b:
            break
        i = src.int(len(b))
        if k == 0:
            b[i] ^= 1 << src.int(8)
        elif k == 1:
            b[i] = src.byte()
        elif k == 2:
            b.insert(i, src.byte())
        elif k == 3:
            del b[i: i + 1 + src.int(8)]
        else:
            b = b[: i]
    return bytes(b)


def _names(g):
    names = [v.name for v in g.input] + [t.name for t in g.initializer]
    for n in g.node:
        names.extend(n.output)
    return names


def _random_attr(src, name):
    k = src.int(7)
    if k == 0:
        return h.make_attribute(name, src.weird_int())
    if k == 1:
        return h.make_attribute(name, src.weird_float())
    if k == 2:
        return h.make_attribute(name, [src.weird_int() for _ in range(src.int(6))] or [0])
    if k == 3:
        return h.make_attribute(name, [src.weird_float() for _ in range(1 + src.int(4))])
    if k == 4:
        return h.make_attribute(name, src.pick(["", "constant", "reflect", "DCR", "NOTSET", "x" * 300]))
    if k == 5:
        return h.make_attribute(name, nh.from_array(np.array([src.weird_float()] * src.int(3), np.float32)))
    return h.make_attribute(name, [b"a", b"b"])


_ATTR_NAMES = ["axis", "axes", "perm", "keepdims", "pads", "strides", "kernel_shape", "dilations",
               "group", "alpha", "beta", "to", "mode", "transA", "transB", "value", "epsilon",
               "blocksize", "split", "allowzero", "noop_with_empty_axes", "ceil_mode", "auto_pad"]


def _mutate_proto(src, m):
    g = m.graph
    for _ in range(src.int(4)):          # 0: the seed itself, fuzzed through its inputs only
        k = src.int(13)
        nodes = g.node
        if k == 0 and nodes:                            # attribute of a random type and value
            n = src.pick(nodes)
            name = src.pick([a.name for a in n.attribute] + _ATTR_NAMES) if src.chance(2) or not n.attribute \
                else src.pick([a.name for a in n.attribute])
            keep = [a for a in n.attribute if a.name != name]
            del n.attribute[:]
            n.attribute.extend(keep)
            n.attribute.append(_random_attr(src, name))
        elif k == 1 and nodes:                          # another op type
            src.pick(nodes).op_type = src.pick(OPS)
        elif k == 2 and nodes:                          # rewire an input
            n = src.pick(nodes)
            names = _names(g) + ["", "nowhere"]
            if n.input and src.chance(2):
                n.input[src.int(len(n.input))] = src.pick(names)
            else:
                n.input.append(src.pick(names))
        elif k == 3 and g.initializer:                  # initializer dims
            t = src.pick(g.initializer)
            dims = list(t.dims)
            if dims and src.chance(2):
                dims[src.int(len(dims))] = src.weird_int()
            else:
                dims = dims[::-1] if src.chance(2) else dims + [1]
            del t.dims[:]
            t.dims.extend(dims)
        elif k == 4 and g.initializer:                  # initializer data / type
            t = src.pick(g.initializer)
            j = src.int(3)
            if j == 0:
                t.raw_data = t.raw_data[: src.int(len(t.raw_data) + 1)]
            elif j == 1:
                t.data_type = src.pick(DTYPES)
            else:
                arr = nh.to_array(t) if t.data_type != T.STRING else None
                if arr is not None and arr.dtype.kind in "iu" and arr.size:
                    arr = arr.copy().reshape(-1)
                    arr[src.int(arr.size)] = src.weird_int() % (2**63) * (1 if src.chance(2) else -1) \
                        if arr.dtype == np.int64 else src.int(256)
                    t.CopyFrom(nh.from_array(arr.astype(nh.to_array(t).dtype).reshape(nh.to_array(t).shape), t.name))
        elif k == 5 and len(nodes) > 1:                 # reorder
            i, j = src.int(len(nodes)), src.int(len(nodes))
            a, b = onnx.NodeProto(), onnx.NodeProto()
            a.CopyFrom(nodes[i])
            b.CopyFrom(nodes[j])
            nodes[i].CopyFrom(b)
            nodes[j].CopyFrom(a)
        elif k == 6 and nodes:                          # duplicate a node
            nodes.append(onnx.NodeProto()).CopyFrom(src.pick(nodes)) if False else \
                nodes.add().CopyFrom(src.pick(nodes))
        elif k == 7 and nodes:                          # drop a node
            del nodes[src.int(len(nodes))]
        elif k == 8:                                    # opset
            m.opset_import[0].version = src.pick([1, 6, 7, 9, 11, 13, 17, 18, 21, 23, 30, 0])
        elif k == 9 and g.input:                        # graph input type
            v = src.pick(g.input)
            tt = v.type.tensor_type
            if src.chance(2):
                tt.elem_type = src.pick(DTYPES)
            elif tt.HasField("shape") and tt.shape.dim:
                d = tt.shape.dim[src.int(len(tt.shape.dim))]
                if src.chance(2):
                    d.dim_value = src.pick([0, 1, 5, 10**6])
                else:
                    d.dim_param = src.pick(["N", "M", "B", "S"])
        elif k == 10 and nodes:                         # rename an output
            n = src.pick(nodes)
            if n.output:
                n.output[src.int(len(n.output))] = src.pick(_names(g) + ["y", ""])
        elif k == 11:                                   # a value-shaped op with a hostile shape
            shape = np.array([src.weird_int() for _ in range(1 + src.int(3))], np.int64)
            nm = f"hs{src.int(1000)}"
            g.initializer.append(nh.from_array(shape, nm))
            op = src.pick(["ConstantOfShape", "Expand", "Reshape", "Tile", "Range", "Pad", "Slice"])
            x = src.pick(_names(g))
            ins = {"ConstantOfShape": [nm], "Range": [nm, nm, nm], "Slice": [x, nm, nm]}.get(op, [x, nm])
            nodes.add().CopyFrom(h.make_node(op, ins, [g.output[0].name if src.chance(3) else nm + "o"]))
        elif k == 12 and g.output:                      # graph outputs
            if src.chance(2):
                g.output[0].name = src.pick(_names(g) + ["ghost"])
            else:
                g.output.add().CopyFrom(h.make_tensor_value_info(src.pick(_names(g)), T.FLOAT, None))
    return m


# --- inputs --------------------------------------------------------------------------------------

def _inputs(src, engine):
    xs = []
    for shape, dt in zip(engine.input_shapes, engine.input_dtypes):
        dims = []
        for d in shape or [src.int(3)] * src.int(3):
            if isinstance(d, int) and not src.chance(8):
                dims.append(d)
            else:
                dims.append(src.pick([0, 1, 2, 3, 4, 7]))
        if src.chance(12):
            dims = dims[:-1] if dims else [2]
        dt = np.dtype(dt) if dt is not None and np.dtype(dt) != object else np.dtype(np.float32)
        if src.chance(12):
            dt = np.dtype(src.pick([np.float32, np.float64, np.int64, np.int8, np.uint8, np.bool_]))
        n = int(np.prod(dims))
        if n > 4096:
            dims, n = [n % 7], n % 7
        r = np.random.default_rng(src.int(1 << 16))
        if dt.kind == "f":
            x = r.standard_normal(n).astype(dt)
            if src.chance(4) and n:
                x[src.int(n)] = src.weird_float()
        elif dt.kind in "iu":
            x = r.integers(np.iinfo(dt).min, np.iinfo(dt).max, n, dtype=dt, endpoint=True) if src.chance(3) \
                else r.integers(-3, 4, n).astype(dt)
        elif dt.kind == "b":
            x = r.random(n) < 0.5
        else:
            x = np.zeros(n, dt)
        x = x.reshape(dims)
        if src.chance(6) and x.ndim >= 2:
            x = np.asfortranarray(x)
        if src.chance(6):
            x.flags.writeable = False
        xs.append(x)
    return xs


# --- the target ----------------------------------------------------------------------------------

STATS = {"mutation_impossible": 0, "refused_at_compile": 0, "compiled": 0, "runs_ok": 0,
         "runs_refused": 0}


def one_input(data):
    """One fuzz case. Returns normally or raises Finding/Hang; DeepSparseCyError is expected."""
    src = Source(data)
    i = src.int(len(SEEDS))
    try:
        if src.chance(6):
            model = _mutate_bytes(src, SEED_BYTES[i])
        else:
            m = onnx.ModelProto()
            m.CopyFrom(SEEDS[i])
            try:
                model = _mutate_proto(src, m)
            except (ValueError, TypeError, IndexError, OverflowError, AttributeError, KeyError):
                STATS["mutation_impossible"] += 1
                return          # the mutation itself was impossible: not the engine's business
            if src.chance(3):
                try:
                    model = model.SerializeToString()
                except Exception:  # noqa: BLE001 - unserialisable mutation
                    STATS["mutation_impossible"] += 1
                    return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                engine = ds.compile_model(model, memory_budget=BUDGET)
            except DeepSparseCyError:
                STATS["refused_at_compile"] += 1
                return
            STATS["compiled"] += 1
            for _ in range(1 + src.int(3)):
                try:
                    engine.run(_inputs(src, engine))
                    STATS["runs_ok"] += 1
                except DeepSparseCyError:
                    STATS["runs_refused"] += 1
    except (Hang, KeyboardInterrupt):
        raise
    except Exception as e:  # noqa: BLE001 - the finding
        raise Finding(f"{type(e).__name__}: {e}\n{traceback.format_exc()}") from e


def _alarm(signum, frame):
    raise Hang("case exceeded the per-case timeout")


def run_builtin(iterations, seed, timeout, max_seconds=None, out_dir=".", stop_on_finding=False):
    """Random byte strings into one_input; returns (iterations run, [findings])."""
    rng = np.random.default_rng(seed)
    findings = []
    old = signal.signal(signal.SIGALRM, _alarm)
    t0 = time.monotonic()
    done = 0
    try:
        for it in range(iterations):
            if max_seconds is not None and time.monotonic() - t0 > max_seconds:
                break
            data = rng.integers(0, 256, int(rng.integers(8, 400)), dtype=np.uint8).tobytes()
            signal.setitimer(signal.ITIMER_REAL, timeout)
            try:
                one_input(data)
            except (Finding, Hang) as e:
                path = os.path.join(out_dir, f"fuzz-crash-{len(findings)}.bin")
                with open(path, "wb") as fh:
                    fh.write(data)
                findings.append((it, path, str(e)))
                if stop_on_finding:
                    break
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            done += 1
    finally:
        signal.signal(signal.SIGALRM, old)
    return done, findings


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iterations", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds per case")
    ap.add_argument("--max-seconds", type=float, default=None)
    ap.add_argument("--atheris", action="store_true", help="coverage-guided run (pip install atheris)")
    ap.add_argument("--replay", help="run one saved case and show what it raises")
    ap.add_argument("rest", nargs="*", help="after --: libFuzzer arguments (atheris mode)")
    a = ap.parse_args(argv)
    if a.replay:
        with open(a.replay, "rb") as fh:
            one_input(fh.read())
        print("no finding")
        return 0
    if a.atheris:
        import atheris

        def target(data):
            try:
                one_input(data)
            except Finding as e:
                raise RuntimeError(str(e)) from None
        atheris.Setup([sys.argv[0], *a.rest], target)
        atheris.Fuzz()
        return 0
    t0 = time.monotonic()
    done, findings = run_builtin(a.iterations, a.seed, a.timeout, a.max_seconds)
    dt = time.monotonic() - t0
    print(f"{done} iterations in {dt:.1f} s ({done / max(dt, 1e-9):.0f}/s), {len(findings)} findings")
    print("outcomes:", ", ".join(f"{k} {v}" for k, v in STATS.items()))
    for it, path, msg in findings:
        print(f"--- iteration {it} ({path}):\n{msg}")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
