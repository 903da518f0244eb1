"""QGemm (domain com.deepsparse_cy): one int8 matmul layer on the compiled qs8 kernels.

Made by graph/fusion.py from QDQ MatMul/Gemm, QLinearMatMul and MatMulInteger patterns; never
written in model files. Inputs: x_q (u8 or s8, [..., K], tokens-major) and the constant int8
weight [K, N] (ONNX MatMul layout; packed once here as [N, K] with pack_qs8, format chosen per
layer from its measured sparsity pattern). Attributes (numpy values, set by the fusion pass):

    x_scale, x_zero_point      activation quantization (per tensor)
    w_scale [N]                weight scales (per column), Gemm alpha folded in
    bias [N]                   float bias added to the matmul result before requantization
    post_bias [N]              float bias added after the dequantized result (Q -> DQ -> Add)
    y_scale, y_zero_point, y_dtype   output quantization (modes requant / requant_dq)
    activation                 "" or "gelu": GELU (erf form) of the float result, before the
                               output quantization (a Gelu -> QuantizeLinear after the layer)
    out_scale, out_zero_point, out_dtype   with requant_dq + gelu: the quantization after GELU
    mode                       int32:      acc = sum (x - zx) w                       -> int32
                               float:      acc * sx * sw + bias + post_bias           -> float32
                               requant:    sat(rint((acc*sx*sw + bias) / sy) + zy)    -> u8 / s8
                                           with GELU: sat(rint(gelu(acc*sx*sw + bias) / sy) + zy)
                               requant_dq + GELU: sat(rint(gelu(requant_dq) / s_out) + z_out)
                               requant_dq: (requant - zy) * sy + post_bias            -> float32

Biases are folded into the kernel's int32 bias (rint(b / (sx * sw))) when they fit; the rounding
error is at most half an accumulator unit, sx * sw / 2, far below the output quantization step.
"""
from __future__ import annotations

import itertools
import math

import numpy as np

from .. import kernels
from ..errors import ShapeError
from ..kernels import _f32_ops
from . import tensor as _tensor
from ..graph.ir import Node
from .registry import Op, OpContext, register

_KERNEL_NAMES = {"dense": "qs8_gemm", "block4": "qs8_spmm_block4",
                 "unstructured": "qs8_spmm_unstructured"}


def _threads(ctx):
    return int(ctx.num_threads or 0) if ctx is not None else 0


