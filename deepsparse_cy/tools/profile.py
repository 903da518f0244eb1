"""`deepsparse-cy profile`: one row per executed node (kernel, ISA, weight sparsity, time, GOP/s,
the dense kernel's time on the same layer and the speedup sparsity buys), a summary by op type and
the whole-model speedup from sparsity. The timings come from Engine.profile; this module adds
percentages, GOP/s, the summaries, JSON and the optional matplotlib chart.

A step's time is the call a run makes (a bound kernel call into its arena slots). Its dense twin
can only run through op.run into new arrays, so Engine.profile also times the step itself that
way and reports their ratio (speedup, like for like). The dense time shown beside the step's,
and the totals, are that ratio applied to the step's time (dense_equiv_ms): the twin's raw
op.run time (dense_ms in the JSON) carries op.run's own costs (new output arrays, layout
copies), 1-3x the bound call on a small layer, which made a dense model look slower than it is.
"""
from __future__ import annotations

import json

import numpy as np
import onnx

from ._common import (UsageError, compile_for, load_spec, make_inputs, note, parse_input_shapes,
                      resolve_shapes)

_SMALL_INIT = 4096   # initializers kept as values for shape inference (Reshape targets etc.)


def _plan_shapes(engine):
    """Value shapes of the engine's most recent plan. Engine.profile records carry no tensor
    shapes yet, so this reads the plan's arena slots (private; empty if that layout changes)."""
    try:
        plan = list(engine._plans.values())[-1]   # noqa: SLF001
        out = {k: list(v[1]) for k, v in plan.slots.items()}
        out.update({k: list(v.shape) for k, v in plan.consts.items() if hasattr(v, "shape")})
        return out
    except Exception:  # noqa: BLE001
        return {}


def estimate_flops(model, names, shapes, known=None):
    """{node name: multiply-add ops x2} for MatMul/Gemm/Conv-like nodes, from `known` value
    shapes (the engine's plan) completed by onnx shape inference at the given input shapes
    (used when an op does not report its own flops)."""
    g = model.graph
    inits = {t.name for t in g.initializer}
    graph = onnx.GraphProto()
    graph.name = g.name
    graph.node.extend(g.node)
    graph.output.extend(g.output)
    shape_of = dict(zip(names, shapes))
    for v in g.input:
        if v.name in inits:
            continue
        vi = onnx.helper.make_tensor_value_info(v.name, v.type.tensor_type.elem_type,
                                                shape_of.get(v.name))
        graph.input.append(vi)
    for t in g.initializer:
        n = int(np.prod(t.dims, dtype=np.int64)) if t.dims else 1
        if n <= _SMALL_INIT:
            graph.initializer.append(t)
        else:   # shapes suffice; skip copying big weights
            graph.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    m = onnx.helper.make_model(graph, opset_imports=model.opset_import)
    m.ir_version = model.ir_version
    try:
        m = onnx.shape_inference.infer_shapes(m, strict_mode=False, data_prop=True)
    except Exception:  # noqa: BLE001 - estimates are optional; the plan's shapes may suffice
        pass
    dims = {}
    for vi in list(m.graph.value_info) + list(m.graph.input) + list(m.graph.output):
        tt = vi.type.tensor_type
        if tt.HasField("shape"):
            d = [x.dim_value if x.HasField("dim_value") else None for x in tt.shape.dim]
            if all(x for x in d):
                dims[vi.name] = d
    for t in g.initializer:
        dims[t.name] = list(t.dims)
    dims.update(known or {})
    dims.update({n: list(s) for n, s in zip(names, shapes)})
    out = {}
    for n in g.node:
        op = n.op_type
        try:
            y = dims[n.output[0]]
            if op in ("MatMul", "MatMulInteger", "FusedMatMul"):
                out[n.name] = 2 * int(np.prod(y)) * dims[n.input[0]][-1]
            elif op == "QLinearMatMul":
                out[n.name] = 2 * int(np.prod(y)) * dims[n.input[0]][-1]
            elif op == "Gemm":
                a = dims[n.input[0]]
                ta = next((x.i for x in n.attribute if x.name == "transA"), 0)
                out[n.name] = 2 * int(np.prod(y)) * (a[0] if ta else a[1])
            elif op in ("Conv", "ConvInteger", "QLinearConv"):
                w = dims[n.input[3 if op == "QLinearConv" else 1]]
                out[n.name] = 2 * int(np.prod(y)) * int(np.prod(w[1:]))
        except (KeyError, IndexError, TypeError):
            continue
    return out


