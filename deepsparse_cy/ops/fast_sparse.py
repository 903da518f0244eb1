"""SparseMatMul (domain com.deepsparse_cy): an FP32 layer with a mostly-zero constant weight on
the compiled f32_spmm kernel (bias fused).

Made by graph/fusion.py from MatMul / Gemm (+ Add of a constant bias) when the weight has at least
fusion.SPARSE_F32_MIN zeros. Inputs: x float32 [..., K] (tokens-major) and the constant weight
[K, N] (ONNX MatMul layout, Gemm transB / alpha already applied); attributes bias [N] and
activation "gelu" (a following Gelu), both optional.
"""
from __future__ import annotations

import numpy as np

from .. import kernels
from ..errors import ShapeError
from ..kernels import _f32_ops
from ..kernels.f32conv import PackedGemmF32, f32_gemm
from .fast_fused import _FAST_GEMM
from .registry import Op, register


@register("SparseMatMul", since=1, domain="com.deepsparse_cy")
class SparseMatMul(Op):
    kernel_name = "f32_spmm"

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        w = ctx.const(1)
        if w is None or w.dtype != np.float32 or w.ndim != 2:
            raise ShapeError("SparseMatMul needs a constant float32 [K, N] weight")
        self.k, self.n = w.shape
        self.w_kn = w
        self.packed = kernels.pack_f32_sparse(np.ascontiguousarray(w.T))
        b = node.attrs.get("bias")
        self.bias = None if b is None else np.ascontiguousarray(b, np.float32).reshape(-1)
        self.act = node.attrs.get("activation", "") or None      # "gelu" (a fused Gelu)
        if self.act not in (None, "gelu"):
            raise ShapeError(f"SparseMatMul: unknown activation {self.act!r}")
        self.num_threads = int(ctx.num_threads or 0)
        self.kernel_isa = kernels.kernel_builds().get("f32_spmm", kernels.kernel_isa())
        self.flops = None
        self._dense = None          # run_dense's packed dense twin, made on first use

    def _x2(self, x):
        if x.ndim == 0 or x.shape[-1] != self.k:
            raise ShapeError(f"SparseMatMul: input {list(x.shape)} does not end in K={self.k}")
        if x.dtype != np.float32:
            raise ShapeError(f"SparseMatMul: input dtype {x.dtype}, expected float32")
        x2 = x.reshape(-1, self.k)
        self.flops = 2 * x2.shape[0] * self.k * self.n
        return x.shape[:-1], x2

    def _res(self, outs, lead):
        o = outs[0] if outs is not None and outs[0] is not None else None
        if o is None or o.dtype != np.float32 or not o.flags.c_contiguous:
            return np.empty(lead + (self.n,), np.float32)
        return o

    def run(self, inputs, outs):
        lead, x2 = self._x2(inputs[0])
        res = self._res(outs, lead)
        kernels.f32_spmm(x2, self.packed, bias=self.bias, activation=self.act,
                         num_threads=self.num_threads, out=res.reshape(x2.shape[0], self.n))
        return [res]

    def run_dense(self, inputs, outs):
        """The same layer dense, as the engine runs a dense FP32 layer (the profiler's
        baseline): the compiled f32 GEMM where its SIMD build is dispatched (FusedMatMul's
        kernel), numpy's BLAS on the generic level. Not BLAS everywhere: OpenBLAS's workers
        spin for ~0.1 s after a call and slowed the sparse step timed right after it 3-10x."""
        lead, x2 = self._x2(inputs[0])
        res = self._res(outs, lead)
        r2 = res.reshape(x2.shape[0], self.n)
        if _FAST_GEMM:
            if self._dense is None:
                self._dense = PackedGemmF32(np.ascontiguousarray(self.w_kn, np.float32))
            f32_gemm(x2, self._dense, self.bias, 0, (0.0, 0.0), r2, self.num_threads)
        else:
            np.matmul(x2, self.w_kn, out=r2)
            if self.bias is not None:
                r2 += self.bias
        if self.act == "gelu":
            _f32_ops.gelu_erf(r2.reshape(-1), r2.reshape(-1))
        return [res]