@register("QGemm", since=1, domain="com.deepsparse_cy")
class QGemm(Op):
    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        a = node.attrs
        w = ctx.const(1)
        if w is None or w.dtype != np.int8 or w.ndim != 2:
            raise ShapeError("QGemm needs a constant int8 [K, N] weight")
        self.k, self.n = w.shape
        self.w_nk = np.ascontiguousarray(w.T)
        self.packed = kernels.pack_qs8(self.w_nk, "auto")
        self._dense = None
        self.mode = a.get("mode", "float")
        self.act = a.get("activation", "") or None
        if self.act not in (None, "gelu") or (self.act and self.mode == "int32"):
            raise ShapeError(f"QGemm: activation {self.act!r} with mode {self.mode!r}")
        # requant_dq + GELU: the GELU of the dequantized value, quantized again (out_*)
        self.final = None
        if self.act and self.mode == "requant_dq":
            self.final = (float(a["out_scale"]), int(a.get("out_zero_point", 0)),
                          np.dtype(a.get("out_dtype", "uint8")))
        self.zx = int(a.get("x_zero_point", 0))
        self.num_threads = _threads(ctx)
        n = self.n
        sxsw = (np.float64(a.get("x_scale", 1.0))
                * np.broadcast_to(np.asarray(a.get("w_scale", 1.0), np.float64).reshape(-1), (n,)))
        bias = np.zeros(n, np.float64)
        if self.mode == "float":
            bias += np.asarray(a.get("bias", 0.0), np.float64) + np.asarray(a.get("post_bias", 0.0),
                                                                             np.float64)
        elif self.mode != "int32":
            bias += np.asarray(a.get("bias", 0.0), np.float64)
        # an all-zero (pruned) output channel is bias only: give it a scale fine enough that the
        # int32 bias carries the float bias to float32 precision (its weight scale is arbitrary)
        empty = ~self.w_nk.any(axis=1)
        if empty.any() and self.mode != "int32":
            sxsw = sxsw.copy()
            sxsw[empty] = np.maximum(np.abs(bias[empty]), 1e-30) / 2.0**24
        self.post_bias = None
        if self.mode == "requant_dq" and "post_bias" in a:
            self.post_bias = np.ascontiguousarray(a["post_bias"], np.float32)
        # int32 bias with the activation zero point folded in must fit the kernel's accumulator
        self.bias_i32, self.float_bias = None, None
        if bias.any():
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                bi = np.rint(bias / sxsw)
            comp = bi - self.zx * self.packed.rowsum
            if np.isfinite(bi).all() and np.abs(comp).max() < 2**31 - 1:
                self.bias_i32 = bi.astype(np.int64)
            else:
                self.float_bias = bias.astype(np.float32)
        if self.mode in ("requant", "requant_dq"):
            self.y_scale = float(a["y_scale"])
            self.y_zp = int(a.get("y_zero_point", 0))
            self.y_dtype = np.dtype(a.get("y_dtype", "uint8"))
            # GELU is not scale-invariant: the kernel applies it to the real value, then divides
            gelu_last = self.act and self.final is None
            self.scale = (sxsw if gelu_last else sxsw / self.y_scale).astype(np.float32)
        else:
            self.scale = sxsw.astype(np.float32)
        self.out_dtype = {"int32": np.dtype(np.int32), "float": np.dtype(np.float32),
                          "requant": getattr(self, "y_dtype", None),
                          "requant_dq": np.dtype(np.float32)}[self.mode]
        if self.final is not None:
            self.out_dtype = self.final[2]
        fam = "qs8_gemm" if self.packed.format == "dense" else "qs8_spmm"
        self.kernel_name = _KERNEL_NAMES[self.packed.format]
        self.kernel_isa = kernels.kernel_builds().get(fam, kernels.kernel_isa())
        self.flops = None
        self._prepared = {}

    # the profiler reads these after a run
    @property
    def weight_format(self):
        return self.packed.format

    def _x2(self, x):
        if x.ndim == 0 or x.shape[-1] != self.k:
            raise ShapeError(f"QGemm: input {list(x.shape)} does not end in K={self.k}")
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.k)
        self.flops = 2 * x2.shape[0] * self.k * self.n
        return lead, x2

    def _out(self, outs, lead, m):
        o = outs[0] if outs is not None and outs[0] is not None else None
        if o is None or o.dtype != self.out_dtype or not o.flags.c_contiguous:
            return np.empty(lead + (self.n,), self.out_dtype)
        return o

    def _kernel_kwargs(self):
        """prepare_qs8_matmul's keyword arguments for this layer's epilogue."""
        kw = dict(bias=self.bias_i32, x_zero_point=self.zx)
        mode = self.mode
        if mode == "int32":
            kw["out_dtype"] = np.int32
        elif self.float_bias is not None:
            kw.update(scale=self.scale, out_dtype=np.float32)
        elif mode == "float":
            kw.update(scale=self.scale, out_dtype=np.float32, activation=self.act)
        elif self.final is not None:
            fs, fzp, fdt = self.final
            kw.update(scale=self.scale, out_dtype=fdt, out_zero_point=fzp, activation="gelu",
                      y_scale=fs, mid=(self.y_dtype, self.y_zp, self.y_scale, self.post_bias))
        elif mode == "requant_dq":
            # the u8 round trip and the dequantize (+ post_bias) in the epilogue: the
            # kernel's mid step is (q - zy) * sy + post_bias, dequantize_rows' arithmetic
            kw.update(scale=self.scale, out_dtype=np.float32,
                      mid=(self.y_dtype, self.y_zp, self.y_scale, self.post_bias))
        else:
            kw.update(scale=self.scale, out_dtype=self.y_dtype, out_zero_point=self.y_zp,
                      activation=self.act, y_scale=self.y_scale if self.act else 1.0)
        return kw

    def _kernel(self, packed):
        """The layer's kernel call with its epilogue prepared once per packed weight (the
        sparse one, or the dense twin the profiler times)."""
        p = self._prepared.get(id(packed))
        if p is None:
            p = self._prepared[id(packed)] = kernels.prepare_qs8_matmul(packed,
                                                                        **self._kernel_kwargs())
        return p

    def _run(self, packed, x, outs):
        lead, x2 = self._x2(x)
        m = x2.shape[0]
        res = self._out(outs, lead, m)
        r2 = res.reshape(m, self.n)
        nt = self.num_threads
        kern = self._kernel(packed)
        mode = self.mode
        if mode == "int32":
            kern(x2, out=r2, num_threads=nt)
            return [res]
        if self.final is not None:
            if self.float_bias is None:
                kern(x2, out=r2, num_threads=nt)
                return [res]
            # bias too large for the int32 accumulator: the same steps in numpy
            f = kern(x2, num_threads=nt)
            f += self.float_bias / np.float32(self.y_scale)
            q1 = np.empty((m, self.n), self.y_dtype)
            self._requant_float(f, q1)
            f = (q1.astype(np.float32) - np.float32(self.y_zp)) * np.float32(self.y_scale)
            if self.post_bias is not None:
                f += self.post_bias
            _f32_ops.gelu_erf(f.reshape(-1), f.reshape(-1))
            f /= np.float32(self.final[0])
            info = np.iinfo(self.final[2])
            r2[...] = np.clip(np.rint(f) + self.final[1], info.min, info.max)
            return [res]
        if self.float_bias is not None:
            # bias too large for the int32 accumulator: add it in float, requantize in numpy
            f = kern(x2, num_threads=nt)
            if self.act:
                f += self.float_bias
                _f32_ops.gelu_erf(f.reshape(-1), f.reshape(-1))
                if mode == "float":
                    r2[...] = f
                    return [res]
                f /= np.float32(self.y_scale)
            elif mode == "float":
                np.add(f, self.float_bias, out=r2)
                return [res]
            else:
                f += self.float_bias / np.float32(self.y_scale)
            q = r2 if mode == "requant" else np.empty((m, self.n), self.y_dtype)
            self._requant_float(f, q)
        elif mode in ("float", "requant_dq"):
            kern(x2, out=r2, num_threads=nt)
            return [res]
        else:
            q = kern(x2, out=r2 if mode == "requant" else None, num_threads=nt)
        if mode == "requant_dq":
            pb = self.post_bias
            if q.flags.c_contiguous and r2.flags.c_contiguous and q.ndim == 2 \
                    and (pb is None or (pb.ndim == 1 and pb.shape[0] == self.n)):
                # (q - zy) * sy (+ post_bias) in one compiled pass, numpy's rounding order
                _f32_ops.dequantize_rows(q, float(self.y_zp), float(np.float32(self.y_scale)),
                                         pb, r2, nt)
            else:
                np.subtract(q, np.float32(self.y_zp), out=r2, dtype=np.float32)
                r2 *= np.float32(self.y_scale)
                if pb is not None:
                    r2 += pb
        return [res]

    def _requant_float(self, f, out):
        info = np.iinfo(out.dtype)       # f is already in units of y_scale
        out[...] = np.clip(np.rint(f) + self.y_zp, info.min, info.max)

    def run(self, inputs, outs):
        return self._run(self.packed, inputs[0], outs)

    def bind(self, inputs, outs):
        """engine._run_plan's bound call: where run() is one kernel call writing outs[0] (no
        float-side bias), that call on views of the same x / out objects."""
        x = inputs[0]
        o = outs[0] if outs else None
        if self.float_bias is not None or o is None or o.dtype != self.out_dtype \
                or not o.flags.c_contiguous or not isinstance(x, np.ndarray) or x.ndim == 0 \
                or x.shape[-1] != self.k or o.shape != x.shape[:-1] + (self.n,) \
                or not x.flags.c_contiguous or np.may_share_memory(x, o):
            return None
        _, x2 = self._x2(x)
        return self._kernel(self.packed).bound(x2, o.reshape(-1, self.n), self.num_threads)

    def run_dense(self, inputs, outs):
        """The same layer on the dense int8 GEMM (the profiler's baseline)."""
        if self._dense is None:
            self._dense = (self.packed if self.packed.format == "dense"
                           else kernels.pack_qs8(self.w_nk, "dense"))
        return self._run(self._dense, inputs[0], outs)


