"""Quantized convolution fusion: rewrite INT8 Conv patterns into one ``QConv`` node
(domain ``com.deepsparse_cy``, ops/fast_qconv.py) that runs on the qs8 kernels.

Patterns (weights constant; constant folding has already turned DequantizeLinear(W_q) into a
float weight, from which the int8 weight and its per-channel scales are recovered exactly, see
fusion.recover_int8)::

    DequantizeLinear(x_q) -> Conv(W [, B]) -> tail                              QDQ (quantize_static)
    QLinearConv(x_q, ..., W_q, ..., B_i32)                                      -> u8/s8
    ConvInteger(x_q, W_q [, zx, zw]) [-> Cast(float) -> Mul(scale) [-> Add(bias)]]

The QDQ tail absorbed after the Conv, each step optional, in this order::

    [Add(const bias)] [QuantizeLinear -> DequantizeLinear] [BatchNormalization]
    [Add(residual)] [Relu | Clip] [QuantizeLinear]

* The Q -> DQ round trip of the conv output (onnxruntime quantizes every Conv output, then
  BatchNormalization runs in float) is dropped, as fusion.py does for QGemm: the composite epilogue
  acc * s_x * s_w * k + b differs from the unfused graph by at most half a step of that
  intermediate scale (times the BN factor) -- only with DEEPSPARSE_CY_QDQ_FAST=1. By default
  (fusion._exact_default) the round trip is kept: the kernel quantizes the conv output to that
  scale / zero point (attrs mid_*), and the kernel's epilogue applies BN / residual /
  activation / the final quantization to it in float32 (numpy only for a depthwise conv, an NCHW
  residual or a bias too large for int32), as the file computes them.
* BatchNormalization (constant parameters) folds into per-channel scale and bias.
* A residual Add takes the other operand as a third input; when it is DequantizeLinear(r_q)
  (per tensor) the quantized r_q is read directly with its scale / zero point.
* Relu / Clip become the kernel's activation; a final QuantizeLinear makes the node requantize.
* QConv(float out) -> MaxPool -> QuantizeLinear: the QConv requantizes to that QuantizeLinear and
  a QMaxPool pools the int8 values (max commutes with the monotone quantization: bit-identical).
* Elementwise tails as tables: QConv(float, with the mid step) -> f -> QuantizeLinear, or
  QConv(requant) -> DequantizeLinear -> f -> QuantizeLinear, where f is a small graph of
  elementwise ops on that one value and scalar constants (x * Sigmoid(x), HardSwish,
  HardSigmoid, ...): the output byte depends only on the channel and the 8-bit mid value, so
  the QConv carries a table [Cout, 256] of it (attr table), computed here with the engine's own
  float32 ops, and the kernels look it up in the epilogue (dscy_kernels.h lut).

Layout: QConv computes in NHWC. After the rewrites, every value produced by a QConv and read only
by QConv / QMaxPool nodes (as data or residual input) stays NHWC: the producer gets y_layout='NHWC' and the
readers x_layout / res_layout='NHWC', so a chain of quantized convolutions transposes only at its
boundaries.
"""
from __future__ import annotations

import numpy as np

from ..ops import elementwise as _ew
from .fusion import DOMAIN, _View, _exact_default, _q_params, _scalar, recover_int8
from .ir import Node


def _conv_attrs(conv):
    a = conv.attrs
    return {k: a[k] for k in ("kernel_shape", "strides", "pads", "dilations", "group", "auto_pad")
            if k in a}


def _conv_weight(v, name):
    """(q [Cout, Cin/g, kh, kw] int8, s_w [Cout] f32) of a conv weight, or None."""
    dq = v.prod(name, "DequantizeLinear")
    if dq is not None and name not in v.outputs:
        q, s = v.const(dq.inputs[0]), v.const(dq.inputs[1])
        zp = v.const(dq.inputs[2]) if len(dq.inputs) > 2 and dq.inputs[2] else None
        if q is None or s is None or q.ndim != 4 or dq.attrs.get("block_size", 0) \
                or q.dtype not in (np.int8, np.uint8):
            return None
        if s.size != 1 and (s.ndim != 1 or dq.attrs.get("axis", 1) % 4 != 0 or s.size != q.shape[0]):
            return None
        qi = q.astype(np.int16)
        if zp is not None:
            z = np.asarray(zp).astype(np.int16)
            qi = qi - (z.reshape(()) if z.size == 1 else z.reshape(-1, 1, 1, 1))
        if qi.min() < -128 or qi.max() > 127:
            return None
        sn = np.broadcast_to(np.asarray(s, np.float32).reshape(-1), (q.shape[0],)).copy()
        return qi.astype(np.int8), sn
    w = v.const(name)
    if w is None or w.ndim != 4 or w.dtype != np.float32:
        return None
    r = recover_int8(w.reshape(w.shape[0], -1))
    if r is None:
        return None
    return r[0].reshape(w.shape), r[1]


