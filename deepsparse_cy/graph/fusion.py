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

* After the FP32 fusions: QGemm -> Gelu -> QuantizeLinear (a quantized FFN) becomes one QGemm
  with GELU and the requantization in its epilogue; LayerNorm -> QuantizeLinear [->
  DequantizeLinear] one LayerNorm writing both; SparseMatMul -> Gelu one SparseMatMul.

The QDQ rewrite ending in QuantizeLinear -> DequantizeLinear -> Add(bias) (onnxruntime's order)
keeps the intermediate u8 round trip by default (the kernel's epilogue quantizes, dequantizes and
adds the bias), so the engine computes what the file says. DEEPSPARSE_CY_QDQ_FAST=1 drops it: the kernel then
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
        # a node added by one rewrite may be absorbed by a later one (Gelu into FusedMatMul)
        added = [n for n in self.added if id(n) not in self.removed]
        self.g.nodes = [n for n in self.g.nodes if id(n) not in self.removed] + added
        return len(added)


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
        if zb is not None and np.asarray(zb).size not in (1, b.shape[1]):
            continue   # malformed zero point: the reference op reports it at run time
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


# --- FP32 fusions (ops/fast_fused.py) ------------------------------------------------------------

def _live(v, name):
    """Live consumer nodes of `name`, each once."""
    seen, res = set(), []
    for n in v.cons.get(name, []):
        if id(n) not in v.removed and id(n) not in seen:
            seen.add(id(n))
            res.append(n)
    return res


def _onnx(n, op_type):
    return n is not None and n.op_type == op_type and n.domain in ("", "ai.onnx")


def _other(node, name):
    """The other input of a binary node reading `name`, or None."""
    if len(node.inputs) != 2:
        return None
    a, b = node.inputs
    if a == name and b != name:
        return b
    if b == name and a != name:
        return a
    return None


def _sconst(v, name):
    """Float value of a constant float scalar (any rank, one element), else None."""
    c = v.const(name)
    if c is None or c.size != 1 or c.dtype.kind != "f":
        return None
    return float(np.asarray(c).reshape(()))


def _near(a, b, rtol=1e-4):
    return a is not None and abs(a - b) <= rtol * abs(b)


def _fuse_gelu(v):
    """x -> Div(sqrt2) | Mul(1/sqrt2) -> Erf -> Add(1) -> Mul(x) -> Mul(0.5), either Mul order
    (also x * 0.5 computed first) ==> Gelu(x)."""
    count = 0
    for erf in list(v.g.nodes):
        if id(erf) in v.removed or not _onnx(erf, "Erf"):
            continue
        d = v.producer.get(erf.inputs[0])
        if d is None or id(d) in v.removed or v.sole(d.outputs[0]) is not erf or len(d.inputs) != 2:
            continue
        c = _sconst(v, d.inputs[1])
        if not ((_onnx(d, "Div") and _near(c, 2 ** 0.5)) or (_onnx(d, "Mul") and _near(c, 2 ** -0.5))):
            continue
        x = d.inputs[0]
        if v.const(x) is not None or v.const(d.inputs[1]).dtype != np.float32:
            continue
        add = v.sole(erf.outputs[0], "Add")
        if add is None or not _near(_sconst(v, _other(add, erf.outputs[0])), 1.0):
            continue
        m1 = v.sole(add.outputs[0], "Mul")
        o1 = _other(m1, add.outputs[0]) if m1 is not None else None
        if o1 is None:
            continue
        nodes = [d, erf, add, m1]
        out = None
        if o1 == x or _near(_sconst(v, o1), 0.5):
            m2 = v.sole(m1.outputs[0], "Mul")
            o2 = _other(m2, m1.outputs[0]) if m2 is not None else None
            if o2 is not None and ((o1 == x and _near(_sconst(v, o2), 0.5)) or (o1 != x and o2 == x)):
                nodes.append(m2)
                out = m2.outputs[0]
        else:
            p = v.producer.get(o1)
            if _onnx(p, "Mul") and id(p) not in v.removed and v.sole(o1) is m1 \
                    and x in p.inputs and _near(_sconst(v, _other(p, x)), 0.5):
                nodes.append(p)
                out = m1.outputs[0]
        if out is None:
            continue
        v.replace(nodes, Node("Gelu", DOMAIN, [x], [out], {}, erf.name, erf.index))
        count += 1
    return count


def _sole_gelu(v, name):
    """The fused Gelu node that is the only live reader of `name` (not a graph output), or None."""
    rd = _live(v, name) if name not in v.outputs else []
    if len(rd) == 1 and rd[0].op_type == "Gelu" and rd[0].domain == DOMAIN:
        return rd[0]
    return None


def _fuse_spmm_gelu(v):
    """SparseMatMul -> Gelu ==> SparseMatMul with the GELU in its epilogue (a pruned FP32
    transformer's FFN: one pass over the [tokens, 4 * hidden] output less)."""
    count = 0
    for sp in list(v.g.nodes) + list(v.added):
        if id(sp) in v.removed or sp.op_type != "SparseMatMul" or sp.domain != DOMAIN \
                or sp.attrs.get("activation"):
            continue
        gelu = _sole_gelu(v, sp.outputs[0])
        if gelu is None:
            continue
        attrs = dict(sp.attrs, activation="gelu")
        v.replace([sp, gelu], Node("SparseMatMul", DOMAIN, list(sp.inputs), [gelu.outputs[0]],
                                   attrs, sp.name, sp.index))
        count += 1
    return count


def _fuse_qgemm_gelu(v):
    """QGemm(mode float | requant_dq) -> Gelu -> QuantizeLinear (per tensor) ==> QGemm with the
    GELU and the requantization in its epilogue (a quantized transformer's FFN: the intermediate layer's
    float output, its GELU and the quantization for the output layer were three passes over a
    [tokens, 4 * hidden] float tensor)."""
    count = 0
    for qg in list(v.g.nodes) + list(v.added):
        if id(qg) in v.removed or qg.op_type != "QGemm" or qg.domain != DOMAIN \
                or qg.attrs.get("mode", "float") not in ("float", "requant_dq") \
                or qg.attrs.get("activation"):
            continue
        gelu = _sole_gelu(v, qg.outputs[0])
        if gelu is None:
            continue
        q = v.sole(gelu.outputs[0], "QuantizeLinear")
        qp = _q_params(v, q) if q is not None else None
        if qp is None:
            continue
        attrs = dict(qg.attrs)
        if attrs.get("mode", "float") == "float":
            attrs.update(activation="gelu", mode="requant", y_scale=qp[0], y_zero_point=qp[1],
                         y_dtype=qp[2].name)
        else:   # the layer's own Q -> DQ -> Add(bias) stays inside, bit for bit
            attrs.update(activation="gelu", out_scale=qp[0], out_zero_point=qp[1],
                         out_dtype=qp[2].name)
        v.replace([qg, gelu, q], Node("QGemm", DOMAIN, list(qg.inputs), [q.outputs[0]], attrs,
                                      qg.name, qg.index))
        count += 1
    return count


def _fuse_matmul_f32(v):
    """MatMul(x, const W[K, N] f32) [-> Add(const b[N])] [-> Gelu | Relu] ==> FusedMatMul."""
    count = 0
    for mm in list(v.g.nodes):
        if id(mm) in v.removed or not _onnx(mm, "MatMul") or len(mm.inputs) != 2:
            continue
        w = v.const(mm.inputs[1])
        if w is None or w.dtype != np.float32 or w.ndim != 2 or v.const(mm.inputs[0]) is not None:
            continue
        n = w.shape[1]
        ins, absorbed, out, act = [mm.inputs[0], mm.inputs[1]], [mm], mm.outputs[0], ""
        add, b = _bias_after(v, out, n)
        if add is not None:
            ins.append(_other(add, out))
            absorbed.append(add)
            out = add.outputs[0]
        rd = _live(v, out) if out not in v.outputs else []
        if len(rd) == 1 and ((rd[0].op_type == "Gelu" and rd[0].domain == DOMAIN)
                             or _onnx(rd[0], "Relu")):
            act = rd[0].op_type
            absorbed.append(rd[0])
            out = rd[0].outputs[0]
        v.replace(absorbed, Node("FusedMatMul", DOMAIN, ins, [out], {"activation": act},
                                 mm.name, mm.index))
        count += 1
    return count


def _last_axis(v, x, axes):
    if axes is None:
        return False
    axes = [int(a) for a in np.asarray(axes).reshape(-1)]
    if axes == [-1]:
        return True
    vi = v.g.value_info.get(x)
    shape = getattr(vi, "shape", None) if vi is not None else None
    return len(axes) == 1 and shape is not None and axes[0] == len(shape) - 1


def _reduce_axes(v, rm):
    if len(rm.inputs) > 1 and rm.inputs[1]:
        return v.const(rm.inputs[1])
    return rm.attrs.get("axes")


def _fuse_layernorm(v):
    """LayerNormalization over the last axis, and torch's ReduceMean decomposition
    (ReduceMean -> Sub -> Pow(2) | Mul(d, d) -> ReduceMean -> Add(eps) -> Sqrt -> Div
    [-> Mul(gamma)] [-> Add(beta)]) ==> LayerNorm(x, '', gamma, beta)."""
    count = 0
    for ln in list(v.g.nodes):
        if id(ln) in v.removed or not _onnx(ln, "LayerNormalization"):
            continue
        if any(o for o in ln.outputs[1:]) or not _last_axis(v, ln.inputs[0], [ln.attrs.get("axis", -1)]):
            continue
        g = v.const(ln.inputs[1])
        if g is None or g.dtype != np.float32:
            continue
        b = ln.inputs[2] if len(ln.inputs) > 2 else ""
        v.replace([ln], Node("LayerNorm", DOMAIN, [ln.inputs[0], "", ln.inputs[1], b],
                             [ln.outputs[0]], {"epsilon": float(ln.attrs.get("epsilon", 1e-5))},
                             ln.name, ln.index))
        count += 1
    for rm in list(v.g.nodes):
        if id(rm) in v.removed or not _onnx(rm, "ReduceMean") or not rm.attrs.get("keepdims", 1):
            continue
        x = rm.inputs[0]
        if not _last_axis(v, x, _reduce_axes(v, rm)):
            continue
        sub = v.sole(rm.outputs[0], "Sub")
        if sub is None or sub.inputs != [x, rm.outputs[0]]:
            continue
        d = sub.outputs[0]
        cs = _live(v, d) if d not in v.outputs else []
        sq = [n for n in cs if (_onnx(n, "Pow") and n.inputs[0] == d
                                and _near(_sconst(v, n.inputs[1]), 2.0))
              or (_onnx(n, "Mul") and n.inputs == [d, d])]
        dv = [n for n in cs if _onnx(n, "Div") and n.inputs[0] == d]
        if len(cs) != 2 or len(sq) != 1 or len(dv) != 1:
            continue
        rm2 = v.sole(sq[0].outputs[0], "ReduceMean")
        if rm2 is None or not rm2.attrs.get("keepdims", 1) \
                or not _last_axis(v, x, _reduce_axes(v, rm2)):
            continue
        add = v.sole(rm2.outputs[0], "Add")
        eps = _sconst(v, _other(add, rm2.outputs[0])) if add is not None else None
        sqrt = v.sole(add.outputs[0], "Sqrt") if eps is not None else None
        if sqrt is None or dv[0].inputs[1] != sqrt.outputs[0] or v.sole(sqrt.outputs[0]) is not dv[0]:
            continue
        nodes = [rm, sub, sq[0], rm2, add, sqrt, dv[0]]
        y = dv[0].outputs[0]
        gname = bname = ""
        mul = v.sole(y, "Mul")
        gc = v.const(_other(mul, y)) if mul is not None else None
        if gc is not None and gc.dtype == np.float32 and gc.ndim == 1:
            gname = _other(mul, y)
            nodes.append(mul)
            y = mul.outputs[0]
        if not gname:
            continue        # no affine scale: rare, leave it unfused (length of the axis unknown)
        addb = v.sole(y, "Add")
        bc = v.const(_other(addb, y)) if addb is not None else None
        if bc is not None and bc.dtype == np.float32 and bc.ndim == 1:
            bname = _other(addb, y)
            nodes.append(addb)
            y = addb.outputs[0]
        v.replace(nodes, Node("LayerNorm", DOMAIN, [x, "", gname, bname], [y],
                              {"epsilon": float(eps)}, rm.name, rm.index))
        count += 1
    # residual Add feeding only the LayerNorm: added inside the kernel (SkipLayerNorm)
    for ln in list(v.added):
        if id(ln) in v.removed or ln.op_type != "LayerNorm" or ln.inputs[1]:
            continue
        a = v.prod(ln.inputs[0], "Add")
        if a is None or len(a.inputs) != 2 or v.sole(a.outputs[0]) is not ln \
                or any(v.const(i) is not None for i in a.inputs):
            continue
        new = Node("LayerNorm", DOMAIN, [a.inputs[0], a.inputs[1]] + ln.inputs[2:], ln.outputs,
                   dict(ln.attrs), ln.name, ln.index)
        v.replace([a, ln], new)
    return count


def _fuse_layernorm_quant(v):
    """LayerNorm -> QuantizeLinear (per tensor) [-> DequantizeLinear, same parameters] ==>
    LayerNorm with outputs (quantized, dequantized): a quantized transformer's LayerNorm feeds
    the next int8 layers and, dequantized, the residual; one pass over the rows instead of
    three (each row is normalised, quantized and dequantized while in L1)."""
    count = 0
    for ln in list(v.g.nodes) + list(v.added):
        if id(ln) in v.removed or ln.op_type != "LayerNorm" or ln.domain != DOMAIN \
                or "q_scale" in ln.attrs or len(ln.outputs) != 1:
            continue
        q = v.sole(ln.outputs[0], "QuantizeLinear")
        qp = _q_params(v, q) if q is not None else None
        if qp is None or not qp[0] > 0:
            continue
        absorbed, dq_out = [ln, q], ""
        dqs = [n for n in (_live(v, q.outputs[0]) if q.outputs[0] not in v.outputs else [])
               if _onnx(n, "DequantizeLinear")]
        if len(dqs) == 1 and _q_params(v, dqs[0]) == qp:
            absorbed.append(dqs[0])
            dq_out = dqs[0].outputs[0]
        attrs = dict(ln.attrs)
        attrs.update(q_scale=qp[0], q_zero_point=qp[1], q_dtype=qp[2].name)
        v.replace(absorbed, Node("LayerNorm", DOMAIN, list(ln.inputs),
                                 [q.outputs[0]] + ([dq_out] if dq_out else []),
                                 attrs, ln.name, ln.index))
        count += 1
    return count


_ATTN_PERM = [0, 2, 1, 3]


def _transpose_in(v, name, perm):
    t = v.prod(name, "Transpose")
    if t is None or list(t.attrs.get("perm", [])) != perm:
        return None
    return t


def _fuse_attention(v, opset):
    """Q/K/V [B,S,H,D] -> Transpose(0,2,1,3) [K: (0,2,3,1), or (0,2,1,3) then (0,1,3,2)] ->
    MatMul(Q, K') [-> Div(c) | Mul(c)] [-> Add(mask)] -> Softmax(last) -> MatMul(., V') ->
    Transpose(0,2,1,3) ==> FusedAttention(q, k, v, mask)."""
    count = 0
    for sm in list(v.g.nodes):
        if id(sm) in v.removed or not _onnx(sm, "Softmax"):
            continue
        if sm.attrs.get("axis", -1 if opset >= 13 else 1) not in (-1, 3):
            continue
        mm2 = v.sole(sm.outputs[0], "MatMul")
        if mm2 is None or mm2.inputs[0] != sm.outputs[0]:
            continue
        nodes = [sm, mm2]
        t, mask, scale, cur = sm.inputs[0], "", 1.0, sm      # cur: the node reading t
        add = v.prod(t, "Add")
        if add is not None and v.sole(t) is sm and len(add.inputs) == 2:
            for i in (0, 1):
                p = v.producer.get(add.inputs[i])
                if p is not None and p.op_type in ("Div", "Mul", "MatMul") and \
                        v.sole(add.inputs[i]) is add and add.inputs[1 - i] != add.inputs[i]:
                    mask, t, cur = add.inputs[1 - i], add.inputs[i], add
                    nodes.append(add)
                    break
        sc = v.producer.get(t)
        if sc is not None and id(sc) not in v.removed and v.sole(t) is cur and \
                (_onnx(sc, "Div") or _onnx(sc, "Mul")) and len(sc.inputs) == 2:
            ci = 1 if v.const(sc.inputs[1]) is not None or sc.op_type == "Div" else 0
            c = _sconst(v, sc.inputs[ci])
            if c is not None and c != 0 and v.const(sc.inputs[ci]).dtype == np.float32:
                scale = 1.0 / c if sc.op_type == "Div" else c
                nodes.append(sc)
                t, cur = sc.inputs[1 - ci], sc
        mm1 = v.prod(t, "MatMul")
        if mm1 is None or v.sole(t) is not cur:
            continue
        nodes.append(mm1)
        tq = _transpose_in(v, mm1.inputs[0], _ATTN_PERM)
        tk = _transpose_in(v, mm1.inputs[1], [0, 2, 3, 1])
        tks = [tk]
        if tk is None:
            tk2 = _transpose_in(v, mm1.inputs[1], [0, 1, 3, 2])
            tk = _transpose_in(v, tk2.inputs[0], _ATTN_PERM) if tk2 is not None else None
            tks = [tk2, tk]
        tv = _transpose_in(v, mm2.inputs[1], _ATTN_PERM)
        to = v.sole(mm2.outputs[0], "Transpose")
        if tq is None or tk is None or tv is None or to is None \
                or list(to.attrs.get("perm", [])) != _ATTN_PERM:
            continue
        nodes.append(to)
        # the input transposes go only when the attention was their sole reader
        readers = {tq.outputs[0]: mm1, tv.outputs[0]: mm2, tks[0].outputs[0]: mm1}
        if len(tks) == 2:
            readers[tks[1].outputs[0]] = tks[0]
        for tn in [tq, tv] + tks:
            if v.sole(tn.outputs[0]) is readers[tn.outputs[0]] and tn not in nodes:
                if tn is tks[-1] and len(tks) == 2 and tks[0] not in nodes:
                    continue
                nodes.append(tn)
        v.replace(nodes, Node("FusedAttention", DOMAIN,
                              [tq.inputs[0], tk.inputs[0], tv.inputs[0], mask], [to.outputs[0]],
                              {"scale": float(scale)}, mm1.name, mm1.index))
        count += 1
    return count


def _conv_activation(v, y, opset):
    """(activation, params, absorbed nodes, output) of the activation reading conv output y."""
    if y in v.outputs:
        return None
    cs = _live(v, y)
    if len(cs) == 1:
        a = cs[0]
        if a.domain not in ("", "ai.onnx"):
            return None
        if a.op_type in ("Relu", "HardSwish", "Sigmoid"):
            return a.op_type, [], [a], a.outputs[0]
        if a.op_type == "LeakyRelu":
            return "LeakyRelu", [float(a.attrs.get("alpha", 0.01))], [a], a.outputs[0]
        if a.op_type == "HardSigmoid":
            return ("HardSigmoid", [float(a.attrs.get("alpha", 0.2)),
                                    float(a.attrs.get("beta", 0.5))], [a], a.outputs[0])
        if a.op_type == "Clip":
            if opset < 11:
                lo, hi = a.attrs.get("min", -3.4028234663852886e38), a.attrs.get("max", 3.4028234663852886e38)
            else:
                lo = hi = None
                ok = True
                for i, dflt in ((1, -np.inf), (2, np.inf)):
                    if len(a.inputs) > i and a.inputs[i]:
                        c = _sconst(v, a.inputs[i])
                        ok &= c is not None
                        if i == 1:
                            lo = c
                        else:
                            hi = c
                    elif i == 1:
                        lo = dflt
                    else:
                        hi = dflt
                if not ok:
                    return None
            return "Clip", [float(lo), float(hi)], [a], a.outputs[0]
        return None
    if len(cs) == 2:
        mul = [n for n in cs if _onnx(n, "Mul")]
        gate = [n for n in cs if _onnx(n, "Sigmoid") or _onnx(n, "HardSigmoid")]
        if len(mul) != 1 or len(gate) != 1 or sorted(mul[0].inputs) != sorted([y, gate[0].outputs[0]]) \
                or v.sole(gate[0].outputs[0]) is not mul[0]:
            return None
        g = gate[0]
        if g.op_type == "Sigmoid":
            return "SiLU", [], [g, mul[0]], mul[0].outputs[0]
        if _near(float(g.attrs.get("alpha", 0.2)), 1 / 6, 1e-6) and \
                _near(float(g.attrs.get("beta", 0.5)), 0.5, 1e-6):
            return "HardSwish", [], [g, mul[0]], mul[0].outputs[0]
    return None


def _fuse_attention_quant(v):
    """FusedAttention [-> Reshape] -> QuantizeLinear (per tensor) ==> FusedAttention with a
    quantized output [-> Reshape of the bytes]: a quantized transformer's attention output feeds
    only the next int8 layer; each context row is quantized as it is written (the QuantizeLinear
    op's own row function) instead of the float output going through memory and a pass of its
    own."""
    count = 0
    for fa in list(v.g.nodes) + list(v.added):
        if id(fa) in v.removed or fa.op_type != "FusedAttention" or fa.domain != DOMAIN \
                or "q_scale" in fa.attrs:
            continue
        x = fa.outputs[0]
        r = v.sole(x, "Reshape")
        q = v.sole(r.outputs[0] if r is not None else x, "QuantizeLinear")
        qp = _q_params(v, q) if q is not None else None
        if qp is None or not qp[0] > 0:
            continue
        attrs = dict(fa.attrs)
        attrs.update(q_scale=qp[0], q_zero_point=qp[1], q_dtype=qp[2].name)
        if r is None:
            v.replace([fa, q], Node("FusedAttention", DOMAIN, list(fa.inputs), [q.outputs[0]],
                                    attrs, fa.name, fa.index))
        else:
            v.replace([fa], Node("FusedAttention", DOMAIN, list(fa.inputs), [x], attrs, fa.name,
                                 fa.index))
            v.replace([r, q], Node("Reshape", r.domain, list(r.inputs), [q.outputs[0]],
                                   dict(r.attrs), r.name, r.index))
        count += 1
    return count


def _q8_source(v, name, reader, pending):
    """(layer node, output index, its attrs) when `name` is the float output of a QGemm or a
    QGemmGroup part in mode requant_dq without activation (an 8-bit y_dtype) read only by
    `reader`: the layer could write its 8-bit values instead. pending: changes not yet applied
    ({id(layer): {"node": layer, j: new attrs}})."""
    p = v.producer.get(name)
    if p is None or id(p) in v.removed or p.domain != DOMAIN \
            or p.op_type not in ("QGemm", "QGemmGroup") or v.sole(name) is not reader:
        return None
    j = p.outputs.index(name)
    a = pending.get(id(p), {}).get(j)
    if a is None:
        a = p.attrs if p.op_type == "QGemm" else p.attrs["parts"][j]
    if a.get("mode") != "requant_dq" or a.get("activation") \
            or np.dtype(a.get("y_dtype", "uint8")) not in (np.uint8, np.int8):
        return None
    return p, j, a


def _to_q8(pending, src):
    """Record layer output src (_q8_source's) as 8-bit (mode requant, its post_bias dropped);
    returns the (scale, zero point, bias) its reader dequantizes with."""
    p, j, a = src
    pb = a.get("post_bias")
    deq = (float(np.float32(a["y_scale"])), int(a.get("y_zero_point", 0)),
           None if pb is None else np.ascontiguousarray(pb, np.float32).reshape(-1))
    a = {k: val for k, val in a.items() if k != "post_bias"}
    a["mode"] = "requant"
    pending.setdefault(id(p), {"node": p})[j] = a
    return deq


def _apply_q8(v, pending):
    """Replace each layer in pending by a copy with its recorded parts' new attrs."""
    for ch in pending.values():
        p = ch.pop("node")
        if p.op_type == "QGemm":
            attrs = ch[0]
        else:
            attrs = dict(p.attrs)
            attrs["parts"] = [ch.get(j, part) for j, part in enumerate(p.attrs["parts"])]
        v.replace([p], Node(p.op_type, p.domain, list(p.inputs), list(p.outputs), attrs, p.name,
                            p.index))


def _attention_8bit_inputs(v):
    """QGemm (or a QGemmGroup part) in mode requant_dq without activation -> Reshape ->
    FusedAttention's q, k or v ==> that layer in mode requant (its 8-bit values out) and the
    attention dequantizing them as it packs them (attr in_deq: per input None or (y_scale,
    y_zero_point, post_bias)): the same float values, without the float tensor going through
    memory (on BERT-base 1.2 MB written by the Q/K/V GEMM and read by the attention per layer,
    a quarter of that as bytes)."""
    if os.environ.get("DEEPSPARSE_CY_NO_ATTENTION_8BIT_INPUTS", "") in ("1", "true"):
        return 0
    from ..ops import fast_fused
    if fast_fused._ATTN is None:
        return 0     # no compiled attention at this level: numpy would dequantize in a pass
    count = 0
    for fa in list(v.g.nodes) + list(v.added):
        if id(fa) in v.removed or fa.op_type != "FusedAttention" or fa.domain != DOMAIN \
                or "in_deq" in fa.attrs or len(fa.inputs) < 3:
            continue
        deq, pending = [None, None, None], {}
        for i in range(3):
            x = fa.inputs[i]
            r = v.prod(x, "Reshape")
            if r is None or v.sole(x) is not fa or list(fa.inputs[:3]).count(x) != 1:
                continue
            src = _q8_source(v, r.inputs[0], r, pending)
            if src is not None:
                deq[i] = _to_q8(pending, src)
        if not pending:
            continue
        _apply_q8(v, pending)
        attrs = dict(fa.attrs)
        attrs["in_deq"] = deq
        v.replace([fa], Node("FusedAttention", DOMAIN, list(fa.inputs), list(fa.outputs), attrs,
                             fa.name, fa.index))
        count += 1
    return count


def _layernorm_8bit_input(v):
    """QGemm (or a QGemmGroup part) in mode requant_dq without activation -> LayerNorm with a
    quantized output, as its x or its skip ==> that layer in mode requant and the LayerNorm
    dequantizing it row by row (attr x_deq: (y_scale, y_zero_point, post_bias); the 8-bit
    input goes first: x + skip is the same float sum either way). A transformer's output
    projection and second FFN layer then write a quarter of the bytes (BERT-base: 393 KB of
    floats per layer each), which their LayerNorm reads."""
    if os.environ.get("DEEPSPARSE_CY_NO_LAYERNORM_8BIT_INPUT", "") in ("1", "true"):
        return 0
    count = 0
    for ln in list(v.g.nodes) + list(v.added):
        if id(ln) in v.removed or ln.op_type != "LayerNorm" or ln.domain != DOMAIN \
                or "x_deq" in ln.attrs or "q_scale" not in ln.attrs or len(ln.inputs) < 3:
            continue
        pending = {}
        for i in (0, 1):
            x = ln.inputs[i]
            if not x or list(ln.inputs[:2]).count(x) != 1:
                continue
            src = _q8_source(v, x, ln, pending)
            if src is not None:
                deq = _to_q8(pending, src)
                break
        if not pending:
            continue
        _apply_q8(v, pending)
        inputs = list(ln.inputs)
        if i == 1:
            inputs[0], inputs[1] = inputs[1], inputs[0]
        attrs = dict(ln.attrs)
        attrs["x_deq"] = deq
        v.replace([ln], Node("LayerNorm", DOMAIN, inputs, list(ln.outputs), attrs, ln.name,
                             ln.index))
        count += 1
    return count


def _layernorm_8bit_skip(v):
    """LayerNorm with quantized outputs (q, dq) -> its dq as the skip of a LayerNorm that reads
    an 8-bit x (x_deq) ==> that LayerNorm reads q (attr skip_deq: (q_scale, q_zero_point)), and
    the first one drops dq where nothing else reads it (Shape nodes read q instead: the same
    shape). A transformer's residual stream then
    stays 8-bit: BERT-base's LayerNorms wrote 393 KB of floats each (besides their bytes) that
    the next-but-one LayerNorm read back from L3; the kernel dequantizes the bytes with the
    DequantizeLinear's steps, so the sum is the same float."""
    if os.environ.get("DEEPSPARSE_CY_NO_LAYERNORM_8BIT_SKIP", "") in ("1", "true"):
        return 0
    count = 0
    changed = True
    while changed:                   # a LayerNorm may be both a reader and a producer
        changed = False
        for ln in list(v.g.nodes) + list(v.added):
            if id(ln) in v.removed or ln.op_type != "LayerNorm" or ln.domain != DOMAIN \
                    or "skip_deq" in ln.attrs or "x_deq" not in ln.attrs \
                    or "q_scale" not in ln.attrs or len(ln.inputs) < 3:
                continue
            skip = ln.inputs[1]
            p = v.producer.get(skip) if skip and skip != ln.inputs[0] else None
            if p is None or id(p) in v.removed or p.op_type != "LayerNorm" \
                    or p.domain != DOMAIN or "q_scale" not in p.attrs or len(p.outputs) < 2 \
                    or p.outputs[1] != skip or not p.outputs[0] \
                    or np.dtype(p.attrs["q_dtype"]) not in (np.uint8, np.int8):
                continue
            inputs = list(ln.inputs)
            inputs[1] = p.outputs[0]
            attrs = dict(ln.attrs)
            attrs["skip_deq"] = (float(np.float32(p.attrs["q_scale"])),
                                 int(p.attrs["q_zero_point"]))
            v.replace([ln], Node("LayerNorm", DOMAIN, inputs, list(ln.outputs), attrs, ln.name,
                                 ln.index))
            for c in _live(v, skip):        # (the exporter's Shape of the hidden states: the
                if _onnx(c, "Shape"):       # bytes have the floats' shape)
                    v.replace([c], Node("Shape", c.domain, [p.outputs[0]], list(c.outputs),
                                        dict(c.attrs), c.name, c.index))
            if skip not in v.outputs and not _live(v, skip):
                # (one output: a step whose op returns fewer values than the node has outputs
                # does not bind, engine._bind)
                v.replace([p], Node("LayerNorm", DOMAIN, list(p.inputs), [p.outputs[0]],
                                    dict(p.attrs), p.name, p.index))
            count += 1
            changed = True
    return count


def _group_qgemm(v):
    """2-4 QGemm layers reading the same activations, each with a constant int8 weight of the
    same shape (N a multiple of 32) and a float output without activation - a transformer's Q,
    K and V projections - ==> one QGemmGroup with their outputs (attrs: each part's QGemm attrs
    and name). ops/fast_quant.py runs the group as one dense GEMM over the concatenated weights
    when every part's weight goes dense, else its parts one after another as before."""
    if os.environ.get("DEEPSPARSE_CY_NO_QGEMM_GROUP", "") in ("1", "true"):
        return 0
    groups = {}
    for n in list(v.g.nodes) + list(v.added):
        if id(n) in v.removed or n.op_type != "QGemm" or n.domain != DOMAIN \
                or len(n.inputs) != 2 or not n.inputs[0] or len(n.outputs) != 1 \
                or not n.outputs[0] or v.const(n.inputs[0]) is not None:
            continue
        a = n.attrs
        if a.get("mode", "float") not in ("float", "requant_dq") or a.get("activation"):
            continue
        w = v.const(n.inputs[1])
        if w is None or w.dtype != np.int8 or w.ndim != 2 or w.shape[1] % 32:
            continue
        key = (n.inputs[0], w.shape, int(a.get("x_zero_point", 0)))
        groups.setdefault(key, []).append(n)
    count = 0
    for (x, _, _), nodes in groups.items():
        nodes.sort(key=lambda n: n.index)
        for i in range(0, len(nodes), 4):
            g = nodes[i:i + 4]
            if len(g) < 2:
                continue
            v.replace(g, Node("QGemmGroup", DOMAIN, [x] + [n.inputs[1] for n in g],
                              [n.outputs[0] for n in g],
                              {"parts": [dict(n.attrs) for n in g],
                               "part_names": [n.name for n in g]}, g[0].name, g[0].index))
            count += 1
    return count


def _fuse_conv_f32(v, opset):
    """Conv(const f32 W) [-> Add(residual)] [-> Relu | Clip | HardSwish | SiLU (Sigmoid * x) |
    HardSigmoid * x | LeakyRelu | HardSigmoid | Sigmoid] ==> FusedConv (epilogue in place)."""
    count = 0
    for cv in list(v.g.nodes):
        if id(cv) in v.removed or not _onnx(cv, "Conv"):
            continue
        w = v.const(cv.inputs[1])
        b = cv.inputs[2] if len(cv.inputs) > 2 else ""
        if w is None or w.dtype != np.float32 or w.ndim < 3 or (b and v.const(b) is None) \
                or v.const(cv.inputs[0]) is not None:
            continue
        y, absorbed, z = cv.outputs[0], [cv], ""
        add = v.sole(y, "Add")
        if add is not None:
            o = _other(add, y)
            if o is not None and v.const(o) is None:
                z = o
                absorbed.append(add)
                y = add.outputs[0]
        act = _conv_activation(v, y, opset)
        if act is None and not z:
            continue
        attrs = dict(cv.attrs)
        if act is not None:
            attrs["activation"], attrs["activation_params"] = act[0], act[1]
            absorbed += act[2]
            y = act[3]
        v.replace(absorbed, Node("FusedConv", DOMAIN, [cv.inputs[0], cv.inputs[1], b, z], [y],
                                 attrs, cv.name, cv.index))
        count += 1
    return count


def _fuse_conv_transpose_act(v, opset):
    """ConvTranspose(const f32 W, const B?) -> activation ==> FusedConvTranspose."""
    count = 0
    for ct in list(v.g.nodes):
        if id(ct) in v.removed or not _onnx(ct, "ConvTranspose"):
            continue
        w = v.const(ct.inputs[1]) if len(ct.inputs) > 1 else None
        b = ct.inputs[2] if len(ct.inputs) > 2 else ""
        if w is None or w.dtype != np.float32 or w.ndim < 3 or (b and v.const(b) is None) \
                or v.const(ct.inputs[0]) is not None:
            continue
        act = _conv_activation(v, ct.outputs[0], opset)     # every form it finds is fused
        if act is None:
            continue
        attrs = dict(ct.attrs)
        attrs["activation"], attrs["activation_params"] = act[0], act[1]
        v.replace([ct] + act[2], Node("FusedConvTranspose", DOMAIN, list(ct.inputs), [act[3]],
                                      attrs, ct.name, ct.index))
        count += 1
    return count


def _se_fc(v, node, x):
    """(W, B, activation, params) of a 1x1 Conv / FusedConv (no Z) reading x that maps a 1x1
    map to a 1x1 map (group 1, constant float32 weight, no padding), else None."""
    if id(node) in v.removed:
        return None
    if _onnx(node, "Conv"):
        act, params = "", []
    elif node.op_type == "FusedConv" and node.domain == DOMAIN \
            and not (len(node.inputs) > 3 and node.inputs[3]):
        act = node.attrs.get("activation", "") or ""
        params = list(node.attrs.get("activation_params") or [])
    else:
        return None
    w = v.const(node.inputs[1]) if len(node.inputs) > 1 else None
    b = node.inputs[2] if len(node.inputs) > 2 else ""
    a = node.attrs
    if node.inputs[0] != x or w is None or w.dtype != np.float32 or w.ndim < 3 \
            or any(d != 1 for d in w.shape[2:]) or (b and v.const(b) is None) \
            or int(a.get("group", 1)) != 1 or any(int(p) for p in (a.get("pads") or [])) \
            or any(int(k) != 1 for k in (a.get("kernel_shape") or [])):
        return None
    return node.inputs[1], b, act, params


def _fuse_squeeze_excite(v):
    """GlobalAveragePool(x) -> 1x1 Conv [-> act] -> 1x1 Conv [-> act] -> Mul(x, gate) ==>
    SqueezeExcite (ops/fast_fused.py): one kernel call instead of four ops over tiny tensors.
    Runs after _fuse_conv_f32, so the activations are the FusedConvs' epilogues."""
    count = 0
    for gap in list(v.g.nodes):
        if id(gap) in v.removed or not _onnx(gap, "GlobalAveragePool"):
            continue
        x = gap.inputs[0]
        c1 = v.sole(gap.outputs[0])
        f1 = _se_fc(v, c1, gap.outputs[0]) if c1 is not None else None
        c2 = v.sole(c1.outputs[0]) if f1 is not None else None
        f2 = _se_fc(v, c2, c1.outputs[0]) if c2 is not None else None
        mul = v.sole(c2.outputs[0], "Mul") if f2 is not None else None
        if mul is None or sorted(mul.inputs) != sorted([x, c2.outputs[0]]) or x == c2.outputs[0] \
                or v.const(f1[0]).shape[0] != v.const(f2[0]).shape[1] \
                or v.const(f2[0]).shape[0] != v.const(f1[0]).shape[1] \
                or v.const(f1[0]).ndim != v.const(f2[0]).ndim:
            continue
        attrs = {"activation": f1[2], "activation_params": f1[3],
                 "gate_activation": f2[2], "gate_activation_params": f2[3]}
        v.replace([gap, c1, c2, mul], Node("SqueezeExcite", DOMAIN,
                                           [x, f1[0], f1[1], f2[0], f2[1]], [mul.outputs[0]],
                                           attrs, gap.name, gap.index))
        count += 1
    return count


def _fp32_enabled():
    return os.environ.get("DEEPSPARSE_CY_NO_FP32_FUSION", "") not in ("1", "true")


def fuse(graph, opsets, exact=None):
    """Apply every fusion; returns the number of rewrites."""
    exact = _exact_default() if exact is None else exact
    v = _View(graph)
    count = _fuse_qlinear_matmul(v) + _fuse_matmul_integer(v) + _fuse_qdq_matmul(v, exact)
    count += _fuse_sparse_f32(v)
    if _fp32_enabled():
        opset = opsets.get("", opsets.get("ai.onnx", 13))
        count += _fuse_gelu(v)
        count += _fuse_qgemm_gelu(v)
        count += _fuse_spmm_gelu(v)
        count += _fuse_matmul_f32(v)
        count += _fuse_layernorm(v)
        count += _fuse_layernorm_quant(v)
        count += _fuse_attention(v, opset)
        count += _fuse_attention_quant(v)
        count += _fuse_conv_f32(v, opset)
        count += _fuse_squeeze_excite(v)
        count += _fuse_conv_transpose_act(v, opset)
    count += _group_qgemm(v)
    if _fp32_enabled():
        count += _attention_8bit_inputs(v)
        count += _layernorm_8bit_input(v)
        count += _layernorm_8bit_skip(v)
    from .fusion_conv import fuse_qconv; count += fuse_qconv(graph, opsets, exact)  # noqa: E702
    if count:
        v.commit()
        opsets.setdefault(DOMAIN, 1)
    from .fusion_q8 import fuse_q8_flow
    q8 = fuse_q8_flow(graph)          # on the committed graph: QTables, QConvs' 8-bit outputs
    from .fusion_dfl import fuse_box_decode, fuse_dfl
    q8 += fuse_dfl(graph, opsets)     # after the QConvs: a quantized head's DFL ends in one
    q8 += fuse_box_decode(graph, opsets)
    if q8:
        opsets.setdefault(DOMAIN, 1)
    return count + q8
