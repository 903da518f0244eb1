"""Kernel fusions: rewrite subgraphs into ops that call the compiled kernels.

Runs after constant folding and dead-node removal (engine.Program, optimize=True); can be turned
off with DEEPSPARSE_CY_NO_FUSION=1. Each rewrite keeps the graph's outputs and value names
outside the fused region unchanged.

Rewrites (new ops live in domain ``com.deepsparse_cy``, see ops/fast_quant.py, ops/fast_sparse.py):

* QDQ MatMul / Gemm, as onnxruntime's quantize_static, PyTorch and SparseML write them::

      DequantizeLinear(x_q) -> MatMul|Gemm(W) [-> Add(bias)] [-> QuantizeLinear [-> DequantizeLinear
      [-> Add(bias)]]]   ==>   QGemm(x_q, W_q)

  Constant folding has already turned DequantizeLinear(W_q) (and a fake-quant float W ->
  QuantizeLinear -> DequantizeLinear) into a float constant, so the int8 weight and its scales are
  recovered from the float values (exactly: every column must be q * s with integer |q| <= 128,
  checked to float rounding); an unfolded DequantizeLinear(W_q const) is read directly.
* QLinearMatMul and MatMulInteger (optionally -> Cast(float) -> Mul(const scale) [-> Add(bias)])
  with constant s8 weights (or u8 with a zero point that keeps w - zp in s8).
* FP32 MatMul / Gemm with a constant weight of >= SPARSE_F32_MIN zeros -> SparseMatMul (f32_spmm,
  bias fused); denser float weights stay on numpy's BLAS.

The QDQ rewrite ending in QuantizeLinear -> DequantizeLinear -> Add(bias) (onnxruntime's order)
keeps the intermediate u8 round trip by default (u8 out of the kernel, dequantize + bias after),
so the engine computes what the file says. DEEPSPARSE_CY_QDQ_FAST=1 drops it: the kernel then
writes float acc * s_x * s_w + bias directly, which differs from the file's semantics by up to
s_y / 2 per element and by the saturation of values outside the calibrated range.
"""
from __future__ import annotations

import os

import numpy as np

from .ir import Node

DOMAIN = "com.deepsparse_cy"
SPARSE_F32_MIN = 0.7      # f32_spmm beats BLAS from about 2/3 zeros (DESIGN.md)
_TOL = 1e-5               # relative tolerance of the int8 weight recovery (float32 rounding ~1e-7)


# --- graph helpers ----------------------------------------------------------------------------

class _View:
    """Producers / consumers / constants of a graph, kept current as nodes are replaced."""

    def __init__(self, graph):
        self.g = graph
        self.init = graph.initializers
        self.outputs = set(graph.output_names) | set(graph.outer_names)
        self.removed = set()
        self.added = []
        self.producer = {o: n for n in graph.nodes for o in n.outputs if o}
        self.cons = {}
        for n in graph.nodes:
            for x in list(n.inputs) + list(n.implicit_inputs):
                if x:
                    self.cons.setdefault(x, []).append(n)

    def const(self, name):
        return self.init.get(name) if name else None

    def prod(self, name, op_type):
        n = self.producer.get(name)
        if n is None or id(n) in self.removed or n.op_type != op_type or n.domain not in ("", "ai.onnx"):
            return None
        return n

    def sole(self, name, op_type=None):
        """The single consumer of `name` when `name` is not a graph output (else None)."""
        if name in self.outputs:
            return None
        c = [n for n in self.cons.get(name, []) if id(n) not in self.removed]
        if len(c) != 1:
            return None
        n = c[0]
        if op_type is not None and (n.op_type != op_type or n.domain not in ("", "ai.onnx")):
            return None
        return n

    def replace(self, old_nodes, new):
        for n in old_nodes:
            self.removed.add(id(n))
        self.added.append(new)
        for o in new.outputs:
            self.producer[o] = new
        for x in new.inputs:
            if x:
                self.cons.setdefault(x, []).append(new)

    def new_init(self, base, value):
        name = base
        i = 0
        while name in self.init or name in self.producer:
            i += 1
            name = f"{base}_{i}"
        self.init[name] = value
        return name

    def commit(self):
        self.g.nodes = [n for n in self.g.nodes if id(n) not in self.removed] + self.added
        return len(self.added)


