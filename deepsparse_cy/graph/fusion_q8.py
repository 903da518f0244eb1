"""8-bit data flow between quantized convolutions (a QDQ YOLO's C2f blocks), after fuse_qconv.

onnxruntime's quantize_static leaves a C2f block's joins in float: its first conv's x * Sigmoid(x)
(a QTable after fuse_qconv) is split, the part the bottlenecks read is quantized for them and
dequantized again for the residual Add and the Concat, and the Concat of float maps is quantized
for the block's last conv. Every one of those float maps was written and read once more. These
rewrites keep them 8-bit, each giving the same bytes as the graph (the tables are computed with
the engine's float32 ops and quantizer, the Add in float32 as the graph makes it)::

    Concat(x1..xn) -> QuantizeLinear          ==> Concat(QuantizeLinear(x1) .. (xn))
    Resize(nearest, x) -> QuantizeLinear      ==> Resize(QuantizeLinear(x)) (8-bit resize)
    MaxPool(x) -> QuantizeLinear              ==> QMaxPool(QuantizeLinear(x)) (max commutes with
                                                  the monotone quantizer; a chain of pools, as
                                                  in SPPF, reuses each pool's quantized output)
    QTable output -> QuantizeLinear           ==> a QTable output with the quantized table
    DequantizeLinear(a) -> QuantizeLinear     ==> a (the same parameters), else QTable(a)
    QTable(QTable's 8-bit output)             ==> more outputs of the first (composed tables)
    Add(T1(a), T2(b)) -> QuantizeLinear       ==> QAdd(a, b) (T: a DequantizeLinear, or a
                                                  QTable's float output without a split)
    QConv(requant) -> DequantizeLinear        ==> QConv(float out through its mid step)

(QuantizeLinear per tensor, constant scale / zero point.) The Concat's 8-bit inputs are then
written in place into its output (engine._plan_inplace_concat), so a C2f block's join copies
nothing and no float map is made. ``DEEPSPARSE_CY_NO_Q8_FLOW=1`` turns these rewrites off.
"""
from __future__ import annotations

import os

import numpy as np

from .fusion import DOMAIN, _q_params, _View
from .fusion_conv import _live_nodes, quantize_values
from ..ops.fast_quant import _index8
from .ir import Node


def _enabled():
    return os.environ.get("DEEPSPARSE_CY_NO_Q8_FLOW", "") not in ("1", "true")


def _onnx(n, op_type):
    return n.op_type == op_type and n.domain in ("", "ai.onnx")


def _alive(v):
    return [n for n in list(v.g.nodes) + list(v.added) if id(n) not in v.removed]


def _readers(v, name):
    return [c for c in v.cons.get(name, []) if id(c) not in v.removed]


def _fresh(v, base):
    name, i = base, 0
    while name in v.producer or name in v.init or name in v.cons:
        i += 1
        name = f"{base}_{i}"
    return name


def _dq_table(qp):
    """DequantizeLinear's float32 values of the 256 bytes (index: value - type min), the
    dequantizer's ((q - zp) * scale) in float32."""
    info = np.iinfo(qp[2])
    q = np.arange(info.min, info.max + 1, dtype=np.int64).astype(np.float32)
    return ((q - np.float32(qp[1])) * np.float32(qp[0])).astype(np.float32)


def _table_node(old, outputs, tables, parts):
    attrs = dict(old.attrs)
    attrs.update(tables=tables, parts=parts)
    return Node("QTable", DOMAIN, list(old.inputs), outputs, attrs, old.name, old.index)


def _tables_of(t):
    """(outputs, tables, parts) of a QTable node, as fast_quant.QTable reads them."""
    outs = list(t.outputs)
    tables = t.attrs.get("tables")
    tables = [np.asarray(t.attrs["table"], np.float32)] * len(outs) if tables is None \
        else list(tables)
    parts = t.attrs.get("parts")
    parts = (list(range(len(outs))) if "split_axis" in t.attrs else [0] * len(outs)) \
        if parts is None else list(parts)
    return outs, tables, parts


def _qtable(n):
    return n.op_type == "QTable" and n.domain == DOMAIN


def _is_table(v, name):
    """The live QTable making value `name`, or None."""
    n = v.producer.get(name)
    return n if n is not None and id(n) not in v.removed and _qtable(n) else None