@register("QGemmGroup", since=1, domain="com.deepsparse_cy")
class QGemmGroup(Op):
    """QGemmGroup (domain com.deepsparse_cy, graph/fusion.py _group_qgemm): 2-4 QGemm layers
    reading the same x (inputs: x, then each part's int8 weight; outputs: each part's; attrs
    parts: each part's QGemm attributes). Where every part's weight goes to the same format
    (dense, or block4 / unstructured with N a multiple of 64) and its result is one kernel call
    (into a float output, or 8-bit without activation: graph/fusion.py
    _attention_8bit_inputs), the parts run as one GEMM over their stacked weights, each through its
    own epilogue (kernels.prepare_qs8_parts: x packed once, one pool of work items; outputs
    equal to the separate layers' bit for bit). Otherwise the parts run one after another as
    the QGemm layers they were."""

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        attrs = node.attrs["parts"]
        names = node.attrs.get("part_names") or [node.name] * len(attrs)
        if len(attrs) != len(node.outputs) or len(node.inputs) != len(attrs) + 1:
            raise ShapeError("QGemmGroup: one weight input and one output per part")
        parts = []
        for i, (a, o) in enumerate(zip(attrs, node.outputs)):
            sub = Node("QGemm", node.domain, [node.inputs[0], node.inputs[1 + i]], [o], dict(a),
                       names[i], node.index)
            parts.append(QGemm(sub, OpContext(sub, ctx.opset, {1: ctx.const(1 + i)}, None,
                                              ctx.num_threads)))
        self.k, self.n = parts[0].k, parts[0].n
        self.out_dtypes = [p.out_dtype for p in parts]
        self.num_threads = _threads(ctx)
        self.flops = None
        self.fused = self._dense = None
        fmt = parts[0].packed.format
        if all(p.packed.format == fmt and p.float_bias is None and not p.act
               and (p.mode in ("float", "requant_dq") or (p.mode == "requant" and p.final is None))
               and (p.k, p.n) == (self.k, self.n)
               and p.zx == parts[0].zx for p in parts) \
                and self.n % (32 if fmt == "dense" else kernels.ROW_CHUNK) == 0:
            self._kw = [p._kernel_kwargs() for p in parts]
            self.fused = kernels.prepare_qs8_parts([p.w_nk for p in parts], self._kw, format=fmt)
            self.parts = None        # (their packed copies are not kept)
            self.kernel_name = _KERNEL_NAMES[fmt]
            fam = "qs8_gemm" if fmt == "dense" else "qs8_spmm"
            self.kernel_isa = kernels.kernel_builds().get(fam, kernels.kernel_isa())
        else:
            self.parts = parts
            self.kernel_name = "+".join(p.kernel_name for p in parts)
            self.kernel_isa = parts[0].kernel_isa

    @property
    def weight_format(self):
        return (self.fused.packed.format if self.fused is not None
                else "+".join(p.weight_format for p in self.parts))

    def _x2(self, x):
        if x.ndim == 0 or x.shape[-1] != self.k:
            raise ShapeError(f"QGemmGroup: input {list(x.shape)} does not end in K={self.k}")
        x2 = x.reshape(-1, self.k)
        self.flops = 2 * x2.shape[0] * self.k * self.n * len(self.node.outputs)
        return x.shape[:-1], x2

    def run(self, inputs, outs):
        x = inputs[0]
        if self.fused is None:
            res = []
            for i, p in enumerate(self.parts):
                o = outs[i] if outs is not None and i < len(outs) else None
                res += p.run([x, None], [o] if o is not None else None)
            self.flops = sum(p.flops or 0 for p in self.parts) or None
            return res
        lead, x2 = self._x2(x)
        m = x2.shape[0]
        res = []
        for i, dt in enumerate(self.out_dtypes):
            o = outs[i] if outs is not None and i < len(outs) else None
            if o is None or o.dtype != dt or not o.flags.c_contiguous \
                    or o.shape != lead + (self.n,) or np.may_share_memory(o, x):
                o = np.empty(lead + (self.n,), dt)
            res.append(o)
        self.fused(x2, [r.reshape(m, self.n) for r in res], self.num_threads)
        return res

    def run_dense(self, inputs, outs):
        """The same layers on the dense int8 GEMM (the profiler's baseline): the stacked weight
        unpacked and run as dense parts, or each unfused part's own dense twin."""
        if self.fused is None:
            res = []
            for p in self.parts:
                res += p.run_dense([inputs[0], None], None)
            return res
        if self._dense is None:
            if self.fused.packed.format == "dense":
                self._dense = self.fused
            else:
                w = self.fused.packed.unpack()
                self._dense = kernels.prepare_qs8_parts(np.split(w, len(self._kw)), self._kw,
                                                        format="dense")
        lead, x2 = self._x2(inputs[0])
        return [o.reshape(lead + (self.n,)) for o in self._dense(x2, None, self.num_threads)]

    def bind(self, inputs, outs):
        """engine._run_plan's bound call: the fused kernel (or the parts' bound calls in turn) on
        the same x / output objects."""
        x = inputs[0]
        if not outs or any(o is None for o in outs) or not isinstance(x, np.ndarray) \
                or x.ndim == 0 or x.shape[-1] != self.k or not x.flags.c_contiguous:
            return None
        if self.fused is None:
            calls = [p.bind([x, None], [o]) for p, o in zip(self.parts, outs)]
            if any(c is None for c in calls):
                return None

            def run_parts(calls=tuple(calls)):
                for f, a in calls:
                    f(*a)
            return run_parts, ()
        lead, x2 = self._x2(x)
        if any(o.shape != lead + (self.n,) or not o.flags.c_contiguous or o.dtype != dt
               for o, dt in zip(outs, self.out_dtypes)):
            return None
        return self.fused.bound(x2, [o.reshape(-1, self.n) for o in outs], self.num_threads)


