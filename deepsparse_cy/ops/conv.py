"""Dense convolution family: Conv, ConvTranspose, ConvInteger, DeformConv, Col2Im.

Conv never loops over pixels in Python. Three paths, chosen once per weight:
  * 1x1 without padding: a direct GEMM on the input (strided inputs subsampled first);
  * depthwise (group == C == M): shifted multiply-accumulate over the kernel taps;
  * everything else: im2col into a reused column buffer (one strided copy per kernel tap, no
    padded copy of the input; regions that fall into the padding are zeroed once when the buffer
    is created and never written), then one stacked matmul for all groups and the whole batch.
    The bias rides along as an extra column of the packed weight against a constant row of ones
    in the column buffer, so it costs no extra pass over the output.
"""
from __future__ import annotations

import itertools

import numpy as np

from ..errors import ShapeError
from ._spatial import norm_attrs, out_shape, phase_split, resolve_pads, scratch, tap_range
from ..kernels import ISA as _ISA
from ..kernels import _f32_ops
from ..kernels import kernel_builds as _kernel_builds
from ..kernels import load as _load_kernels
from ..kernels.f32conv import (PackedConvF32, PackedGemmF32, conv_pixel_tables, f32_conv2d,
                                f32_gemm, uses_phase_split, xph_size)
from .registry import Op, register

_FLOATS = (np.float32, np.float64)


def compute_dtype(dt):
    """BLAS works in float32/float64; half-precision types are computed in float32."""
    dt = np.dtype(dt)
    return dt if dt.type in _FLOATS else np.dtype(np.float32)


def _as(a, dt):
    return a if a.dtype == dt else a.astype(dt)


_AVX2 = _ISA in ("avx2", "avx512", "avx512_vnni")   # which build of the compiled dw kernel
# float32 2-D group-1 convs run on kernels/f32conv.py (implicit im2col GEMM, fused epilogue) when
# its SIMD build is dispatched; its plain-C build is slower than im2col + BLAS, so the generic
# level keeps the numpy path below (both are tested against each other)
_FAST_CONV = _kernel_builds().get("f32_conv") in ("avx2", "avx512_vnni")