def _foldable(v, x):
    """Would a QuantizeLinear of float value x fold into what makes it (_fold_q)?"""
    p = v.producer.get(x)
    if p is None or id(p) in v.removed:
        return False
    if _qtable(p) or (_onnx(p, "DequantizeLinear") and _tabled(v, x) is not None):
        return True
    return _onnx(p, "Add") and len(p.inputs) == 2 \
        and all(_tabled(v, t) is not None for t in p.inputs)


def _push_q_through_concat(v):
    """Concat -> QuantizeLinear ==> Concat of the inputs' QuantizeLinears, where at least one of
    them folds into its producer (the others cost one pass each, as the Concat's did)."""
    count = 0
    for c in _alive(v):
        if not _onnx(c, "Concat") or not c.outputs or not c.outputs[0] \
                or not c.inputs or not all(c.inputs):
            continue
        q = v.sole(c.outputs[0], "QuantizeLinear")
        if q is None or _q_params(v, q) is None or not any(_foldable(v, x) for x in c.inputs):
            continue
        made = {}
        for x in c.inputs:
            if x in made:
                continue
            made[x] = _fresh(v, f"{x}_q8")
            v.replace([], Node("QuantizeLinear", "", [x] + list(q.inputs[1:]), [made[x]],
                               dict(q.attrs), f"{q.name}_{len(made)}", q.index))
        v.replace([c, q], Node("Concat", "", [made[x] for x in c.inputs], [q.outputs[0]],
                               dict(c.attrs), c.name, c.index))
        count += 1
    return count


def _push_q_through_resize(v):
    """Resize(nearest) -> QuantizeLinear (its only reader) ==> QuantizeLinear -> Resize of the
    8-bit tensor: nearest resizing copies input values, so it commutes with the elementwise
    quantizer (same bytes); the quantizer then runs on the smaller input (a quarter of it at a
    2x upsample), the resize moves bytes (ops/resize.py's 8-bit planes), and the quantizer
    may fold into the input's producer (_fold_q). Not tf_crop_and_resize (its extrapolated
    pixels are a value the input does not hold)."""
    count = 0
    for r in _alive(v):
        a = r.attrs
        if not _onnx(r, "Resize") or not r.inputs or not r.inputs[0] or not r.outputs \
                or not r.outputs[0] or a.get("mode", "nearest") != "nearest" \
                or a.get("coordinate_transformation_mode") == "tf_crop_and_resize" \
                or r.outputs[0] in v.outputs:
            continue
        q = v.sole(r.outputs[0], "QuantizeLinear")
        if q is None or _q_params(v, q) is None:
            continue
        x = r.inputs[0]
        xq = _fresh(v, f"{x}_q8")
        v.replace([], Node("QuantizeLinear", "", [x] + list(q.inputs[1:]), [xq],
                           dict(q.attrs), q.name, q.index))
        v.replace([r, q], Node("Resize", r.domain, [xq] + list(r.inputs[1:]), [q.outputs[0]],
                               dict(a), r.name, r.index))
        count += 1
    return count


def _q_key(qp):
    """A per-tensor quantizer's parameters as compared across nodes: (float32 scale, zero
    point, type)."""
    return float(np.float32(qp[0])), qp[1], qp[2]


def _quantized(v, x, q):
    """The output of a QuantizeLinear of x with q's parameters: a pool's quantized output an
    earlier rewrite made, an existing QuantizeLinear reader of x with the same scale, zero
    point and type, else a new node."""
    k = _q_key(_q_params(v, q))
    if (x,) + k in v.q8_of:
        return v.q8_of[(x,) + k]
    for c in _readers(v, x):
        if _onnx(c, "QuantizeLinear") and c.outputs and c.outputs[0] and c.inputs[0] == x:
            cp = _q_params(v, c)
            if cp is not None and _q_key(cp) == k:
                return c.outputs[0]
    xq = _fresh(v, f"{x}_q8")
    v.replace([], Node("QuantizeLinear", "", [x] + list(q.inputs[1:]), [xq], dict(q.attrs),
                       f"{q.name}_in", q.index))
    return xq