@register("QTable", since=1, domain="com.deepsparse_cy")
class QTable(Op):
    """QTable (domain com.deepsparse_cy): y = table[x - type min], an elementwise function of
    8-bit values (attr table, float32 [256]). graph/fusion_conv.py makes it from a
    per-tensor DequantizeLinear and the elementwise float ops after it (x * Sigmoid(x) and the
    like), evaluating them on the 256 possible values with the same float32 ops: one pass over
    the tensor instead of one per op, and the same values.

    With a Split fused in (attrs split_axis / split_sizes / num_outputs) output i is part i of
    the split. graph/fusion_q8.py gives outputs tables of their own (attr tables: one [256]
    array per output, float32, uint8 or int8: a QuantizeLinear folded into the table gives 8-bit
    values) and parts (attr parts: the split part each output reads; several outputs may read
    one part)."""

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        t = np.asarray(node.attrs.get("table"), np.float32).reshape(-1)
        if t.shape != (256,):
            raise ShapeError(f"QTable needs a float32 [256] table, got {list(t.shape)}")
        self.table = np.ascontiguousarray(t)
        n_out = len(node.outputs)
        tables = node.attrs.get("tables")
        tables = [self.table] * n_out if tables is None else list(tables)
        if len(tables) != n_out:
            raise ShapeError(f"QTable: {len(tables)} tables for {n_out} outputs")
        self.tables = []
        for t in tables:
            t = np.ascontiguousarray(np.asarray(t).reshape(-1))
            if t.shape != (256,) or t.dtype not in (np.float32, np.uint8, np.int8):
                raise ShapeError(f"QTable: each table must be [256] float32 / uint8 / int8, got "
                                 f"{list(t.shape)} {t.dtype}")
            self.tables.append(t)
        self.kernel_name = "lut8_f32" if all(t.dtype == np.float32 for t in self.tables) \
            else "lut8"
        self.nt = _threads(ctx) or 1
        # with a Split fused in (graph/fusion_conv.py _fuse_table_split): its axis, sizes
        # (None: equal parts) and number of parts
        self.split = None
        if "split_axis" in node.attrs:
            sizes = node.attrs.get("split_sizes")
            self.split = (int(node.attrs["split_axis"]),
                          [int(t) for t in sizes] if sizes is not None and len(sizes) else None,
                          int(node.attrs.get("num_outputs", n_out)))
        parts = node.attrs.get("parts")
        self.parts = [int(p) for p in parts] if parts is not None else (
            list(range(n_out)) if self.split is not None else [0] * n_out)
        n_parts = self.split[2] if self.split is not None else 1
        if len(self.parts) != n_out or any(not 0 <= p < n_parts for p in self.parts):
            raise ShapeError(f"QTable: parts {self.parts} for {n_out} outputs of {n_parts} parts")

    def _parts(self, x):
        """(axis, [(start, stop)] along it) of the fused Split on x."""
        axis, sizes, n = self.split
        axis = _tensor._axis(axis, x.ndim)
        sizes = _tensor._split_sizes(x.shape[axis], sizes, n)
        b = list(itertools.accumulate(sizes, initial=0))
        return axis, list(zip(b[:-1], b[1:]))

    def _calls(self, x, outs, bind):
        """([(kernel, argument tuple)], outputs) on C-contiguous x: per output, one call per
        outer index of its part (one call for a channel split of one image, or without a
        split), through lut8 (float32 tables, or 8-bit ones as bytes). Outputs are the
        given ones where they fit, else new arrays; with bind they must fit (in their own
        memory) and there may be at most 8 outer indices (a split of a late axis: the run
        path's loop), else None."""
        if self.split is None:
            outer, inner, parts = 1, x.size, [(0, 1)]

            def shape_of(a, b):
                return x.shape
        else:
            axis, parts = self._parts(x)
            outer = math.prod(x.shape[:axis])
            inner = math.prod(x.shape[axis + 1:])

            def shape_of(a, b):
                return x.shape[:axis] + (b - a,) + x.shape[axis + 1:]
        if bind and outer > 8:
            return None
        x2 = x.reshape(outer, -1).view(np.uint8) if outer else None
        signed = x.dtype == np.int8
        calls, res = [], []
        for i, (t, p) in enumerate(zip(self.tables, self.parts)):
            a, b = parts[p]
            shape = shape_of(a, b)
            o = outs[i] if outs and i < len(outs) else None
            if o is None or o.shape != shape or o.dtype != t.dtype \
                    or not o.flags.c_contiguous or (bind and np.may_share_memory(o, x)):
                if bind:
                    return None
                o = np.empty(shape, t.dtype)
            if b > a and inner and outer:
                # lut8 on float32 tables, or on 8-bit ones as their bytes
                tv, o2 = (t, o.reshape(outer, -1)) if t.dtype == np.float32 else \
                    (t.view(np.uint8), o.reshape(outer, -1).view(np.uint8))
                calls += [(_f32_ops.lut8, (x2[q, a * inner:b * inner], signed, tv, o2[q],
                                           self.nt)) for q in range(outer)]
            res.append(o)
        return calls, res

    def run(self, inputs, outs):
        x = inputs[0]
        if not isinstance(x, np.ndarray) or x.dtype not in (np.uint8, np.int8):
            raise ShapeError(f"QTable: input must be uint8 or int8, got "
                             f"{getattr(x, 'dtype', type(x))}")
        calls, res = self._calls(x if x.flags.c_contiguous else np.ascontiguousarray(x),
                                 outs, False)
        for fn, a in calls:
            fn(*a)
        return res

    def bind(self, inputs, outs):
        x = inputs[0]
        if not isinstance(x, np.ndarray) or x.dtype not in (np.uint8, np.int8) or x.size == 0 \
                or not x.flags.c_contiguous or not outs or any(o is None for o in outs):
            return None
        r = self._calls(x, outs, True)
        if r is None or not r[0]:
            return None
        calls = r[0]
        if len(calls) == 1:
            return calls[0]

        def run_parts():
            for fn, a in calls:
                fn(*a)
        return run_parts, ()


