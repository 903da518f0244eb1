"""YOLOv8's DFL box decoding as one kernel call (ops/fast_fused.DFL).

Ultralytics' Detect head (and YOLO11's) exports its distribution focal loss decoding as

    x [N, 4, R, A] -> Transpose(perm [0, 2, 1, 3]) -> Softmax(axis 1, the R bins)
      [-> QuantizeLinear (a quantized model's QDQ, per tensor, 8-bit)]
      -> 1x1 Conv to one channel with weights 0..R-1 (QConv once the QDQ pair is fused)
      -> [N, 1, 4, A]

four steps over the head's whole [N, 4R, A] box logits: a transposed copy, the softmax, its
quantized copy and the conv (~110 us of a 2.4 ms quantized YOLOv8n at 320 here). DFL reads x
once and keeps the probabilities of 256 anchors at a time in the core's cache. Its softmax is
the Softmax op's (same kernel, same column blocks), its quantization QuantizeLinear's and its
sum the QConv's exact integer one with the same float epilogue, so a quantized model's output is
bit for bit the unfused one's. Softmax before opset 13 flattens the axes after `axis`, so it is
matched only from opset 13. DEEPSPARSE_CY_NO_DFL_FUSION=1 keeps the four steps.

The head's last steps, dist2bbox (xywh) and the output Concat with the class scores' Sigmoid,

    lt, rb = Split(d, [2, 2], axis 1); x1y1 = anchors - lt; x2y2 = anchors + rb
    box = Concat((x1y1 + x2y2) / 2, x2y2 - x1y1) * strides; y = Concat(box, Sigmoid(cls))

become one BoxDecode step (ops/fast_fused.BoxDecode): the same numpy float32 operations on the
small box rows, and the Sigmoid written straight into the output's rows instead of into a
map of its own that the Concat then copies (~0.1 ms of a 2.4 ms quantized YOLOv8n at 320 here
went to those 12 steps). Same values bit for bit. DEEPSPARSE_CY_NO_BOX_FUSION=1 keeps them.
"""
from __future__ import annotations

import os

import numpy as np

from .fusion import DOMAIN, _onnx, _View
from .fusion_q8 import _readers
from .ir import Node

_MAX_BINS = 32          # kernels/_f32_fused.DFL_MAX_BINS


def _enabled():
    return os.environ.get("DEEPSPARSE_CY_NO_DFL_FUSION", "") not in ("1", "true")


def _one_by_one(attrs):
    """A 1x1 conv's attributes: stride 1, no padding, one group."""
    return (list(attrs.get("kernel_shape", [1, 1])) == [1, 1]
            and all(s == 1 for s in attrs.get("strides", [1, 1]))
            and all(d == 1 for d in attrs.get("dilations", [1, 1]))
            and not any(attrs.get("pads", [0, 0, 0, 0]))
            and attrs.get("auto_pad", "NOTSET") in ("NOTSET", b"NOTSET", "VALID", b"VALID")
            and int(attrs.get("group", 1)) == 1)


def _used(v, n):
    return any(o in v.outputs or _readers(v, o) for o in n.outputs if o)


def _sole(v, name):
    """The one consumer of `name` that is used itself (the QDQ fusions leave a quantized
    tensor's DequantizeLinear behind, unread, until dead nodes are dropped), else None."""
    if name in v.outputs:
        return None
    c = [n for n in _readers(v, name) if _used(v, n)]
    return c[0] if len(c) == 1 else None


def _unused_readers(v, names):
    return [n for x in names for n in _readers(v, x) if not _used(v, n)]


def _scalar(v, name):
    c = v.const(name)
    if c is None or np.asarray(c).size != 1:
        return None
    return np.asarray(c).reshape(())


def _float_conv(v, conv, bins):
    """(weights [R] float32, bias) of a float Conv [1, R, 1, 1] (+ B [1]), else None."""
    if not _onnx(conv, "Conv") or not _one_by_one(conv.attrs) or len(conv.inputs) < 2:
        return None
    w = v.const(conv.inputs[1])
    if w is None or w.dtype != np.float32 or w.shape != (1, bins, 1, 1):
        return None
    b = 0.0
    if len(conv.inputs) > 2 and conv.inputs[2]:
        bc = v.const(conv.inputs[2])
        if bc is None or bc.dtype != np.float32 or bc.size != 1:
            return None
        b = float(bc.reshape(()))
    return w.reshape(bins).astype(np.float32), b, None