def profile_model(model, batch_size=None, input_shapes=None, num_cores=None, iterations=5,
                  warmup=1, dense_baseline=True, seed=0, quiet=False):
    """Profile a model (path, zoo:NAME or ModelProto); returns a dict with 'nodes' (one record
    per executed node), 'by_op_type', totals and 'sparsity_speedup'."""
    if iterations < 1:
        raise UsageError(f"--iterations must be >= 1, got {iterations}")
    if isinstance(input_shapes, str):
        input_shapes = parse_input_shapes(input_shapes)
    say = (lambda m: note(m, quiet))
    proto, name = load_spec(model, progress=say)
    names, shapes, batch = resolve_shapes(proto, batch_size, input_shapes)
    xs = make_inputs(proto, shapes, seed)
    say(f"compiling {name} ...")
    engine = compile_for(proto, shapes, batch, num_cores)
    say(f"profiling {iterations} iterations ...")
    recs = engine.profile(xs, iterations=iterations, warmup=warmup, dense_baseline=dense_baseline)
    est = estimate_flops(proto, names, shapes, _plan_shapes(engine))
    from ..kernels import kernel_isa
    return summarize(recs, est, {
        "model": name, "batch_size": batch, "num_cores": engine.num_cores,
        "input_shapes": {n: list(s) for n, s in zip(names, shapes)}, "kernel_isa": kernel_isa(),
        "iterations": iterations})


def summarize(records, flops_estimates=None, meta=None):
    est = flops_estimates or {}
    total = sum(r["time_ms"] for r in records) or 1e-12
    nodes = []
    for r in records:
        r = dict(r)
        r["pct"] = 100.0 * r["time_ms"] / total
        if r.get("speedup") is not None:
            r["dense_equiv_ms"] = r["time_ms"] * r["speedup"]
        fl = r.get("flops") or est.get(r["name"])
        r["flops"] = fl
        r["gops"] = fl / (r["time_ms"] * 1e6) if fl and r["time_ms"] > 0 else None
        nodes.append(r)
    by = {}
    for r in nodes:
        s = by.setdefault(r["op_type"], {"op_type": r["op_type"], "count": 0, "time_ms": 0.0,
                                         "dense_ms": 0.0, "with_dense": 0})
        s["count"] += 1
        s["time_ms"] += r["time_ms"]
        s["dense_ms"] += r.get("dense_equiv_ms", r["time_ms"])
        s["with_dense"] += "dense_equiv_ms" in r
    summary = sorted(by.values(), key=lambda s: -s["time_ms"])
    for s in summary:
        s["pct"] = 100.0 * s["time_ms"] / total
        s["speedup"] = s["dense_ms"] / s["time_ms"] if s["with_dense"] and s["time_ms"] else None
    dense_total = sum(r.get("dense_equiv_ms", r["time_ms"]) for r in nodes)
    out = dict(meta or {})
    out.update({"nodes": nodes, "by_op_type": summary, "total_ms": total,
                "dense_total_ms": dense_total, "sparsity_speedup": dense_total / total,
                "layers_with_dense_baseline": sum("dense_equiv_ms" in r for r in nodes)})
    return out


def _f(v, fmt, empty="-"):
    return empty if v is None else format(v, fmt)