def _index8(x):
    """The table index of 8-bit x: its value minus the type's minimum."""
    return x.view(np.uint8) ^ np.uint8(0x80) if x.dtype == np.int8 else x


@register("QAdd", since=1, domain="com.deepsparse_cy")
class QAdd(Op):
    """QAdd (domain com.deepsparse_cy): y = ta[a - type min] + tb[b - type min] in float32,
    then QuantizeLinear(y_scale, y_zero_point) to y_dtype when those attrs are set (else the
    float32 sum). graph/fusion_q8.py makes it from an Add of two values that are tables of
    8-bit tensors (a DequantizeLinear, or a QTable's float output) and the QuantizeLinear
    after it: the same float32 add and the QuantizeLinear kernel's quantizer, so the same bytes,
    without the float tensors. Inputs of different shapes broadcast (through numpy)."""

    kernel_name = "qadd8"

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        a = node.attrs
        self.ta = np.ascontiguousarray(np.asarray(a["ta"], np.float32).reshape(-1))
        self.tb = np.ascontiguousarray(np.asarray(a["tb"], np.float32).reshape(-1))
        if self.ta.shape != (256,) or self.tb.shape != (256,):
            raise ShapeError("QAdd needs two float32 [256] tables")
        self.q = None
        if a.get("y_scale") is not None:
            self.q = (np.float32(a["y_scale"]), int(a.get("y_zero_point", 0)),
                      np.dtype(a.get("y_dtype", "uint8")))
            if self.q[2] not in (np.uint8, np.int8) or not self.q[0] > 0:
                raise ShapeError(f"QAdd: output must be uint8 / int8 with a positive scale, got "
                                 f"{self.q}")
        self.out_dtype = self.q[2] if self.q else np.dtype(np.float32)
        self.nt = _threads(ctx) or 1
        # quantized sums on the AVX-512 level: one byte table of both indices (64 KiB), one
        # gather per 16 values (0.3 ns a value against 1.4 for two float gathers and the
        # quantizer); the same bytes, built with the same float32 add and quantizer
        self.t2 = None
        if self.q is not None and _f32_ops.level() >= 2:
            from ..graph.fusion_conv import quantize_values
            t2 = np.zeros(65536 + 3, np.uint8)
            with np.errstate(all="ignore"):
                f = np.add(self.ta[:, None], self.tb[None, :], dtype=np.float32)
            t2[:65536] = quantize_values(f, self.q).view(np.uint8).reshape(-1)
            self.t2 = t2

    def _check(self, a, b):
        for x in (a, b):
            if not isinstance(x, np.ndarray) or x.dtype not in (np.uint8, np.int8):
                raise ShapeError(f"QAdd: inputs must be uint8 or int8, got "
                                 f"{getattr(x, 'dtype', type(x))}")

    def _call(self, a, b, o):
        """(kernel, arguments) on same-shaped C-contiguous a, b and out."""
        if self.t2 is not None:
            return _f32_ops.qadd8_t2, (a.reshape(-1).view(np.uint8), a.dtype == np.int8,
                                       b.reshape(-1).view(np.uint8), b.dtype == np.int8, self.t2,
                                       o.reshape(-1).view(np.uint8), self.nt)
        return _f32_ops.qadd8, (a.reshape(-1).view(np.uint8), a.dtype == np.int8,
                                b.reshape(-1).view(np.uint8), b.dtype == np.int8, self.ta,
                                self.tb, o.reshape(-1), self.q[0] if self.q else 1.0,
                                self.q[1] if self.q else 0, self.nt)

    def run(self, inputs, outs):
        a, b = inputs[0], inputs[1]
        self._check(a, b)
        o = outs[0] if outs else None
        if a.shape == b.shape:
            if o is None or o.shape != a.shape or o.dtype != self.out_dtype \
                    or not o.flags.c_contiguous:
                o = np.empty(a.shape, self.out_dtype)
            fn, args = self._call(np.ascontiguousarray(a), np.ascontiguousarray(b), o)
            fn(*args)
            return [o]
        f = np.add(self.ta[_index8(a)], self.tb[_index8(b)], dtype=np.float32)
        if self.q is None:
            return [f]
        y = np.empty(f.shape, self.out_dtype)
        fn = _f32_ops.quantize_u8 if self.out_dtype == np.uint8 else _f32_ops.quantize_s8
        fn(np.ascontiguousarray(f).reshape(-1), y.reshape(-1), self.q[0], self.q[1], self.nt)
        return [y]

    def bind(self, inputs, outs):
        a, b = inputs[0], inputs[1]
        o = outs[0] if outs else None
        if o is None or not all(isinstance(x, np.ndarray) and x.dtype in (np.uint8, np.int8)
                                and x.flags.c_contiguous for x in (a, b)) \
                or a.shape != b.shape or o.shape != a.shape or o.dtype != self.out_dtype \
                or not o.flags.c_contiguous or a.size == 0:
            return None
        return self._call(a, b, o)