def _per_channel_const(v, name, n):
    """A constant float broadcastable per channel on NCHW ([n], [n,1,1], [1,n,1,1] or scalar)
    -> float64 [n], else None."""
    c = v.const(name)
    if c is None or c.dtype.kind != "f":
        return None
    if c.size == 1:
        return np.full(n, float(c.reshape(())), np.float64)
    s = [d for d in c.shape]
    if c.size != n:
        return None
    # channel axis of an NCHW value: shape [n,1,1] / [1,n,1,1] (a 1-D [n] would broadcast on W)
    if c.ndim == 3 and s == [n, 1, 1] or c.ndim == 4 and s == [1, n, 1, 1]:
        return c.reshape(-1).astype(np.float64)
    return None


def _other(node, y):
    return node.inputs[1] if node.inputs[0] == y else node.inputs[0]


def _clip_bounds(v, node):
    if node.op_type == "Relu":
        return 0.0, None
    if len(node.inputs) > 1:       # opset >= 11: min / max inputs
        lo = v.const(node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1] else None
        hi = v.const(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else None
        if (len(node.inputs) > 1 and node.inputs[1] and lo is None) or \
                (len(node.inputs) > 2 and node.inputs[2] and hi is None):
            return None
        return (None if lo is None else float(lo.reshape(())),
                None if hi is None else float(hi.reshape(())))
    return float(node.attrs.get("min", -3.4e38)), float(node.attrs.get("max", 3.4e38))


def _conv_tail(v, y, n, exact, attrs, absorbed):
    """Extend the fused conv over the QDQ tail (module docstring). attrs gets post_scale [n]
    (float64 factor on the conv result), post_bias [n], residual info, activation, y quant.
    Returns (output name, residual input name or '')."""
    k = np.ones(n, np.float64)
    b = np.zeros(n, np.float64)
    residual = ""
    stage = 0       # 0 bias, 1 Q->DQ, 2 BN, 3 residual, 4 activation
    while True:
        nxt = v.sole(y)
        if nxt is None or nxt.domain not in ("", "ai.onnx"):
            break
        op = nxt.op_type
        if op == "Add" and stage == 0 and len(nxt.inputs) == 2:
            c = _per_channel_const(v, _other(nxt, y), n)
            if c is not None:
                b += c
                absorbed.append(nxt)
                y, stage = nxt.outputs[0], 1
                continue
        if op == "QuantizeLinear" and stage <= 1:
            qp = _q_params(v, nxt)
            dq = v.sole(nxt.outputs[0], "DequantizeLinear")
            nn = v.sole(dq.outputs[0]) if dq is not None else None
            if qp is not None and dq is not None and _q_params(v, dq) == qp \
                    and nn is not None and nn.domain in ("", "ai.onnx") and nn.op_type in (
                        "BatchNormalization", "Add", "Relu", "Clip"):
                if exact:
                    # keep the round trip: the kernel quantizes to (s1, z1), the rest follows
                    attrs.update(mid_scale=qp[0], mid_zero_point=qp[1], mid_dtype=qp[2].name,
                                 pre_bias=b)
                    k, b = np.ones(n, np.float64), np.zeros(n, np.float64)
                absorbed += [nxt, dq]
                y, stage = dq.outputs[0], 2
                continue
            break       # the final QuantizeLinear, handled below
        if op == "BatchNormalization" and stage <= 2 and not nxt.attrs.get("training_mode", 0) \
                and len(nxt.inputs) >= 5 and len([o for o in nxt.outputs if o]) == 1:
            ps = [v.const(x) for x in nxt.inputs[1:5]]
            if all(p is not None and p.size == n for p in ps):
                sc, bi, mean, var = (p.reshape(-1).astype(np.float64) for p in ps)
                f = sc / np.sqrt(var + float(nxt.attrs.get("epsilon", 1e-5)))
                k, b = k * f, (b - mean) * f + bi
                absorbed.append(nxt)
                y, stage = nxt.outputs[0], 3
                continue
            break
        if op == "Add" and stage <= 3 and len(nxt.inputs) == 2:
            r = _other(nxt, y)
            if r == y or v.const(r) is not None:
                c = _per_channel_const(v, r, n) if r != y else None
                if c is None:
                    break
                b += c
                absorbed.append(nxt)
                y, stage = nxt.outputs[0], 3
                continue
            residual = r
            rdq = v.prod(r, "DequantizeLinear")
            rp = _q_params(v, rdq) if rdq is not None else None
            if rp is not None and v.const(rdq.inputs[0]) is None:
                residual = rdq.inputs[0]
                attrs.update(res_scale=rp[0], res_zero_point=rp[1])
            absorbed.append(nxt)
            y, stage = nxt.outputs[0], 4
            continue
        if op in ("Relu", "Clip") and stage <= 4:
            cb = _clip_bounds(v, nxt)
            if cb is None:
                break
            attrs["activation"] = "relu" if cb == (0.0, None) else "clip"
            attrs["clip_min"] = -np.inf if cb[0] is None else cb[0]
            attrs["clip_max"] = np.inf if cb[1] is None else cb[1]
            absorbed.append(nxt)
            y, stage = nxt.outputs[0], 5
            continue
        break
    attrs["post_scale"] = k
    attrs["post_bias"] = b
    q = v.sole(y, "QuantizeLinear")
    qp = _q_params(v, q) if q is not None else None
    if qp is not None:
        absorbed.append(q)
        attrs.update(y_scale=qp[0], y_zero_point=qp[1], y_dtype=qp[2].name, mode="requant")
        return q.outputs[0], residual
    attrs["mode"] = "float"
    return y, residual


def _finish(v, node_name, index, x, q, s_w, attrs, absorbed, out, residual):
    """Fold post_scale / post_bias into w_scale / bias and emit the QConv node."""
    bias = np.asarray(attrs.pop("bias", np.zeros(len(s_w))), np.float64)
    if "mid_scale" in attrs:
        # exact QDQ: conv -> quantize (mid) in the kernel, post affine applied after it
        attrs["w_scale"] = np.asarray(s_w, np.float32)
        attrs["bias"] = (bias + attrs.pop("pre_bias")).astype(np.float32)
        attrs["post_scale"] = attrs["post_scale"].astype(np.float32)
        attrs["post_bias"] = attrs["post_bias"].astype(np.float32)
        wname = v.new_init((node_name or "qconv") + "__w_s8", q)
        ins = [x, wname] + ([residual] if residual else [])
        node = Node("QConv", DOMAIN, ins, [out], attrs, node_name, index)
        v.replace(absorbed, node)
        v.absorbed_by.append((node, list(absorbed)))
        return node
    k = attrs.pop("post_scale")
    pb = attrs.pop("post_bias")
    q = q.copy()
    zero = k == 0
    q[zero] = 0                              # a BN factor of 0: the channel is its bias
    kk = np.where(zero, 1.0, k)
    attrs["w_scale"] = (np.asarray(s_w, np.float64) * kk).astype(np.float32)
    attrs["bias"] = (bias * kk + pb).astype(np.float32)
    wname = v.new_init((node_name or "qconv") + "__w_s8", q)
    ins = [x, wname] + ([residual] if residual else [])
    node = Node("QConv", DOMAIN, ins, [out], attrs, node_name, index)
    v.replace(absorbed, node)
    v.absorbed_by.append((node, list(absorbed)))
    return node


def _fuse_qdq_conv(v, exact):
    count = 0
    for cv in list(v.g.nodes):
        if id(cv) in v.removed or cv.op_type != "Conv" or cv.domain not in ("", "ai.onnx"):
            continue
        if len(cv.inputs) < 2 or len(cv.attrs.get("kernel_shape", [0, 0])) != 2:
            continue
        dqx = v.prod(cv.inputs[0], "DequantizeLinear")
        if dqx is None:
            continue
        xp = _q_params(v, dqx)
        if xp is None or v.const(dqx.inputs[0]) is not None:
            continue
        wq = _conv_weight(v, cv.inputs[1])
        if wq is None:
            continue
        q, s_w = wq
        n = q.shape[0]
        bias = np.zeros(n, np.float64)
        if len(cv.inputs) > 2 and cv.inputs[2]:
            bc = v.const(cv.inputs[2])
            if bc is None or bc.dtype.kind != "f" or bc.size != n:
                continue
            bias = bc.reshape(-1).astype(np.float64)
        attrs = _conv_attrs(cv)
        attrs.update(x_scale=xp[0], x_zero_point=xp[1], bias=bias)
        absorbed = [cv]
        out, residual = _conv_tail(v, cv.outputs[0], n, exact, attrs, absorbed)
        _finish(v, cv.name, cv.index, dqx.inputs[0], q, s_w, attrs, absorbed, out, residual)
        count += 1
    return count


def _int_weight(w, zw):
    """w - zw (per tensor or per output channel) as int8 [Cout, ...], or None."""
    wi = w.astype(np.int16)
    if zw is not None:
        z = np.asarray(zw).astype(np.int16)
        if z.size != 1 and z.size != w.shape[0]:
            return None
        wi = wi - (z.reshape(()) if z.size == 1 else z.reshape((-1,) + (1,) * (w.ndim - 1)))
    if wi.min() < -128 or wi.max() > 127:
        return None
    return wi.astype(np.int8)


def _fuse_qlinear_conv(v):
    count = 0
    for nd in list(v.g.nodes):
        if id(nd) in v.removed or nd.op_type != "QLinearConv" or nd.domain not in ("", "ai.onnx"):
            continue
        ins = list(nd.inputs) + [""] * (9 - len(nd.inputs))
        sx, zx, w, sw, zw, sy, zy = (v.const(x) if x else None for x in ins[1:8])
        b = v.const(ins[8]) if ins[8] else None
        if v.const(ins[0]) is not None or w is None or w.ndim != 4 or sw is None \
                or not _scalar(sx) or not _scalar(sy) or (ins[8] and b is None):
            continue
        if (ins[2] and not _scalar(zx)) or (ins[7] and not _scalar(zy)) or (ins[5] and zw is None):
            continue
        ydt = np.dtype(zy.dtype) if zy is not None else np.dtype(np.uint8)
        if ydt not in (np.uint8, np.int8) or w.dtype not in (np.int8, np.uint8):
            continue
        q = _int_weight(w, zw)
        n = w.shape[0]
        if q is None or sw.size not in (1, n):
            continue
        s_w = np.broadcast_to(np.asarray(sw, np.float32).reshape(-1), (n,)).astype(np.float64)
        sxf = float(np.asarray(sx, np.float32).reshape(()))
        attrs = _conv_attrs(nd)
        # the int32 bias is exact in QConv: it converts back with rint(bias / (s_x * s_w))
        bias = (np.zeros(n) if b is None else b.astype(np.float64).reshape(-1)) * (sxf * s_w)
        attrs.update(x_scale=sxf, x_zero_point=int(zx.reshape(())) if zx is not None else 0,
                     bias=bias, post_scale=np.ones(n), post_bias=np.zeros(n),
                     y_scale=float(np.asarray(sy, np.float32).reshape(())),
                     y_zero_point=int(zy.reshape(())) if zy is not None else 0,
                     y_dtype=ydt.name, mode="requant", bias_exact=True)
        _finish(v, nd.name, nd.index, ins[0], q, s_w.astype(np.float32), attrs, [nd],
                nd.outputs[0], "")
        count += 1
    return count


def _fuse_conv_integer(v):
    count = 0
    for nd in list(v.g.nodes):
        if id(nd) in v.removed or nd.op_type != "ConvInteger" or nd.domain not in ("", "ai.onnx"):
            continue
        ins = list(nd.inputs) + [""] * (4 - len(nd.inputs))
        w = v.const(ins[1])
        zx = v.const(ins[2]) if ins[2] else np.zeros((), np.uint8)
        zw = v.const(ins[3]) if ins[3] else None
        if v.const(ins[0]) is not None or w is None or w.ndim != 4 or zx is None \
                or not _scalar(zx) or (ins[3] and zw is None) or w.dtype not in (np.int8, np.uint8):
            continue
        q = _int_weight(w, zw)
        if q is None:
            continue
        n = w.shape[0]
        attrs = _conv_attrs(nd)
        attrs.update(x_scale=1.0, x_zero_point=int(np.asarray(zx).reshape(())), mode="int32",
                     bias=np.zeros(n), post_scale=np.ones(n), post_bias=np.zeros(n))
        s_w = np.ones(n, np.float32)
        absorbed = [nd]
        out = nd.outputs[0]
        cast = v.sole(out, "Cast")
        if cast is not None and cast.attrs.get("to") == 1:
            mul = v.sole(cast.outputs[0], "Mul")
            sc = _per_channel_const(v, _other(mul, cast.outputs[0]), n) if mul is not None else None
            if sc is not None:
                s_w = sc.astype(np.float32)
                absorbed += [cast, mul]
                out = mul.outputs[0]
                attrs["mode"] = "float"
                add = v.sole(out, "Add")
                c = _per_channel_const(v, _other(add, out), n) if add is not None else None
                if c is not None:
                    attrs["post_bias"] = c
                    absorbed.append(add)
                    out = add.outputs[0]
        _finish(v, nd.name, nd.index, ins[0], q, s_w, attrs, absorbed, out, "")
        count += 1
    return count


def _live_nodes(v):
    """ids of the nodes that still feed a graph output (the DequantizeLinear a rewrite bypassed
    is dead until remove_dead_nodes runs, and must not count as a reader)."""
    nodes = [n for n in v.g.nodes + v.added if id(n) not in v.removed]
    prod = {o: n for n in nodes for o in n.outputs if o}
    live, stack = set(), [prod[o] for o in v.outputs if o in prod]
    while stack:
        n = stack.pop()
        if id(n) in live:
            continue
        live.add(id(n))
        stack += [prod[x] for x in list(n.inputs) + list(n.implicit_inputs) if x in prod]
    return live


def _mark_nhwc(v, nodes):
    """Keep activations NHWC between QConv nodes (module docstring). Returns values marked."""
    ids = {id(n) for n in nodes}
    live = _live_nodes(v)
    marked = 0
    for nd in nodes:
        if nd.attrs.get("mode") == "int32":
            continue
        y = nd.outputs[0]
        if y in v.outputs:
            continue
        readers = [c for c in v.cons.get(y, []) if id(c) in live]
        if not readers or any(id(c) not in ids or c.attrs.get("mode") == "int32" for c in readers):
            continue
        # every read must be the data input (0) or the residual input (2)
        if any(i not in (0, 2) for c in readers for i, x in enumerate(c.inputs) if x == y):
            continue
        nd.attrs["y_layout"] = "NHWC"
        for c in readers:
            if c.inputs[0] == y:
                c.attrs["x_layout"] = "NHWC"
            if len(c.inputs) > 2 and c.inputs[2] == y:
                c.attrs["res_layout"] = "NHWC"
        info = v.g.value_info.get(y)
        if info is not None and info.shape is not None and len(info.shape) == 4:
            s = info.shape
            info.shape = (s[0], s[2], s[3], s[1])
        marked += 1
    return marked


def _fuse_qconv_maxpool(v, qconvs):
    """QConv(float out) -> MaxPool (2-D, one output) -> QuantizeLinear (per tensor) ==>
    QConv(requantized to that QuantizeLinear) -> QMaxPool: max commutes with the monotone
    quantization, so the result is the same bit for bit, and a CNN stem (conv -> ReLU ->
    MaxPool) stays int8 (NHWC between the QConvs) instead of a float NCHW round trip."""
    count = 0
    for nd in qconvs:
        if id(nd) in v.removed or nd.attrs.get("mode") != "float" or len(nd.inputs) > 2:
            continue
        mp = v.sole(nd.outputs[0], "MaxPool")
        if mp is None or len([o for o in mp.outputs if o]) != 1 or len(mp.outputs) > 1 and mp.outputs[1]:
            continue
        ks = mp.attrs.get("kernel_shape")
        if ks is None or len(ks) != 2 or mp.attrs.get("storage_order", 0):
            continue
        q = v.sole(mp.outputs[0], "QuantizeLinear")
        qp = _q_params(v, q) if q is not None else None
        if qp is None or not qp[0] > 0:
            continue
        nd.attrs.update(mode="requant", y_scale=qp[0], y_zero_point=qp[1], y_dtype=qp[2].name)
        attrs = {k: mp.attrs[k] for k in ("kernel_shape", "strides", "pads", "dilations",
                                          "auto_pad", "ceil_mode") if k in mp.attrs}
        pool = Node("QMaxPool", DOMAIN, [nd.outputs[0]], [q.outputs[0]], attrs, mp.name, mp.index)
        v.replace([mp, q], pool)
        v.absorbed_by.append((pool, [mp, q]))
        count += 1
    return count


# elementwise ops a table tail may contain: op -> f(x, node attrs) on float32 arrays
_TABLE_UNARY = {
    "Sigmoid": lambda x, a: _ew.Sigmoid(x),
    "HardSigmoid": lambda x, a: _ew.HardSigmoid(x, alpha=float(a.get("alpha", 0.2)),
                                                beta=float(a.get("beta", 0.5))),
    "HardSwish": lambda x, a: _ew.HardSwish(x),
    "Relu": lambda x, a: _ew.Relu(x),
    "LeakyRelu": lambda x, a: _ew.LeakyRelu(x, alpha=float(a.get("alpha", 0.01))),
    "Tanh": lambda x, a: np.tanh(x),
    "Erf": lambda x, a: _ew.Erf(x),
    "Elu": lambda x, a: _ew.Elu(x, alpha=float(a.get("alpha", 1.0))),
    "Gelu": lambda x, a: _ew.Gelu(x, approximate=a.get("approximate", "none")),
}
_TABLE_BINARY = {"Mul": np.multiply, "Add": np.add, "Sub": np.subtract, "Div": np.divide}
_TABLE_MAX_NODES = 8


def _table_chain(v, y, to_q=True):
    """The elementwise graph from float value y to one per-tensor QuantizeLinear (module
    docstring): (nodes in order, the QuantizeLinear) when every node is a _TABLE_* op whose
    inputs are y-derived values or scalar constants, and nothing outside reads a value between
    y and the QuantizeLinear; else None. to_q=False: the graph grown as far as it goes, whose
    one value read from outside (or a graph output) is its result: (nodes, None)."""
    vals, nodes, q = {y}, [], None
    cand = [c for c in v.cons.get(y, []) if id(c) not in v.removed]
    taken = set()
    progress = True
    while progress:
        progress = False
        for c in cand:
            if id(c) in taken or c is q:
                continue
            if c.domain not in ("", "ai.onnx"):
                if to_q:
                    return None
                continue                      # an outside reader
            if c.op_type == "QuantizeLinear" and to_q:
                if q is not None or c.inputs[0] not in vals:
                    return None
                q = c
                progress = True
                continue
            ins = [x for x in c.inputs if x]
            if not all(x in vals or _scalar(v.const(x)) for x in ins):
                continue                      # an input not produced yet: later round
            ok = (c.op_type in _TABLE_UNARY and len(ins) == 1) \
                or (c.op_type in _TABLE_BINARY and len(c.inputs) == 2) \
                or (c.op_type == "Clip" and ins and ins[0] == c.inputs[0])
            if not ok or len(c.outputs) != 1 or not c.outputs[0] \
                    or c.outputs[0] in v.outputs or len(nodes) >= _TABLE_MAX_NODES:
                if to_q:
                    return None
                continue                      # an outside reader
            nodes.append(c)
            taken.add(id(c))
            vals.add(c.outputs[0])
            cand += [d for d in v.cons.get(c.outputs[0], []) if id(d) not in v.removed]
            progress = True
    if not to_q:
        if not nodes:
            return None
        exits = [x for x in vals if x in v.outputs or any(
            id(d) not in taken for d in v.cons.get(x, []) if id(d) not in v.removed)]
        if len(exits) != 1 or exits[0] != nodes[-1].outputs[0]:
            return None
        return nodes, None
    if q is None or not nodes or q.inputs[0] == y:
        return None
    # every reader of a value in the chain is a chain node or q; q reads the last value only
    inside = taken | {id(q)}
    for x in vals:
        if x in v.outputs or any(id(d) not in inside for d in v.cons.get(x, [])
                                 if id(d) not in v.removed):
            return None
    return nodes, q


def quantize_values(g, qp):
    """QuantizeLinear(g, scale, zero point) of float32 values g as the kernel makes it
    (dscy_fastmath.h): the float32 quotient rounded half to even, + zero point, saturated to
    qp's dtype, NaN to the type's minimum. qp: _q_params' (scale, zero point, dtype)."""
    oi = np.iinfo(qp[2])
    with np.errstate(all="ignore"):
        t = np.rint(np.divide(np.asarray(g, np.float32), np.float32(qp[0]),
                              dtype=np.float32).astype(np.float64))
    return np.where(np.isnan(t), oi.min, np.clip(t + qp[1], oi.min, oi.max)).astype(qp[2])


def _table_eval(v, y, nodes, x):
    """The chain's float32 result on x (the values of y), with the engine's elementwise ops."""
    env = {y: x}

    def get(name):                            # a chain value or a scalar constant
        return env[name] if name in env else np.asarray(v.const(name), np.float32).reshape(())

    for c in nodes:
        a = get(c.inputs[0])
        with np.errstate(all="ignore"):
            if c.op_type in _TABLE_UNARY:
                r = _TABLE_UNARY[c.op_type](np.ascontiguousarray(a, np.float32), c.attrs)
            elif c.op_type in _TABLE_BINARY:
                r = _TABLE_BINARY[c.op_type](a, get(c.inputs[1]), dtype=np.float32)
            else:                             # Clip: bounds from inputs (opset >= 11) or attrs
                cb = _clip_bounds(v, c)
                if cb is None:
                    return None
                r = np.asarray(a, np.float32)
                if cb[0] is not None:
                    r = np.maximum(r, np.float32(cb[0]))
                if cb[1] is not None:
                    r = np.minimum(r, np.float32(cb[1]))
        env[c.outputs[0]] = np.asarray(r, np.float32)
    return env[nodes[-1].outputs[0]]


def _fuse_table_tails(v, qconvs):
    """QConv -> elementwise tail -> QuantizeLinear ==> QConv with a table (module docstring).
    The mid values q of the 8-bit step run through the chain exactly as the unfused graph
    computes them: f = (q - z1) * mid_scale * post_scale + post_bias [-> Relu / Clip] in
    float32 (the kernels' arithmetic), then the chain, then the QuantizeLinear."""
    count = 0
    for nd in qconvs:
        a = nd.attrs
        if id(nd) in v.removed or len(nd.inputs) > 2 or a.get("table") is not None:
            continue
        n = int(v.const(nd.inputs[1]).shape[0])
        absorbed = []
        if a.get("mode") == "float" and "mid_scale" in a:
            y = nd.outputs[0]
            mdt = np.dtype(a.get("mid_dtype", "uint8"))
            mzp = int(a.get("mid_zero_point", 0))
            pa = (np.float64(a["mid_scale"]) * np.asarray(a.get("post_scale", 1.0), np.float64)
                  * np.ones(n)).astype(np.float32)
            pb = (np.asarray(a.get("post_bias", 0.0), np.float64) * np.ones(n)).astype(np.float32)
            act = a.get("activation")
        elif a.get("mode") == "requant" and "mid_scale" not in a and not a.get("activation"):
            dq = v.sole(nd.outputs[0], "DequantizeLinear")
            yq = (float(np.float32(a["y_scale"])), int(a.get("y_zero_point", 0)),
                  np.dtype(a.get("y_dtype", "uint8")))
            if dq is None or _q_params(v, dq) != yq:
                continue
            y, absorbed = dq.outputs[0], [dq]
            mdt, mzp = yq[2], yq[1]
            pa, pb, act = np.full(n, yq[0], np.float32), np.zeros(n, np.float32), None
        else:
            continue
        found = _table_chain(v, y)
        if found is None:
            continue
        chain, q = found
        qp = _q_params(v, q)
        if qp is None or not qp[0] > 0:
            continue
        info = np.iinfo(mdt)
        qv = np.arange(info.min, info.max + 1, dtype=np.int64)
        f = (qv - mzp).astype(np.float32)[None, :] * pa[:, None]
        f = f + pb[:, None]                                   # [n, 256], float32 steps
        if act == "relu":
            f = np.maximum(f, np.float32(0))
        elif act == "clip":
            f = np.minimum(np.maximum(f, np.float32(a.get("clip_min", -np.inf))),
                           np.float32(a.get("clip_max", np.inf)))
        g = _table_eval(v, y, chain, f)
        if g is None or g.shape != f.shape:
            continue
        t = quantize_values(g, qp).view(np.uint8)
        attrs = dict(a)
        if "mid_scale" not in attrs:
            attrs.update(mid_scale=float(np.float32(a["y_scale"])), mid_zero_point=mzp,
                         mid_dtype=mdt.name, post_scale=np.ones(n, np.float32),
                         post_bias=np.zeros(n, np.float32))
        attrs.update(mode="requant", y_scale=qp[0], y_zero_point=qp[1], y_dtype=qp[2].name,
                     table=t)
        for k in ("activation", "clip_min", "clip_max"):
            attrs.pop(k, None)
        new = Node("QConv", DOMAIN, list(nd.inputs), [q.outputs[0]], attrs, nd.name, nd.index)
        v.replace([nd] + absorbed + chain + [q], new)
        for i, (node, olds) in enumerate(v.absorbed_by):
            if node is nd:
                v.absorbed_by[i] = (new, olds + absorbed + chain + [q])
        count += 1
    return count


def _fuse_dq_tables(v):
    """DequantizeLinear (per tensor) -> elementwise float ops ==> QTable (ops/fast_quant.py):
    the ops evaluated once on the 256 dequantized values, so the tensor is read once and the
    float ops' passes go (the C2f blocks' x * Sigmoid(x) of a quantized YOLO, whose result
    feeds Split / Concat in float)."""
    count = 0
    for dq in list(v.g.nodes):
        if id(dq) in v.removed or dq.op_type != "DequantizeLinear" \
                or dq.domain not in ("", "ai.onnx") or v.const(dq.inputs[0]) is not None:
            continue
        qp = _q_params(v, dq)
        if qp is None or not qp[0] > 0:
            continue
        found = _table_chain(v, dq.outputs[0], to_q=False)
        if found is None:
            continue
        chain = found[0]
        info = np.iinfo(qp[2])
        f = (np.arange(info.min, info.max + 1, dtype=np.int64) - qp[1]).astype(np.float32)
        f = f * np.float32(qp[0])
        g = _table_eval(v, dq.outputs[0], chain, f)
        if g is None or g.shape != (256,):
            continue
        node = Node("QTable", DOMAIN, [dq.inputs[0]], [chain[-1].outputs[0]],
                    {"table": g.astype(np.float32)}, dq.name, dq.index)
        v.replace([dq] + chain, node)
        v.absorbed_by.append((node, [dq] + chain))
        count += 1
    return count


def _fuse_table_split(v, opset):
    """QTable -> Split ==> QTable with the Split's outputs (ops/fast_quant.py): each part is
    looked up from its own range of the 8-bit input straight into its output, where the full
    float tensor was written and then copied part by part (a quantized YOLO's C2f blocks split
    the x * Sigmoid(x) of their first conv; part 0 then goes into the Concat's slot in place).
    The split sizes must be constants (the `split` input, or the attribute before opset 13),
    or absent (equal parts)."""
    count = 0
    for i, (qt, olds) in enumerate(list(v.absorbed_by)):
        if qt.op_type != "QTable" or id(qt) in v.removed or "split_axis" in qt.attrs:
            continue
        sp = v.sole(qt.outputs[0], "Split")
        if sp is None or not all(sp.outputs):
            continue
        if opset >= 13:
            if len(sp.inputs) > 1 and sp.inputs[1]:
                c = v.const(sp.inputs[1])
                if c is None:
                    continue
                split = [int(t) for t in np.asarray(c).reshape(-1)]
            else:
                split = None
        else:
            if len(sp.inputs) > 1 and sp.inputs[1]:
                continue
            split = sp.attrs.get("split")
            split = [int(t) for t in split] if split is not None else None
        if split is not None and len(split) != len(sp.outputs):
            continue
        attrs = dict(qt.attrs)
        attrs.update(split_axis=int(sp.attrs.get("axis", 0)),
                     split_sizes=split if split is not None else [],
                     num_outputs=int(sp.attrs.get("num_outputs", len(sp.outputs))))
        new = Node("QTable", DOMAIN, list(qt.inputs), list(sp.outputs), attrs, qt.name, qt.index)
        v.replace([qt, sp], new)
        v.absorbed_by[i] = (new, olds + [sp])     # in place: the list's order is kept
        count += 1
    return count


def fuse_qconv(graph, opsets, exact=None):
    """Rewrite quantized convolutions into QConv nodes; returns the number of rewrites."""
    exact = _exact_default() if exact is None else exact
    v = _View(graph)
    v.absorbed_by = []
    count = _fuse_qlinear_conv(v) + _fuse_conv_integer(v) + _fuse_qdq_conv(v, exact)
    if count:
        count += _fuse_table_tails(v, [n for n in v.added if n.op_type == "QConv"])
        count += _fuse_qconv_maxpool(v, [n for n in v.added if n.op_type == "QConv"])
    count += _fuse_dq_tables(v)
    count += _fuse_table_split(v, opsets.get("", opsets.get("ai.onnx", 13)))
    if count:
        _mark_nhwc(v, [n for n in v.added if id(n) not in v.removed
                       and n.op_type in ("QConv", "QMaxPool")])
        # each QConv takes the place of the last node it absorbed: every input it reads was
        # available there, so the node list stays topologically ordered without a re-sort
        pos = {id(n): i for i, n in enumerate(graph.nodes)}
        at = {}
        for new, old in v.absorbed_by:
            at[max(pos[id(o)] for o in old)] = new
        graph.nodes = [at.get(i, n) for i, n in enumerate(graph.nodes)
                       if i in at or id(n) not in v.removed]
        opsets.setdefault(DOMAIN, 1)
    return count