def _quant_conv(v, q, conv, bins):
    """(integer weights [R] as float32, 0, quant tuple for dfl_decode) of QuantizeLinear ->
    QConv (float mode, nothing after the sum but its bias), else None."""
    if conv is None or conv.op_type != "QConv" or conv.domain != DOMAIN:
        return None
    a = conv.attrs
    if (len(conv.inputs) > 2 and conv.inputs[2]) or a.get("mode", "float") != "float" \
            or a.get("activation") or a.get("table") is not None \
            or a.get("x_layout", "NCHW") != "NCHW" or a.get("y_layout", "NCHW") != "NCHW" \
            or not _one_by_one(a):
        return None
    if len(q.inputs) < 2:
        return None
    s = _scalar(v, q.inputs[1])
    z = _scalar(v, q.inputs[2]) if len(q.inputs) > 2 and q.inputs[2] else np.uint8(0)
    if s is None or z is None or s.dtype != np.float32 or z.dtype not in (np.uint8, np.int8) \
            or q.attrs.get("output_dtype", 0) not in (0, 2, 3) or q.attrs.get("block_size", 0):
        return None
    if not float(s) > 0 or not np.isfinite(float(s)):
        return None
    if np.float32(a.get("x_scale", np.nan)) != s or int(a.get("x_zero_point", 0)) != int(z):
        return None
    w = v.const(conv.inputs[1])
    ws = np.asarray(a.get("w_scale", 1.0), np.float64).reshape(-1)
    if w is None or w.dtype != np.int8 or w.shape != (1, bins, 1, 1) or ws.size != 1 \
            or not w.any():
        return None
    info = np.iinfo(z.dtype)
    # QConv's float epilogue: float32(acc + bias_i32) * float32(x_scale * w_scale)
    sxsw = np.float64(a.get("x_scale", 1.0)) * ws[0]
    bias = float(np.asarray(a.get("bias", 0.0), np.float64).reshape(-1)[0])
    bias_i = 0
    if bias:
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            bi = np.rint(bias / sxsw)
        if not np.isfinite(bi) or abs(bi) + bins * 383 * 128 >= 2**31 - 1:
            return None                  # QConv adds such a bias in float: not this epilogue
        bias_i = int(bi)
    if "mid_scale" not in a:
        quant = (float(s), float(int(z)), float(info.min), float(info.max), bias_i,
                 float(np.float32(sxsw)))
        return w.reshape(bins).astype(np.float32), 0.0, quant
    # the conv output's kept QuantizeLinear -> DequantizeLinear (and per-channel affine): QConv's
    # mid step, f = rint(clamp(f, lo - z1, hi - z1)) * (mid_scale * post_scale) + post_bias
    ms = float(a["mid_scale"])
    mz = int(a.get("mid_zero_point", 0))
    mdt = np.dtype(a.get("mid_dtype", "uint8"))
    ps = np.asarray(a.get("post_scale", 1.0), np.float64).reshape(-1)
    pb = np.asarray(a.get("post_bias", 0.0), np.float64).reshape(-1)
    if mdt not in (np.uint8, np.int8) or ps.size != 1 or pb.size != 1 or not ms > 0:
        return None
    mi = np.iinfo(mdt)
    quant = (float(s), float(int(z)), float(info.min), float(info.max), bias_i,
             float(np.float32(sxsw / ms)), float(mi.min - mz), float(mi.max - mz),
             float(np.float32(ms * ps[0])), float(np.float32(pb[0])))
    return w.reshape(bins).astype(np.float32), 0.0, quant


def fuse_dfl(graph, opsets):
    """Transpose -> Softmax [-> QuantizeLinear] -> 1x1 Conv / QConv to one channel ==> DFL.
    Returns the number of rewrites."""
    if not _enabled() or opsets.get("", opsets.get("ai.onnx", 1)) < 13:
        return 0
    v = _View(graph)
    count = 0
    for tr in list(graph.nodes):
        if id(tr) in v.removed or not _onnx(tr, "Transpose") \
                or list(tr.attrs.get("perm", [])) != [0, 2, 1, 3]:
            continue
        sm = v.sole(tr.outputs[0], "Softmax")
        if sm is None or sm.attrs.get("axis", -1) not in (1, -3):
            continue
        nxt = _sole(v, sm.outputs[0])
        conv = _sole(v, nxt.outputs[0]) if _onnx(nxt, "QuantizeLinear") else nxt
        wc = v.const(conv.inputs[1]) if conv is not None and len(conv.inputs) > 1 else None
        if wc is None or wc.ndim != 4 or not 1 <= wc.shape[1] <= _MAX_BINS:
            continue
        bins = wc.shape[1]
        found = (_quant_conv(v, nxt, conv, bins) if conv is not nxt
                 else _float_conv(v, conv, bins))
        if found is None:
            continue
        chain = [tr, sm] + ([nxt] if conv is not nxt else []) + [conv]
        chain += _unused_readers(v, [n.outputs[0] for n in chain[:-1]])
        w, b, quant = found
        attrs = {"bias": b}
        if quant is not None:
            attrs["quant"] = list(quant)
        wname = v.new_init((conv.name or "dfl") + "__dfl_w", w)
        v.replace(chain, Node("DFL", DOMAIN, [tr.inputs[0], wname], [conv.outputs[0]], attrs,
                              conv.name, tr.index))
        count += 1
    if count:
        v.commit()
    return count