def format_profile(p, name_width=34):
    lines = [f"Model: {p.get('model')}   batch {p.get('batch_size')}   cores {p.get('num_cores')}"
             f"   kernel ISA {p.get('kernel_isa')}   median of {p.get('iterations')} runs", ""]
    hdr = (f"{'#':>4} {'op':<16} {'name':<{name_width}} {'kernel':<22} {'isa':<7} "
           f"{'weight':<14} {'sparse':>6} {'b4occ':>6} {'ms':>8} {'%':>5} {'GOP/s':>7} "
           f"{'dense ms':>8} {'speedup':>7}")
    lines += [hdr, "-" * len(hdr)]
    for r in p["nodes"]:
        nm = r["name"] or ""
        if len(nm) > name_width:
            nm = "…" + nm[-(name_width - 1):]
        ws = "x".join(map(str, r["weight_shape"])) if r.get("weight_shape") else "-"
        lines.append(
            f"{r['index']:>4} {r['op_type'][:16]:<16} {nm:<{name_width}} "
            f"{str(r.get('kernel'))[:22]:<22} {str(r.get('isa'))[:7]:<7} {ws[:14]:<14} "
            f"{_f(r.get('weight_sparsity'), '6.1%'):>6} {_f(r.get('block4_occupancy'), '6.2f'):>6} "
            f"{r['time_ms']:8.3f} {r['pct']:5.1f} {_f(r.get('gops'), '7.2f'):>7} "
            f"{_f(r.get('dense_equiv_ms'), '8.3f'):>8} {_f(r.get('speedup'), '6.2f'):>6}"
            f"{'x' if r.get('speedup') is not None else ' '}")
    lines += ["", "By op type:",
              f"  {'op':<22} {'nodes':>5} {'ms':>9} {'%':>5} {'dense ms':>9} {'speedup':>7}"]
    for s in p["by_op_type"]:
        sp = f"{s['speedup']:6.2f}x" if s["speedup"] is not None else "      -"
        dm = f"{s['dense_ms']:9.3f}" if s["with_dense"] else "        -"
        lines.append(f"  {s['op_type']:<22} {s['count']:>5} {s['time_ms']:9.3f} {s['pct']:5.1f} "
                     f"{dm} {sp}")
    lines += ["", f"Total: {p['total_ms']:.3f} ms per run (sum of node medians); with dense "
                  f"kernels on the {p['layers_with_dense_baseline']} layers that have one: "
                  f"{p['dense_total_ms']:.3f} ms",
              f"Whole-model speedup from sparsity: {p['sparsity_speedup']:.2f}x",
              "(dense ms: the step's time x the dense twin's measured ratio to the step, both "
              "through op.run)"]
    return "\n".join(lines)


def plot_profile(p, path):
    """Bar chart of per-layer time, dense vs sparse, for layers with a dense baseline (all
    weight-bearing layers when none has one). Needs matplotlib (the 'plot' extra)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError("--plot needs matplotlib, which is not installed: "
                         "pip install 'deepsparse_cy[plot]' (or pip install matplotlib)") from None
    rows = [r for r in p["nodes"] if "dense_equiv_ms" in r] or \
        [r for r in p["nodes"] if r.get("weight_shape") and
         any(k in r["op_type"] for k in ("MatMul", "Gemm", "Conv"))] or p["nodes"]
    labels = [f"{r['index']} {r['op_type']}" for r in rows]
    y = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(9, max(3.0, 0.22 * len(rows) + 1.2)))
    ax.barh(y - 0.2, [r["time_ms"] for r in rows], height=0.4, label="as run (sparse)")
    ax.barh(y + 0.2, [r.get("dense_equiv_ms", np.nan) for r in rows], height=0.4,
            label="dense kernel")
    ax.set_yticks(y, labels, fontsize=6)
    ax.invert_yaxis()
    ax.set_xlabel("time per layer (ms, median)")
    ax.set_title(f"{p.get('model')}: whole-model speedup from sparsity "
                 f"{p['sparsity_speedup']:.2f}x", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=120)
    except OSError as e:
        raise UsageError(f"cannot write --plot {path}: {e.strerror}") from None
    finally:
        plt.close(fig)
    return path


def to_json(p):
    return json.dumps(p, indent=2, default=lambda o: o.item() if hasattr(o, "item") else str(o))