def _push_q_through_maxpool(v):
    """MaxPool (2-D, one output) -> QuantizeLinear (per tensor) ==> QMaxPool of the input
    quantized with the same parameters: quantization is monotone, so the max of the quantized
    window is the quantized max, bit for bit (padding is ignored either way). The pool's other
    readers keep the float pool; in a chain (SPPF: three 5 x 5 pools, each quantized for one
    Concat) each pool's input is already quantized by the previous rewrite, so the float pools
    end up unread and dropped, and the first quantizer folds into its producer's table (the
    quantized YOLOv8n's SPPF: 0.12 ms of float pools and three QuantizeLinears became three
    8-bit planar pools)."""
    count = 0
    v.q8_of = {}
    for mp in _alive(v):
        a = mp.attrs
        if not _onnx(mp, "MaxPool") or id(mp) in v.removed or not mp.inputs or not mp.inputs[0] \
                or not mp.outputs or not mp.outputs[0] \
                or len(mp.outputs) > 1 and mp.outputs[1] \
                or len(a.get("kernel_shape", ())) != 2 or a.get("storage_order", 0):
            continue
        for q in list(_readers(v, mp.outputs[0])):
            qp = _q_params(v, q) if _onnx(q, "QuantizeLinear") else None
            if qp is None or not qp[0] > 0 or not q.outputs or not q.outputs[0] \
                    or q.inputs[0] != mp.outputs[0]:
                continue
            xq = _quantized(v, mp.inputs[0], q)
            attrs = {k: a[k] for k in ("kernel_shape", "strides", "pads", "dilations",
                                       "auto_pad", "ceil_mode") if k in a}
            v.replace([q], Node("QMaxPool", DOMAIN, [xq], [q.outputs[0]], attrs, mp.name,
                                mp.index))
            # q's output is the pool's output quantized: a pool reading this one reuses it
            v.q8_of[(mp.outputs[0],) + _q_key(qp)] = q.outputs[0]
            count += 1
    # float pools nothing reads any more (a chain's, last first)
    dropped = True
    while count and dropped:
        dropped = False
        for mp in _alive(v):
            if _onnx(mp, "MaxPool") and mp.outputs and not any(
                    o and (o in v.outputs or _readers(v, o)) for o in mp.outputs):
                v.removed.add(id(mp))
                dropped = True
    return count


def _tabled(v, name):
    """(8-bit source value, float32 table) when value `name` is a table of one 8-bit tensor
    (per-tensor DequantizeLinear of a non-constant, or a split-free QTable's float output)."""
    p = v.producer.get(name)
    if p is None or id(p) in v.removed:
        return None
    if _onnx(p, "DequantizeLinear") and v.const(p.inputs[0]) is None:
        qp = _q_params(v, p)
        return (p.inputs[0], _dq_table(qp)) if qp is not None else None
    if _qtable(p) and "split_axis" not in p.attrs:
        outs, tables, _ = _tables_of(p)
        t = np.asarray(tables[outs.index(name)])
        if t.dtype == np.float32:
            return p.inputs[0], t
    return None


def _fold_q(v, q):
    """One QuantizeLinear folded into what makes its input (module docstring); True if done."""
    qp = _q_params(v, q)
    x = q.inputs[0]
    y = q.outputs[0]
    if qp is None or not qp[0] > 0 or not y:
        return False
    p = v.producer.get(x)
    if p is None or id(p) in v.removed:
        return False
    if _qtable(p):
        outs, tables, parts = _tables_of(p)
        i = outs.index(x)
        if np.asarray(tables[i]).dtype != np.float32:
            return False
        tq = quantize_values(tables[i], qp)
        if v.sole(x) is q:                 # q its only reader: the output becomes q's
            outs[i], tables[i] = y, tq
        else:
            outs, tables, parts = outs + [y], tables + [tq], parts + [parts[i]]
        v.replace([p, q], _table_node(p, outs, tables, parts))
        return True
    if _onnx(p, "DequantizeLinear") and v.const(p.inputs[0]) is None:
        dq = _q_params(v, p)
        if dq is None:
            return False
        a = p.inputs[0]
        if (np.float32(dq[0]), dq[1], dq[2]) == (np.float32(qp[0]), qp[1], qp[2]):
            if y in v.outputs:
                return False
            for c in _readers(v, y):       # the same bytes: its readers read a itself
                c.inputs = [a if t == y else t for t in c.inputs]
                v.cons.setdefault(a, []).append(c)
            v.removed.add(id(q))
            return True
        table = _dq_table(dq)
        v.replace([q], Node("QTable", DOMAIN, [a], [y],
                            {"table": table, "tables": [quantize_values(table, qp)]},
                            q.name, q.index))
        return True
    if _onnx(p, "Add") and len(p.inputs) == 2 and v.sole(x) is q:
        ta, tb = _tabled(v, p.inputs[0]), _tabled(v, p.inputs[1])
        if ta is None or tb is None:
            return False
        attrs = {"ta": ta[1], "tb": tb[1], "y_scale": float(np.float32(qp[0])),
                 "y_zero_point": qp[1], "y_dtype": qp[2].name}
        v.replace([p, q], Node("QAdd", DOMAIN, [ta[0], tb[0]], [y], attrs, p.name, p.index))
        return True
    return False