def _scalar(v):
    return v is not None and np.asarray(v).size == 1


def _exact_default():
    # exact QDQ semantics unless the user opts into the faster, not bit-faithful epilogue
    return os.environ.get("DEEPSPARSE_CY_QDQ_FAST", "") not in ("1", "true")


# --- int8 weight recovery ---------------------------------------------------------------------

def _rows_quantized(w):
    """Is every row of w (no zero rows) q * s for some qmax 1..128 and integer |q| <= qmax?"""
    amax = np.abs(w).max(axis=1)[None, :, None]
    s = (amax / np.arange(1.0, 129.0, dtype=np.float32)[:, None, None]).astype(np.float32)
    q = np.rint(w[None] / s)
    return bool((np.abs(q * s - w[None]) <= _TOL * amax).all(2).any(0).all())


def recover_int8(wf):
    """Float weight [N, K] that is exactly q * s (q int8, s per row or per tensor) -> (q, s[N]).

    Tries per-tensor scales absmax/qmax, then per-row scales row_absmax/qmax (qmax 127, 128, 63, 64);
    returns None when no candidate reproduces every weight to float rounding."""
    wf = np.asarray(wf, np.float32)
    if wf.ndim != 2 or wf.size == 0 or not np.isfinite(wf).all():
        return None
    n = wf.shape[0]
    rowmax = np.abs(wf).max(axis=1)
    gmax = float(rowmax.max())
    if gmax == 0.0:
        return np.zeros(wf.shape, np.int8), np.ones(n, np.float32)
    if not _rows_quantized(wf[np.nonzero(rowmax)[0][:4]]):
        return None             # a float weight: rejected on a few rows, not the whole matrix
    best_q = np.zeros(wf.shape, np.int8)
    best_s = np.ones(n, np.float32)
    done = rowmax == 0
    # symmetric s8 (absmax -> 127), torch's [-128, 127] range, and 7-bit reduce_range weights
    qmaxes = (127.0, 128.0, 63.0, 64.0)
    cands = [np.full(n, gmax / qm, np.float32) for qm in qmaxes]
    cands += [np.where(rowmax > 0, rowmax / qm, 1.0).astype(np.float32) for qm in qmaxes]
    for s in cands:
        q = np.rint(wf / s[:, None])
        ok = (np.abs(q * s[:, None] - wf) <= _TOL * np.maximum(rowmax, 1e-30)[:, None]).all(1)
        ok &= (q >= -128).all(1) & (q <= 127).all(1)
        take = ok & ~done
        if take.any():
            best_q[take] = q[take].astype(np.int8)
            best_s[take] = s[take]
            done |= take
        if done.all():
            return best_q, best_s
    # rows whose largest |q| is not a range endpoint (learned fake-quant scales, few nonzeros
    # left after pruning): try every qmax 1..128, a float row is rejected after one row's test
    rest = np.nonzero(~done)[0]
    qm = np.arange(1.0, 128.0, dtype=np.float32)[:, None, None]
    chunk = max(1, (1 << 22) // (127 * wf.shape[1]))
    for i in range(0, len(rest), chunk):
        rows = rest[i:i + chunk]
        w = wf[rows][None]                                     # [1, r, K]
        s = (rowmax[rows][None, :, None] / qm).astype(np.float32)  # [127, r, 1]
        q = np.rint(w / s)
        ok = (np.abs(q * s - w) <= _TOL * rowmax[rows][None, :, None]).all(2)   # [127, r]
        if not ok.any(0).all():
            return None
        j = 126 - np.argmax(ok[::-1], axis=0)                  # the largest qmax that fits
        r = np.arange(len(rows))
        best_q[rows] = q[j, r].astype(np.int8)
        best_s[rows] = s[j, r, 0]
    return best_q, best_s


def _weight_q(v, name, n_axis):
    """(q [N, K] int8, s_w [N] f32) for a MatMul/Gemm weight value name, or None.

    n_axis: the axis of the 2-D weight that indexes output channels."""
    dq = v.prod(name, "DequantizeLinear")
    if dq is not None and name not in v.outputs:
        q, s = v.const(dq.inputs[0]), v.const(dq.inputs[1])
        zp = v.const(dq.inputs[2]) if len(dq.inputs) > 2 and dq.inputs[2] else None
        if q is None or s is None or q.ndim != 2 or dq.attrs.get("block_size", 0):
            return None
        axis = dq.attrs.get("axis", 1) % 2
        if s.size != 1 and (s.ndim != 1 or axis != n_axis):
            return None
        qi = q.astype(np.int16)
        if zp is not None:
            z = np.asarray(zp).astype(np.int16)
            qi = qi - (z if z.size == 1 else np.expand_dims(z, 1 - n_axis))
        if q.dtype not in (np.int8, np.uint8) or qi.min() < -128 or qi.max() > 127:
            return None
        qn = np.ascontiguousarray(np.moveaxis(qi, n_axis, 0).astype(np.int8))
        sn = np.broadcast_to(np.asarray(s, np.float32).reshape(-1), (qn.shape[0],)).copy()
        return qn, sn, [dq]
    w = v.const(name)
    if w is None or w.ndim != 2 or w.dtype != np.float32:
        return None
    r = recover_int8(np.moveaxis(w, n_axis, 0))
    return None if r is None else (r[0], r[1], [])


def _bias_after(v, y, n):
    """Add(y, b) / Add(b, y) with constant 1-D float b of n elements as the sole consumer of y."""
    add = v.sole(y, "Add")
    if add is None or len(add.inputs) != 2:
        return None, None
    other = add.inputs[1] if add.inputs[0] == y else add.inputs[0]
    b = v.const(other)
    if b is None or b.dtype != np.float32 or b.ndim != 1 or b.shape[0] != n or other == y:
        return None, None
    return add, b


def _q_params(v, qnode):
    """(scale, zero point, out dtype) of a per-tensor QuantizeLinear/DequantizeLinear, or None."""
    if qnode.attrs.get("block_size", 0) or qnode.attrs.get("output_dtype", 0) \
            or qnode.attrs.get("saturate", 1) != 1:
        return None
    s = v.const(qnode.inputs[1])
    zp = v.const(qnode.inputs[2]) if len(qnode.inputs) > 2 and qnode.inputs[2] else None
    if not _scalar(s) or (zp is not None and not _scalar(zp)):
        return None
    dt = np.dtype(np.uint8) if zp is None else zp.dtype
    if dt not in (np.uint8, np.int8):
        return None
    return float(np.asarray(s, np.float32).reshape(())), int(0 if zp is None else zp.reshape(())), dt


# --- quantized rewrites -----------------------------------------------------------------------

def _tail(v, y, n, attrs, absorbed, exact):
    """Extend a fused int8 matmul whose float result is `y` over [Add(bias)] [Q [DQ [Add(bias)]]].
    Fills attrs (bias, y_scale, y_zero_point, y_dtype, mode); returns the fused output name."""
    add, b = _bias_after(v, y, n)
    if add is not None:
        attrs["bias"] = b.astype(np.float32) + attrs.get("bias", 0)
        absorbed.append(add)
        y = add.outputs[0]
    q = v.sole(y, "QuantizeLinear")
    qp = _q_params(v, q) if q is not None else None
    if qp is None:
        attrs["mode"] = "float"
        return y
    absorbed.append(q)
    attrs.update(y_scale=qp[0], y_zero_point=qp[1], y_dtype=qp[2].name, mode="requant")
    yq = q.outputs[0]
    dq = v.sole(yq, "DequantizeLinear")
    if dq is None:
        return yq
    dp = _q_params(v, dq)
    if dp is None or dp[:2] != qp[:2] or dp[2] != qp[2]:
        return yq
    add2, b2 = _bias_after(v, dq.outputs[0], n)
    if add2 is None:
        return yq
    absorbed += [dq, add2]
    attrs["post_bias"] = b2.astype(np.float32)
    attrs["mode"] = "requant_dq" if exact else "float"
    return add2.outputs[0]


def _fuse_qdq_matmul(v, exact):
    count = 0
    for mm in list(v.g.nodes):
        if id(mm) in v.removed or mm.domain not in ("", "ai.onnx"):
            continue
        if mm.op_type == "MatMul" and len(mm.inputs) == 2:
            alpha, n_axis, c = 1.0, 1, None
        elif mm.op_type == "Gemm" and not mm.attrs.get("transA", 0):
            alpha = float(mm.attrs.get("alpha", 1.0))
            n_axis = 0 if mm.attrs.get("transB", 0) else 1
            c = mm.inputs[2] if len(mm.inputs) > 2 and mm.inputs[2] else None
        else:
            continue
        dqx = v.prod(mm.inputs[0], "DequantizeLinear")
        if dqx is None:
            continue
        xp = _q_params(v, dqx)
        if xp is None or v.const(dqx.inputs[0]) is not None:
            continue
        wq = _weight_q(v, mm.inputs[1], n_axis)
        if wq is None:
            continue
        q, s_w, wnodes = wq
        n = q.shape[0]
        attrs = {"x_scale": xp[0], "x_zero_point": xp[1], "w_scale": s_w * np.float32(alpha)}
        if c is not None:
            cv = v.const(c)
            if cv is None or cv.dtype != np.float32 or cv.size not in (1, n) or cv.ndim > 2 \
                    or (cv.ndim == 2 and cv.shape[-1] != n):
                continue
            attrs["bias"] = np.broadcast_to(
                cv.reshape(-1) * np.float32(mm.attrs.get("beta", 1.0)), (n,)).astype(np.float32)
        absorbed = [mm]
        out = _tail(v, mm.outputs[0], n, attrs, absorbed, exact)
        # the weight DQ node goes only when the MatMul was its sole reader
        absorbed += [d for d in wnodes if v.sole(d.outputs[0]) is mm]
        wname = v.new_init((mm.name or "qgemm") + "__w_s8", np.ascontiguousarray(q.T))
        node = Node("QGemm", DOMAIN, [dqx.inputs[0], wname], [out], attrs,
                    mm.name, mm.index)
        v.replace(absorbed, node)
        count += 1
    return count


def _fuse_qlinear_matmul(v):
    count = 0
    for nd in list(v.g.nodes):
        if id(nd) in v.removed or nd.op_type != "QLinearMatMul" or nd.domain not in ("", "ai.onnx"):
            continue
        ins = nd.inputs
        sa, za, b, sb, zb, sy, zy = (v.const(x) for x in ins[1:8])
        if v.const(ins[0]) is not None or b is None or b.ndim != 2 or not _scalar(sa) \
                or not _scalar(za) or not _scalar(sy) or not _scalar(zy) or sb is None:
            continue
        if za.dtype not in (np.uint8, np.int8) or zy.dtype not in (np.uint8, np.int8):
            continue
        wi = b.astype(np.int16) - (np.asarray(zb).astype(np.int16).reshape(1, -1)
                                   if zb is not None else 0)
        if wi.min() < -128 or wi.max() > 127 or sb.size not in (1, b.shape[1]):
            continue
        n = b.shape[1]
        attrs = {"x_scale": float(sa.reshape(())), "x_zero_point": int(za.reshape(())),
                 "w_scale": np.broadcast_to(np.asarray(sb, np.float32).reshape(-1), (n,)).copy(),
                 "y_scale": float(sy.reshape(())), "y_zero_point": int(zy.reshape(())),
                 "y_dtype": zy.dtype.name, "mode": "requant"}
        wname = v.new_init((nd.name or "qlinearmatmul") + "__w_s8", wi.astype(np.int8))
        v.replace([nd], Node("QGemm", DOMAIN, [ins[0], wname], [nd.outputs[0]], attrs,
                             nd.name, nd.index))
        count += 1
    return count


def _fuse_matmul_integer(v):
    count = 0
    for nd in list(v.g.nodes):
        if id(nd) in v.removed or nd.op_type != "MatMulInteger" or nd.domain not in ("", "ai.onnx"):
            continue
        ins = list(nd.inputs) + [""] * (4 - len(nd.inputs))
        b = v.const(ins[1])
        za = v.const(ins[2]) if ins[2] else np.zeros((), np.uint8)
        zb = v.const(ins[3]) if ins[3] else None
        if v.const(ins[0]) is not None or b is None or b.ndim != 2 or not _scalar(za) \
                or (ins[2] and za is None) or (ins[3] and zb is None):
            continue
        wi = b.astype(np.int16) - (np.asarray(zb).astype(np.int16).reshape(1, -1)
                                   if zb is not None else 0)
        if wi.min() < -128 or wi.max() > 127:
            continue
        n = b.shape[1]
        attrs = {"x_zero_point": int(np.asarray(za).reshape(())), "mode": "int32"}
        absorbed = [nd]
        out = nd.outputs[0]
        # dynamic-quantization tail: Cast(to float) -> Mul(const scale) [-> Add(bias)]
        cast = v.sole(out, "Cast")
        if cast is not None and cast.attrs.get("to") == 1:
            mul = v.sole(cast.outputs[0], "Mul")
            other = None
            if mul is not None:
                other = mul.inputs[1] if mul.inputs[0] == cast.outputs[0] else mul.inputs[0]
            sc = v.const(other)
            if sc is not None and sc.dtype == np.float32 and (sc.size == 1 or (
                    sc.ndim == 1 and sc.shape[0] == n)):
                attrs.update(x_scale=1.0, w_scale=np.broadcast_to(sc.reshape(-1), (n,)).copy())
                absorbed += [cast, mul]
                out = mul.outputs[0]
                attrs["mode"] = "float"
                add, bias = _bias_after(v, out, n)
                if add is not None:
                    attrs["post_bias"] = bias.astype(np.float32)
                    absorbed.append(add)
                    out = add.outputs[0]
        wname = v.new_init((nd.name or "matmulinteger") + "__w_s8", wi.astype(np.int8))
        v.replace(absorbed, Node("QGemm", DOMAIN, [ins[0], wname], [out], attrs, nd.name,
                                 nd.index))
        count += 1
    return count


# --- FP32 sparse ------------------------------------------------------------------------------

def _fuse_sparse_f32(v, min_sparsity=SPARSE_F32_MIN):
    count = 0
    for mm in list(v.g.nodes):
        if id(mm) in v.removed or mm.domain not in ("", "ai.onnx"):
            continue
        if mm.op_type == "MatMul" and len(mm.inputs) == 2:
            trans, alpha, c = False, 1.0, None
        elif mm.op_type == "Gemm" and not mm.attrs.get("transA", 0):
            trans, alpha = bool(mm.attrs.get("transB", 0)), float(mm.attrs.get("alpha", 1.0))
            c = mm.inputs[2] if len(mm.inputs) > 2 and mm.inputs[2] else None
        else:
            continue
        w = v.const(mm.inputs[1])
        if w is None or w.dtype != np.float32 or w.ndim != 2 or v.const(mm.inputs[0]) is not None:
            continue
        if float(np.mean(w == 0)) < min_sparsity or (w.shape[1] if trans else w.shape[0]) > 65536:
            continue
        wk = (w.T if trans else w) * np.float32(alpha)         # [K, N]
        n = wk.shape[1]
        attrs = {}
        if c is not None:
            cv = v.const(c)
            if cv is None or cv.dtype != np.float32 or cv.size not in (1, n) or cv.ndim > 2 \
                    or (cv.ndim == 2 and cv.shape[-1] != n):
                continue
            attrs["bias"] = np.broadcast_to(
                cv.reshape(-1) * np.float32(mm.attrs.get("beta", 1.0)), (n,)).astype(np.float32)
        absorbed = [mm]
        out = mm.outputs[0]
        add, b = _bias_after(v, out, n)
        if add is not None:
            attrs["bias"] = b + attrs.get("bias", np.float32(0))
            absorbed.append(add)
            out = add.outputs[0]
        wname = v.new_init((mm.name or "spmm") + "__w_kn", np.ascontiguousarray(wk))
        v.replace(absorbed, Node("SparseMatMul", DOMAIN, [mm.inputs[0], wname], [out], attrs,
                                 mm.name, mm.index))
        count += 1
    return count


def fuse(graph, opsets, exact=None):
    """Apply every fusion; returns the number of rewrites."""
    exact = _exact_default() if exact is None else exact
    v = _View(graph)
    count = _fuse_qlinear_matmul(v) + _fuse_matmul_integer(v) + _fuse_qdq_matmul(v, exact)
    count += _fuse_sparse_f32(v)
    from .fusion_conv import fuse_qconv; count += fuse_qconv(graph, opsets, exact)  # noqa: E702
    if count:
        v.commit()
        opsets.setdefault(DOMAIN, 1)
    return count