def _box_enabled():
    return os.environ.get("DEEPSPARSE_CY_NO_BOX_FUSION", "") not in ("1", "true")


def _axis1(node, rank=3):
    a = node.attrs.get("axis", 0 if node.op_type == "Split" else None)
    return a is not None and (a == 1 or a == 1 - rank)


def _match_box(v, cat):
    """The BoxDecode pieces ending in Concat `cat`, or None:
    (nodes to replace, d, anchors, strides, divisor name or None, multiplier name or None,
    Sigmoid input)."""
    if len(cat.inputs) != 2 or not _axis1(cat) or not all(cat.inputs):
        return None
    m_name, s_name = cat.inputs
    sig, mul = v.prod(s_name, "Sigmoid"), v.prod(m_name, "Mul")
    if sig is None or mul is None or _sole(v, s_name) is not cat or _sole(v, m_name) is not cat:
        return None
    cc = v.prod(mul.inputs[0], "Concat")
    strides = mul.inputs[1]
    if cc is None:
        cc, strides = v.prod(mul.inputs[1], "Concat"), mul.inputs[0]
    if cc is None or len(cc.inputs) != 2 or not _axis1(cc) or _sole(v, cc.outputs[0]) is not mul \
            or strides in cc.outputs:
        return None
    c_name, wh_name = cc.inputs
    half = v.prod(c_name, "Div") or v.prod(c_name, "Mul")
    wh = v.prod(wh_name, "Sub")
    if half is None or wh is None or _sole(v, c_name) is not cc or _sole(v, wh_name) is not cc:
        return None
    k = _scalar(v, half.inputs[1])
    if k is None or k.dtype != np.float32:
        return None
    sm = v.prod(half.inputs[0], "Add")
    if sm is None or _sole(v, sm.outputs[0]) is not half:
        return None
    x2y2, x1y1 = wh.inputs
    if sorted(sm.inputs) != sorted([x1y1, x2y2]) or x1y1 == x2y2:
        return None
    sub, add = v.prod(x1y1, "Sub"), v.prod(x2y2, "Add")
    if sub is None or add is None:
        return None
    for name in (x1y1, x2y2):
        r = _readers(v, name)
        if name in v.outputs or len(r) != 2 or {id(n) for n in r} != {id(sm), id(wh)}:
            return None
    anchors, lt = sub.inputs
    if anchors not in add.inputs or anchors == lt:
        return None
    rb = add.inputs[1] if add.inputs[0] == anchors else add.inputs[0]
    split = v.prod(lt, "Split")
    if split is None or split is not v.producer.get(rb) or list(split.outputs) != [lt, rb] \
            or not _axis1(split) or _sole(v, lt) is not sub or _sole(v, rb) is not add:
        return None
    sizes = split.attrs.get("split")
    if len(split.inputs) > 1 and split.inputs[1]:
        sizes = v.const(split.inputs[1])
    if sizes is None or [int(t) for t in np.asarray(sizes).reshape(-1)] != [2, 2]:
        return None
    nodes = [split, sub, add, sm, half, wh, cc, mul, sig, cat]
    return (nodes, split.inputs[0], anchors, strides, half.op_type, half.inputs[1],
            sig.inputs[0])


def fuse_box_decode(graph, opsets):
    """dist2bbox + Concat(box, Sigmoid(cls)) ==> BoxDecode. Returns the number of rewrites."""
    if not _box_enabled() or opsets.get("", opsets.get("ai.onnx", 1)) < 7:
        return 0
    v = _View(graph)
    count = 0
    for cat in list(graph.nodes):
        if id(cat) in v.removed or not _onnx(cat, "Concat"):
            continue
        m = _match_box(v, cat)
        if m is None:
            continue
        nodes, d, anchors, strides, half_op, k, cls = m
        v.replace(nodes, Node("BoxDecode", DOMAIN, [d, anchors, strides, k, cls],
                              [cat.outputs[0]], {"half": half_op}, cat.name, nodes[0].index))
        count += 1
    if count:
        v.commit()
    return count