def _compose(v, t2):
    """t2 = QTable(s) without a split, s an 8-bit output of QTable t1: t2's outputs become
    outputs of t1 with the composed tables (t1 reads its input once for all of them)."""
    if "split_axis" in t2.attrs:
        return False
    t1 = _is_table(v, t2.inputs[0])
    if t1 is None or t1 is t2:
        return False
    outs1, tables1, parts1 = _tables_of(t1)
    k = outs1.index(t2.inputs[0])
    src = np.asarray(tables1[k])
    if src.dtype == np.float32:
        return False
    outs2, tables2, _ = _tables_of(t2)
    idx = _index8(src)      # 8-bit table values as indices into the next table
    for o, t in zip(outs2, tables2):
        outs1.append(o)
        tables1.append(np.ascontiguousarray(np.asarray(t)[idx]))
        parts1.append(parts1[k])
    v.replace([t1, t2], _table_node(t1, outs1, tables1, parts1))
    return True


def _prune_outputs(v):
    """QTable outputs nothing live reads any more (a float output whose readers were folded)."""
    live = _live_nodes(v)
    for t in _alive(v):
        if not _qtable(t) or id(t) not in live:
            continue
        outs, tables, parts = _tables_of(t)
        keep = [i for i, o in enumerate(outs) if o in v.outputs or any(
            id(c) in live for c in _readers(v, o))]
        if keep and len(keep) < len(outs):
            v.replace([t], _table_node(t, [outs[i] for i in keep], [tables[i] for i in keep],
                                       [parts[i] for i in keep]))


def _fold_dq_into_qconv(v):
    """QConv(requant, nothing after its quantization) -> DequantizeLinear (the same parameters,
    its only reader) ==> QConv writing float32 through its mid step: the kernel quantizes to
    those parameters and dequantizes in its epilogue, (q - zp) * scale in float32 as the
    DequantizeLinear computes it (a YOLO head's box / class convs before their float Concat)."""
    count = 0
    for c in _alive(v):
        a = c.attrs
        if c.op_type != "QConv" or c.domain != DOMAIN or a.get("mode") != "requant" \
                or "mid_scale" in a or a.get("table") is not None or a.get("activation") \
                or len([x for x in c.inputs if x]) > 2 or int(a.get("group", 1)) != 1:
            continue
        dq = v.sole(c.outputs[0], "DequantizeLinear")
        qp = _q_params(v, dq) if dq is not None else None
        if qp is None or (np.float32(qp[0]), qp[1], qp[2]) != (
                np.float32(a["y_scale"]), int(a.get("y_zero_point", 0)),
                np.dtype(a.get("y_dtype", "uint8"))):
            continue
        n = int(v.const(c.inputs[1]).shape[0])
        attrs = {k: val for k, val in a.items() if k not in ("y_scale", "y_zero_point", "y_dtype")}
        attrs.update(mode="float", mid_scale=float(np.float32(qp[0])), mid_zero_point=qp[1],
                     mid_dtype=qp[2].name, post_scale=np.ones(n, np.float32),
                     post_bias=np.zeros(n, np.float32))
        v.replace([c, dq], Node("QConv", DOMAIN, list(c.inputs), [dq.outputs[0]], attrs, c.name,
                                c.index))
        count += 1
    return count


def fuse_q8_flow(graph):
    """The rewrites of the module docstring on `graph`; returns their number."""
    if not _enabled():
        return 0
    v = _View(graph)
    count = _fold_dq_into_qconv(v) + _push_q_through_concat(v)
    count += _push_q_through_resize(v)     # (after: a Concat's QuantizeLinears are its inputs')
    count += _push_q_through_maxpool(v)
    changed = True
    while changed:
        changed = False
        for n in _alive(v):
            if id(n) in v.removed:
                continue
            if (_onnx(n, "QuantizeLinear") and _fold_q(v, n)) \
                    or (_qtable(n) and _compose(v, n)):
                changed = True
                count += 1
    if count:
        _prune_outputs(v)
        v.commit()
    return count