class ConvCore:
    """A convolution with fixed attributes and (packed) weight; call .run(x) per input.

    Shared by Conv, ConvInteger and QLinearConv. Weights are packed at construction."""

    num_threads = 1      # OpenMP threads of the compiled kernels (Conv sets ctx.num_threads)

    def __init__(self, w, b, group, kernel_shape, strides, dilations, pads, auto_pad, dtype,
                 kernel=None):
        """kernel: None = the f32conv kernel where it applies, False = always the numpy path."""
        self.dtype = np.dtype(dtype)
        w = np.asarray(w)
        if w.ndim < 3:
            raise ShapeError(f"Conv weight must have rank >= 3, got shape {w.shape}")
        self.nd = w.ndim - 2
        ks = list(kernel_shape) if kernel_shape else list(w.shape[2:])
        self.k, self.s, self.d, self.pb, self.pe = norm_attrs(self.nd, ks, strides, dilations, pads)
        if tuple(self.k) != tuple(w.shape[2:]):
            raise ShapeError(f"kernel_shape {self.k} does not match weight shape {w.shape}")
        self.auto_pad = auto_pad or "NOTSET"
        self.g = int(group)
        self.M, self.Cg = int(w.shape[0]), int(w.shape[1])
        if self.M % self.g:
            raise ShapeError(f"output channels {self.M} not divisible by group {self.g}")
        self.Mg = self.M // self.g
        self.K = int(np.prod(self.k))
        self.has_bias = b is not None
        dt = self.dtype
        self.bias = _as(np.asarray(b), dt).reshape(-1) if b is not None else None
        if self.bias is not None and self.bias.shape[0] != self.M:
            raise ShapeError(f"bias has {self.bias.shape[0]} values, expected {self.M}")
        w = _as(w, dt)
        self._plans = {}
        self.fast = None
        self.dw_fast = None
        if (kernel is None and _FAST_CONV) and self.nd == 2 and self.g == 1 and dt == np.float32:
            self.fast = PackedConvF32(np.ascontiguousarray(w))
            self._mod = _load_kernels("f32_conv")
            self._w_f32 = w if self.K == 1 else None       # for the 1x1-map GEMV path
            self._gemv_w = None
            self.pointwise = self.depthwise = False
            return
        self.pointwise = self.K == 1 and not any(self.pb) and not any(self.pe) \
            and self.auto_pad in ("NOTSET", "VALID")
        self.depthwise = (not self.pointwise and self.Cg == 1 and self.g == self.M and self.g > 1)
        if self.pointwise:
            self.w_gemm = np.ascontiguousarray(w.reshape(self.g, self.Mg, self.Cg))
            # bias as a GEMM column against a ones row appended to a copy of the input: cheaper
            # than an add pass over the output when the input is smaller than the output or
            # has to be copied anyway (strided)
            self.pw_aug = self.has_bias and (self.Cg < self.Mg or any(v != 1 for v in self.s))
            if self.pw_aug:
                self.w_gemm_aug = np.ascontiguousarray(np.concatenate(
                    [self.w_gemm, self.bias.reshape(self.g, self.Mg, 1)], axis=2))
        elif self.depthwise:
            # per tap a (C, 1, ..., 1) column to broadcast over the spatial output
            wt = w.reshape(self.M, self.K)
            self.w_taps = [np.ascontiguousarray(wt[:, t]).reshape((1, self.M) + (1,) * self.nd)
                           for t in range(self.K)]
            self.w_taps_flat = np.ascontiguousarray(wt)           # (C, K) for the 2-D path
            if (kernel is None and _FAST_CONV) and self.nd == 2 and dt == np.float32:
                # kernels/f32conv.f32_dwconv2d: padded phase planes per channel, bias / z /
                # activation fused; it reads the same (C, K) taps
                self.dw_fast = self.w_taps_flat
                self._mod = _load_kernels("f32_conv")
        else:
            wg = w.reshape(self.g, self.Mg, self.Cg * self.K)
            if self.has_bias:
                wg = np.concatenate([wg, self.bias.reshape(self.g, self.Mg, 1)], axis=2)
            self.w_gemm = np.ascontiguousarray(wg)

    # -- planning (once per input shape) --------------------------------------------------------
    def plan(self, xshape):
        p = self._plans.get(xshape)
        if p is not None:
            return p
        if len(xshape) != self.nd + 2:
            raise ShapeError(f"Conv input rank {len(xshape)} does not match weight rank {self.nd + 2}")
        N, C = xshape[0], xshape[1]
        if C != self.Cg * self.g:
            raise ShapeError(f"input has {C} channels, weight expects {self.Cg} x group {self.g}")
        S = list(xshape[2:])
        pb, pe = resolve_pads(self.auto_pad, S, self.k, self.s, self.d, self.pb, self.pe)
        O = out_shape(S, self.k, self.s, self.d, pb, pe)
        taps = []
        for t in itertools.product(*[range(kk) for kk in self.k]):
            dst, src, ok = [], [], True
            for i in range(self.nd):
                lo, hi, start = tap_range(O[i], S[i], self.s[i], t[i] * self.d[i] - pb[i])
                if hi <= lo:
                    ok = False
                    break
                dst.append(slice(lo, hi))
                src.append(slice(start, start + (hi - lo - 1) * self.s[i] + 1, self.s[i]))
            if ok:
                taps.append((t, tuple(dst), tuple(src)))
        p = dict(N=N, C=C, S=S, O=O, pb=pb, pe=pe, taps=taps,
                 key=("conv_cols", tuple(xshape), tuple(self.k), tuple(self.s), tuple(self.d),
                      tuple(pb), tuple(pe), self.g, self.has_bias, self.dtype.str))
        self._plans[xshape] = p
        return p

    def out_shape(self, xshape):
        p = self.plan(tuple(xshape))
        return (p["N"], self.M, *p["O"])

    # -- execution ------------------------------------------------------------------------------
    def run(self, x, out=None, z=None, act=0, params=(0.0, 0.0)):
        """Conv of x into out (or a new array). z (same shape as the output) and act (an
        f32_fused ACTIVATIONS code) are applied only by the compiled kernels: callers pass them
        when self.fused_epilogue, else they add z and apply the activation themselves."""
        p = self.plan(x.shape)
        oshape = p.get("oshape")
        if oshape is None:
            oshape = p["oshape"] = (p["N"], self.M, *p["O"])
        dt = self.dtype
        if self.fast is not None:
            return self._run_fast(x, p, oshape, out, z, act, params)
        if self.dw_fast is not None:
            return self._run_dw_fast(x, p, oshape, out, z, act, params)
        if out is None or out.dtype != dt or not out.flags.c_contiguous or out.shape != oshape:
            res = np.empty(oshape, dt)
        else:
            res = out
        x = _as(x, dt)
        if self.pointwise:
            self._run_pointwise(x, p, res)
        elif self.depthwise:
            self._run_depthwise(x, p, res)
        else:
            self._run_im2col(x, p, res)
        if out is not None and res is not out:
            np.copyto(out, res, casting="unsafe")
            return out
        return res

    def _run_fast(self, x, p, oshape, out, z, act, params):
        fc = p.get("fast_call")
        if fc is None:      # once per input shape: GEMV or not, pixel tables, phase scratch
            gemv = p["O"] == [1, 1] and p["S"] == [1, 1] and self.K == 1
            ih0, iw0 = conv_pixel_tables(p["S"][0], p["S"][1], p["O"][0], p["O"][1], self.s,
                                         p["pb"])
            xph = (("f32conv_xph", tuple(x.shape), self.s[1]), xph_size(x.shape, self.s[1])) \
                if uses_phase_split(self.fast, self.s[1], p["O"][0] * p["O"][1]) else None
            fc = p["fast_call"] = (gemv, ih0, iw0, xph)
        gemv, ih0, iw0, xph = fc
        if gemv and z is None and x.dtype == np.float32:
            return self._run_gemv(x, oshape, out, act, params)
        res, x, z = self._fast_args(x, oshape, out, z)
        if xph is not None:
            xph = scratch(xph[0], (xph[1],), np.float32)
        # straight into the compiled module: the shape plan already checked what
        # kernels/f32conv.f32_conv2d would check on every call (~10 us of Python per conv)
        if res.size:
            self._mod.conv2d(*self._conv2d_args(x, ih0, iw0, z, act, params, res, xph))
        return self._into(out, res)

    def _conv2d_args(self, x, ih0, iw0, z, act, params, res, xph):
        return (x, self.fast.wp, self.M, self.k[0], self.k[1], self.s[1], self.d[0], self.d[1],
                ih0, iw0, self.bias, z, act, params[0], params[1], res, self.num_threads, xph)

    def _dwconv2d_args(self, x, p, z, act, params, res):
        return (x, self.dw_fast, self.k[0], self.k[1], self.s[0], self.s[1], self.d[0],
                self.d[1], p["pb"][0], p["pb"][1], self.bias, z, act, params[0], params[1], res,
                self.num_threads)

    def _run_gemv(self, x, oshape, out, act, params):
        """A 1x1 conv of 1x1 maps (squeeze-excite FCs after a global pool): the FP32 GEMM with
        the weight as 16-wide output strips, one broadcast input value per step; the conv
        kernel would pack a 16-pixel strip for one pixel. Its packed weight is made on first
        use (only layers that meet 1x1 maps pay the memory)."""
        if self._gemv_w is None:
            self._gemv_w = PackedGemmF32(np.ascontiguousarray(
                self._w_f32.reshape(self.M, self.Cg).T))
        N = oshape[0]
        res, x, _ = self._fast_args(x, oshape, out, None)
        f32_gemm(x.reshape(N, self.Cg), self._gemv_w, self.bias, act, params,
                 out=res.reshape(N, self.M), num_threads=1)
        return self._into(out, res)

    def bind(self, x, out, z=None, act=0, params=(0.0, 0.0)):
        """(function, args) computing run(x, out, z, act, params) into `out` with no checks, for
        an executor that passes the same x / out / z objects again (arena slots; see
        engine._run_plan), or None where run() would copy, allocate, or use per-thread scratch.
        Valid once run() has seen this input shape."""
        f32 = np.float32
        if (self.fast is None and self.dw_fast is None) or out is None or x.dtype != f32 \
                or out.dtype != f32 or not x.flags.c_contiguous or not out.flags.c_contiguous \
                or out.size == 0:
            return None
        p = self._plans.get(x.shape)
        if p is None or out.shape != p.get("oshape") or np.may_share_memory(out, x):
            return None
        if z is not None and (z.dtype != f32 or z.shape != out.shape or not z.flags.c_contiguous
                              or np.may_share_memory(out, z)):
            return None
        if self.dw_fast is not None:
            return self._mod.dwconv2d, self._dwconv2d_args(x, p, z, act, params, out)
        fc = p.get("fast_call")
        if fc is None or (fc[0] and z is None):
            return None         # not run yet, or the GEMV
        args = self._conv2d_args(x, fc[1], fc[2], z, act, params, out, None)
        if fc[3] is None:
            return self._mod.conv2d, args
        # the phase-split scratch is per thread: looked up on each call
        conv2d, pre, (key, n) = self._mod.conv2d, args[:-1], fc[3]

        def call():
            conv2d(*pre, scratch(key, (n,), np.float32))
        return call, ()

    @staticmethod
    def _fast_args(x, oshape, out, z):
        """(result buffer, x, z) for the compiled kernels: out when it is a float32 C-contiguous
        buffer of the output shape sharing no memory with x or z, float32 C-contiguous x and z
        (z broadcast to the output shape)."""
        if out is None or out.dtype != np.float32 or not out.flags.c_contiguous \
                or out.shape != oshape or np.may_share_memory(out, x) \
                or (z is not None and np.may_share_memory(out, z)):
            res = np.empty(oshape, np.float32)
        else:
            res = out
        if z is not None and (z.dtype != np.float32 or z.shape != oshape):
            z = np.broadcast_to(z, oshape).astype(np.float32)
        if not (x.dtype == np.float32 and x.flags.c_contiguous):
            x = np.ascontiguousarray(x, dtype=np.float32)
        if z is not None and not z.flags.c_contiguous:
            z = np.ascontiguousarray(z)
        return res, x, z

    @staticmethod
    def _into(out, res):
        """res, or out (given but unusable as the kernels' buffer) with res copied into it."""
        if out is not None and res is not out:
            np.copyto(out, res, casting="unsafe")
            return out
        return res

    def _run_dw_fast(self, x, p, oshape, out, z, act, params):
        res, x, z = self._fast_args(x, oshape, out, z)
        if res.size:     # as kernels/f32conv.f32_dwconv2d, its checks done by the shape plan
            self._mod.dwconv2d(*self._dwconv2d_args(x, p, z, act, params, res))
        return self._into(out, res)

    @property
    def fused_epilogue(self):
        """Whether run() applies z and the activation itself (the compiled kernels)."""
        return self.fast is not None or self.dw_fast is not None

    def _run_pointwise(self, x, p, res):
        N, C, O = p["N"], p["C"], p["O"]
        g, Cg = self.g, self.Cg
        Op_ = int(np.prod(O))
        strided = any(s != 1 for s in self.s)
        sl = (slice(None), slice(None)) + tuple(slice(0, (o - 1) * s + 1, s)
                                                 for o, s in zip(O, self.s))
        out4 = res.reshape(N, g, self.Mg, Op_)
        if self.pw_aug:
            def init(buf):
                buf[:, :, Cg, :] = 1
            xa = scratch(("conv_pw_aug", x.shape, tuple(self.s), g, x.dtype.str),
                         (N, g, Cg + 1, Op_), x.dtype, init=init)
            np.copyto(xa[:, :, :Cg, :].reshape(N, g, Cg, *O), x[sl].reshape(N, g, Cg, *O))
            np.matmul(self.w_gemm_aug, xa, out=out4)
            return
        if strided:
            xs = scratch(("conv_sub", x.shape, tuple(self.s), x.dtype.str), (N, C, *O), x.dtype)
            np.copyto(xs, x[sl])
            x = xs
        else:
            x = np.ascontiguousarray(x)
        np.matmul(self.w_gemm, x.reshape(N, g, Cg, Op_), out=out4)
        if self.has_bias:
            r3 = res.reshape(N, self.M, Op_)
            np.add(r3, self.bias[:, None], out=r3)

    def _run_depthwise_2d(self, x, p, res):
        """2-D depthwise on flattened planes: the input is split into stride phases (one phase
        and just padding when stride is 1), and the output is computed on a grid as wide as a
        phase row, so every tap is ONE contiguous 1-D window of each channel's plane (long SIMD
        loops instead of short strided rows); the junk columns past O1 are cropped when the
        bias is added. Channels are processed in blocks that keep the accumulator in L2."""
        N, C, O = p["N"], p["C"], p["O"]
        (k0, k1), (s0, s1), (d0, d1) = self.k, self.s, self.d
        ph = phase_split(x, self.k, self.s, self.d, p["pb"], O, 0.0, "dw2d", extra_rows=1,
                         planes=True)
        Q0b, Q1 = ph.shape[-2:]
        L = O[0] * Q1
        planes = ph.reshape(N * C, s0 * s1, Q0b * Q1)
        if res.dtype == np.float32 and res.flags.c_contiguous:
            # compiled row-wise kernel: taps accumulated in registers, bias fused, no crop pass
            tph = np.array([(t0 * d0 % s0) * s1 + (t1 * d1) % s1 for t0 in range(k0)
                            for t1 in range(k1)], np.int32)
            toff = np.array([(t0 * d0 // s0) * Q1 + (t1 * d1) // s1 for t0 in range(k0)
                             for t1 in range(k1)], np.int64)
            _f32_ops.dw_conv2d_planes(np.ascontiguousarray(planes, np.float32), self.w_taps_flat,
                                      tph, toff, Q1, O[0], O[1], self.bias,
                                      res.reshape(N * C, O[0] * O[1]), self.num_threads,
                                      _AVX2)
            return
        acc = scratch(("dw_acc", N * C, L, res.dtype.str), (N * C, L), res.dtype)
        tmp = scratch(("dw_tmp", N * C, L, res.dtype.str), (N * C, L), res.dtype)
        taps = []
        for t0 in range(k0):
            for t1 in range(k1):
                a, b = t0 * d0, t1 * d1
                taps.append(((a % s0) * s1 + b % s1, (a // s0) * Q1 + b // s1))
        wt = self.w_taps_flat if N == 1 else np.tile(self.w_taps_flat, (N, 1))
        blk = max(1, min(N * C, (128 * 1024) // max(1, L * res.itemsize)))
        for c0 in range(0, N * C, blk):
            c1 = min(N * C, c0 + blk)
            ac, tm = acc[c0:c1], tmp[c0:c1]
            for ti, (phase, off) in enumerate(taps):
                v = planes[c0:c1, phase, off:off + L]
                if ti == 0:
                    np.multiply(v, wt[c0:c1, ti:ti + 1], out=ac)
                else:
                    np.multiply(v, wt[c0:c1, ti:ti + 1], out=tm)
                    np.add(ac, tm, out=ac)
        grid = acc.reshape(N, C, O[0], Q1)[:, :, :, :O[1]]
        if self.has_bias:
            np.add(grid, self.bias.reshape(1, C, 1, 1), out=res)
        else:
            np.copyto(res, grid)

    def _run_depthwise(self, x, p, res):
        N, C, S, O, pb, pe = p["N"], p["C"], p["S"], p["O"], p["pb"], p["pe"]
        if self.nd == 2:
            return self._run_depthwise_2d(x, p, res)
        taps = list(itertools.product(*[range(kk) for kk in self.k]))
        if any(v > 1 for v in self.s):
            # strided: read stride-phase planes so each tap is a unit-stride view
            tv = phase_split(x, self.k, self.s, self.d, pb, O, 0.0, "dw")
            views = [tv(t) for t in taps]
        else:
            if any(pb) or any(pe):
                P = [S[i] + pb[i] + pe[i] for i in range(self.nd)]
                xp = scratch(("dw_pad",) + p["key"][1:], (N, C, *P), x.dtype, zero=True)
                np.copyto(xp[(slice(None), slice(None)) +
                             tuple(slice(pb[i], pb[i] + S[i]) for i in range(self.nd))], x)
            else:
                xp = x
            views = [xp[(slice(None), slice(None)) + tuple(
                slice(t[i] * self.d[i], t[i] * self.d[i] + O[i]) for i in range(self.nd))]
                for t in taps]
        tmp = scratch(("dw_tmp", res.shape, res.dtype.str), res.shape, res.dtype)
        for ti, view in enumerate(views):
            if ti == 0:
                np.multiply(view, self.w_taps[ti], out=res)
            else:
                np.multiply(view, self.w_taps[ti], out=tmp)
                np.add(res, tmp, out=res)
        if self.has_bias:
            np.add(res, self.bias.reshape((1, self.M) + (1,) * self.nd), out=res)

    # Large column buffers (big feature maps, e.g. YOLO at 640x640) are built and consumed in
    # blocks of output rows so each block is still in cache when the GEMM reads it (measured
    # 34 -> 23 ms on a 32->64 3x3/2 conv at 320x320). At ResNet-50 sizes (<= ~8 MB of columns)
    # one buffer measured as fast or faster: narrow GEMMs re-read the weights per block.
    CHUNK_MIN_TOTAL = 12 * 1024 * 1024
    CHUNK_BYTES = 1024 * 1024
    CHUNK_MIN_COLS = 1024

    def _chunks(self, p, itemsize):
        """[(r0, r1, buffer key, taps)] over output dim-0 rows; taps as in plan() but relative
        to the chunk. Chunks whose padding pattern is identical share one buffer."""
        if "chunks" in p:
            return p["chunks"]
        N, O = p["N"], p["O"]
        row_p = int(np.prod(O[1:])) if self.nd > 1 else 1
        rows_k = self.Cg * self.K + (1 if self.has_bias else 0)
        per_row = N * self.g * rows_k * row_p * itemsize
        nr = O[0]
        if self.nd > 1 and per_row * O[0] > self.CHUNK_MIN_TOTAL:
            nr = max(1, self.CHUNK_BYTES // max(per_row, 1), -(-self.CHUNK_MIN_COLS // row_p))
            nr = min(O[0], nr)
        chunks = []
        for r0 in range(0, O[0], nr):
            r1 = min(O[0], r0 + nr)
            taps, sig = [], []
            for t, dst, src in p["taps"]:
                lo, hi = max(dst[0].start, r0), min(dst[0].stop, r1)
                if hi <= lo:
                    continue
                st = src[0].start + (lo - dst[0].start) * self.s[0]
                d0 = slice(lo - r0, hi - r0)
                s0 = slice(st, st + (hi - lo - 1) * self.s[0] + 1, self.s[0])
                taps.append((t, (d0,) + dst[1:], (s0,) + src[1:]))
                sig.append((t, lo - r0, hi - r0))
            chunks.append((r0, r1, p["key"] + (r1 - r0, tuple(sig)), taps))
        p["chunks"] = chunks
        return chunks

    def _run_im2col(self, x, p, res):
        N, O = p["N"], p["O"]
        g, Cg, K = self.g, self.Cg, self.K
        Op_ = int(np.prod(O))
        row_p = Op_ // O[0]
        rows = Cg * K + (1 if self.has_bias else 0)

        def init(buf):
            if self.has_bias:
                buf[:, :, Cg * K, :] = 1

        xg = x.reshape(N, g, Cg, *p["S"])
        lead = (slice(None),) * 3
        res4 = res.reshape(N, g, self.Mg, Op_)
        for r0, r1, key, taps in self._chunks(p, x.dtype.itemsize):
            Oc = [r1 - r0] + list(O[1:])
            P = (r1 - r0) * row_p
            cols = scratch(key, (N, g, rows, P), x.dtype, zero=True, init=init)
            # writable (N, g, Cg, *k, *Oc) view of the first Cg*K rows of each group
            it = cols.itemsize
            ostr = [it]
            for o in reversed(Oc[1:]):
                ostr.insert(0, ostr[0] * o)
            kstr = [P * it]
            for kk in reversed(self.k[1:]):
                kstr.insert(0, kstr[0] * kk)
            view = np.lib.stride_tricks.as_strided(
                cols, shape=(N, g, Cg, *self.k, *Oc),
                strides=(cols.strides[0], cols.strides[1], K * P * it, *kstr, *ostr))
            for t, dst, src in taps:
                np.copyto(view[lead + t + dst], xg[lead + src])
            np.matmul(self.w_gemm, cols, out=res4[..., r0 * row_p:r1 * row_p])


def _conv_attrs(node):
    a = node.attrs
    return dict(group=a.get("group", 1), kernel_shape=a.get("kernel_shape"),
                strides=a.get("strides"), dilations=a.get("dilations"), pads=a.get("pads"),
                auto_pad=a.get("auto_pad", "NOTSET"))


@register("Conv", since=1)
class Conv(Op):
    """Conv: weight (and bias) packed at compile time when constant."""

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.attrs = _conv_attrs(node)
        self.core = None
        w = ctx.const(1)
        b = ctx.const(2) if len(node.inputs) > 2 and node.inputs[2] else None
        self.bias_const = len(node.inputs) <= 2 or not node.inputs[2] or b is not None
        if w is not None and self.bias_const:
            self.core = ConvCore(w, b, dtype=compute_dtype(w.dtype), **self.attrs)
            self.core.num_threads = int(ctx.num_threads or 1)
            if self.core.fast is not None:
                self.kernel_name = "f32_conv"
            elif self.core.dw_fast is not None:
                self.kernel_name = "f32_dwconv"

    def run(self, inputs, outs):
        x, w = inputs[0], inputs[1]
        b = inputs[2] if len(inputs) > 2 else None
        core = self.core
        if core is None or core.dtype != compute_dtype(x.dtype):
            core = ConvCore(w, b, dtype=compute_dtype(x.dtype), **self.attrs)
        out = outs[0] if outs else None
        y = core.run(x, out if out is not None and out.dtype == core.dtype else None)
        if y.dtype != x.dtype:
            y = y.astype(x.dtype)
        if out is not None and y is not out:
            np.copyto(out, y, casting="unsafe")
            y = out
        return [y]

    def bind(self, inputs, outs):
        """engine._run_plan's bound call: the compiled kernel straight into outs[0] (see
        ConvCore.bind), or None."""
        if self.core is None or type(self).run is not Conv.run or not outs:
            return None
        return self.core.bind(inputs[0], outs[0])


def apply_activation(y, activation, params):
    """In-place fused activation on a conv/GEMM output (onnxruntime FusedConv's set)."""
    if not activation:
        return y
    a = activation
    p = list(params or [])
    if a == "Relu":
        np.maximum(y, 0, out=y)
    elif a == "Clip":
        lo = p[0] if len(p) > 0 else -np.inf
        hi = p[1] if len(p) > 1 else np.inf
        np.clip(y, lo, hi, out=y)
    elif a == "LeakyRelu":
        alpha = p[0] if p else 0.01
        np.multiply(y, np.where(y < 0, y.dtype.type(alpha), y.dtype.type(1)), out=y)
    elif a == "Sigmoid":
        np.negative(y, out=y)
        np.exp(y, out=y)
        np.add(y, 1, out=y)
        np.reciprocal(y, out=y)
    elif a == "Tanh":
        np.tanh(y, out=y)
    elif a == "HardSigmoid":
        alpha = p[0] if len(p) > 0 else 0.2
        beta = p[1] if len(p) > 1 else 0.5
        np.multiply(y, alpha, out=y)
        np.add(y, beta, out=y)
        np.clip(y, 0, 1, out=y)
    else:
        raise ShapeError(f"FusedConv: unsupported activation {a!r}")
    return y


@register("FusedConv", since=1, domain="com.microsoft")
class FusedConv(Conv):
    """Conv (+ optional sum input Z) + activation in one op, as onnxruntime's com.microsoft
    FusedConv (which its optimizer writes and which a fusion pass can target): the activation
    runs in place on the GEMM output instead of as a separate node over a separate buffer."""

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.activation = node.attrs.get("activation", "")
        self.activation_params = node.attrs.get("activation_params", [])

    def run(self, inputs, outs):
        z = inputs[3] if len(inputs) > 3 else None
        y = super().run(inputs[:3], outs)[0]
        if z is not None:
            np.add(y, z, out=y, casting="unsafe")
        return [apply_activation(y, self.activation, self.activation_params)]


@register("ConvInteger", since=10)
class ConvInteger(Op):
    """(x - x_zero_point) conv (w - w_zero_point) accumulated exactly (float64 GEMM) into int32."""

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.attrs = _conv_attrs(node)

    def run(self, inputs, outs):
        x, w = inputs[0], inputs[1]
        xz = inputs[2] if len(inputs) > 2 else None
        wz = inputs[3] if len(inputs) > 3 else None
        xf = x.astype(np.float64)
        if xz is not None:
            xf -= np.asarray(xz, np.float64).reshape(-1)[0] if np.size(xz) == 1 else \
                np.asarray(xz, np.float64).reshape((1, -1) + (1,) * (x.ndim - 2))
        wf = w.astype(np.float64)
        if wz is not None:
            wf -= np.asarray(wz, np.float64).reshape((-1,) + (1,) * (w.ndim - 1))
        core = ConvCore(wf, None, dtype=np.float64, **self.attrs)
        return [np.rint(core.run(xf)).astype(np.int32)]


# --- ConvTranspose / Col2Im --------------------------------------------------------------------

def _col2im_add(cols, full, lead, k, s, d, n_in, offset):
    """Scatter-add cols (*lead, *k, *n_in) into full (*lead, *L) at offset + i*s + t*d per axis.

    One vectorised strided add per kernel tap (the taps of a stride>1 conv overlap)."""
    nl = len(lead)
    for t in itertools.product(*[range(kk) for kk in k]):
        dst = tuple(slice(offset[i] + t[i] * d[i], offset[i] + t[i] * d[i] + (n_in[i] - 1) * s[i] + 1, s[i])
                    for i in range(len(k)))
        v = full[(slice(None),) * nl + dst]
        np.add(v, cols[(slice(None),) * nl + t], out=v)


@register("ConvTranspose", since=1)
class ConvTranspose(Op):
    """GEMM (W^T x) per group into columns, then col2im scatter-add, crop by pads, add bias."""

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        a = node.attrs
        self.group = int(a.get("group", 1))
        self.kernel_shape = a.get("kernel_shape")
        self.strides = a.get("strides")
        self.dilations = a.get("dilations")
        self.pads = a.get("pads")
        self.auto_pad = a.get("auto_pad", "NOTSET") or "NOTSET"
        self.output_padding = a.get("output_padding")
        self.output_shape = a.get("output_shape")
        self.num_threads = int(ctx.num_threads or 1)
        self._wcache = None
        self._brep = None
        self._tables = {}
        self._wconst = ctx.const(1)
        self._bconst = ctx.const(2) if len(node.inputs) > 2 and node.inputs[2] else None

    def _geometry(self, S, k, s, d):
        nd = len(S)
        op = [int(v) for v in self.output_padding] if self.output_padding else [0] * nd
        full = [s[i] * (S[i] - 1) + (k[i] - 1) * d[i] + 1 for i in range(nd)]
        if self.output_shape is not None or self.auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            if self.output_shape is not None:
                osh = [int(v) for v in self.output_shape][-nd:]
            else:
                osh = [S[i] * s[i] for i in range(nd)]
            pb = []
            for i in range(nd):
                total = full[i] + op[i] - osh[i]
                pb.append(total // 2 if self.auto_pad == "SAME_UPPER" else total - total // 2)
            return pb, osh
        p = [int(v) for v in self.pads] if self.pads and self.auto_pad == "NOTSET" else [0] * (2 * nd)
        osh = [full[i] + op[i] - p[i] - p[nd + i] for i in range(nd)]
        return p[:nd], osh

    def run(self, inputs, outs):
        return [self._run(inputs, outs)[0]]

    def _run(self, inputs, outs, act=0, params=(0.0, 0.0)):
        """(y, whether the f32_fused activation `act` was applied: only the compiled
        stride == kernel path applies it, in the GEMM's epilogue)."""
        x, w = inputs[0], inputs[1]
        b = inputs[2] if len(inputs) > 2 else None
        odt = x.dtype
        dt = compute_dtype(x.dtype)
        nd = x.ndim - 2
        N, C = x.shape[:2]
        S = list(x.shape[2:])
        g = self.group
        if w.shape[0] != C:
            raise ShapeError(f"ConvTranspose weight has {w.shape[0]} input channels, input has {C}")
        Cg, Mg = C // g, w.shape[1]
        k, s, d, _, _ = norm_attrs(nd, self.kernel_shape or list(w.shape[2:]),
                                   self.strides, self.dilations, None)
        K = int(np.prod(k))
        Sp = int(np.prod(S))
        # packed weights are kept only for a compile-time constant weight: a computed one may
        # arrive in the same (arena) array object with new values on the next call
        if self._wcache is not None and self._wcache[0] is w and w is self._wconst \
                and self._wcache[3] == dt:
            wt = self._wcache[1]
        else:
            # (g, Mg*K, Cg): W^T per group
            wt = np.ascontiguousarray(_as(w, dt).reshape(g, Cg, Mg * K).transpose(0, 2, 1))
            # group-1 float32: the GEMM runs on the f32conv kernel as a 1x1 conv over the input
            # pixels (OpenBLAS would leave worker threads spinning into the next layers)
            pk = PackedConvF32(wt[0].reshape(Mg * K, Cg, 1, 1)) \
                if _FAST_CONV and g == 1 and dt == np.float32 else None
            self._wcache = (w, wt, pk, dt)
        pk = self._wcache[2]
        pb, osh = self._geometry(S, k, s, d)
        if pk is not None and nd == 2 and list(k) == list(s) and all(v == 1 for v in d) \
                and not any(pb) and list(osh) == [S[i] * s[i] for i in range(nd)]:
            # stride == kernel (the usual 2x upsampling): windows do not overlap, so the
            # output is the GEMM's columns rearranged (depth-to-space) - one copy, no col2im;
            # the bias rides in the GEMM as a per-row bias repeated over the kernel taps
            brep = None
            if b is not None:      # the bias repeated over the taps (once, if constant)
                if self._brep is not None and self._brep[0] is b and b is self._bconst \
                        and self._brep[1].dtype == dt:
                    brep = self._brep[1]
                else:
                    brep = np.repeat(_as(np.asarray(b), dt).reshape(-1), K)
                    self._brep = (b, brep)
            tab = self._tables.get(Sp)
            if tab is None:        # the 1x1 GEMM's pixel tables, once per input size
                tab = self._tables[Sp] = conv_pixel_tables(Sp, 1, Sp, 1, (1, 1), (0, 0))
            ckey = ("convT_cols", N, Mg * K, Sp)
            cols = scratch(ckey, (N, Mg * K, Sp, 1), np.float32)
            # the activation commutes with the depth-to-space copy: applied in the epilogue
            cols = f32_conv2d(np.ascontiguousarray(_as(x, dt)).reshape(N, C, Sp, 1), pk,
                              bias=brep, num_threads=self.num_threads, out=cols, tables=tab,
                              activation=act, params=params)
            out = outs[0] if outs else None
            y = out if (out is not None and out.dtype == dt and out.flags.c_contiguous
                        and out.shape == (N, Mg, *osh)) else np.empty((N, Mg, *osh), dt)
            if dt == np.float32:    # numpy's copy would run an inner loop k[1] long
                _f32_ops.depth_to_space(cols.reshape(N * Mg, K, Sp),
                                        y.reshape(N * Mg, osh[0], osh[1]), k[0], k[1], S[0],
                                        S[1], self.num_threads)
            else:
                np.copyto(y.reshape(N, Mg, S[0], k[0], S[1], k[1]),
                          cols.reshape(N, Mg, k[0], k[1], S[0], S[1]).transpose(0, 1, 4, 2, 5, 3))
            if dt == np.float32 and x.dtype == np.float32 and x.flags.c_contiguous \
                    and y is out:
                self._last_fast = (x.shape, pk, brep, tab, ckey, (N, Mg, K, Sp, C), tuple(k),
                                   tuple(S), tuple(osh))
            if out is not None and y is not out:
                np.copyto(out, y, casting="unsafe")
                return out, True
            return (y if y.dtype == odt else y.astype(odt)), True
        if pk is not None:
            cols = f32_conv2d(np.ascontiguousarray(_as(x, dt)).reshape(N, C, Sp, 1), pk,
                              num_threads=self.num_threads).reshape(N, g, Mg * K, Sp)
        else:
            cols = np.matmul(wt, _as(x, dt).reshape(N, g, Cg, Sp))    # (N, g, Mg*K, Sp)
        full = [s[i] * (S[i] - 1) + (k[i] - 1) * d[i] + 1 for i in range(nd)]
        lo = [min(0, pb[i]) for i in range(nd)]
        hi = [max(full[i], pb[i] + osh[i]) for i in range(nd)]
        buf = np.zeros((N, g * Mg, *[hi[i] - lo[i] for i in range(nd)]), dt)
        _col2im_add(cols.reshape(N, g * Mg, *k, *S), buf, (N, g * Mg), k, s, d, S,
                    [-lo[i] for i in range(nd)])
        y = buf[(slice(None), slice(None)) +
                tuple(slice(pb[i] - lo[i], pb[i] - lo[i] + osh[i]) for i in range(nd))]
        if b is not None:
            y = y + _as(b, dt).reshape((1, -1) + (1,) * nd)
        out = outs[0] if outs else None
        if out is not None:
            np.copyto(out, y, casting="unsafe")
            return out, False
        return np.ascontiguousarray(y, dtype=odt), False

    _last_fast = None
    _act = (0, (0.0, 0.0))      # FusedConvTranspose's epilogue activation

    def bind(self, inputs, outs):
        """engine._run_plan's bound call for the stride == kernel path: the 1x1 GEMM into the
        per-thread column scratch (looked up on each call: it is per thread), then the
        depth-to-space copy into outs[0]."""
        lf = self._last_fast
        x, w = inputs[0], inputs[1]
        out = outs[0] if outs else None
        if lf is None or out is None or x.shape != lf[0] or x.dtype != np.float32 \
                or not x.flags.c_contiguous or w is not self._wconst \
                or (len(inputs) > 2 and inputs[2] is not None and inputs[2] is not self._bconst):
            return None
        _, pk, brep, (ih0, iw0), ckey, (N, Mg, K, Sp, C), k, S, osh = lf
        if out.dtype != np.float32 or not out.flags.c_contiguous or out.shape != (N, Mg, *osh) \
                or np.may_share_memory(out, x):
            return None
        mod, nt = _load_kernels("f32_conv", pk.isa), self.num_threads
        code, (p0, p1) = self._act
        x4, y3 = x.reshape(N, C, Sp, 1), out.reshape(N * Mg, osh[0], osh[1])
        d2s = _f32_ops.depth_to_space

        def call():
            cols = scratch(ckey, (N, Mg * K, Sp, 1), np.float32)
            mod.conv2d(x4, pk.wp, Mg * K, 1, 1, 1, 1, 1, ih0, iw0, brep, None, code, p0, p1,
                       cols, nt, None)
            d2s(cols.reshape(N * Mg, K, Sp), y3, k[0], k[1], S[0], S[1], nt)
        return call, ()


@register("Col2Im", since=18)
def Col2Im(x, image_shape, block_shape, *, dilations=None, pads=None, strides=None):
    """Rearrange (N, C*prod(block), L) columns into (N, C, *image_shape), summing overlaps."""
    img = [int(v) for v in np.asarray(image_shape).reshape(-1)]
    blk = [int(v) for v in np.asarray(block_shape).reshape(-1)]
    nd = len(img)
    k, s, d, pb, pe = norm_attrs(nd, blk, strides, dilations, pads)
    N, CK, L = x.shape
    K = int(np.prod(k))
    if CK % K:
        raise ShapeError(f"Col2Im: {CK} rows not divisible by block size {K}")
    C = CK // K
    nb = out_shape(img, k, s, d, pb, pe)
    if int(np.prod(nb)) != L:
        raise ShapeError(f"Col2Im: {L} columns, expected {int(np.prod(nb))} for these attributes")
    buf = np.zeros((N, C, *[img[i] + pb[i] + pe[i] for i in range(nd)]), x.dtype)
    _col2im_add(x.reshape(N, C, *k, *nb), buf, (N, C), k, s, d, nb, [0] * nd)
    return np.ascontiguousarray(buf[(slice(None), slice(None)) +
                                    tuple(slice(pb[i], pb[i] + img[i]) for i in range(nd))])


# --- DeformConv --------------------------------------------------------------------------------

def _bilinear_gather(xn, yy, xx):
    """Bilinear sample xn (C, H, W) at fractional (yy, xx) arrays (same shape P); zero outside.

    Returns (C, *P). Corners outside the image contribute zero, as in torchvision/ONNX."""
    C, H, W = xn.shape
    y0 = np.floor(yy)
    x0 = np.floor(xx)
    ly, lx = yy - y0, xx - x0
    y0 = y0.astype(np.int64)
    x0 = x0.astype(np.int64)
    res = 0
    for dy, wy in ((0, 1 - ly), (1, ly)):
        for dx, wx in ((0, 1 - lx), (1, lx)):
            yi, xi = y0 + dy, x0 + dx
            ok = (yi >= 0) & (yi < H) & (xi >= 0) & (xi < W)
            v = xn[:, np.clip(yi, 0, H - 1), np.clip(xi, 0, W - 1)]
            res = res + v * (wy * wx * ok)
    return res


@register("DeformConv", since=19)
def DeformConv(x, w, offset, b=None, mask=None, *, dilations=None, group=1, kernel_shape=None,
               offset_group=1, pads=None, strides=None):
    """2-D deformable convolution: bilinear im2col at offset sample points, then a GEMM."""
    N, C, H, W_ = x.shape
    M, Cg = w.shape[:2]
    k, s, d, pb, pe = norm_attrs(2, kernel_shape or list(w.shape[2:]), strides, dilations, pads)
    kh, kw = k
    K = kh * kw
    oh, ow = out_shape([H, W_], k, s, d, pb, pe)
    og = int(offset_group)
    dt = compute_dtype(x.dtype)
    off = offset.astype(dt).reshape(N, og, K, 2, oh, ow)
    msk = None if mask is None else mask.astype(dt).reshape(N, og, K, oh, ow)
    # base sampling grid per tap: (K, oh, ow)
    ty, tx = np.meshgrid(np.arange(kh) * d[0], np.arange(kw) * d[1], indexing="ij")
    by = (np.arange(oh) * s[0] - pb[0])[None, :, None] + ty.reshape(K, 1, 1)
    bx = (np.arange(ow) * s[1] - pb[1])[None, None, :] + tx.reshape(K, 1, 1)
    cpg = C // og
    g = int(group)
    wg = w.astype(dt).reshape(g, M // g, Cg * K)
    y = np.empty((N, M, oh, ow), dt)
    for n in range(N):
        cols = np.empty((C, K, oh, ow), dt)
        for o in range(og):   # loop over offset groups (a handful), never pixels
            yy = by + off[n, o, :, 0]
            xx = bx + off[n, o, :, 1]
            v = _bilinear_gather(x[n, o * cpg:(o + 1) * cpg].astype(dt), yy, xx)
            if msk is not None:
                v = v * msk[n, o]
            cols[o * cpg:(o + 1) * cpg] = v
        r = np.matmul(wg, cols.reshape(g, Cg * K, oh * ow))
        y[n] = r.reshape(M, oh, ow)
    if b is not None:
        y += b.astype(dt).reshape(1, M, 1, 1)
    return y.astype(x.dtype, copy=False)
